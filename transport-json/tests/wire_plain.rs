//! The codec's fast paths for plain frames must do exactly what its serde path does, or step
//! aside. Decoding ([`WireDecode::decode_plain`]) is checked on generated frames (plain and
//! not, with random whitespace, escapes, nulls, numbers, nested values, odd key cases, strings
//! that are not UTF-8 and single-byte corruptions) against an oracle: serde_json on the same
//! bytes with each invalid byte inside a string replaced by U+FFFD, Go's rule. The codec's
//! serde path is checked against the same oracle, so both paths agree. Encoding
//! ([`WireEncode::encode_plain`]) is checked on generated values against serde_json's output.

use proptest::prelude::*;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use transport_json::{JsonCodec, Message, Resp, WireDecode, WireEncode};

/// The length of the well-formed UTF-8 sequence at the start of `bytes`, by the table of
/// well-formed byte sequences in the Unicode standard (table 3-7); `None` when there is none.
fn sequence_len(bytes: &[u8]) -> Option<usize> {
    let (len, second) = match *bytes.first()? {
        0x00..=0x7f => return Some(1),
        0xc2..=0xdf => (2, 0x80..=0xbf),
        0xe0 => (3, 0xa0..=0xbf),
        0xe1..=0xec | 0xee..=0xef => (3, 0x80..=0xbf),
        0xed => (3, 0x80..=0x9f),
        0xf0 => (4, 0x90..=0xbf),
        0xf1..=0xf3 => (4, 0x80..=0xbf),
        0xf4 => (4, 0x80..=0x8f),
        _ => return None,
    };
    let sequence = bytes.get(..len)?;
    let rest_ok = sequence[2..].iter().all(|b| (0x80..=0xbf).contains(b));
    (second.contains(&sequence[1]) && rest_ok).then_some(len)
}

/// `bytes` as Go's decoder reads them: inside a string, each byte that does not begin a
/// well-formed sequence is U+FFFD (Go's `utf8.DecodeRune` steps over one byte when it finds
/// no rune). Outside strings nothing changes. Escapes are only stepped over: the plain path
/// never sees one. Also returns, for each position in the result, where it came from in
/// `bytes` (exact where a character begins).
fn go_coerced(bytes: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(bytes.len());
    let mut origin = vec![0];
    let (mut in_string, mut at) = (false, 0);
    while at < bytes.len() {
        let step = match (in_string, bytes[at]) {
            (_, b'"') => {
                in_string = !in_string;
                1
            }
            (true, b'\\') => 2,
            (true, _) => sequence_len(&bytes[at..]).unwrap_or(0),
            (false, _) => 1,
        };
        if step == 0 {
            out.extend_from_slice("\u{FFFD}".as_bytes());
            at += 1;
        } else {
            let end = (at + step).min(bytes.len());
            out.extend_from_slice(&bytes[at..end]);
            at = end;
        }
        origin.resize(out.len() + 1, at);
    }
    (out, origin)
}

/// What the oracle makes of the object at the start of `bytes`: the value serde_json decodes
/// from the Go-coerced bytes, and the object's length in `bytes`.
fn oracle<T: DeserializeOwned>(bytes: &[u8]) -> Option<(T, usize)> {
    let (coerced, origin) = go_coerced(bytes);
    let mut values = serde_json::Deserializer::from_slice(&coerced).into_iter::<T>();
    let value = values.next()?.ok()?;
    Some((value, origin[values.byte_offset()]))
}

/// `T` decoded by serde_json alone, through the codec: no fast path.
#[derive(Debug, PartialEq)]
struct BySerde<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for BySerde<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(BySerde)
    }
}

impl<T: DeserializeOwned> WireDecode for BySerde<T> {}

/// The first value the codec decodes from `bytes` as the only input, and its length.
fn by_codec<T: WireDecode>(bytes: &[u8]) -> Option<(T, usize)> {
    let mut buf = BytesMut::from(bytes);
    let value = JsonCodec::<T, Resp>::new().decode_eof(&mut buf).ok()??;
    Some((value, bytes.len() - buf.len()))
}

/// When the fast path decodes, the oracle decodes the same value from the same bytes; and the
/// codec, on its fast path or its serde path, decodes what the oracle does.
fn agrees<T>(bytes: &[u8]) -> Result<bool, TestCaseError>
where
    T: WireDecode + PartialEq + std::fmt::Debug,
{
    let input = String::from_utf8_lossy(bytes);
    let expected = oracle::<T>(bytes);
    let by_serde = by_codec::<BySerde<T>>(bytes).map(|(BySerde(value), len)| (value, len));
    prop_assert_eq!(&by_serde, &expected, "serde path, input {:?}", input);
    prop_assert_eq!(&by_codec::<T>(bytes), &expected, "codec, input {:?}", input);
    let Some(fast) = T::decode_plain(bytes) else {
        return Ok(false);
    };
    prop_assert_eq!(Some(fast), expected, "fast path, input {:?}", input);
    Ok(true)
}

fn ws() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t\r\n "]).prop_map(Vec::from)
}

/// A string literal whose contents are not all UTF-8: bytes that never begin a sequence,
/// sequences cut short, encoded surrogates, stray continuation bytes, between valid text and
/// sometimes an escape.
fn not_utf8() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            &b"a"[..], b" ", b"\xe2\x82\xac", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf0\x9f\x98\x80",
            b"\xed\xa0\x80", b"\xed\x9f\xbf", b"\xc0\x80", b"\xc3", b"\xf4\x90\x80\x80",
            b"\xef\xbf\xbd",
        ])
        .prop_map(<[u8]>::to_vec),
        2 => (0x80u8..=0xff).prop_map(|b| vec![b]),
        1 => Just(b"\\t".to_vec()),
    ];
    prop::collection::vec(piece, 0..8)
        .prop_map(|pieces| [&b"\""[..], &pieces.concat(), b"\""].concat())
}

fn json(text: &str) -> Vec<u8> {
    serde_json::to_vec(text).expect("a string")
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Uid", "Val", "Ts", "Err", "uid", "VAL", "ts", "eRR", "Extra", "Uidx", ""
        ])
        .prop_map(json),
        2 => any::<String>().prop_map(|k| json(&k)),
        1 => Just(br#""U\u0069d""#.to_vec()),
        1 => not_utf8(),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[ -~]{0,12}".prop_map(|v| json(&v)),
        2 => any::<String>().prop_map(|v| json(&v)),
        2 => not_utf8(),
        1 => Just(b"null".to_vec()),
        1 => prop::sample::select(vec!["5", "-1.5e3", "true", "{}", r#"{"a":[1,"b"]}"#, "[]", "nul", "\"a\u{1}b\""])
            .prop_map(Vec::from),
    ]
}

/// An object built from tokens with whitespace between them, sometimes followed by more input.
fn object() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((ws(), key(), ws(), ws(), value(), ws()), 0..6),
        ws(),
        prop::sample::select(vec!["", "\n", "{\"Uid\":\"next\"}", " garbage", ","]),
    )
        .prop_map(|(entries, close, tail)| {
            let body: Vec<Vec<u8>> = entries
                .into_iter()
                .map(|(w1, k, w2, w3, v, w4)| [w1, k, w2, b":".to_vec(), w3, v, w4].concat())
                .collect();
            [
                &b"{"[..],
                &body.join(&b","[..]),
                &close,
                b"}",
                tail.as_bytes(),
            ]
            .concat()
        })
}

/// An object with one byte changed, or cut short.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    (
        object(),
        any::<prop::sample::Index>(),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(mut bytes, at, byte, cut)| {
            let at = at.index(bytes.len());
            if cut {
                bytes.truncate(at.max(1));
            } else if at > 0 {
                bytes[at] = byte;
            }
            bytes
        })
}

/// Mostly printable text, sometimes with bytes serde_json escapes, sometimes any text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ -~]{0,20}",
        1 => "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀]{0,8}",
        1 => any::<String>(),
    ]
}

/// The codec writes what serde_json writes, plus the newline; plain values take the fast path.
fn encodes_as_serde<T: WireEncode>(value: &T, plain: bool) -> Result<(), TestCaseError> {
    let mut ours = BytesMut::new();
    JsonCodec::<Resp, T>::new()
        .encode(value, &mut ours)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut expected = serde_json::to_vec(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    expected.push(b'\n');
    prop_assert_eq!(&ours[..], &expected[..]);
    let mut fast = BytesMut::new();
    prop_assert_eq!(value.encode_plain(&mut fast), plain);
    prop_assert!(
        plain || fast.is_empty(),
        "a refused fast path wrote {:?}",
        fast
    );
    Ok(())
}

fn is_plain(s: &str) -> bool {
    !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn plain_encoding_writes_what_serde_writes(
        uid in text(), val in text(), ts in text(), err in prop::option::of(text()),
    ) {
        let plain = [&uid, &val, &ts].into_iter().chain(err.as_ref()).all(|s| is_plain(s));
        encodes_as_serde(&Resp { uid: uid.clone(), val: val.clone(), ts, err }, plain)?;
        encodes_as_serde(&Message { uid: uid.clone(), val: val.clone() }, is_plain(&uid) && is_plain(&val))?;
    }

    #[test]
    fn decoding_a_resp_agrees_with_go_on_both_paths(bytes in prop_oneof![object(), damaged()]) {
        agrees::<Resp>(&bytes)?;
    }

    #[test]
    fn decoding_a_message_agrees_with_go_on_both_paths(bytes in prop_oneof![object(), damaged()]) {
        agrees::<Message>(&bytes)?;
    }
}

#[test]
fn frames_as_peers_write_them_take_the_fast_path() {
    let resp = Resp {
        uid: "42".into(),
        val: "server: hello, wörld".into(),
        ts: "2026-11-25T13:00:00.123456789Z".into(),
        err: None,
    };
    let mut frame = serde_json::to_vec(&resp).expect("encodes");
    let len = frame.len();
    frame.extend_from_slice(b"\n{\"Uid\":\"43\"}");
    assert_eq!(Resp::decode_plain(&frame), Some((resp, len)));
    let message = Message {
        uid: "7".into(),
        val: "hello".into(),
    };
    let frame = serde_json::to_vec(&message).expect("encodes");
    assert_eq!(Message::decode_plain(&frame), Some((message, frame.len())));
    // Bytes that are not UTF-8 are read as Go reads them, one U+FFFD per byte, in a key (which
    // then names no field) as in a value.
    let go = b"{\"Uid\":\"\xff\xe2\x82!\",\"Val\xff\":\"x\"}";
    assert_eq!(
        Message::decode_plain(go),
        Some((
            Message {
                uid: "\u{FFFD}\u{FFFD}\u{FFFD}!".into(),
                val: String::new(),
            },
            go.len()
        ))
    );
    // Go's field matching and null rules hold on the fast path too.
    let go = br#"{ "uid" : "1", "VAL":"a", "Val":null, "Extra":"x", "Uid":"2" }"#;
    assert_eq!(
        Message::decode_plain(go),
        Some((
            Message {
                uid: "2".into(),
                val: "a".into()
            },
            go.len()
        ))
    );
}

#[test]
fn frames_the_fast_path_cannot_vouch_for_are_left_to_serde() {
    for bytes in [
        &br#"{"Uid":"a\"b"}"#[..],
        br#"{"Uid":5}"#,
        br#"{"Uid":"1","Extra":{"a":1}}"#,
        br#"{"Uid":"1""#,
        br#"{"Uid":"1",}"#,
        b"{\"Uid\":\"\x01\"}",
    ] {
        assert_eq!(
            Message::decode_plain(bytes),
            None,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}
