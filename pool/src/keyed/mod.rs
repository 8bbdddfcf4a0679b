//! [`KeyedPool`]: one pool per key (a host, a shard, a cluster node) under one cap across
//! keys.
//!
//! Each key has a [`Pool`] of its own, made the first time the key is used, with a manager
//! from the function given to [`KeyedPool::builder`]; `get` and `lease` look the key up once
//! and then run that pool's own checkout. What is shared across keys is `max_total`: every
//! key pool takes its slots from one budget as well as under its own `max_size`
//! (`shared/budget.rs`), and a background task, the steward (`steward.rs`), does the work
//! that spans keys: it serves a key whose callers the budget starved, closing an idle
//! connection of another key for it, and it forgets keys that hold nothing.
//!
//! This module owns the map of keys (`keys.rs`), the builder (`builder.rs`) and the steward;
//! it touches a key pool only through that pool's own moves, one pool's lock at a time.
//!
//! ```
//! # use std::convert::Infallible;
//! use pool::Manager;
//! use pool::keyed::KeyedPool;
//!
//! /// A "connection" to a host: just its name.
//! struct Host(String);
//!
//! impl Manager for Host {
//!     type Connection = String;
//!     type Error = Infallible;
//!     async fn connect(&self) -> Result<String, Infallible> {
//!         Ok(self.0.clone())
//!     }
//!     async fn check(&self, _conn: &mut String) -> Result<(), Infallible> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = KeyedPool::builder(|host: &String| Host(host.clone()))
//!     .max_size(4)
//!     .max_total(16)
//!     .build()
//!     .expect("valid settings");
//! let a = pool.get(&"a.example".to_owned()).await.expect("a connection");
//! assert_eq!(*a, "a.example");
//! drop(a);
//! assert_eq!(pool.status(&"a.example".to_owned()).map(|s| s.idle), Some(1));
//! assert!(pool.status(&"b.example".to_owned()).is_none(), "never used");
//! pool.close().await;
//! # }
//! ```

mod builder;
mod keys;
mod steward;

use std::hash::Hash;
use std::sync::Arc;

pub use builder::KeyedBuilder;
use keys::Inner;

use crate::{Lease, Manager, Pool, PoolError, Pooled, Status};

/// One [`Pool`] per key, under one cap across keys. Cheap to clone: clones share the pools.
///
/// - Each key has at most `max_size` connections, and all keys together at most
///   `max_total`, counting connects in flight (as `max_size` counts them).
/// - A caller whose key has room but finds `max_total` reached waits in its key's line, as any
///   waiter does, for a slot under `max_total`: the longest-idle connection of another key is
///   closed for it at once, if there is one; else it is served as soon as a connection of
///   another key is closed or would go idle (while it waits, a connection that would go idle
///   with every slot taken is closed for it instead). A key with callers of its own in line
///   keeps its connections, but for one that holds more than its fair share (`max_total`
///   over the keys that hold or wait for a connection, rounded down) while a waiting key
///   holds none: that one gives way, closing a returning connection rather than handing it
///   to its own next caller. So a key with nothing is served at the next return of a busy
///   key, however long that key stays busy, and a busy key alone never loses a connection.
///   Beyond one connection each, `max_total` is shared first come, not evenly. A key whose
///   connections are leased gives way the same way: one of its connections takes no new
///   lease, and its slot goes to the waiting key once its last lease ends.
/// - A key whose connects hang or fail holds up no other key: its callers wait and time out
///   as a pool's do (in line at `wait_timeout`, or at `connect_timeout`, 10 s, for one whose
///   own connect hangs). Its connects in flight count against `max_total`, at most its
///   `max_size` of them (each until `connect_timeout`), so the other keys share the rest.
/// - A key that has held no connection and had no caller for `idle_timeout` (its connections
///   are closed after `idle_timeout` idle) is forgotten: its pool is dropped, and its next
///   use makes a new one with a new manager. So a stream of keys each used once leaves no
///   trace after twice `idle_timeout`, or three times counting the idle close.
#[must_use = "a keyed pool does nothing unless used"]
pub struct KeyedPool<K, M: Manager> {
    inner: Arc<Inner<K, M>>,
}

impl<K, M: Manager> Clone for KeyedPool<K, M> {
    fn clone(&self) -> Self {
        KeyedPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, M> std::fmt::Debug for KeyedPool<K, M>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    M: Manager,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedPool")
            .field("keys", &self.inner.held())
            .field("connections", &self.inner.budget.used())
            .finish_non_exhaustive()
    }
}

impl<K, M> KeyedPool<K, M>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    M: Manager,
{
    /// Starts configuring a keyed pool. `make` makes the manager of a key the first time the
    /// key is used (and again after the key was forgotten); it runs in the caller's task,
    /// outside every lock. Two callers racing for a new key may both call it: one manager is
    /// kept, the other dropped unused. A `make` that panics panics the caller that needed it,
    /// and leaves nothing behind: the next call for that key calls `make` again.
    pub fn builder<F>(make: F) -> KeyedBuilder<K, M>
    where
        F: Fn(&K) -> M + Send + Sync + 'static,
    {
        KeyedBuilder::new(Box::new(make))
    }

    /// Checks out a connection of `key`, as [`Pool::get`] does in the key's own pool: an idle
    /// one, else a new one while the key is below `max_size` and all keys below `max_total`,
    /// else the first one returned to the key's line of waiters, up to `wait_timeout`. At
    /// `max_total` the caller waits for a slot in that line (see [`KeyedPool`]).
    ///
    /// Needs a Tokio runtime, as [`Pool::get`] does.
    ///
    /// # Errors
    /// As [`Pool::get`]: [`PoolError::Timeout`] (a wait for `max_total` is a wait in line,
    /// [`TimeoutKind::Wait`](crate::TimeoutKind::Wait)), [`PoolError::Connect`],
    /// [`PoolError::ConnectPanicked`], and [`PoolError::Closed`] once
    /// [`close`](KeyedPool::close) was called.
    ///
    /// # Panics
    /// When the key is new and `make` panics (see [`builder`](KeyedPool::builder)), or the
    /// function given to [`name_keys`](KeyedBuilder::name_keys) does.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Pool::get`]: dropping the future at any point leaks nothing. Dropped
    /// after it made a new key's pool, the key stays held (and is forgotten once it has held
    /// nothing for `idle_timeout`).
    #[track_caller]
    pub fn get(
        &self,
        key: &K,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send {
        let at = std::panic::Location::caller();
        async move { self.inner.pool(key)?.checkout(true, at).await }
    }

    /// The status of `key`'s pool ([`Pool::status`]), or `None` when the keyed pool holds no
    /// pool for it: never used, forgotten, or closed. Asking makes none.
    pub fn status(&self, key: &K) -> Option<Status> {
        self.inner.status(key)
    }

    /// True once [`close`](KeyedPool::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// How many keys the pool holds now (each with its pool); for tests of forgetting.
    #[doc(hidden)]
    pub fn keys_held(&self) -> usize {
        self.inner.held()
    }

    /// The slots held across keys now (what `max_total` caps); for tests of the budget.
    #[doc(hidden)]
    pub fn slots_held(&self) -> usize {
        self.inner.budget.used()
    }

    /// Closes every key's pool as [`Pool::close`] does, side by side: later calls of `get`
    /// and `lease` fail with [`PoolError::Closed`], waiters fail with it at once, idle
    /// connections are closed, and those in use as they come back. Every key is let go of:
    /// [`status`](KeyedPool::status) answers `None` from then on. Calling it again does
    /// nothing more.
    ///
    /// # Cancel safety
    /// The keyed pool and every key's pool are closed at the first poll. Dropping the future
    /// afterwards stops only the wait for the last leases and resets to end (up to
    /// `close_timeout`): idle connections still close (in tasks of their own), and leased
    /// ones as their last lease ends.
    pub async fn close(&self) {
        let pools = self.inner.close();
        futures::future::join_all(pools.iter().map(Pool::close)).await;
    }
}

impl<K, M> KeyedPool<K, M>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    M: Manager,
    M::Connection: Sync,
{
    /// Leases a connection of `key`, as [`Pool::lease`] does in the key's own pool: shared
    /// with up to `max_streams` leases, on the key's connection with the fewest, a new one
    /// opening only when every one is full (and room is left under `max_size` and
    /// `max_total`), else a wait in the key's line.
    ///
    /// # Errors
    /// As [`get`](KeyedPool::get).
    ///
    /// # Panics
    /// As [`get`](KeyedPool::get).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Pool::lease`]: dropping the future at any point leaks nothing.
    #[track_caller]
    pub fn lease(
        &self,
        key: &K,
    ) -> impl Future<Output = Result<Lease<M>, PoolError<M::Error>>> + Send {
        let at = std::panic::Location::caller();
        async move { self.inner.pool(key)?.start_lease(true, at).await }
    }
}
