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
//! - A [`Conn`] has two tasks: the writer takes every queued request into one write (yielding
//!   once first when other requests are in flight, so callers woken together share it), and
//!   the reader routes responses by `Uid`. Every request ends exactly once, and a connection
//!   that stops fails every pending request at once with the cause.
//! - The server runs a connection's requests concurrently inside the connection's task (no
//!   spawn per request: that cost a scheduler round trip per answer), bounded by
//!   `max_in_flight_per_conn` so a client that floods or never reads stalls only itself; the
//!   connection's writer has a task of its own (measured: sequential round trips ran at half
//!   the rate when it shared the reader's task).
//! - The pool's `check` for a [`JsonManager`] reads the closed flag and does a real round trip
//!   only after the connection has been idle for a while; `is_broken` reads the flag, so a
//!   connection whose server went away is never handed out.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod conn;
pub mod manager;
pub mod server;
pub mod wire;

pub use codec::{CodecError, DEFAULT_MAX_FRAME, JsonCodec, WireDecode, WireEncode};
pub use conn::{CloseCause, Conn, ConnectOptions, Error};
pub use manager::JsonManager;
pub use server::{RunningServer, Server, ServerConfig};
pub use wire::{Message, Resp};
