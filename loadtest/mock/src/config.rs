//! Server configuration, its string forms, and per-request header overrides.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;

use crate::fault::Fault;
use crate::vertex_config::VertexConfig;

/// Error returned when a duration, latency, line-ending or fault spec cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub(crate) String);

impl SpecError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// How the mock behaves for every request (headers can override parts of it per request).
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Delay between the response headers and the first streamed event.
    pub ttft: Duration,
    /// Delay between consecutive streamed content events.
    pub inter_token: Duration,
    /// Completion tokens generated per request (capped by `max_tokens`).
    pub tokens: usize,
    /// Extra delay before the response headers of every request.
    pub latency: Latency,
    /// Fault applied to every request unless `x-mock-fault` overrides it.
    pub fault: Option<Fault>,
    /// Line terminator used for every line of SSE output.
    pub line_ending: LineEnding,
    /// Emit a `: keep-alive` comment event before each SSE data event.
    pub keepalive_comments: bool,
    /// The Vertex AI (Gemini) surface, its auth and the token endpoints.
    pub vertex: VertexConfig,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            ttft: Duration::ZERO,
            inter_token: Duration::ZERO,
            tokens: 16,
            latency: Latency::Fixed(Duration::ZERO),
            fault: None,
            line_ending: LineEnding::Lf,
            keepalive_comments: false,
            vertex: VertexConfig::default(),
        }
    }
}

/// Extra delay before response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Always the same delay.
    Fixed(Duration),
    /// A delay drawn uniformly from `min..=max` for each request.
    Uniform { min: Duration, max: Duration },
}

impl Latency {
    /// Draws the delay for one request.
    pub fn sample(&self) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                // An inverted range would make fastrand panic; treat it as fixed `min`.
                if max <= min {
                    return min;
                }
                let lo = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
                let hi = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(fastrand::u64(lo..=hi))
            }
        }
    }
}

/// Accepts `fixed:5ms`, `uniform:1ms..10ms`, or a bare duration (`5ms`, fixed).
impl FromStr for Latency {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("uniform:") {
            let (lo, hi) = rest.split_once("..").ok_or_else(|| {
                SpecError::new(format!("latency `{s}`: expected uniform:MIN..MAX"))
            })?;
            let min = parse_duration(lo)?;
            let max = parse_duration(hi)?;
            if max < min {
                return Err(SpecError::new(format!("latency `{s}`: max is below min")));
            }
            return Ok(Latency::Uniform { min, max });
        }
        let fixed = s.strip_prefix("fixed:").unwrap_or(s);
        Ok(Latency::Fixed(parse_duration(fixed)?))
    }
}

/// Line terminator for SSE output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LineEnding {
    /// `\n`
    #[default]
    Lf,
    /// `\r\n`
    CrLf,
    /// `\r`
    Cr,
}

impl LineEnding {
    /// The terminator's bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n",
            LineEnding::CrLf => "\r\n",
            LineEnding::Cr => "\r",
        }
    }
}

/// Accepts `lf`, `crlf`, `cr` (any case).
impl FromStr for LineEnding {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lf" => Ok(LineEnding::Lf),
            "crlf" => Ok(LineEnding::CrLf),
            "cr" => Ok(LineEnding::Cr),
            other => Err(SpecError::new(format!(
                "line ending `{other}`: expected lf, crlf or cr"
            ))),
        }
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `500us`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, SpecError> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1e-3)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| SpecError::new(format!("duration `{s}`: expected e.g. 250ms or 2s")))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| SpecError::new(format!("duration `{s}` is out of range")))
}

/// The settings for one request after applying `x-mock-*` headers over the config.
#[derive(Clone, Debug)]
pub(crate) struct Effective {
    pub(crate) tokens: usize,
    pub(crate) ttft: Duration,
    pub(crate) inter_token: Duration,
    pub(crate) line_ending: LineEnding,
    pub(crate) keepalive: bool,
    pub(crate) fault: Option<Fault>,
}

impl Effective {
    /// Merges header overrides; a malformed header is an error so tests fail loudly.
    pub(crate) fn resolve(config: &MockConfig, headers: &HeaderMap) -> Result<Self, String> {
        let mut eff = Effective {
            tokens: config.tokens,
            ttft: config.ttft,
            inter_token: config.inter_token,
            line_ending: config.line_ending,
            keepalive: config.keepalive_comments,
            fault: config.fault.clone(),
        };
        if let Some(v) = header(headers, "x-mock-tokens")? {
            eff.tokens = v
                .parse()
                .map_err(|_| format!("x-mock-tokens: `{v}` is not a number"))?;
        }
        if let Some(v) = header(headers, "x-mock-ttft-ms")? {
            eff.ttft = millis(v, "x-mock-ttft-ms")?;
        }
        if let Some(v) = header(headers, "x-mock-inter-token-ms")? {
            eff.inter_token = millis(v, "x-mock-inter-token-ms")?;
        }
        if let Some(v) = header(headers, "x-mock-line-ending")? {
            eff.line_ending = v.parse().map_err(|e: SpecError| e.0)?;
        }
        if let Some(v) = header(headers, "x-mock-keepalive")? {
            eff.keepalive = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                other => return Err(format!("x-mock-keepalive: `{other}` is not 1 or 0")),
            };
        }
        if let Some(v) = header(headers, "x-mock-fault")? {
            let v = v.trim();
            // `none` lets one request opt out of a server-wide fault.
            eff.fault = if v.is_empty() || v.eq_ignore_ascii_case("none") {
                None
            } else {
                Some(v.parse().map_err(|e: SpecError| e.0)?)
            };
        }
        Ok(eff)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| format!("{name}: value is not visible ASCII")),
    }
}

fn millis(v: &str, name: &str) -> Result<Duration, String> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{name}: `{v}` is not a whole number of milliseconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_millis(7));
        assert!(parse_duration("-1ms").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn latencies() {
        assert_eq!(
            "fixed:5ms".parse::<Latency>().unwrap(),
            Latency::Fixed(Duration::from_millis(5))
        );
        let uniform = Latency::Uniform {
            min: Duration::from_millis(1),
            max: Duration::from_millis(10),
        };
        assert_eq!("uniform:1ms..10ms".parse::<Latency>().unwrap(), uniform);
        for _ in 0..100 {
            let d = uniform.sample();
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(10));
        }
        assert!("uniform:10ms..1ms".parse::<Latency>().is_err());
        assert!("uniform:5ms".parse::<Latency>().is_err());
    }

    #[test]
    fn line_endings() {
        assert_eq!("CRLF".parse::<LineEnding>().unwrap(), LineEnding::CrLf);
        assert_eq!("cr".parse::<LineEnding>().unwrap().as_str(), "\r");
        assert!("nl".parse::<LineEnding>().is_err());
    }

    #[test]
    fn header_overrides() {
        let config = MockConfig {
            fault: Some(Fault::Malformed),
            ..MockConfig::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-tokens", "3".parse().unwrap());
        headers.insert("x-mock-ttft-ms", "20".parse().unwrap());
        headers.insert("x-mock-line-ending", "crlf".parse().unwrap());
        headers.insert("x-mock-keepalive", "1".parse().unwrap());
        headers.insert("x-mock-fault", "none".parse().unwrap());
        let eff = Effective::resolve(&config, &headers).unwrap();
        assert_eq!(eff.tokens, 3);
        assert_eq!(eff.ttft, Duration::from_millis(20));
        assert_eq!(eff.line_ending, LineEnding::CrLf);
        assert!(eff.keepalive);
        assert!(eff.fault.is_none());

        headers.insert("x-mock-tokens", "many".parse().unwrap());
        assert!(Effective::resolve(&config, &headers).is_err());
    }
}
