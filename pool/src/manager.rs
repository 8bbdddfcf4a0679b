//! The [`Manager`] trait: how the pool makes, checks and closes connections.

use std::future::Future;

/// Makes, checks and closes the connections a [`Pool`](crate::Pool) holds.
///
/// Implement it for any transport: the pool knows nothing of sockets. Write the async methods as
/// plain `async fn`; the trait spells them `fn .. -> impl Future + Send` so that no checkout
/// allocates a boxed future.
///
/// The async methods run outside the pool's lock, each bounded by the matching timeout of the
/// [`Builder`](crate::Builder). Each method's doc says what it must guarantee; the repository's
/// `examples/custom_manager.rs` is a complete template (a line-based TCP protocol).
pub trait Manager: Send + Sync + 'static {
    /// The connection the pool hands out.
    type Connection: Send + 'static;
    /// The error `connect` and `check` report.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection, in a task of its own, so a caller that gives up never aborts
    /// it: a connection that arrives late goes to the next waiter. It may be dropped at an
    /// `.await` when the pool's connect timeout fires or the runtime shuts down, and must leave
    /// nothing behind when it is.
    ///
    /// # Errors
    /// Whatever stopped the connection from being made; the caller that asked for it receives
    /// it as [`PoolError::Connect`](crate::PoolError::Connect), and waiters that time out see
    /// its text in [`TimeoutKind::Wait`](crate::TimeoutKind::Wait).
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Whether a connect that failed with `error` may succeed if tried again (a refused or
    /// reset connection, a timeout: the server may be restarting), or never will (a wrong
    /// password, a missing database, a certificate the client does not trust): a `get` or
    /// `lease` then gets it at once as [`PoolError::Connect`](crate::PoolError::Connect),
    /// instead of retrying until its wait timeout. Default: every error is retryable.
    fn is_retryable(&self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }

    /// Health check run on checkout (skipped within the check interval): one cheap round trip
    /// at most. If its future is dropped (the caller gave up, or the check timeout fired) the
    /// pool discards the connection, since its state is then unknown.
    ///
    /// # Errors
    /// Any error discards the connection; the caller is then given another one.
    fn check(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Cheap synchronous test run when a connection comes back (and again on checkout, so a
    /// connection that broke while idle is never handed out); true = discard it. For leases it
    /// runs when a connection with no lease is leased and when its last lease ends, under the
    /// pool's lock (only the lock proves no lease borrows the connection then). Read a flag:
    /// never do I/O, never block, never call into the pool.
    fn is_broken(&self, conn: &mut Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// The same test through a shared reference, asked on every lease handed out and every
    /// lease that ends, while other leases may use the connection: a multiplexed connection
    /// that died under ten leases then gets no eleventh. True = no new lease; the connection
    /// is closed after its last lease ends, and its slot frees at once. Read a flag (an
    /// atomic, say). Default: never broken.
    fn is_broken_shared(&self, conn: &Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// Whether the pool tells this manager when a lease starts and ends
    /// ([`lease_started`](Manager::lease_started), [`lease_ended`](Manager::lease_ended)).
    /// False by default, so the lease fast path of every other manager pays nothing for it.
    const WATCHES_LEASES: bool = false;

    /// Called as a lease on `conn` is handed out (before the caller sees it), outside the
    /// pool's lock, when [`WATCHES_LEASES`](Manager::WATCHES_LEASES) is true; each call is
    /// matched by one [`lease_ended`](Manager::lease_ended). Count, never block. Used by
    /// [`Balanced`](crate::balance::Balanced) to show leases per endpoint.
    fn lease_started(&self, conn: &Self::Connection) {
        let _ = conn;
    }

    /// Called as a lease on `conn` ends, outside the pool's lock, when
    /// [`WATCHES_LEASES`](Manager::WATCHES_LEASES) is true.
    fn lease_ended(&self, conn: &Self::Connection) {
        let _ = conn;
    }

    /// Whether a connection coming back from a [`get`](crate::Pool::get) guard must be reset
    /// before anyone else uses it: asked, synchronously, as the guard drops (not detached, not
    /// broken). Read what the connection knows (an open transaction, session state, a result
    /// not read to its end); never do I/O. Default: never.
    fn needs_reset(&self, conn: &Self::Connection) -> bool {
        let _ = conn;
        false
    }

    /// Cleans a connection [`needs_reset`](Manager::needs_reset) found dirty: roll back,
    /// reset the session. Run by a task of the pool's, never on the dropping caller's path,
    /// within the pool's reset timeout. Leases are never reset. Default: nothing to do.
    ///
    /// # Errors
    /// Any error (or the timeout) discards the connection, closed with [`close`](Manager::close).
    fn reset(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// Graceful close of a connection the pool is discarding, in a task of its own.
    fn close(&self, conn: Self::Connection) -> impl Future<Output = ()> + Send {
        async move { drop(conn) }
    }
}
