//! [`Status`]: a cheap snapshot of a pool's size and counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of a pool, from [`Pool::status`](crate::Pool::status).
///
/// The sizes are read together under the pool's lock, so they are consistent with each other;
/// the counters are read without it and may run a few events ahead of the sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The current maximum number of connections.
    pub max_size: usize,
    /// Open connections the pool owns: idle plus in use.
    pub size: usize,
    /// Open connections waiting in the pool (with no lease).
    pub idle: usize,
    /// Connections held by [`get`](crate::Pool::get) or carrying at least one lease (or being
    /// checked on their way out).
    pub in_use: usize,
    /// Leases held now, over every connection ([`Pool::lease`](crate::Pool::lease)).
    pub leases: usize,
    /// Connects in flight; each holds a slot counted against `max_size`.
    pub connecting: usize,
    /// Callers waiting in line for a connection.
    pub waiting: usize,
    /// Counters since the pool was built.
    pub counters: Counters,
}

/// Event counters of a pool, part of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Connections opened.
    pub created: u64,
    /// Connections the pool discarded and closed (broken, failed check, expired, closed pool).
    pub closed: u64,
    /// Connections discarded because they came back broken or were marked broken.
    pub broken: u64,
    /// Checks that failed or timed out.
    pub check_failures: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Timeouts of any kind returned to callers.
    pub timeouts: u64,
    /// Checkouts that had to wait in line.
    pub waited: u64,
    /// Total time spent waiting in line.
    pub wait_time: Duration,
}

/// The live counters behind [`Counters`]; bumped without the lock.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub created: AtomicU64,
    pub closed: AtomicU64,
    pub broken: AtomicU64,
    pub check_failures: AtomicU64,
    pub connect_failures: AtomicU64,
    pub timeouts: AtomicU64,
    pub waited: AtomicU64,
    pub wait_nanos: AtomicU64,
}

impl Metrics {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_wait(&self, waited: Duration) {
        self.waited.fetch_add(1, Relaxed);
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            created: self.created.load(Relaxed),
            closed: self.closed.load(Relaxed),
            broken: self.broken.load(Relaxed),
            check_failures: self.check_failures.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            waited: self.waited.load(Relaxed),
            wait_time: Duration::from_nanos(self.wait_nanos.load(Relaxed)),
        }
    }
}
