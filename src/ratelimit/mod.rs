//! Rate limits and token budgets: requests per second or minute, tokens per minute, hour or
//! day, and requests in flight, attached to a tenant, each key of a tenant, a route, each
//! tenant on a route, or a route version. Every limit that applies must pass, all or nothing.
//!
//! Local mode keeps every bucket in memory, one atomic each (see [`gcra`]); the buckets of a
//! limit whose definition did not change carry over a reload.

pub mod admit;
pub mod clock;
pub mod estimate;
pub mod gcra;
pub mod headers;
pub mod shared;

pub use admit::{Admission, admit};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::LimitConfig;
use gcra::{Gcra, Rate};

/// What a rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    Requests,
    /// Input plus output tokens.
    Tokens,
    InputTokens,
    OutputTokens,
}

impl Counted {
    /// Requests or tokens: which set of `x-ratelimit-*` headers reports it.
    pub fn is_tokens(self) -> bool {
        self != Counted::Requests
    }
}

/// One rule of a limit: a rate over a window, or a cap on requests in flight.
#[derive(Debug)]
pub enum Rule {
    Rate {
        counted: Counted,
        /// The config key (`tokens_per_minute`), for messages and metric labels.
        key: &'static str,
        rate: Rate,
        bucket: Gcra,
    },
    InFlight {
        max: u32,
        now: AtomicU32,
    },
}

impl Rule {
    pub fn key(&self) -> &'static str {
        match self {
            Rule::Rate { key, .. } => key,
            Rule::InFlight { .. } => "concurrent",
        }
    }
}

/// The rules of one place a limit attaches to, and their buckets.
#[derive(Debug)]
pub struct Limit {
    /// `tenant:NAME`, `key:TENANT#N`, `route:ALIAS`, `tenant_route:TENANT/ALIAS` or
    /// `version:ALIAS/VERSION`: the `limit` label of rejections and the error message.
    pub name: Box<str>,
    /// As written: a reload keeps this limit's buckets while it stays the same.
    pub config: LimitConfig,
    pub rules: Box<[Rule]>,
    /// Requests this limit refused, by rule (in `rules` order).
    pub rejections: Box<[AtomicU64]>,
    /// Some rule counts tokens, so requests it applies to need an estimate.
    pub counts_tokens: bool,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

impl Limit {
    /// `None` when `config` sets no rule.
    pub fn new(name: String, config: &LimitConfig) -> Option<Limit> {
        let c = config;
        let rates = [
            (
                c.requests_per_second,
                Counted::Requests,
                "requests_per_second",
                Duration::from_secs(1),
            ),
            (
                c.requests_per_minute,
                Counted::Requests,
                "requests_per_minute",
                MINUTE,
            ),
            (
                c.tokens_per_minute,
                Counted::Tokens,
                "tokens_per_minute",
                MINUTE,
            ),
            (c.tokens_per_hour, Counted::Tokens, "tokens_per_hour", HOUR),
            (c.tokens_per_day, Counted::Tokens, "tokens_per_day", DAY),
            (
                c.input_tokens_per_minute,
                Counted::InputTokens,
                "input_tokens_per_minute",
                MINUTE,
            ),
            (
                c.input_tokens_per_hour,
                Counted::InputTokens,
                "input_tokens_per_hour",
                HOUR,
            ),
            (
                c.input_tokens_per_day,
                Counted::InputTokens,
                "input_tokens_per_day",
                DAY,
            ),
            (
                c.output_tokens_per_minute,
                Counted::OutputTokens,
                "output_tokens_per_minute",
                MINUTE,
            ),
            (
                c.output_tokens_per_hour,
                Counted::OutputTokens,
                "output_tokens_per_hour",
                HOUR,
            ),
            (
                c.output_tokens_per_day,
                Counted::OutputTokens,
                "output_tokens_per_day",
                DAY,
            ),
        ];
        let mut rules: Vec<Rule> = rates
            .into_iter()
            .filter_map(|(limit, counted, key, window)| {
                Some(Rule::Rate {
                    counted,
                    key,
                    rate: Rate::new(limit?, window),
                    bucket: Gcra::default(),
                })
            })
            .collect();
        if let Some(max) = c.concurrent {
            rules.push(Rule::InFlight {
                max,
                now: AtomicU32::new(0),
            });
        }
        if rules.is_empty() {
            return None;
        }
        Some(Limit {
            name: name.into(),
            config: config.clone(),
            counts_tokens: rules
                .iter()
                .any(|r| matches!(r, Rule::Rate { counted, .. } if counted.is_tokens())),
            rejections: rules.iter().map(|_| AtomicU64::new(0)).collect(),
            rules: rules.into(),
        })
    }

    /// Rejections so far, by rule key.
    pub fn rejections(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.rules
            .iter()
            .zip(self.rejections.iter())
            .map(|(rule, n)| (rule.key(), n.load(Ordering::Relaxed)))
    }
}

/// Where a limit attaches, which is what keeps its buckets from one snapshot to the next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Place<'a> {
    Tenant(&'a str),
    /// A key of a tenant, by the key's SHA-256 (hex, as in `key_hashes`): its place in the
    /// list may change.
    Key {
        tenant: &'a str,
        hash: &'a str,
    },
    Route(&'a str),
    TenantOnRoute(&'a str, &'a str),
    Version(&'a str, &'a str),
}

impl Place<'_> {
    /// The limit's name: the `limit` label of rejections and part of a refusal's message.
    fn name(&self) -> String {
        match self {
            Place::Tenant(tenant) => format!("tenant:{tenant}"),
            // The first 8 hex digits of the key's hash: stable, and no secret (the hash is
            // in the config; the key is not derivable from it).
            Place::Key { tenant, hash } => {
                let hash = hash.trim().to_ascii_lowercase();
                format!("key:{tenant}#{}", hash.get(..8).unwrap_or(&hash))
            }
            Place::Route(alias) => format!("route:{alias}"),
            Place::TenantOnRoute(tenant, alias) => format!("tenant_route:{tenant}/{alias}"),
            Place::Version(alias, version) => format!("version:{alias}/{version}"),
        }
    }

    /// What a reload matches buckets by: unambiguous whatever the names contain (a unit
    /// separator cannot appear in them).
    fn identity(&self) -> String {
        match self {
            Place::Tenant(tenant) => format!("tenant\u{1f}{tenant}"),
            Place::Key { tenant, hash } => {
                format!(
                    "key\u{1f}{tenant}\u{1f}{}",
                    hash.trim().to_ascii_lowercase()
                )
            }
            Place::Route(alias) => format!("route\u{1f}{alias}"),
            Place::TenantOnRoute(tenant, alias) => {
                format!("tenant_route\u{1f}{tenant}\u{1f}{alias}")
            }
            Place::Version(alias, version) => format!("version\u{1f}{alias}\u{1f}{version}"),
        }
    }
}

/// Every limit of a snapshot by where it attaches: where the next compile finds the buckets
/// to keep.
#[derive(Debug, Default)]
pub struct LimitTable {
    by_place: HashMap<String, Arc<Limit>>,
}

impl LimitTable {
    /// The limit at `place` with rules `config`: the previous snapshot's when it had the
    /// same definition (its buckets and in-flight counts carry over), else a fresh one.
    /// `None` when `config` is absent or sets no rule.
    pub fn attach(
        &mut self,
        previous: Option<&LimitTable>,
        place: Place<'_>,
        config: Option<&LimitConfig>,
    ) -> Option<Arc<Limit>> {
        let config = config?;
        let identity = place.identity();
        let kept = previous
            .and_then(|p| p.by_place.get(&identity))
            .filter(|limit| limit.config == *config)
            .cloned();
        let limit = match kept {
            Some(limit) => limit,
            None => Arc::new(Limit::new(place.name(), config)?),
        };
        self.by_place.insert(identity, limit.clone());
        Some(limit)
    }

    /// Every limit, for the rejection metrics.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Limit>> {
        self.by_place.values()
    }
}

/// Writes `tollgate_ratelimit_rejections_total{limit,rule}`: requests each rule of each
/// limit refused, since the limit was (re)built. (`tollgate_requests_total` splits the same
/// refusals by route, version and tenant, with `error_type="rate_limit_exceeded"`.)
pub fn encode_rejections(table: &LimitTable, out: &mut String) {
    use std::fmt::Write as _;
    out.push_str("# HELP tollgate_ratelimit_rejections_total Requests a rate limit refused, by limit and rule.\n");
    out.push_str("# TYPE tollgate_ratelimit_rejections_total counter\n");
    let mut limits: Vec<&Arc<Limit>> = table.iter().collect();
    limits.sort_by(|a, b| a.name.cmp(&b.name));
    for limit in limits {
        for (rule, count) in limit.rejections() {
            let _ = writeln!(
                out,
                "tollgate_ratelimit_rejections_total{{limit=\"{}\",rule=\"{rule}\"}} {count}",
                crate::telemetry::metrics::escape(&limit.name)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> LimitConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn rules_follow_the_config_keys() {
        let limit = Limit::new(
            "tenant:a".into(),
            &config("requests_per_minute: 60\ntokens_per_day: 1000\nconcurrent: 2\n"),
        )
        .unwrap();
        let keys: Vec<&str> = limit.rules.iter().map(Rule::key).collect();
        assert_eq!(
            keys,
            ["requests_per_minute", "tokens_per_day", "concurrent"]
        );
        assert!(limit.counts_tokens);
        assert!(Limit::new("x".into(), &LimitConfig::default()).is_none());
        let requests_only = Limit::new("x".into(), &config("requests_per_second: 5\n")).unwrap();
        assert!(!requests_only.counts_tokens);
    }

    #[test]
    fn a_reload_keeps_buckets_of_unchanged_limits_and_rebuilds_changed_ones() {
        let mut first = LimitTable::default();
        let same = config("requests_per_minute: 60\n");
        let a = first.attach(None, Place::Route("a"), Some(&same)).unwrap();
        let b = first.attach(None, Place::Route("b"), Some(&same)).unwrap();
        let mut second = LimitTable::default();
        let a2 = second
            .attach(Some(&first), Place::Route("a"), Some(&same))
            .unwrap();
        let changed = config("requests_per_minute: 61\n");
        let b2 = second
            .attach(Some(&first), Place::Route("b"), Some(&changed))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &a2), "unchanged: the same buckets");
        assert!(!Arc::ptr_eq(&b, &b2), "changed: new buckets");
        assert!(
            second
                .attach(Some(&first), Place::Route("c"), None)
                .is_none()
        );
        // Names that print alike are still different places.
        let mut third = LimitTable::default();
        let x = third
            .attach(None, Place::TenantOnRoute("t", "a/b"), Some(&same))
            .unwrap();
        let y = third
            .attach(None, Place::Version("t/a", "b"), Some(&same))
            .unwrap();
        assert!(!Arc::ptr_eq(&x, &y));
    }

    #[test]
    fn a_key_is_known_by_its_hash_wherever_it_stands_in_the_list() {
        let same = config("requests_per_minute: 60\n");
        let mut keys = LimitTable::default();
        let key = Place::Key {
            tenant: "t",
            hash: "AB12cd34ef567890",
        };
        let old = keys.attach(None, key, Some(&same)).unwrap();
        assert_eq!(&*old.name, "key:t#ab12cd34");
        let mut again = LimitTable::default();
        let key = Place::Key {
            tenant: "t",
            hash: "ab12cd34ef567890",
        };
        let new = again.attach(Some(&keys), key, Some(&same)).unwrap();
        assert!(Arc::ptr_eq(&old, &new));
    }
}
