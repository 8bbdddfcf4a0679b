//! The JSON stream codec: Go's stream forms, chunking, limits, errors and the encoder's output.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::StreamExt;
use serde::{Deserialize, Deserializer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use transport_json::codec::{CodecError, DEFAULT_MAX_FRAME, JsonCodec};
use transport_json::{Message, Resp, WireDecode};

type ServerCodec = JsonCodec<Message, Resp>;

fn msg(uid: &str, val: &str) -> Message {
    Message {
        uid: uid.into(),
        val: val.into(),
    }
}

/// Feeds `input` to `codec` in chunks of `chunk` bytes, then signals EOF; returns every value.
fn decode_in_chunks(
    codec: &mut ServerCodec,
    input: &[u8],
    chunk: usize,
) -> Result<Vec<Message>, CodecError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(m) = codec.decode(&mut buf)? {
            out.push(m);
        }
    }
    while let Some(m) = codec.decode_eof(&mut buf)? {
        out.push(m);
    }
    Ok(out)
}

fn decode_all(input: &[u8]) -> Result<Vec<Message>, CodecError> {
    decode_in_chunks(&mut ServerCodec::new(), input, input.len())
}

#[test]
fn values_without_separator_decode() {
    let got = decode_all(br#"{"Uid":"1","Val":"a"}{"Uid":"2","Val":"b"}{"Uid":"3","Val":"c"}"#)
        .expect("decodes");
    assert_eq!(got, [msg("1", "a"), msg("2", "b"), msg("3", "c")]);
}

#[test]
fn values_separated_by_whitespace_and_newlines_decode() {
    let input = b" \n\t{\"Uid\":\"1\",\"Val\":\"a\"}\r\n\n  {\n \"Uid\" : \"2\" ,\n \"Val\" : \"b\"\n}\n \t";
    let got = decode_all(input).expect("decodes");
    assert_eq!(got, [msg("1", "a"), msg("2", "b")]);
}

#[test]
fn values_split_at_every_chunk_size_decode_identically() {
    let input = br#"{"Uid":"1","Val":"x{y}\"z"} {"Uid":"2","Val":"[\\"}
{"Uid":"3","Val":"\u00e9\ud83d\ude00"}{"Val":"no uid","Extra":{"a":[1,{"b":"}"}]}}"#;
    let whole = decode_all(input).expect("decodes whole");
    assert_eq!(whole.len(), 4);
    for chunk in 1..input.len() {
        let got = decode_in_chunks(&mut ServerCodec::new(), input, chunk).expect("decodes");
        assert_eq!(got, whole, "chunk size {chunk}");
    }
}

#[test]
fn values_fed_byte_by_byte_decode() {
    let input = br#"{"Uid":"1","Val":"hello"}{"Uid":"2","Val":"world"}"#;
    let got = decode_in_chunks(&mut ServerCodec::new(), input, 1).expect("decodes");
    assert_eq!(got, [msg("1", "hello"), msg("2", "world")]);
}

#[test]
fn unknown_fields_are_ignored() {
    let got = decode_all(
        br#"{"Uid":"1","Extra":{"nested":[1,2,{"x":null}]},"Val":"v","N":3.5e2,"B":true}"#,
    )
    .expect("decodes");
    assert_eq!(got, [msg("1", "v")]);
}

#[test]
fn missing_fields_decode_as_empty_strings() {
    let got = decode_all(br#"{}{"Uid":"1"}{"Val":"v"}"#).expect("decodes");
    assert_eq!(got, [msg("", ""), msg("1", ""), msg("", "v")]);
    let mut codec = JsonCodec::<Resp, Message>::new();
    let mut buf = BytesMut::from(&br#"{"Uid":"7"}"#[..]);
    let resp = codec.decode(&mut buf).expect("decodes").expect("a value");
    assert_eq!(
        resp,
        Resp {
            uid: "7".into(),
            ..Resp::default()
        }
    );
    assert_eq!(resp.err, None);
}

#[test]
fn braces_and_escaped_quotes_inside_strings_do_not_end_a_frame() {
    // Val is: }{"]["\  and the string ends right after an escaped backslash.
    let input = br#"{"Uid":"}{","Val":"}{\"][\"\\"}{"Uid":"2","Val":"\\\"}"}"#;
    let got = decode_all(input).expect("decodes");
    assert_eq!(got, [msg("}{", "}{\"][\"\\"), msg("2", "\\\"}")]);
}

#[test]
fn ten_megabyte_frame_decodes_with_a_raised_max() {
    let val = "v".repeat(10 * 1024 * 1024);
    let input = serde_json::to_vec(&msg("big", &val)).expect("serializes");
    let mut codec = ServerCodec::with_max_frame(11 * 1024 * 1024);
    let got = decode_in_chunks(&mut codec, &input, 64 * 1024).expect("decodes");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uid, "big");
    assert_eq!(got[0].val.len(), val.len());
    // The same frame is over the default limit.
    let err = decode_in_chunks(&mut ServerCodec::new(), &input, 64 * 1024).unwrap_err();
    assert!(
        matches!(err, CodecError::FrameTooLong { max } if max == DEFAULT_MAX_FRAME),
        "{err:?}"
    );
}

#[test]
fn frame_of_exactly_max_bytes_is_accepted_and_one_more_is_not() {
    let frame = br#"{"Uid":"1","Val":"abc"}"#;
    let max = frame.len();
    let got = decode_in_chunks(&mut ServerCodec::with_max_frame(max), frame, 3).expect("decodes");
    assert_eq!(got, [msg("1", "abc")]);
    let longer = br#"{"Uid":"1","Val":"abcd"}"#;
    let err = decode_in_chunks(&mut ServerCodec::with_max_frame(max), longer, 3).unwrap_err();
    assert!(
        matches!(err, CodecError::FrameTooLong { max: m } if m == max),
        "{err:?}"
    );
}

#[test]
fn over_long_frame_is_frame_too_long() {
    let input = serde_json::to_vec(&msg("1", &"x".repeat(2000))).expect("serializes");
    let err =
        decode_in_chunks(&mut ServerCodec::with_max_frame(1000), &input, input.len()).unwrap_err();
    assert!(
        matches!(err, CodecError::FrameTooLong { max: 1000 }),
        "{err:?}"
    );
}

#[test]
fn over_long_frame_arriving_in_pieces_fails_before_it_completes() {
    let max = 1000;
    let mut codec = ServerCodec::with_max_frame(max);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(br#"{"Uid":"1","Val":""#);
    // The frame never ends: the decoder must give up once `max` bytes of it are buffered.
    let mut fed = buf.len();
    let err = loop {
        match codec.decode(&mut buf) {
            Ok(None) => {}
            Ok(Some(m)) => panic!("decoded a frame that never ended: {m:?}"),
            Err(e) => break e,
        }
        assert!(fed <= max + 100, "still buffering after {fed} bytes");
        buf.extend_from_slice(&[b'x'; 100]);
        fed += 100;
    };
    assert!(
        matches!(err, CodecError::FrameTooLong { max: 1000 }),
        "{err:?}"
    );
    assert!(fed >= max, "failed early, after {fed} bytes");
}

/// An endless frame: `{"Val":"` followed by `x` forever. Counts the bytes it hands out.
struct EndlessFrame {
    produced: usize,
}

impl AsyncRead for EndlessFrame {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        const PREFIX: &[u8] = br#"{"Val":""#;
        let n = buf.remaining().min(4096);
        for i in 0..n {
            let at = self.produced + i;
            buf.put_slice(&[*PREFIX.get(at).unwrap_or(&b'x')]);
        }
        self.produced += n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn endless_frame_on_a_stream_fails_without_buffering_unbounded_data() {
    let max = 64 * 1024;
    let mut frames = FramedRead::new(
        EndlessFrame { produced: 0 },
        ServerCodec::with_max_frame(max),
    );
    let first = frames.next().await.expect("an item");
    assert!(
        matches!(first, Err(CodecError::FrameTooLong { .. })),
        "{first:?}"
    );
    let produced = frames.get_ref().produced;
    assert!(
        produced <= 2 * max + 8192,
        "read {produced} bytes for a {max}-byte limit"
    );
    assert!(
        frames.next().await.is_none(),
        "a FramedRead stops after the error"
    );
}

#[test]
fn malformed_json_is_a_json_error_and_the_bad_frame_is_consumed() {
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::from(&br#"{"Uid":"1",}{"Uid":2}{"Uid":"3"]{"Uid":"4"}"#[..]);
    for _ in 0..3 {
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::Json(_)), "{err:?}");
    }
    let next = codec.decode(&mut buf).expect("decodes").expect("a value");
    assert_eq!(next, msg("4", ""));
}

#[test]
fn top_level_values_that_are_not_objects_are_rejected() {
    for input in [
        &b"hello"[..],
        b"42",
        b"[1,2]",
        b"\"s\"",
        b"null",
        b"}",
        b"\x00{}",
    ] {
        let err = decode_all(input).unwrap_err();
        assert!(
            matches!(err, CodecError::NotAnObject { found } if found == input[0]),
            "{:?}: {err:?}",
            String::from_utf8_lossy(input)
        );
    }
    // After a good value, garbage is still refused.
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::from(&b"{\"Uid\":\"1\"} \n xyz"[..]);
    assert_eq!(codec.decode(&mut buf).expect("first"), Some(msg("1", "")));
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, CodecError::NotAnObject { found: b'x' }),
        "{err:?}"
    );
}

/// A [`Message`] decoded by serde_json alone: no fast path.
#[derive(Debug, PartialEq)]
struct BySerde(Message);

impl<'de> Deserialize<'de> for BySerde {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Message::deserialize(deserializer).map(BySerde)
    }
}

impl WireDecode for BySerde {}

/// Decodes `frame` whole and byte by byte, on the plain path (when the frame allows it) and on
/// the serde path; every way must give the one value.
fn decode_every_way(frame: &[u8]) -> Message {
    let whole = decode_all(frame).expect("decodes whole");
    assert_eq!(whole.len(), 1, "one value");
    let byte_by_byte = decode_in_chunks(&mut ServerCodec::new(), frame, 1).expect("decodes");
    assert_eq!(byte_by_byte, whole, "byte by byte");
    for chunk in [frame.len(), 1] {
        let mut codec = JsonCodec::<BySerde, Resp>::new();
        let mut buf = BytesMut::new();
        let mut by_serde = Vec::new();
        for piece in frame.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(BySerde(m)) = codec.decode(&mut buf).expect("serde path decodes") {
                by_serde.push(m);
            }
        }
        assert_eq!(by_serde, whole, "serde path, in chunks of {chunk}");
    }
    whole.into_iter().next().expect("one value")
}

/// Strings that are not valid UTF-8, and what Go 1.19's `json.Unmarshal` makes of them (from
/// a run of Go's decoder): one U+FFFD per bad byte, also in a sequence cut short.
const GO_DECODES: [(&[u8], &str); 9] = [
    (b"\xff\xfe", "\u{FFFD}\u{FFFD}"),
    (b"\x80", "\u{FFFD}"),
    (b"\xe2\x82", "\u{FFFD}\u{FFFD}"),
    (b"\xe2\x82x", "\u{FFFD}\u{FFFD}x"),
    (b"\xf0\x9f\x98", "\u{FFFD}\u{FFFD}\u{FFFD}"),
    (b"\xed\xa0\x80", "\u{FFFD}\u{FFFD}\u{FFFD}"),
    (b"\xc0\x80", "\u{FFFD}\u{FFFD}"),
    (b"\xf4\x90\x80\x80", "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"),
    (
        b"ok \xe2\x82\xac \xe2\x82 \xf0\x9f\x98\x80",
        "ok \u{20AC} \u{FFFD}\u{FFFD} \u{1F600}",
    ),
];

#[test]
fn invalid_utf8_inside_a_string_is_replaced_byte_by_byte_as_go_does() {
    for (raw, go) in GO_DECODES {
        let case = String::from_utf8_lossy(raw);
        let frame = |prefix: &[u8], suffix: &[u8]| [prefix, raw, suffix].concat();
        // Plain: the fast path.
        let plain = frame(b"{\"Uid\":\"1\",\"Val\":\"", b"\"}");
        assert_eq!(decode_every_way(&plain), msg("1", go), "{case:?}");
        // With an escape: serde_json.
        let escaped = frame(b"{\"Uid\":\"1\",\"Val\":\"\\t", b"\"}");
        assert_eq!(
            decode_every_way(&escaped),
            msg("1", &format!("\t{go}")),
            "{case:?}"
        );
        // In a key, which then names no field, and in an unknown field's value.
        let key = frame(b"{\"Uid\":\"1\",\"Val", b"\":\"k\",\"Val\":\"v\"}");
        assert_eq!(decode_every_way(&key), msg("1", "v"), "{case:?}");
        let unknown = frame(b"{\"Uid\":\"1\",\"X\":\"", b"\",\"Val\":\"v\"}");
        assert_eq!(decode_every_way(&unknown), msg("1", "v"), "{case:?}");
    }
}

#[test]
fn unpaired_surrogate_escapes_are_replaced_as_go_does() {
    // What Go 1.19's `json.Unmarshal` makes of each (from a run of Go's decoder).
    for (escaped, go) in [
        (r#"\ud800"#, "\u{FFFD}"),
        (r#"\ud800x"#, "\u{FFFD}x"),
        (r#"\udc00"#, "\u{FFFD}"),
        (r#"\ud800\u0041"#, "\u{FFFD}A"),
        (r#"\ud800\ud800\udc00"#, "\u{FFFD}\u{10000}"),
        (r#"\udc00\ud800"#, "\u{FFFD}\u{FFFD}"),
        (r#"\ud800\\u"#, "\u{FFFD}\\u"),
        (r#"\ud83d\ude00"#, "\u{1F600}"),
        (r#"\uDBFF\uDFFF"#, "\u{10FFFF}"),
    ] {
        let frame = format!(r#"{{"Uid":"1","Val":"{escaped}","X":"{escaped}"}}"#);
        assert_eq!(
            decode_every_way(frame.as_bytes()),
            msg("1", go),
            "{escaped}"
        );
    }
}

#[test]
fn invalid_utf8_outside_strings_is_still_a_json_error() {
    for bad in [
        &b"{\xff\"Uid\":\"1\"}"[..],
        b"{\"Uid\":\"1\"\xe2\x82}",
        b"{\"Uid\":\xff}",
        b"{\"Uid\":\"1\",\"X\":[\"\xff\",\xff]}",
    ] {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::from(bad);
        buf.extend_from_slice(br#"{"Uid":"next"}"#);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, CodecError::Json(_)),
            "{:?}: {err:?}",
            String::from_utf8_lossy(bad)
        );
        // The bad frame is consumed, as any other bad JSON.
        assert_eq!(
            codec.decode(&mut buf).expect("decodes"),
            Some(msg("next", ""))
        );
    }
}

#[test]
fn truncated_frame_at_eof_is_an_error() {
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::from(&br#"{"Uid":"1","Val":"a"} {"Uid":"2","Va"#[..]);
    assert_eq!(
        codec.decode_eof(&mut buf).expect("first"),
        Some(msg("1", "a"))
    );
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(
        matches!(err, CodecError::Truncated { buffered: 14 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn truncated_frame_on_a_stream_is_an_error() {
    let wire: &[u8] = br#"{"Uid":"1","Val":"a"}{"Uid":"2""#;
    let mut frames = FramedRead::new(wire, ServerCodec::new());
    assert_eq!(
        frames.next().await.expect("item").expect("ok"),
        msg("1", "a")
    );
    let err = frames.next().await.expect("item").unwrap_err();
    assert!(matches!(err, CodecError::Truncated { .. }), "{err:?}");
}

#[test]
fn only_whitespace_at_eof_is_a_clean_end() {
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::from(&b"{\"Uid\":\"1\"}\n \r\n\t "[..]);
    assert_eq!(
        codec.decode_eof(&mut buf).expect("first"),
        Some(msg("1", ""))
    );
    assert_eq!(codec.decode_eof(&mut buf).expect("clean end"), None);
    assert!(buf.is_empty());
    assert_eq!(codec.decode_eof(&mut BytesMut::new()).expect("empty"), None);
}

#[test]
fn encoder_writes_one_object_and_a_newline() {
    let mut codec = JsonCodec::<Resp, Message>::new();
    let mut dst = BytesMut::new();
    codec.encode(msg("1", "hello"), &mut dst).expect("encodes");
    codec
        .encode(&msg("2", "a\"b\n"), &mut dst)
        .expect("encodes a reference");
    assert_eq!(
        &dst[..],
        &b"{\"Uid\":\"1\",\"Val\":\"hello\"}\n{\"Uid\":\"2\",\"Val\":\"a\\\"b\\n\"}\n"[..]
    );
}

#[test]
fn encoder_omits_err_when_absent_and_writes_it_when_set() {
    let mut codec = ServerCodec::new();
    let mut dst = BytesMut::new();
    let mut resp = Resp {
        uid: "".into(),
        val: "".into(),
        ts: "2024-01-01T00:00:00.000000000Z".into(),
        err: None,
    };
    codec.encode(resp.clone(), &mut dst).expect("encodes");
    resp.err = Some("missing Uid".into());
    codec.encode(resp, &mut dst).expect("encodes");
    assert_eq!(
        std::str::from_utf8(&dst).expect("utf-8"),
        "{\"Uid\":\"\",\"Val\":\"\",\"Ts\":\"2024-01-01T00:00:00.000000000Z\"}\n\
         {\"Uid\":\"\",\"Val\":\"\",\"Ts\":\"2024-01-01T00:00:00.000000000Z\",\"Err\":\"missing Uid\"}\n"
    );
}

#[test]
fn go_encoding_forms_round_trip() {
    // What Go's json.Marshal writes for the request and response structs.
    let go_request = br#"{"Uid":"1","Val":"hello"}"#;
    let go_response =
        br#"{"Uid":"1","Val":"server: hello, hello","Ts":"2024-05-01T12:34:56.123456789Z"}"#;

    let request = decode_all(go_request).expect("decodes");
    assert_eq!(request, [msg("1", "hello")]);
    let mut client = JsonCodec::<Resp, Message>::new();
    let mut dst = BytesMut::new();
    client.encode(&request[0], &mut dst).expect("encodes");
    assert_eq!(&dst[..dst.len() - 1], &go_request[..]);
    assert_eq!(dst.last(), Some(&b'\n'));

    let mut buf = BytesMut::from(&go_response[..]);
    let response = client.decode(&mut buf).expect("decodes").expect("a value");
    assert_eq!(response.val, "server: hello, hello");
    assert_eq!(response.ts, "2024-05-01T12:34:56.123456789Z");
    let mut server = ServerCodec::new();
    let mut dst = BytesMut::new();
    server.encode(&response, &mut dst).expect("encodes");
    assert_eq!(&dst[..], [&go_response[..], b"\n"].concat());

    // Go escapes <, > and & by default and writes non-ASCII as UTF-8 or \u escapes.
    let got =
        decode_all(br#"{"Uid":"2","Val":"a\u003cb\u003e\u0026 \u00e9 \ud83d\ude00 caf\u00e9"}"#)
            .expect("decodes");
    assert_eq!(got, [msg("2", "a<b>& é 😀 café")]);
}

#[test]
fn scanning_is_linear_in_a_frame_fed_in_small_chunks() {
    let input = serde_json::to_vec(&msg("big", &"a{\\\"}".repeat(4 * 1024 * 1024 / 6)))
        .expect("serializes");
    let mut codec = ServerCodec::with_max_frame(8 * 1024 * 1024);
    let got = decode_in_chunks(&mut codec, &input, 4096).expect("decodes");
    assert_eq!(got.len(), 1);
    // A decoder that rescans from the frame's start on every call would look at ~1000x more.
    let scanned = codec.scanned_bytes();
    assert_eq!(
        scanned,
        input.len() as u64,
        "scanned {scanned} for {} bytes",
        input.len()
    );
}

#[test]
fn whitespace_between_frames_is_discarded_as_it_arrives() {
    let mut codec = ServerCodec::with_max_frame(16);
    let mut buf = BytesMut::new();
    for _ in 0..100 {
        buf.extend_from_slice(&[b' '; 1000]);
        assert_eq!(codec.decode(&mut buf).expect("whitespace is fine"), None);
        assert!(buf.is_empty(), "whitespace is not buffered");
    }
    buf.extend_from_slice(b"\n{\"Uid\":\"1\"}");
    assert_eq!(codec.decode(&mut buf).expect("decodes"), Some(msg("1", "")));
}

#[test]
fn codec_reports_its_limit_and_is_send_and_sync() {
    fn send_sync<T: Send + Sync + Clone + std::fmt::Debug + Default>() {}
    send_sync::<ServerCodec>();
    assert_eq!(ServerCodec::new().max_frame(), DEFAULT_MAX_FRAME);
    assert_eq!(ServerCodec::default().max_frame(), 1024 * 1024);
    assert_eq!(ServerCodec::with_max_frame(77).max_frame(), 77);
}
