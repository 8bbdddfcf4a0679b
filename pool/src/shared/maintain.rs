//! The background task: closes expired connections, keeps `min_idle` filled, and times out
//! the callers in line (the line's one timer, see [`crate::shared::line`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::streams::SharedConn;
use crate::shared::state::{Live, State};
use crate::shared::{Shared, holds};
use crate::{ConnInfo, Manager};

/// Runs until the pool is closed or every handle to it is gone, holding only a weak reference
/// between rounds, so it never keeps a dropped pool alive. It dies with the runtime that
/// started it ([`Running`] says what follows).
pub(crate) async fn run<M: Manager>(pool: Weak<Shared<M>>) {
    let mut running = Running(pool.clone());
    let runtime = tokio::runtime::Handle::current().id();
    let Some(shared) = pool.upgrade() else { return };
    let every = shared.config.effective_reap_interval();
    let sample = shared.config.metrics_interval.max(Duration::from_millis(1));
    let scan = shared.config.leak_threshold;
    let rearm = Arc::clone(&shared.rearm);
    drop(shared);
    let mut next_round = Instant::now();
    let mut next_expiry = None;
    loop {
        let wake = {
            let Some(shared) = pool.upgrade() else { return };
            if shared.lock().closed {
                // Ended for good: a closed pool needs no maintenance, so the mark stays set.
                running.0 = Weak::new();
                return;
            }
            let now = Instant::now();
            if now >= next_round || next_expiry.is_some_and(|expiry| now >= expiry) {
                reap(&shared, now);
                shared.refill();
                if now >= next_round {
                    next_round = now + every;
                }
            }
            if cfg!(feature = "metrics") {
                // Samples the gauges, between rounds too (without reaping there).
                let _ = shared.status();
            }
            if let Some(threshold) = scan {
                shared.holds.scan(now, threshold, &shared.metrics);
            }
            // A connection created after this round expires after the next one (the round
            // comes at most half a lifetime apart), so that round sees it; one held by `get`
            // meanwhile wakes this task to plan again when it is shared (`Shared::rearm`).
            let mut state = shared.lock();
            let timed_out = state.waiters.time_out_expired(now);
            next_expiry = state.next_expiry();
            let wakes = [
                next_expiry,
                state.waiters.earliest_deadline(),
                cfg!(feature = "metrics").then(|| now + sample),
                scan.map(|every| now + every.clamp(holds::SCAN_MIN, holds::SCAN_EVERY)),
            ];
            let wake = wakes.into_iter().flatten().fold(next_round, Instant::min);
            state.waiters.timed_by(runtime, wake);
            drop(state);
            timed_out.into_iter().for_each(Waker::wake);
            wake
        };
        // A rearm that came after the plan above left a permit: this returns at once.
        let _ = tokio::time::timeout_at(wake, rearm.notified()).await;
    }
}

/// Marks the maintenance task as running; dropped with the task (its runtime shut down, or
/// the pool is gone), it tells the callers in line to time themselves out, and clears the
/// mark so that the next checkout starts a new one. Emptied when the pool closed.
struct Running<M: Manager>(Weak<Shared<M>>);

impl<M: Manager> Drop for Running<M> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            let wakers = shared.lock().waiters.timer_lost();
            shared.maintenance_started.store(false, Ordering::Release);
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

/// Closes idle connections past their max lifetime, and those idle longer than
/// `idle_timeout` while more than `min_idle` are idle. The oldest go first. Shared
/// connections past their lifetime that carry leases drain: no new lease, closed after their
/// last.
fn reap<M: Manager>(shared: &Arc<Shared<M>>, now: Instant) {
    let idle_timeout = shared.config.idle_timeout;
    let (evicted, shared_evicted) = shared.locked(|state| state.reap(now, idle_timeout));
    let count = evicted.len() + shared_evicted.len();
    if count > 0 {
        tracing::debug!(count, "closing expired idle connections");
    }
    for live in evicted {
        shared.close_conn(live.conn);
    }
    for conn in shared_evicted {
        shared.close_shared(conn);
    }
}

impl<C: 'static> State<C> {
    /// [`reap`]'s move under the lock: takes out the idle connections it closes, of both
    /// forms, and drains the shared ones past their lifetime that carry leases.
    pub fn reap(
        &mut self,
        now: Instant,
        idle_timeout: Option<Duration>,
    ) -> (Vec<Live<C>>, Vec<SharedConn>) {
        let min_idle = self.min_idle;
        let retire = |info: &ConnInfo, remaining: usize| {
            let stale = idle_timeout.is_some_and(|t| info.check_due(now, t));
            info.expired(now) || (stale && remaining > min_idle)
        };
        // `remaining` is the idle count before this eviction, the kept ones included.
        let evicted = self.evict(|live, remaining| retire(&live.info, remaining));
        let shared_evicted = self.evict_shared(retire);
        // A lease on a connection that carries leases reads no clock (`State::place_lease`),
        // so one past its lifetime drains here.
        self.drain_shared(false, |info| info.expired(now));
        (evicted, shared_evicted)
    }
}

impl<M: Manager> Shared<M> {
    /// Starts the background task when none runs and a runtime is at hand: on the first
    /// checkout, and again after the runtime that ran it shut down.
    pub fn ensure_maintenance(self: &Arc<Self>) {
        if !self.maintenance_started.load(Ordering::Acquire)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.maintenance_started.swap(true, Ordering::AcqRel)
        {
            runtime.spawn(run(Arc::downgrade(self)));
        }
    }
}
