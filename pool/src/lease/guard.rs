//! [`Lease`]: a share of one connection, handed to one of up to `max_streams` callers at once.

use std::ops::Deref;
use std::sync::Arc;

use crate::lease::streams::{Key, SharedConn, conn_ref};
use crate::shared::Shared;
use crate::shared::holds::{HoldKey, Site};
use crate::shared::state::Leased;
use crate::status::Metrics;
use crate::{ConnInfo, Manager};

/// A lease on a pooled connection, from [`Pool::lease`](crate::Pool::lease): shared access to
/// a connection that up to `max_streams` leases use at once (a multiplexed connection carries
/// their requests side by side). Dropping it ends the lease.
///
/// The pool keeps owning the connection: it decides when it closes, and never while a lease
/// holds it. A connection retired meanwhile (`max_lifetime`, `retain`, `resize`, `close`)
/// takes no new lease and closes after its last one ends.
///
/// Its methods are associated functions (`Lease::mark_broken(&mut lease)`), so they never
/// shadow a method of the connection.
pub struct Lease<M: Manager> {
    shared: Arc<Shared<M>>,
    /// `None` only once dropped.
    conn: Option<SharedConn>,
    key: Key,
    info: ConnInfo,
    broken: bool,
    /// `Manager::lease_started` returned: `lease_ended` is owed.
    started: bool,
    /// Its registered hold, when holds are tracked (`leak_threshold`, `metrics`).
    hold: Option<HoldKey>,
}

impl<M: Manager> Lease<M> {
    /// The lease handed out; its hold is registered as taken at `at`, when one is given and
    /// holds are tracked, before the guard is built (a guard written again just before it
    /// is moved out would cost the fast path a stall).
    pub(crate) fn new(shared: Arc<Shared<M>>, leased: Leased, at: Option<Site>) -> Self {
        let hold = at.and_then(|at| shared.start_hold(at));
        let mut lease = Lease {
            shared,
            conn: Some(leased.conn),
            key: leased.key,
            info: leased.info,
            broken: false,
            started: false,
            hold,
        };
        if M::WATCHES_LEASES {
            // A panic here unwinds through `lease`'s drop, which ends the lease (without
            // `lease_ended`: it never started), and reaches the caller.
            lease.shared.manager.lease_started(&lease);
            lease.started = true;
        }
        lease
    }

    /// Registers the hold of this lease, taken at `at`, when holds are tracked.
    pub(crate) fn held_from(&mut self, at: Site) {
        self.hold = self.shared.start_hold(at);
    }

    /// Marks the connection broken: from now on it takes no new lease, its slot frees at once
    /// (so a replacement can open), and it is closed once its last lease ends. Use it after an
    /// error that leaves the connection unusable for everyone.
    pub fn mark_broken(this: &mut Self) {
        if std::mem::replace(&mut this.broken, true) {
            return;
        }
        let (newly, wake) = this
            .shared
            .locked(|state| state.mark_shared_broken(this.key));
        if newly {
            Metrics::bump(&this.shared.metrics.broken);
            tracing::debug!("a lease marked its connection broken");
        }
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// What the pool knew about the connection when this lease was handed out.
    pub fn info(this: &Self) -> ConnInfo {
        this.info
    }
}

impl<M: Manager> Deref for Lease<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        match self.conn.as_ref().and_then(conn_ref::<M::Connection>) {
            Some(conn) => conn,
            // `conn` is emptied only by `drop`, and holds the pool's own connection type.
            None => unreachable!("a Lease is used after it ended"),
        }
    }
}

impl<M: Manager> std::fmt::Debug for Lease<M>
where
    M::Connection: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("conn", &**self)
            .field("info", &self.info)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<M: Manager> Drop for Lease<M> {
    fn drop(&mut self) {
        // Read, not taken (see `Pooled`'s drop).
        if let Some(key) = self.hold {
            self.shared.holds.end(key, &self.shared.metrics);
        }
        let ended = (M::WATCHES_LEASES && self.started).then(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.shared.manager.lease_ended(self)
            }))
        });
        if let Some(conn) = self.conn.take() {
            self.shared.end_lease(conn, self.key, self.broken);
        }
        // A panicking `lease_ended` reaches the caller once the lease has ended (never a
        // second panic while one unwinds, which would abort).
        if let Some(Err(panic)) = ended
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;

    use crate::shared::LOCKS;
    use crate::{Manager, Pool};

    struct Numbers;

    impl Manager for Numbers {
        type Connection = u64;
        type Error = Infallible;
        async fn connect(&self) -> Result<u64, Infallible> {
            Ok(7)
        }
        async fn check(&self, _conn: &mut u64) -> Result<(), Infallible> {
            Ok(())
        }
    }

    /// The lease fast path (a connection with room, no check due) takes the pool's lock once
    /// to lease, and once to end the lease; alone on its connection (`is_broken` runs under
    /// that one lock) or beside another lease. (`pool/tests/alloc.rs` proves it allocates
    /// nothing.)
    #[test]
    fn the_lease_fast_path_takes_the_lock_once() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let pool = Pool::builder(Numbers)
                .max_streams(4)
                .build()
                .expect("valid settings");
            // The connection is made and put in shared form.
            drop(pool.lease().await.expect("a lease"));
            for beside_another in [false, true] {
                let other = match beside_another {
                    true => Some(pool.lease().await.expect("a lease")),
                    false => None,
                };
                // The fast path never yields, so no other task takes the lock in between.
                let before = LOCKS.with(Cell::get);
                let lease = pool.lease().await.expect("a lease");
                assert_eq!(*lease, 7);
                assert_eq!(LOCKS.with(Cell::get) - before, 1, "locks to lease");
                let before = LOCKS.with(Cell::get);
                drop(lease);
                assert_eq!(LOCKS.with(Cell::get) - before, 1, "locks to end it");
                drop(other);
            }
            pool.close().await;
        });
    }
}
