//! The access-log sink: access events formatted straight into sharded buffers, written in batches.
//!
//! Access lines are the one log written for every request, so they skip the general-purpose
//! formatter: a `tracing` layer renders each `tollgate::access` event directly into a buffer
//! shard (one per worker thread, so the lock is uncontended), and one flusher thread writes
//! all shards to stdout. It flushes every [`FLUSH_BUSY`] while traffic is heavy and every
//! [`FLUSH_QUIET`] while it is light: at a few hundred requests a second, waking 50 times a
//! second cost more CPU per request than rendering the lines. A request never waits on stdout;
//! the one that fills its shard past a quarter wakes the flusher early. Shards are bounded:
//! when stdout cannot keep up, lines are dropped and counted.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::access_log::TARGET;
use super::logging::LogFormat;

/// Flush interval after a flush that wrote at least [`BUSY_BYTES`].
pub const FLUSH_BUSY: Duration = Duration::from_millis(20);
/// Flush interval otherwise.
pub const FLUSH_QUIET: Duration = Duration::from_millis(200);
const BUSY_BYTES: usize = 64 * 1024;
const SHARDS: usize = 16;
/// Bytes a shard may hold between flushes (16 shards: 16 MiB in all).
const SHARD_CAPACITY: usize = 1024 * 1024;

/// Lines dropped because the buffers were full; exposed as a metric.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = Cell::new(NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS);
}

/// Access lines dropped since start.
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// The buffers between request threads and the flusher.
pub struct AccessSink {
    shards: Box<[Mutex<Vec<u8>>]>,
    format: LogFormat,
    signal: Arc<Signal>,
}

/// Tells the flusher to flush now (a shard is filling) or to stop.
#[derive(Default)]
struct Signal {
    state: Mutex<Wanted>,
    changed: Condvar,
}

#[derive(Default)]
struct Wanted {
    flush: bool,
    stop: bool,
}

impl Signal {
    fn set(&self, what: impl FnOnce(&mut Wanted)) {
        what(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }
}

impl AccessSink {
    pub fn new(format: LogFormat) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Vec::with_capacity(64 * 1024)))
                .collect(),
            format,
            signal: Arc::default(),
        }
    }

    /// Renders `event` at the end of this thread's shard, or drops it if the shard is full.
    fn push(&self, event: &Event<'_>) {
        let shard = &self.shards[SHARD.with(Cell::get)];
        let mut buf = shard.lock().unwrap_or_else(|e| e.into_inner());
        let start = buf.len();
        render(&mut buf, self.format, event);
        if buf.len() > SHARD_CAPACITY {
            buf.truncate(start);
            DROPPED.fetch_add(1, Relaxed);
        } else if start < SHARD_CAPACITY / 4 && buf.len() >= SHARD_CAPACITY / 4 {
            drop(buf);
            self.signal.set(|w| w.flush = true);
        }
    }

    /// Writes out everything buffered; returns the bytes written. `spare` is swapped in so no
    /// shard is held during I/O.
    fn flush(&self, out: &mut impl Write, spare: &mut Vec<u8>) -> usize {
        let mut written = 0;
        for shard in self.shards.iter() {
            {
                let mut buf = shard.lock().unwrap_or_else(|e| e.into_inner());
                if buf.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *buf, spare);
            }
            // A closed or failing stdout must not take the gateway down; the lines are lost.
            let _ = out.write_all(spare);
            written += spare.len();
            spare.clear();
        }
        let _ = out.flush();
        written
    }
}

/// The `tracing` layer that feeds the sink.
pub struct AccessLayer {
    sink: Arc<AccessSink>,
}

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == TARGET {
            self.sink.push(event);
        }
    }
}

/// Owns the flusher thread; dropping it stops the thread after a final flush.
pub struct FlushGuard {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.signal.set(|w| w.stop = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Builds the layer and starts its flusher, writing to stdout.
pub fn start(format: LogFormat) -> (AccessLayer, FlushGuard) {
    let sink = Arc::new(AccessSink::new(format));
    let signal = sink.signal.clone();
    let thread = {
        let sink = sink.clone();
        std::thread::Builder::new()
            .name("tollgate-access-log".into())
            .spawn(move || {
                let mut out = std::io::stdout();
                let mut spare = Vec::with_capacity(64 * 1024);
                let mut interval = FLUSH_QUIET;
                loop {
                    let stopped = {
                        let state = sink.signal.state.lock().unwrap_or_else(|e| e.into_inner());
                        let (mut state, _) = sink
                            .signal
                            .changed
                            .wait_timeout_while(state, interval, |w| !w.stop && !w.flush)
                            .unwrap_or_else(|e| e.into_inner());
                        state.flush = false;
                        state.stop
                    };
                    let written = sink.flush(&mut out, &mut spare);
                    interval = if written >= BUSY_BYTES {
                        FLUSH_BUSY
                    } else {
                        FLUSH_QUIET
                    };
                    if stopped {
                        return;
                    }
                }
            })
            .ok()
    };
    (AccessLayer { sink }, FlushGuard { signal, thread })
}

/// Renders one event as a line in `format`.
fn render(buf: &mut Vec<u8>, format: LogFormat, event: &Event<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match format {
        LogFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(buf, now);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"");
            buf.extend_from_slice(TARGET.as_bytes());
            buf.push(b'"');
            event.record(&mut JsonFields { buf });
            buf.extend_from_slice(b"}\n");
        }
        LogFormat::Pretty => {
            timestamp(buf, now);
            buf.extend_from_slice(b"  INFO ");
            buf.extend_from_slice(TARGET.as_bytes());
            buf.push(b':');
            event.record(&mut PrettyFields { buf });
            buf.push(b'\n');
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-28T01:33:40.123Z`.
fn timestamp(buf: &mut Vec<u8>, since_epoch: Duration) {
    let secs = since_epoch.as_secs();
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let digits = |buf: &mut Vec<u8>, value: u64, width: usize| {
        let mut text = itoa::Buffer::new();
        let text = text.format(value);
        buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(text.len())));
        buf.extend_from_slice(text.as_bytes());
    };
    digits(buf, u64::try_from(year).unwrap_or(0), 4);
    buf.push(b'-');
    digits(buf, month as u64, 2);
    buf.push(b'-');
    digits(buf, day as u64, 2);
    buf.push(b'T');
    digits(buf, day_secs / 3600, 2);
    buf.push(b':');
    digits(buf, day_secs / 60 % 60, 2);
    buf.push(b':');
    digits(buf, day_secs % 60, 2);
    buf.push(b'.');
    digits(buf, u64::from(since_epoch.subsec_millis()), 3);
    buf.push(b'Z');
}

/// Appends `text` as the inside of a JSON string, copying runs that need no escape at once.
fn json_escape(buf: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[run..i]);
        if escape.is_empty() {
            let _ = write!(buf, "\\u{byte:04x}");
        } else {
            buf.extend_from_slice(escape);
        }
        run = i + 1;
    }
    buf.extend_from_slice(&bytes[run..]);
}

/// Appends `value` with three decimals, as fixed point: float formatting is slow and access
/// lines carry several of these (milliseconds to the microsecond).
fn three_decimals(buf: &mut Vec<u8>, value: f64) {
    let thousandths = (value * 1000.0).round();
    if !thousandths.is_finite() || thousandths.abs() >= 1e15 {
        let _ = write!(buf, "{value:.3}");
        return;
    }
    let thousandths = thousandths as i64;
    if thousandths < 0 {
        buf.push(b'-');
    }
    let abs = thousandths.unsigned_abs();
    buf.extend_from_slice(itoa::Buffer::new().format(abs / 1000).as_bytes());
    let fraction = abs % 1000;
    buf.push(b'.');
    buf.push(b'0' + (fraction / 100) as u8);
    buf.push(b'0' + (fraction / 10 % 10) as u8);
    buf.push(b'0' + (fraction % 10) as u8);
}

/// A `fmt::Write` that JSON-escapes what it is given, for `%display` fields.
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        json_escape(self.0, text);
        Ok(())
    }
}

struct JsonFields<'a> {
    buf: &'a mut Vec<u8>,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(field.name().as_bytes());
        self.buf.extend_from_slice(b"\":");
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.buf.push(b'"');
        json_escape(self.buf, value);
        self.buf.push(b'"');
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            three_decimals(self.buf, value);
        } else {
            self.buf.extend_from_slice(b"null");
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.buf.push(b'"');
        let _ = fmt::write(&mut Escaping(self.buf), format_args!("{value:?}"));
        self.buf.push(b'"');
    }
}

struct PrettyFields<'a> {
    buf: &'a mut Vec<u8>,
}

impl Visit for PrettyFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.buf, " {value}");
        } else if value.is_empty() || value.bytes().any(|b| b == b' ' || b == b'"' || b < 0x20) {
            let _ = write!(self.buf, " {}={value:?}", field.name());
        } else {
            let _ = write!(self.buf, " {}={value}", field.name());
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let _ = write!(self.buf, " {}=", field.name());
        three_decimals(self.buf, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.buf, " {}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut buf = Vec::new();
        timestamp(&mut buf, Duration::from_millis(1_795_830_401_123));
        assert_eq!(String::from_utf8(buf).unwrap(), "2026-11-28T01:46:41.123Z");
        let mut buf = Vec::new();
        timestamp(&mut buf, Duration::from_secs(951_782_400)); // a leap day
        assert_eq!(String::from_utf8(buf).unwrap(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn three_decimals_rounds_like_float_formatting() {
        for value in [
            0.0, 0.0004, 0.0005, 1.23456, 12.5, 999.9996, -0.25, 123456.789,
        ] {
            let mut buf = Vec::new();
            three_decimals(&mut buf, value);
            let ours: f64 = String::from_utf8(buf).unwrap().parse().unwrap();
            assert!((ours - value).abs() <= 0.0005 + 1e-12, "{value} -> {ours}");
        }
        let mut buf = Vec::new();
        three_decimals(&mut buf, 1.5);
        assert_eq!(buf, b"1.500");
    }

    #[test]
    fn json_escaping_covers_quotes_and_controls() {
        let mut buf = Vec::new();
        json_escape(&mut buf, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(buf).unwrap(), "a\\\"b\\\\c\\nd\\u0001é");
    }

    #[test]
    fn events_render_as_json_lines_and_flush_in_order() {
        let sink = Arc::new(AccessSink::new(LogFormat::Json));
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::registry(),
            AccessLayer { sink: sink.clone() },
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: TARGET, status = 200u16, route = "m\"x", ok = true, ms = 1.23456, id = %7, "request");
            tracing::info!(target: "other", "not an access line");
            tracing::info!(target: TARGET, status = 404u16, "request");
        });
        let mut out = Vec::new();
        sink.flush(&mut out, &mut Vec::new());
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["target"], TARGET);
        assert_eq!(lines[0]["message"], "request");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["route"], "m\"x");
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["ms"], 1.235);
        assert_eq!(lines[0]["id"], "7");
        assert_eq!(lines[1]["status"], 404);
    }

    #[test]
    fn full_shards_drop_and_count_instead_of_growing() {
        let sink = Arc::new(AccessSink::new(LogFormat::Json));
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::registry(),
            AccessLayer { sink: sink.clone() },
        );
        let before = dropped();
        let pad = "x".repeat(4096);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..(SHARD_CAPACITY / 4096 + 50) {
                tracing::info!(target: TARGET, pad = pad.as_str(), "request");
            }
        });
        assert!(dropped() > before, "lines over the bound are dropped");
        let held: usize = sink.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARD_CAPACITY);
    }

    #[test]
    fn a_shard_filling_up_asks_for_an_early_flush() {
        let sink = Arc::new(AccessSink::new(LogFormat::Json));
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::registry(),
            AccessLayer { sink: sink.clone() },
        );
        let pad = "x".repeat(4096);
        let wanted = || sink.signal.state.lock().unwrap().flush;
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: TARGET, pad = pad.as_str(), "request");
            assert!(!wanted(), "a few lines wait for the next interval");
            for _ in 0..(SHARD_CAPACITY / 4 / 4096) {
                tracing::info!(target: TARGET, pad = pad.as_str(), "request");
            }
        });
        assert!(wanted(), "a quarter-full shard wakes the flusher");
        let mut out = Vec::new();
        let written = sink.flush(&mut out, &mut Vec::new());
        assert_eq!(written, out.len());
        assert!(written >= SHARD_CAPACITY / 4);
    }
}
