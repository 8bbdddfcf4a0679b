//! A uid-multiplexed JSON-over-TCP transport, compatible with Go's `encoding/json` stream.
//!
//! - [`wire`]: the request and response types.
//! - [`codec`]: a `tokio_util::codec` framing for a stream of JSON values.
//! - [`conn`]: [`Conn`], one TCP connection many tasks pipeline requests through.
//! - [`server`]: an echo server for the protocol, with a pluggable handler.
//! - [`manager`]: [`JsonManager`], the `pool::Manager` that pools [`Conn`]s.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod conn;
pub mod manager;
pub mod server;
pub mod wire;

pub use codec::{CodecError, DEFAULT_MAX_FRAME, JsonCodec};
pub use conn::{CloseCause, Conn, ConnectOptions, Error};
pub use manager::JsonManager;
pub use server::{RunningServer, Server, ServerConfig};
pub use wire::{Message, Resp};
