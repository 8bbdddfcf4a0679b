//! [`Status`]: a cheap snapshot of a pool's size and counters; and [`Metrics`], the live
//! counters behind it, which the `metrics` feature reports with the sampled gauges.

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
    /// Open connections the pool owns, each holding a slot counted against `max_size`: idle
    /// plus in use, not [`discarded`](Status::discarded). Never above `max_size` once a shrink
    /// has drained ([`resize`](crate::Pool::resize)).
    pub size: usize,
    /// Open connections waiting in the pool (with no lease).
    pub idle: usize,
    /// Connections held by [`get`](crate::Pool::get) or carrying at least one lease (or being
    /// checked on their way out).
    pub in_use: usize,
    /// Leases held now, over every connection ([`Pool::lease`](crate::Pool::lease)),
    /// those on [`discarded`](Status::discarded) connections included.
    pub leases: usize,
    /// Connections the pool let go of while leases still borrow them: found broken (their
    /// leases may still be failing their last requests), or shrunk away by
    /// [`resize`](crate::Pool::resize). They take no new lease and hold no slot (so
    /// replacements may open beside them); each closes once its last lease ends. Not in
    /// `size` or `in_use`.
    pub discarded: usize,
    /// Connects in flight; each holds a slot counted against `max_size`.
    pub connecting: usize,
    /// Connections being reset after they came back dirty
    /// ([`Manager::needs_reset`](crate::Manager::needs_reset)): they hold their slot and count
    /// in `size` (not in `idle` or `in_use`), and go to no one until their reset succeeded.
    pub resetting: usize,
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
    /// Resets run on connections that came back dirty, failed ones included.
    pub resets: u64,
    /// Resets that failed, panicked or ran past the reset timeout (each discarded its
    /// connection).
    pub reset_failures: u64,
    /// Connections and leases held longer than `leak_threshold`, each counted once, while
    /// still held.
    pub leaks: u64,
    /// Checkouts that had to wait in line.
    pub waited: u64,
    /// Total time spent waiting in line.
    pub wait_time: Duration,
}

/// One live counter: an atomic, and with the `metrics` feature the facade's counter beside it.
pub(crate) struct Count {
    n: AtomicU64,
    #[cfg(feature = "metrics")]
    reported: metrics::Counter,
}

impl Count {
    fn new(_name: &'static str, _pool: &str) -> Self {
        Count {
            n: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            reported: metrics::counter!(_name, labels(_pool)),
        }
    }

    fn get(&self) -> u64 {
        self.n.load(Relaxed)
    }
}

/// The labels of every metric of the pool named `name`.
#[cfg(feature = "metrics")]
fn labels(name: &str) -> Vec<metrics::Label> {
    vec![metrics::Label::new("pool", name.to_owned())]
}

/// A reported gauge: its name, and its value in a [`Status`].
#[cfg(feature = "metrics")]
type Gauge = (&'static str, fn(&Status) -> usize);

#[cfg(feature = "metrics")]
const GAUGES: [Gauge; 8] = [
    ("pool.connections", |s| s.size),
    ("pool.connections.idle", |s| s.idle),
    ("pool.connections.in_use", |s| s.in_use),
    ("pool.connections.discarded", |s| s.discarded),
    ("pool.leases", |s| s.leases),
    ("pool.waiting", |s| s.waiting),
    ("pool.connecting", |s| s.connecting),
    ("pool.max_size", |s| s.max_size),
];

/// The live counters behind [`Counters`], bumped without the lock. With the `metrics` feature
/// each bump, wait and hold is reported through the facade too (the crate docs, "Metrics").
pub(crate) struct Metrics {
    pub created: Count,
    pub closed: Count,
    pub broken: Count,
    pub check_failures: Count,
    pub connect_failures: Count,
    pub timeouts: Count,
    pub resets: Count,
    pub reset_failures: Count,
    pub leaks: Count,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    /// In the order of [`GAUGES`].
    #[cfg(feature = "metrics")]
    gauges: [metrics::Gauge; 8],
    #[cfg(feature = "metrics")]
    wait: metrics::Histogram,
    #[cfg(feature = "metrics")]
    hold: metrics::Histogram,
}

impl Metrics {
    /// Counters at zero, reported with the pool's `name` as their label.
    pub(crate) fn new(name: &str) -> Self {
        Metrics {
            created: Count::new("pool.connections.created", name),
            closed: Count::new("pool.connections.closed", name),
            broken: Count::new("pool.connections.broken", name),
            check_failures: Count::new("pool.checks.failed", name),
            connect_failures: Count::new("pool.connects.failed", name),
            timeouts: Count::new("pool.timeouts", name),
            resets: Count::new("pool.resets", name),
            reset_failures: Count::new("pool.resets.failed", name),
            leaks: Count::new("pool.leaks", name),
            waited: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            gauges: GAUGES.map(|(gauge, _)| metrics::gauge!(gauge, labels(name))),
            #[cfg(feature = "metrics")]
            wait: metrics::histogram!("pool.wait", labels(name)),
            #[cfg(feature = "metrics")]
            hold: metrics::histogram!("pool.hold", labels(name)),
        }
    }

    pub(crate) fn bump(counter: &Count) {
        Metrics::add(counter, 1);
    }

    pub(crate) fn add(counter: &Count, n: u64) {
        counter.n.fetch_add(n, Relaxed);
        #[cfg(feature = "metrics")]
        counter.reported.increment(n);
    }

    /// A connection or lease was held this long (the `pool.hold` histogram).
    pub(crate) fn record_hold(&self, _held: Duration) {
        #[cfg(feature = "metrics")]
        self.hold.record(_held.as_secs_f64());
    }

    pub(crate) fn record_wait(&self, waited: Duration) {
        self.waited.fetch_add(1, Relaxed);
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Relaxed);
        #[cfg(feature = "metrics")]
        self.wait.record(waited.as_secs_f64());
    }

    /// Sets the reported gauges from a snapshot of the pool (nothing without the `metrics`
    /// feature).
    pub(crate) fn publish(&self, _status: &Status) {
        #[cfg(feature = "metrics")]
        for ((_, value), gauge) in GAUGES.iter().zip(&self.gauges) {
            gauge.set(value(_status) as f64);
        }
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            created: self.created.get(),
            closed: self.closed.get(),
            broken: self.broken.get(),
            check_failures: self.check_failures.get(),
            connect_failures: self.connect_failures.get(),
            timeouts: self.timeouts.get(),
            resets: self.resets.get(),
            reset_failures: self.reset_failures.get(),
            leaks: self.leaks.get(),
            waited: self.waited.load(Relaxed),
            wait_time: Duration::from_nanos(self.wait_nanos.load(Relaxed)),
        }
    }
}
