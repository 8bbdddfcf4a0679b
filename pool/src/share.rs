//! The moves of leases under the pool's lock: handing a lease out, ending one, and bringing a
//! connection into shared form. Like every move in [`State`], none awaits, drops a connection
//! or wakes a task: each returns what to do once the lock is released.
//!
//! One exception to "no manager call under the lock": [`Manager::is_broken`] runs here when a
//! connection with no lease is leased, and when its last lease ends, because there the
//! connection's gate is at 0, which no lease leaves without the lock, so the pool can borrow
//! it alone. It is a flag read (its contract says so); borrowing the connection outside the
//! lock would take the lock twice per lease (see the crate's Decisions).
//!
//! The lock-free lease path ([`crate::leasing`]) moves a gate's count between 1 and
//! `max_streams` while the lock is held elsewhere. Every move here that counts a lease does it
//! with a bounded step on the gate (`Record::lend`), so it never exceeds `max_streams`; and
//! [`State::sync_gates`] opens a gate to that path only when a lease there would land where
//! the locked path would put it.
//!
//! [`Manager::is_broken`]: crate::Manager::is_broken

use std::sync::Arc;
use std::task::Waker;

use tokio::time::Instant;

use crate::info::ConnInfo;
use crate::lane::{Finished, OPEN, WAITERS};
use crate::line::{Arrival, Line};
use crate::state::{Grant, Live, State};
use crate::streams::{Key, LaneAlone, LaneShare, Leased, Mode};

/// What is left to do after a lease ended, once the lock is released.
pub(crate) struct Ended<C> {
    /// Waiters served: given the freed slot, the connection, or leases on it. Empty (no
    /// allocation) when nobody waits.
    pub wakes: Vec<Option<Waker>>,
    /// The connection, when it is to be closed (its last lease ended and it is retired or
    /// broken), taken out of its gate.
    pub close: Option<C>,
    /// The connection was found broken now (counted once).
    pub broke: bool,
}

impl<C> Ended<C> {
    fn new() -> Self {
        Ended {
            wakes: Vec::new(),
            close: None,
            broke: false,
        }
    }
}

/// Where the first move of a lease landed.
pub(crate) enum Placed<C> {
    /// A lease on a connection that had room.
    Lease(Leased<C>),
    /// The connection had no lease and its check is due: the caller has it alone (its
    /// record is `Checking`) and checks it; the use its lease will count.
    Check(Key, LaneAlone<C>, u64),
    /// The connection had no lease and is retired or broken: close it (its slot is freed).
    Retired(Option<C>, Option<Waker>, bool),
}

impl<C: Send + 'static> State<C> {
    /// Steers every shared connection's gate for the lock-free path, after each locked move
    /// (the pool's lock guard calls it as it unlocks):
    /// - open, when a lease there would land where the locked path would put it: the pool is
    ///   not closed, nobody waits in line (they come first), no connection is idle outside
    ///   shared form (it comes before one that carries leases), every shared connection has
    ///   a lane (the lock-free path sees only lanes), and the connection itself is open;
    /// - waiters, while anyone waits in line: ends then take the lock to serve them.
    ///
    /// A gate that newly shows waiters may have had room freed by a lock-free end after the
    /// caller that joined the line looked: the line is served again once every gate shows it
    /// (pushing the wakers), so no room freed before that is missed and none after it
    /// bypasses the lock.
    pub fn sync_gates(&mut self, wakes: &mut Vec<Option<Waker>>) {
        loop {
            let open = !self.closed
                && self.waiters.is_empty()
                && self.idle.is_empty()
                && self.streams.unlaned == 0;
            let waiting = if self.waiters.is_empty() { 0 } else { WAITERS };
            let mut newly_waiting = false;
            for record in self.streams.records_mut() {
                let want = waiting
                    | if open && record.mode == Mode::Open {
                        OPEN
                    } else {
                        0
                    };
                if record.steered != want {
                    record.gate.steer(want, (OPEN | WAITERS) & !want);
                    newly_waiting |= want & !record.steered & WAITERS != 0;
                    record.steered = want;
                }
            }
            if !newly_waiting {
                return;
            }
            self.serve_leasers_anywhere(wakes);
        }
    }

    /// Counts one more lease on `key`, if it is open with room.
    fn count_lease(&mut self, key: Key) -> Option<Leased<C>> {
        let lend = self.streams.lend?;
        self.streams.get_mut(key)?.lend(self.max_streams, lend)
    }

    /// Takes back a lease counted by [`count_lease`](Self::count_lease) that found nobody;
    /// `key` is its connection's, still there (the lock was held since).
    fn uncount_lease(&mut self, key: Key, lease: Leased<C>) {
        let share = lease.share;
        share.ties().uncount_use();
        if let Finished::Last(alone) = share.finish()
            && let Some(record) = self.streams.get_mut(key)
        {
            // No lease again: the pool keeps it alone, as any idle shared connection.
            record.idle = Some(alone);
        }
    }

    /// The shared connection kept from new leases while a caller waits for a connection of
    /// its own: the open one with the fewest leases. It takes no new lease (but from callers
    /// ahead of that caller in line), so its count falls, and when its last lease ends that
    /// caller takes it. Without it, leases that overlap would keep every connection leased
    /// and starve `get`.
    pub fn reserved_for_get(&self) -> Option<Key> {
        if self.waiters.exclusive() == 0 {
            return None;
        }
        self.streams.pick(usize::MAX, None)
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
    #[inline]
    pub fn serve_leasers(&mut self, key: Key, wakes: &mut Vec<Option<Waker>>) {
        if self.waiters.leasers() == 0 {
            return;
        }
        if self.reserved_for_get() == Some(key) {
            self.serve_leasers_anywhere(wakes);
            return;
        }
        self.serve_leasers_on(key, |_| true, wakes);
    }

    /// Serves callers waiting for a lease on `key`, while it has room and `may_serve` says
    /// the line allows it: a connection kept for a caller waiting for a connection of its
    /// own serves only while a caller waiting for a lease is first in line (it came before
    /// every such caller, so first come, first served still holds); one a caller just opened
    /// serves first the callers that came before it ([`share`](Self::share)). A connection
    /// past its lifetime takes no new lease, as in [`place_lease`](Self::place_lease):
    /// leased, it drains from now on (the clock is read only when callers wait).
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
            if record.mode == Mode::Open && record.leases() > 0 {
                record.mode = Mode::Draining;
            }
            return;
        }
        while self.waiters.leasers() > 0 && may_serve(&self.waiters) {
            if !self.has_room(key) {
                return;
            }
            let Some(lease) = self.count_lease(key) else {
                return;
            };
            match self.waiters.serve_leaser(Grant::Lease(lease)) {
                Ok(waker) => wakes.push(waker),
                Err(grant) => {
                    if let Grant::Lease(lease) = grant {
                        self.uncount_lease(key, lease);
                    }
                    return;
                }
            }
        }
    }

    /// `key` is open for leases and has room for one more.
    fn has_room(&self, key: Key) -> bool {
        self.streams
            .get(key)
            .is_some_and(|r| r.has_room(self.max_streams))
    }

    /// The check of a `Checking` connection failed or was dropped: its record goes, with its
    /// checker's borrow alone, and its connection comes out to be closed (its lane free
    /// again); its slot is the checker's to keep or free.
    pub fn check_failed(&mut self, key: Key, alone: LaneAlone<C>) -> Option<C> {
        self.opening_room -= self.max_streams - 1;
        match self.streams.get_mut(key) {
            Some(record) => {
                record.idle = Some(alone);
                self.streams.remove(key).and_then(|(_, conn)| conn)
            }
            None => self.streams.release(alone),
        }
    }

    /// Marks the connection of `key` broken: no new lease; its slot frees at once (to the
    /// oldest waiter). True when it was not marked before.
    pub fn mark_shared_broken(&mut self, key: Key) -> (bool, Option<Waker>) {
        let Some(record) = self.streams.get_mut(key) else {
            return (false, None);
        };
        if record.mode == Mode::Broken {
            return (false, None);
        }
        record.mode = Mode::Broken;
        if !std::mem::replace(&mut record.slot, false) {
            // Drained by a shrink: its slot is already given up.
            return (true, None);
        }
        (true, self.release_slot())
    }

    /// A lease ends under the lock (the last one on its connection, one that found it
    /// broken, or one while callers wait). When it was the last lease, the connection is
    /// borrowed alone in the same step and tested with `is_broken`, then retired, handed to
    /// the oldest waiter, or left idle in shared form; else its freed room goes to the oldest
    /// caller waiting for a lease.
    pub fn end_lease(
        &mut self,
        lease: LaneShare<C>,
        broken: bool,
        is_broken: impl FnOnce(&mut C) -> bool,
    ) -> Ended<C> {
        let key = lease.key;
        let mut ended = Ended::new();
        if broken {
            // Nothing to mark when the record is gone (orphaned, below).
            let (newly, wake) = self.mark_shared_broken(key);
            ended.broke = newly;
            if wake.is_some() {
                ended.wakes.push(wake);
            }
        }
        let max_streams = self.max_streams;
        let over_size = self.slots > self.max_size;
        let gate = Arc::as_ptr(lease.gate());
        let Some(record) = self
            .streams
            .get_mut(key)
            .filter(|record| std::ptr::eq(Arc::as_ptr(&record.gate), gate))
        else {
            // Orphaned: the pool closed and let go of it. The last lease closes it.
            if let Finished::Last(alone) = lease.finish() {
                ended.close = self.streams.release(alone);
            }
            return ended;
        };
        let mut alone = match lease.finish() {
            Finished::Left => {
                if record.has_room(max_streams) {
                    self.serve_leasers(key, &mut ended.wakes);
                }
                return ended;
            }
            Finished::Last(alone) => alone,
        };
        // The last lease: the connection is borrowed alone now. No clock is read: a
        // lifetime that ended under the leases drained the connection already (the
        // background task's timer), and `last_used` is when this run of leases began.
        let retire = match record.mode {
            Mode::Broken | Mode::Draining => Some(record.slot),
            Mode::Checking => None,
            Mode::Open => {
                if self.closed || over_size {
                    Some(true)
                } else if alone.conn.as_mut().is_some_and(is_broken) {
                    record.mode = Mode::Broken;
                    ended.broke = true;
                    Some(true)
                } else {
                    record.unseen_end = true;
                    None
                }
            }
        };
        record.idle = Some(alone);
        if let Some(frees_slot) = retire {
            ended.close = self.streams.remove(key).and_then(|(_, conn)| conn);
            if frees_slot && let Some(waker) = self.release_slot() {
                ended.wakes.push(Some(waker));
            }
            return ended;
        }
        // Healthy and free: a caller waiting for a connection of its own takes it first (a
        // lease could use room elsewhere; `get` can use nothing else), else the leasers.
        if self.waiters.exclusive() > 0 {
            if let Some(live) = self.unshare(key) {
                match self.waiters.serve_exclusive(Grant::Conn(live)) {
                    Ok(waker) => ended.wakes.push(waker),
                    Err(Grant::Conn(live)) => self.idle.push_back(live),
                    Err(_) => {}
                }
            }
        } else {
            self.serve_leasers(key, &mut ended.wakes);
        }
        ended
    }

    /// Takes an idle shared connection back into a connection of its own (for `get`); its
    /// slot goes with it.
    pub fn unshare(&mut self, key: Key) -> Option<Live<C>> {
        let (record, conn) = self.streams.remove(key)?;
        Some(Live {
            conn: conn?,
            info: record.info,
        })
    }
}

impl<C: Send + Sync + 'static> State<C> {
    /// The first move of a lease on the connection with the fewest leases that has room:
    /// a lease, or the connection alone for its check, or the connection to retire. `None`
    /// when no shared connection has room, or when the fewest leases are more than an idle
    /// connection of the pool's own has (none): the caller then takes that one.
    ///
    /// A connection with no lease is tested as it is taken: past its lifetime it retires,
    /// `is_broken` is asked, it is checked when idle past `check_interval`, and its
    /// `last_used` becomes `now`. A connection that carries leases takes one more without a
    /// look at the clock (`now` is not called): the background task drains it when its
    /// lifetime ends ([`crate::maintain`]).
    pub fn place_lease(
        &mut self,
        mut now: impl FnMut() -> Instant,
        check_interval: std::time::Duration,
        is_broken: impl FnOnce(&mut C) -> bool,
    ) -> Option<Placed<C>> {
        let key = self
            .streams
            .pick(self.max_streams, self.reserved_for_get())?;
        let idle_elsewhere = !self.idle.is_empty();
        let record = self.streams.get_mut(key)?;
        let leases = record.leases();
        if leases > 0 && idle_elsewhere {
            return None;
        }
        if leases > 0 {
            // Counted on the record already found (`count_lease` would look it up again).
            return record
                .lend(self.max_streams, crate::streams::lend::<C>)
                .map(Placed::Lease);
        }
        // No lease: the pool has it alone (no lease starts at 0 but under this lock).
        let mut alone = record.idle.take().or_else(|| record.gate.alone())?;
        let now = now();
        let expired = record.info.expired(now);
        let broken = !expired && alone.conn.as_mut().is_some_and(is_broken);
        if expired || broken {
            record.idle = Some(alone);
            let conn = self.streams.remove(key).and_then(|(_, conn)| conn);
            let wake = self.release_slot();
            return Some(Placed::Retired(conn, wake, broken));
        }
        let due = record.info.check_due(now, check_interval);
        record.info.last_used = now;
        record.unseen_end = false;
        record.idle_from = None;
        alone.info = record.info;
        let uses = record.count_use();
        if due {
            record.mode = Mode::Checking;
            self.promise_room();
            return Some(Placed::Check(key, alone, uses));
        }
        Some(Placed::Lease(Leased {
            share: alone.into_share(),
            uses,
        }))
    }

    /// A connection a lease caller has alone (opened for it, or idle and readied) becomes
    /// shared. Its leases go first to the callers waiting for one that came before that
    /// caller (`arrival`: they may wait for room promised by a connect whose own caller left,
    /// which reaches them only when that connect ends), then to the caller, then to the
    /// callers behind it: first come, first served. Returns the caller's lease, or `None`
    /// when the callers ahead of it took every one; its use, which its checkout counted, is
    /// then not counted.
    pub fn share(
        &mut self,
        conn: C,
        mut info: ConnInfo,
        arrival: Arrival,
        wakes: &mut Vec<Option<Waker>>,
    ) -> Option<Leased<C>> {
        // Counted again with its lease, as any other lease on the connection.
        info.uses = info.uses.saturating_sub(1);
        self.streams.lend = Some(crate::streams::lend::<C>);
        let key = self.streams.insert(conn, info);
        self.serve_leasers_on(key, |line| line.leaser_before(arrival), wakes);
        let leased = if self.has_room(key) {
            self.count_lease(key)
        } else {
            None
        };
        self.serve_leasers(key, wakes);
        leased
    }

    /// The check of a `Checking` connection passed: it opens for leases, its checker's lease
    /// counted (`uses`, counted as it was taken); callers waiting for a lease are served on
    /// it. `Err` gives the connection back when its record is gone (never: only its checker
    /// removes a `Checking` record).
    pub fn checked(
        &mut self,
        key: Key,
        mut alone: LaneAlone<C>,
        uses: u64,
        now: Instant,
        wakes: &mut Vec<Option<Waker>>,
    ) -> Result<Leased<C>, LaneAlone<C>> {
        self.opening_room -= self.max_streams - 1;
        let Some(record) = self.streams.get_mut(key) else {
            return Err(alone);
        };
        record.mode = Mode::Open;
        record.info.last_used = now;
        alone.info = record.info;
        let share = alone.into_share();
        self.serve_leasers(key, wakes);
        Ok(Leased { share, uses })
    }
}

impl<C: Send + 'static> State<C> {
    /// Takes the idle shared connections `pick` chooses (given each one's facts and how many
    /// idle connections, of both forms, are left before it), oldest first, freeing their
    /// slots; returns them for closing.
    pub fn evict_shared(&mut self, mut pick: impl FnMut(&ConnInfo, usize) -> bool) -> Vec<C> {
        let mut remaining = self.idle.len() + self.streams.counts().idle;
        let mut idle: Vec<_> = self
            .streams
            .keys()
            .filter_map(|key| {
                let record = self.streams.get(key)?;
                record
                    .is_idle()
                    .then_some((record.idle_info().last_used, key))
            })
            .collect();
        idle.sort_by_key(|(last_used, _)| *last_used);
        let mut evicted = Vec::new();
        for (_, key) in idle {
            let Some(record) = self.streams.get(key) else {
                continue;
            };
            if pick(&record.idle_info(), remaining)
                && let Some(conn) = self.streams.remove(key).and_then(|(_, conn)| conn)
            {
                self.slots -= 1;
                evicted.push(conn);
            }
            remaining -= 1;
        }
        evicted
    }

    /// A round of the background task at `now`: shared connections whose last lease ended
    /// since the last round count as idle from `now` (see [`Record::idle_from`]).
    ///
    /// [`Record::idle_from`]: crate::streams::Record
    pub fn see_ended_leases(&mut self, now: Instant) {
        for record in self.streams.records_mut() {
            if std::mem::take(&mut record.unseen_end) {
                record.idle_from = Some(now);
            }
        }
    }

    /// When the next connection's lifetime ends, among those the background task retires
    /// (idle ones, and shared ones still open for leases): it wakes then, so a connection
    /// that carries leases takes none once its lifetime is over, without a lease reading the
    /// clock.
    pub fn next_expiry(&self) -> Option<Instant> {
        let idle = self.idle.iter().filter_map(|live| live.info.expires());
        let shared = self.streams.keys().filter_map(|key| {
            let record = self.streams.get(key)?;
            (record.mode == Mode::Open).then_some(record.info.expires()?)
        });
        idle.chain(shared).min()
    }

    /// Retires the open shared connections that carry leases, as `pick` chooses (fewest
    /// leases first): they take no new lease and close after their last one. They keep their
    /// slot until then, unless `free_slot` (a shrink, where the pool is above its size and
    /// the slot goes at once, so no other connection is retired for the same excess).
    /// Returns how many were retired.
    pub fn drain_shared(
        &mut self,
        free_slot: bool,
        mut pick: impl FnMut(&ConnInfo) -> bool,
    ) -> usize {
        let mut leased: Vec<_> = self
            .streams
            .keys()
            .filter_map(|key| {
                let record = self.streams.get(key)?;
                let leases = record.leases();
                (record.mode == Mode::Open && leases > 0).then_some((leases, key))
            })
            .collect();
        leased.sort_by_key(|(leases, _)| *leases);
        let mut drained = 0;
        for (_, key) in leased {
            if let Some(record) = self.streams.get_mut(key)
                && pick(&record.info())
            {
                record.mode = Mode::Draining;
                if free_slot {
                    record.slot = false;
                    self.slots -= 1;
                }
                drained += 1;
            }
        }
        drained
    }

    /// Takes every idle shared connection back into a connection of its own, slots and all.
    pub fn unshare_idle(&mut self) -> Vec<Live<C>> {
        let keys: Vec<_> = self
            .streams
            .keys()
            .filter(|&key| self.streams.get(key).is_some_and(|r| r.is_idle()))
            .collect();
        keys.into_iter()
            .filter_map(|key| self.unshare(key))
            .collect()
    }

    /// Lets go of every shared connection (the pool closed and its wait for the last leases
    /// ran out): their slots are freed, and each closes when its last lease ends. A
    /// connection out for its check stays its checker's, who finds the pool closed when the
    /// check ends and frees the slot then (once).
    pub fn orphan_shared(&mut self) -> Vec<C> {
        let keys: Vec<_> = self
            .streams
            .keys()
            .filter(|&key| {
                self.streams
                    .get(key)
                    .is_some_and(|r| r.mode != Mode::Checking)
            })
            .collect();
        let mut conns = Vec::new();
        for key in keys {
            if let Some((record, conn)) = self.streams.remove(key) {
                if record.holds_slot() {
                    self.slots -= 1;
                }
                conns.extend(conn);
            }
        }
        conns
    }
}
