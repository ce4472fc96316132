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
    key(buf, field, LEN);
    varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

/// A nested message: `write` appends its fields, then the length goes in front of them.
pub fn message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let start = buf.len();
    write(buf);
    let len = buf.len() - start;
    let mut prefix = Vec::with_capacity(5);
    varint(&mut prefix, len as u64);
    buf.splice(start..start, prefix);
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

/// Writes one `KeyValue` as field `field` of the enclosing message.
pub fn attribute(buf: &mut Vec<u8>, field: u32, name: &str, value: &Value<'_>) {
    message(buf, field, |kv| {
        bytes_field(kv, 1, name.as_bytes());
        message(kv, 2, |any| any_value(any, value));
    });
}

fn any_value(buf: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(s) => bytes_field(buf, 1, s.as_bytes()),
        Value::Bool(b) => varint_field(buf, 2, u64::from(*b)),
        Value::Int(i) => varint_field(buf, 3, *i as u64),
        Value::Double(d) => fixed64_field(buf, 4, d.to_bits()),
        Value::StrArray(items) => message(buf, 5, |array| {
            for item in items.iter() {
                message(array, 1, |any| bytes_field(any, 1, item.as_bytes()));
            }
        }),
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
