//! Runs any [`Manager`] inside a `deadpool::managed::Pool` (the `deadpool` feature), so an
//! application can move between the two pools one step at a time: write the manager once,
//! against this crate's trait, and keep deadpool where it is still in use.
//!
//! ```
//! use std::convert::Infallible;
//! use pool::Manager;
//! use pool::deadpool::{DeadpoolManager, DeadpoolPool};
//!
//! /// A "connection" that is just a number.
//! struct Numbers;
//!
//! impl Manager for Numbers {
//!     type Connection = u64;
//!     type Error = Infallible;
//!     async fn connect(&self) -> Result<u64, Infallible> {
//!         Ok(42)
//!     }
//!     async fn check(&self, _conn: &mut u64) -> Result<(), Infallible> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool: DeadpoolPool<Numbers> = deadpool::managed::Pool::builder(DeadpoolManager::new(Numbers))
//!     .max_size(4)
//!     .build()
//!     .expect("valid settings");
//! let conn = pool.get().await.expect("a connection");
//! assert_eq!(*conn, 42);
//! # }
//! ```
//!
//! # How the calls map
//! | deadpool calls                 | the adapter runs                                          |
//! |--------------------------------|-----------------------------------------------------------|
//! | `create`                       | [`Manager::connect`]                                      |
//! | `recycle` (on checkout)        | [`Manager::is_broken`], then [`Manager::check`] unless the connection was checked out within the adapter's check interval |
//! | `detach` (`Object::take`)      | nothing                                                   |
//!
//! # Differences to keep in mind
//! - deadpool has no hook when a connection comes back, so [`Manager::is_broken`] runs at the
//!   next checkout instead of on return: a broken connection holds its slot until then.
//! - deadpool drops the connections it discards; [`Manager::close`] never runs. A connection
//!   whose `Drop` releases everything (a socket does) loses only its graceful goodbye.
//! - deadpool's metrics record the last *checkout*, not the last return, so the check
//!   interval counts from the last checkout. They use [`std::time::Instant`], so a paused
//!   Tokio clock does not move them.
//! - Timeouts are deadpool's (`wait`, `create`, `recycle`), and need one of deadpool's
//!   runtime features (`rt_tokio_1`) enabled by the application.

use std::time::Duration;

use ::deadpool::managed::{self, Metrics, RecycleError, RecycleResult};

use crate::Manager;

/// A `deadpool::managed::Pool` of the connections a [`Manager`] makes.
pub type DeadpoolPool<M> = managed::Pool<DeadpoolManager<M>>;

/// Wraps a [`Manager`] so that it implements `deadpool::managed::Manager`.
///
/// See the [module documentation](self) for how deadpool's calls map onto the manager's.
#[derive(Debug, Clone)]
pub struct DeadpoolManager<M> {
    manager: M,
    check_interval: Duration,
}

impl<M: Manager> DeadpoolManager<M> {
    /// Wraps `manager`. Every recycle runs [`Manager::check`] until
    /// [`check_interval`](DeadpoolManager::check_interval) says otherwise.
    pub fn new(manager: M) -> Self {
        DeadpoolManager {
            manager,
            check_interval: Duration::ZERO,
        }
    }

    /// Skips [`Manager::check`] on recycle for a connection checked out less than this long
    /// ago (this crate's bypass window, which deadpool lacks). Default `Duration::ZERO`:
    /// check on every recycle, as a deadpool manager usually does.
    #[must_use]
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// The wrapped manager.
    pub fn manager(&self) -> &M {
        &self.manager
    }

    /// Unwraps the manager.
    pub fn into_inner(self) -> M {
        self.manager
    }
}

/// # Cancel safety
/// As for [`Manager`]: a dropped `create` leaves nothing behind; a `recycle` dropped in the
/// middle of its check (deadpool's recycle timeout) makes deadpool drop the connection.
impl<M: Manager> managed::Manager for DeadpoolManager<M> {
    type Type = M::Connection;
    type Error = M::Error;

    async fn create(&self) -> Result<M::Connection, M::Error> {
        self.manager.connect().await
    }

    async fn recycle(
        &self,
        conn: &mut M::Connection,
        metrics: &Metrics,
    ) -> RecycleResult<M::Error> {
        if self.manager.is_broken(conn) {
            return Err(RecycleError::message(
                "the connection reported itself broken",
            ));
        }
        if !self.check_interval.is_zero() && metrics.last_used() < self.check_interval {
            return Ok(());
        }
        self.manager
            .check(conn)
            .await
            .map_err(RecycleError::Backend)
    }
}
