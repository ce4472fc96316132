//! Server-sent-event framing: finds where events end in a byte stream, across chunk borders.
//!
//! The splitter never copies or holds bytes itself; it only reports offsets, so the tee can
//! forward upstream chunks as zero-copy slices. Line endings may be LF, CRLF or CR (the SSE
//! spec allows all three), and a CRLF may be split across two chunks.

/// Incremental event-boundary finder.
#[derive(Debug, Default, Clone)]
pub struct SseSplitter {
    /// The previous byte was a CR: an LF right after it belongs to the same line ending.
    after_cr: bool,
    /// No byte of the current line has been seen yet.
    line_empty: bool,
    /// The current event has at least one non-empty line.
    event_has_lines: bool,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self {
            after_cr: false,
            line_empty: true,
            event_has_lines: false,
        }
    }

    /// Scans `chunk`, calling `on_event_end(offset)` with the offset just past each blank line
    /// that ends an event. Blank lines that end no event (stray ones, between events) are not
    /// reported: they carry nothing and are forwarded as part of the next event's bytes.
    #[inline]
    pub fn feed(&mut self, chunk: &[u8], mut on_event_end: impl FnMut(usize)) {
        let mut i = 0;
        if self.after_cr && chunk.first() == Some(&b'\n') {
            // Second half of a CRLF split across chunks: the line already ended at the CR.
            i = 1;
        }
        self.after_cr = false;
        while i < chunk.len() {
            // Jump to the next line terminator; content bytes only mark the line non-empty.
            let Some(rel) = memchr::memchr2(b'\n', b'\r', &chunk[i..]) else {
                self.line_empty = false;
                return;
            };
            if rel > 0 {
                self.line_empty = false;
            }
            let at = i + rel;
            let mut end = at + 1;
            if chunk[at] == b'\r' {
                if end < chunk.len() {
                    if chunk[end] == b'\n' {
                        end += 1;
                    }
                } else {
                    self.after_cr = true;
                }
            }
            if self.line_empty {
                if self.event_has_lines {
                    on_event_end(end);
                    self.event_has_lines = false;
                }
            } else {
                self.event_has_lines = true;
            }
            self.line_empty = true;
            i = end;
        }
    }

    /// True when bytes of an unfinished event have been fed.
    pub fn in_event(&self) -> bool {
        self.event_has_lines || !self.line_empty
    }
}

/// What one complete event says, as far as the gateway cares.
#[derive(Debug, PartialEq, Eq)]
pub enum EventData<'a> {
    /// Only comments or fields other than `data` (keep-alives).
    None,
    /// The `[DONE]` terminator of OpenAI-style streams.
    Done,
    /// A single `data:` line, borrowed.
    One(&'a [u8]),
    /// Several `data:` lines, joined with LF as the spec says.
    Joined(Vec<u8>),
}

/// Extracts the `data` field of one complete event.
pub fn event_data(event: &[u8]) -> EventData<'_> {
    let mut first: Option<&[u8]> = None;
    let mut joined: Option<Vec<u8>> = None;
    for line in event.split(|&c| c == b'\n' || c == b'\r') {
        let Some(rest) = line.strip_prefix(b"data") else {
            continue;
        };
        let value = match rest {
            [] => rest,
            [b':', b' ', value @ ..] | [b':', value @ ..] => value,
            _ => continue, // a field such as `database:`, not `data`
        };
        match (&mut first, &mut joined) {
            (None, _) => first = Some(value),
            (Some(prev), None) => {
                let mut buf = Vec::with_capacity(prev.len() + value.len() + 1);
                buf.extend_from_slice(prev);
                buf.push(b'\n');
                buf.extend_from_slice(value);
                joined = Some(buf);
            }
            (Some(_), Some(buf)) => {
                buf.push(b'\n');
                buf.extend_from_slice(value);
            }
        }
    }
    match (first, joined) {
        (_, Some(buf)) => EventData::Joined(buf),
        (Some(b"[DONE]"), None) => EventData::Done,
        (Some(value), None) => EventData::One(value),
        (None, None) => EventData::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        split_with_rest(chunks).0
    }

    /// The events, and the bytes after the last one.
    fn split_with_rest(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut splitter = SseSplitter::new();
        let mut events = Vec::new();
        let mut pending = Vec::new();
        for chunk in chunks {
            let mut start = 0;
            splitter.feed(chunk, |end| {
                pending.extend_from_slice(&chunk[start..end]);
                events.push(std::mem::take(&mut pending));
                start = end;
            });
            pending.extend_from_slice(&chunk[start..]);
        }
        (events, pending)
    }

    #[test]
    fn splits_lf_crlf_and_cr() {
        for sep in ["\n", "\r\n", "\r"] {
            let text = format!("data: a{sep}{sep}data: b{sep}{sep}");
            let events = split_all(&[text.as_bytes()]);
            assert_eq!(events.len(), 2, "separator {sep:?}");
            assert_eq!(event_data(&events[0]), EventData::One(b"a"));
            assert_eq!(event_data(&events[1]), EventData::One(b"b"));
        }
    }

    #[test]
    fn event_split_at_every_byte_is_found_once() {
        for sep in ["\n", "\r\n", "\r"] {
            let text = format!(": keep{sep}{sep}data: {{\"x\":1}}{sep}{sep}data: [DONE]{sep}{sep}");
            let bytes = text.as_bytes();
            for cut in 0..bytes.len() {
                let (events, rest) = split_with_rest(&[&bytes[..cut], &bytes[cut..]]);
                assert_eq!(events.len(), 3, "sep {sep:?} cut {cut}");
                assert_eq!(event_data(&events[1]), EventData::One(b"{\"x\":1}"));
                assert_eq!(event_data(&events[2]), EventData::Done);
                // A CRLF's LF may arrive after its event was complete; it ends no event.
                assert!(rest.is_empty() || rest == b"\n", "rest {rest:?}");
                assert_eq!(
                    [events.concat(), rest].concat(),
                    bytes,
                    "bytes are forwarded verbatim"
                );
            }
        }
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let events = split_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(events.len(), 2);
        assert_eq!(event_data(&events[1]), EventData::One(b"b"));
    }

    #[test]
    fn stray_blank_lines_end_no_event() {
        let events = split_all(&[b"\n\n\ndata: a\n\n\n\n"]);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn data_fields_join_and_other_fields_are_ignored() {
        assert_eq!(
            event_data(b"event: x\ndata: a\ndata:b\nid: 1\n\n"),
            EventData::Joined(b"a\nb".to_vec())
        );
        assert_eq!(event_data(b": comment\n\n"), EventData::None);
        assert_eq!(event_data(b"database: 1\n\n"), EventData::None);
        assert_eq!(event_data(b"data\n\n"), EventData::One(b""));
    }

    #[test]
    fn unfinished_event_is_reported() {
        let mut splitter = SseSplitter::new();
        splitter.feed(b"data: partial", |_| unreachable!());
        assert!(splitter.in_event());
        splitter.feed(b"\n\n", |_| {});
        assert!(!splitter.in_event());
    }

    /// Random streams cut at random places: offsets stay in bounds and nothing panics.
    #[test]
    fn arbitrary_streams_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"data: {}[DONE]\r\n:x";
        for _ in 0..5_000 {
            let stream: Vec<u8> = (0..rng.usize(0..200))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let mut splitter = SseSplitter::new();
            let mut start = 0;
            let mut pending = Vec::new();
            for chunk in stream.chunks(rng.usize(1..20)) {
                splitter.feed(chunk, |end| {
                    assert!(end <= chunk.len() && end > start);
                    pending.extend_from_slice(&chunk[start..end]);
                    let _ = event_data(&pending);
                    pending.clear();
                    start = end;
                });
                start = 0;
            }
        }
    }
}
