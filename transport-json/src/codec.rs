//! A [`Decoder`] and [`Encoder`] for a stream of JSON objects, as Go's `encoding/json` reads
//! and writes them.
//!
//! [`JsonCodec<In, Out>`] decodes a byte stream into values of type `In` and encodes values of
//! type `Out` as one JSON object followed by `\n`. The decoder accepts objects with or without
//! whitespace between them: a Go client that writes `w.Write(json.Marshal(m))` in a loop sends
//! `{..}{..}` with no separator at all, which a line-based codec such as `LinesCodec` cannot
//! read.
//!
//! ```
//! use futures::StreamExt;
//! use tokio_util::codec::FramedRead;
//! use transport_json::codec::JsonCodec;
//! use transport_json::{Message, Resp};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), transport_json::codec::CodecError> {
//! // Two objects back to back, then one after a newline with a field we do not know.
//! let wire: &[u8] = b"{\"Uid\":\"1\",\"Val\":\"a\"}{\"Uid\":\"2\",\"Val\":\"b\"}\n{\"Uid\":\"3\",\"X\":[1]}";
//! let mut frames = FramedRead::new(wire, JsonCodec::<Message, Resp>::new());
//!
//! let mut uids = Vec::new();
//! while let Some(message) = frames.next().await {
//!     uids.push(message?.uid);
//! }
//! assert_eq!(uids, ["1", "2", "3"]);
//! # Ok(())
//! # }
//! ```
//!
//! # How it frames
//!
//! At the start of a frame the decoder first tries the type's own fast path
//! ([`WireDecode::decode_plain`]: for [`Message`](crate::Message) and
//! [`Resp`](crate::Resp), an object of plain string fields, with no escapes, as every peer
//! here and Go write them). Otherwise it parses the buffered bytes with serde_json: when the
//! whole frame is there (the common case: a read brings many frames), that one parse decodes
//! it and finds where it ends. When it is not (the frame is cut by the end of the buffer, or
//! is not valid JSON), a small scanner takes over: it tracks the nesting depth of `{`/`[`,
//! whether it is inside a string, and whether the previous byte was a backslash, so braces
//! and escaped quotes inside strings do not confuse it. Its state survives between calls to
//! [`decode`](Decoder::decode): when a large frame arrives in many reads, each byte is
//! scanned once, not once per read (the direct parse is tried once per frame, at its start).
//! When the scanner has delimited a complete top-level object, the decoder hands exactly that
//! slice to [`serde_json::from_slice`]; an invalid frame is thus consumed whole before its
//! error is reported.
//!
//! Only objects are accepted at top level. Whitespace between objects is skipped and does not
//! count towards any frame.
//!
//! # Strings that are not UTF-8
//!
//! Inside a string, bytes that are not valid UTF-8 are read as Go's `encoding/json` reads
//! them, not refused: each such byte becomes U+FFFD (so `"\xe2\x82"`, a `€` cut short, is two
//! U+FFFD, not the one `String::from_utf8_lossy` would write), and a `\u` escape of a UTF-16
//! surrogate that is not half of a pair becomes U+FFFD too. Go is the protocol's reference and
//! its peers send such strings (`string` in Go is any bytes); refusing them closed the
//! connection over one bad byte. Outside strings an invalid byte is still bad JSON. Both paths
//! apply the rule: the plain path as it copies a string, the serde path by reading a frame
//! that serde_json refused again with its strings rewritten, so a valid frame costs nothing
//! more.
//!
//! # Limits
//!
//! A frame is the bytes from an object's `{` to its matching `}`. It may be at most
//! [`max_frame`](JsonCodec::max_frame) bytes long ([`DEFAULT_MAX_FRAME`], 1 MiB, unless set
//! with [`JsonCodec::with_max_frame`]). A longer frame fails with
//! [`CodecError::FrameTooLong`] as soon as `max_frame` bytes of it are buffered, before it
//! completes, so a peer cannot make the reader buffer an unbounded amount of data.
//!
//! The encoder does not enforce the limit: what the peer accepts is the peer's setting.
//!
//! # Errors
//!
//! [`CodecError`] says what went wrong. After [`FrameTooLong`](CodecError::FrameTooLong) or
//! [`NotAnObject`](CodecError::NotAnObject) the framing of the stream is lost: the decoder
//! keeps returning the same error and the connection should be closed (a `FramedRead` stops
//! after any error anyway). After [`Json`](CodecError::Json) the bad frame has been consumed.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub(crate) mod go_utf8;

/// The default maximum frame length: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Decodes a stream of JSON values into `In` and encodes `Out` as one JSON object + `'\n'`.
///
/// See the [module documentation](self) for the framing rules, the limit and the errors.
pub struct JsonCodec<In, Out> {
    /// The longest frame the decoder accepts, in bytes.
    max: usize,
    /// Where the scanner stopped inside the current frame.
    scan: Scan,
    /// Total bytes the scanner has looked at, for tests that prove scanning is linear.
    scanned: u64,
    /// `fn() -> ..` keeps the codec `Send + Sync` whatever `In` and `Out` are.
    _types: PhantomData<fn(Out) -> In>,
}

/// The scanner's state between two calls to `decode`.
///
/// Invariant: when `started` is false the other fields are at their defaults; when it is true
/// the buffer starts with the frame's `{`, `pos` (>= 1) bytes of it have been scanned, and
/// `depth` >= 1.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    started: bool,
    pos: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
}

/// Why the codec failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame was longer than the maximum; the stream's framing is lost.
    #[error("JSON frame longer than the maximum of {max} bytes")]
    FrameTooLong {
        /// The maximum frame length in force.
        max: usize,
    },
    /// A top-level value did not start with `{` (garbage, or a JSON value that is not an
    /// object); the stream's framing is lost.
    #[error("expected a JSON object ('{{') at top level, found byte 0x{found:02x}")]
    NotAnObject {
        /// The first byte of the value.
        found: u8,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a JSON frame ({buffered} bytes buffered)")]
    Truncated {
        /// How many bytes of the incomplete frame were buffered.
        buffered: usize,
    },
    /// A delimited frame was not valid JSON, or did not match the expected type.
    #[error("invalid JSON frame")]
    Json(#[source] serde_json::Error),
    /// A value could not be serialized.
    #[error("could not encode a value as JSON")]
    Encode(#[source] serde_json::Error),
    /// Reading or writing the underlying stream failed.
    #[error("I/O error on the JSON stream")]
    Io(#[from] io::Error),
}

impl<In, Out> JsonCodec<In, Out> {
    /// A codec with the [`DEFAULT_MAX_FRAME`] limit.
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A codec that accepts frames of at most `max` bytes.
    pub fn with_max_frame(max: usize) -> Self {
        Self {
            max,
            scan: Scan::default(),
            scanned: 0,
            _types: PhantomData,
        }
    }

    /// The longest frame the decoder accepts, in bytes.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// The total number of bytes the scanner has examined (whitespace included; frames
    /// decoded by the direct parse are not scanned). Exposed so tests can check that
    /// scanning is linear in the input.
    #[doc(hidden)]
    pub fn scanned_bytes(&self) -> u64 {
        self.scanned
    }

    /// Scans `bytes[self.scan.pos..]` for the end of the current frame. Returns the frame's
    /// length when its closing `}` was found.
    fn scan_frame(&mut self, bytes: &[u8]) -> Option<usize> {
        let s = &mut self.scan;
        let from = s.pos;
        let mut i = s.pos;
        let mut end = None;
        while i < bytes.len() {
            if s.in_string {
                if s.escape {
                    s.escape = false;
                    i += 1;
                    continue;
                }
                // Inside a string only `"` and `\` matter: jump to the next one.
                match bytes[i..].iter().position(|&b| b == b'"' || b == b'\\') {
                    None => i = bytes.len(),
                    Some(offset) => {
                        i += offset;
                        if bytes[i] == b'"' {
                            s.in_string = false;
                        } else {
                            s.escape = true;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match bytes[i] {
                b'"' => s.in_string = true,
                b'{' | b'[' => s.depth += 1,
                b'}' | b']' => {
                    // depth >= 1 here (see `Scan`); a mismatched `]` still closes a level and
                    // serde_json reports the frame as invalid.
                    s.depth -= 1;
                    if s.depth == 0 {
                        i += 1;
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.scanned += (i - from) as u64;
        s.pos = i;
        end
    }
}

impl<In, Out> Default for JsonCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, Out> Clone for JsonCodec<In, Out> {
    fn clone(&self) -> Self {
        Self {
            max: self.max,
            scan: self.scan,
            scanned: self.scanned,
            _types: PhantomData,
        }
    }
}

impl<In, Out> fmt::Debug for JsonCodec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonCodec")
            .field("max_frame", &self.max)
            .field("scan", &self.scan)
            .finish()
    }
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// A type [`JsonCodec`] decodes frames into. [`Message`](crate::Message) and
/// [`Resp`](crate::Resp) implement it with a fast path for their plain form; any other
/// `DeserializeOwned` type needs only an empty `impl WireDecode for MyType {}`.
pub trait WireDecode: DeserializeOwned {
    /// Decodes the frame at the start of `bytes` (which starts with `{`) without serde, when
    /// it has a plain form the type knows; returns the value and the frame's length in
    /// bytes. Returns `None` (the default) to leave the frame to serde_json. When it returns
    /// a value, it must be exactly what the codec's serde path decodes from that frame:
    /// serde_json, with strings that are not valid UTF-8 read as Go reads them (see
    /// [Strings that are not UTF-8](self#strings-that-are-not-utf-8)).
    fn decode_plain(bytes: &[u8]) -> Option<(Self, usize)> {
        let _ = bytes;
        None
    }
}

impl<In: WireDecode, Out> Decoder for JsonCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<In>, CodecError> {
        if !self.scan.started {
            let blank = buf
                .iter()
                .position(|&b| !is_json_whitespace(b))
                .unwrap_or(buf.len());
            self.scanned += blank as u64;
            buf.advance(blank);
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'{' {
                return Err(CodecError::NotAnObject { found: first });
            }
            // The common case, a whole frame already buffered, costs one parse: serde_json
            // finds the frame's end as it goes. Anything else (an incomplete frame, bad
            // JSON) takes the scanner below, which resumes across calls, so a frame that
            // arrives in pieces is parsed in full only once, and a bad one is consumed.
            let limit = buf.len().min(self.max);
            if let Some((item, len)) = In::decode_plain(&buf[..limit]) {
                buf.advance(len);
                return Ok(Some(item));
            }
            let mut values = serde_json::Deserializer::from_slice(&buf[..limit]).into_iter();
            if let Some(Ok(item)) = values.next() {
                let len = values.byte_offset();
                buf.advance(len);
                return Ok(Some(item));
            }
            self.scanned += 1;
            self.scan = Scan {
                started: true,
                pos: 1,
                depth: 1,
                in_string: false,
                escape: false,
            };
        }
        // Never look further than `max` bytes into a frame: what lies beyond cannot belong
        // to an acceptable frame.
        let limit = buf.len().min(self.max);
        match self.scan_frame(&buf[..limit]) {
            Some(len) => {
                let parsed = parse_frame(&buf[..len]);
                buf.advance(len);
                self.scan = Scan::default();
                parsed.map(Some)
            }
            None if self.scan.pos >= self.max => Err(CodecError::FrameTooLong { max: self.max }),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            // `decode` skipped any whitespace, so what is left is part of a frame.
            None if buf.is_empty() => Ok(None),
            None => Err(CodecError::Truncated {
                buffered: buf.len(),
            }),
        }
    }
}

/// Parses one delimited frame. A frame serde_json refuses is parsed again with its strings
/// read as Go reads them ([`go_utf8::coerce_strings`]), when that changes anything: valid
/// frames never pay for the rule. The error is then the second parse's.
fn parse_frame<In: DeserializeOwned>(frame: &[u8]) -> Result<In, CodecError> {
    serde_json::from_slice(frame).or_else(|error| match go_utf8::coerce_strings(frame) {
        Some(coerced) => serde_json::from_slice(&coerced).map_err(CodecError::Json),
        None => Err(CodecError::Json(error)),
    })
}

/// A type [`JsonCodec`] encodes. [`Message`](crate::Message) and [`Resp`](crate::Resp)
/// implement it with a fast path for values whose strings need no escaping; any other
/// `Serialize` type needs only an empty `impl WireEncode for MyType {}`.
pub trait WireEncode: Serialize {
    /// Appends the value's JSON to `dst` without serde when it can, exactly as serde_json
    /// would write it, and returns true; returns false (the default), having written
    /// nothing, to leave it to serde_json.
    fn encode_plain(&self, dst: &mut BytesMut) -> bool {
        let _ = dst;
        false
    }
}

impl<In, Out: WireEncode> JsonCodec<In, Out> {
    fn encode_ref(&mut self, item: &Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        if item.encode_plain(dst) {
            dst.put_u8(b'\n');
            return Ok(());
        }
        let start = dst.len();
        if let Err(e) = serde_json::to_writer(BufMut::writer(&mut *dst), item) {
            dst.truncate(start);
            return Err(CodecError::Encode(e));
        }
        dst.put_u8(b'\n');
        Ok(())
    }
}

impl<In, Out: WireEncode> Encoder<Out> for JsonCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_ref(&item, dst)
    }
}

impl<In, Out: WireEncode> Encoder<&Out> for JsonCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: &Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_ref(item, dst)
    }
}
