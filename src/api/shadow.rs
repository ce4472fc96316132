//! Shadow traffic: a sampled copy of a request goes to each shadow version of its route. The
//! copy runs on its own task, so the caller never waits for it; its answer is read to the end,
//! recorded (metrics and an access line with `shadow: true`) and dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use http_body_util::BodyExt;

use super::attempts::Request;
use super::decode::RequestFields;
use crate::exchange::Exchange;
use crate::snapshot::{Limits, Route};
use crate::telemetry::access_log::{self, Report};
use crate::upstream::Surface;
use crate::upstream::stats::ExchangeStats;

/// Most shadow copies in flight in the process. Past it, copies are skipped and counted
/// (`tollgate_shadow_skipped_total`): shadows must never pile up behind a slow upstream.
pub const MAX_IN_FLIGHT: usize = 256;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Frees its in-flight slot when the copy ends, however it ends.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Relaxed);
    }
}

fn take_slot() -> Option<Slot> {
    IN_FLIGHT
        .fetch_update(Relaxed, Relaxed, |n| (n < MAX_IN_FLIGHT).then_some(n + 1))
        .ok()
        .map(|_| Slot)
}

/// Starts the sampled shadow copies of a request. Returns at once.
pub fn mirror(
    primary: &Exchange,
    route: &Arc<Route>,
    body: &Bytes,
    surface: Surface,
    stream: bool,
    limits: Limits,
) {
    for &index in route.shadows.iter() {
        let rate = route.versions[index].shadow.unwrap_or(0.0);
        if fastrand::f64() >= rate {
            continue;
        }
        let Some(snapshot) = primary.snapshot().cloned() else {
            return;
        };
        let Some(slot) = take_slot() else {
            snapshot.metrics.record_shadow_skipped();
            continue;
        };
        let exchange = Arc::new(Exchange::shadow_of(primary, route.clone(), index));
        let (route, body) = (route.clone(), body.clone());
        // Owned by the worker's runtime: the copy ends when its runtime does, at shutdown.
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(fields) = RequestFields::parse(&body) else {
                return;
            };
            let request = Request {
                fields: &fields,
                body: &body,
                surface,
                stream,
                strip_usage: stream && !fields.include_usage,
                limits: &limits,
                unsupported_params: route.unsupported_params,
            };
            let version = &route.versions[index];
            // The copy's span reports what it sent, like the primary's.
            exchange.record_request(fields.span_params(stream, &version.defaults));
            match super::attempt(&exchange, version, &request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let mut body = response.into_body();
                    let report = Report {
                        exchange: exchange.clone(),
                        metrics: snapshot.metrics.clone(),
                        in_flight: None,
                    };
                    body.report_to(report, status);
                    // Reading to the end is what records it; the bytes go nowhere.
                    let _ = body.collect().await;
                }
                Err(err) => {
                    let stats = ExchangeStats {
                        error: Some(err.kind),
                        stream,
                        ..ExchangeStats::default()
                    };
                    let status = err.kind.status().as_u16();
                    access_log::record(&exchange, &snapshot.metrics, status, &stats, true);
                    access_log::submit_spans(&exchange, status, &stats, true);
                }
            }
        });
    }
}
