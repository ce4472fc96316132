//! The rate-limit step: once the route and version are chosen, the request takes from every
//! limit that applies to it (tenant, key, route, tenant on the route, version), or is refused
//! with 429 and how long to wait.

use std::time::Duration;

use crate::auth::Tenant;
use crate::error::{ErrorKind, GatewayError};
use crate::exchange::Exchange;
use crate::ratelimit::admit::{Applicable, Estimate, Rejection};
use crate::ratelimit::estimate::output_reservation;
use crate::ratelimit::gcra::Refusal;
use crate::ratelimit::headers::duration_text;
use crate::ratelimit::{Admission, admit, clock};
use crate::snapshot::{Snapshot, Version};
use crate::telemetry::metrics::Operation;
use crate::upstream::Surface;

use super::choose::Choice;
use super::decode::RequestFields;

/// Admits the request to the limits of `choice`, or says why not.
pub fn admit_request(
    exchange: &Exchange,
    snapshot: &Snapshot,
    tenant: &Tenant,
    choice: &Choice,
    fields: &RequestFields<'_>,
    surface: Surface,
) -> Result<(), GatewayError> {
    let route = &choice.route;
    let version = &route.versions[choice.version];
    // A refused request still counts under the version the route chose.
    exchange.choose_version(choice.version);
    let limits: Applicable = [
        tenant.limits.as_ref(),
        exchange.key_limits.get(),
        route.limits.as_ref(),
        route
            .tenant_limits
            .get(tenant.slot)
            .and_then(Option::as_ref),
        version.limits.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    if limits.is_empty() {
        return Ok(());
    }
    let estimate = estimate(
        &limits,
        version,
        fields,
        surface,
        snapshot.max_output_reservation,
    );
    match admit(limits, estimate, clock::now_ns()) {
        Ok(mut admission) => {
            // The chosen version's limit goes with the first attempt: if that attempt fails
            // and a fallback answers, the version is not charged for the fallback's tokens.
            if let Some(version_part) = version
                .limits
                .as_ref()
                .and_then(|limit| admission.split_off(limit))
            {
                exchange.hold_version_admission(version_part);
            }
            let _ = exchange.admission.set(admission);
            Ok(())
        }
        Err(rejection) => {
            let error = refused(&rejection, &estimate);
            let _ = exchange.admission.set(Admission::refused(rejection.report));
            Err(error)
        }
    }
}

/// Admits a fallback attempt to the limits of its version (the request holds the others
/// already). A refusal is retryable: the route's plan may go on to its next version.
pub fn admit_fallback(
    exchange: &Exchange,
    version: &Version,
    fields: &RequestFields<'_>,
    surface: Surface,
) -> Result<(), GatewayError> {
    let now = clock::now_ns();
    exchange.release_failed_attempts(now);
    let Some(limit) = &version.limits else {
        return Ok(());
    };
    let max_output = exchange
        .snapshot()
        .map_or(0, |snapshot| snapshot.max_output_reservation);
    let limits: Applicable = std::iter::once(limit.clone()).collect();
    let estimate = estimate(&limits, version, fields, surface, max_output);
    match admit(limits, estimate, now) {
        Ok(admission) => {
            exchange.hold_version_admission(admission);
            Ok(())
        }
        Err(rejection) => Err(refused(&rejection, &estimate).retryable()),
    }
}

/// The tokens to charge before the call, when some limit counts tokens.
fn estimate(
    limits: &Applicable,
    version: &Version,
    fields: &RequestFields<'_>,
    surface: Surface,
    max_output_reservation: u64,
) -> Estimate {
    if !limits.iter().any(|l| l.counts_tokens) {
        return Estimate::default();
    }
    let op = surface.operation();
    let requested = fields
        .whole_param("max_completion_tokens")
        .or_else(|| fields.whole_param("max_tokens"));
    let output = match op {
        Operation::Embeddings => 0,
        _ => {
            let choices = fields.whole_param("n").unwrap_or(1).max(1);
            output_reservation(requested, max_output_reservation).saturating_mul(choices)
        }
    };
    Estimate {
        input: version
            .estimator
            .input_tokens(op, fields.content(op), fields.tools),
        output,
        output_requested: requested.is_some() || op == Operation::Embeddings,
    }
}

/// The 429 of a refusal: which limit, which rule, and when to come back.
fn refused(rejection: &Rejection, estimate: &Estimate) -> GatewayError {
    let (rule, limit) = (rejection.rule, &rejection.limit.name);
    match rejection.refusal {
        Refusal::Wait { retry_after_ns } => {
            let mut error = GatewayError::new(
                ErrorKind::RateLimited,
                format!(
                    "rate limit reached: {rule} of {limit}; try again in {}",
                    duration_text(retry_after_ns)
                ),
            );
            error.retry_after = Some(Duration::from_nanos(retry_after_ns));
            error
        }
        Refusal::TooLarge => GatewayError::new(
            ErrorKind::RateLimited,
            format!(
                "request too large for {rule} of {limit}: it needs about {} input and {} output tokens, more than the limit allows at once",
                estimate.input, estimate.output
            ),
        ),
    }
}
