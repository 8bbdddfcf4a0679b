//! Inputs the fuzz targets (`fuzz/`, run by `scripts/fuzz`) found the decoders getting wrong,
//! kept as scripted tests so the normal suite guards them without nightly.

use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;
use transport_json::{JsonCodec, Message, Resp, WireDecode};

/// The first value the codec decodes from `bytes`, and what the plain fast path makes of it.
fn decode<T: WireDecode>(bytes: &[u8]) -> (Option<T>, Option<(T, usize)>) {
    let mut buf = BytesMut::from(bytes);
    let codec = JsonCodec::<T, Message>::new().decode_eof(&mut buf);
    (codec.expect("decodes"), T::decode_plain(bytes))
}

/// Go matches a key to a field under Unicode simple case folding, where `ſ` (U+017F, long s)
/// folds to `s` and the Kelvin sign (U+212A) to `k`: Go 1.19's `json.Unmarshal` fills `Ts`
/// from `"Tſ"`. Both decoders read only ASCII case before (wire fuzz target, seed
/// `go-key-case`), so a Go peer's field was dropped.
#[test]
fn a_key_with_long_s_names_its_field_as_in_go() {
    let frame = "{\"Uid\":\"1\",\"Tſ\":\"long s\"}".as_bytes();
    let expected = Resp {
        uid: "1".into(),
        ts: "long s".into(),
        ..Resp::default()
    };
    let (codec, plain) = decode::<Resp>(frame);
    assert_eq!(codec.as_ref(), Some(&expected), "codec");
    assert_eq!(plain, Some((expected.clone(), frame.len())), "plain path");
    // Escaped, the key takes the serde path.
    let (codec, plain) = decode::<Resp>(br#"{"Uid":"1","T\u017f":"long s"}"#);
    assert_eq!(codec, Some(expected), "serde path");
    assert_eq!(plain, None);
}

/// Only letters that fold to the field's: dotless `ı` and dotted `İ` are not `i` to Go
/// (`"Uıd"` and `"Uİd"` leave `Uid` empty), and `ſ` is no other letter than `s`.
#[test]
fn other_non_ascii_letters_name_no_field() {
    for key in ["Uıd", "Uİd", "Uſd", "Tſſ", "ſ", "T"] {
        let frame = format!("{{\"{key}\":\"x\"}}");
        let (codec, plain) = decode::<Resp>(frame.as_bytes());
        assert_eq!(codec, Some(Resp::default()), "codec, key {key}");
        assert_eq!(
            plain.map(|(r, _)| r),
            Some(Resp::default()),
            "plain, key {key}"
        );
    }
}
