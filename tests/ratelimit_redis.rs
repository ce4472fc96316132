//! Shared-mode rate limits against a real `redis-server`, one per test on a free loopback
//! port: all-or-nothing decisions, local mode's GCRA on Redis's clock, exact limits under
//! racing tasks and across two clients (two replicas), true-ups, key expiry, the script
//! cache flushed, Redis stopped (typed errors in time, the breaker opening) and restarted
//! (the same client serves again). Without `redis-server` on PATH the tests skip, except
//! under `CI` or `TOLLGATE_REQUIRE_TOOLS` (`scripts/test` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "ratelimit_redis/redis.rs"]
mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Redis, WAIT};
use tollgate::config::ConfigDuration;
use tollgate::ratelimit::Place;
use tollgate::ratelimit::gcra::{Gcra, Rate, Refusal};
use tollgate::ratelimit::shared::{
    Adjustment, BreakerState, Bucket, BucketKey, Decision, SharedStore, SharedStoreConfig,
    StoreError,
};

const S: u64 = 1_000_000_000;

/// A store on `redis` with a generous timeout (tests run in parallel on a small machine),
/// changed by `edit`.
fn store(redis: &Redis, edit: impl FnOnce(&mut SharedStoreConfig)) -> SharedStore {
    let mut config = SharedStoreConfig {
        url: redis.url(),
        timeout: ConfigDuration::from_millis(2_000),
        ..SharedStoreConfig::default()
    };
    edit(&mut config);
    SharedStore::new(&config, 1).unwrap()
}

fn per_hour(limit: u64) -> Rate {
    Rate::new(limit, Duration::from_secs(3600))
}

fn key(store: &SharedStore, name: &str, rate: Rate) -> BucketKey {
    store.key(&Place::Route(name), "tokens_per_hour", rate)
}

fn bucket(key: &BucketKey, rate: Rate, cost: u64) -> Bucket<'_> {
    Bucket { key, rate, cost }
}

fn admitted(decision: Decision) -> Vec<u64> {
    match decision {
        Decision::Admitted { standings } => standings.iter().map(|s| s.remaining).collect(),
        refused => panic!("refused: {refused:?}"),
    }
}

fn refused(decision: Decision) -> (usize, Refusal, Vec<u64>) {
    match decision {
        Decision::Refused {
            index,
            refusal,
            standings,
        } => (
            index,
            refusal,
            standings.iter().map(|s| s.remaining).collect(),
        ),
        admitted => panic!("admitted: {admitted:?}"),
    }
}

/// What a bucket holds now, by a decision of cost 0 (which takes nothing; a bucket in
/// debt refuses even that, as in local mode, and reports its standing all the same).
async fn remaining(store: &SharedStore, key: &BucketKey, rate: Rate) -> u64 {
    match store.decide(&[bucket(key, rate, 0)]).await.unwrap() {
        Decision::Admitted { standings } | Decision::Refused { standings, .. } => {
            standings[0].remaining
        }
    }
}

/// Polls `condition` until it holds; the test fails after [`WAIT`].
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) {
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_decision_takes_from_every_bucket_or_from_none() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let store = store(&redis, |_| {});
    let (ra, rb, rc) = (per_hour(100), per_hour(1000), per_hour(2));
    let (a, b, c) = (
        key(&store, "a", ra),
        key(&store, "b", rb),
        key(&store, "c", rc),
    );
    let three = |cost_b| [bucket(&a, ra, 1), bucket(&b, rb, cost_b), bucket(&c, rc, 1)];
    assert_eq!(
        admitted(store.decide(&three(100)).await.unwrap()),
        [99, 900, 1]
    );
    assert_eq!(
        admitted(store.decide(&three(100)).await.unwrap()),
        [98, 800, 0]
    );
    let (before_a, before_b) = (
        redis.cmd(&["GET", a.as_str()]),
        redis.cmd(&["GET", b.as_str()]),
    );
    let (index, refusal, standings) = refused(store.decide(&three(100)).await.unwrap());
    assert_eq!(index, 2, "c refused");
    assert!(
        matches!(refusal, Refusal::Wait { retry_after_ns } if retry_after_ns > 1790 * S && retry_after_ns <= 1800 * S)
    );
    assert_eq!(standings, [98, 800, 0], "as they stand: nothing taken");
    assert_eq!(redis.cmd(&["GET", a.as_str()]), before_a, "a untouched");
    assert_eq!(redis.cmd(&["GET", b.as_str()]), before_b, "b untouched");
    // The most constraining refusal: the longest wait, and a cost above a whole limit over
    // any wait (as local mode's `admit` orders them).
    let rd = Rate::new(1, Duration::from_secs(60));
    let d = key(&store, "d", rd);
    admitted(store.decide(&[bucket(&d, rd, 1)]).await.unwrap());
    let (index, ..) = refused(
        store
            .decide(&[bucket(&d, rd, 1), bucket(&c, rc, 1)])
            .await
            .unwrap(),
    );
    assert_eq!(index, 1, "half an hour beats a minute");
    let (index, refusal, _) = refused(
        store
            .decide(&[bucket(&d, rd, 1), bucket(&a, ra, 101), bucket(&c, rc, 1)])
            .await
            .unwrap(),
    );
    assert_eq!((index, refusal), (1, Refusal::TooLarge));
    assert_eq!(
        store.decide(&[]).await.unwrap(),
        Decision::Admitted {
            standings: Default::default()
        }
    );
}

fn unix_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// `admit::worse`: a cost above a whole limit beats any wait, else the longer wait.
fn worse(worst: Refusal, new: Refusal) -> bool {
    match (worst, new) {
        (Refusal::TooLarge, _) => false,
        (_, Refusal::TooLarge) => true,
        (Refusal::Wait { retry_after_ns: x }, Refusal::Wait { retry_after_ns: y }) => y > x,
    }
}

/// Local mode's answer to the same decision at `now`, as `admit` gives it: all or nothing,
/// the worst refusal reported.
fn local_decide(buckets: &[(&Gcra, Rate, u64)], now: u64) -> Result<Vec<u64>, (usize, Refusal)> {
    let mut worst: Option<(usize, Refusal)> = None;
    let (mut taken, mut remaining) = (Vec::new(), Vec::new());
    for (i, &(gcra, rate, cost)) in buckets.iter().enumerate() {
        match gcra.try_take(&rate, now, cost) {
            Ok(standing) => {
                taken.push(i);
                remaining.push(standing.remaining);
            }
            Err(refusal) => {
                if worst.is_none_or(|(_, w)| worse(w, refusal)) {
                    worst = Some((i, refusal));
                }
            }
        }
    }
    let Some(worst) = worst else {
        return Ok(remaining);
    };
    for i in taken {
        let (gcra, rate, cost) = buckets[i];
        gcra.give_back(&rate, now, cost);
    }
    Err(worst)
}

#[tokio::test]
async fn the_arithmetic_is_local_modes_on_the_redis_clock() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let store = store(&redis, |_| {});
    let (rt, rr) = (per_hour(1000), Rate::new(5, Duration::from_secs(60)));
    let t = key(&store, "tokens", rt);
    let r = store.key(&Place::Route("requests"), "requests_per_minute", rr);
    let (lt, lr) = (Gcra::default(), Gcra::default());
    // Fits, fits, fits, waits, too large, fits exactly, waits; then requests run out, and
    // both refuse (the longer wait is reported), and a cost too large beats any wait.
    let costs = [100, 250, 400, 300, 1001, 250, 1, 0, 0, 1, 1001];
    let mut slowest = 0;
    let mut decisions = Vec::new();
    for cost in costs {
        // Redis reads its clock between `before` and `after` (the same clock, one machine).
        let before = unix_ns();
        let remote = store
            .decide(&[bucket(&t, rt, cost), bucket(&r, rr, 1)])
            .await
            .unwrap();
        slowest = slowest.max(unix_ns() - before);
        decisions.push((
            cost,
            remote,
            local_decide(&[(&lt, rt, cost), (&lr, rr, 1)], before),
        ));
    }
    // Spans here are whole microseconds, so only the clocks' offset may differ, by at
    // most the slowest call.
    let tolerance = slowest + 10_000;
    for (cost, remote, local) in decisions {
        match (remote, local) {
            (Decision::Admitted { standings }, Ok(remaining)) => {
                let remote: Vec<u64> = standings.iter().map(|s| s.remaining).collect();
                assert_eq!(remote, remaining, "cost {cost}");
            }
            (Decision::Refused { index, refusal, .. }, Err((i, local))) => {
                assert_eq!(index, i, "cost {cost}");
                match (refusal, local) {
                    (Refusal::TooLarge, Refusal::TooLarge) => {}
                    (Refusal::Wait { retry_after_ns: x }, Refusal::Wait { retry_after_ns: y }) => {
                        assert!(x.abs_diff(y) <= tolerance, "cost {cost}: {x} vs {y}");
                    }
                    other => panic!("cost {cost}: {other:?}"),
                }
            }
            (remote, local) => panic!("cost {cost}: redis {remote:?}, local {local:?}"),
        }
    }
}

/// `tasks` decisions of cost 1 on `rate` at `key`, spread over `stores` and racing; how
/// many were admitted.
async fn race(stores: &[Arc<SharedStore>], key: &BucketKey, rate: Rate, tasks: usize) -> usize {
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (store, key) = (stores[i % stores.len()].clone(), key.clone());
            tokio::spawn(async move {
                let decision = store.decide(&[bucket(&key, rate, 1)]).await.unwrap();
                matches!(decision, Decision::Admitted { .. })
            })
        })
        .collect();
    let mut admitted = 0;
    for handle in handles {
        admitted += usize::from(handle.await.unwrap());
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_tasks_admit_exactly_the_limit() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let store = Arc::new(store(&redis, |_| {}));
    let rate = per_hour(50);
    let k = key(&store, "race", rate);
    assert_eq!(race(&[store], &k, rate, 200).await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_exactly() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    // Two stores, two sets of connections: what two gateway processes have.
    let (one, two) = (
        Arc::new(store(&redis, |_| {})),
        Arc::new(store(&redis, |_| {})),
    );
    let rate = per_hour(60);
    let k = key(&one, "shared", rate);
    assert_eq!(k, key(&two, "shared", rate), "replicas name buckets alike");
    assert_eq!(race(&[one.clone(), two.clone()], &k, rate, 300).await, 60);
    assert!(one.stats().decisions > 0 && two.stats().decisions > 0);
}

#[tokio::test]
async fn true_ups_charge_and_refund_as_local_mode_does() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let store = store(&redis, |_| {});
    let rate = per_hour(1000);
    let k = key(&store, "budget", rate);
    let local = Gcra::default();
    let check = |remote: u64, what: &str| {
        assert_eq!(remote, local.standing(&rate, 0).remaining, "{what}");
    };
    admitted(store.decide(&[bucket(&k, rate, 500)]).await.unwrap());
    local.try_take(&rate, 0, 500).unwrap();
    store
        .reconcile_now(&[Adjustment::refund(k.clone(), &rate, 200)])
        .await
        .unwrap();
    local.give_back(&rate, 0, 200);
    check(remaining(&store, &k, rate).await, "a refund");
    // Through the queue, not waited for.
    store.reconcile([Adjustment::charge(k.clone(), &rate, 600)]);
    local.force_take(&rate, 0, 600);
    let (s, kk) = (&store, &k);
    eventually("the queued charge is applied", move || async move {
        remaining(s, kk, rate).await == 100
    })
    .await;
    check(100, "a charge");
    // More than the bucket holds: debt, waited out.
    store
        .reconcile_now(&[Adjustment::charge(k.clone(), &rate, 300)])
        .await
        .unwrap();
    local.force_take(&rate, 0, 300);
    check(remaining(&store, &k, rate).await, "debt");
    let (_, refusal, _) = refused(store.decide(&[bucket(&k, rate, 1)]).await.unwrap());
    let Err(Refusal::Wait {
        retry_after_ns: expected,
    }) = local.try_take(&rate, 0, 1)
    else {
        panic!("local mode admitted")
    };
    let Refusal::Wait { retry_after_ns } = refusal else {
        panic!("{refusal:?}")
    };
    assert!(
        expected.abs_diff(retry_after_ns) < S,
        "{retry_after_ns} vs {expected}"
    );
    // A refund of more than was taken leaves the bucket full, and its key gone.
    store
        .reconcile_now(&[Adjustment::refund(k.clone(), &rate, 5_000)])
        .await
        .unwrap();
    assert_eq!(redis.cmd(&["EXISTS", k.as_str()]), "0");
    assert_eq!(remaining(&store, &k, rate).await, 1000);
    assert_eq!(store.stats().true_ups_sent, 4);
}

#[tokio::test]
async fn a_full_true_up_queue_drops_and_counts() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let store = store(&redis, |c| c.reconcile_queue = 4);
    let rate = per_hour(1000);
    let k = key(&store, "queue", rate);
    // Opens this worker's connection and queue; on this single-threaded runtime the owner
    // task cannot run until the test awaits, so exactly four fit.
    assert_eq!(remaining(&store, &k, rate).await, 1000);
    store.reconcile((0..10).map(|_| Adjustment::charge(k.clone(), &rate, 10)));
    assert_eq!(store.stats().true_ups_dropped, 6);
    let s = &store;
    eventually("four true-ups are sent", move || async move {
        s.stats().true_ups_sent == 4
    })
    .await;
    assert_eq!(remaining(&store, &k, rate).await, 960);
}

#[tokio::test]
async fn idle_keys_expire_when_their_bucket_is_full_again() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let store = store(&redis, |_| {});
    let per_minute = Rate::new(10, Duration::from_secs(60));
    let r = store.key(&Place::Tenant("t"), "requests_per_minute", per_minute);
    let tokens = per_hour(1000);
    let t = key(&store, "t", tokens);
    admitted(
        store
            .decide(&[bucket(&r, per_minute, 3), bucket(&t, tokens, 500)])
            .await
            .unwrap(),
    );
    let pttl = |k: &BucketKey| redis.cmd(&["PTTL", k.as_str()]).parse::<i64>().unwrap();
    // Three requests of ten a minute: full again in 18 s; half the tokens: in 30 min.
    assert!((17_000..=18_001).contains(&pttl(&r)), "{}", pttl(&r));
    assert!((1_790_000..=1_800_001).contains(&pttl(&t)), "{}", pttl(&t));
    // A refused decision writes nothing.
    let z = key(&store, "z", tokens);
    refused(
        store
            .decide(&[bucket(&z, tokens, 1), bucket(&t, tokens, 501)])
            .await
            .unwrap(),
    );
    assert_eq!(redis.cmd(&["EXISTS", z.as_str()]), "0");
    assert_eq!(redis.cmd(&["DBSIZE"]), "2", "only the two buckets in use");
}

#[tokio::test]
async fn a_flushed_script_cache_is_filled_again() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let store = store(&redis, |_| {});
    let rate = per_hour(100);
    let k = key(&store, "noscript", rate);
    assert_eq!(
        admitted(store.decide(&[bucket(&k, rate, 1)]).await.unwrap()),
        [99]
    );
    // A fresh Redis has no script yet: the first call sent it.
    assert_eq!(store.stats().script_reloads, 1);
    assert_eq!(
        admitted(store.decide(&[bucket(&k, rate, 1)]).await.unwrap()),
        [98]
    );
    assert_eq!(store.stats().script_reloads, 1, "EVAL cached it");
    assert_eq!(redis.cmd(&["SCRIPT", "FLUSH"]), "OK");
    assert_eq!(
        admitted(store.decide(&[bucket(&k, rate, 1)]).await.unwrap()),
        [97]
    );
    assert_eq!(
        admitted(store.decide(&[bucket(&k, rate, 1)]).await.unwrap()),
        [96]
    );
    assert_eq!(store.stats().script_reloads, 2, "EVAL cached it again");
    store
        .reconcile_now(&[Adjustment::refund(k.clone(), &rate, 1)])
        .await
        .unwrap();
    assert_eq!(
        store.stats().script_reloads,
        3,
        "the true-up script's first call"
    );
    assert_eq!(redis.cmd(&["SCRIPT", "FLUSH"]), "OK");
    store
        .reconcile_now(&[Adjustment::refund(k.clone(), &rate, 3)])
        .await
        .unwrap();
    assert_eq!(store.stats().script_reloads, 4);
    assert_eq!(remaining(&store, &k, rate).await, 100);
}

#[tokio::test]
async fn a_stopped_redis_fails_fast_then_a_restarted_one_serves_the_same_client() {
    let Some(mut redis) = Redis::start(&[]) else {
        return;
    };
    let timeout = Duration::from_millis(50);
    let store = store(&redis, |c| {
        c.timeout = ConfigDuration(timeout);
        c.breaker.failures = 3;
        c.breaker.cool_down = ConfigDuration::from_millis(300);
    });
    let rate = per_hour(100);
    let k = key(&store, "outage", rate);
    // Connecting and caching the script may take more than 50 ms on a busy machine.
    let (s, kk) = (&store, &k);
    eventually("the first decision", move || async move {
        s.decide(&[bucket(kk, rate, 1)]).await.is_ok()
    })
    .await;
    let taken = 100 - remaining(&store, &k, rate).await;
    redis.stop();
    // Each call fails within the timeout (plus scheduling on a busy machine), typed.
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.decide(&[bucket(&k, rate, 1)]).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
            "{err:?}"
        );
        eprintln!("Redis down: {err:?} after {:?}", started.elapsed());
        assert!(
            started.elapsed() < timeout + Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
    }
    // Three in a row: the breaker is open, and calls fail at once without Redis.
    assert_eq!(store.breaker_state(), BreakerState::Open);
    let started = Instant::now();
    assert_eq!(
        store.decide(&[bucket(&k, rate, 1)]).await.unwrap_err(),
        StoreError::CircuitOpen
    );
    assert!(started.elapsed() < timeout);
    // A true-up meanwhile is lost and counted, not retried.
    store
        .reconcile_now(&[Adjustment::refund(k.clone(), &rate, 1)])
        .await
        .unwrap_err();
    let stats = store.stats();
    assert!(stats.errors >= 3);
    assert_eq!(stats.breaker_opened, 1);
    assert!(stats.circuit_open >= 1);

    redis.restart();
    let s = &store;
    let (kk, started) = (&k, Instant::now());
    eventually("the same store decides again", move || async move {
        s.decide(&[bucket(kk, rate, 1)]).await.is_ok()
    })
    .await;
    eprintln!("served again {:?} after the restart", started.elapsed());
    assert_eq!(store.breaker_state(), BreakerState::Closed);
    // The new Redis has no script cached (nor buckets: it keeps nothing on disk).
    assert!(store.stats().script_reloads >= 1);
    assert_eq!(remaining(&store, &k, rate).await, 99);
    assert!(taken >= 1);
}

#[tokio::test]
async fn the_password_comes_from_a_file() {
    let Some(redis) = Redis::start(&["--requirepass", "s3cret-pw"]) else {
        return;
    };
    let file = std::env::temp_dir().join(format!("tollgate-redis-pw-{}", std::process::id()));
    std::fs::write(&file, "s3cret-pw\n").unwrap();
    let rate = per_hour(10);
    let with = store(&redis, |c| c.password_file = Some(file.clone()));
    let k = key(&with, "auth", rate);
    assert_eq!(
        admitted(with.decide(&[bucket(&k, rate, 1)]).await.unwrap()),
        [9]
    );
    let without = store(&redis, |c| c.timeout = ConfigDuration::from_millis(300));
    assert!(without.decide(&[bucket(&k, rate, 1)]).await.is_err());
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn stop_sends_queued_true_ups_and_closes_the_connections() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let clients = || {
        let info = redis.cmd(&["INFO", "clients"]);
        let line = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"));
        line.unwrap().trim().parse::<u32>().unwrap()
    };
    let store = store(&redis, |c| c.pool_size = 2);
    let rate = per_hour(1000);
    let k = key(&store, "stop", rate);
    assert_eq!(remaining(&store, &k, rate).await, 1000);
    let deadline = Instant::now() + WAIT;
    while clients() != 3 {
        assert!(
            Instant::now() < deadline,
            "two of the store, one of this check"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.reconcile([Adjustment::charge(k.clone(), &rate, 100)]);
    store.stop().await;
    let other = self::store(&redis, |_| {});
    assert_eq!(remaining(&other, &k, rate).await, 900, "flushed at stop");
    assert_eq!(
        store.decide(&[bucket(&k, rate, 1)]).await.unwrap_err(),
        StoreError::Stopped
    );
    store.reconcile([Adjustment::charge(k.clone(), &rate, 1)]);
    assert_eq!(store.stats().true_ups_dropped, 1);
    other.stop().await;
    let deadline = Instant::now() + WAIT;
    while clients() != 1 {
        assert!(Instant::now() < deadline, "connections left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca_file, cert, key_file) = (
        file("ca.pem", ca.pem()),
        file("cert.pem", leaf.pem()),
        file("key.pem", leaf_key.serialize_pem()),
    );
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let Some(redis) = Redis::start(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let trusted = store(&redis, |c| {
        c.url = url.clone();
        c.ca_file = Some(ca_file.clone().into());
    });
    let rate = per_hour(10);
    let k = key(&trusted, "tls", rate);
    assert_eq!(
        admitted(trusted.decide(&[bucket(&k, rate, 1)]).await.unwrap()),
        [9]
    );
    // Without the private CA the server is not trusted.
    let untrusted = store(&redis, |c| {
        c.url = url.clone();
        c.timeout = ConfigDuration::from_millis(300);
    });
    assert!(untrusted.decide(&[bucket(&k, rate, 1)]).await.is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
