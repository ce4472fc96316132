//! The scripts' arguments and replies, against local mode's arithmetic.

use std::time::Duration;

use super::*;
use crate::ratelimit::Place;
use crate::ratelimit::gcra::Gcra;

const S: u64 = 1_000_000_000;

fn key(name: &str) -> BucketKey {
    BucketKey::new(
        "{t}",
        &Place::Route(name),
        "requests_per_minute",
        Rate::new(1, Duration::from_secs(60)),
    )
}

#[test]
fn the_script_hashes_are_the_scripts() {
    assert_eq!(fred::util::sha1_hash(TAKE), TAKE_SHA);
    assert_eq!(fred::util::sha1_hash(TRUE_UP), TRUE_UP_SHA);
}

#[test]
fn spans_are_local_spans_rounded_up_to_a_microsecond() {
    let rates = [
        Rate::new(10, Duration::from_secs(1)),
        Rate::new(7, Duration::from_secs(60)),
        Rate::new(1000, Duration::from_secs(3600)),
        Rate::new(3, Duration::from_secs(86_400)),
    ];
    for rate in rates {
        for cost in [0, 1, 2, 3, 7, 10, rate.limit] {
            let local = Gcra::default();
            let Ok(standing) = local.try_take(&rate, 0, cost) else {
                continue;
            };
            // From an empty bucket at 0, the TAT is the span.
            assert_eq!(
                span_us(&rate, cost),
                standing.reset_ns.div_ceil(1000),
                "{rate:?} {cost}"
            );
        }
        assert_eq!(
            span_us(&rate, rate.limit),
            window_us(&rate),
            "the whole limit is the window"
        );
        assert!(
            span_us(&rate, rate.limit + 1) > window_us(&rate),
            "one more is too large"
        );
    }
    let huge = Rate::new(1, Duration::from_secs(u64::MAX));
    assert_eq!(window_us(&huge), 1 << 50);
    assert_eq!(span_us(&huge, u64::MAX), 1 << 50);
    assert_eq!(
        span_us(
            &Rate {
                limit: 0,
                window_ns: 5_000
            },
            1
        ),
        5,
        "a zero limit is one"
    );
}

#[test]
fn standings_match_local_mode() {
    let rate = Rate::new(1000, Duration::from_secs(60));
    let local = Gcra::default();
    local.try_take(&rate, 0, 700).unwrap();
    let used_us = span_us(&rate, 700);
    assert_eq!(standing(&rate, used_us), local.standing(&rate, 0));
    assert_eq!(standing(&rate, used_us).remaining, 300);
    // Debt: the TAT runs more than a window ahead; nothing remains.
    assert_eq!(standing(&rate, 2 * 60_000_000).remaining, 0);
    assert_eq!(standing(&rate, 0).remaining, 1000);
    assert_eq!(standing(&rate, u64::MAX).reset_ns, u64::MAX);
}

#[test]
fn take_arguments_are_window_then_span_for_each_key() {
    let (a, b) = (key("a"), key("b"));
    let buckets = [
        Bucket {
            key: &a,
            rate: Rate::new(10, Duration::from_secs(1)),
            cost: 1,
        },
        Bucket {
            key: &b,
            rate: Rate::new(1000, Duration::from_secs(60)),
            cost: 250,
        },
    ];
    let (keys, args) = take_args(&buckets);
    let keys: Vec<String> = keys
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, [a.as_str(), b.as_str()]);
    assert_eq!(
        args,
        [
            Value::Integer(1_000_000),
            Value::Integer(100_000),
            Value::Integer(60_000_000),
            Value::Integer(15_000_000),
        ]
    );
}

#[test]
fn true_ups_charge_positive_and_refund_negative_spans() {
    let rate = Rate::new(100, Duration::from_secs(100));
    let charge = Adjustment::charge(key("a"), &rate, 30);
    let refund = Adjustment::refund(key("b"), &rate, 5);
    assert_eq!((charge.span_us, refund.span_us), (30_000_000, -5_000_000));
    assert!(Adjustment::refund(key("c"), &rate, 0).is_nothing());
    let (keys, args) = true_up_args(&[charge, refund]);
    assert_eq!(keys.len(), 2);
    assert_eq!(
        args,
        [Value::Integer(30_000_000), Value::Integer(-5_000_000)]
    );
}

fn two_buckets<'a>(a: &'a BucketKey, b: &'a BucketKey) -> [Bucket<'a>; 2] {
    [
        Bucket {
            key: a,
            rate: Rate::new(10, Duration::from_secs(1)),
            cost: 1,
        },
        Bucket {
            key: b,
            rate: Rate::new(1000, Duration::from_secs(60)),
            cost: 100,
        },
    ]
}

#[test]
fn replies_decode_to_decisions() {
    let (a, b) = (key("a"), key("b"));
    let buckets = two_buckets(&a, &b);
    let Decision::Admitted { standings } = decode_take(&[1, 100_000, 6_000_000], &buckets).unwrap()
    else {
        panic!("admitted")
    };
    assert_eq!(standings[0].remaining, 9);
    assert_eq!(standings[0].reset_ns, S / 10);
    assert_eq!(standings[1].remaining, 900);
    assert_eq!(
        decode_take(&[0, 2, 0, 250_000, 0, 60_000_000], &buckets).unwrap(),
        Decision::Refused {
            index: 1,
            refusal: Refusal::Wait {
                retry_after_ns: S / 4
            },
            standings: [
                standing(&buckets[0].rate, 0),
                standing(&buckets[1].rate, 60_000_000)
            ]
            .into_iter()
            .collect(),
        }
    );
    let Decision::Refused { index, refusal, .. } =
        decode_take(&[0, 1, 1, 0, 0, 0], &buckets).unwrap()
    else {
        panic!("refused")
    };
    assert_eq!((index, refusal), (0, Refusal::TooLarge));
}

#[test]
fn malformed_replies_are_protocol_errors() {
    let (a, b) = (key("a"), key("b"));
    let buckets = two_buckets(&a, &b);
    for reply in [
        &[][..],
        &[1, 0],
        &[1, 0, 0, 0],
        &[1, -1, 0],
        &[0, 0, 0, 0, 0, 0],
        &[0, 3, 0, 0, 0, 0],
        &[0, 1, 2, 0, 0, 0],
        &[0, 1, 0, -5, 0, 0],
        &[2, 0, 0],
    ] {
        assert!(
            matches!(decode_take(reply, &buckets), Err(StoreError::Protocol(_))),
            "{reply:?}"
        );
    }
}
