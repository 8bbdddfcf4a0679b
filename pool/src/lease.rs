//! [`Lease`]: a share of one connection, handed to one of up to `max_streams` callers at once.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use crate::inner::{Shared, broken_shared};
use crate::status::Metrics;
use crate::streams::{LaneShare, Leased};
use crate::{ConnInfo, Manager};

/// A lease on a pooled connection, from [`Pool::lease`](crate::Pool::lease): shared access to
/// a connection that up to `max_streams` leases use at once (a multiplexed connection carries
/// their requests side by side). Dropping it ends the lease.
///
/// The pool keeps owning the connection: it decides when it closes, and never while a lease
/// holds it. A connection retired meanwhile (`max_lifetime`, `retain`, `resize`, `close`)
/// takes no new lease and closes after its last one ends.
///
/// A lease holds its share of the connection, not the pool: when every handle of the pool is
/// dropped (without [`Pool::close`](crate::Pool::close)), a connection still leased is
/// dropped once its last lease ends.
///
/// Its methods are associated functions (`Lease::mark_broken(&mut lease)`), so they never
/// shadow a method of the connection.
pub struct Lease<M: Manager> {
    /// The lease's share of its connection's lane. `None` only once dropped.
    share: Option<LaneShare<M::Connection>>,
    /// The connection's uses, this lease counted.
    uses: u64,
    broken: bool,
    /// The lease holds no handle of the pool (the lane has one, for the ends that need it).
    manager: PhantomData<fn() -> M>,
}

impl<M: Manager> Lease<M> {
    pub(crate) fn new(manager: &M, leased: Leased<M::Connection>) -> Self {
        let lease = Lease {
            share: Some(leased.share),
            uses: leased.uses,
            broken: false,
            manager: PhantomData,
        };
        if M::WATCHES_LEASES {
            manager.lease_started(&lease);
        }
        lease
    }

    fn share(&self) -> &LaneShare<M::Connection> {
        match &self.share {
            Some(share) => share,
            // Emptied only by `drop`.
            None => unreachable!("a Lease is used after it ended"),
        }
    }

    /// Marks the connection broken: from now on it takes no new lease, its slot frees at once
    /// (so a replacement can open), and it is closed once its last lease ends. Use it after an
    /// error that leaves the connection unusable for everyone.
    pub fn mark_broken(this: &mut Self) {
        if std::mem::replace(&mut this.broken, true) {
            return;
        }
        // The pool is gone when every handle of it was dropped: nothing to mark then.
        let Some(shared) = pool_of::<M>(this.share()) else {
            return;
        };
        let (newly, wake) = {
            let mut state = shared.lock();
            let marked = state.mark_shared_broken(this.share().key);
            state.debug_check();
            marked
        };
        if newly {
            Metrics::bump(&shared.metrics.broken);
            tracing::debug!("a lease marked its connection broken");
        }
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    /// What the pool knew about the connection when this lease was handed out.
    pub fn info(this: &Self) -> ConnInfo {
        ConnInfo {
            uses: this.uses,
            ..this.share().info
        }
    }
}

/// The pool a lane belongs to, while any handle of it is left.
fn pool_of<M: Manager>(share: &LaneShare<M::Connection>) -> Option<Arc<Shared<M>>> {
    share.ties().pool.upgrade()?.downcast::<Shared<M>>().ok()
}

impl<M: Manager> Deref for Lease<M> {
    type Target = M::Connection;

    #[inline]
    fn deref(&self) -> &M::Connection {
        match &self.share().conn {
            Some(conn) => conn,
            // A lane holds its connection while any lease is out.
            None => unreachable!("a lease on a lane with no connection"),
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
            .field("info", &Lease::info(self))
            .field("broken", &self.broken)
            .finish()
    }
}

impl<M: Manager> Drop for Lease<M> {
    /// Ends the lease without the pool's lock when another lease stays on the connection,
    /// nobody waits in line, and neither the lease nor `is_broken_shared` found it broken;
    /// else under the lock.
    fn drop(&mut self) {
        let Some(share) = self.share.take() else {
            return;
        };
        let mut broken = self.broken;
        if let Some(manager) = share.ties().manager.downcast_ref::<M>()
            && let Some(conn) = &share.conn
        {
            if M::WATCHES_LEASES {
                manager.lease_ended(conn);
            }
            broken = broken || broken_shared(manager, conn);
        }
        let share = if broken {
            share
        } else {
            match share.try_end() {
                Ok(()) => return,
                Err(share) => share,
            }
        };
        match pool_of::<M>(&share) {
            Some(shared) => shared.end_lease(share, broken),
            // The pool is gone: the connection drops with its lane.
            None => drop(share),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;

    use crate::inner::LOCKS;
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

    /// Issue 13, behaviour 7: the lease fast path (a connection with room, no check due)
    /// takes the pool's lock at most once to lease, and at most once to end the lease: once
    /// alone on its connection (`is_broken` runs under that one lock), and not at all beside
    /// another lease (the lock-free path). (`pool/tests/alloc.rs` proves it allocates
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
                let locks = usize::from(!beside_another);
                let before = LOCKS.with(Cell::get);
                let lease = pool.lease().await.expect("a lease");
                assert_eq!(*lease, 7);
                assert_eq!(LOCKS.with(Cell::get) - before, locks, "locks to lease");
                let before = LOCKS.with(Cell::get);
                drop(lease);
                assert_eq!(LOCKS.with(Cell::get) - before, locks, "locks to end it");
                drop(other);
            }
            pool.close().await;
        });
    }
}
