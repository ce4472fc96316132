//! Helpers for the rate-limit tests: the `x-ratelimit-*` headers, keyed requests, and waiting
//! until a request has been settled against its limits.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::Full;
use tollgate::server::Gateway;

use super::{WAIT, metrics, post, sum_where};

/// A chat request whose input the default `chars` rule estimates at [`INPUT_ESTIMATE`]
/// tokens (8 characters: 2, the role: 1, the message: 3, the reply priming: 3), and that the
/// demo provider reports as 1 prompt token (one word).
pub fn chat_body(model: &str, extra: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"abcdefgh"}}]{extra}}}"#)
}

/// The estimate of [`chat_body`]'s input tokens.
pub const INPUT_ESTIMATE: u64 = 9;

/// A chat POST presenting `key`.
pub fn keyed(key: &str, body: &str) -> Request<Full<Bytes>> {
    post(
        "/v1/chat/completions",
        body,
        &[("authorization", &format!("Bearer {key}"))],
    )
}

/// `x-ratelimit-limit-KIND` and `x-ratelimit-remaining-KIND` (`requests` or `tokens`).
pub fn standing(headers: &HeaderMap, kind: &str) -> (u64, u64) {
    let number = |name: String| -> u64 {
        headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {headers:?}"))
    };
    (
        number(format!("x-ratelimit-limit-{kind}")),
        number(format!("x-ratelimit-remaining-{kind}")),
    )
}

/// `x-ratelimit-reset-KIND`, read as OpenAI writes it (`20ms`, `1s`, `6m0s`, `1h0m0s`).
pub fn reset(headers: &HeaderMap, kind: &str) -> Duration {
    let name = format!("x-ratelimit-reset-{kind}");
    let text = headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap();
    if let Some(ms) = text.strip_suffix("ms") {
        return Duration::from_millis(ms.parse().unwrap());
    }
    let (mut seconds, mut number) = (0u64, 0u64);
    for c in text.chars() {
        match c {
            '0'..='9' => number = number * 10 + u64::from(c.to_digit(10).unwrap()),
            'h' | 'm' | 's' => {
                seconds += number
                    * match c {
                        'h' => 3600,
                        'm' => 60,
                        _ => 1,
                    };
                number = 0;
            }
            _ => panic!("{name}: `{text}` is not a duration"),
        }
    }
    Duration::from_secs(seconds)
}

/// `retry-after` in whole seconds.
pub fn retry_after(headers: &HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no retry-after in {headers:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn assert_no_ratelimit_headers(headers: &HeaderMap) {
    assert!(
        !headers
            .keys()
            .any(|name| name.as_str().starts_with("x-ratelimit-")),
        "{headers:?}"
    );
}

/// Waits (bounded) until the gateway has recorded `n` requests whose labels include `labels`
/// in `tollgate_requests_total`: a request is settled against its limits (tokens trued up,
/// its place in flight given back) before it is recorded.
pub async fn recorded(gateway: &Gateway, labels: &[(&str, &str)], n: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = sum_where(&metrics(gateway).await, "tollgate_requests_total", labels);
        if seen >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{seen} of {n} requests recorded under {labels:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
