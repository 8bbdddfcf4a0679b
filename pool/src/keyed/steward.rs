//! The steward: one background task per keyed pool that does the work across key pools.
//! It feeds the key pools that the budget starved, closes an idle connection of another key
//! for one that stays starved, and forgets keys that hold nothing.
//!
//! It takes one key pool's lock at a time, never with the map's or the budget's held, so no
//! two pools' locks are ever held at once. It runs when notified (a pool starved, or a slot
//! came back while one starves: see `shared/budget.rs`) and every half `forget_after` for the
//! sweep. It holds the keyed pool only weakly between rounds, so it ends when the last handle
//! is dropped, or when the pool closes. A runtime that shuts down takes it along; the next
//! call to `get` or `lease`, from any runtime, starts another. A caller's wait never depends
//! on it: each waiter's deadline is kept by its own key's pool.

use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::Manager;
use crate::keyed::keys::Inner;
use crate::shared::budget::{Budget, Member};

/// Turns of [`settle`] before the steward yields (and comes back at once).
const TURNS: usize = 256;

/// Looks for an idle connection to close this many times at most in a row, each miss being an
/// idle connection taken by a caller of its own key between the look and the close.
const ATTEMPTS: usize = 8;

impl<K, M> Inner<K, M>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    M: Manager,
{
    /// Starts the steward when none runs and a runtime is at hand.
    pub fn ensure_steward(self: &Arc<Self>) {
        if !self.steward_started.load(Ordering::Acquire)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.steward_started.swap(true, Ordering::AcqRel)
        {
            let every = (self.forget_after / 2).max(Duration::from_millis(1));
            runtime.spawn(run(Arc::downgrade(self), Arc::clone(&self.budget), every));
        }
    }
}

/// The steward's loop: [`settle`] whenever notified, the sweep every `every`.
async fn run<K, M>(keyed: Weak<Inner<K, M>>, budget: Arc<Budget>, every: Duration)
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    M: Manager,
{
    let mut running = Running {
        keyed: keyed.clone(),
        armed: true,
    };
    let mut next_sweep = Instant::now() + every;
    loop {
        // Registered before the look: a notification during the round is kept for the next.
        let mut notified = std::pin::pin!(budget.steward.notified());
        notified.as_mut().enable();
        {
            let Some(keyed) = keyed.upgrade() else { return };
            if keyed.is_closed() {
                // Ended for good: the mark stays set, so no call starts another.
                running.armed = false;
                return;
            }
            settle(&budget);
            let now = Instant::now();
            if now >= next_sweep {
                keyed.sweep(now);
                next_sweep = now + every;
            }
        }
        let _ = tokio::time::timeout_at(next_sweep, notified).await;
    }
}

/// Feeds the starved pools in the order they starved. A pool that still wants a slot the
/// budget refuses gets the longest-idle connection of any other pool closed for it: its
/// slot comes back to the budget, and goes to the next pool fed (the starved pools take
/// turns); one that refuses a free slot (`Account::take`) leaves it to the pools behind it.
/// Stops when no pool starves, or when the budget is spent and no pool has an idle
/// connection: every slot given back later notifies the steward again, and every connection
/// that would go idle meanwhile, or that a pool above its share would hand to its own
/// callers while a starved pool holds nothing, is closed instead (`State::gives_way`).
fn settle(budget: &Budget) {
    for _ in 0..TURNS {
        let Some(member) = budget.next_starved() else {
            return;
        };
        // A pool dropped since it starved gave its mark back as it went.
        if let Some(member) = member.upgrade()
            && Arc::clone(&member).feed()
            && !budget.has_room()
            && !evict_for(budget, &member)
        {
            return;
        }
    }
    // More to do than one round takes: the steward yields, and comes back at once.
    budget.steward.notify_one();
}

/// Closes the longest-idle connection of any pool but `starved`; false when none has one.
fn evict_for(budget: &Budget, starved: &Arc<dyn Member>) -> bool {
    for _ in 0..ATTEMPTS {
        let oldest = budget
            .holders()
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|member| !Arc::ptr_eq(member, starved))
            .filter_map(|member| Some((member.oldest_idle()?, member)))
            .min_by_key(|(last_used, _)| *last_used);
        let Some((_, member)) = oldest else {
            return false;
        };
        if member.evict_oldest() {
            return true;
        }
    }
    false
}

/// Marks the steward as running; dropped with its task (its runtime shut down, or the keyed
/// pool is gone), it clears the mark so that the next call starts another.
struct Running<K, M: Manager> {
    keyed: Weak<Inner<K, M>>,
    armed: bool,
}

impl<K, M: Manager> Drop for Running<K, M> {
    fn drop(&mut self) {
        if self.armed
            && let Some(keyed) = self.keyed.upgrade()
        {
            keyed.steward_started.store(false, Ordering::Release);
        }
    }
}
