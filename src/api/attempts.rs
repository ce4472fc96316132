//! Attempts, retries and fallbacks: the chosen version first, then the route's plan, while
//! failures are retryable and the budget lasts.
//!
//! Every attempt ends before any byte goes to the client (a stream is handed over only once
//! its upstream answered 2xx), so a retry can never duplicate or splice an answer.

use std::time::Duration;

use bytes::Bytes;
use http::Response;

use super::choose::Choice;
use super::decode::RequestFields;
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::exchange::Exchange;
use crate::routing::retry::{attempt_version, backoff};
use crate::snapshot::Limits;
use crate::upstream::{Surface, retry_after, retryable_status};

/// What every attempt sends, whichever version it goes to.
pub struct Request<'a> {
    pub fields: &'a RequestFields<'a>,
    pub body: &'a Bytes,
    pub surface: Surface,
    pub stream: bool,
    pub strip_usage: bool,
    pub limits: &'a Limits,
    /// What a non-OpenAI upstream does with parameters it cannot take (the route's setting).
    pub unsupported_params: crate::config::UnsupportedParams,
}

/// Runs the attempts of one request, starting with the chosen version. A pinned version is
/// retried but never replaced by a fallback: the caller asked for that version's answer.
pub async fn run(
    exchange: &Exchange,
    choice: &Choice,
    request: &Request<'_>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let (route, first) = (&*choice.route, choice.version);
    let fallbacks: &[usize] = if choice.pinned { &[] } else { &route.fallbacks };
    let mut n = 0;
    loop {
        let index = attempt_version(first, fallbacks, n);
        exchange.start_attempt(index);
        let version = &route.versions[index];
        // The chosen version's limits were met before the first attempt; a fallback meets
        // its own version's here, and a refusal moves the plan on like a failure.
        let result = match index == first {
            true => super::attempt(exchange, version, request).await,
            false => match super::limited::admit_fallback(
                exchange,
                version,
                request.fields,
                request.surface,
            ) {
                Ok(()) => super::attempt(exchange, version, request).await,
                Err(refused) => Err(refused),
            },
        };
        n += 1;
        let Some(wait_at_least) = worth_retrying(&result) else {
            return result;
        };
        if n >= route.retry.max_attempts {
            return result;
        }
        let next = attempt_version(first, fallbacks, n);
        let mut wait = backoff(
            n,
            route.retry.backoff,
            route.retry.max_backoff,
            fastrand::f64(),
        );
        if next == index {
            // Asked to come back later: wait that long for the same version, within budget.
            if wait_at_least > route.retry.max_backoff {
                return result;
            }
            wait = wait.max(wait_at_least);
        }
        // All attempts together stay within the failed version's total timeout, so retries
        // never stretch a request far beyond what one attempt may take.
        if exchange.arrived.elapsed() + wait >= version.timeouts.total.0 {
            return result;
        }
        // Retried: this attempt's answer is dropped, so its outcome is recorded now.
        let (status, error) = match &result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(err) => (None, Some(err.kind)),
        };
        exchange.attempt_failed(status, error);
        version.metrics.record_retry();
        tracing::debug!(route = %route.alias, from = %version.name, to = %route.versions[next].name, ?wait, "retrying");
        tokio::time::sleep(wait).await;
        exchange.add_wait(wait);
    }
}

/// `Some(retry-after)` (zero when none was given) if another attempt may succeed.
fn worth_retrying(result: &Result<Response<GatewayBody>, GatewayError>) -> Option<Duration> {
    match result {
        Err(err) if err.retryable => Some(err.retry_after.unwrap_or_default()),
        Err(_) => None,
        // An upstream's own error answer, held whole: not yet sent, so it can be dropped.
        Ok(response) if retryable_status(response.status()) => {
            Some(retry_after(response.headers()).unwrap_or_default())
        }
        Ok(_) => None,
    }
}
