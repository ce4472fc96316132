//! OpenAI's rate-limit response headers (`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`)
//! for the most constraining limit of each kind, and their duration format (`1s`, `6m0s`,
//! `20ms`).

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::gcra::Standing;

/// The tightest rule of one kind (requests or tokens) a request met: its limit and standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tightest {
    pub limit: u64,
    pub standing: Standing,
}

impl Tightest {
    /// Keeps whichever of `self` and `other` leaves less room.
    pub fn tighter(self, other: Tightest) -> Tightest {
        if other.standing.remaining < self.standing.remaining {
            other
        } else {
            self
        }
    }
}

/// What a response says about its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub requests: Option<Tightest>,
    pub tokens: Option<Tightest>,
}

const NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

impl Report {
    /// Writes the headers of the kinds a limit applied to.
    pub fn write(&self, headers: &mut HeaderMap) {
        for (tightest, names) in [self.requests, self.tokens].iter().zip(&NAMES) {
            let Some(t) = tightest else { continue };
            let mut buffer = itoa::Buffer::new();
            if let Ok(v) = HeaderValue::from_str(buffer.format(t.limit)) {
                headers.insert(names[0].clone(), v);
            }
            if let Ok(v) = HeaderValue::from_str(buffer.format(t.standing.remaining)) {
                headers.insert(names[1].clone(), v);
            }
            if let Ok(v) = HeaderValue::try_from(duration_text(t.standing.reset_ns)) {
                headers.insert(names[2].clone(), v);
            }
        }
    }
}

/// A duration as OpenAI writes its reset headers: `20ms` under a second, else hours,
/// minutes and seconds (`1s`, `6m0s`, `1h0m0s`), seconds rounded up.
pub fn duration_text(ns: u64) -> String {
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;
    if ns < S {
        return format!("{}ms", ns.div_ceil(MS));
    }
    let seconds = ns.div_ceil(S);
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}s");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openais() {
        assert_eq!(duration_text(0), "0ms");
        assert_eq!(duration_text(17_200_000), "18ms");
        assert_eq!(duration_text(1_000_000_000), "1s");
        assert_eq!(duration_text(360_000_000_000), "6m0s");
        assert_eq!(duration_text(3_600_000_000_001), "1h0m1s");
    }

    #[test]
    fn headers_name_the_tightest_rule_of_each_kind() {
        let loose = Tightest {
            limit: 100,
            standing: Standing {
                remaining: 90,
                reset_ns: 1,
            },
        };
        let tight = Tightest {
            limit: 10,
            standing: Standing {
                remaining: 2,
                reset_ns: 6_000_000_000,
            },
        };
        let report = Report {
            requests: Some(loose.tighter(tight)),
            tokens: None,
        };
        let mut headers = HeaderMap::new();
        report.write(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "10");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "2");
        assert_eq!(headers["x-ratelimit-reset-requests"], "6s");
        assert!(!headers.contains_key("x-ratelimit-limit-tokens"));
    }
}
