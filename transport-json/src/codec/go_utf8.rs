//! How Go's `encoding/json` reads a string that is not valid UTF-8, for both decoding paths.
//!
//! Go never refuses a string for its encoding. Each byte that does not begin a well-formed
//! UTF-8 sequence becomes U+FFFD on its own: `"\xe2\x82"`, a `€` cut short, is two of them
//! (where `String::from_utf8_lossy` writes one), an encoded surrogate `"\xed\xa0\x80"` three.
//! A `\u` escape of a UTF-16 surrogate that is not half of a pair becomes U+FFFD too, and the
//! escape after it is read on its own. serde_json refuses both, so the codec's serde path
//! rewrites a refused frame's strings by this rule ([`coerce_strings`]) and parses it again;
//! the plain path, which sees no escapes, reads its strings with [`lossy`]. Checked against
//! Go's decoder in `tests/go_interop.rs`.

/// The contents of a string without escapes, as Go decodes them: each byte that is not part
/// of a well-formed UTF-8 sequence becomes U+FFFD.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        // `invalid()` is one maximal ill-formed subsequence: a byte that cannot begin a
        // sequence, or the beginning of one cut short. Go steps over one byte at a time and
        // every byte after the first is a continuation byte, invalid on its own: one U+FFFD
        // per byte.
        for _ in chunk.invalid() {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    text
}

/// `frame` with its strings rewritten so that serde_json reads them as Go does: each run of
/// bytes inside a string that is not UTF-8 goes through [`lossy`], and each `\u` escape of an
/// unpaired surrogate becomes `\ufffd`. Bytes outside strings are left as they are: there an
/// invalid byte is bad JSON, to Go as to serde_json. `None` when nothing needed rewriting.
pub(crate) fn coerce_strings(frame: &[u8]) -> Option<Vec<u8>> {
    // `frame[..copied]` is in `out`, rewritten; `out` stays `None` until something is.
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut replace = |from: usize, to: usize, with: &[u8]| {
        let out = out.get_or_insert_with(|| Vec::with_capacity(frame.len() + 16));
        out.extend_from_slice(&frame[copied..from]);
        out.extend_from_slice(with);
        copied = to;
    };
    let mut in_string = false;
    let mut at = 0;
    while let Some(&byte) = frame.get(at) {
        if !in_string {
            in_string = byte == b'"';
            at += 1;
            continue;
        }
        match byte {
            b'"' => {
                in_string = false;
                at += 1;
            }
            b'\\' => {
                let (len, unpaired) = escape(frame, at);
                if unpaired {
                    replace(at, at + len, b"\\ufffd");
                }
                at += len;
            }
            0x80.. => {
                // An invalid sequence never takes in an ASCII byte, so a run of non-ASCII
                // bytes can be checked on its own.
                let end = frame[at..]
                    .iter()
                    .position(u8::is_ascii)
                    .map_or(frame.len(), |len| at + len);
                let run = &frame[at..end];
                if std::str::from_utf8(run).is_err() {
                    replace(at, end, lossy(run).as_bytes());
                }
                at = end;
            }
            _ => at += 1,
        }
    }
    let mut out = out?;
    out.extend_from_slice(&frame[copied..]);
    Some(out)
}

/// At a backslash inside a string: how many bytes the escape takes, and whether Go reads it
/// as U+FFFD (a `\u` escape of a surrogate that does not begin a pair). A pair takes 12
/// bytes; a malformed escape is left for the parser to refuse.
fn escape(frame: &[u8], at: usize) -> (usize, bool) {
    match code_unit(frame, at) {
        Some(0xD800..=0xDBFF) if matches!(code_unit(frame, at + 6), Some(0xDC00..=0xDFFF)) => {
            (12, false)
        }
        Some(0xD800..=0xDFFF) => (6, true),
        Some(_) => (6, false),
        None => (2, false),
    }
}

/// The UTF-16 code unit of the `\uXXXX` escape at `at`, if there is one.
fn code_unit(frame: &[u8], at: usize) -> Option<u32> {
    let [b'\\', b'u', digits @ ..] = frame.get(at..at + 6)? else {
        return None;
    };
    digits.iter().try_fold(0, |unit, &digit| {
        Some(unit << 4 | char::from(digit).to_digit(16)?)
    })
}

#[cfg(test)]
mod tests {
    use super::{coerce_strings, lossy};

    #[test]
    fn each_invalid_byte_is_one_replacement_as_in_go() {
        // Each case as Go 1.19's json.Unmarshal decodes it.
        for (bytes, go) in [
            (&b"\xe2\x82"[..], "\u{FFFD}\u{FFFD}"),
            (b"\xe2\x82x", "\u{FFFD}\u{FFFD}x"),
            (b"\xf0\x9f\x98", "\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\xed\xa0\x80", "\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\xc0\x80", "\u{FFFD}\u{FFFD}"),
            (b"\xf4\x90\x80\x80", "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"a\xffb\xfe\xe2\x82\xac", "a\u{FFFD}b\u{FFFD}€"),
            (b"\xef\xbf\xbd", "\u{FFFD}"),
        ] {
            assert_eq!(lossy(bytes), go, "{bytes:?}");
        }
    }

    #[test]
    fn only_strings_are_rewritten() {
        let frame = b"{\"\xff\":\"\\ud800\\\\ud800\\ud83d\\ude00\"}\xff";
        let coerced = coerce_strings(frame).expect("rewritten");
        assert_eq!(
            coerced,
            b"{\"\xef\xbf\xbd\":\"\\ufffd\\\\ud800\\ud83d\\ude00\"}\xff"
        );
        assert_eq!(coerce_strings(b"{\"a\":\"\\ud83d\\ude00\\n\"}\xff"), None);
        assert_eq!(coerce_strings(b"{\"a\":\"\\"), None);
        assert_eq!(
            coerce_strings(b"{\"a\":\"\\ud800"),
            Some(b"{\"a\":\"\\ufffd".to_vec())
        );
    }
}
