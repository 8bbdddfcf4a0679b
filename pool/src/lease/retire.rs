//! Connections leaving: a shrink (`resize`), and shared ones: idle ones evicted, leased ones
//! drained (lifetime, shrink), every one let go of when the pool closes.

use std::task::Waker;

use crate::BuildError;
use crate::config::validate;
use crate::info::ConnInfo;
use crate::lease::streams::{Mode, Record, SharedConn};
use crate::shared::state::{Live, State};
use tokio::time::Instant;

impl<C: 'static> State<C> {
    /// Sets `max_size` (checked as the builder checks it): the first connections over it go,
    /// idle ones returned for closing (own, then shared) and those that carry leases drained
    /// (no new lease, closed after the last); callers in line are granted the slots that came
    /// free (their wakers pushed to `wakes`).
    pub fn resize(
        &mut self,
        max_size: usize,
        wakes: &mut Vec<Option<Waker>>,
    ) -> Result<(Vec<Live<C>>, Vec<SharedConn>), BuildError> {
        validate(max_size, self.min_idle)?;
        self.max_size = max_size;
        let mut over = self.slots.saturating_sub(max_size);
        let mut pick = || over.checked_sub(1).inspect(|&left| over = left).is_some();
        let evicted = self.evict(|_, _| pick());
        let shared_evicted = self.evict_shared(|_, _| pick());
        self.drain_shared(true, |_| pick());
        self.grant_slots(|state| !state.waiters.is_empty(), wakes);
        Ok((evicted, shared_evicted))
    }

    /// Takes the idle shared connections `pick` chooses (given each one's facts and how many
    /// idle connections, of both forms, are left before it), oldest first, freeing their
    /// slots; returns them for closing.
    pub fn evict_shared(
        &mut self,
        mut pick: impl FnMut(&ConnInfo, usize) -> bool,
    ) -> Vec<SharedConn> {
        let mut idle: Vec<_> = self
            .streams
            .records()
            .filter(|(_, record)| record.is_idle())
            .map(|(key, record)| (key, record.info))
            .collect();
        idle.sort_by_key(|(_, info)| info.last_used);
        let mut remaining = self.idle.len() + idle.len();
        let mut evicted = Vec::new();
        for (key, info) in idle {
            if pick(&info, remaining)
                && let Some(conn) = self.streams.remove(key).map(|r| r.conn)
            {
                self.free_slots(1);
                evicted.push(conn);
            }
            remaining -= 1;
        }
        evicted
    }

    /// When the next connection's lifetime ends, among those the background task retires
    /// (idle ones, and shared ones still open for leases): it wakes then, so a connection
    /// that carries leases takes none once its lifetime is over, without a lease reading the
    /// clock.
    pub fn next_expiry(&self) -> Option<Instant> {
        let idle = self.idle.iter().filter_map(|live| live.info.expires());
        let shared = self.streams.records().filter_map(|(_, record)| {
            (record.mode == Mode::Open).then_some(record.info.expires()?)
        });
        idle.chain(shared).min()
    }

    /// Retires the open shared connections that carry leases, as `pick` chooses (fewest
    /// leases first): they take no new lease and close after their last one. They keep their
    /// slot until then, unless `free_slot` (a shrink, where the pool is above its size and
    /// the slot goes at once, so no other connection is retired for the same excess).
    pub fn drain_shared(&mut self, free_slot: bool, mut pick: impl FnMut(&ConnInfo) -> bool) {
        let mut leased: Vec<_> = self
            .streams
            .records()
            .filter(|(_, record)| record.mode == Mode::Open && record.leases > 0)
            .map(|(key, record)| (record.leases, key))
            .collect();
        leased.sort_by_key(|(leases, _)| *leases);
        for (_, key) in leased {
            if let Some(record) = self.streams.get_mut(key)
                && pick(&record.info)
            {
                record.mode = Mode::Draining;
                if free_slot {
                    record.slot = false;
                    self.free_slots(1);
                }
            }
        }
    }

    /// Takes every idle shared connection back into a connection of its own, slots and all.
    pub fn unshare_idle(&mut self) -> Vec<Live<C>> {
        let records = self.streams.remove_where(Record::is_idle);
        records.into_iter().filter_map(Record::into_live).collect()
    }

    /// Lets go of every shared connection (the pool closed and its wait for the last leases
    /// ran out): their slots are freed, and each closes when its last lease ends.
    pub fn orphan_shared(&mut self) -> Vec<SharedConn> {
        let records = self.streams.remove_where(|_| true);
        self.free_slots(records.iter().filter(|r| r.slot).count());
        records.into_iter().map(|r| r.conn).collect()
    }
}
