//! A uid-multiplexed JSON-over-TCP transport, compatible with Go's `encoding/json` stream.
//!
//! - [`wire`]: the request and response types.
//! - [`codec`]: a `tokio_util::codec` framing for a stream of JSON values.
//! - [`conn`]: [`Conn`], one TCP connection many tasks pipeline requests through.
//! - [`server`]: an echo server for the protocol, with a pluggable handler.
//! - [`manager`]: [`JsonManager`], the `pool::Manager` that pools [`Conn`]s.
//!
//! # Decisions
//! - The wire is Go's `encoding/json` stream: we write one object and `\n`, and read values
//!   with or without separators; decoding follows Go's rules (keys match ignoring case, `null`
//!   and missing fields are empty, unknown keys are ignored). A frame longer than the maximum
//!   (1 MiB by default) or bytes that are not JSON close that one connection: framing is lost.
//!   [`Message`] and [`Resp`] frames of plain strings (no escapes) are decoded and encoded by
//!   hand, byte for byte as serde_json does (property-tested against it); anything else goes
//!   through serde_json (measured: the response decode was most of a client's cost).
//! - A [`Conn`] has two tasks: the writer takes every queued request into one write (yielding
//!   once first when other requests are in flight, so callers woken together share it), and
//!   the reader routes each read's responses by `Uid` and sweeps the request timeout (one
//!   sweep per connection, not a timer per request). Every request ends exactly once, and a
//!   connection that stops fails every pending request at once with the cause.
//! - The server serves each connection in one task with one poll loop: it decodes every
//!   buffered request, polls each handler once at once (only a pending one joins a
//!   `FuturesUnordered`), encodes the answers into one buffer and writes it once per batch,
//!   bounded by `max_in_flight_per_conn` and a 64 KiB output cap, so a client that floods or
//!   never reads stalls only itself (measured: a spawn per request, a separate writer task or
//!   a `select!` join of reader and writer each cost 20-50 % against the raw server).
//! - The pool's `check` for a [`JsonManager`] reads the closed flag and does a real round trip
//!   only after the connection has been idle for a while; `is_broken` reads the flag, so a
//!   connection whose server went away is never handed out.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod conn;
mod decimal;
pub mod manager;
pub mod server;
pub mod wire;

pub use codec::{CodecError, DEFAULT_MAX_FRAME, JsonCodec, WireDecode, WireEncode};
pub use conn::{CloseCause, Conn, ConnectOptions, Error};
pub use manager::JsonManager;
pub use server::{RunningServer, Server, ServerConfig};
pub use wire::{Message, Resp};
