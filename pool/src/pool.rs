//! [`Pool`]: its public face: close, resize, retain and status here; the insides of `get` are in
//! `checkout/`, those of `lease` in `lease/`.

use std::sync::{Arc, Weak};
use std::task::Waker;

use crate::config::Config;
use crate::shared::Shared;
use crate::shared::budget::{Account, Budget, Member};
use crate::status::Metrics;
use crate::{BuildError, Builder, ConnInfo, Manager, PoolError, Pooled, Status};

/// A pool of connections made by a [`Manager`]. Cheap to clone: clones share one pool.
pub struct Pool<M: Manager> {
    pub(crate) shared: Arc<Shared<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Manager> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Pool<M> {
    /// Starts configuring a pool of connections made by `manager`.
    pub fn builder(manager: M) -> Builder<M> {
        Builder::new(manager)
    }

    pub(crate) fn from_parts(manager: M, config: Config) -> Self {
        let shared = Arc::new(Shared::new(manager, config, None));
        shared.ensure_maintenance();
        Pool { shared }
    }

    /// A pool whose slots are taken from `budget` too, shared with other pools (a key pool of
    /// a [`KeyedPool`](crate::keyed::KeyedPool)).
    pub(crate) fn with_budget(manager: M, config: Config, budget: &Arc<Budget>) -> Self {
        let shared = Arc::new_cyclic(|me: &Weak<Shared<M>>| {
            let me: Weak<dyn Member> = me.clone();
            let account = Account::new(Arc::clone(budget), me);
            Shared::new(manager, config, Some(account))
        });
        shared.ensure_maintenance();
        Pool { shared }
    }

    /// The manager this pool was built with.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }

    /// Checks out a connection: an idle one that passes its check (skipped when it was used
    /// within the check interval), else a new one while below `max_size`, else the first one
    /// returned to the line of waiters, served in order, up to `wait_timeout`. A connection
    /// that fails its check is closed and the caller opens a fresh one in its slot; a connect
    /// that fails is retried with backoff until `wait_timeout` (see [`Builder::fail_fast`]).
    /// Either way the caller keeps its place in line, ahead of callers that came later.
    ///
    /// Needs a Tokio runtime (any one: a pool may be used from several, one after another or
    /// at once): connects run in tasks of their own.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] says which timeout fired, and after a wait (or failed connects
    /// retried until `wait_timeout`) carries the last connect error; [`PoolError::Connect`]
    /// when the connect made for this caller failed and the pool fails fast;
    /// [`PoolError::Closed`] once [`close`](Pool::close) was called.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future at any point leaks nothing. A caller in line leaves
    /// it, and a connection handed to it in that instant goes to the next waiter; a connect
    /// started for it runs on and its connection goes to the next waiter or idle; a connection
    /// dropped in the middle of its check is closed, since its state is unknown.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        self.checkout(true, std::panic::Location::caller())
    }

    /// Like [`get`](Pool::get), but never waits in line: when no connection is idle and the
    /// pool is at `max_size` it fails at once with
    /// [`TimeoutKind::Wait`](crate::TimeoutKind::Wait). It still checks an idle connection,
    /// or opens a new one when there is room (once: a failed connect is returned as
    /// [`PoolError::Connect`], not retried).
    ///
    /// # Errors
    /// As [`get`](Pool::get).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`get`](Pool::get).
    #[track_caller]
    pub fn try_get(
        &self,
    ) -> impl Future<Output = Result<Pooled<M>, PoolError<M::Error>>> + Send + '_ {
        self.checkout(false, std::panic::Location::caller())
    }

    /// A consistent snapshot of sizes and counters. Takes the lock briefly.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// True once [`close`](Pool::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Closes the pool: later checkouts and leases fail with [`PoolError::Closed`], every
    /// waiter fails with it at once, idle connections are closed through [`Manager::close`],
    /// connections that carry leases (or are being reset) take no new one and close as their
    /// last lease (or reset) ends, which this future waits for up to `close_timeout`, and
    /// checked-out connections are closed when they come back. Calling it again does nothing.
    ///
    /// # Cancel safety
    /// The pool is closed at the first poll. Dropping the future afterwards does not stop the
    /// idle connections from being closed (that runs in a task of its own), nor the leased
    /// ones as their leases end.
    pub async fn close(&self) {
        let (idle, shared_idle, waiters) = self.shared.locked(|state| {
            state.closed = true;
            let idle = state.evict(|_, _| true);
            let shared_idle = state.evict_shared(|_, _| true);
            state.drain_shared(false, |_| true);
            (idle, shared_idle, state.waiters.close_all())
        });
        // Each waiter wakes with `Closed`.
        waiters.into_iter().for_each(Waker::wake);
        tracing::debug!(idle = idle.len() + shared_idle.len(), "pool closed");
        for conn in shared_idle {
            self.shared.close_shared(conn);
        }
        let shared = Arc::clone(&self.shared);
        let limit = shared.config.close_timeout;
        let closing = tokio::spawn(async move {
            // Each within the close timeout, side by side.
            let closes = idle
                .into_iter()
                .map(|live| shared.close_within_timeout(live.conn));
            let count = closes.len();
            futures::future::join_all(closes).await;
            Metrics::add(&shared.metrics.closed, count as u64);
        });
        if tokio::time::timeout(limit, self.settled()).await.is_err() {
            let orphans = self.shared.locked(|state| state.orphan_shared());
            tracing::warn!(
                timeout = ?limit,
                connections = orphans.len(),
                "leases still held at close; their connections close as the leases end"
            );
            for conn in orphans {
                self.shared.close_shared(conn);
            }
        }
        let _ = closing.await;
    }

    /// Resolves once no shared connection is left (every lease ended after the pool closed),
    /// none is out for its check, and no reset runs (each reset's connection is closed as its
    /// reset ends).
    async fn settled(&self) {
        loop {
            let mut drained = std::pin::pin!(self.shared.drained.notified());
            drained.as_mut().enable();
            if self
                .shared
                .locked(|state| state.streams.is_empty() && state.resetting + state.checking == 0)
            {
                return;
            }
            drained.await;
        }
    }

    /// Changes `max_size`. Growing hands the new slots to waiters at once; shrinking closes
    /// idle connections above the new size now, and checked-out ones as they come back.
    ///
    /// # Errors
    /// [`BuildError::ZeroMaxSize`], or [`BuildError::MinIdleAboveMax`] when `min_idle` would
    /// exceed the new size.
    pub fn resize(&self, max_size: usize) -> Result<(), BuildError> {
        let mut grants = Vec::new();
        let (evicted, shared_evicted) = self
            .shared
            .locked(|state| state.resize(max_size, &mut grants))?;
        grants.into_iter().flatten().for_each(Waker::wake);
        for live in evicted {
            self.shared.close_conn(live.conn);
        }
        for conn in shared_evicted {
            self.shared.close_shared(conn);
        }
        Ok(())
    }

    /// Keeps only the idle connections for which `keep` returns true; the others are closed
    /// and their slots freed. `keep` runs outside the pool's lock. Checked-out connections
    /// and connections that carry leases are not visited (they are borrowed). Returns how
    /// many were removed.
    pub fn retain(&self, mut keep: impl FnMut(&mut M::Connection, &ConnInfo) -> bool) -> usize {
        let idle: Vec<_> = self.shared.locked(|state| {
            let shared_idle = state.unshare_idle();
            state.idle.drain(..).chain(shared_idle).collect()
        });
        let mut removed = 0;
        for mut live in idle {
            if keep(&mut live.conn, &live.info) {
                self.shared.place(live);
            } else {
                removed += 1;
                self.shared.discard(live);
            }
        }
        if removed > 0 {
            self.shared.refill();
        }
        removed
    }
}
