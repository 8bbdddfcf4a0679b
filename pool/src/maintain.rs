//! The background task: closes expired connections and keeps `min_idle` filled.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Manager;
use crate::inner::Shared;

/// Runs until the pool is closed or every handle to it is gone. It holds only a weak
/// reference between rounds, so it never keeps a dropped pool alive.
///
/// Each round closes expired connections and refills `min_idle` (every reap interval), and
/// times out the waiters whose deadline has passed: one timer for the whole line, instead of
/// one per waiting caller. It sleeps until the next of the two, or until `sweeper` says a
/// waiter with an earlier deadline joined.
pub(crate) async fn run<M: Manager>(pool: Weak<Shared<M>>, sweeper: Arc<Notify>) {
    let every = match pool.upgrade() {
        Some(shared) => shared.config.effective_reap_interval(),
        None => return,
    };
    // The first round runs at once: min_idle fills as soon as the pool is built.
    let mut next_reap = Instant::now();
    loop {
        let wake_at = {
            let Some(shared) = pool.upgrade() else { return };
            let now = Instant::now();
            if shared.lock().closed {
                return;
            }
            if now >= next_reap {
                reap(&shared, now);
                shared.refill();
                next_reap = now + every;
            }
            let (expired, next_deadline) = shared.lock().waiters.expire(now);
            if !expired.is_empty() {
                tracing::debug!(count = expired.len(), "waiters timed out");
            }
            for waker in expired {
                waker.wake();
            }
            next_deadline.map_or(next_reap, |at| at.min(next_reap))
        };
        let sleep = std::pin::pin!(tokio::time::sleep_until(wake_at));
        let told = std::pin::pin!(sweeper.notified());
        futures::future::select(sleep, told).await;
    }
}

/// Closes idle connections past their max lifetime, and those idle longer than
/// `idle_timeout` while more than `min_idle` are idle. The oldest go first.
pub(crate) fn reap<M: Manager>(shared: &std::sync::Arc<Shared<M>>, now: Instant) {
    let idle_timeout = shared.config.idle_timeout;
    let evicted = {
        let mut state = shared.lock();
        let min_idle = state.min_idle;
        // `remaining` is the idle count before this eviction, the kept ones included.
        let evicted = state.evict(|live, remaining| {
            let stale = idle_timeout
                .is_some_and(|t| now.saturating_duration_since(live.info.last_used) >= t);
            live.info.expired(now) || (stale && remaining > min_idle)
        });
        state.debug_check();
        evicted
    };
    if !evicted.is_empty() {
        tracing::debug!(count = evicted.len(), "closing expired idle connections");
    }
    for live in evicted {
        shared.close_conn(live.conn);
    }
}
