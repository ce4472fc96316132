//! OpenAI's rate-limit response headers (`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`)
//! for the most constraining limit of each kind, and their duration format (`1s`, `6m0s`,
//! `20ms`).

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
        let kinds = [self.requests, self.tokens];
        // Room for all six at once: the map grows once, not header by header.
        headers.reserve(3 * kinds.iter().flatten().count());
        for (tightest, names) in kinds.iter().zip(&NAMES) {
            let Some(t) = tightest else { continue };
            let mut buffer = itoa::Buffer::new();
            if let Ok(v) = HeaderValue::from_str(buffer.format(t.limit)) {
                headers.insert(names[0].clone(), v);
            }
            if let Ok(v) = HeaderValue::from_str(buffer.format(t.standing.remaining)) {
                headers.insert(names[1].clone(), v);
            }
            let mut text = DurationText::default();
            text.write(t.standing.reset_ns);
            if let Ok(v) = HeaderValue::from_bytes(text.as_bytes()) {
                headers.insert(names[2].clone(), v);
            }
        }
    }
}

/// [`duration_text`] without the formatting machinery or an allocation: it is written on
/// every response a limit applies to.
#[derive(Default)]
struct DurationText {
    // The longest, `{u64}h59m59s`, is 27 bytes.
    bytes: [u8; 32],
    len: usize,
}

impl DurationText {
    fn push(&mut self, text: &[u8]) {
        let end = (self.len + text.len()).min(self.bytes.len());
        let n = end - self.len;
        self.bytes[self.len..end].copy_from_slice(&text[..n]);
        self.len = end;
    }

    fn number(&mut self, n: u64, unit: &[u8]) {
        let mut buffer = itoa::Buffer::new();
        self.push(buffer.format(n).as_bytes());
        self.push(unit);
    }

    fn write(&mut self, ns: u64) {
        const MS: u64 = 1_000_000;
        const S: u64 = 1_000 * MS;
        if ns < S {
            return self.number(ns.div_ceil(MS), b"ms");
        }
        let seconds = ns.div_ceil(S);
        let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
        if h > 0 {
            self.number(h, b"h");
        }
        if h > 0 || m > 0 {
            self.number(m, b"m");
        }
        self.number(s, b"s");
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A duration as OpenAI writes its reset headers: `20ms` under a second, else hours,
/// minutes and seconds (`1s`, `6m0s`, `1h0m0s`), seconds rounded up.
pub fn duration_text(ns: u64) -> String {
    let mut text = DurationText::default();
    text.write(ns);
    String::from_utf8_lossy(text.as_bytes()).into_owned()
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
        assert_eq!(duration_text(u64::MAX), "5124095h34m34s");
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
