//! What the fuzz targets share: the oracle for the wire decoders and the codec driver.
//!
//! The oracle is serde_json plus the rules of Go's `encoding/json` that the protocol follows
//! and serde_json does not, each written here on its own rather than taken from the crate, so
//! a mistake in the crate's version of a rule shows up as a mismatch:
//!
//! - inside a string, each byte that does not begin a well-formed UTF-8 sequence is read as
//!   U+FFFD (Go's `utf8.DecodeRune` steps over one byte), and a `\u` escape of a UTF-16
//!   surrogate that is not the first half of a pair is read as U+FFFD (Go's `unquote`);
//! - a key names a field when it equals it, or equals it under Unicode simple case folding (Go's
//!   `foldName`); for ASCII field names that is ASCII case, plus `ſ` (U+017F) for `s` and the
//!   Kelvin sign (U+212A) for `k`, the only non-ASCII letters that fold to ASCII ones;
//! - `null` leaves a field as it was, a field never set is empty, unknown keys are ignored
//!   (their values only checked as JSON), and the last key for a field wins;
//! - any other value for a field (number, object, ...) refuses the frame, as Go's decoder
//!   reports an error for it.
//!
//! What serde_json refuses that Go accepts is refused by both sides here, on purpose: the
//! oracle checks our decoders agree with each other and with these rules, not serde_json's
//! nesting limit (128, Go's is 10 000).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;
use transport_json::codec::{CodecError, JsonCodec};
use transport_json::{Message, Resp, WireDecode};

/// The length of the well-formed UTF-8 sequence at the start of `bytes` (Unicode table 3-7),
/// as Go's `utf8.DecodeRune` finds it; `None` when the first byte begins none.
fn rune_len(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.first()?;
    let (len, lo, hi) = match first {
        0x00..=0x7f => return Some(1),
        0xc2..=0xdf => (2, 0x80, 0xbf),
        0xe0 => (3, 0xa0, 0xbf),
        0xed => (3, 0x80, 0x9f),
        0xe1..=0xef => (3, 0x80, 0xbf),
        0xf0 => (4, 0x90, 0xbf),
        0xf4 => (4, 0x80, 0x8f),
        0xf1..=0xf3 => (4, 0x80, 0xbf),
        _ => return None,
    };
    let seq = bytes.get(..len)?;
    let cont = |b: &u8| (0x80..=0xbf).contains(b);
    ((lo..=hi).contains(&seq[1]) && seq[2..].iter().all(cont)).then_some(len)
}

/// The UTF-16 code unit of a `\uXXXX` escape at the start of `bytes`.
fn code_unit(bytes: &[u8]) -> Option<u16> {
    let hex = bytes.strip_prefix(b"\\u")?.get(..4)?;
    let hex = std::str::from_utf8(hex).ok()?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

/// `bytes` with every string rewritten as Go reads it (see the crate docs), and for each
/// offset of the result the offset in `bytes` it came from (exact at token boundaries).
pub fn go_rewrite(bytes: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(bytes.len());
    let mut origin = Vec::with_capacity(bytes.len() + 1);
    let mut in_string = false;
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (take, write): (usize, &[u8]) = if !in_string {
            in_string = rest[0] == b'"';
            (1, &rest[..1])
        } else if rest[0] == b'"' {
            in_string = false;
            (1, &rest[..1])
        } else if rest[0] == b'\\' {
            match code_unit(rest) {
                Some(0xd800..=0xdbff) if matches!(code_unit(&rest[6..]), Some(0xdc00..=0xdfff)) => {
                    (12, &rest[..12])
                }
                Some(0xd800..=0xdfff) => (6, b"\\ufffd"),
                Some(_) => (6, &rest[..6]),
                // Any other escape: the parser judges it; step over the backslash and the
                // next byte only when that is ASCII, so a bad escape cannot hide a quote.
                None if rest.get(1).is_some_and(u8::is_ascii) => (2, &rest[..2]),
                None => (1, &rest[..1]),
            }
        } else {
            match rune_len(rest) {
                Some(len) => (len, &rest[..len]),
                None => (1, "\u{FFFD}".as_bytes()),
            }
        };
        out.extend_from_slice(write);
        origin.resize(out.len(), at);
        at += take;
    }
    origin.push(at);
    (out, origin)
}

/// Whether `key` names `field` by Go's rule (see the crate docs). `field` is ASCII.
pub fn go_key_matches(field: &str, key: &str) -> bool {
    let fold = |c: char| match c {
        'ſ' => 'S',
        'K' => 'K',
        c => c.to_ascii_uppercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

/// The string fields of a struct as Go decodes them from one object.
struct GoFields<'a>(&'a [&'static str]);

impl<'de> DeserializeSeed<'de> for GoFields<'_> {
    type Value = Vec<Option<String>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GoFields<'_> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = vec![None; self.0.len()];
        while let Some(key) = map.next_key::<String>()? {
            match self.0.iter().position(|field| go_key_matches(field, &key)) {
                Some(at) => {
                    if let Some(text) = map.next_value::<Option<String>>()? {
                        values[at] = Some(text);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

/// A wire type the oracle knows how to build from its fields.
pub trait Wire: WireDecode + PartialEq + fmt::Debug + Sized {
    /// The field names, in the order of [`Wire::from_go`]'s values.
    const FIELDS: &'static [&'static str];
    /// The value from its fields as the oracle decoded them.
    fn from_go(fields: Vec<Option<String>>) -> Self;
}

impl Wire for Message {
    const FIELDS: &'static [&'static str] = &["Uid", "Val"];
    fn from_go(fields: Vec<Option<String>>) -> Self {
        let mut f = fields.into_iter().map(Option::unwrap_or_default);
        Message {
            uid: f.next().unwrap_or_default(),
            val: f.next().unwrap_or_default(),
        }
    }
}

impl Wire for Resp {
    const FIELDS: &'static [&'static str] = &["Uid", "Val", "Ts", "Err"];
    fn from_go(fields: Vec<Option<String>>) -> Self {
        let mut f = fields.into_iter();
        let mut text = || f.next().flatten().unwrap_or_default();
        let (uid, val, ts) = (text(), text(), text());
        Resp {
            uid,
            val,
            ts,
            err: f.next().flatten(),
        }
    }
}

/// What the oracle makes of the first value in `bytes`.
#[derive(Debug, PartialEq)]
pub enum Oracle<T> {
    /// Nothing but whitespace.
    Empty,
    /// The value and the offset in `bytes` just past it.
    Value(T, usize),
    /// The first value is not an object, or not a valid one, or does not end.
    Refused,
}

/// The first value in `bytes` by the oracle's rules.
pub fn oracle<T: Wire>(bytes: &[u8]) -> Oracle<T> {
    let start = bytes
        .iter()
        .position(|b| !b" \t\r\n".contains(b))
        .unwrap_or(bytes.len());
    match bytes.get(start) {
        None => return Oracle::Empty,
        Some(b'{') => {}
        Some(_) => return Oracle::Refused,
    }
    let (rewritten, origin) = go_rewrite(&bytes[start..]);
    let mut stream = serde_json::Deserializer::from_slice(&rewritten).into_iter::<Go<T>>();
    match stream.next() {
        Some(Ok(Go(fields, _))) => {
            let end = origin[stream.byte_offset()];
            Oracle::Value(T::from_go(fields), start + end)
        }
        _ => Oracle::Refused,
    }
}

/// The fields of a `T` as the oracle decodes them.
struct Go<T>(Vec<Option<String>>, PhantomData<T>);

impl<'de, T: Wire> de::Deserialize<'de> for Go<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        GoFields(T::FIELDS)
            .deserialize(d)
            .map(|fields| Go(fields, PhantomData))
    }
}

/// How a run of the codec over a stream ended.
#[derive(Debug, PartialEq)]
pub enum End {
    /// The stream ended cleanly.
    Clean,
    /// The codec failed; the error's `Debug` text (it has no `PartialEq`).
    Failed(String),
}

/// One decoded frame and the offset in the stream just past it.
pub type Frame<T> = (T, usize);

/// Feeds `chunks` (consecutive pieces of one stream) to a fresh codec with the given maximum
/// frame, as `FramedRead` does: decode until it wants more, then the next chunk, then
/// `decode_eof` at the end; stops at the first error. Checks the codec's memory bound on the
/// way: a decoder that wants more input never holds `max` bytes or more.
pub fn run_codec<T: WireDecode>(chunks: &[&[u8]], max: usize) -> (Vec<Frame<T>>, End) {
    let mut codec = JsonCodec::<T, Resp>::with_max_frame(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => frames.push((item, fed - buf.len())),
                Ok(None) => {
                    assert!(
                        buf.len() < max.max(1),
                        "the decoder wants more input with {} bytes buffered, max {max}",
                        buf.len()
                    );
                    break;
                }
                Err(e) => return (frames, failed(&e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => frames.push((item, fed - buf.len())),
            Ok(None) => return (frames, End::Clean),
            Err(e) => return (frames, failed(&e)),
        }
    }
}

fn failed(error: &CodecError) -> End {
    End::Failed(format!("{error:?}"))
}

/// A small deterministic generator (xorshift64*), for cut points and settings derived from an
/// input.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with a hash of `bytes` and `salt`.
    pub fn from_bytes(bytes: &[u8], salt: u64) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h | 1)
    }

    /// The next value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// `bytes` cut into pieces of random lengths (mostly short, sometimes long).
pub fn random_chunks<'a>(bytes: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = match rng.below(4) {
            0 => 1 + rng.below(4),
            1 | 2 => 1 + rng.below(32),
            _ => 1 + rng.below(rest.len()),
        };
        let (head, tail) = rest.split_at(len.min(rest.len()));
        chunks.push(head);
        rest = tail;
    }
    chunks
}
