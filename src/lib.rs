//! Facade over the workspace's two crates: [`pool`], a generic async connection pool, and
//! [`transport_json`], a uid-multiplexed JSON-over-TCP connection that runs on it.
//!
//! This package exists to hold the examples, the cross-crate tests and the benchmarks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use pool;
pub use transport_json;
