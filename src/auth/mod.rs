//! Client authentication: API key -> tenant, with keys stored only as SHA-256 hashes.
//!
//! A presented key is hashed, its hash looked up by an 8-byte prefix, and the full 32 bytes
//! compared in constant time, so response timing says nothing about how close a guess was.

mod layer;

pub use layer::{AuthLayer, Authenticate};

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ErrorKind, GatewayError};
use crate::ratelimit::Limit;

/// A caller, as compiled from config.
#[derive(Debug)]
pub struct Tenant {
    pub name: Box<str>,
    /// Position in per-tenant series tables: 0 for `anonymous`, then config order from 1.
    pub slot: usize,
    /// `tollgate.tenant` as an encoded span attribute.
    pub span_attribute: Box<[u8]>,
    /// Indexed by route index: may this tenant use that alias?
    allowed: Box<[bool]>,
    /// The `GET /v1/models` answer for this tenant, built once per snapshot.
    pub models_body: Bytes,
    /// Indexed by prompt index: may this tenant use that prompt?
    prompts_allowed: Box<[bool]>,
    /// The `GET /v1/prompts` answer for this tenant, built once per snapshot.
    pub prompts_body: Bytes,
    /// May pin a route version (`x-tollgate-version`, or `model: "alias@version"`).
    pub may_pin: bool,
    /// The tenant's limits, all its keys together.
    pub limits: Option<Arc<Limit>>,
}

impl Tenant {
    /// `models` may contain `"*"` for every alias; unknown names were rejected before this.
    pub fn new(
        name: &str,
        models: &[String],
        aliases: &BTreeSet<&str>,
        route_index: &dyn Fn(&str) -> Option<usize>,
    ) -> Self {
        let everything = models.iter().any(|m| m == "*");
        let mut allowed = vec![false; aliases.len()];
        let mut listed = Vec::new();
        for alias in aliases {
            if everything || models.iter().any(|m| m == alias) {
                if let Some(i) = route_index(alias) {
                    allowed[i] = true;
                }
                listed.push(serde_json::json!({
                    "id": alias, "object": "model", "created": 0, "owned_by": "tollgate",
                }));
            }
        }
        let body = serde_json::json!({"object": "list", "data": listed});
        Self {
            name: name.into(),
            slot: 0,
            span_attribute: crate::telemetry::trace::spans::tenant_attribute(name),
            allowed: allowed.into_boxed_slice(),
            models_body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            prompts_allowed: Box::default(),
            prompts_body: Bytes::from_static(br#"{"object":"list","data":[]}"#),
            may_pin: false,
            limits: None,
        }
    }

    /// Lets this tenant use the prompts `ids` names (`"*"`: all of them) and builds its
    /// `GET /v1/prompts` answer.
    pub fn with_prompts(mut self, library: &crate::prompt::Library, ids: &[String]) -> Self {
        let everything = ids.iter().any(|id| id == "*");
        let mut allowed = vec![false; library.len()];
        let mut listed = Vec::new();
        for prompt in library.iter() {
            if everything || ids.iter().any(|id| **id == *prompt.id) {
                if let Some(slot) = allowed.get_mut(prompt.index) {
                    *slot = true;
                }
                listed.push(crate::prompt::listing(prompt));
            }
        }
        let body = serde_json::json!({"object": "list", "data": listed});
        self.prompts_allowed = allowed.into_boxed_slice();
        self.prompts_body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        self
    }

    pub fn may_use_prompt(&self, index: usize) -> bool {
        self.prompts_allowed.get(index).copied().unwrap_or(false)
    }

    /// Lets this tenant pin route versions, or not.
    pub fn with_pinning(mut self, may_pin: bool) -> Self {
        self.may_pin = may_pin;
        self
    }

    /// Subjects the tenant to `limits`.
    pub fn with_limits(mut self, limits: Option<Arc<Limit>>) -> Self {
        self.limits = limits;
        self
    }

    /// Places this tenant at `slot` of per-tenant series tables.
    pub fn with_slot(mut self, slot: usize) -> Self {
        self.slot = slot;
        self
    }

    pub fn may_use(&self, route_index: usize) -> bool {
        self.allowed.get(route_index).copied().unwrap_or(false)
    }
}

/// The SHA-256 of a client key, as hex: what goes into `key_hashes`.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key's full SHA-256, its owner, and the key's own limits.
type KeyEntry = ([u8; 32], Arc<Tenant>, Option<Arc<Limit>>);

/// Who presented a key: the tenant, and the limits of that key.
pub type Caller<'a> = (&'a Arc<Tenant>, Option<&'a Arc<Limit>>);

/// Key hashes -> tenants.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_prefix: HashMap<u64, Vec<KeyEntry>>,
}

fn prefix(hash: &[u8; 32]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(head)
}

impl KeyTable {
    /// Adds a hex key hash; rejects malformed and repeated hashes.
    pub fn insert(
        &mut self,
        hex_hash: &str,
        tenant: Arc<Tenant>,
        limits: Option<Arc<Limit>>,
    ) -> Result<(), String> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(hex_hash.trim(), &mut hash).map_err(|_| {
            "must be 64 hex characters, as printed by `tollgate hash-key`".to_owned()
        })?;
        let bucket = self.by_prefix.entry(prefix(&hash)).or_default();
        if bucket.iter().any(|(known, ..)| *known == hash) {
            return Err("this key hash is listed twice".into());
        }
        bucket.push((hash, tenant, limits));
        Ok(())
    }

    /// The tenant owning `key` and the key's limits, if the key is known.
    pub fn lookup(&self, key: &[u8]) -> Option<Caller<'_>> {
        let hash: [u8; 32] = Sha256::digest(key).into();
        let bucket = self.by_prefix.get(&prefix(&hash))?;
        let mut found = None;
        for (known, tenant, limits) in bucket {
            if bool::from(known.ct_eq(&hash)) {
                found = Some((tenant, limits.as_ref()));
            }
        }
        found
    }
}

/// The key a request presents: `Authorization: Bearer KEY`, `x-api-key: KEY`, or
/// `x-goog-api-key: KEY` (what Google's SDKs send with an API key).
pub fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(bytes[7..].trim_ascii());
        }
    }
    (headers.get("x-api-key"))
        .or_else(|| headers.get("x-goog-api-key"))
        .map(|v| v.as_bytes().trim_ascii())
}

/// Resolves the caller of a request against the key table.
pub fn authenticate<'a>(
    keys: &'a KeyTable,
    headers: &HeaderMap,
) -> Result<Caller<'a>, GatewayError> {
    let key = presented_key(headers)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            GatewayError::new(
                ErrorKind::MissingApiKey,
                "no API key: send `Authorization: Bearer KEY`, `x-api-key: KEY` or `x-goog-api-key: KEY`",
            )
        })?;
    keys.lookup(key)
        .ok_or_else(|| GatewayError::new(ErrorKind::InvalidApiKey, "the API key is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Arc<Tenant> {
        Arc::new(Tenant::new(name, &[], &BTreeSet::new(), &|_| None))
    }

    #[test]
    fn hash_matches_known_sha256() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn looks_up_keys_by_hash_only() {
        let mut table = KeyTable::default();
        table
            .insert(&hash_key("sk-team-a"), tenant("a"), None)
            .unwrap();
        table
            .insert(&hash_key("sk-team-b"), tenant("b"), None)
            .unwrap();
        assert_eq!(&*table.lookup(b"sk-team-a").unwrap().0.name, "a");
        assert_eq!(&*table.lookup(b"sk-team-b").unwrap().0.name, "b");
        assert!(table.lookup(b"sk-team-c").is_none());
        assert!(
            table
                .insert(&hash_key("sk-team-a"), tenant("c"), None)
                .is_err()
        );
        assert!(table.insert("zz", tenant("c"), None).is_err());
    }

    #[test]
    fn reads_bearer_or_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("x-api-key", "k1".parse().unwrap());
        assert_eq!(presented_key(&headers), Some(&b"k1"[..]));
        headers.insert("authorization", "bearer  k2 ".parse().unwrap());
        assert_eq!(presented_key(&headers), Some(&b"k2"[..]));
    }

    #[test]
    fn authenticate_distinguishes_missing_and_invalid() {
        let table = KeyTable::default();
        let headers = HeaderMap::new();
        assert_eq!(
            authenticate(&table, &headers).unwrap_err().kind,
            ErrorKind::MissingApiKey
        );
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            authenticate(&table, &headers).unwrap_err().kind,
            ErrorKind::InvalidApiKey
        );
    }
}
