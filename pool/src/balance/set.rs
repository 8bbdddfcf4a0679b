//! The endpoint set behind a [`Balanced`](super::Balanced): placement of new connections,
//! failures and ejection, and rebalancing onto an endpoint that joined or came back.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::time::Instant;

use super::endpoint::{Endpoint, Tag};
use super::{Ejection, SetError};

/// The set, shared by the manager and the timers that end ejections.
pub(crate) struct Set<M> {
    table: Mutex<Table<M>>,
    /// How many more connections may be retired to move load onto an endpoint that has too
    /// little; 0 almost always, so `is_broken` pays one relaxed load for it.
    rebalance: AtomicUsize,
}

/// The endpoints, in the order they were added, and the ejection policy. A removed endpoint
/// stays listed (flagged) until its last connection closes.
pub(crate) struct Table<M> {
    pub endpoints: Vec<Arc<Endpoint<M>>>,
    /// Where the next placement starts looking, so ties rotate.
    cursor: usize,
    pub ejection: Ejection,
}

impl<M: Send + Sync + 'static> Set<M> {
    pub fn new() -> Self {
        Set {
            table: Mutex::new(Table {
                endpoints: Vec::new(),
                cursor: 0,
                ejection: Ejection::default(),
            }),
            rebalance: AtomicUsize::new(0),
        }
    }

    pub fn table(&self) -> MutexGuard<'_, Table<M>> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget removed endpoints whose last connection closed.
        table
            .endpoints
            .retain(|e| !e.is_removed() || e.live.load(Relaxed) + e.connecting.load(Relaxed) > 0);
        table
    }

    pub fn add(&self, name: String, manager: M) -> Result<(), SetError> {
        let mut table = self.table();
        if table.endpoints.iter().any(|e| e.is_named(&name)) {
            return Err(SetError::Duplicate(name));
        }
        table.endpoints.push(Arc::new(Endpoint::new(name, manager)));
        drop(table);
        // The newcomer has nothing: move connections onto it (the pool may be full).
        self.want_rebalance();
        Ok(())
    }

    /// Asks for connections to move onto an endpoint that has too little: at most as many as
    /// the set carries.
    fn want_rebalance(&self) {
        let live = self.table().endpoints.iter().map(|e| e.load()).sum();
        self.rebalance.fetch_max(live, Relaxed);
    }

    /// Makes the set the `(name, manager)` endpoints of `found`: removes (drains) those no
    /// longer found, adds the new names (`add` refuses the others, which keep their health).
    pub fn sync(&self, found: Vec<(String, M)>) {
        for endpoint in &self.table().endpoints {
            if !endpoint.is_removed() && !found.iter().any(|(name, _)| *name == endpoint.name) {
                endpoint.remove();
            }
        }
        for (name, manager) in found {
            if self.add(name.clone(), manager).is_ok() {
                tracing::info!(endpoint = %name, "endpoint discovered");
            }
        }
    }

    /// The endpoint for the next connect, counted as connecting: the healthy one (not
    /// ejected, or ejected with its backoff over and no probe in flight) with the least load,
    /// ties rotating; none of `tried`. When none is healthy and nothing was tried yet, the
    /// ejected one whose backoff ends first, rather than failing for nothing.
    pub fn pick(&self, now: Instant, tried: &[Arc<Endpoint<M>>]) -> Option<Arc<Endpoint<M>>> {
        let mut table = self.table();
        let start = table.cursor;
        table.cursor = table.cursor.wrapping_add(1);
        let count = table.endpoints.len();
        let best = (0..count)
            .map(|offset| &table.endpoints[(start + offset) % count])
            .filter(|e| !e.is_removed() && !tried.iter().any(|t| Arc::ptr_eq(t, e)))
            .filter(|e| {
                let health = e.health();
                health
                    .ejected_until
                    .is_none_or(|until| now >= until && !health.probing)
            })
            .min_by_key(|e| e.load());
        let endpoint = match best {
            Some(endpoint) => endpoint,
            None if tried.is_empty() => table
                .endpoints
                .iter()
                .filter(|e| !e.is_removed())
                .min_by_key(|e| e.health().ejected_until)?,
            None => return None,
        };
        let mut health = endpoint.health();
        health.probing |= health.ejected_until.is_some();
        drop(health);
        endpoint.connecting.fetch_add(1, Relaxed);
        Some(Arc::clone(endpoint))
    }

    /// A connect to `endpoint` succeeded: its failures in a row end, and an ejected endpoint
    /// is back (connections may then move onto it).
    pub fn connected(&self, endpoint: &Endpoint<M>, now: Instant) {
        let mut health = endpoint.health();
        health.failures_in_row = 0;
        health.probing = false;
        if health.ejected_until.take().is_none() {
            return;
        }
        health.recovered_at = Some(now);
        drop(health);
        tracing::info!(endpoint = %endpoint.name, "endpoint back after its ejection");
        self.want_rebalance();
    }

    /// A failure of `endpoint` (a connect failed or was dropped, a connection broke, a check
    /// failed): ejects it after `ejection.after` in a row, or again when its probe failed.
    pub fn failed(self: &Arc<Self>, endpoint: &Endpoint<M>, now: Instant, connect: bool) {
        let policy = self.table().ejection;
        let mut health = endpoint.health();
        health.failures += 1;
        health.failures_in_row = health.failures_in_row.saturating_add(1);
        let probe_failed = connect && std::mem::take(&mut health.probing);
        let eject = match health.ejected_until {
            Some(_) => probe_failed,
            None => health.failures_in_row >= policy.after,
        };
        if !eject {
            return;
        }
        // Healthy for a whole `max` since it came back: start again from `base`.
        let calm = health
            .recovered_at
            .is_some_and(|at| now.saturating_duration_since(at) >= policy.max);
        let ejections = if calm { 0 } else { health.ejections }.saturating_add(1);
        health.ejections = ejections;
        let until = now + policy.jittered(ejections);
        health.ejected_until = Some(until);
        drop(health);
        tracing::warn!(
            endpoint = %endpoint.name,
            ejections,
            for_ms = until.saturating_duration_since(now).as_millis() as u64,
            "endpoint ejected after failures in a row"
        );
        self.wake_at(until);
    }

    /// When an ejection ends, asks for one connection to be moved, so the pool connects
    /// again and the endpoint gets its probe even when the pool is full. Without a runtime
    /// (never, in the pool) the probe waits for the pool's next connect.
    fn wake_at(self: &Arc<Self>, until: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let set: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep_until(until).await;
            if let Some(set) = set.upgrade() {
                set.rebalance.fetch_max(1, Relaxed);
            }
        });
    }

    /// Whether the connection tagged `tag` should drain to move load onto an endpoint that
    /// has too little: only while a rebalance is wanted, and only from an endpoint carrying at
    /// least two connections more than the least loaded one that can take one.
    pub fn retire_to_rebalance(&self, tag: &Tag<M>) -> bool {
        if self.rebalance.load(Relaxed) == 0 || !tag.takes_work() {
            return false;
        }
        let now = Instant::now();
        let table = self.table();
        let mut open = table.endpoints.iter().filter(|e| !e.is_removed());
        let least = open
            .clone()
            .filter(|e| {
                let health = e.health();
                health
                    .ejected_until
                    .is_none_or(|until| now >= until || health.probing)
            })
            .map(|e| e.load())
            .min();
        let donor = |e: &Endpoint<M>| least.is_some_and(|least| e.load() >= least + 2);
        if !donor(&tag.endpoint) {
            // Is any endpoint still a donor? If not, the wish is fulfilled.
            if !open.any(|e| donor(e)) {
                self.rebalance.store(0, Relaxed);
            }
            return false;
        }
        let taken = self
            .rebalance
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        drop(table);
        if taken && tag.drain() {
            tracing::debug!(from = %tag.endpoint.name, "connection retired to rebalance endpoints");
            return true;
        }
        false
    }
}
