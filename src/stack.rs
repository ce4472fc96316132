//! The API request path, as one list of layers, outermost first.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::api::ApiService;
use crate::auth::AuthLayer;
use crate::error::RescueLayer;
use crate::snapshot::{Live, SnapshotLayer};
use crate::telemetry::access_log::AccessLogLayer;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::Tracer;

/// Builds the service that answers every API request. Cloned once per connection.
pub fn api(
    live: Live,
    metrics: Arc<Metrics>,
    tracer: Option<Arc<Tracer>>,
) -> crate::server::ApiStack {
    ServiceBuilder::new()
        // Outermost, so it sees every answer, errors included: request id, trace context,
        // access log, metrics and spans.
        .layer(AccessLogLayer::new(metrics, tracer))
        // Every error from below becomes one response in the caller's dialect, here and only here.
        .layer(RescueLayer)
        // One snapshot per request: it sees the old config or the new, never a mix.
        .layer(SnapshotLayer::new(live))
        // Caller -> tenant before any body is read, so unauthenticated bodies are never buffered.
        .layer(AuthLayer)
        // Decode the surface, pick the route, call the provider, stream back through the tee.
        .service(ApiService)
}
