//! The `metrics` feature: the pool reports its gauges, counters and wait times
//! through the `metrics` facade, labelled with its name. The pool's tests build it with the
//! feature (pool/Cargo.toml), so `cargo test --workspace` runs these; without the feature
//! this file is empty.
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use metrics::with_local_recorder;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::{Mock, Plan};

/// What the recorder reported so far, per (kind, name, pool label). A snapshot of the
/// debugging recorder drains it (counters and gauges back to 0, histograms emptied), so
/// [`Seen::take`] adds counters and samples up, and keeps each gauge as the snapshot had it:
/// take one right after the gauges were sampled.
struct Seen {
    snapshotter: Snapshotter,
    values: HashMap<(MetricKind, String, String), DebugValue>,
}

impl Seen {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Seen {
            snapshotter: recorder.snapshotter(),
            values: HashMap::new(),
        }
    }

    /// Takes a snapshot from the recorder into what was seen.
    fn take(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let label = key
                .key()
                .labels()
                .find(|label| label.key() == "pool")
                .map(|label| label.value().to_owned())
                .unwrap_or_default();
            let at = (key.kind(), key.key().name().to_owned(), label);
            let merged = match (self.values.remove(&at), value) {
                (Some(DebugValue::Counter(old)), DebugValue::Counter(new)) => {
                    DebugValue::Counter(old + new)
                }
                (Some(DebugValue::Histogram(mut old)), DebugValue::Histogram(new)) => {
                    old.extend(new);
                    DebugValue::Histogram(old)
                }
                (_, new) => new,
            };
            self.values.insert(at, merged);
        }
    }

    fn value(&self, kind: MetricKind, name: &str, pool: &str) -> Option<DebugValue> {
        match self.values.get(&(kind, name.to_owned(), pool.to_owned()))? {
            DebugValue::Counter(n) => Some(DebugValue::Counter(*n)),
            DebugValue::Gauge(n) => Some(DebugValue::Gauge(*n)),
            DebugValue::Histogram(samples) => Some(DebugValue::Histogram(samples.clone())),
        }
    }

    fn counter(&self, name: &str, pool: &str) -> u64 {
        match self.value(MetricKind::Counter, name, pool) {
            Some(DebugValue::Counter(n)) => n,
            other => panic!("counter {name} of {pool}: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, pool: &str) -> f64 {
        match self.value(MetricKind::Gauge, name, pool) {
            Some(DebugValue::Gauge(n)) => n.into_inner(),
            other => panic!("gauge {name} of {pool}: {other:?}"),
        }
    }

    fn waits(&self, pool: &str) -> Vec<f64> {
        match self.value(MetricKind::Histogram, "pool.wait", pool) {
            Some(DebugValue::Histogram(samples)) => {
                samples.into_iter().map(|s| s.into_inner()).collect()
            }
            other => panic!("histogram pool.wait of {pool}: {other:?}"),
        }
    }
}

/// Counters follow events, gauges follow `status()`, a wait lands in the histogram, and two
/// pools are told apart by their `name` label.
#[tokio::test(start_paused = true)]
async fn two_pools_report_under_their_names() {
    let recorder = DebuggingRecorder::new();
    let mut seen = Seen::new(&recorder);
    let (mock_a, mock_b) = (Mock::new(), Mock::new());
    let (a, b) = with_local_recorder(&recorder, || {
        let a = pool::Pool::builder(mock_a.clone())
            .name("a")
            .max_size(1)
            .max_streams(2)
            .build()
            .expect("valid settings");
        let b = pool::Pool::builder(mock_b.clone())
            .name("b")
            .max_size(1)
            .wait_timeout(Duration::from_secs(1))
            .fail_fast(true)
            .build()
            .expect("valid settings");
        (a, b)
    });

    // Pool a: two leases on one connection, then a get that waits for both to end.
    let first = a.lease().await.expect("a lease");
    let second = a.lease().await.expect("a lease");
    let status = a.status();
    seen.take();
    assert_eq!(seen.gauge("pool.leases", "a"), 2.0);
    assert_eq!(seen.gauge("pool.connections", "a"), status.size as f64);
    assert_eq!(seen.gauge("pool.connections.in_use", "a"), 1.0);
    assert_eq!(seen.gauge("pool.max_size", "a"), 1.0);
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.get().await.map(drop) }
    });
    mock_a
        .until("a get waits", || a.status().waiting == 1)
        .await;
    seen.take();
    assert_eq!(seen.gauge("pool.waiting", "a"), 1.0);
    tokio::time::advance(Duration::from_millis(250)).await;
    drop((first, second));
    waiting.await.expect("no panic").expect("a connection");
    seen.take();
    // The 250 ms advanced, and the millisecond ticks of `until` before it.
    let waits = seen.waits("a");
    assert!(
        waits.len() == 1 && (0.25..0.26).contains(&waits[0]),
        "{waits:?}"
    );
    assert_eq!(seen.counter("pool.connections.created", "a"), 1);

    // Pool b: a failed connect, then a wait that times out, then a broken connection.
    mock_b.push_connect(Plan::fail("refused"));
    assert!(b.get().await.is_err());
    seen.take();
    assert_eq!(seen.counter("pool.connects.failed", "b"), 1);
    let held = b.get().await.expect("a connection");
    assert!(b.get().await.is_err(), "the one connection is out");
    seen.take();
    assert_eq!(seen.counter("pool.timeouts", "b"), 1);
    let mut held = held;
    pool::Pooled::mark_broken(&mut held);
    drop(held);
    mock_b.until_closes(1).await;
    seen.take();
    assert_eq!(seen.counter("pool.connections.broken", "b"), 1);
    assert_eq!(seen.counter("pool.connections.closed", "b"), 1);
    // Nothing of b's leaked into a's series.
    assert_eq!(seen.counter("pool.connections.created", "a"), 1);
    assert_eq!(seen.counter("pool.timeouts", "a"), 0);
}

/// The background task samples the gauges every `metrics_interval`, with no `status()` call.
#[tokio::test(start_paused = true)]
async fn the_background_task_samples_the_gauges() {
    let recorder = DebuggingRecorder::new();
    let mut seen = Seen::new(&recorder);
    let mock = Mock::new();
    let pool = with_local_recorder(&recorder, || {
        pool::Pool::builder(mock.clone())
            .name("sampled")
            .max_streams(8)
            .metrics_interval(Duration::from_millis(100))
            .build()
            .expect("valid settings")
    });
    let leases = [
        pool.lease().await.expect("a lease"),
        pool.lease().await.expect("a lease"),
        pool.lease().await.expect("a lease"),
    ];
    tokio::time::advance(Duration::from_millis(100)).await;
    tokio::task::yield_now().await;
    seen.take();
    assert_eq!(seen.gauge("pool.leases", "sampled"), 3.0);
    drop(leases);
    tokio::time::advance(Duration::from_millis(100)).await;
    tokio::task::yield_now().await;
    seen.take();
    assert_eq!(seen.gauge("pool.leases", "sampled"), 0.0);
    assert_eq!(seen.gauge("pool.connections.idle", "sampled"), 1.0);
}

/// With `leak_threshold`, a hold past it counts in `pool.leaks`, and every hold's time lands
/// in the `pool.hold` histogram; the reset counters are reported from the start.
#[tokio::test(start_paused = true)]
async fn holds_and_leaks_are_reported() {
    let recorder = DebuggingRecorder::new();
    let mut seen = Seen::new(&recorder);
    let mock = Mock::new();
    let pool = with_local_recorder(&recorder, || {
        pool::Pool::builder(mock.clone())
            .name("held")
            .max_size(2)
            .leak_threshold(Duration::from_secs(5))
            .build()
            .expect("valid settings")
    });
    let brief = pool.get().await.expect("a connection");
    let long = pool.get().await.expect("a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(brief);
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop(long);
    seen.take();
    assert_eq!(seen.counter("pool.leaks", "held"), 1);
    assert_eq!(seen.counter("pool.resets", "held"), 0);
    assert_eq!(seen.counter("pool.resets.failed", "held"), 0);
    let holds = match seen.value(MetricKind::Histogram, "pool.hold", "held") {
        Some(DebugValue::Histogram(samples)) => samples
            .into_iter()
            .map(|s| s.into_inner())
            .collect::<Vec<_>>(),
        other => panic!("histogram pool.hold: {other:?}"),
    };
    assert_eq!(
        holds,
        vec![1.0, 7.0],
        "seconds held, in the order they came back"
    );
    pool.close().await;
}
