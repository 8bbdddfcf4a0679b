//! The state behind the pool's one lock, its invariants, and the moves that keep them.
//!
//! Every move here runs under the lock, so none awaits, calls the manager, drops a connection
//! or wakes a task: each returns what to do once the lock is released (a [`Place`]).

use std::collections::VecDeque;
use std::task::Waker;

use crate::IdleOrder;
pub(crate) use crate::info::Live;
pub(crate) use crate::lease::streams::Leased;
use crate::lease::streams::Streams;
use crate::shared::budget::Account;
pub(crate) use crate::shared::line::Grant;
use crate::shared::line::Line;

/// What to do, outside the lock, after a move.
pub(crate) enum Place<C> {
    /// Wake the waiter served, if one was.
    Wake(Option<Waker>),
    /// Close this connection; its slot is already freed.
    Discard(Live<C>),
}

/// What [`State::keep_slot`] left the caller with.
pub(crate) enum Kept {
    /// The slot, counted as connecting, with the room promised for a lease caller (see
    /// [`State::promise_room`]): open a connection in it.
    Connect(usize),
    /// Nothing: decide again (an idle connection is there, or the pool shrank).
    Again,
    /// Nothing: the pool is closed.
    Closed,
}

/// The pool's locked state.
///
/// Invariants (checked by [`State::debug_check`] in debug builds):
/// - `idle.len() + connecting + resetting + shared <= slots`, where `shared` counts the
///   shared connections that hold a slot (all but broken ones): every idle connection,
///   connect in flight, connection being reset and shared connection holds a slot; the rest
///   of the slots are connections checked out by `get`.
/// - `slots <= max_size`, except right after a shrink, until enough connections come back.
/// - waiters wait only when nothing is free for them: `!waiters.is_empty()` implies `idle` is
///   empty, and a caller waiting for a connection of its own implies `slots >= max_size`.
/// - once `closed`, `idle` and `waiters` stay empty.
pub(crate) struct State<C> {
    pub idle: VecDeque<Live<C>>,
    pub waiters: Line<C>,
    pub slots: usize,
    pub connecting: usize,
    /// Connections being reset ([`crate::shared::reset`]): each holds its slot.
    pub resetting: usize,
    /// Shared connections out for their check, each with the lease caller that took it
    /// (`Placed::Check`): `close` waits for them as for leases.
    pub checking: usize,
    pub max_size: usize,
    pub min_idle: usize,
    pub closed: bool,
    pub last_connect_error: Option<String>,
    /// The connections lent out as leases.
    pub streams: Streams,
    /// How many leases one connection carries at once.
    pub max_streams: usize,
    /// Leases that connections being opened (or checked) for a lease caller will have room
    /// for, beyond that caller's own: callers arriving meanwhile wait for them. A new
    /// connection's room stays counted until its caller shares it (or, the caller gone, it
    /// is placed), after its connect has left `connecting`.
    pub opening_room: usize,
    /// The pool's account at a budget shared with other pools (a key pool's, under the keyed
    /// pool's `max_total`); `None` for a pool of its own, which then pays nothing for it.
    pub budget: Option<Account>,
}

impl<C> State<C> {
    pub fn new(max_size: usize, min_idle: usize, max_streams: usize) -> Self {
        State {
            idle: VecDeque::with_capacity(max_size),
            waiters: Line::new(),
            slots: 0,
            connecting: 0,
            resetting: 0,
            checking: 0,
            max_size,
            min_idle,
            closed: false,
            last_connect_error: None,
            streams: Streams::default(),
            max_streams,
            opening_room: 0,
            budget: None,
        }
    }

    pub fn debug_check(&self) {
        debug_assert!(
            self.idle.len() + self.connecting + self.resetting + self.streams.counts().slotted
                <= self.slots,
            "slot accounting"
        );
        debug_assert!(
            self.waiters.is_empty() || self.idle.is_empty(),
            "a waiter waits while a connection is idle"
        );
        debug_assert!(
            self.waiters.len() == self.waiters.leasers()
                || self.slots >= self.max_size
                || self.budget.as_ref().is_some_and(|account| account.starved),
            "a caller waits for a connection while there is room for one"
        );
        debug_assert!(
            self.budget
                .as_ref()
                .is_none_or(|account| account.held == self.slots),
            "the budget's account of the slots"
        );
        debug_assert!(!self.closed || (self.idle.is_empty() && self.waiters.is_empty()));
    }

    pub fn take_idle(&mut self, order: IdleOrder) -> Option<Live<C>> {
        match order {
            IdleOrder::Lifo => self.idle.pop_back(),
            IdleOrder::Fifo => self.idle.pop_front(),
        }
    }

    /// Takes up to `n` more slots, as many as fit under `max_size` (and the budget's
    /// [`Account::take`], which may starve the pool); returns how many. With
    /// [`free_slots`](Self::free_slots), the only move that changes `slots`.
    pub fn take_slots(&mut self, n: usize) -> usize {
        let mut n = n.min(self.max_size.saturating_sub(self.slots));
        if let Some(account) = &mut self.budget {
            n = account.take(n);
        }
        self.slots += n;
        n
    }

    /// Whether a connection that comes back now is closed, its slot going to another pool of
    /// the budget that starves ([`Account::gives_way`]); false without a budget.
    pub fn gives_way(&mut self) -> bool {
        match &mut self.budget {
            None => false,
            Some(account) => account.gives_way(!self.waiters.is_empty()),
        }
    }

    /// Gives up `n` slots (to the budget too, when there is one).
    pub fn free_slots(&mut self, n: usize) {
        self.slots -= n;
        if let Some(account) = &mut self.budget {
            account.give(n);
        }
    }

    /// Hands free slots to the oldest waiters, one each, while `wanted` says the line wants
    /// one and a slot is there to take; pushes their wakers.
    pub fn grant_slots(&mut self, wanted: impl Fn(&Self) -> bool, wakes: &mut Vec<Option<Waker>>) {
        while wanted(self) && self.take_slots(1) == 1 {
            let Ok(waker) = self.waiters.serve(Grant::Slot) else {
                return self.free_slots(1);
            };
            wakes.push(waker);
        }
    }

    /// Reserves `n` more slots for connects, as many as fit.
    pub fn reserve_connects(&mut self, n: usize) -> usize {
        let n = self.take_slots(n);
        self.connecting += n;
        n
    }

    /// How many connects would bring idle (plus connecting) up to `min_idle`; reserves them.
    ///
    /// None for a pool with a budget (a key pool's), which keeps no `min_idle`: idle
    /// connections kept for one key would hold slots every other key may need. The test
    /// comes before `take_slots` to keep the budget's call off the checkout (lib.rs's
    /// Decisions).
    pub fn reserve_refill(&mut self) -> usize {
        if self.min_idle == 0 || self.closed || self.budget.is_some() {
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
        // With `gives_way`, idle, it would keep its slot from another pool's starved callers.
        if self.closed || self.slots > self.max_size || self.gives_way() {
            self.free_slots(1);
            return Place::Discard(live);
        }
        if self.waiters.is_empty() {
            self.idle.push_back(live);
            return Place::Wake(None);
        }
        match self.waiters.serve(Grant::Conn(live)) {
            Ok(waker) => Place::Wake(waker),
            // Never (the line is not empty), but a connection is never dropped unaccounted.
            Err(grant) => {
                if let Grant::Conn(live) = grant {
                    self.idle.push_back(live);
                }
                Place::Wake(None)
            }
        }
    }

    /// A slot frees: it passes to the oldest waiter, whose waker is returned to wake once the
    /// lock is released, or is given up.
    pub fn release_slot(&mut self) -> Option<Waker> {
        if !self.closed
            && self.slots <= self.max_size
            && let Ok(waker) = self.waiters.serve(Grant::Slot)
        {
            return waker;
        }
        self.free_slots(1);
        None
    }

    /// A caller dropped the connection it was handed (failed check, expired, broken) and
    /// keeps its slot to open a fresh one, keeping its place in line. When an idle connection
    /// is there (nobody waits then) or the pool shrank below its slot count, the slot is given
    /// up instead and the caller decides again.
    pub fn keep_slot(&mut self, for_lease: bool) -> Kept {
        if self.closed {
            self.free_slots(1);
            return Kept::Closed;
        }
        if !self.idle.is_empty() || self.slots > self.max_size {
            self.free_slots(1);
            return Kept::Again;
        }
        self.connecting += 1;
        Kept::Connect(if for_lease { self.promise_room() } else { 0 })
    }

    /// A connection is being opened (or checked) for a lease caller: callers arriving
    /// meanwhile may wait for its other `max_streams - 1` leases. Returns that room, which
    /// the opener takes off `opening_room` when it is done.
    pub fn promise_room(&mut self) -> usize {
        let room = self.max_streams - 1;
        self.opening_room += room;
        room
    }

    /// Takes the idle connections the predicate picks, oldest first, freeing their slots.
    pub fn evict(&mut self, mut pick: impl FnMut(&Live<C>, usize) -> bool) -> Vec<Live<C>> {
        let mut evicted = Vec::new();
        let mut at = 0;
        while at < self.idle.len() {
            if pick(&self.idle[at], self.idle.len()) {
                evicted.extend(self.idle.remove(at));
            } else {
                at += 1;
            }
        }
        self.free_slots(evicted.len());
        evicted
    }
}
