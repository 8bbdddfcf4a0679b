//! The wire types: what a request and a response look like as JSON.
//!
//! Field names are exactly Go's default encoding of exported fields (`Uid`, `Val`, `Ts`).
//! Decoding follows Go's `encoding/json` rules for a struct of strings: a key matches its field
//! ignoring case (`"uid"` fills `Uid`; as in Go, `ſ` matches `s`, so `"Tſ"` fills `Ts`), a missing field or a `null` decodes as the empty
//! string, unknown keys are ignored, and when a key repeats the last value wins.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

pub(crate) mod plain;

/// A request: `{"Uid":"..","Val":".."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Routes the response back to its caller; unique among the requests in flight on one
    /// connection.
    #[serde(rename = "Uid")]
    pub uid: String,
    /// The payload.
    #[serde(rename = "Val")]
    pub val: String,
}

/// A response: `{"Uid":"..","Val":"..","Ts":".."}`, with `"Err"` when the server rejected
/// the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resp {
    /// The `Uid` of the request this answers.
    #[serde(rename = "Uid")]
    pub uid: String,
    /// The payload.
    #[serde(rename = "Val")]
    pub val: String,
    /// When the server answered: UTC, RFC 3339 with nanoseconds.
    #[serde(rename = "Ts")]
    pub ts: String,
    /// Why the server rejected the request; absent on success (Go peers ignore it).
    #[serde(rename = "Err", skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}

/// The fields of a [`Message`] in wire order, as both decoders look for them.
const MESSAGE_FIELDS: [&str; 2] = ["Uid", "Val"];
/// The fields of a [`Resp`] in wire order.
const RESP_FIELDS: [&str; 4] = ["Uid", "Val", "Ts", "Err"];

impl Message {
    /// The message from its fields as decoded (in [`MESSAGE_FIELDS`] order): a field never
    /// set is empty.
    fn from_fields([uid, val]: [Option<String>; 2]) -> Message {
        Message {
            uid: uid.unwrap_or_default(),
            val: val.unwrap_or_default(),
        }
    }
}

impl Resp {
    /// The response from its fields as decoded (in [`RESP_FIELDS`] order): a string field
    /// never set is empty, `Err` stays absent.
    fn from_fields([uid, val, ts, err]: [Option<String>; 4]) -> Resp {
        Resp {
            uid: uid.unwrap_or_default(),
            val: val.unwrap_or_default(),
            ts: ts.unwrap_or_default(),
            err,
        }
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(GoStruct {
                fields: MESSAGE_FIELDS,
            })
            .map(Message::from_fields)
    }
}

impl<'de> Deserialize<'de> for Resp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(GoStruct {
                fields: RESP_FIELDS,
            })
            .map(Resp::from_fields)
    }
}

/// Which of `fields` a key names, by Go's rule: an exact match first, then any match under
/// Unicode simple case folding ([`folds_to`]).
fn field_index(fields: &[&'static str], key: &[u8]) -> Option<usize> {
    fields
        .iter()
        .position(|name| name.as_bytes() == key)
        .or_else(|| fields.iter().position(|name| folds_to(name, key)))
}

/// Whether `key` equals the ASCII field name `name` under Unicode simple case folding, as Go's
/// `encoding/json` matches keys: ASCII case, and the only two non-ASCII letters that fold to
/// ASCII ones, `ſ` (U+017F) to `s` and the Kelvin sign (U+212A) to `k`. Both are whole UTF-8
/// sequences whose first byte is never a continuation byte, so matching raw bytes is the
/// same as matching the key Go decodes.
fn folds_to(name: &str, key: &[u8]) -> bool {
    let mut key = key;
    for &letter in name.as_bytes() {
        let special: &[u8] = match letter.to_ascii_lowercase() {
            b's' => "\u{17F}".as_bytes(),
            b'k' => "\u{212A}".as_bytes(),
            _ => b"",
        };
        key = match key {
            [first, rest @ ..] if first.eq_ignore_ascii_case(&letter) => rest,
            _ if !special.is_empty() && key.starts_with(special) => &key[special.len()..],
            _ => return false,
        };
    }
    key.is_empty()
}

/// Reads a JSON object into `N` string fields by Go's rules; `None` for a field never set.
struct GoStruct<const N: usize> {
    fields: [&'static str; N],
}

impl<'de, const N: usize> Visitor<'de> for GoStruct<N> {
    type Value = [Option<String>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object with string fields {:?}", self.fields)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
        while let Some(field) = map.next_key_seed(FieldName {
            fields: &self.fields,
        })? {
            match field {
                // Go leaves a field as it was on `null`.
                Some(at) => {
                    if let Some(value) = map.next_value::<Option<String>>()? {
                        values[at] = Some(value);
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

/// Finds which field a key names, by Go's case folding, without allocating the key.
struct FieldName<'a> {
    fields: &'a [&'static str],
}

impl<'de> DeserializeSeed<'de> for FieldName<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldName<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(field_index(self.fields, key.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> Message {
        serde_json::from_str(json).expect("decodes")
    }

    #[test]
    fn keys_match_ignoring_case_as_go_does() {
        assert_eq!(
            message(r#"{"uid":"1","VAL":"x"}"#),
            Message {
                uid: "1".into(),
                val: "x".into()
            }
        );
    }

    #[test]
    fn null_and_missing_fields_are_empty() {
        assert_eq!(message(r#"{"Uid":null}"#), Message::default());
        let resp: Resp = serde_json::from_str(r#"{"Uid":"7","Err":null}"#).expect("decodes");
        assert_eq!(
            resp,
            Resp {
                uid: "7".into(),
                ..Resp::default()
            }
        );
    }

    #[test]
    fn unknown_keys_are_ignored_and_the_last_duplicate_wins() {
        let m = message(r#"{"Uid":"1","Extra":{"a":[1,2,{"b":null}]},"Uid":"2","Val":"v"}"#);
        assert_eq!(
            m,
            Message {
                uid: "2".into(),
                val: "v".into()
            }
        );
    }

    #[test]
    fn a_non_string_field_is_an_error() {
        assert!(serde_json::from_str::<Message>(r#"{"Uid":5}"#).is_err());
        assert!(serde_json::from_str::<Message>(r#"[]"#).is_err());
    }

    #[test]
    fn encodes_as_go_marshals() {
        let m = Message {
            uid: "1".into(),
            val: "hello".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).expect("encodes"),
            r#"{"Uid":"1","Val":"hello"}"#
        );
        let r = Resp {
            uid: "1".into(),
            val: "v".into(),
            ts: "t".into(),
            err: None,
        };
        assert_eq!(
            serde_json::to_string(&r).expect("encodes"),
            r#"{"Uid":"1","Val":"v","Ts":"t"}"#
        );
    }
}
