//! A model alias compiled: its versions, their split, and the per-request version choice.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

use super::{CompileError, problem};
use crate::api::decode::ParamDefault;
use crate::config::{RouteConfig, StickyKey, TimeoutsConfig, UnsupportedParams, VersionConfig};
use crate::prompt::{Library, PromptCanary};
use crate::providers::Provider;
use crate::providers::openai::static_headers;
use crate::ratelimit::estimate::{Estimator, TokenCounting};
use crate::ratelimit::{Limit, LimitTable, Place};
use crate::routing::Split;
use crate::telemetry::metrics::{GenAiMetrics, Metrics, RequestCounters, VersionMetrics};
use crate::telemetry::trace::spans::VersionAttributes;

/// What a route's telemetry is built from: the metrics registry, the tenants in slot order,
/// and the config version its spans carry.
pub struct SeriesSource<'a> {
    pub metrics: &'a Metrics,
    pub tenants: &'a [&'a str],
    pub config_version: &'a str,
}

/// Where compiled limits go, the previous snapshot's (whose buckets they may keep), and how
/// token budgets count input tokens unless a route says otherwise.
pub struct LimitSource<'a> {
    pub table: &'a mut LimitTable,
    pub previous: Option<&'a LimitTable>,
    pub token_counting: &'a TokenCounting,
}

/// Most attempts one request may make, whatever the config says.
const MAX_ATTEMPTS: usize = 10;

/// The version name of a route written in the short form.
pub const DEFAULT_VERSION: &str = "default";

/// A model alias, compiled.
#[derive(Debug)]
pub struct Route {
    pub alias: Box<str>,
    /// The alias as a response header value, validated once.
    pub alias_header: HeaderValue,
    /// Dense index, for per-tenant permission bitsets.
    pub index: usize,
    pub versions: Box<[Version]>,
    pub split: Split,
    pub sticky: Option<StickyKey>,
    /// Version indexes to try, in order, after a retryable failure.
    pub fallbacks: Box<[usize]>,
    /// Indexes of shadow versions.
    pub shadows: Box<[usize]>,
    pub retry: RetryPolicy,
    /// Prompts and completions go on this route's spans.
    pub trace_content: bool,
    /// Parameters a non-OpenAI upstream cannot take: refused or dropped.
    pub unsupported_params: UnsupportedParams,
    /// Per prompt id: this route's split between versions of that prompt.
    pub prompt_canaries: HashMap<Box<str>, PromptCanary>,
    /// The route's limits, every caller together.
    pub limits: Option<Arc<Limit>>,
    /// Each tenant's limits on this route, by tenant slot.
    pub tenant_limits: Box<[Option<Arc<Limit>>]>,
}

/// A route's retry budget, compiled.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    pub backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

/// One version of a route: where its traffic goes.
#[derive(Debug)]
pub struct Version {
    pub name: Box<str>,
    /// The name as a response header value (`x-tollgate-route-version`).
    pub name_header: HeaderValue,
    pub provider: Provider,
    /// The model name sent upstream.
    pub upstream_model: Box<str>,
    /// The same as a JSON string literal, spliced into the body when the request's differs.
    pub upstream_model_json: Bytes,
    pub timeouts: TimeoutsConfig,
    pub weight: u32,
    /// For a shadow version: the fraction of the route's requests mirrored to it.
    pub shadow: Option<f64>,
    /// Extra upstream headers, as a map (hyper's client) and as ready-made header lines (the
    /// lean client appends them to the provider's request prefix).
    pub headers: http::HeaderMap,
    pub header_lines: Bytes,
    /// Generation parameters filled in when the caller left them out.
    pub defaults: Box<[ParamDefault]>,
    pub metrics: Arc<VersionMetrics>,
    /// The GenAI histograms of this version with its current provider kind and model.
    pub genai: Arc<GenAiMetrics>,
    /// Request counters of this version per tenant, by [`crate::auth::Tenant::slot`].
    pub requests: Box<[Arc<RequestCounters>]>,
    /// What every span of a request served by this version repeats, encoded once.
    pub span_attributes: VersionAttributes,
    /// The version's limits, every caller together.
    pub limits: Option<Arc<Limit>>,
    /// Counts a request's input tokens for token budgets.
    pub estimator: Estimator,
}

impl Route {
    /// The version named `name`.
    pub fn version(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| &*v.name == name)
    }

    /// The version for an unpinned request: by the sticky key's hash when there is one, else
    /// by a random draw. `None` only if every weight is 0, which compile refuses.
    pub fn choose(&self, sticky_key: Option<u64>) -> Option<usize> {
        if self.versions.len() == 1 {
            return Some(0);
        }
        self.split.pick(sticky_key)
    }
}

/// Compiles `routes.{alias}`.
pub fn compile(
    alias: &str,
    index: usize,
    route: &RouteConfig,
    providers: &HashMap<&str, Provider>,
    prompts: &Library,
    series: &SeriesSource<'_>,
    limits: &mut LimitSource<'_>,
) -> Result<Route, CompileError> {
    let path = format!("routes.{alias}");
    if alias.is_empty() || alias.contains('@') {
        return Err(problem(
            path,
            "an alias must be non-empty and must not contain `@`",
        ));
    }
    let alias_header = HeaderValue::try_from(alias).map_err(|_| {
        problem(
            &path,
            "an alias must be printable ASCII (it is sent back in a header)",
        )
    })?;
    check_timeouts(&format!("{path}.timeouts"), &route.timeouts)?;

    // The short form is one version named `default`.
    let short;
    let versions: Vec<(&str, &VersionConfig, String)> =
        match (&route.provider, route.versions.is_empty()) {
            (Some(_), false) => {
                return Err(problem(
                    &path,
                    "write either `provider` (one upstream) or `versions`, not both",
                ));
            }
            (None, true) => {
                return Err(problem(&path, "a route needs `provider` or `versions`"));
            }
            (Some(provider), true) => {
                short = VersionConfig {
                    provider: provider.clone(),
                    upstream_model: route.upstream_model.clone(),
                    weight: None,
                    shadow: None,
                    timeouts: None,
                    headers: Default::default(),
                    defaults: Default::default(),
                    limits: None,
                };
                vec![(DEFAULT_VERSION, &short, path.clone())]
            }
            (None, false) => {
                if route.upstream_model.is_some() {
                    return Err(problem(
                        format!("{path}.upstream_model"),
                        "with `versions`, each version names its own upstream_model",
                    ));
                }
                route
                    .versions
                    .iter()
                    .map(|(name, v)| (name.as_str(), v, format!("{path}.versions.{name}")))
                    .collect()
            }
        };

    let mut compiled = Vec::with_capacity(versions.len());
    for (name, version, vpath) in versions {
        let context = VersionContext {
            providers,
            series,
            counting: route
                .token_counting
                .as_ref()
                .unwrap_or(limits.token_counting),
        };
        let mut compiled_version = compile_version(alias, name, version, route, &context, &vpath)?;
        compiled_version.limits = limits.table.attach(
            limits.previous,
            Place::Version(alias, name),
            version.limits.as_ref(),
        );
        compiled.push(compiled_version);
    }
    let split = Split::new(alias, compiled.iter().map(|v| (&*v.name, v.weight)));
    let shadows: Box<[usize]> = (0..compiled.len())
        .filter(|i| compiled[*i].shadow.is_some())
        .collect();
    if split.total() == 0 {
        return Err(problem(
            format!("{path}.versions"),
            "every weight is 0: at least one version must take unpinned traffic",
        ));
    }
    let sticky = route
        .sticky
        .as_deref()
        .map(StickyKey::parse)
        .transpose()
        .map_err(|why| problem(format!("{path}.sticky"), why))?;
    let mut fallbacks = Vec::with_capacity(route.fallbacks.len());
    for (i, name) in route.fallbacks.iter().enumerate() {
        let at = format!("{path}.fallbacks[{i}]");
        let index = compiled
            .iter()
            .position(|v| &*v.name == name)
            .ok_or_else(|| problem(&at, format!("no version named `{name}` in this route")))?;
        if compiled[index].shadow.is_some() {
            return Err(problem(
                at,
                format!("`{name}` is a shadow version; its answers are never served"),
            ));
        }
        if fallbacks.contains(&index) {
            return Err(problem(
                at,
                format!("`{name}` is listed twice: fallbacks would cycle"),
            ));
        }
        fallbacks.push(index);
    }
    let max_attempts = match route.retry.max_attempts {
        Some(0) => {
            return Err(problem(
                format!("{path}.retry.max_attempts"),
                "must be at least 1",
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(MAX_ATTEMPTS),
        None => (1 + fallbacks.len()).min(MAX_ATTEMPTS),
    };
    let mut prompt_canaries = HashMap::with_capacity(route.prompt_versions.len());
    for (id, weights) in &route.prompt_versions {
        let at = format!("{path}.prompt_versions.{id}");
        let prompt = prompts
            .get(id)
            .ok_or_else(|| problem(&at, format!("no prompt named `{id}`")))?;
        let mut versions = Vec::with_capacity(weights.len());
        for name in weights.keys() {
            versions.push(prompt.version(&name.0).cloned().ok_or_else(|| {
                problem(
                    format!("{at}.{}", name.0),
                    format!("prompt `{id}` has no version `{}`", name.0),
                )
            })?);
        }
        // Seeded apart from the model split, so which prompt version a user gets does not
        // follow which model version they get.
        let split = Split::new(
            &format!("{alias}\u{1f}prompt\u{1f}{id}"),
            weights
                .iter()
                .map(|(name, weight)| (name.0.as_str(), *weight)),
        );
        if split.total() == 0 {
            return Err(problem(
                at,
                "every weight is 0: at least one version must take traffic",
            ));
        }
        prompt_canaries.insert(
            id.as_str().into(),
            PromptCanary {
                split,
                versions: versions.into(),
            },
        );
    }
    Ok(Route {
        alias: alias.into(),
        alias_header,
        index,
        versions: compiled.into(),
        split,
        sticky,
        fallbacks: fallbacks.into(),
        shadows,
        retry: RetryPolicy {
            max_attempts,
            backoff: route.retry.backoff.0,
            max_backoff: route.retry.max_backoff.0,
        },
        trace_content: route.trace_content,
        unsupported_params: route.unsupported_params,
        prompt_canaries,
        limits: limits
            .table
            .attach(limits.previous, Place::Route(alias), route.limits.as_ref()),
        tenant_limits: series
            .tenants
            .iter()
            .map(|tenant| {
                limits.table.attach(
                    limits.previous,
                    Place::TenantOnRoute(tenant, alias),
                    route.tenant_limits.as_ref(),
                )
            })
            .collect(),
    })
}

/// What every version of a route is compiled against.
struct VersionContext<'a> {
    providers: &'a HashMap<&'a str, Provider>,
    series: &'a SeriesSource<'a>,
    counting: &'a TokenCounting,
}

fn compile_version(
    alias: &str,
    name: &str,
    version: &VersionConfig,
    route: &RouteConfig,
    context: &VersionContext<'_>,
    path: &str,
) -> Result<Version, CompileError> {
    let VersionContext {
        providers,
        series,
        counting,
    } = context;
    if name.is_empty() || name.contains('@') {
        return Err(problem(
            path,
            "a version name must be non-empty and must not contain `@`",
        ));
    }
    let name_header = HeaderValue::try_from(name)
        .map_err(|_| problem(path, "a version name must be printable ASCII"))?;
    let provider = providers.get(version.provider.as_str()).ok_or_else(|| {
        problem(
            format!("{path}.provider"),
            format!("no provider named `{}` under providers", version.provider),
        )
    })?;
    if let Some(rate) = version.shadow {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(problem(format!("{path}.shadow"), "a sample rate in (0, 1]"));
        }
        if version.weight.is_some_and(|w| w > 0) {
            return Err(problem(
                format!("{path}.weight"),
                "a shadow version takes no live traffic: leave its weight out or at 0",
            ));
        }
    }
    let (headers, header_lines) = version_headers(path, version, provider)?;
    let defaults = ParamDefault::compile_all(&version.defaults)
        .map_err(|(name, why)| problem(format!("{path}.defaults.{name}"), why))?;
    let weight = version
        .weight
        .unwrap_or(if version.shadow.is_some() { 0 } else { 1 });
    let timeouts = version.timeouts.unwrap_or(route.timeouts);
    check_timeouts(&format!("{path}.timeouts"), &timeouts)?;
    let upstream_model = version.upstream_model.as_deref().unwrap_or(alias);
    if let Provider::Vertex(vertex) = provider {
        vertex
            .check_model(upstream_model)
            .map_err(|why| problem(format!("{path}.upstream_model"), why))?;
    }
    let estimator = Estimator::new(&counting.resolve(upstream_model))
        .map_err(|why| problem(format!("{path}.token_counting"), why))?;
    let upstream_model_json = serde_json::to_vec(upstream_model)
        .map_err(|e| problem(format!("{path}.upstream_model"), e.to_string()))?;
    Ok(Version {
        name: name.into(),
        name_header,
        provider: provider.clone(),
        upstream_model: upstream_model.into(),
        upstream_model_json: upstream_model_json.into(),
        timeouts,
        weight,
        shadow: version.shadow,
        headers,
        header_lines: header_lines.into(),
        defaults,
        metrics: series.metrics.version(alias, name),
        genai: series
            .metrics
            .genai(alias, name, provider.genai_name(), upstream_model),
        requests: series
            .tenants
            .iter()
            .map(|tenant| series.metrics.requests(alias, name, tenant))
            .collect(),
        span_attributes: VersionAttributes::new(
            alias,
            name,
            series.config_version,
            provider,
            upstream_model,
        ),
        limits: None,
        estimator,
    })
}

/// Headers the gateway writes itself, which a version may not set.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    "transfer-encoding",
    "connection",
];

/// A version's extra upstream headers, validated, as a map and as header lines.
fn version_headers(
    path: &str,
    version: &VersionConfig,
    provider: &Provider,
) -> Result<(http::HeaderMap, Vec<u8>), CompileError> {
    let headers = static_headers(&version.headers)
        .map_err(|(key, why)| problem(format!("{path}.headers.{key}"), why))?;
    let mut lines = Vec::new();
    for (name, value) in &headers {
        let at = format!("{path}.headers.{name}");
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(problem(at, "set by the gateway itself"));
        }
        if matches!(provider, Provider::Vertex(_))
            && matches!(name.as_str(), "authorization" | "x-goog-api-key")
        {
            return Err(problem(at, "set by the Vertex AI provider's credentials"));
        }
        if let Some(p) = provider.connections()
            && p.headers.contains_key(name)
        {
            return Err(problem(at, format!("already set by provider `{}`", p.name)));
        }
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    Ok((headers, lines))
}

fn check_timeouts(path: &str, timeouts: &TimeoutsConfig) -> Result<(), CompileError> {
    for (key, value) in [
        ("first_token", timeouts.first_token),
        ("idle", timeouts.idle),
        ("total", timeouts.total),
    ] {
        if value.0.is_zero() {
            return Err(problem(
                format!("{path}.{key}"),
                "must be greater than zero",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::snapshot::{CompileError, Snapshot, compile};
    use crate::telemetry::metrics::Metrics;

    fn compile_routes(routes: &str) -> Result<Snapshot, CompileError> {
        let yaml = format!(
            "auth:\n  enabled: false\nproviders:\n  a:\n    type: demo\n  b:\n    type: demo\nroutes:\n{routes}"
        );
        let config = Config::from_yaml(&yaml).unwrap();
        compile(&config, &yaml, &std::sync::Arc::new(Metrics::new()))
    }

    fn error_path(routes: &str) -> String {
        compile_routes(routes).unwrap_err().path
    }

    #[test]
    fn versions_compile_with_their_weights_and_models() {
        let snap = compile_routes(
            "  m:\n    sticky: tenant\n    versions:\n      v1: {provider: a, weight: 95}\n      v2: {provider: b, upstream_model: big, weight: 5}\n",
        )
        .unwrap();
        let route = &snap.routes["m"];
        assert_eq!(route.version("v2"), Some(1));
        assert_eq!(&*route.versions[0].upstream_model, "m");
        assert_eq!(&*route.versions[1].upstream_model_json, b"\"big\"");
        assert_eq!(route.split.total(), 100);
        assert!(route.sticky.is_some());
    }

    #[test]
    fn check_names_each_mistake() {
        let cases = [
            (
                "  m:\n    versions:\n      v1: {provider: nope}\n",
                "routes.m.versions.v1.provider",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a, weight: 0}\n      v2: {provider: b, weight: 0}\n",
                "routes.m.versions",
            ),
            (
                "  m:\n    provider: a\n    versions:\n      v1: {provider: a}\n",
                "routes.m",
            ),
            ("  m:\n    timeouts: {idle: 1s}\n", "routes.m"),
            (
                "  m:\n    provider: a\n    sticky: cookie\n",
                "routes.m.sticky",
            ),
            (
                "  m:\n    upstream_model: x\n    versions:\n      v1: {provider: a}\n",
                "routes.m.upstream_model",
            ),
            (
                "  m:\n    versions:\n      \"v@1\": {provider: a}\n",
                "routes.m.versions.v@1",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a, timeouts: {total: 0s}}\n",
                "routes.m.versions.v1.timeouts.total",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a}\n    fallbacks: [v2]\n",
                "routes.m.fallbacks[0]",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a}\n      v2: {provider: b}\n    fallbacks: [v2, v1, v2]\n",
                "routes.m.fallbacks[2]",
            ),
            (
                "  m:\n    provider: a\n    retry: {max_attempts: 0}\n",
                "routes.m.retry.max_attempts",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a}\n      s: {provider: b, shadow: 1.5}\n",
                "routes.m.versions.s.shadow",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a}\n      s: {provider: b, shadow: 0.1, weight: 5}\n",
                "routes.m.versions.s.weight",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a}\n      s: {provider: b, shadow: 0.1}\n    fallbacks: [s]\n",
                "routes.m.fallbacks[0]",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a, headers: {content-length: \"1\"}}\n",
                "routes.m.versions.v1.headers.content-length",
            ),
            (
                "  m:\n    versions:\n      v1: {provider: a, defaults: {messages: []}}\n",
                "routes.m.versions.v1.defaults.messages",
            ),
        ];
        for (routes, path) in cases {
            assert_eq!(error_path(routes), path, "{routes}");
        }
    }
}
