//! Names of the bucket keys in Redis: `{tag}:rl1:<place>:<rule>:<limit>`, where `{tag}` is
//! the configured hash tag. Redis Cluster places a key by its hash tag alone, so every limit
//! key lands in one slot and one shard: that is what lets one script read and reserve all
//! buckets of a request atomically. Names are unambiguous whatever tenants and routes are
//! called (`:` and anything unusual in a name is percent-encoded) and they carry the rule's
//! limit, so a changed limit starts from a fresh bucket, as a reload does in local mode.

use bytes::Bytes;

use crate::ratelimit::Place;
use crate::ratelimit::gcra::Rate;

/// The version of the key layout and of the value stored under it (the TAT in microseconds
/// on Redis's clock); a change of either moves to new keys.
const LAYOUT: &str = "rl1";

/// The Redis key of one bucket. Cheap to clone: build it once per rule when limits are
/// compiled, not per request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketKey(Bytes);

impl BucketKey {
    /// The key of rule `rule` (its config key, `tokens_per_minute`) at `place`, with
    /// `rate`, under `hash_tag` (checked by the config: `{name}`).
    pub fn new(hash_tag: &str, place: &Place<'_>, rule: &str, rate: Rate) -> BucketKey {
        let mut key = String::with_capacity(64);
        key.push_str(hash_tag);
        key.push(':');
        key.push_str(LAYOUT);
        let hash;
        let parts: [&str; 3] = match place {
            Place::Tenant(tenant) => ["tenant", tenant, ""],
            // A key's hash as `key_hashes` holds it, in one spelling.
            Place::Key { tenant, hash: h } => {
                hash = h.trim().to_ascii_lowercase();
                ["key", tenant, &hash]
            }
            Place::Route(alias) => ["route", alias, ""],
            Place::TenantOnRoute(tenant, alias) => ["tenant_route", tenant, alias],
            Place::Version(alias, version) => ["version", alias, version],
        };
        let two = matches!(place, Place::Tenant(_) | Place::Route(_));
        for part in &parts[..if two { 2 } else { 3 }] {
            key.push(':');
            escape(part, &mut key);
        }
        key.push(':');
        escape(rule, &mut key);
        key.push(':');
        key.push_str(itoa::Buffer::new().format(rate.limit));
        BucketKey(Bytes::from(key))
    }

    pub fn as_str(&self) -> &str {
        // Built from a `String` and never changed.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub(super) fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

/// Appends `part`, percent-encoding every byte but letters, digits and `_ . - / # @ ~ +`.
fn escape(part: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in part.as_bytes() {
        if b.is_ascii_alphanumeric() || b"_.-/#@~+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rpm(limit: u64) -> Rate {
        Rate::new(limit, Duration::from_secs(60))
    }

    fn key(place: Place<'_>) -> String {
        BucketKey::new("{tollgate}", &place, "requests_per_minute", rpm(100))
            .as_str()
            .to_owned()
    }

    #[test]
    fn keys_name_the_place_the_rule_and_the_limit() {
        assert_eq!(
            key(Place::Tenant("acme")),
            "{tollgate}:rl1:tenant:acme:requests_per_minute:100"
        );
        assert_eq!(
            key(Place::Key {
                tenant: "acme",
                hash: " AB12cd "
            }),
            "{tollgate}:rl1:key:acme:ab12cd:requests_per_minute:100"
        );
        assert_eq!(
            key(Place::TenantOnRoute("acme", "gpt-4o")),
            "{tollgate}:rl1:tenant_route:acme:gpt-4o:requests_per_minute:100"
        );
        assert_eq!(
            key(Place::Version("chat", "v2")),
            "{tollgate}:rl1:version:chat:v2:requests_per_minute:100"
        );
        let other_limit = BucketKey::new(
            "{tollgate}",
            &Place::Route("m"),
            "tokens_per_day",
            Rate::new(5000, Duration::from_secs(86_400)),
        );
        assert_eq!(
            other_limit.as_str(),
            "{tollgate}:rl1:route:m:tokens_per_day:5000"
        );
    }

    #[test]
    fn names_that_print_alike_are_different_keys() {
        let a = key(Place::TenantOnRoute("a:b", "c"));
        let b = key(Place::TenantOnRoute("a", "b:c"));
        assert_ne!(a, b);
        assert_eq!(
            a,
            "{tollgate}:rl1:tenant_route:a%3Ab:c:requests_per_minute:100"
        );
        assert_ne!(key(Place::Tenant("x")), key(Place::Route("x")));
        // Braces, spaces and non-ASCII never reach the key raw: the hash tag stays the
        // first braces of every key.
        assert_eq!(
            key(Place::Tenant("{evil} é")),
            "{tollgate}:rl1:tenant:%7Bevil%7D%20%C3%A9:requests_per_minute:100"
        );
    }

    #[test]
    fn every_key_with_one_tag_lands_in_one_cluster_slot() {
        let places = [
            Place::Tenant("acme"),
            Place::Route("m"),
            Place::Key {
                tenant: "t",
                hash: "00ff",
            },
            Place::TenantOnRoute("t", "m"),
            Place::Version("m", "v1"),
        ];
        let slots: Vec<u16> = places
            .iter()
            .map(|place| {
                let key = BucketKey::new("{tollgate}", place, "tokens_per_hour", rpm(7));
                fred::util::redis_keyslot(key.as_str().as_bytes())
            })
            .collect();
        assert!(slots.iter().all(|&s| s == slots[0]), "{slots:?}");
        assert_eq!(slots[0], fred::util::redis_keyslot(b"tollgate"));
        let other = BucketKey::new("{gw-b}", &places[0], "tokens_per_hour", rpm(7));
        assert!(other.as_str().starts_with("{gw-b}:"));
    }
}
