//! Facade over the workspace's two crates: [`pool`], a generic async connection pool, and
//! [`transport_json`], a uid-multiplexed JSON-over-TCP connection that runs on it.
//!
//! This package exists to hold the examples and the cross-crate tests. The benchmarks
//! (`benches/`) and the Redis example (`examples/redis/`) are packages of their own: an
//! example builds every dev-dependency of its package, and criterion, deadpool, bb8 and redis
//! took the demo's first build from 45 crates to 125.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use pool;
pub use transport_json;
