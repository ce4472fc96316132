//! A small protobuf writer for the OTLP trace messages: the few wire types they use, with
//! nested messages written in place and their length prefix inserted after.

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, u64::from(field << 3 | u32::from(wire)));
}

pub fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

pub fn varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    key(buf, field, VARINT);
    varint(buf, value);
}

pub fn fixed64_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    key(buf, field, FIXED64);
    buf.extend_from_slice(&value.to_le_bytes());
}

pub fn fixed32_field(buf: &mut Vec<u8>, field: u32, value: u32) {
    key(buf, field, FIXED32);
    buf.extend_from_slice(&value.to_le_bytes());
}

pub fn bytes_field(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    bytes_field_parts(buf, field, &[value]);
}

/// A bytes or string field made of `parts` back to back (a span name from its pieces).
pub fn bytes_field_parts(buf: &mut Vec<u8>, field: u32, parts: &[&[u8]]) {
    key(buf, field, LEN);
    varint(buf, parts.iter().map(|p| p.len() as u64).sum());
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// Bytes a varint of `value` takes.
fn varint_len(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

/// Bytes a length-delimited field with `len` bytes of content takes (one-byte key).
fn len_field(len: u64) -> u64 {
    1 + varint_len(len) + len
}

/// [`len_field`] for in-memory sizes.
pub fn field_len(len: usize) -> usize {
    len_field(len as u64) as usize
}

/// The key and length of a length-delimited field whose `len` bytes the caller writes next.
pub fn len_prefix(buf: &mut Vec<u8>, field: u32, len: usize) {
    key(buf, field, LEN);
    varint(buf, len as u64);
}

/// A nested message: `write` appends its fields, then the length goes in front of them
/// (the fields move right by the length's few bytes). For messages whose size is not
/// known before writing them; attributes compute theirs instead.
pub fn message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let start = buf.len();
    write(buf);
    let len = buf.len() - start;
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut value = len as u64;
    while value >= 0x80 {
        prefix[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    prefix[n] = value as u8;
    buf.splice(start..start, prefix[..=n].iter().copied());
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

/// Writes one `KeyValue` as field `field` of the enclosing message. Sizes are computed
/// first, so nothing is written twice or moved.
pub fn attribute(buf: &mut Vec<u8>, field: u32, name: &str, value: &Value<'_>) {
    let any = any_value_len(value);
    key(buf, field, LEN);
    varint(buf, len_field(name.len() as u64) + len_field(any));
    bytes_field(buf, 1, name.as_bytes());
    key(buf, 2, LEN);
    varint(buf, any);
    any_value(buf, value);
}

/// Size of an `AnyValue` message holding `value`.
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

fn any_value(buf: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(s) => bytes_field(buf, 1, s.as_bytes()),
        Value::Bool(b) => varint_field(buf, 2, u64::from(*b)),
        Value::Int(i) => varint_field(buf, 3, *i as u64),
        Value::Double(d) => fixed64_field(buf, 4, d.to_bits()),
        Value::StrArray(items) => {
            key(buf, 5, LEN);
            varint(buf, string_array_len(items));
            for item in items.iter() {
                key(buf, 1, LEN);
                varint(buf, len_field(item.len() as u64));
                bytes_field(buf, 1, item.as_bytes());
            }
        }
    }
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
        let mut buf = Vec::new();
        message(&mut buf, 2, |inner| bytes_field(inner, 1, &[7u8; 200]));
        // key(2, LEN) = 0x12; inner = key 0x0a, len 200 (2 bytes), 200 bytes => 203.
        assert_eq!(&buf[..3], &[0x12, 0xcb, 0x01]);
        assert_eq!(&buf[3..6], &[0x0a, 0xc8, 0x01]);
        assert_eq!(buf.len(), 3 + 203);
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
                    other => any_value(any, other),
                });
            });
            assert_eq!(computed, nested, "{value:?}");
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
