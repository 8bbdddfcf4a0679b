//! The fast paths of the wire types: [`Message`] and [`Resp`] frames whose strings need no
//! escaping are decoded and encoded by hand, byte for byte as serde_json does, with bytes that
//! are not UTF-8 read as Go reads them (the property tests in `tests/wire_plain.rs` check it
//! against serde_json and that rule); any other frame is left to serde_json. Measured: the
//! response decode was most of a client's per-request cost.

use tokio_util::bytes::{BufMut, BytesMut};

use super::{MESSAGE_FIELDS, Message, RESP_FIELDS, Resp, field_index};
use crate::codec::go_utf8;
use crate::codec::{WireDecode, WireEncode};

impl WireDecode for Message {
    fn decode_plain(bytes: &[u8]) -> Option<(Self, usize)> {
        let (fields, len) = plain_object(bytes, &MESSAGE_FIELDS)?;
        Some((Message::from_fields(fields), len))
    }
}

impl WireDecode for Resp {
    fn decode_plain(bytes: &[u8]) -> Option<(Self, usize)> {
        let (fields, len) = plain_object(bytes, &RESP_FIELDS)?;
        Some((Resp::from_fields(fields), len))
    }
}

impl WireEncode for Message {
    fn encode_plain(&self, dst: &mut BytesMut) -> bool {
        put_plain_object(dst, &[("Uid", &self.uid), ("Val", &self.val)], None)
    }
}

impl WireEncode for Resp {
    fn encode_plain(&self, dst: &mut BytesMut) -> bool {
        put_plain_object(
            dst,
            &[("Uid", &self.uid), ("Val", &self.val), ("Ts", &self.ts)],
            self.err.as_deref().map(|err| ("Err", err)),
        )
    }
}

/// The fast path of encoding: when no value needs escaping (no `"`, `\\` or control
/// character, the only bytes serde_json escapes), appends `{"Key":"value",...}` as serde_json
/// writes it (keys in order, no whitespace) and returns true; otherwise writes nothing and
/// returns false. `last` is an optional field written after the others.
pub(crate) fn put_plain_object(
    dst: &mut BytesMut,
    fields: &[(&str, &str)],
    last: Option<(&str, &str)>,
) -> bool {
    let all = || fields.iter().chain(last.iter());
    if all().any(|(_, value)| string_end(value.as_bytes()).is_some()) {
        return false;
    }
    dst.reserve(2 + all().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>());
    let mut sep = b'{';
    for (key, value) in all() {
        dst.put_u8(sep);
        dst.put_u8(b'"');
        dst.put_slice(key.as_bytes());
        dst.put_slice(b"\":\"");
        dst.put_slice(value.as_bytes());
        dst.put_u8(b'"');
        sep = b',';
    }
    if sep == b'{' {
        dst.put_u8(b'{');
    }
    dst.put_u8(b'}');
    true
}

/// The fast path of decoding: an object at the start of `bytes` whose keys are plain strings
/// and whose values are plain strings or `null` (plain: no backslash, no control character),
/// with JSON whitespace anywhere between tokens. Fills the fields by the same rules as the
/// serde impls (exact key first, then by Go's case folding; `null` leaves a field as it was;
/// unknown keys ignored; the last duplicate wins) and returns them with the object's length.
/// A string that is not UTF-8 is read as Go reads it ([`go_utf8::lossy`]); a key that is not
/// names no field either way, since the field names are ASCII. Anything else (escapes,
/// numbers, nested values, bad syntax, or the end of `bytes` before the closing brace)
/// returns `None`, and the serde path decodes the frame, or reports its error.
fn plain_object<const N: usize>(
    bytes: &[u8],
    fields: &[&'static str; N],
) -> Option<([Option<String>; N], usize)> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut at = skip_ws(bytes, 1);
    if bytes.get(at) == Some(&b'}') {
        return Some((values, at + 1));
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let (key, next) = plain_str(bytes, at + 1)?;
        at = skip_ws(bytes, next);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(bytes, at + 1);
        let field = field_index(fields, key);
        match bytes.get(at)? {
            b'"' => {
                let (value, next) = plain_str(bytes, at + 1)?;
                if let Some(field) = field {
                    values[field] = Some(text(value));
                }
                at = next;
            }
            b'n' if bytes[at..].starts_with(b"null") => at += 4,
            _ => return None,
        }
        at = skip_ws(bytes, at);
        match bytes.get(at)? {
            b',' => at = skip_ws(bytes, at + 1),
            b'}' => return Some((values, at + 1)),
            _ => return None,
        }
    }
}

/// The contents of the plain string that starts at `start` (not yet checked as UTF-8), and
/// the index after its closing quote.
fn plain_str(bytes: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = bytes.get(start..)?;
    let len = string_end(rest)?;
    if rest[len] != b'"' {
        return None;
    }
    Some((&rest[..len], start + len + 1))
}

/// A plain string's contents as text; bytes that are not UTF-8 are read as Go reads them.
fn text(contents: &[u8]) -> String {
    match std::str::from_utf8(contents) {
        Ok(text) => text.to_owned(),
        Err(_) => go_utf8::lossy(contents),
    }
}

/// The index of the first `"`, `\\` or control character in `bytes`: eight bytes at a time
/// (the usual bit tricks on a `u64` word), then one at a time for the tail.
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let w = u64::from_le_bytes(b);
        // A byte's high bit is set in each mask where that byte is a match; only the lowest
        // match is exact (borrows may mark bytes above it), and only it is used.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let quote = zero(w ^ (ONES * u64::from(b'"')));
        let backslash = zero(w ^ (ONES * u64::from(b'\\')));
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let found = quote | backslash | control;
        if found != 0 {
            // The lowest set bit is in the first matching byte (little-endian order).
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::string_end;

    #[test]
    fn string_end_finds_the_first_quote_backslash_or_control_byte() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), b"plain text, no end".to_vec()];
        for len in 0..20 {
            for special in [b'"', b'\\', 0x00, 0x1f, 0x0a] {
                for at in 0..len {
                    let mut bytes: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    bytes[at] = special;
                    // Bytes that look close to a match but are not one.
                    bytes.extend_from_slice(&[0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xff, 0xa2]);
                    cases.push(bytes);
                }
            }
        }
        cases.push("ünïcödé \u{1F600} \"".as_bytes().to_vec());
        cases.push([0x80, 0xa2, 0xdc, 0xff, 0x7f, 0x20, 0x21, 0x23, 0x22].to_vec());
        for bytes in cases {
            assert_eq!(string_end(&bytes), naive(&bytes), "{bytes:?}");
        }
    }
}
