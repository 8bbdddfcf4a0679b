//! [`Budget`]: one cap on the slots of several pools together (the key pools of a
//! [`KeyedPool`](crate::keyed::KeyedPool), under `max_total`), and each pool's [`Account`]
//! at it.
//!
//! A pool with a budget takes each slot under its own `max_size` and then from the budget,
//! and gives it back to both, in the two moves that change its slots
//! ([`State::take_slots`](crate::shared::state::State::take_slots) and `free_slots`), under
//! its own lock. The budget's count is an atomic taken with a CAS loop, so taking a slot locks
//! nothing more. A pool that the budget refused a slot its caller needs is *starved*: it joins
//! the budget's queue of starved pools, and the caller waits in its own pool's line as any
//! waiter does. Nothing here locks a pool: the budget's own lock (the queue, and the list of
//! pools that hold slots) is taken under a pool's lock, never the other way round, and the
//! work across pools (feeding a starved pool, closing another pool's idle connection for it)
//! is the keyed pool's steward's (`keyed/steward.rs`), which holds no lock when it takes a
//! pool's.
//!
//! How a starved caller is always served or times out (the steward's side is in
//! `keyed/steward.rs`):
//! - A pool is marked starved, queued and the steward notified in the same critical section
//!   that refused its caller a slot, before the caller waits; the mark is cleared only by the
//!   steward, under that pool's lock, when it fed the pool all it wants (else the pool stays
//!   marked and is queued again at the back).
//! - A slot given back while any pool is marked starved notifies the steward (after the count
//!   went down, both `SeqCst`: a steward notified by a pool marked after that read sees the
//!   freed slot when it takes one).
//! - While another pool is marked starved and the budget is spent, a connection that would go
//!   idle in a pool with no caller of its own in line is closed instead, so its slot is given
//!   back (above). With a slot free, it stays idle: the steward, notified when that slot came
//!   back, feeds the starved pool with it, and a pool still starved after that has the
//!   longest-idle connection closed for it, which a look at each pool under its lock finds.
//! - A connection already idle when a pool starves is closed by the steward for it.
//! - While a starved pool holds nothing, a pool that holds more than its fair share,
//!   `max_total` over the pools that hold a slot or starve (rounded down), gives way even
//!   with callers of its own in line: the connection coming back is closed instead of handed
//!   to them, and the pool is marked starved too. A pool that holds a slot takes no more
//!   while a starved pool holds nothing, so the slot given back goes to such a pool (the
//!   steward passes over the pools in the queue that refuse it). The budget spent,
//!   `max_total` is held by fewer pools than that count, so some pool holds more than its
//!   share: a pool with nothing is served at the next return of a busy pool, however long
//!   that one stays busy, and a starved pool that holds a slot is served by its own line.
//!
//! So a starved caller whose pool holds nothing waits only while every slot of the budget is
//! held by a connection in use (by `get` or by leases) that does not come back, a connect or
//! a reset, or, for as long as the steward takes to run, while a slot is free; each waiter's
//! deadline bounds the wait. (A pool that lends connections as leases gives way only with
//! nobody of its own in line: see [`Account::gives_way`].)
//!
//! Nobody gives way with callers of its own in line when no other pool starves (a busy pool
//! alone keeps every connection), nor once every starved pool holds a slot: busy pools then
//! keep what they hold, shared first come beyond one connection each, not evenly (evenly
//! would close and reopen a connection at each return while the pools' count does not divide
//! `max_total`).
//!
//! Notifying the steward wakes its task under a pool's lock: the one wake-up that happens
//! under the lock, and only while a pool starves (it keeps the give-back a single move that no
//! caller can forget to follow up).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::shared::slab_insert;

/// A pool, as its budget sees it: the moves that the steward makes on it, each under the
/// pool's own lock, taken and released inside the call.
pub(crate) trait Member: Send + Sync {
    /// Serves the pool's callers that wait for a slot the budget refused them, as far as the
    /// budget allows now. True when some still wait for one: the pool is then starved again
    /// (queued at the back).
    fn feed(self: Arc<Self>) -> bool;

    /// When the pool's longest-idle connection was last used, if it has an idle one.
    fn oldest_idle(&self) -> Option<Instant>;

    /// Closes the pool's longest-idle connection, giving its slot back to the budget; false
    /// when it has no idle connection (any more).
    fn evict_oldest(self: Arc<Self>) -> bool;
}

/// The cap shared by several pools.
pub(crate) struct Budget {
    max_total: usize,
    /// Slots held by every pool of this budget together (each pool's [`Account::held`]).
    used: AtomicUsize,
    /// Pools marked starved ([`Account::starved`]): queued, or being fed.
    starving: AtomicUsize,
    /// Pools that hold a slot.
    holding: AtomicUsize,
    /// Pools marked starved that hold no slot: their callers have no connection to pass on.
    starving_empty: AtomicUsize,
    lists: Mutex<Lists>,
    /// Wakes the steward: a slot was given back while a pool starves, or a pool starves.
    pub steward: Notify,
}

/// The budget's lists, under its own lock (taken under a pool's lock, never around one).
#[derive(Default)]
struct Lists {
    /// Pools starved, in the order they starved.
    starved: VecDeque<Weak<dyn Member>>,
    /// Pools that hold slots, where the steward looks for an idle connection to close: a slab,
    /// each pool keeping its place ([`Account::holder`]).
    holders: Vec<Option<Weak<dyn Member>>>,
    free: Vec<usize>,
}

impl Budget {
    pub fn new(max_total: usize) -> Self {
        Budget {
            max_total,
            used: AtomicUsize::new(0),
            starving: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            starving_empty: AtomicUsize::new(0),
            lists: Mutex::default(),
            steward: Notify::new(),
        }
    }

    fn lists(&self) -> MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Slots held by all the pools together.
    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }

    /// Takes up to `n` slots, as many as the cap leaves.
    fn take(&self, n: usize) -> usize {
        let mut got = 0;
        let _ = self.used.fetch_update(SeqCst, SeqCst, |used| {
            got = n.min(self.max_total.saturating_sub(used));
            (got > 0).then_some(used + got)
        });
        got
    }

    /// Gives `n` slots back; the steward is told when a pool starves.
    fn give(&self, n: usize) {
        self.used.fetch_sub(n, SeqCst);
        if self.starving.load(SeqCst) > 0 {
            self.steward.notify_one();
        }
    }

    /// A pool's fair share while a starved pool holds nothing: `max_total` over the pools
    /// that hold a slot or starve, rounded down. The budget spent, `max_total` is held by
    /// fewer pools than counted here, so some pool holds more than this.
    fn fair_share(&self) -> usize {
        let pools = self.holding.load(SeqCst) + self.starving_empty.load(SeqCst);
        self.max_total / pools.max(1)
    }

    /// True when a slot is free.
    pub fn has_room(&self) -> bool {
        self.used.load(SeqCst) < self.max_total
    }

    /// The starved pool that has waited longest, taken off the queue (its mark stays until
    /// it is fed).
    pub fn next_starved(&self) -> Option<Weak<dyn Member>> {
        self.lists().starved.pop_front()
    }

    /// Every pool that holds a slot now.
    pub fn holders(&self) -> Vec<Weak<dyn Member>> {
        self.lists().holders.iter().flatten().cloned().collect()
    }
}

/// A pool's account at its budget, kept in the pool's [`State`](crate::shared::state::State)
/// and changed only under the pool's lock.
pub(crate) struct Account {
    budget: Arc<Budget>,
    /// The pool itself.
    me: Weak<dyn Member>,
    /// Slots taken from the budget: always the pool's `slots`.
    pub held: usize,
    /// Marked starved: queued at the budget, or taken off the queue to be fed.
    pub starved: bool,
    /// Its place among the budget's holders, while it holds a slot.
    holder: Option<usize>,
}

impl Account {
    pub fn new(budget: Arc<Budget>, me: Weak<dyn Member>) -> Self {
        Account {
            budget,
            me,
            held: 0,
            starved: false,
            holder: None,
        }
    }

    /// Takes up to `n` slots (the pool's `max_size` allows them); fewer when the budget is
    /// spent or holds them back (below), and the pool is then starved.
    ///
    /// Cold, as [`give`](Self::give) is: a pool with no budget (every [`Pool`](crate::Pool)
    /// of its own) never calls either, and its fast path keeps its registers as they were
    /// (inlined into the checkout, a call here made it spill them on every checkout).
    ///
    /// While a starved pool holds nothing, a pool that holds a slot takes no more: a slot
    /// given up for the starved pool is left for it, not taken back by the next caller of the
    /// pool that gave it up.
    #[cold]
    pub fn take(&mut self, n: usize) -> usize {
        let allowed = if self.held > 0 && self.budget.starving_empty.load(SeqCst) > 0 {
            0
        } else {
            n
        };
        let got = self.budget.take(allowed);
        if got > 0 && self.held == 0 {
            let me = self.me.clone();
            let lists = &mut *self.budget.lists();
            self.holder = Some(slab_insert(&mut lists.holders, &mut lists.free, me));
            self.budget.holding.fetch_add(1, SeqCst);
            if self.starved {
                self.budget.starving_empty.fetch_sub(1, SeqCst);
            }
        }
        self.held += got;
        if got < n {
            self.starve();
        }
        got
    }

    /// Gives `n` slots back.
    #[cold]
    pub fn give(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.held -= n;
        if self.held == 0
            && let Some(at) = self.holder.take()
        {
            let mut lists = self.budget.lists();
            lists.holders[at] = None;
            lists.free.push(at);
            self.budget.holding.fetch_sub(1, SeqCst);
            if self.starved {
                self.budget.starving_empty.fetch_add(1, SeqCst);
            }
        }
        self.budget.give(n);
    }

    /// Marks the pool starved, queues it and tells the steward (once while marked).
    fn starve(&mut self) {
        if std::mem::replace(&mut self.starved, true) {
            return;
        }
        self.budget.lists().starved.push_back(self.me.clone());
        if self.held == 0 {
            self.budget.starving_empty.fetch_add(1, SeqCst);
        }
        self.budget.starving.fetch_add(1, SeqCst);
        self.budget.steward.notify_one();
    }

    /// The steward fed the pool, and it wants no more slots: the mark goes.
    pub fn fed(&mut self) {
        if std::mem::replace(&mut self.starved, false) {
            if self.held == 0 {
                self.budget.starving_empty.fetch_sub(1, SeqCst);
            }
            self.budget.starving.fetch_sub(1, SeqCst);
        }
    }

    /// The steward fed the pool and it still starves: it stays marked, queued at the back.
    pub fn requeue(&mut self) {
        debug_assert!(self.starved, "only a pool marked starved is fed");
        self.budget.lists().starved.push_back(self.me.clone());
    }

    /// Whether a connection that comes back to this pool is closed instead of kept, so that
    /// its slot goes to another pool of the budget. Only while another pool starves and every
    /// slot of the budget is taken (with a slot free, the steward is on its way to feed that
    /// pool with it: no other connection needs to go); then:
    /// - with nobody of this pool's own in line (`waits` false), always: idle, the connection
    ///   would keep its slot from the starved pool;
    /// - with callers of its own in line, while a starved pool holds nothing and this one
    ///   holds more than its fair share ([`Budget::fair_share`]). The pool is then starved
    ///   itself, and takes no slot back while a starved pool holds nothing
    ///   ([`take`](Self::take)); a connection that carries leases drains for it
    ///   (`State::end_lease`).
    #[cold]
    pub fn gives_way(&mut self, waits: bool) -> bool {
        let budget = &*self.budget;
        if budget.starving.load(SeqCst) <= usize::from(self.starved) || budget.has_room() {
            return false;
        }
        if !waits {
            return true;
        }
        if budget.starving_empty.load(SeqCst) == 0 || self.held <= budget.fair_share() {
            return false;
        }
        self.starve();
        true
    }
}

impl Drop for Account {
    /// The pool is gone: whatever it still held goes back (nothing, but for a pool dropped
    /// with idle connections), and its mark with it.
    fn drop(&mut self) {
        self.fed();
        self.give(self.held);
    }
}
