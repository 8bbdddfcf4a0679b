//! Which connections are idle and since when, so that at the connection cap the accept loop
//! makes room for a new client by closing the connection idle the longest.
//!
//! Each connection has a [`Slot`]: one atomic word holding since when it has been idle (no
//! request in flight, nothing to write), in nanoseconds from the registry's epoch, or
//! [`BUSY`], or [`EVICTED`]. The connection writes it as it goes idle or busy, a
//! compare-and-swap from what it wrote last, reusing the clock reading of its idle timeout.
//! The accept loop reads the slots only when it is at the cap with a client waiting; it
//! claims the idlest with a compare-and-swap from the stamp it saw to `EVICTED`, so a
//! connection that went busy meanwhile is never evicted, and one that went busy and idle again
//! is looked at afresh. It keeps the slots in a map of its own (no lock), by connection task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;

use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::task;
use tokio::time::Instant;

/// The slot's value while the connection is busy (or not started, or gone).
const BUSY: u64 = u64::MAX;
/// The slot's value once the accept loop chose the connection to close.
const EVICTED: u64 = u64::MAX - 1;

/// What the accept loop and the connections share.
struct Shared {
    epoch: Instant,
    /// Set while the accept loop holds a client and found no idle connection to close.
    starved: AtomicBool,
    /// Told when a connection goes idle while `starved`.
    went_idle: Arc<Notify>,
}

/// One connection's idle stamp, and the waker to tell it it was evicted.
pub(super) struct Slot {
    state: AtomicU64,
    waker: AtomicWaker,
}

/// The accept loop's view: the slot of every connection it runs.
pub(super) struct Registry {
    shared: Arc<Shared>,
    slots: HashMap<task::Id, Arc<Slot>>,
}

impl Registry {
    pub(super) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                starved: AtomicBool::new(false),
                went_idle: Arc::new(Notify::new()),
            }),
            slots: HashMap::new(),
        }
    }

    /// A slot for a new connection (busy until it first waits), and the connection's side of
    /// it. Add the slot with [`insert`](Self::insert) once the connection's task is spawned.
    pub(super) fn slot(&self) -> (Marker, Arc<Slot>) {
        let slot = Arc::new(Slot {
            state: AtomicU64::new(BUSY),
            waker: AtomicWaker::new(),
        });
        let marker = Marker {
            shared: Arc::clone(&self.shared),
            slot: Arc::clone(&slot),
            stored: BUSY,
            evicted: false,
        };
        (marker, slot)
    }

    pub(super) fn insert(&mut self, task: task::Id, slot: Arc<Slot>) {
        self.slots.insert(task, slot);
    }

    /// Forgets the slot of a connection whose task has ended.
    pub(super) fn remove(&mut self, task: task::Id) {
        self.slots.remove(&task);
    }

    /// Notified when a connection goes idle while [`evict_idlest`](Self::evict_idlest) found
    /// none; it may also fire for nothing.
    pub(super) fn went_idle(&self) -> Arc<Notify> {
        Arc::clone(&self.shared.went_idle)
    }

    /// Tells the connection idle the longest to close. Returns false when every connection is
    /// busy; connections then report going idle through [`went_idle`](Self::went_idle), until
    /// [`fed`](Self::fed) is called.
    pub(super) fn evict_idlest(&self) -> bool {
        // Before reading the stamps (both sides `SeqCst`): a connection that goes idle after
        // the scan below sees `starved` and tells us.
        self.shared.starved.store(true, Ordering::SeqCst);
        // A claim fails only when its connection changed state since the scan: look again,
        // a few times.
        for _ in 0..4 {
            let idlest = self
                .slots
                .values()
                .map(|slot| (slot.state.load(Ordering::SeqCst), slot))
                .filter(|&(since, _)| since < EVICTED)
                .min_by_key(|&(since, _)| since);
            let Some((since, slot)) = idlest else {
                return false;
            };
            if slot
                .state
                .compare_exchange(since, EVICTED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                slot.waker.wake();
                self.fed();
                return true;
            }
        }
        false
    }

    /// The accept loop has the room it waited for: connections going idle need not tell it.
    pub(super) fn fed(&self) {
        self.shared.starved.store(false, Ordering::Relaxed);
    }
}

/// The connection's side of its slot.
pub(super) struct Marker {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    /// What this side wrote last.
    stored: u64,
    /// The accept loop chose this connection to close; the slot is no longer written.
    evicted: bool,
}

impl Marker {
    /// The connection is idle since `since`; `waker` wakes it if it is evicted. Returns false
    /// if it has been evicted.
    pub(super) fn idle(&mut self, since: Instant, waker: &Waker) -> bool {
        let nanos = since
            .saturating_duration_since(self.shared.epoch)
            .as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(EVICTED - 1).min(EVICTED - 1);
        self.slot.waker.register(waker);
        if !self.store(stamp) {
            return false;
        }
        if self.shared.starved.load(Ordering::SeqCst) {
            self.shared.went_idle.notify_one();
        }
        true
    }

    /// The connection is busy. Returns false if it has been evicted.
    pub(super) fn busy(&mut self) -> bool {
        self.store(BUSY)
    }

    /// Whether the connection has been evicted while idle.
    pub(super) fn evicted(&mut self) -> bool {
        if !self.evicted && self.slot.state.load(Ordering::Acquire) == EVICTED {
            self.evicted = true;
        }
        self.evicted
    }

    fn store(&mut self, value: u64) -> bool {
        if self.evicted {
            return false;
        }
        if self.stored == value {
            return true;
        }
        // Only the accept loop changes the slot besides us, and only to `EVICTED`.
        match self.slot.state.compare_exchange(
            self.stored,
            value,
            Ordering::SeqCst,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.stored = value;
                true
            }
            Err(_) => {
                self.evicted = true;
                false
            }
        }
    }
}

impl Drop for Marker {
    /// A connection that has ended is never chosen again (its slot goes when its task is
    /// joined).
    fn drop(&mut self) {
        self.slot.state.store(BUSY, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::task::noop_waker;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_idlest_is_evicted_and_a_busy_one_never() {
        let mut registry = Registry::new();
        let waker = noop_waker();
        let mut markers = Vec::new();
        for _ in 0..3 {
            let (marker, slot) = registry.slot();
            let id = tokio::spawn(async {}).id();
            registry.insert(id, slot);
            markers.push(marker);
        }
        let [a, b, c] = &mut markers[..] else {
            unreachable!()
        };
        let t0 = Instant::now();
        assert!(b.idle(t0, &waker));
        assert!(a.idle(t0 + Duration::from_secs(1), &waker));
        assert!(c.idle(t0 + Duration::from_secs(2), &waker));
        // The idlest, b, goes busy: a is the idlest left.
        assert!(b.busy());
        assert!(registry.evict_idlest());
        assert!(a.evicted() && !b.evicted() && !c.evicted());
        assert!(
            !a.idle(t0 + Duration::from_secs(3), &waker),
            "stays evicted"
        );
        // c next; then only b, busy, is left.
        assert!(registry.evict_idlest());
        assert!(!c.busy(), "evicted before it went busy");
        assert!(!registry.evict_idlest());
        // Going idle while the accept loop starves tells it.
        assert!(b.idle(t0 + Duration::from_secs(4), &waker));
        let told = registry.went_idle();
        tokio::time::timeout(Duration::from_secs(1), told.notified())
            .await
            .expect("told");
        assert!(registry.evict_idlest());
        assert!(b.evicted());
    }
}
