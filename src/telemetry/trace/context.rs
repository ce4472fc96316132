//! W3C trace context: reading `traceparent`/`tracestate` from a request and writing them
//! upstream with the gateway's own span as the parent.
//!
//! Rules followed (W3C Trace Context, level 1): a `traceparent` that does not parse is
//! ignored and a new trace starts, and then `tracestate` is ignored too; version `ff`, all-zero
//! ids and uppercase hex are invalid; a higher version is read by its first four fields.
//! `tracestate` is forwarded unchanged (the gateway adds no entry of its own), and only
//! when it is valid: at most 32 members, well-formed keys and values, no key twice; several
//! `tracestate` header lines are joined with commas first.

use http::HeaderMap;

/// A request's place in a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The caller's span, when the request continued a trace.
    pub remote_parent: Option<u64>,
    /// The gateway's SERVER span for this request.
    pub server_span: u64,
    /// Whether the spans of this request are recorded (and the sampled flag sent upstream).
    pub sampled: bool,
    /// `trace-flags` as received (the sampled bit alone for a new trace).
    pub flags: u8,
    /// The caller's `tracestate`, validated, to forward as is.
    pub tracestate: Option<Box<str>>,
}

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

/// The sampled bit of `trace-flags`.
const SAMPLED: u8 = 0x01;

/// The flags defined so far: sampled, and (level 2) random trace id.
const KNOWN_FLAGS: u8 = 0x03;

/// Most list members a valid `tracestate` has.
const MAX_TRACESTATE_MEMBERS: usize = 32;

impl TraceContext {
    /// The context of an inbound request. A valid `traceparent` continues its trace and its
    /// sampling decision (parent-based); otherwise a new trace is sampled at `ratio`.
    pub fn from_headers(headers: &HeaderMap, ratio: f64) -> TraceContext {
        // Two `traceparent` headers cannot both be the parent: neither is believed.
        let mut lines = headers
            .get_all(http::header::HeaderName::from_static("traceparent"))
            .iter();
        let parent = match (lines.next(), lines.next()) {
            (Some(line), None) => parse_traceparent(line.as_bytes()),
            _ => None,
        };
        match parent {
            Some(parent) => TraceContext {
                trace_id: parent.trace_id,
                remote_parent: Some(parent.parent_id),
                server_span: new_span_id(),
                sampled: parent.flags & SAMPLED != 0,
                // Flags this hop does not know are not passed on.
                flags: parent.flags & KNOWN_FLAGS,
                tracestate: joined_tracestate(headers),
            },
            None => {
                let trace_id = new_trace_id();
                let sampled = sample(trace_id, ratio);
                TraceContext {
                    trace_id,
                    remote_parent: None,
                    server_span: new_span_id(),
                    sampled,
                    flags: u8::from(sampled),
                    tracestate: None,
                }
            }
        }
    }

    /// The context of an inbound request while tracing is off: the caller's trace, to pass
    /// upstream, and nothing made up (no ids drawn when there is none).
    pub fn passthrough(headers: &HeaderMap) -> TraceContext {
        if !headers.contains_key(http::header::HeaderName::from_static("traceparent")) {
            return TraceContext {
                trace_id: 0,
                remote_parent: None,
                server_span: 0,
                sampled: false,
                flags: 0,
                tracestate: None,
            };
        }
        Self::from_headers(headers, 0.0)
    }

    /// The `traceparent` value for an upstream request whose parent is span `parent`.
    pub fn traceparent(&self, parent: u64) -> [u8; 55] {
        format_traceparent(self.trace_id, parent, self.flags)
    }
}

/// A random non-zero span id.
pub fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

fn new_trace_id() -> u128 {
    (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(1..))
}

/// The ratio sampler's decision, taken from the trace id so every hop that samples by ratio
/// agrees: the low 64 bits (random in W3C level 2 ids) below `ratio` of their range.
fn sample(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let threshold = (ratio * u64::MAX as f64) as u64;
    (trace_id as u64) < threshold
}

/// Parses a `traceparent` header value; `None` when it is not valid.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    let value = value.trim_ascii();
    if value.len() < 55 {
        return None;
    }
    let version = hex_u8(&value[0..2])?;
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may add fields after a dash.
    if (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let trace_id = hex_u128(&value[3..35])?;
    let parent_id = hex_u64(&value[36..52])?;
    let flags = hex_u8(&value[53..55])?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `00-{trace}-{parent}-{flags}`.
pub fn format_traceparent(trace_id: u128, parent_id: u64, flags: u8) -> [u8; 55] {
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    out[3..35].copy_from_slice(&trace_id_hex(trace_id));
    for i in 0..16 {
        out[36 + i] = DIGITS[((parent_id >> (60 - 4 * i)) & 0xf) as usize];
    }
    out[53] = DIGITS[usize::from(flags >> 4)];
    out[54] = DIGITS[usize::from(flags & 0xf)];
    out
}

/// A trace id as 32 lowercase hex digits, without the formatting machinery.
pub fn trace_id_hex(trace_id: u128) -> [u8; 32] {
    std::array::from_fn(|i| DIGITS[((trace_id >> (124 - 4 * i)) & 0xf) as usize])
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_u128(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, c| {
        Some((acc << 4) | u128::from(hex_digit(*c)?))
    })
}

fn hex_u64(digits: &[u8]) -> Option<u64> {
    digits
        .iter()
        .try_fold(0u64, |acc, c| Some((acc << 4) | u64::from(hex_digit(*c)?)))
}

fn hex_u8(digits: &[u8]) -> Option<u8> {
    digits
        .iter()
        .try_fold(0u8, |acc, c| Some((acc << 4) | hex_digit(*c)?))
}

/// Every `tracestate` line joined with commas, if the result is valid.
fn joined_tracestate(headers: &HeaderMap) -> Option<Box<str>> {
    let mut lines = headers
        .get_all(http::header::HeaderName::from_static("tracestate"))
        .iter();
    let first = lines.next()?.to_str().ok()?;
    let mut joined = first.trim().to_owned();
    for line in lines {
        joined.push(',');
        joined.push_str(line.to_str().ok()?.trim());
    }
    let joined = joined.trim_matches(|c| c == ',' || c == ' ' || c == '\t');
    (!joined.is_empty() && valid_tracestate(joined)).then(|| joined.into())
}

/// True when `value` is a valid `tracestate` list.
pub fn valid_tracestate(value: &str) -> bool {
    let members = || {
        value
            .split(',')
            .map(|m| m.trim_matches(|c| c == ' ' || c == '\t'))
            .filter(|m| !m.is_empty())
    };
    let mut count = 0;
    for (i, member) in members().enumerate() {
        let Some((key, val)) = member.split_once('=') else {
            return false;
        };
        count += 1;
        if count > MAX_TRACESTATE_MEMBERS || !valid_key(key) || !valid_value(val) {
            return false;
        }
        // No key twice: compared with the members before it (at most 31), no allocation.
        let twice = members()
            .take(i)
            .any(|earlier| earlier.split_once('=').is_some_and(|(k, _)| k == key));
        if twice {
            return false;
        }
    }
    true
}

/// `simple-key` or `tenant-id@system-id`.
fn valid_key(key: &str) -> bool {
    let key_char = |c: u8| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            (1..=256).contains(&b.len())
                && b[0].is_ascii_lowercase()
                && b.iter().all(|c| key_char(*c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|c| key_char(*c))
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && s.iter().all(|c| key_char(*c))
        }
    }
}

/// Up to 256 printable characters except `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && b.last() != Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_a_valid_traceparent() {
        let parent = parse_traceparent(VALID.as_bytes()).unwrap();
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(parent.flags, 1);
        assert_eq!(
            &format_traceparent(parent.trace_id, parent.parent_id, parent.flags),
            VALID.as_bytes()
        );
    }

    #[test]
    fn refuses_invalid_traceparents() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more fields; its first four are read.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
                .is_some()
        );
    }

    #[test]
    fn a_valid_parent_is_continued_with_its_sampling_and_state() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", VALID.parse().unwrap());
        headers.append("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        headers.append("tracestate", "rojo=00f067aa0ba902b7".parse().unwrap());
        let ctx = TraceContext::from_headers(&headers, 0.0);
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.remote_parent, Some(0x00f067aa0ba902b7));
        assert!(ctx.sampled, "parent-based: the caller sampled it");
        assert_eq!(
            ctx.tracestate.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        let upstream = ctx.traceparent(0xabc);
        assert_eq!(
            std::str::from_utf8(&upstream).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01"
        );
    }

    #[test]
    fn with_tracing_off_only_a_callers_trace_is_kept() {
        let ctx = TraceContext::passthrough(&HeaderMap::new());
        assert_eq!(
            (ctx.trace_id, ctx.remote_parent, ctx.sampled),
            (0, None, false)
        );
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", VALID.parse().unwrap());
        let ctx = TraceContext::passthrough(&headers);
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.remote_parent, Some(0x00f067aa0ba902b7));
    }

    #[test]
    fn unknown_flags_are_cleared_and_two_parents_are_none() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff"
                .parse()
                .unwrap(),
        );
        let ctx = TraceContext::from_headers(&headers, 0.0);
        assert_eq!(ctx.flags, 0x03);
        assert!(
            std::str::from_utf8(&ctx.traceparent(1))
                .unwrap()
                .ends_with("-03")
        );
        headers.append("traceparent", VALID.parse().unwrap());
        let ctx = TraceContext::from_headers(&headers, 0.0);
        assert_eq!(
            ctx.remote_parent, None,
            "two traceparent headers: a new trace"
        );
    }

    #[test]
    fn an_invalid_parent_starts_a_new_trace_and_drops_the_state() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "garbage".parse().unwrap());
        headers.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        let ctx = TraceContext::from_headers(&headers, 1.0);
        assert_ne!(ctx.trace_id, 0);
        assert_eq!(ctx.remote_parent, None);
        assert_eq!(ctx.tracestate, None);
        assert!(ctx.sampled);
        assert!(!TraceContext::from_headers(&headers, 0.0).sampled);
    }

    #[test]
    fn tracestate_rules() {
        assert!(valid_tracestate("a=1,b=2"));
        assert!(valid_tracestate("tenant@vendor=x, other=y z"));
        assert!(valid_tracestate("a=1,,b=2"), "empty members are allowed");
        assert!(!valid_tracestate("a=1,a=2"), "a key twice");
        assert!(!valid_tracestate("A=1"), "uppercase key");
        assert!(!valid_tracestate("a"), "no value");
        assert!(!valid_tracestate("a=x=y"), "= in value");
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(!valid_tracestate(&many.join(",")), "33 members");
        assert!(valid_tracestate(&many[..32].join(",")));
    }

    #[test]
    fn ratio_sampling_follows_the_trace_id() {
        assert!(sample(0x1, 0.01));
        assert!(!sample(u128::from(u64::MAX), 0.99));
        let sampled = (0..10_000).filter(|_| sample(new_trace_id(), 0.25)).count();
        assert!((2_000..3_000).contains(&sampled), "{sampled}");
    }
}
