//! [`Pool::lease`]: many callers share one connection, and the pool still owns its life.
//!
//! A lease's life, file by file: its entry and fast path (here), the moves under the lock
//! that place it (`moves.rs`, on the per-connection counts of `streams.rs`), the full path
//! when the fast one cannot serve it, a due check of its connection included (`full.rs`),
//! its guard and end (`guard.rs`), and its connection's retirement (`retire.rs`).

mod full;
pub(crate) mod guard;
pub(crate) mod moves;
mod retire;
pub(crate) mod streams;

use std::sync::Arc;

use crate::checkout::Times;
use crate::lease::moves::Placed;
use crate::shared::holds::Site;
use crate::{Lease, Manager, Pool, PoolError};

impl<M: Manager> Pool<M>
where
    M::Connection: Sync,
{
    /// Leases a connection: shared access to a connection that up to `max_streams` leases use
    /// at once. The lease goes to the open connection with the fewest leases among those with
    /// room; a new connection opens only when every open or opening one is full, and callers
    /// arriving meanwhile wait for the opening one (up to `max_streams` of them). When every
    /// connection is full and the pool is at `max_size`, the caller waits in the same line as
    /// [`get`](Pool::get), first come, first served, up to `wait_timeout`; a lease that ends
    /// goes to the oldest caller waiting for one.
    ///
    /// A connection with no lease is tested with [`Manager::is_broken`] when it is leased,
    /// and checked with [`Manager::check`] when it was idle longer than `check_interval`;
    /// [`Manager::is_broken_shared`] is asked on every lease handed out.
    ///
    /// # Errors
    /// As [`get`](Pool::get): [`PoolError::Timeout`], [`PoolError::Connect`] (failing fast),
    /// [`PoolError::Closed`], [`PoolError::ConnectPanicked`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future at any point leaks nothing. A caller in line leaves
    /// it, and a lease granted to it in that instant is ended (its room goes to the next
    /// caller); a connect started for it runs on and its connection goes to the next caller
    /// or idle; a connection dropped in the middle of its check is closed.
    #[track_caller]
    pub fn lease(&self) -> impl Future<Output = Result<Lease<M>, PoolError<M::Error>>> + Send + '_ {
        self.start_lease(true, std::panic::Location::caller())
    }

    /// Like [`lease`](Pool::lease), but never waits in line: when every connection is full
    /// and the pool is at `max_size` it fails at once with
    /// [`TimeoutKind::Wait`](crate::TimeoutKind::Wait).
    ///
    /// # Errors
    /// As [`lease`](Pool::lease).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`lease`](Pool::lease).
    #[track_caller]
    pub fn try_lease(
        &self,
    ) -> impl Future<Output = Result<Lease<M>, PoolError<M::Error>>> + Send + '_ {
        self.start_lease(false, std::panic::Location::caller())
    }

    /// A lease: the fast path, else the full path from what the fast path placed.
    /// The lease's hold is registered as taken at `at` (see [`Lease::held_from`]).
    pub(crate) async fn start_lease(
        &self,
        may_wait: bool,
        at: Site,
    ) -> Result<Lease<M>, PoolError<M::Error>> {
        let mut times = Times::new(may_wait.then_some(self.shared.config.wait_timeout));
        match self.fast_lease(&mut times, at) {
            Ok(lease) => Ok(lease),
            Err(first) => {
                // The caller's arrival, from which its `wait_timeout` runs: read before the
                // full path awaits anything (a connect, say), however few of its moves read
                // the clock.
                times.now();
                // Boxed: the full path's state is large, and the future of every lease would
                // carry it (and be moved with it) though the fast path never needs it.
                let mut lease = Box::pin(self.checkout_lease(times, may_wait, first)).await?;
                lease.held_from(at);
                Ok(lease)
            }
        }
    }

    /// The first move of a lease, outside the checkout's state machine (which every lease's
    /// future would otherwise carry), placed as the full path places it (`State::place_lease`).
    /// A plain lease is handed out here; any other move (a check to run, a connection to
    /// retire), or none (no room, a closed pool), goes to the full path as its first step.
    #[inline(always)]
    fn fast_lease(
        &self,
        times: &mut Times,
        at: Site,
    ) -> Result<Lease<M>, Option<Placed<M::Connection>>> {
        let shared = &self.shared;
        shared.ensure_maintenance();
        let mut state = shared.lock();
        if state.closed {
            return Err(None);
        }
        let placed = state.place_lease(
            || times.now(),
            shared.config.check_interval,
            |conn| shared.conn_is_broken(conn),
        );
        if let Some(Placed::Lease(leased)) = placed {
            drop(state);
            let mut lease = Lease::new(Arc::clone(shared), leased, Some(at));
            if shared.is_broken_shared(&*lease) {
                // Its connection died: the lease ends, marking it, and the full path decides.
                Lease::mark_broken(&mut lease);
                return Err(None);
            }
            return Ok(lease);
        }
        // A lease changes no count of idle or opening connections; a retirement frees a slot.
        let refill = state.reserve_refill();
        state.debug_check();
        drop(state);
        shared.spawn_connects(refill);
        Err(placed)
    }
}
