//! Property tests of the JSON stream decoder: no input or split makes it panic, and a valid
//! stream decodes to the same values however it is cut into reads.

use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use transport_json::codec::{CodecError, JsonCodec};
use transport_json::{Message, Resp};

type ServerCodec = JsonCodec<Message, Resp>;

/// Cuts `input` at the given points (taken modulo its length, in any order).
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % (input.len() + 1))
        .chain([0, input.len()])
        .collect();
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

/// Feeds the pieces to the codec; returns the values decoded before the first error, and the
/// error if any.
fn feed(codec: &mut ServerCodec, parts: &[&[u8]]) -> (Vec<Message>, Option<CodecError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Bytes that are mostly JSON punctuation, so the scanner's states are all reached.
fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"{}[]\"\\:, \n\tab1u".to_vec()),
        1 => any::<u8>(),
    ];
    vec(byte, 0..600)
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\n", "\r\n", "\t \n  ", "\n\n\n"])
}

fn message() -> impl Strategy<Value = Message> {
    // Any Unicode, with the characters that matter to the scanner over-represented.
    let text = prop_oneof![any::<String>(), "[{}\\[\\]\"\\\\a-z ]{0,40}",];
    (text.clone(), text).prop_map(|(uid, val)| Message { uid, val })
}

/// How one message is written on the wire.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// Our encoder: compact object plus `\n`.
    Encoder,
    /// Compact, as Go's `json.Marshal` writes it.
    Compact,
    /// With whitespace inside the object, as `json.MarshalIndent` writes it.
    Pretty,
    /// With an unknown field first and the fields reordered.
    Extra,
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        Just(Form::Encoder),
        Just(Form::Compact),
        Just(Form::Pretty),
        Just(Form::Extra),
    ]
}

fn write(m: &Message, form: Form, out: &mut Vec<u8>) {
    match form {
        Form::Encoder => {
            let mut dst = BytesMut::new();
            let mut codec = JsonCodec::<Resp, Message>::new();
            codec.encode(m, &mut dst).expect("a message always encodes");
            out.extend_from_slice(&dst);
        }
        Form::Compact => out.extend(serde_json::to_vec(m).expect("serializes")),
        Form::Pretty => out.extend(serde_json::to_vec_pretty(m).expect("serializes")),
        Form::Extra => {
            let v =
                serde_json::json!({"X": {"k": ["}", "{", "\"", null]}, "Val": m.val, "Uid": m.uid});
            out.extend(serde_json::to_vec(&v).expect("serializes"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_and_splits_never_panic(
        input in jsonish_bytes(),
        cuts in vec(any::<usize>(), 0..20),
        max in prop_oneof![Just(usize::MAX), 0usize..80],
    ) {
        let parts = pieces(&input, &cuts);
        let mut codec = ServerCodec::with_max_frame(max);
        let (_values, _error) = feed(&mut codec, &parts);
        // Calling again after an error must not panic either.
        let mut rest = BytesMut::from(&input[..]);
        let _ = codec.decode(&mut rest);
        let _ = codec.decode_eof(&mut rest);
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_however_split(
        input in jsonish_bytes(),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let (whole, whole_err) = feed(&mut ServerCodec::new(), &[&input]);
        let (split, split_err) = feed(&mut ServerCodec::new(), &pieces(&input, &cuts));
        prop_assert_eq!(whole, split);
        prop_assert_eq!(
            whole_err.map(|e| std::mem::discriminant(&e)),
            split_err.map(|e| std::mem::discriminant(&e))
        );
    }

    #[test]
    fn valid_streams_decode_identically_however_split(
        items in vec((message(), form(), separator()), 0..12),
        cuts in vec(any::<usize>(), 0..40),
        leading in separator(),
    ) {
        let mut wire = leading.as_bytes().to_vec();
        for (m, form, sep) in &items {
            write(m, *form, &mut wire);
            wire.extend_from_slice(sep.as_bytes());
        }
        let expected: Vec<Message> = items.iter().map(|(m, _, _)| m.clone()).collect();

        let (whole, err) = feed(&mut ServerCodec::new(), &[&wire]);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(&whole, &expected);

        let (split, err) = feed(&mut ServerCodec::new(), &pieces(&wire, &cuts));
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(&split, &expected);

        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let (byte_by_byte, err) = feed(&mut ServerCodec::new(), &bytes);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(&byte_by_byte, &expected);
    }

    #[test]
    fn strings_that_are_not_utf8_decode_the_same_however_split(
        vals in vec((vec((0x20u8..=0xff).prop_filter("a plain byte", |b| !matches!(b, b'"' | b'\\')), 0..16), any::<bool>(), separator()), 1..8),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        // Written by hand, as a Go peer may: raw bytes in Val, sometimes after an escape so
        // that serde_json reads the frame.
        let mut wire = Vec::new();
        for (i, (val, escaped, sep)) in vals.iter().enumerate() {
            wire.extend_from_slice(format!(r#"{{"Uid":"{i}","Val":""#).as_bytes());
            if *escaped {
                wire.extend_from_slice(br"\t");
            }
            wire.extend_from_slice(val);
            wire.extend_from_slice(b"\"}");
            wire.extend_from_slice(sep.as_bytes());
        }
        let (whole, err) = feed(&mut ServerCodec::new(), &[&wire]);
        prop_assert!(err.is_none(), "{:?}", err);
        let uids: Vec<String> = (0..vals.len()).map(|i| i.to_string()).collect();
        prop_assert_eq!(whole.iter().map(|m| m.uid.clone()).collect::<Vec<_>>(), uids);
        let (split, err) = feed(&mut ServerCodec::new(), &pieces(&wire, &cuts));
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(&split, &whole);
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let (byte_by_byte, err) = feed(&mut ServerCodec::new(), &bytes);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(&byte_by_byte, &whole);
    }

    #[test]
    fn a_frame_one_byte_over_the_limit_always_fails(
        m in message(),
        cuts in vec(any::<usize>(), 0..10),
    ) {
        let wire = serde_json::to_vec(&m).expect("serializes");
        let (ok, err) = feed(&mut ServerCodec::with_max_frame(wire.len()), &pieces(&wire, &cuts));
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(ok, vec![m]);
        let (none, err) = feed(&mut ServerCodec::with_max_frame(wire.len() - 1), &pieces(&wire, &cuts));
        prop_assert!(none.is_empty());
        prop_assert!(matches!(err, Some(CodecError::FrameTooLong { .. })), "{:?}", err);
    }
}
