//! The pool in front of real Redis: [`RedisManager`], a `pool::Manager` whose connection
//! ([`RedisConn`]) is the `redis` crate's async multiplexed connection, held by one caller
//! (`Pool::get`) or shared by many (`Pool::lease`).
//!
//! The load program of this package (`src/main.rs`, `cargo run --release -p redis-example`)
//! drives it against a server, its replicas, or a Redis Cluster; its tests
//! (`examples/redis/tests/`) start real `redis-server` processes.
//!
//! A package of its own (`examples/redis/`), so that the `redis` crate is built for this
//! program and its tests only, never for the other examples.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
mod manager;
pub mod report;

pub use manager::{RedisConn, RedisManager, ReplicaSetError, WriteError};
