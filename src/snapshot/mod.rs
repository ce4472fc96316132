//! The live state: config compiled into an immutable [`Snapshot`], held in one `ArcSwap`.
//!
//! Compiling is fallible and happens off the request path; swapping is not. A request loads
//! the snapshot once and uses it to the end, so it sees the old state or the new, never a mix.

mod layer;
mod routes;

pub use layer::{LoadSnapshot, SnapshotLayer};
pub use routes::{DEFAULT_VERSION, Route, Version};

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use crate::auth::{KeyTable, Tenant};
use crate::config::{Config, ProviderConfig};
use crate::providers::{DemoProvider, OpenAiProvider, Provider, VertexProvider};
use crate::ratelimit::Place;
use crate::telemetry::metrics::{Metrics, RequestCounters};

/// The tenant every caller is while auth is off.
const ANONYMOUS: &str = "anonymous";

/// The one holder of live state.
pub type Live = Arc<ArcSwap<Snapshot>>;

/// Request-size and read limits that apply to every request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
    pub body_read_timeout: Duration,
}

/// Everything a request needs, compiled from one config file.
#[derive(Debug)]
pub struct Snapshot {
    /// Content hash of the config text: a label on metrics and an attribute on spans.
    pub version: Box<str>,
    pub limits: Limits,
    /// `None` when auth is off (loopback only); then every caller is `anonymous`.
    pub keys: Option<KeyTable>,
    pub anonymous: Arc<Tenant>,
    /// Counters of requests that found no route version, per tenant slot.
    pub unrouted: Box<[Arc<RequestCounters>]>,
    pub routes: HashMap<Box<str>, Arc<Route>>,
    /// The prompt templates, compiled.
    pub prompts: crate::prompt::Library,
    /// Every rate limit by name: the next reload keeps the buckets of unchanged ones.
    pub rate_limits: crate::ratelimit::LimitTable,
    /// Output tokens reserved before a call at most (see `RateLimitsConfig`).
    pub max_output_reservation: u64,
    /// By name; the next reload reuses the ones whose definition did not change.
    pub providers: HashMap<Box<str>, Provider>,
    /// The process's metrics, for work that reports outside a request's own response
    /// (shadow attempts).
    pub metrics: Arc<Metrics>,
}

/// A config that does not compile: the key path and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CompileError {
    pub path: String,
    pub message: String,
}

pub(crate) fn problem(path: impl Into<String>, message: impl Into<String>) -> CompileError {
    CompileError {
        path: path.into(),
        message: message.into(),
    }
}

/// The listener addresses, which are fixed at start-up; auth may be off only if all are loopback.
pub fn listeners(config: &Config) -> [SocketAddr; 2] {
    [config.server.listen, config.admin.listen]
}

/// Compiles `config` (whose file text is `text`) into a snapshot.
pub fn compile(
    config: &Config,
    text: &str,
    metrics: &Arc<Metrics>,
) -> Result<Snapshot, CompileError> {
    recompile(config, text, metrics, None)
}

/// Compiles `config` to replace `previous`: a provider whose definition (and key) did not
/// change is carried over as is, with its pooled upstream connections.
pub fn recompile(
    config: &Config,
    text: &str,
    metrics: &Arc<Metrics>,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, CompileError> {
    // The config version covers the prompt files too: a new prompt version is a new config.
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    let previous_prompts = previous.map(|p| &p.prompts);
    let prompts = match &config.prompts {
        None => crate::prompt::Library::carrying(previous_prompts),
        Some(section) => {
            let files = crate::prompt::PromptFiles::read(section)
                .map_err(|(path, why)| problem(format!("prompts.dir: {path}"), why))?;
            files.digest_into(&mut hasher);
            crate::prompt::compile(section, &files, previous_prompts, metrics)?
        }
    };
    let version = hex::encode(&hasher.finalize()[..6]);

    if !config.auth.enabled && !listeners(config).iter().all(|a| a.ip().is_loopback()) {
        return Err(problem(
            "auth.enabled",
            "auth may be off only when server.listen and admin.listen are loopback addresses",
        ));
    }

    check_limits(config)?;
    let workers = crate::server::worker_count(config.server.workers);
    let mut providers: HashMap<&str, Provider> = HashMap::new();
    for (name, provider) in &config.providers {
        let compiled = match provider {
            ProviderConfig::Openai(cfg) => {
                let fresh = OpenAiProvider::compile(name, cfg, workers, metrics)
                    .map_err(|(key, why)| problem(format!("providers.{name}.{key}"), why))?;
                match previous.and_then(|p| p.providers.get(name.as_str())) {
                    Some(Provider::Openai(running)) if running.fingerprint == fresh.fingerprint => {
                        Provider::Openai(running.clone())
                    }
                    _ => Provider::Openai(Arc::new(fresh)),
                }
            }
            ProviderConfig::Demo(cfg) => Provider::Demo(Arc::new(DemoProvider::new(name, cfg))),
            ProviderConfig::Vertex(cfg) | ProviderConfig::VertexOpenai(cfg) => {
                let openai = matches!(provider, ProviderConfig::VertexOpenai(_));
                let fresh = VertexProvider::compile(name, cfg, openai, workers, metrics)
                    .map_err(|(key, why)| problem(format!("providers.{name}.{key}"), why))?;
                match previous.and_then(|p| p.providers.get(name.as_str())) {
                    Some(Provider::Vertex(running)) if running.fingerprint == fresh.fingerprint => {
                        Provider::Vertex(running.clone())
                    }
                    _ => Provider::Vertex(Arc::new(fresh)),
                }
            }
        };
        providers.insert(name.as_str(), compiled);
    }

    // Slot 0 is `anonymous` (auth off); configured tenants follow in config order.
    let tenant_slots: Vec<&str> = std::iter::once(ANONYMOUS)
        .chain(config.tenants.iter().map(|t| t.name.as_str()))
        .collect();
    let series = routes::SeriesSource {
        metrics,
        tenants: &tenant_slots,
        config_version: &version,
    };
    let mut limit_table = crate::ratelimit::LimitTable::default();
    let mut limits = routes::LimitSource {
        table: &mut limit_table,
        previous: previous.map(|p| &p.rate_limits),
        token_counting: &config.rate_limits.token_counting,
    };
    let mut routes = HashMap::new();
    for (index, (alias, route)) in config.routes.iter().enumerate() {
        let compiled = routes::compile(
            alias,
            index,
            route,
            &providers,
            &prompts,
            &series,
            &mut limits,
        )?;
        routes.insert(alias.as_str().into(), Arc::new(compiled));
    }

    let aliases: BTreeSet<&str> = config.routes.keys().map(String::as_str).collect();
    for prompt in prompts.iter() {
        for version in prompt.versions.values() {
            if let Some(model) = version.model.as_deref()
                && !aliases.contains(model)
            {
                return Err(problem(
                    format!(
                        "prompt {} ({}/{}.yaml)",
                        version.reference_str(),
                        version.id,
                        version.version
                    ),
                    format!("model: no route named `{model}`"),
                ));
            }
        }
    }
    let route_index = |alias: &str| routes.get(alias).map(|r: &Arc<Route>| r.index);
    let mut keys = KeyTable::default();
    let mut tenant_names = BTreeSet::new();
    for (i, tenant) in config.tenants.iter().enumerate() {
        let path = format!("tenants[{i}]");
        if !tenant_names.insert(tenant.name.as_str()) {
            return Err(problem(
                format!("{path}.name"),
                format!("tenant `{}` is defined twice", tenant.name),
            ));
        }
        for model in &tenant.models {
            if model != "*" && !aliases.contains(model.as_str()) {
                return Err(problem(
                    format!("{path}.models"),
                    format!("no route named `{model}`"),
                ));
            }
        }
        for id in &tenant.prompts {
            if id != "*" && prompts.get(id).is_none() {
                return Err(problem(
                    format!("{path}.prompts"),
                    format!("no prompt named `{id}`"),
                ));
            }
        }
        let tenant_limit = limits.table.attach(
            limits.previous,
            Place::Tenant(&tenant.name),
            tenant.limits.as_ref(),
        );
        let compiled = Arc::new(
            Tenant::new(&tenant.name, &tenant.models, &aliases, &route_index)
                .with_prompts(&prompts, &tenant.prompts)
                .with_pinning(tenant.pin_versions)
                .with_slot(i + 1)
                .with_limits(tenant_limit),
        );
        for (k, hash) in tenant.key_hashes.iter().enumerate() {
            let key_limit = limits.table.attach(
                limits.previous,
                Place::Key {
                    tenant: &tenant.name,
                    hash,
                },
                tenant.key_limits.as_ref(),
            );
            keys.insert(hash, compiled.clone(), key_limit)
                .map_err(|why| problem(format!("{path}.key_hashes[{k}]"), why))?;
        }
    }

    let all = ["*".to_owned()];
    Ok(Snapshot {
        version: version.into(),
        limits: Limits {
            max_body_bytes: config.server.max_body_bytes,
            max_response_bytes: config.server.max_response_bytes,
            body_read_timeout: config.server.body_read_timeout.0,
        },
        keys: config.auth.enabled.then_some(keys),
        // Auth off is loopback only: a developer's machine or a test, where pinning is fine.
        anonymous: Arc::new(
            Tenant::new(ANONYMOUS, &all, &aliases, &route_index)
                .with_prompts(&prompts, &all)
                .with_pinning(true),
        ),
        unrouted: tenant_slots
            .iter()
            .map(|tenant| metrics.requests("", "", tenant))
            .collect(),
        routes,
        prompts,
        rate_limits: limit_table,
        max_output_reservation: config.rate_limits.max_output_reservation,
        providers: providers
            .into_iter()
            .map(|(name, provider)| (name.into(), provider))
            .collect(),
        metrics: metrics.clone(),
    })
}

/// Every limit in `config` sets its rules above 0.
fn check_limits(config: &Config) -> Result<(), CompileError> {
    let mut limits: Vec<(String, &crate::config::LimitConfig)> = Vec::new();
    for (i, tenant) in config.tenants.iter().enumerate() {
        limits.extend(
            tenant
                .limits
                .iter()
                .map(|l| (format!("tenants[{i}].limits"), l)),
        );
        limits.extend(
            tenant
                .key_limits
                .iter()
                .map(|l| (format!("tenants[{i}].key_limits"), l)),
        );
    }
    for (alias, route) in &config.routes {
        limits.extend(
            route
                .limits
                .iter()
                .map(|l| (format!("routes.{alias}.limits"), l)),
        );
        limits.extend(
            route
                .tenant_limits
                .iter()
                .map(|l| (format!("routes.{alias}.tenant_limits"), l)),
        );
        for (name, version) in &route.versions {
            limits.extend(
                version
                    .limits
                    .iter()
                    .map(|l| (format!("routes.{alias}.versions.{name}.limits"), l)),
            );
        }
    }
    match limits
        .into_iter()
        .find_map(|(path, l)| Some((path, l.zero_rule()?)))
    {
        Some((path, rule)) => Err(problem(
            format!("{path}.{rule}"),
            "must be at least 1 (leave the rule out for no limit)",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(yaml: &str) -> Result<Snapshot, CompileError> {
        let config = Config::from_yaml(yaml).unwrap();
        compile(&config, yaml, &Arc::new(Metrics::new()))
    }

    const DEMO: &str = "providers:\n  d:\n    type: demo\n";

    #[test]
    fn unknown_provider_names_the_route_key() {
        let err = compile_yaml(&format!(
            "auth:\n  enabled: false\n{DEMO}routes:\n  m:\n    provider: nope\n"
        ))
        .unwrap_err();
        assert_eq!(err.path, "routes.m.provider");
    }

    #[test]
    fn auth_off_requires_loopback_listeners() {
        let err = compile_yaml(&format!(
            "server:\n  listen: 0.0.0.0:8080\nauth:\n  enabled: false\n{DEMO}"
        ))
        .unwrap_err();
        assert_eq!(err.path, "auth.enabled");
        assert!(compile_yaml(&format!("auth:\n  enabled: false\n{DEMO}")).is_ok());
        assert!(compile_yaml(&format!("server:\n  listen: 0.0.0.0:8080\n{DEMO}")).is_ok());
    }

    #[test]
    fn tenants_must_name_existing_routes_and_valid_hashes() {
        let base = format!("{DEMO}routes:\n  m:\n    provider: d\n");
        let err =
            compile_yaml(&format!("{base}tenants:\n  - name: t\n    models: [x]\n")).unwrap_err();
        assert_eq!(err.path, "tenants[0].models");
        let err = compile_yaml(&format!(
            "{base}tenants:\n  - name: t\n    models: [m]\n    key_hashes: [abc]\n"
        ))
        .unwrap_err();
        assert_eq!(err.path, "tenants[0].key_hashes[0]");
    }

    #[test]
    fn a_limit_of_zero_is_refused_with_its_key() {
        let err = compile_yaml(&format!(
            "{DEMO}routes:\n  m:\n    provider: d\n    tenant_limits: {{requests_per_minute: 5, concurrent: 0}}\n"
        ))
        .unwrap_err();
        assert_eq!(err.path, "routes.m.tenant_limits.concurrent");
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = compile_yaml(DEMO).unwrap();
        let b = compile_yaml(&format!("{DEMO}\n")).unwrap();
        assert_eq!(a.version.len(), 12);
        assert_ne!(a.version, b.version);
    }

    #[test]
    fn upstream_model_is_precomputed_as_json() {
        let snap = compile_yaml(&format!("{DEMO}routes:\n  m:\n    provider: d\n    upstream_model: tgi\n  same:\n    provider: d\n    upstream_model: same\n")).unwrap();
        assert_eq!(
            &snap.routes["m"].versions[0].upstream_model_json[..],
            b"\"tgi\""
        );
        assert_eq!(&*snap.routes["same"].versions[0].upstream_model, "same");
    }
}
