//! The true-up queue of one worker and the task that owns it: requests leave their charges
//! and refunds in a bounded queue without waiting (a full queue drops and counts them), and
//! the task sends them in batches, one script call each. The task also owns the worker's
//! connections: told to stop (or when the store is dropped) it sends what is queued, closes
//! the connections and ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::prelude::Client;
use fred::types::ConnectHandle;
use tokio::sync::{mpsc, watch};

use super::client::{Lua, call};
use super::script::{Adjustment, TRUE_UP, TRUE_UP_SHA, true_up_args};
use super::{Common, StoreError};
use crate::ratelimit::clock::now_ns;

/// Most true-ups sent in one script call.
pub const MAX_BATCH: usize = 64;

/// How long closing one connection may take at stop.
const QUIT_WAIT: Duration = Duration::from_secs(1);

pub(super) const TRUE_UP_LUA: Lua = Lua {
    text: TRUE_UP,
    sha: TRUE_UP_SHA,
};

/// The owner task of one worker's connections and queue.
pub(super) async fn run(
    mut queue: mpsc::Receiver<Adjustment>,
    clients: Box<[Client]>,
    routers: Vec<ConnectHandle>,
    common: Arc<Common>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    if let Some(client) = clients.first() {
        loop {
            tokio::select! {
                n = queue.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    send(client, &common, &mut batch).await;
                }
                // Stop, or the store is gone.
                () = stopped(&mut stop) => break,
            }
        }
        queue.close();
        while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
            send(client, &common, &mut batch).await;
        }
    }
    for client in clients.iter() {
        let _ = tokio::time::timeout(QUIT_WAIT, client.quit()).await;
    }
    for router in routers {
        // Still reconnecting to a Redis that is gone: end it.
        router.abort();
    }
}

/// Resolves when the store says stop or is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Sends `batch` as one true-up and empties it; failures are counted, not retried (the
/// state they would correct is in a Redis that is not answering).
pub(super) async fn send(client: &Client, common: &Common, batch: &mut Vec<Adjustment>) {
    batch.retain(|a| !a.is_nothing());
    let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
    if count == 0 {
        return;
    }
    let result = match common.breaker.permit(now_ns()) {
        Some(permit) => {
            let result = call::<i64>(client, &TRUE_UP_LUA, || true_up_args(batch), common).await;
            common.report(permit, &result);
            result.map(|_| ())
        }
        None => Err(StoreError::CircuitOpen),
    };
    let counter = match result {
        Ok(()) => &common.counters.true_ups_sent,
        Err(_) => &common.counters.true_ups_failed,
    };
    counter.fetch_add(count, Ordering::Relaxed);
    batch.clear();
}
