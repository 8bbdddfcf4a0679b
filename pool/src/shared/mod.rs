//! The pool's shared core: taking connections in and out, opening and discarding them.

pub(crate) mod budget;
pub(crate) mod connect;
pub(crate) mod holds;
pub(crate) mod line;
pub(crate) mod maintain;
pub(crate) mod member;
pub(crate) mod reset;
pub(crate) mod state;

#[cfg(all(test, loom))]
mod loom_model;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError};
use std::task::Waker;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Manager;
use crate::Status;
use crate::config::Config;
use crate::lease::moves::Ended;
use crate::lease::streams::{Key, SharedConn, conn_ref, unwrap};
use crate::shared::budget::Account;
use crate::shared::state::{Live, Place, State};
use crate::status::Metrics;
use crate::sync::{Mutex, MutexGuard};

#[cfg(test)]
thread_local! {
    /// Locks taken on this thread; only in the crate's own test build, where a unit test
    /// counts the locks of the lease fast path (see `lease/guard.rs`).
    pub(crate) static LOCKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Starts its value (the pool's lock) on a pair of cache lines of its own, away from the
/// `Arc`'s counts that every lease changes outside the lock, so a lease taken on one core does
/// not pull the lock's line from under another core's critical section.
#[repr(align(128))]
pub(crate) struct Padded<T>(T);

/// Puts `value` in a slab, at a free place if there is one (`free` lists them); its place.
/// Inlined: called, it copied a waiter's slot once more on every join (`scripts/instr`).
#[inline(always)]
pub(crate) fn slab_insert<T>(slab: &mut Vec<Option<T>>, free: &mut Vec<usize>, value: T) -> usize {
    let Some(at) = free.pop() else {
        slab.push(Some(value));
        return slab.len() - 1;
    };
    slab[at] = Some(value);
    at
}

/// Everything the handles of one pool share.
pub(crate) struct Shared<M: Manager> {
    pub manager: M,
    pub config: Config,
    pub metrics: Metrics,
    state: Padded<Mutex<State<M::Connection>>>,
    /// True while a maintenance task runs (in whichever runtime started it).
    pub(crate) maintenance_started: AtomicBool,
    /// Told when a shared connection closes after the pool closed: `close` waits on it for
    /// the last leases to end.
    pub drained: Notify,
    /// The holds of `Pooled` and `Lease` guards, when tracked ([`Shared::start_hold`]).
    pub holds: holds::Holds,
    /// Wakes the background task to plan its next wake again (`Line::planned`).
    /// Its own `Arc`, so the task can wait on it without keeping the pool alive.
    pub rearm: Arc<Notify>,
}

impl<M: Manager> Shared<M> {
    /// A pool's shared core; `budget` is its account at a cap it shares with other pools
    /// (a key pool's), if any.
    pub fn new(manager: M, config: Config, budget: Option<Account>) -> Self {
        let state = State::new(config.max_size, config.min_idle, config.max_streams);
        Shared {
            manager,
            metrics: Metrics::new(&config.name),
            config,
            state: Padded(Mutex::new(State { budget, ..state })),
            maintenance_started: AtomicBool::new(false),
            drained: Notify::new(),
            holds: holds::Holds::default(),
            rearm: Arc::new(Notify::new()),
        }
    }

    /// Registers a hold taken at `at`, when holds are tracked: with `leak_threshold` set, or
    /// the `metrics` feature on (for the `pool.hold` histogram).
    #[inline]
    pub fn start_hold(&self, at: holds::Site) -> Option<holds::HoldKey> {
        let tracked = cfg!(feature = "metrics") || self.config.leak_threshold.is_some();
        if tracked { self.holds.start(at) } else { None }
    }

    /// Wakes the background task to plan again, if a move under the lock found it must.
    #[inline]
    pub fn rearm_maintenance(&self, rearm: bool) {
        if rearm {
            self.rearm.notify_one();
        }
    }

    /// Locks the state. Nothing panics while holding it, so a poisoned lock still holds
    /// consistent state and is used as it is.
    pub fn lock(&self) -> MutexGuard<'_, State<M::Connection>> {
        #[cfg(test)]
        LOCKS.with(|n| n.set(n.get() + 1));
        self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the move `f` under the lock, then checks the invariants before unlocking.
    #[inline]
    pub fn locked<R>(&self, f: impl FnOnce(&mut State<M::Connection>) -> R) -> R {
        let mut state = self.lock();
        let out = f(&mut state);
        state.debug_check();
        out
    }

    /// A consistent snapshot of sizes and counters ([`Pool::status`](crate::Pool::status));
    /// with the `metrics` feature it sets the reported gauges too.
    pub fn status(&self) -> Status {
        let state = self.lock();
        let shared = state.streams.counts();
        let size = state.slots - state.connecting;
        let idle = state.idle.len() + shared.idle;
        let status = Status {
            max_size: state.max_size,
            size,
            idle,
            in_use: size.saturating_sub(idle + state.resetting),
            connecting: state.connecting,
            resetting: state.resetting,
            waiting: state.waiters.len(),
            leases: state.streams.leases,
            discarded: shared.unslotted,
            counters: self.metrics.snapshot(),
        };
        drop(state);
        self.metrics.publish(&status);
        status
    }

    /// Carries out a [`Place`] once the lock is released: wakes a served waiter, or closes a
    /// discarded connection.
    pub fn act(self: &Arc<Self>, place: Place<M::Connection>) {
        match place {
            Place::Wake(waker) => waker.into_iter().for_each(Waker::wake),
            Place::Discard(live) => self.close_conn(live.conn),
        }
    }

    /// Puts a healthy connection into the pool (to the oldest waiter, or idle).
    pub fn place(self: &Arc<Self>, live: Live<M::Connection>) {
        self.place_opened(live, 0);
    }

    /// Puts a connection just opened into the pool, taking off the `room` its connect
    /// promised to callers waiting for it (`opening_room`): the caller it was opened for is
    /// gone, so the oldest waiter takes it (and shares it, if it wants a lease).
    pub fn place_opened(self: &Arc<Self>, live: Live<M::Connection>, room: usize) {
        self.act(self.locked(|state| {
            state.opening_room -= room;
            state.place_conn(live)
        }));
    }

    /// Frees one slot (to the oldest waiter, or given up).
    pub fn release_slot(self: &Arc<Self>) {
        self.act(Place::Wake(self.locked(State::release_slot)));
    }

    /// Drops a connection from the pool: its slot frees at once, then it is closed.
    pub fn discard(self: &Arc<Self>, live: Live<M::Connection>) {
        self.release_slot();
        self.close_conn(live.conn);
    }

    /// [`Manager::is_broken`]; a panic counts as broken (the connection is discarded, its slot
    /// freed, and the panic not re-raised, since this runs in `Drop`).
    pub fn is_broken(&self, live: &mut Live<M::Connection>) -> bool {
        self.conn_is_broken(&mut live.conn)
    }

    /// Asks the manager `ask`; `panicked` is the answer when it panics.
    fn ask<R>(&self, panicked: R, ask: impl FnOnce(&M) -> R) -> R {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ask(&self.manager)))
            .unwrap_or(panicked)
    }

    /// [`Manager::is_retryable`]; a panic counts as retryable (the pool's default).
    pub fn is_retryable(&self, error: &M::Error) -> bool {
        self.ask(true, |manager| manager.is_retryable(error))
    }

    /// [`Manager::is_broken`] on a bare connection; a panic counts as broken.
    pub fn conn_is_broken(&self, conn: &mut M::Connection) -> bool {
        self.ask(true, |manager| manager.is_broken(conn))
    }

    /// [`Manager::is_broken_shared`]; a panic counts as broken.
    pub fn is_broken_shared(&self, conn: &M::Connection) -> bool {
        self.ask(true, |manager| manager.is_broken_shared(conn))
    }

    /// Ends a lease on the connection of `key`: under the lock, then wakes who was served and
    /// closes the connection if its last lease retired it.
    pub fn end_lease(self: &Arc<Self>, conn: SharedConn, key: Key, broken: bool) {
        let broken = broken
            || conn_ref::<M::Connection>(&conn).is_some_and(|conn| self.is_broken_shared(conn));
        let ended = self
            .lock()
            .lease_ended(conn, key, broken, |c| self.conn_is_broken(c));
        if let Some(ended) = ended {
            self.after_lease(ended);
        }
    }

    /// A caller that wanted a connection of its own has left the line (served, timed out or
    /// gone): the connection kept from new leases for it may take them again, so callers
    /// waiting for a lease are served wherever there is room.
    pub fn unstick_leasers(self: &Arc<Self>) {
        let mut wakes = Vec::new();
        self.locked(|state| state.serve_leasers_anywhere(&mut wakes));
        wakes.into_iter().flatten().for_each(Waker::wake);
    }

    /// Carries out what ending a lease left to do, outside the lock. Inlined for the common
    /// end, which leaves nothing to do.
    #[inline(always)]
    pub fn after_lease(self: &Arc<Self>, ended: Ended) {
        if ended.broke || ended.wakes.capacity() != 0 || ended.close.is_some() {
            self.carry_out(ended);
        } else {
            // It owns nothing (no waker list was allocated, no connection to close): forgotten
            // rather than dropped, so the common end makes no call to its drop glue.
            std::mem::forget(ended);
        }
    }

    /// [`after_lease`](Self::after_lease) when there is something to do.
    fn carry_out(self: &Arc<Self>, ended: Ended) {
        if ended.broke {
            Metrics::bump(&self.metrics.broken);
            tracing::debug!("a shared connection is broken; it closes after its last lease");
        }
        ended.wakes.into_iter().flatten().for_each(Waker::wake);
        if let Some(conn) = ended.close {
            self.close_shared(conn);
        }
    }

    /// Closes a shared connection once its `Arc` is the last one (a later holder closes it
    /// otherwise), and tells `close` a shared connection is gone. The `Arc` is let go under
    /// the lock, as every other one is (lib.rs's Decisions say why).
    pub fn close_shared(self: &Arc<Self>, conn: SharedConn) {
        if let Some(conn) = self.locked(|_| unwrap::<M::Connection>(conn)) {
            self.close_conn(conn);
        }
        self.drained.notify_waiters();
    }

    /// A connection comes back from its user.
    pub fn give_back(self: &Arc<Self>, mut live: Live<M::Connection>, marked_broken: bool) {
        if marked_broken || self.is_broken(&mut live) {
            Metrics::bump(&self.metrics.broken);
            tracing::debug!("discarding a connection that came back broken");
            return self.discard(live);
        }
        let now = Instant::now();
        if live.info.expired(now) {
            tracing::debug!("discarding a connection past its max_lifetime");
            return self.discard(live);
        }
        live.info.last_used = now;
        // A panicking `needs_reset` leaves the connection's state unknown: it is discarded.
        match self.ask(None, |manager| Some(manager.needs_reset(&live.conn))) {
            Some(false) => self.act(self.locked(|state| state.place_conn(live))),
            Some(true) => self.start_reset(live),
            None => {
                tracing::debug!("needs_reset panicked; discarding the connection");
                self.discard(live);
            }
        }
    }

    /// Closes a connection through the manager, in a task of its own when a runtime is at
    /// hand (the caller may be a `Drop`), else by dropping it.
    pub fn close_conn(self: &Arc<Self>, conn: M::Connection) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(conn);
            return Metrics::bump(&self.metrics.closed);
        };
        let shared = Arc::clone(self);
        runtime.spawn(async move {
            shared.close_within_timeout(conn).await;
            Metrics::bump(&shared.metrics.closed);
        });
    }

    /// [`Manager::close`] within the close timeout. A close that times out is dropped, and one
    /// that panics is caught, so it stops no other close running beside it.
    pub async fn close_within_timeout(&self, conn: M::Connection) {
        use futures::FutureExt;
        let limit = self.config.close_timeout;
        let close = std::panic::AssertUnwindSafe(self.manager.close(conn)).catch_unwind();
        match tokio::time::timeout(limit, close).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!("Manager::close panicked; the connection was dropped"),
            Err(_elapsed) => {
                tracing::warn!(timeout = ?limit, "close timed out; the connection was dropped");
            }
        }
    }
}
