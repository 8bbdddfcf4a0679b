//! The background task: closes expired connections and keeps `min_idle` filled.

use std::sync::Weak;

use tokio::time::{Instant, MissedTickBehavior};

use crate::Manager;
use crate::inner::Shared;

/// Runs until the pool is closed or every handle to it is gone. It holds only a weak
/// reference between ticks, so it never keeps a dropped pool alive.
pub(crate) async fn run<M: Manager>(pool: Weak<Shared<M>>) {
    let every = match pool.upgrade() {
        Some(shared) => shared.config.effective_reap_interval(),
        None => return,
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: min_idle fills as soon as the pool is built.
        ticks.tick().await;
        let Some(shared) = pool.upgrade() else { return };
        if shared.lock().closed {
            return;
        }
        reap(&shared, Instant::now());
        shared.refill();
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
