//! Injectable faults and their string spec (shared by `x-mock-fault` and `--fault`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::SpecError;

/// A failure the mock injects into a response.
///
/// "Events" are SSE data events (content chunks, the usage chunk, `[DONE]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `status=CODE[;retry-after=SECS][;body=TEXT]`: answer CODE with an OpenAI error
    /// body (or TEXT verbatim), plus `retry-after` when given.
    Status {
        code: u16,
        retry_after: Option<u64>,
        body: Option<String>,
    },
    /// `reset-after=N`: stream N events then abort the connection; non-stream sends
    /// headers and half the body, then aborts.
    ResetAfter(usize),
    /// `stall-after=N`: stream N events (non-stream: headers only) then go silent forever.
    StallAfter(usize),
    /// `malformed`: non-stream 200 with invalid JSON; stream's first event is invalid JSON.
    Malformed,
    /// `truncate-after=N`: stream N content events then end cleanly without usage or
    /// `[DONE]`; non-stream sends a cleanly ended but cut JSON body.
    TruncateAfter(usize),
    /// `error-after=N`: stream N content events then an OpenAI error event and the end;
    /// non-stream answers 500 with the same error.
    ErrorAfter(usize),
    /// `slow-headers=MS`: wait MS milliseconds before the headers, then respond normally.
    SlowHeaders(Duration),
    /// `reset-before-headers`: close the connection (HTTP/2: reset the stream) without a response.
    ResetBeforeHeaders,
    /// `wrong-content-type`: 200 with `content-type: text/plain` and a plain body.
    WrongContentType,
}

impl FromStr for Fault {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (spec, None),
        };
        let count = |v: Option<&str>| -> Result<usize, SpecError> {
            let v = v.ok_or_else(|| SpecError::new(format!("fault `{spec}`: missing =N")))?;
            v.trim()
                .parse()
                .map_err(|_| SpecError::new(format!("fault `{spec}`: `{v}` is not a count")))
        };
        let bare = |fault: Fault| match value {
            None => Ok(fault),
            Some(_) => Err(SpecError::new(format!("fault `{name}` takes no value"))),
        };
        match name {
            "status" => parse_status(spec, value.unwrap_or_default()),
            "reset-after" => Ok(Fault::ResetAfter(count(value)?)),
            "stall-after" => Ok(Fault::StallAfter(count(value)?)),
            "truncate-after" => Ok(Fault::TruncateAfter(count(value)?)),
            "error-after" => Ok(Fault::ErrorAfter(count(value)?)),
            "slow-headers" => {
                let ms = count(value)?;
                Ok(Fault::SlowHeaders(Duration::from_millis(ms as u64)))
            }
            "malformed" => bare(Fault::Malformed),
            "reset-before-headers" => bare(Fault::ResetBeforeHeaders),
            "wrong-content-type" => bare(Fault::WrongContentType),
            _ => Err(SpecError::new(format!(
                "unknown fault `{spec}`: expected status=CODE[;retry-after=SECS][;body=TEXT], \
                 reset-after=N, stall-after=N, malformed, truncate-after=N, error-after=N, \
                 slow-headers=MS, reset-before-headers or wrong-content-type"
            ))),
        }
    }
}

/// Parses what follows `status=`. `body=` must come last and keeps everything after it,
/// so a body may itself contain `;`.
fn parse_status(spec: &str, rest: &str) -> Result<Fault, SpecError> {
    let (params, body) = match rest.find(";body=") {
        Some(at) => (&rest[..at], Some(rest[at + ";body=".len()..].to_owned())),
        None => (rest, None),
    };
    let mut parts = params.split(';');
    let code_text = parts.next().unwrap_or_default().trim();
    let code: u16 = code_text
        .parse()
        .ok()
        .filter(|c| (100..=999).contains(c))
        .ok_or_else(|| SpecError::new(format!("fault `{spec}`: bad status code `{code_text}`")))?;
    let mut retry_after = None;
    for part in parts {
        match part.trim().split_once('=') {
            Some(("retry-after", secs)) => {
                retry_after = Some(secs.trim().parse().map_err(|_| {
                    SpecError::new(format!("fault `{spec}`: bad retry-after `{secs}`"))
                })?);
            }
            _ => {
                return Err(SpecError::new(format!(
                    "fault `{spec}`: unknown status option `{part}`"
                )));
            }
        }
    }
    Ok(Fault::Status {
        code,
        retry_after,
        body,
    })
}

/// Renders the spec form, so `to_string().parse()` round-trips.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status {
                code,
                retry_after,
                body,
            } => {
                write!(f, "status={code}")?;
                if let Some(secs) = retry_after {
                    write!(f, ";retry-after={secs}")?;
                }
                if let Some(body) = body {
                    write!(f, ";body={body}")?;
                }
                Ok(())
            }
            Fault::ResetAfter(n) => write!(f, "reset-after={n}"),
            Fault::StallAfter(n) => write!(f, "stall-after={n}"),
            Fault::Malformed => f.write_str("malformed"),
            Fault::TruncateAfter(n) => write!(f, "truncate-after={n}"),
            Fault::ErrorAfter(n) => write!(f, "error-after={n}"),
            Fault::SlowHeaders(d) => write!(f, "slow-headers={}", d.as_millis()),
            Fault::ResetBeforeHeaders => f.write_str("reset-before-headers"),
            Fault::WrongContentType => f.write_str("wrong-content-type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_variants() {
        assert_eq!(
            "status=503".parse::<Fault>().unwrap(),
            Fault::Status {
                code: 503,
                retry_after: None,
                body: None
            }
        );
        assert_eq!(
            "status=429;retry-after=7".parse::<Fault>().unwrap(),
            Fault::Status {
                code: 429,
                retry_after: Some(7),
                body: None
            }
        );
        assert_eq!(
            "status=500;retry-after=1;body=oops; really"
                .parse::<Fault>()
                .unwrap(),
            Fault::Status {
                code: 500,
                retry_after: Some(1),
                body: Some("oops; really".into())
            }
        );
        assert_eq!(
            "status=502;body=".parse::<Fault>().unwrap(),
            Fault::Status {
                code: 502,
                retry_after: None,
                body: Some(String::new())
            }
        );
    }

    #[test]
    fn parses_counted_and_bare_faults() {
        assert_eq!(
            "reset-after=2".parse::<Fault>().unwrap(),
            Fault::ResetAfter(2)
        );
        assert_eq!(
            "stall-after=0".parse::<Fault>().unwrap(),
            Fault::StallAfter(0)
        );
        assert_eq!(
            " truncate-after=3 ".parse::<Fault>().unwrap(),
            Fault::TruncateAfter(3)
        );
        assert_eq!(
            "error-after=1".parse::<Fault>().unwrap(),
            Fault::ErrorAfter(1)
        );
        assert_eq!(
            "slow-headers=250".parse::<Fault>().unwrap(),
            Fault::SlowHeaders(Duration::from_millis(250))
        );
        assert_eq!("malformed".parse::<Fault>().unwrap(), Fault::Malformed);
        assert_eq!(
            "reset-before-headers".parse::<Fault>().unwrap(),
            Fault::ResetBeforeHeaders
        );
        assert_eq!(
            "wrong-content-type".parse::<Fault>().unwrap(),
            Fault::WrongContentType
        );
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "explode",
            "status=",
            "status=99",
            "status=abc",
            "status=429;retry-after=soon",
            "status=429;colour=red",
            "reset-after",
            "reset-after=-1",
            "malformed=1",
            "slow-headers=1s",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "status=429;retry-after=3;body={\"x\":1}",
            "reset-after=2",
            "stall-after=1",
            "malformed",
            "truncate-after=4",
            "error-after=0",
            "slow-headers=100",
            "reset-before-headers",
            "wrong-content-type",
        ] {
            let fault: Fault = spec.parse().unwrap();
            assert_eq!(fault.to_string(), spec);
        }
    }
}
