//! Hold times. With `leak_threshold` set (or the `metrics` feature on), every [`Pooled`] and
//! [`Lease`] is registered here with when and where it was taken; the background task looks
//! over the holds at least once a second and reports each one held past the threshold, once,
//! while it is still held. A hold ends as its guard drops. With neither on, nothing is
//! registered and a guard carries `None`.
//!
//! [`Pooled`]: crate::Pooled
//! [`Lease`]: crate::Lease

use std::num::NonZeroU32;
use std::panic::Location;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::shared::slab_insert;
use crate::status::Metrics;

/// Where a caller took a connection or lease: the caller of `get` or `lease`.
pub(crate) type Site = &'static Location<'static>;

/// A registered hold: its place in the slab plus one. Four bytes with its `None`, so a guard
/// that carries one stays the size it was without (a `Pooled` fits in 80 bytes).
pub(crate) type HoldKey = NonZeroU32;

/// How often the background task looks over the holds, at most: a hold is reported within
/// this long of crossing the threshold.
pub(crate) const SCAN_EVERY: Duration = Duration::from_secs(1);

/// How often it looks, at least: a threshold shorter than this is looked for this often.
pub(crate) const SCAN_MIN: Duration = Duration::from_millis(10);

struct Hold {
    taken: Instant,
    at: Site,
    reported: bool,
}

/// The holds of one pool, in a slab under a lock of its own (not the pool's).
#[derive(Default)]
pub(crate) struct Holds {
    slab: Mutex<Slab>,
}

#[derive(Default)]
struct Slab {
    holds: Vec<Option<Hold>>,
    free: Vec<usize>,
}

impl Holds {
    fn slab(&self) -> std::sync::MutexGuard<'_, Slab> {
        self.slab.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hold starts now at `at`; its key, for [`end`](Self::end) (`None` past 4 billion
    /// holds at once: that one is not tracked).
    pub fn start(&self, at: Site) -> Option<HoldKey> {
        let hold = Hold {
            taken: Instant::now(),
            at,
            reported: false,
        };
        let slab = &mut *self.slab();
        let at = slab_insert(&mut slab.holds, &mut slab.free, hold);
        let key = u32::try_from(at + 1).ok().and_then(NonZeroU32::new);
        if key.is_none() {
            slab.holds[at] = None;
            slab.free.push(at);
        }
        key
    }

    /// The hold of `key` ends: its time goes to the `pool.hold` histogram, and a hold that
    /// was reported says it came back.
    pub fn end(&self, key: HoldKey, metrics: &Metrics) {
        let at = key.get() as usize - 1;
        let hold = {
            let mut slab = self.slab();
            let hold = slab.holds.get_mut(at).and_then(Option::take);
            if hold.is_some() {
                slab.free.push(at);
            }
            hold
        };
        let Some(hold) = hold else { return };
        let held = hold.taken.elapsed();
        metrics.record_hold(held);
        if hold.reported {
            tracing::info!(
                at = %hold.at,
                ?held,
                "a connection reported as held too long, taken at {}, came back after {held:?}",
                hold.at
            );
        }
    }

    /// Reports every hold older than `threshold` at `now` that was not reported yet: a warn
    /// event naming where it was taken, and a count in `leaks`.
    pub fn scan(&self, now: Instant, threshold: Duration, metrics: &Metrics) {
        let mut found = Vec::new();
        {
            let mut slab = self.slab();
            for hold in slab.holds.iter_mut().flatten() {
                let held = now.saturating_duration_since(hold.taken);
                if !hold.reported && held >= threshold {
                    hold.reported = true;
                    found.push((hold.at, held));
                }
            }
        }
        for (at, held) in found {
            Metrics::bump(&metrics.leaks);
            tracing::warn!(
                %at,
                ?held,
                ?threshold,
                "a connection is held longer than leak_threshold, taken at {at} ({held:?} ago)"
            );
        }
    }
}
