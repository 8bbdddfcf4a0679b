//! The codec's fast paths for plain frames must do exactly what serde_json does, or step
//! aside. Decoding ([`WireDecode::decode_plain`]) is checked on generated frames (plain and
//! not, with random whitespace, escapes, nulls, numbers, nested values, odd key cases and
//! single-byte corruptions) against serde_json on the same bytes; encoding
//! ([`WireEncode::encode_plain`]) on generated values against serde_json's output.

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Encoder;
use transport_json::{JsonCodec, Message, Resp, WireDecode, WireEncode};

/// What serde_json makes of the object at the start of `bytes`, and its length.
fn by_serde<T: DeserializeOwned>(bytes: &[u8]) -> Option<(T, usize)> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    let value = values.next()?.ok()?;
    Some((value, values.byte_offset()))
}

/// When the fast path decodes, serde_json decodes the same value from the same bytes.
fn agrees<T: WireDecode + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
) -> Result<bool, TestCaseError> {
    let Some((fast, len)) = T::decode_plain(bytes) else {
        return Ok(false);
    };
    let slow = by_serde::<T>(bytes);
    prop_assert_eq!(
        Some((fast, len)),
        slow,
        "input {:?}",
        String::from_utf8_lossy(bytes)
    );
    Ok(true)
}

fn ws() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t\r\n "]).prop_map(str::to_owned)
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "Uid", "Val", "Ts", "Err", "uid", "VAL", "ts", "eRR", "Extra", "Uidx", ""
        ])
        .prop_map(|k| serde_json::to_string(k).expect("a key")),
        any::<String>().prop_map(|k| serde_json::to_string(&k).expect("a key")),
        Just(r#""U\u0069d""#.to_owned()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,12}".prop_map(|v| serde_json::to_string(&v).expect("a value")),
        2 => any::<String>().prop_map(|v| serde_json::to_string(&v).expect("a value")),
        1 => Just("null".to_owned()),
        1 => prop::sample::select(vec!["5", "-1.5e3", "true", "{}", r#"{"a":[1,"b"]}"#, "[]", "nul", "\"a\u{1}b\""])
            .prop_map(str::to_owned),
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
            let body: Vec<String> = entries
                .into_iter()
                .map(|(w1, k, w2, w3, v, w4)| format!("{w1}{k}{w2}:{w3}{v}{w4}"))
                .collect();
            format!("{{{}{close}}}{tail}", body.join(",")).into_bytes()
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
    fn plain_decoding_of_a_resp_agrees_with_serde(bytes in prop_oneof![object(), damaged()]) {
        agrees::<Resp>(&bytes)?;
    }

    #[test]
    fn plain_decoding_of_a_message_agrees_with_serde(bytes in prop_oneof![object(), damaged()]) {
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
        b"{\"Uid\":\"\xff\"}",
    ] {
        assert_eq!(
            Message::decode_plain(bytes),
            None,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}
