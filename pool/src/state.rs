//! The state behind the pool's one lock, its invariants, and the moves that keep them.
//!
//! Everything here runs with the lock held, so nothing here awaits, calls the manager, drops a
//! connection or wakes a task: each move returns a [`Place`] saying what to do once the lock is
//! released.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::IdleOrder;
use crate::info::ConnInfo;

/// A connection with what the pool knows about it.
pub(crate) struct Live<C> {
    pub conn: C,
    pub info: ConnInfo,
}

/// What a waiter is handed.
pub(crate) enum Grant<C> {
    /// A returned connection.
    Conn(Live<C>),
    /// A slot: the waiter may open a connection of its own (it is already counted).
    Slot,
}

/// A caller waiting in line; `id`s grow, so the queue is sorted by id.
pub(crate) struct Waiter<C> {
    pub id: u64,
    pub tx: oneshot::Sender<Grant<C>>,
}

/// What to do, outside the lock, after a move.
pub(crate) enum Place<C> {
    /// Nothing more: the connection went idle or the slot was freed.
    Done,
    /// Send this grant to this waiter; if it has gone, place the grant again.
    Hand(Waiter<C>, Grant<C>),
    /// Close this connection; its slot is already freed.
    Discard(Live<C>),
}

/// The pool's locked state.
///
/// Invariants (checked by [`State::debug_check`] in debug builds):
/// - `idle.len() + connecting <= slots`: every idle connection and every connect in flight
///   holds a slot; the rest of the slots are connections checked out.
/// - `slots <= max_size`, except right after a shrink, until enough connections come back.
/// - waiters wait only when nothing is free: `!waiters.is_empty()` implies `idle` is empty and
///   `slots >= max_size`.
/// - once `closed`, `idle` and `waiters` stay empty.
pub(crate) struct State<C> {
    pub idle: VecDeque<Live<C>>,
    pub waiters: VecDeque<Waiter<C>>,
    pub slots: usize,
    pub connecting: usize,
    pub max_size: usize,
    pub min_idle: usize,
    pub closed: bool,
    pub last_connect_error: Option<String>,
    next_waiter: u64,
}

impl<C> State<C> {
    pub fn new(max_size: usize, min_idle: usize) -> Self {
        State {
            idle: VecDeque::with_capacity(max_size),
            waiters: VecDeque::new(),
            slots: 0,
            connecting: 0,
            max_size,
            min_idle,
            closed: false,
            last_connect_error: None,
            next_waiter: 0,
        }
    }

    pub fn debug_check(&self) {
        debug_assert!(
            self.idle.len() + self.connecting <= self.slots,
            "slot accounting"
        );
        debug_assert!(
            self.waiters.is_empty() || (self.idle.is_empty() && self.slots >= self.max_size),
            "a waiter waits while something is free"
        );
        debug_assert!(!self.closed || (self.idle.is_empty() && self.waiters.is_empty()));
    }

    pub fn take_idle(&mut self, order: IdleOrder) -> Option<Live<C>> {
        match order {
            IdleOrder::Lifo => self.idle.pop_back(),
            IdleOrder::Fifo => self.idle.pop_front(),
        }
    }

    /// Joins the line; the receiver gets a [`Grant`], or an error when the pool closes.
    pub fn enqueue(&mut self) -> (u64, oneshot::Receiver<Grant<C>>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.push_back(Waiter { id, tx });
        (id, rx)
    }

    /// Leaves the line, if still in it.
    pub fn remove_waiter(&mut self, id: u64) {
        if let Ok(at) = self.waiters.binary_search_by_key(&id, |w| w.id) {
            self.waiters.remove(at);
        }
    }

    /// Reserves `n` more slots for connects, as many as fit.
    pub fn reserve_connects(&mut self, n: usize) -> usize {
        let n = n.min(self.max_size.saturating_sub(self.slots));
        self.slots += n;
        self.connecting += n;
        n
    }

    /// How many connects would bring idle (plus connecting) up to `min_idle`; reserves them.
    pub fn reserve_refill(&mut self) -> usize {
        if self.closed {
            return 0;
        }
        let want = self
            .min_idle
            .saturating_sub(self.idle.len() + self.connecting);
        self.reserve_connects(want)
    }

    /// A connection comes (back) into the pool: to the oldest waiter, to the idle list, or out
    /// when the pool is closed or above its size.
    pub fn place_conn(&mut self, live: Live<C>) -> Place<C> {
        if self.closed || self.slots > self.max_size {
            self.slots -= 1;
            return Place::Discard(live);
        }
        match self.waiters.pop_front() {
            Some(waiter) => Place::Hand(waiter, Grant::Conn(live)),
            None => {
                self.idle.push_back(live);
                Place::Done
            }
        }
    }

    /// A slot frees: it passes to the oldest waiter, or is given up.
    pub fn release_slot(&mut self) -> Place<C> {
        if !self.closed
            && self.slots <= self.max_size
            && let Some(waiter) = self.waiters.pop_front()
        {
            return Place::Hand(waiter, Grant::Slot);
        }
        self.slots -= 1;
        Place::Done
    }

    /// Takes the idle connections the predicate picks, oldest first, freeing their slots.
    pub fn evict(&mut self, mut pick: impl FnMut(&Live<C>, usize) -> bool) -> Vec<Live<C>> {
        let mut evicted = Vec::new();
        let mut at = 0;
        while at < self.idle.len() {
            let remaining = self.idle.len();
            if pick(&self.idle[at], remaining) {
                if let Some(live) = self.idle.remove(at) {
                    evicted.push(live);
                }
            } else {
                at += 1;
            }
        }
        self.slots -= evicted.len();
        evicted
    }
}
