//! A small protobuf writer for the OTLP trace messages: the few wire types they use, small
//! fields gathered in a register word, attribute keys framed at compile time, and nested
//! messages written in place behind a slot for their length.

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Small fields (keys, lengths, scalars) gathered eight bytes at a time in a register and
/// appended a word at a time; whatever is left goes out when the head is dropped.
///
/// Why not bytes pushed one by one, or a byte array on the stack: pushes check capacity per
/// byte, a copy of the array's used length is a call to `memcpy`, and a whole-array copy
/// reads back bytes just stored one at a time, which stalls the load. Those were most of
/// what encoding a span cost.
struct Head<'a> {
    buf: &'a mut Vec<u8>,
    word: u64,
    len: u32,
}

impl<'a> Head<'a> {
    #[inline]
    fn new(buf: &'a mut Vec<u8>) -> Self {
        Head {
            buf,
            word: 0,
            len: 0,
        }
    }

    #[inline]
    fn byte(&mut self, byte: u8) {
        if self.len == 8 {
            self.flush();
        }
        self.word |= u64::from(byte) << (8 * self.len);
        self.len += 1;
    }

    #[inline]
    fn varint(&mut self, mut value: u64) -> &mut Self {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
        self
    }

    #[inline]
    fn key(&mut self, field: u32, wire: u8) -> &mut Self {
        self.varint(u64::from(field << 3 | u32::from(wire)))
    }

    /// Eight bytes after the gathered ones, as they are (a fixed64 field's value).
    #[inline]
    fn fixed(&mut self, bytes: [u8; 8]) -> &mut Self {
        self.flush();
        self.buf.extend_from_slice(&bytes);
        self
    }

    /// Appends the whole word and cuts off what is not used: a copy of known size.
    #[inline]
    fn flush(&mut self) {
        let end = self.buf.len() + self.len as usize;
        self.buf.extend_from_slice(&self.word.to_le_bytes());
        self.buf.truncate(end);
        self.word = 0;
        self.len = 0;
    }
}

impl Drop for Head<'_> {
    #[inline]
    fn drop(&mut self) {
        self.flush();
    }
}

#[inline]
fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    Head::new(buf).key(field, wire);
}

#[inline]
pub fn varint(buf: &mut Vec<u8>, value: u64) {
    Head::new(buf).varint(value);
}

#[inline]
pub fn varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    Head::new(buf).key(field, VARINT).varint(value);
}

#[inline(always)]
pub fn fixed64_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    Head::new(buf)
        .key(field, FIXED64)
        .fixed(value.to_le_bytes());
}

#[inline]
pub fn fixed32_field(buf: &mut Vec<u8>, field: u32, value: u32) {
    let mut head = Head::new(buf);
    head.key(field, FIXED32);
    for byte in value.to_le_bytes() {
        head.byte(byte);
    }
}

#[inline]
pub fn bytes_field(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    Head::new(buf).key(field, LEN).varint(value.len() as u64);
    buf.extend_from_slice(value);
}

/// A bytes or string field made of `parts` back to back (a span name from its pieces).
pub fn bytes_field_parts(buf: &mut Vec<u8>, field: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    Head::new(buf).key(field, LEN).varint(len as u64);
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// Bytes a varint of `value` takes.
#[inline]
fn varint_len(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

/// Bytes a length-delimited field with `len` bytes of content takes (one-byte key).
#[inline]
fn len_field(len: u64) -> u64 {
    1 + varint_len(len) + len
}

/// [`len_field`] for in-memory sizes.
pub fn field_len(len: usize) -> usize {
    len_field(len as u64) as usize
}

/// The key and length of a length-delimited field whose `len` bytes the caller writes next.
pub fn len_prefix(buf: &mut Vec<u8>, field: u32, len: usize) {
    Head::new(buf).key(field, LEN).varint(len as u64);
}

/// A nested message: `write` appends its fields, then its length goes in front of them.
/// For messages whose size is not known before writing them (spans); attributes compute
/// theirs instead.
///
/// Two bytes are kept for the length, which is what a span takes (128 to 16383 bytes), so
/// usually nothing moves; a shorter or longer message is shifted to fit its length.
pub fn message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    const KEPT: usize = 2;
    key(buf, field, LEN);
    let slot = buf.len();
    buf.extend_from_slice(&[0; KEPT]);
    write(buf);
    let start = slot + KEPT;
    let len = buf.len() - start;
    let width = varint_len(len as u64) as usize;
    if width != KEPT {
        buf.resize(start + len + width.saturating_sub(KEPT), 0);
        buf.copy_within(start..start + len, slot + width);
        buf.truncate(slot + width + len);
    }
    let mut value = len as u64;
    for byte in &mut buf[slot..slot + width] {
        *byte = (value as u8 & 0x7f) | if value >= 0x80 { 0x80 } else { 0 };
        value >>= 7;
    }
}

/// Room for an attribute's framed key: the longest GenAI attribute names are under 40
/// bytes.
const KEY_ROOM: usize = 48;

/// An attribute's key as written in a `KeyValue` (tag, length, name), framed when the
/// program is compiled and padded to a fixed size, so writing it is one copy of known size.
/// Names are constants; see [`attribute_with`].
pub struct AttrKey {
    framed: [u8; KEY_ROOM],
    len: usize,
}

impl AttrKey {
    /// Frames `name`; a name too long for [`KEY_ROOM`] fails the build (it is evaluated in
    /// a constant).
    pub const fn new(name: &str) -> AttrKey {
        let bytes = name.as_bytes();
        assert!(
            bytes.len() + 2 <= KEY_ROOM,
            "attribute name too long for AttrKey"
        );
        let mut framed = [0u8; KEY_ROOM];
        framed[0] = 1 << 3 | LEN;
        framed[1] = bytes.len() as u8;
        let mut i = 0;
        while i < bytes.len() {
            framed[i + 2] = bytes[i];
            i += 1;
        }
        AttrKey {
            framed,
            len: bytes.len() + 2,
        }
    }
}
/// An attribute value (`opentelemetry.proto.common.v1.AnyValue`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    StrArray(&'a [&'a str]),
}

/// Writes one `KeyValue` as field `field` of the enclosing message, for a name known only
/// at run time (what the config names, encoded when it compiles). Sizes are computed first,
/// so nothing is written twice or moved.
pub fn attribute(buf: &mut Vec<u8>, field: u32, name: &str, value: &Value<'_>) {
    let any = any_value_len(value);
    Head::new(buf)
        .key(field, LEN)
        .varint(len_field(name.len() as u64) + len_field(any))
        .key(1, LEN)
        .varint(name.len() as u64);
    buf.extend_from_slice(name.as_bytes());
    any_value(buf, value, any);
}

/// [`attribute`] for a key framed in advance: what every span attribute uses. Always
/// inlined, with [`any_value`] and [`any_value_len`]: at each call site the key and the
/// value's kind are known, so the framing folds into a few instructions (encoding a
/// request's spans took a third less time than with calls).
#[inline(always)]
pub fn attribute_with(buf: &mut Vec<u8>, field: u32, key: &AttrKey, value: &Value<'_>) {
    let any = any_value_len(value);
    Head::new(buf)
        .key(field, LEN)
        .varint(key.len as u64 + len_field(any));
    let end = buf.len() + key.len;
    buf.extend_from_slice(&key.framed);
    buf.truncate(end);
    any_value(buf, value, any);
}

/// `KeyValue.value`: an `AnyValue` of `any` bytes. Scalars go out with their framing in
/// one word; strings take a copy of their own.
#[inline(always)]
fn any_value(buf: &mut Vec<u8>, value: &Value<'_>, any: u64) {
    let mut head = Head::new(buf);
    head.key(2, LEN).varint(any);
    match value {
        Value::Str(s) => {
            head.key(1, LEN).varint(s.len() as u64);
            drop(head);
            buf.extend_from_slice(s.as_bytes());
        }
        Value::Bool(b) => {
            head.key(2, VARINT).varint(u64::from(*b));
        }
        Value::Int(i) => {
            head.key(3, VARINT).varint(*i as u64);
        }
        Value::Double(d) => {
            head.key(4, FIXED64).fixed(d.to_bits().to_le_bytes());
        }
        Value::StrArray(items) => {
            head.key(5, LEN).varint(string_array_len(items));
            drop(head);
            for item in items.iter() {
                Head::new(buf)
                    .key(1, LEN)
                    .varint(len_field(item.len() as u64))
                    .key(1, LEN)
                    .varint(item.len() as u64);
                buf.extend_from_slice(item.as_bytes());
            }
        }
    }
}

/// Size of an `AnyValue` message holding `value`.
#[inline(always)]
fn any_value_len(value: &Value<'_>) -> u64 {
    match value {
        Value::Str(s) => len_field(s.len() as u64),
        Value::Bool(_) => 2,
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Double(_) => 9,
        Value::StrArray(items) => len_field(string_array_len(items)),
    }
}

/// Size of an `ArrayValue` of string `AnyValue`s.
fn string_array_len(items: &[&str]) -> u64 {
    items
        .iter()
        .map(|item| len_field(len_field(item.len() as u64)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_encoding() {
        for (value, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, value);
            assert_eq!(buf, bytes, "{value}");
        }
    }

    #[test]
    fn nested_messages_get_their_length_in_front() {
        let mut buf = vec![9u8];
        message(&mut buf, 2, |inner| bytes_field(inner, 1, &[7u8; 200]));
        // key(2, LEN) = 0x12; inner = key 0x0a, len 200 (2 bytes), 200 bytes => 203.
        assert_eq!(&buf[..4], &[9, 0x12, 0xcb, 0x01]);
        assert_eq!(&buf[4..7], &[0x0a, 0xc8, 0x01]);
        assert_eq!(buf.len(), 1 + 3 + 203);
    }

    #[test]
    fn nested_messages_of_every_length_size_match_a_plain_prefix() {
        // One-, two- and three-byte lengths: shorter and longer than the two bytes kept.
        for size in [
            0usize, 1, 125, 126, 127, 128, 16_380, 16_381, 16_382, 16_383, 40_000,
        ] {
            let content: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut written = vec![1u8, 2];
            message(&mut written, 3, |inner| inner.extend_from_slice(&content));
            let mut expected = vec![1u8, 2, 0x1a];
            varint(&mut expected, size as u64);
            expected.extend_from_slice(&content);
            assert_eq!(written, expected, "{size}");
        }
    }

    #[test]
    fn computed_sizes_match_nested_writes() {
        let values = [
            Value::Str(""),
            Value::Str(&"x".repeat(300)),
            Value::Bool(true),
            Value::Int(0),
            Value::Int(-5),
            Value::Int(i64::MAX),
            Value::Double(0.25),
            Value::StrArray(&["stop", "length"]),
            Value::StrArray(&[]),
        ];
        for value in &values {
            let mut computed = Vec::new();
            attribute(&mut computed, 9, "gen_ai.some.attribute", value);
            // The same message written the slow way: nested, then length-prefixed.
            let mut nested = Vec::new();
            message(&mut nested, 9, |kv| {
                bytes_field(kv, 1, b"gen_ai.some.attribute");
                message(kv, 2, |any| match value {
                    Value::StrArray(items) => message(any, 5, |array| {
                        for item in items.iter() {
                            message(array, 1, |v| bytes_field(v, 1, item.as_bytes()));
                        }
                    }),
                    Value::Str(s) => bytes_field(any, 1, s.as_bytes()),
                    Value::Bool(b) => varint_field(any, 2, u64::from(*b)),
                    Value::Int(i) => varint_field(any, 3, *i as u64),
                    Value::Double(d) => fixed64_field(any, 4, d.to_bits()),
                });
            });
            assert_eq!(computed, nested, "{value:?}");
            const KEY: AttrKey = AttrKey::new("gen_ai.some.attribute");
            let mut framed = Vec::new();
            attribute_with(&mut framed, 9, &KEY, value);
            assert_eq!(framed, nested, "{value:?}");
        }
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut buf = Vec::new();
            varint(&mut buf, v);
            assert_eq!(buf.len() as u64, varint_len(v), "{v}");
        }
    }

    #[test]
    fn attributes_encode_each_value_kind() {
        let mut buf = Vec::new();
        attribute(&mut buf, 9, "k", &Value::Int(-1));
        // KeyValue{key:"k", value: AnyValue{int_value: -1}} as field 9.
        let mut expected = vec![0x4a, 16, 0x0a, 1, b'k', 0x12, 11, 0x18];
        expected.extend_from_slice(&[0xff; 9]);
        expected.push(0x01);
        assert_eq!(buf, expected);
    }
}
