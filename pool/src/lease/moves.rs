//! The moves of leases under the pool's lock: handing a lease out, ending one, and bringing a
//! connection into shared form. Like every move in [`State`], none awaits, drops a connection
//! or wakes a task: each returns what to do once the lock is released.
//!
//! One exception to "no manager call under the lock": [`Manager::is_broken`] runs here when a
//! connection with no lease is leased, and when its last lease ends, because only the lock
//! proves that no lease borrows the connection at that moment. It is a flag read (its
//! contract says so); borrowing the connection outside the lock would take the lock twice per
//! lease (see the crate's Decisions).
//!
//! [`Manager::is_broken`]: crate::Manager::is_broken

use std::task::Waker;

use tokio::time::Instant;

use crate::info::ConnInfo;
use crate::lease::streams::{Key, Mode, SharedConn};
use crate::shared::line::{Arrival, Line};
use crate::shared::state::{Grant, Leased, Live, State};

/// What is left to do after a lease ended, once the lock is released.
#[derive(Default)]
pub(crate) struct Ended {
    /// Waiters served: given the freed slot, the connection, or leases on it. Empty (no
    /// allocation) when nobody waits.
    pub wakes: Vec<Option<Waker>>,
    /// The connection, when it is to be closed (its last lease ended and it is retired or
    /// broken). Its `Arc` is the only one left.
    pub close: Option<SharedConn>,
    /// The connection was found broken now (counted once).
    pub broke: bool,
}

/// Where the first move of a lease landed.
pub(crate) enum Placed<C> {
    /// A lease on a connection that had room.
    Lease(Leased),
    /// The connection had no lease and its check is due: the caller has it alone, with its
    /// slot, to ready as `get` readies an idle connection; the room it promised to callers
    /// arriving meanwhile (`opening_room`) goes with it.
    Check(Live<C>, usize),
    /// The connection had no lease and is retired or broken: close it (its slot is freed).
    Retired(SharedConn, Option<Waker>, bool),
}

impl<C: 'static> State<C> {
    /// Counts one more lease on `key`, when it is open with room.
    fn count_lease(&mut self, key: Key) -> Option<Leased> {
        let record = self
            .streams
            .get_mut(key)
            .filter(|r| r.has_room(self.max_streams))?;
        let leased = record.lend(key);
        self.streams.leases += 1;
        Some(leased)
    }

    /// Takes back a lease counted by [`count_lease`](Self::count_lease) that found nobody.
    fn uncount_lease(&mut self, lease: Leased) {
        if let Some(record) = self.streams.get_mut(lease.key) {
            record.leases -= 1;
            record.info.uses -= 1;
            self.streams.leases -= 1;
        }
        // The record still holds its own `Arc`: dropping this one closes nothing.
        drop(lease.conn);
    }

    /// The first move of a lease on the connection with the fewest leases that has room:
    /// a lease, or the connection alone for its check, or the connection to retire. `None`
    /// when no shared connection has room, or when the fewest leases are more than an idle
    /// connection of the pool's own has (none): the caller then takes that one.
    ///
    /// Only a connection with no lease is tested (a due check, lifetime, `is_broken`): one
    /// that carries leases takes one more without a look at the clock (`now` is not called),
    /// and the background task drains it when its lifetime ends ([`crate::shared::maintain`]).
    #[inline(always)]
    pub fn place_lease(
        &mut self,
        mut now: impl FnMut() -> Instant,
        check_interval: std::time::Duration,
        is_broken: impl FnOnce(&mut C) -> bool,
    ) -> Option<Placed<C>> {
        let avoid = self.reserved_for_get();
        let idle_elsewhere = !self.idle.is_empty();
        let (key, record) = self.streams.pick(self.max_streams, avoid)?;
        if record.leases > 0 && idle_elsewhere {
            return None;
        }
        if record.leases == 0 {
            let now = now();
            if record.info.check_due(now, check_interval) {
                // Its readying tests lifetime and `is_broken` too, once.
                let live = self.unshare(key)?;
                self.checking += 1;
                return Some(Placed::Check(live, self.promise_room()));
            }
            let expired = record.info.expired(now);
            let broken = !expired && record.conn_mut::<C>().is_some_and(is_broken);
            if expired || broken {
                let record = self.streams.remove(key)?;
                let wake = self.release_slot();
                return Some(Placed::Retired(record.conn, wake, broken));
            }
            record.info.last_used = now;
        }
        // Counted on the record already found (`count_lease` would look it up again).
        let leased = record.lend(key);
        self.streams.leases += 1;
        Some(Placed::Lease(leased))
    }

    /// The shared connection kept from new leases while a caller waits for a connection of
    /// its own: the open one with the fewest leases. It takes no new lease (but from callers
    /// ahead of that caller in line), so its count falls, and when its last lease ends that
    /// caller takes it. Without it, leases that overlap would keep every connection leased
    /// and starve `get`.
    pub fn reserved_for_get(&mut self) -> Option<Key> {
        if self.waiters.exclusive() == 0 {
            return None;
        }
        self.streams.pick(usize::MAX, None).map(|(key, _)| key)
    }

    /// Serves callers waiting for a lease on every connection with room (after a caller
    /// waiting for a connection of its own left the line, or the connection kept for it
    /// changed); pushes their wakers. The connection kept for such a caller serves only the
    /// callers ahead of it in line.
    pub fn serve_leasers_anywhere(&mut self, wakes: &mut Vec<Option<Waker>>) {
        if self.waiters.leasers() == 0 {
            return;
        }
        let reserved = self.reserved_for_get();
        let keys: Vec<_> = self.streams.keys().collect();
        for key in keys {
            let kept = Some(key) == reserved;
            self.serve_leasers_on(key, |line| !kept || line.leaser_first(), wakes);
        }
    }

    /// Serves callers waiting for a lease on `key`, while it has room; pushes their wakers.
    /// When `key` is now the connection kept for a caller waiting for a connection of its
    /// own (it has the fewest leases), the one kept before it may have room that nobody was
    /// given: callers waiting for a lease are served there, never passed over by newcomers.
    #[inline(always)]
    pub fn serve_leasers(&mut self, key: Key, wakes: &mut Vec<Option<Waker>>) {
        if self.waiters.leasers() == 0 {
            return;
        }
        if self.reserved_for_get() == Some(key) {
            return self.serve_leasers_anywhere(wakes);
        }
        self.serve_leasers_on(key, |_| true, wakes);
    }

    /// Serves callers waiting for a lease on `key`, while it has room and `may_serve` lets the
    /// line be served; pushes their wakers. A connection past its lifetime takes no new lease,
    /// as in [`place_lease`](Self::place_lease): leased, it drains from now on (the clock is
    /// read only when callers wait).
    fn serve_leasers_on(
        &mut self,
        key: Key,
        may_serve: impl Fn(&Line<C>) -> bool,
        wakes: &mut Vec<Option<Waker>>,
    ) {
        if self.waiters.leasers() == 0 {
            return;
        }
        if let Some(record) = self.streams.get_mut(key)
            && record.info.expired(Instant::now())
        {
            if record.mode == Mode::Open && record.leases > 0 {
                record.mode = Mode::Draining;
            }
            return;
        }
        while self.waiters.leasers() > 0 && may_serve(&self.waiters) {
            let Some(lease) = self.count_lease(key) else {
                return;
            };
            match self.waiters.serve_leaser(Grant::Lease(lease)) {
                Ok(waker) => wakes.push(waker),
                // Never (`leasers` counts the lease callers in line), but never a lost count:
                // the lease is taken back off its record.
                Err(Grant::Lease(lease)) => return self.uncount_lease(lease),
                Err(_) => return,
            }
        }
    }

    /// A connection a lease caller has alone (opened for it, or idle and readied) becomes
    /// shared. Its leases go first to the callers waiting for one that came before that
    /// caller (`arrival`: they may wait for room promised by a connect whose own caller left,
    /// which reaches them only when that connect ends), then to the caller, then to the
    /// callers behind it: first come, first served. Returns the caller's lease, or `None`
    /// when the callers ahead of it took every one.
    pub fn share(
        &mut self,
        conn: SharedConn,
        mut info: ConnInfo,
        arrival: Arrival,
        wakes: &mut Vec<Option<Waker>>,
    ) -> Option<Leased> {
        // Its checkout counted its use: counted again with its lease, as any other lease.
        info.uses = info.uses.saturating_sub(1);
        let key = self.streams.insert(conn, info);
        self.serve_leasers_on(key, |line| line.leaser_before(arrival), wakes);
        let leased = self.count_lease(key);
        self.serve_leasers(key, wakes);
        leased
    }

    /// Marks the connection of `key` broken: no new lease; its slot frees at once (to the
    /// oldest waiter). True when it was not marked before.
    pub fn mark_shared_broken(&mut self, key: Key) -> (bool, Option<Waker>) {
        let Some(record) = self.streams.get_mut(key).filter(|r| r.mode != Mode::Broken) else {
            return (false, None);
        };
        record.mode = Mode::Broken;
        // One drained by a shrink gave its slot up already.
        let slot = std::mem::replace(&mut record.slot, false);
        (true, slot.then(|| self.release_slot()).flatten())
    }

    /// A lease ends, under the lock (`Shared::end_lease`): one beside others, with nobody in
    /// line, only counts itself off (`None`: nothing is left to do); any other goes through
    /// [`end_lease`](Self::end_lease). Either way its `Arc` is dropped here, under the lock.
    #[inline(always)]
    pub fn lease_ended(
        &mut self,
        lease: SharedConn,
        key: Key,
        broken: bool,
        is_broken: impl FnOnce(&mut C) -> bool,
    ) -> Option<Ended> {
        if !broken
            && self.waiters.is_empty()
            && let Some(record) = self.streams.get_mut(key)
            && record.leases > 1
        {
            record.leases -= 1;
            self.streams.leases -= 1;
            // Dropped under the lock: a record with no lease holds the only `Arc`.
            drop(lease);
            return None;
        }
        let ended = self.end_lease(lease, key, broken, is_broken);
        self.debug_check();
        Some(ended)
    }

    /// A lease ends: its `Arc` is dropped here, under the lock (never the last one while the
    /// record is there). When it was the last lease, the connection is tested with
    /// `is_broken`, then retired, handed to the oldest waiter, or left idle in shared form;
    /// else its freed room goes to the oldest caller waiting for a lease.
    pub fn end_lease(
        &mut self,
        lease: SharedConn,
        key: Key,
        broken: bool,
        is_broken: impl FnOnce(&mut C) -> bool,
    ) -> Ended {
        let mut ended = Ended::default();
        if broken {
            // Nothing to mark when the record is gone (orphaned, below).
            let (newly, wake) = self.mark_shared_broken(key);
            ended.broke = newly;
            ended.wakes.extend(wake.map(Some));
        }
        let over_size = self.slots > self.max_size;
        // Left idle, it would keep a slot from another pool's callers (see `State::gives_way`).
        let gives_way = self.gives_way();
        let Some(record) = self.streams.end_one(key) else {
            // Orphaned: the pool closed and let go of it. The last lease closes it.
            ended.close = Some(lease);
            return ended;
        };
        drop(lease);
        if record.leases > 0 {
            if gives_way {
                self.drain_to_give_way(key);
            }
            self.serve_leasers(key, &mut ended.wakes);
            return ended;
        }
        // The last lease: nothing else borrows the connection now. A lifetime that ended
        // under the leases drained the connection already (the background task's timer).
        let retire = match record.mode {
            Mode::Broken | Mode::Draining => Some(record.slot),
            Mode::Open => {
                if self.closed || over_size || gives_way {
                    Some(true)
                } else if record.conn_mut::<C>().is_some_and(is_broken) {
                    record.mode = Mode::Broken;
                    ended.broke = true;
                    Some(true)
                } else {
                    // Idle from now on: its check interval and idle timeout count from here.
                    record.info.last_used = Instant::now();
                    None
                }
            }
        };
        if let Some(frees_slot) = retire {
            ended.close = self.streams.remove(key).map(|r| r.conn);
            if frees_slot && gives_way {
                // To the budget, for the pool that starves, not to this pool's own line.
                self.free_slots(1);
            } else if frees_slot {
                ended.wakes.extend(self.release_slot().map(Some));
            }
            return ended;
        }
        // Healthy and free: a caller waiting for a connection of its own takes it first (a
        // lease could use room elsewhere; `get` can use nothing else), else the leasers.
        if self.waiters.exclusive() > 0
            && let Some(live) = self.unshare(key)
        {
            match self.waiters.serve_exclusive(Grant::Conn(live)) {
                Ok(waker) => ended.wakes.push(waker),
                Err(Grant::Conn(live)) => self.idle.push_back(live),
                Err(_) => {}
            }
        } else {
            self.serve_leasers(key, &mut ended.wakes);
        }
        ended
    }

    /// The pool gives way to another of its budget while its connection of `key` is still
    /// leased: one connection at a time drains for it (the pool's own callers take no new
    /// lease on it), and its slot goes to the budget at its last end.
    #[cold]
    fn drain_to_give_way(&mut self, key: Key) {
        if self
            .streams
            .records()
            .any(|(_, r)| r.mode == Mode::Draining)
        {
            return;
        }
        if let Some(record) = self.streams.get_mut(key).filter(|r| r.mode == Mode::Open) {
            record.mode = Mode::Draining;
        }
    }

    /// Takes an idle shared connection back into a connection of its own (for `get`); its
    /// slot goes with it.
    pub fn unshare(&mut self, key: Key) -> Option<Live<C>> {
        self.streams.remove(key)?.into_live()
    }
}
