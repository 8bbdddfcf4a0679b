//! The wire decoders against the oracle (serde_json with Go's rules, see the crate docs): the
//! fast plain-frame decoder, when it decodes, gives the oracle's value and length; the codec
//! (plain path or serde path) decodes the first frame of the input exactly when the oracle
//! does, to the same value; and what it decodes encodes as serde_json writes it and decodes
//! back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use transport_json::{JsonCodec, Message, Resp, WireEncode};
use transport_json_fuzz::{Oracle, Wire, oracle};

fuzz_target!(|data: &[u8]| {
    check::<Message>(data);
    check::<Resp>(data);
});

fn check<T: Wire + WireEncode>(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let expected = oracle::<T>(data);
    if let Some((value, len)) = T::decode_plain(data) {
        assert_eq!(
            Oracle::Value(value, len),
            expected,
            "plain path, input {input:?}"
        );
    }
    let mut buf = BytesMut::from(data);
    let got = match JsonCodec::<T, T>::new().decode_eof(&mut buf) {
        Ok(None) => Oracle::Empty,
        Ok(Some(value)) => Oracle::Value(value, data.len() - buf.len()),
        Err(_) => Oracle::Refused,
    };
    assert_eq!(got, expected, "codec, input {input:?}");
    if let Oracle::Value(value, _) = got {
        let mut encoded = BytesMut::new();
        JsonCodec::<T, T>::new()
            .encode(&value, &mut encoded)
            .expect("a wire value encodes");
        let mut serde = serde_json::to_vec(&value).expect("serde_json encodes it");
        serde.push(b'\n');
        assert_eq!(&encoded[..], &serde[..], "encoding {value:?}");
        let back = JsonCodec::<T, T>::new().decode_eof(&mut encoded);
        assert_eq!(back.ok().flatten(), Some(value), "decoding back");
    }
}
