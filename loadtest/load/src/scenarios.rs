//! The load shapes: open loop at a fixed rate, closed loop, and many idle streams held open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::client::{Connection, Outcome, Target, exchange};
use crate::stats::summary;

/// Requests in flight beyond which an open-loop run counts sends as dropped: the target is
/// then too slow for the rate, and piling up more would only measure the generator.
const MAX_IN_FLIGHT: usize = 10_000;

/// Idle keep-alive connections shared by the requests of one run.
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Vec<Connection>>>);

impl Pool {
    async fn take(&self, target: &Target) -> Option<Connection> {
        let idle = self.0.lock().ok()?.pop();
        match idle {
            Some(conn) if conn.is_usable() => Some(conn),
            _ => Connection::open(target.addr).await.ok(),
        }
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.0.lock() {
            idle.push(conn);
        }
    }
}

async fn one(pool: &Pool, target: &Target) -> Outcome {
    let Some(mut conn) = pool.take(target).await else {
        return Outcome::default();
    };
    let outcome = exchange(&mut conn, target).await;
    if outcome.ok && conn.is_usable() {
        pool.give_back(conn);
    }
    outcome
}

/// Results of timed requests, as one JSON object.
fn report(outcomes: &[Outcome], elapsed: Duration, expected_events: Option<u32>) -> Value {
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
    let mut out = json!({
        "requests": outcomes.len(),
        "errors": outcomes.len() - ok.len(),
        "seconds": elapsed.as_secs_f64(),
        "throughput_rps": ok.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        "latency": summary(ok.iter().map(|o| o.latency).collect()),
    });
    if let Some(expected) = expected_events {
        out["ttft"] = summary(ok.iter().map(|o| o.first_frame).collect());
        out["event_count_mismatches"] = json!(ok.iter().filter(|o| o.events != expected).count());
        out["coalesced_frames"] = json!(
            ok.iter()
                .map(|o| u64::from(o.coalesced_frames))
                .sum::<u64>()
        );
        out["events"] = json!(ok.iter().map(|o| u64::from(o.events)).sum::<u64>());
    }
    out
}

/// Sends at `rate` per second for `duration`, each request on its own task so a slow answer
/// never delays the next send (no coordinated omission); latency runs from the actual send.
pub async fn open_loop(
    target: Arc<Target>,
    rate: f64,
    duration: Duration,
    expected_events: Option<u32>,
) -> Value {
    let pool = Pool::default();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = JoinSet::new();
    let mut outcomes = Vec::with_capacity(total as usize);
    let mut lateness = Vec::with_capacity(total as usize);
    let mut dropped = 0u64;
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        sleep_until(at).await;
        lateness.push(at.elapsed());
        while let Some(done) = tasks.try_join_next() {
            outcomes.push(done.unwrap_or_default());
        }
        if tasks.len() >= MAX_IN_FLIGHT {
            dropped += 1;
            continue;
        }
        let (pool, target) = (pool.clone(), target.clone());
        tasks.spawn(async move { one(&pool, &target).await });
    }
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.unwrap_or_default());
    }
    let mut out = report(&outcomes, start.elapsed(), expected_events);
    out["rate"] = json!(rate);
    out["dropped_sends"] = json!(dropped);
    out["send_lateness"] = summary(lateness);
    out
}

/// `connections` clients, each sending its next request as soon as the last one is answered.
pub async fn closed_loop(target: Arc<Target>, connections: usize, duration: Duration) -> Value {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let target = target.clone();
        tasks.spawn(async move {
            let pool = Pool::default();
            let mut outcomes = Vec::new();
            while Instant::now() < deadline {
                outcomes.push(one(&pool, &target).await);
            }
            outcomes
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.extend(done.unwrap_or_default());
    }
    let mut out = report(&outcomes, start.elapsed(), None);
    out["connections"] = json!(connections);
    out
}

/// Opens `streams` streaming requests, waits for each one's first event, prints a
/// `{"holding":N}` line (the harness measures memory then), holds them for `hold`, then
/// closes them all.
pub async fn idle_streams(target: Arc<Target>, streams: usize, hold: Duration) -> Value {
    const BATCH: usize = 500;
    let mut holders = JoinSet::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(streams.max(1));
    let start = Instant::now();
    let mut opened = 0usize;
    for batch in 0..streams.div_ceil(BATCH) {
        let size = BATCH.min(streams - batch * BATCH);
        for _ in 0..size {
            let (target, opened) = (target.clone(), opened_tx.clone());
            holders.spawn(async move { hold_one(&target, opened).await });
        }
        // Let each batch connect before the next, so the listen backlog never overflows.
        for _ in 0..size {
            if opened_rx.recv().await == Some(true) {
                opened += 1;
            }
        }
    }
    let open_seconds = start.elapsed().as_secs_f64();
    println!("{}", json!({"holding": opened}));
    tokio::time::sleep(hold).await;
    // A holder only finishes early if its stream failed or ended.
    while holders.try_join_next().is_some() {}
    let still_open = holders.len();
    holders.shutdown().await;
    json!({"streams": streams, "opened": opened, "still_open": still_open, "open_seconds": open_seconds})
}

async fn hold_one(target: &Target, opened: tokio::sync::mpsc::Sender<bool>) {
    use http_body_util::BodyExt;
    let Ok(mut conn) = Connection::open(target.addr).await else {
        let _ = opened.send(false).await;
        return;
    };
    let mut body = match conn.send(target).await {
        Some(body) => body,
        None => {
            let _ = opened.send(false).await;
            return;
        }
    };
    let first = body.frame().await.is_some_and(|f| f.is_ok());
    let _ = opened.send(first).await;
    // Keep reading until the stream ends or the hold ends by aborting this task.
    while let Some(Ok(_)) = body.frame().await {}
}
