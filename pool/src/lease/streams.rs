//! [`Streams`]: the connections lent out as leases, each shared by up to `max_streams`
//! callers, and the moves that place a lease.
//!
//! A shared connection lives in an `Arc` that its record and each of its leases hold; the
//! record keeps its count of leases and its mode under the pool's lock. Every lease drops its
//! `Arc` under that lock, so whenever the record says "no lease", the record's `Arc` is the
//! only one and the pool may borrow the connection mutably (`Arc::get_mut`) or take it back.
//! The `Arc` is made once, when the connection is first leased: a lease on a connection
//! already in this list allocates nothing.
//!
//! The `Arc` holds the connection as `dyn Any + Send + Sync` (an `Option<C>`, so that it can
//! be taken back out of the last `Arc` without knowing `C: Sync`), so the pool's state stays
//! `Send` for connections that are not `Sync` (which can be pooled with `get` but never
//! leased): only [`wrap`], called by `lease` where the connection is `Sync`, needs the bound.

use std::any::Any;
use std::sync::Arc;

use crate::info::{ConnInfo, Live};
use crate::shared::slab_insert;

/// A connection in shared form, whatever its type: an `Option<C>`, `Some` until taken back.
pub(crate) type SharedConn = Arc<dyn Any + Send + Sync>;

/// Puts a connection into shared form (one allocation, for its whole time as leases).
pub(crate) fn wrap<C: Send + Sync + 'static>(conn: C) -> SharedConn {
    Arc::new(Some(conn))
}

/// The connection inside, shared.
pub(crate) fn conn_ref<C: 'static>(conn: &SharedConn) -> Option<&C> {
    conn.downcast_ref::<Option<C>>()?.as_ref()
}

/// The connection inside, borrowed alone: only when this `Arc` is the only one.
#[inline]
pub(crate) fn conn_mut<C: 'static>(conn: &mut SharedConn) -> Option<&mut C> {
    Arc::get_mut(conn)?.downcast_mut::<Option<C>>()?.as_mut()
}

/// The connection taken back, when this `Arc` is the last one.
pub(crate) fn unwrap<C: 'static>(mut conn: SharedConn) -> Option<C> {
    Arc::get_mut(&mut conn)?.downcast_mut::<Option<C>>()?.take()
}

/// A lease counted on a shared connection, on its way to its caller.
pub(crate) struct Leased {
    pub conn: SharedConn,
    pub key: Key,
    pub info: ConnInfo,
}

/// What may happen to a shared connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Takes new leases.
    Open,
    /// Retired (lifetime, idle, resize, close): no new lease; closed after its last one. It
    /// still holds its slot.
    Draining,
    /// Broken: no new lease; closed after its last one. Its slot was freed at once.
    Broken,
}

/// One shared connection.
pub(crate) struct Record {
    /// Tells this record from a later one in the same place of the slab.
    pub id: u64,
    pub conn: SharedConn,
    pub info: ConnInfo,
    pub leases: usize,
    pub mode: Mode,
    /// Counted in the pool's slots. A broken connection gives its slot up at once, and so
    /// does one drained by a shrink (so a connection held by `get` is not retired for it
    /// too); both stay here until their last lease ends.
    pub slot: bool,
}

impl Record {
    /// Open, with room for one more lease under `max_streams`.
    pub fn has_room(&self, max_streams: usize) -> bool {
        self.mode == Mode::Open && self.leases < max_streams
    }

    /// Open with no lease: an idle connection in shared form.
    pub fn is_idle(&self) -> bool {
        self.mode == Mode::Open && self.leases == 0
    }

    /// One more lease on this connection (open, with room), the record of `key`. The pool's
    /// total is the caller's to count.
    pub fn lend(&mut self, key: Key) -> Leased {
        self.leases += 1;
        self.info.uses += 1;
        Leased {
            conn: Arc::clone(&self.conn),
            key,
            info: self.info,
        }
    }

    /// The connection taken back, with its facts, when its `Arc` is the last one.
    pub fn into_live<C: 'static>(self) -> Option<Live<C>> {
        Some(Live {
            conn: unwrap(self.conn)?,
            info: self.info,
        })
    }

    /// The connection, to borrow mutably: only while no lease holds it (else its `Arc` is
    /// not the only one).
    pub fn conn_mut<C: 'static>(&mut self) -> Option<&mut C> {
        conn_mut(&mut self.conn)
    }
}

/// The record of `key` in `slab`, if it is still there ([`Streams::get_mut`]).
fn record_mut(slab: &mut [Option<Record>], key: Key) -> Option<&mut Record> {
    slab.get_mut(key.at)?.as_mut().filter(|r| r.id == key.id)
}

/// What [`Streams::counts`] found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub idle: usize,
    pub slotted: usize,
    pub unslotted: usize,
}

/// Where a lease lives: the record's place and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub at: usize,
    pub id: u64,
}

/// The shared connections, in a slab whose places are reused.
///
/// Invariant: `leases` is the sum of every record's `leases`.
#[derive(Default)]
pub(crate) struct Streams {
    slab: Vec<Option<Record>>,
    free: Vec<usize>,
    next_id: u64,
    /// Leases held now, over every record.
    pub leases: usize,
}

impl Streams {
    /// No shared connection at all.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == self.free.len()
    }

    /// Adds a connection, with no lease yet.
    pub fn insert(&mut self, conn: SharedConn, info: ConnInfo) -> Key {
        let id = self.next_id;
        self.next_id += 1;
        let record = Record {
            id,
            conn,
            info,
            leases: 0,
            mode: Mode::Open,
            slot: true,
        };
        let at = slab_insert(&mut self.slab, &mut self.free, record);
        Key { at, id }
    }

    /// The record a lease points to, if it is still there.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut Record> {
        record_mut(&mut self.slab, key)
    }

    /// A lease on `key` ended: taken off its record's count and the total, in one look. The
    /// record, if it is still there (else nothing is counted).
    pub fn end_one(&mut self, key: Key) -> Option<&mut Record> {
        // The slab alone is borrowed, so the total can be counted beside the record.
        let record = record_mut(&mut self.slab, key)?;
        record.leases -= 1;
        self.leases -= 1;
        Some(record)
    }

    /// Takes a record out for good; its leases leave the count.
    pub fn remove(&mut self, key: Key) -> Option<Record> {
        let record = self.slab.get_mut(key.at)?.take_if(|r| r.id == key.id)?;
        self.free.push(key.at);
        self.leases -= record.leases;
        Some(record)
    }

    /// Takes out for good every record `pick` chooses.
    pub fn remove_where(&mut self, pick: impl Fn(&Record) -> bool) -> Vec<Record> {
        let keys: Vec<_> = self
            .records()
            .filter(|(_, record)| pick(record))
            .map(|(key, _)| key)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.remove(key))
            .collect()
    }

    /// The open connection with the fewest leases below `max_streams`, other than `avoid`:
    /// where a new lease goes. With its record, to lend from.
    #[inline]
    pub fn pick(&mut self, max_streams: usize, avoid: Option<Key>) -> Option<(Key, &mut Record)> {
        let mut best: Option<(usize, Key)> = None;
        for (at, record) in self.slab.iter().enumerate() {
            let Some(record) = record else { continue };
            if !record.has_room(max_streams) || avoid.is_some_and(|key| key.at == at) {
                continue;
            }
            if best.is_none_or(|(leases, _)| record.leases < leases) {
                best = Some((record.leases, Key { at, id: record.id }));
                if record.leases == 0 {
                    break;
                }
            }
        }
        let (_, key) = best?;
        Some((key, self.slab[key.at].as_mut()?))
    }

    /// An idle shared connection (open, no lease), for a caller that wants one of its own.
    pub fn idle_key(&self) -> Option<Key> {
        self.records()
            .find(|(_, record)| record.is_idle())
            .map(|(key, _)| key)
    }

    /// The keys of every record.
    pub fn keys(&self) -> impl Iterator<Item = Key> {
        self.records().map(|(key, _)| key)
    }

    /// Every record, with its key.
    pub fn records(&self) -> impl Iterator<Item = (Key, &Record)> {
        self.slab.iter().enumerate().filter_map(|(at, record)| {
            let record = record.as_ref()?;
            Some((Key { at, id: record.id }, record))
        })
    }

    /// The record of `key`, if it is still there.
    pub fn get(&self, key: Key) -> Option<&Record> {
        self.slab.get(key.at)?.as_ref().filter(|r| r.id == key.id)
    }

    /// Counts for [`Status`](crate::Status): idle shared connections, records that hold a
    /// slot, and records that gave theirs up but still carry leases.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for (_, record) in self.records() {
            counts.idle += usize::from(record.is_idle());
            counts.slotted += usize::from(record.slot);
            counts.unslotted += usize::from(!record.slot);
        }
        counts
    }
}
