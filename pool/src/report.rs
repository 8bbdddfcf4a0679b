//! The `metrics` feature: the pool reports through the `metrics` facade. Without the
//! feature every item here is empty and costs nothing.
//!
//! What is reported, and when: the crate docs, "Metrics".

use std::time::Duration;

use crate::Status;

/// The labels of every metric of the pool named `name`.
#[cfg(feature = "metrics")]
pub(crate) fn labels(name: &str) -> Vec<metrics::Label> {
    vec![metrics::Label::new("pool", name.to_owned())]
}

/// The gauges and the wait histogram of one pool.
#[derive(Debug)]
pub(crate) struct Report {
    #[cfg(feature = "metrics")]
    on: On,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct On {
    size: metrics::Gauge,
    idle: metrics::Gauge,
    in_use: metrics::Gauge,
    discarded: metrics::Gauge,
    leases: metrics::Gauge,
    waiting: metrics::Gauge,
    connecting: metrics::Gauge,
    max_size: metrics::Gauge,
    wait: metrics::Histogram,
    hold: metrics::Histogram,
}

impl Report {
    pub(crate) fn new(_name: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            Report {
                on: On {
                    size: metrics::gauge!("pool.connections", labels(_name)),
                    idle: metrics::gauge!("pool.connections.idle", labels(_name)),
                    in_use: metrics::gauge!("pool.connections.in_use", labels(_name)),
                    discarded: metrics::gauge!("pool.connections.discarded", labels(_name)),
                    leases: metrics::gauge!("pool.leases", labels(_name)),
                    waiting: metrics::gauge!("pool.waiting", labels(_name)),
                    connecting: metrics::gauge!("pool.connecting", labels(_name)),
                    max_size: metrics::gauge!("pool.max_size", labels(_name)),
                    wait: metrics::histogram!("pool.wait", labels(_name)),
                    hold: metrics::histogram!("pool.hold", labels(_name)),
                },
            }
        }
        #[cfg(not(feature = "metrics"))]
        Report {}
    }

    /// A caller waited in line this long.
    pub(crate) fn wait(&self, _waited: Duration) {
        #[cfg(feature = "metrics")]
        self.on.wait.record(_waited.as_secs_f64());
    }

    /// A connection or lease was held this long.
    pub(crate) fn hold(&self, _held: Duration) {
        #[cfg(feature = "metrics")]
        self.on.hold.record(_held.as_secs_f64());
    }

    /// Sets the gauges from a snapshot.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn gauges(&self, _status: &Status) {
        #[cfg(feature = "metrics")]
        {
            let on = &self.on;
            on.size.set(_status.size as f64);
            on.idle.set(_status.idle as f64);
            on.in_use.set(_status.in_use as f64);
            on.discarded.set(_status.discarded as f64);
            on.leases.set(_status.leases as f64);
            on.waiting.set(_status.waiting as f64);
            on.connecting.set(_status.connecting as f64);
            on.max_size.set(_status.max_size as f64);
        }
    }
}
