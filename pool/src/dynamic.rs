//! Managers chosen at run time: [`DynManager`], the dyn-compatible form of [`Manager`].
//!
//! [`Manager`]'s async methods return `impl Future`, which keeps a checkout free of
//! allocations but rules out `dyn Manager`: no manager picked from configuration, or wrapped
//! in one decorator type (logging, metrics, fault injection). [`DynManager`] is the same trait
//! written with [`#[async_trait]`](macro@async_trait), so its futures are boxed and it can be a
//! trait object. Every method, the defaulted ones too, crosses the adapters both ways:
//! - every [`Manager`] is a [`DynManager`] (a blanket impl): `BoxManager::new(MyManager)`;
//! - [`BoxManager`] and [`ArcManager`] (a boxed or shared `dyn DynManager`) are [`Manager`]s,
//!   so `Pool<BoxManager<C, E>>` is a pool whose manager was chosen at run time.
//!
//! ```
//! use std::convert::Infallible;
//! use pool::Pool;
//! use pool::dynamic::{BoxManager, DynManager, async_trait};
//!
//! /// A manager written as for deadpool's and bb8's older versions.
//! struct Numbers(u64);
//!
//! #[async_trait]
//! impl DynManager for Numbers {
//!     type Connection = u64;
//!     type Error = Infallible;
//!     async fn connect(&self) -> Result<u64, Infallible> {
//!         Ok(self.0)
//!     }
//!     async fn check(&self, _conn: &mut u64) -> Result<(), Infallible> {
//!         Ok(())
//!     }
//! }
//!
//! /// Which manager to use, from configuration.
//! fn choose(name: &str) -> Option<BoxManager<u64, Infallible>> {
//!     match name {
//!         "one" => Some(BoxManager::new(Numbers(1))),
//!         "two" => Some(BoxManager::new(Numbers(2))),
//!         _ => None,
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let manager = choose("two").expect("a known manager");
//! let pool = Pool::builder(manager).max_size(4).build().expect("valid settings");
//! assert_eq!(*pool.get().await.expect("a connection"), 2);
//! # }
//! ```
//!
//! # Cost
//! Each `connect`, `check` and `close` allocates its boxed future; the pool's fast path calls
//! only `is_broken`, through one indirect call (the crate docs give the measured cost).
//!
//! # Method names
//! A native manager is both a [`Manager`] and a [`DynManager`], with the same method names:
//! where both traits are imported, call `Manager::connect(&m)` (hence no glob export from the
//! crate root). A decorator holding a [`BoxManager`] calls it with
//! `DynManager::connect(&*self.inner)`: `self.inner.connect()` works too, through the blanket
//! impl, at the price of a second boxed future.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::Manager;

/// The attribute a [`DynManager`] impl is written with (re-exported from the `async-trait`
/// crate, so an application needs no dependency of its own).
pub use async_trait::async_trait;

/// A [`Manager`] that can be a trait object: the same methods, with boxed futures.
///
/// Implement it with [`#[async_trait]`](macro@async_trait) and plain `async fn`s, exactly as
/// a [`Manager`], whose every guarantee holds for the matching method here; but only for a
/// manager with no native impl (a decorator over a [`BoxManager`], say): every [`Manager`]
/// is a `DynManager` already.
#[async_trait]
pub trait DynManager: Send + Sync + 'static {
    /// The connection the pool hands out.
    type Connection: Send + 'static;
    /// The error `connect` and `check` report.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection; see [`Manager::connect`].
    ///
    /// # Errors
    /// Whatever stopped the connection from being made.
    ///
    /// # Cancel safety
    /// Dropped at an `.await` (the connect timeout, a runtime shutdown), it leaves nothing.
    async fn connect(&self) -> Result<Self::Connection, Self::Error>;

    /// Health check run on checkout; see [`Manager::check`].
    ///
    /// # Errors
    /// Any error discards the connection.
    ///
    /// # Cancel safety
    /// A check dropped before it ends (the caller gave up, a timeout) discards the connection.
    async fn check(&self, conn: &mut Self::Connection) -> Result<(), Self::Error>;

    /// Cheap synchronous test run on return and checkout; see [`Manager::is_broken`].
    /// Default: never broken.
    fn is_broken(&self, conn: &mut Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// The same test through a shared reference, asked on every lease handed out and ended;
    /// see [`Manager::is_broken_shared`]. Default: never broken.
    fn is_broken_shared(&self, conn: &Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// Called as a lease on `conn` is handed out; see [`Manager::lease_started`] (a native
    /// manager's is forwarded only when its [`Manager::WATCHES_LEASES`] is true). Default:
    /// nothing.
    fn lease_started(&self, conn: &Self::Connection) {
        let _ = conn;
    }

    /// Called as a lease on `conn` ends; see [`Manager::lease_ended`]. Default: nothing.
    fn lease_ended(&self, conn: &Self::Connection) {
        let _ = conn;
    }

    /// Whether a failed connect may succeed if tried again; see [`Manager::is_retryable`].
    /// Default: every error is retryable.
    fn is_retryable(&self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }

    /// Whether a connection returned by `get` must be reset first; see
    /// [`Manager::needs_reset`]. Default: never.
    fn needs_reset(&self, conn: &Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// Cleans a dirty connection; see [`Manager::reset`]. Default: nothing to do.
    ///
    /// # Errors
    /// Any error discards the connection.
    ///
    /// # Cancel safety
    /// A reset dropped before it ends (its reset timeout fired) discards the connection.
    async fn reset(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let _ = conn;
        Ok(())
    }

    /// Graceful close of a connection the pool is discarding; see [`Manager::close`].
    /// Default: drop it.
    ///
    /// # Cancel safety
    /// Run in a task of the pool's within its close timeout; dropped there, drops the connection.
    async fn close(&self, conn: Self::Connection) {
        drop(conn)
    }
}

/// The boxed manager a configuration chose, ready for a [`Pool`](crate::Pool): any
/// [`DynManager`] (so any [`Manager`]) behind one type.
///
/// It is a struct, not the bare `Box<dyn DynManager>`, because the compiler cannot prove a
/// `Pool<Box<dyn DynManager + 'static>>`'s futures `Send` (its check forgets the `'static`:
/// "not general enough"), which would keep such a pool out of `tokio::spawn`.
pub struct BoxManager<C, E>(Box<dyn DynManager<Connection = C, Error = E>>);

/// A manager chosen at run time and shared: several pools (or the code that built it) hold
/// one [`DynManager`]. Clones share the manager. See [`BoxManager`] for why it is a struct.
pub struct ArcManager<C, E>(Arc<dyn DynManager<Connection = C, Error = E>>);

impl<C, E> Clone for ArcManager<C, E> {
    fn clone(&self) -> Self {
        ArcManager(Arc::clone(&self.0))
    }
}

/// Every native manager is a [`DynManager`]: each method forwards to the [`Manager`] one.
#[async_trait]
impl<M: Manager> DynManager for M {
    type Connection = M::Connection;
    type Error = M::Error;

    async fn connect(&self) -> Result<M::Connection, M::Error> {
        Manager::connect(self).await
    }

    async fn check(&self, conn: &mut M::Connection) -> Result<(), M::Error> {
        Manager::check(self, conn).await
    }

    fn is_broken(&self, conn: &mut M::Connection) -> bool {
        Manager::is_broken(self, conn)
    }

    fn is_broken_shared(&self, conn: &M::Connection) -> bool {
        Manager::is_broken_shared(self, conn)
    }

    fn lease_started(&self, conn: &M::Connection) {
        if M::WATCHES_LEASES {
            Manager::lease_started(self, conn);
        }
    }

    fn lease_ended(&self, conn: &M::Connection) {
        if M::WATCHES_LEASES {
            Manager::lease_ended(self, conn);
        }
    }

    fn is_retryable(&self, error: &M::Error) -> bool {
        Manager::is_retryable(self, error)
    }

    fn needs_reset(&self, conn: &M::Connection) -> bool {
        Manager::needs_reset(self, conn)
    }

    async fn reset(&self, conn: &mut M::Connection) -> Result<(), M::Error> {
        Manager::reset(self, conn).await
    }

    async fn close(&self, conn: M::Connection) {
        Manager::close(self, conn).await
    }
}

/// The impls [`BoxManager`] and [`ArcManager`] share, for a holder of a `$ptr<dyn DynManager>`
/// (whose futures are already boxed: the [`Manager`] impl boxes nothing twice).
macro_rules! holder {
    ($holder:ident, $ptr:ident) => {
        impl<C, E> $holder<C, E> {
            /// Holds `manager` (a [`Manager`] or a [`DynManager`]).
            pub fn new(manager: impl DynManager<Connection = C, Error = E>) -> Self {
                $holder($ptr::new(manager))
            }

            /// The held manager.
            pub fn into_inner(self) -> $ptr<dyn DynManager<Connection = C, Error = E>> {
                self.0
            }
        }

        impl<C, E> From<$ptr<dyn DynManager<Connection = C, Error = E>>> for $holder<C, E> {
            fn from(manager: $ptr<dyn DynManager<Connection = C, Error = E>>) -> Self {
                $holder(manager)
            }
        }

        impl<C, E> Deref for $holder<C, E> {
            type Target = dyn DynManager<Connection = C, Error = E>;

            fn deref(&self) -> &Self::Target {
                &*self.0
            }
        }

        impl<C, E> fmt::Debug for $holder<C, E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($holder))
            }
        }

        /// Each method forwards to the held [`DynManager`]. Whether it watches leases is
        /// known only at run time, so every lease calls through (two indirect calls).
        impl<C, E> Manager for $holder<C, E>
        where
            C: Send + 'static,
            E: std::error::Error + Send + Sync + 'static,
        {
            type Connection = C;
            type Error = E;
            const WATCHES_LEASES: bool = true;

            fn connect(&self) -> impl Future<Output = Result<C, E>> + Send {
                DynManager::connect(&**self)
            }

            fn check(&self, conn: &mut C) -> impl Future<Output = Result<(), E>> + Send {
                // The boxed future lives as long as the shorter of the two borrows, a lifetime
                // the returned `impl Future` cannot name; awaiting it inside one that captures
                // both returns it (no second allocation: this future is a few words).
                async move { DynManager::check(&**self, conn).await }
            }

            fn is_broken(&self, conn: &mut C) -> bool {
                DynManager::is_broken(&**self, conn)
            }

            fn is_broken_shared(&self, conn: &C) -> bool {
                DynManager::is_broken_shared(&**self, conn)
            }

            fn lease_started(&self, conn: &C) {
                DynManager::lease_started(&**self, conn)
            }

            fn lease_ended(&self, conn: &C) {
                DynManager::lease_ended(&**self, conn)
            }

            fn is_retryable(&self, error: &E) -> bool {
                DynManager::is_retryable(&**self, error)
            }

            fn needs_reset(&self, conn: &C) -> bool {
                DynManager::needs_reset(&**self, conn)
            }

            fn reset(&self, conn: &mut C) -> impl Future<Output = Result<(), E>> + Send {
                async move { DynManager::reset(&**self, conn).await }
            }

            fn close(&self, conn: C) -> impl Future<Output = ()> + Send {
                DynManager::close(&**self, conn)
            }
        }
    };
}

holder!(BoxManager, Box);
holder!(ArcManager, Arc);
