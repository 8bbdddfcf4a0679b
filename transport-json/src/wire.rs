//! The wire types: what a request and a response look like as JSON.
//!
//! Field names are exactly Go's default encoding of exported fields (`Uid`, `Val`, `Ts`); a
//! missing field decodes as the empty string and unknown fields are ignored, as Go does.

use serde::{Deserialize, Serialize};

/// A request: `{"Uid":"..","Val":".."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Routes the response back to its caller; unique among the requests in flight on one
    /// connection.
    #[serde(rename = "Uid", default)]
    pub uid: String,
    /// The payload.
    #[serde(rename = "Val", default)]
    pub val: String,
}

/// A response: `{"Uid":"..","Val":"..","Ts":".."}`, with `"Err"` when the server rejected
/// the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resp {
    /// The `Uid` of the request this answers.
    #[serde(rename = "Uid", default)]
    pub uid: String,
    /// The payload.
    #[serde(rename = "Val", default)]
    pub val: String,
    /// When the server answered: UTC, RFC 3339 with nanoseconds.
    #[serde(rename = "Ts", default)]
    pub ts: String,
    /// Why the server rejected the request; absent on success (Go peers ignore it).
    #[serde(rename = "Err", default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}
