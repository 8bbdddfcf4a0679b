//! [`Streams`]: the connections lent out as leases, each shared by up to `max_streams`
//! callers, and the moves that place a lease.
//!
//! A shared connection lives in a [`Lane`]: a [`Gate`] whose word counts the leases out and
//! whose cell holds the connection, lent as `&C` to each lease and as `&mut C` to the pool
//! alone while no lease holds it (`Manager::is_broken` and `check` need that). Its record here
//! keeps its mode and facts under the pool's lock; the gate's count is the truth for its
//! leases, because a lease on a connection that carries leases may come and go without the
//! lock ([`crate::leasing`]).
//!
//! While a shared connection has no lease, the pool keeps it borrowed alone (its record holds
//! the guard, [`Record::idle`]): its first lease then turns that borrow into a share in one
//! step, and its last lease turns its share back into the borrow, so a lease that is alone on
//! its connection costs two steps on the gate, as a lease beside others costs one.
//!
//! The pool makes its lanes once, when it is built (up to [`MAX_LANES`], one per connection
//! of `max_size`), and the lock-free path reads them from there with no lock and no registry:
//! a connection that comes into shared form takes a free lane (its connection moved into the
//! cell), and leaves it empty when it goes. A shared connection beyond them (after `resize`
//! grew the pool) gets a gate of its own, and while there is one the lock-free path stands
//! aside (see [`State::sync_gates`](crate::state::State)), so every lease still goes to the
//! connection with the fewest.

use std::any::Any;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use crate::info::ConnInfo;
use crate::lane::{Gate, OPEN, Owned, Share, WAITERS, count};

/// At most this many lanes are made: the lock-free path reads every one per lease.
pub(crate) const MAX_LANES: usize = 16;

/// What a lane's cell holds.
pub(crate) struct Slot<C> {
    /// The connection; `None` while the lane is free (or its connection was taken out).
    pub conn: Option<C>,
    /// The connection's facts as of its latest run of leases (written while borrowed alone),
    /// as a lease hands them out ([`Lease::info`](crate::Lease::info)).
    pub info: ConnInfo,
    /// The record of the connection in the lane now.
    pub key: Key,
}

/// What a lane keeps beside its cell, read by every lease without the lock.
pub(crate) struct Ties {
    /// Times the connection in the lane was checked out: every lease counts here, the
    /// lock-free ones too (the record's `info.uses` is not kept while it is shared).
    pub uses: AtomicU64,
    /// The pool's manager (an `M`), for the lock-free lease's `is_broken_shared`.
    pub manager: Arc<dyn Any + Send + Sync>,
    /// The pool's shared core (a `Shared<M>`), for the ends that need its lock. `Weak`: the
    /// pool owns its lanes.
    pub pool: Weak<dyn Any + Send + Sync>,
    /// Its place among the pool's lanes, or `None` for a gate of its own.
    pub lane: Option<usize>,
}

impl Ties {
    /// Counts one more use of the lane's connection; the count after.
    #[inline]
    pub fn count_use(&self) -> u64 {
        self.uses.fetch_add(1, Relaxed) + 1
    }

    /// Takes back a use counted for a lease that found nobody.
    pub fn uncount_use(&self) {
        self.uses.fetch_sub(1, Relaxed);
    }
}

/// A shared connection's cell.
pub(crate) type Lane<C> = Gate<Slot<C>, Ties>;

/// One lease's share of a lane.
pub(crate) type LaneShare<C> = Share<Slot<C>, Ties>;

/// A lane's connection borrowed alone, across an await (its check).
pub(crate) type LaneAlone<C> = Owned<Slot<C>, Ties>;

/// Makes the pool's lanes, empty: `n` of them, each tied to `manager` and `pool`.
pub(crate) fn lanes<C>(
    n: usize,
    manager: &Arc<dyn Any + Send + Sync>,
    pool: &Weak<dyn Any + Send + Sync>,
) -> Vec<Arc<Lane<C>>> {
    (0..n.min(MAX_LANES))
        .map(|at| Arc::new(gate(None, Some(at), manager, pool)))
        .collect()
}

fn gate<C>(
    conn: Option<C>,
    lane: Option<usize>,
    manager: &Arc<dyn Any + Send + Sync>,
    pool: &Weak<dyn Any + Send + Sync>,
) -> Lane<C> {
    let info = ConnInfo::new(tokio::time::Instant::now(), None);
    Gate::new(
        Slot {
            conn,
            info,
            key: Key {
                at: 0,
                id: u64::MAX,
            },
        },
        Ties {
            uses: AtomicU64::new(0),
            manager: Arc::clone(manager),
            pool: Weak::clone(pool),
            lane,
        },
    )
}

/// A lease counted on a shared connection, on its way to its caller.
pub(crate) struct Leased<C> {
    pub share: LaneShare<C>,
    /// The connection's uses, this lease counted.
    pub uses: u64,
}

/// What may happen to a shared connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Takes new leases.
    Open,
    /// Borrowed alone for its check by the caller that leases it first.
    Checking,
    /// Retired (lifetime, idle, resize, close): no new lease; closed after its last one. It
    /// still holds its slot.
    Draining,
    /// Broken: no new lease; closed after its last one. Its slot was freed at once.
    Broken,
}

/// One shared connection.
pub(crate) struct Record<C> {
    /// Tells this record from a later one in the same place of the slab.
    pub id: u64,
    /// The connection's lane (one of the pool's, or a gate of its own).
    pub gate: Arc<Lane<C>>,
    /// Its facts; `uses` is kept in the gate's ties meanwhile ([`info`](Self::info)).
    pub info: ConnInfo,
    pub mode: Mode,
    /// Its last lease ended after the background task's latest round (no clock is read as a
    /// lease ends; the next round stamps `idle_from`).
    pub unseen_end: bool,
    /// The first round of the background task that saw the connection idle after its last
    /// lease: idleness (`idle_timeout`) is measured from here, never from before it.
    pub idle_from: Option<tokio::time::Instant>,
    /// Counted in the pool's slots. A broken connection gives its slot up at once, and so
    /// does one drained by a shrink (so a connection held by `get` is not retired for it
    /// too); both stay here until their last lease ends.
    pub slot: bool,
    /// The connection borrowed alone while it has no lease (and is not out for its check):
    /// the pool's, to test, hand out, or take back.
    pub idle: Option<LaneAlone<C>>,
    /// The open and waiters bits last set on its gate ([`State::sync_gates`]).
    ///
    /// [`State::sync_gates`]: crate::state::State
    pub steered: usize,
}

impl<C> Record<C> {
    /// Counted in the pool's slots.
    pub fn holds_slot(&self) -> bool {
        self.slot
    }

    /// Leases on it now: its gate's count, and the checker's while `Checking`. Exact under
    /// the lock at 0 (no lease starts or ends at 0 without it) and at every count for the
    /// locked moves; the lock-free ones move it between 1 and `max_streams` meanwhile.
    pub fn leases(&self) -> usize {
        count(self.gate.peek()) + usize::from(self.mode == Mode::Checking)
    }

    /// Open, with room for one more lease under `max_streams`.
    pub fn has_room(&self, max_streams: usize) -> bool {
        self.mode == Mode::Open && self.leases() < max_streams
    }

    /// Open with no lease: an idle connection in shared form.
    pub fn is_idle(&self) -> bool {
        self.mode == Mode::Open && self.leases() == 0
    }

    /// Its facts, with its uses as counted now.
    pub fn info(&self) -> ConnInfo {
        ConnInfo {
            uses: self.gate.ties().uses.load(Relaxed),
            ..self.info
        }
    }

    /// Its facts as idleness is judged (`idle_timeout`, eviction order): `last_used` is the
    /// start of its latest run of leases, or the first round that saw it idle after it.
    pub fn idle_info(&self) -> ConnInfo {
        let mut info = self.info();
        if let Some(seen) = self.idle_from {
            info.last_used = info.last_used.max(seen);
        }
        info
    }

    /// Counts one more use of the connection; the count after.
    pub fn count_use(&self) -> u64 {
        self.gate.ties().count_use()
    }

    /// One more lease on this connection, if there is room under `max_streams` (lock-free
    /// leases may have taken it since the caller looked).
    pub fn lend(&mut self, max_streams: usize, lend: Lend<C>) -> Option<Leased<C>> {
        if self.mode != Mode::Open {
            return None;
        }
        let share = lend(self, max_streams)?;
        Some(Leased {
            share,
            uses: self.count_use(),
        })
    }
}

/// Counts one more share of a record's gate under the lock, which only connections that are
/// `Sync` can do. The pool's state holds it as a function pointer, set by `State::share` (the
/// one way into shared form, from `lease`, where the connection is `Sync`), so the state
/// itself needs no `Sync` bound and serves a pool that only uses `get`.
pub(crate) type Lend<C> = fn(&mut Record<C>, usize) -> Option<LaneShare<C>>;

/// [`Lend`] for a connection that is `Sync`: the borrow alone of an idle connection turned
/// into its first share, else one more share while below `max`.
pub(crate) fn lend<C: Sync>(record: &mut Record<C>, max: usize) -> Option<LaneShare<C>> {
    match record.idle.take() {
        Some(alone) => Some(alone.into_share()),
        None => record.gate.share_below(max),
    }
}

/// The record of `key` in `slab`, if it is still there ([`Streams::get_mut`]).
fn record_mut<C>(slab: &mut [Option<Record<C>>], key: Key) -> Option<&mut Record<C>> {
    slab.get_mut(key.at)
        .and_then(Option::as_mut)
        .filter(|r| r.id == key.id)
}

/// What [`Streams::counts`] found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub idle: usize,
    pub slotted: usize,
    pub unslotted: usize,
    pub leases: usize,
}

/// Where a lease lives: the record's place and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub at: usize,
    pub id: u64,
}

/// The shared connections, in a slab whose places are reused, and the pool's lanes.
///
/// Invariants: a record with leases holds its connection in its gate; a record with none
/// holds it borrowed alone (`idle`), but while `Checking`, when its checker does; a lane is
/// `taken` while a record or a connection is in it.
pub(crate) struct Streams<C> {
    slab: Vec<Option<Record<C>>>,
    free: Vec<usize>,
    next_id: u64,
    /// The pool's lanes (the same `Arc`s the lock-free path reads).
    lanes: Vec<Arc<Lane<C>>>,
    taken: Vec<bool>,
    /// Records whose connection has a gate of its own, not a lane.
    pub unlaned: usize,
    /// Set once a connection came into shared form (see [`Lend`]).
    pub lend: Option<Lend<C>>,
    manager: Arc<dyn Any + Send + Sync>,
    pool: Weak<dyn Any + Send + Sync>,
}

impl<C> Streams<C> {
    pub fn new(
        lanes: Vec<Arc<Lane<C>>>,
        manager: Arc<dyn Any + Send + Sync>,
        pool: Weak<dyn Any + Send + Sync>,
    ) -> Self {
        Streams {
            slab: Vec::new(),
            free: Vec::new(),
            next_id: 0,
            taken: vec![false; lanes.len()],
            lanes,
            unlaned: 0,
            lend: None,
            manager,
            pool,
        }
    }

    /// No shared connection at all.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == self.free.len()
    }

    /// Adds a connection, with no lease; it takes a free lane, else a gate of its own.
    pub fn insert(&mut self, conn: C, info: ConnInfo) -> Key {
        let id = self.next_id;
        self.next_id += 1;
        let at = self.free.pop().unwrap_or(self.slab.len());
        let key = Key { at, id };
        let uses = info.uses;
        let mut conn = Some(conn);
        let mut idle = None;
        for (lane, taken) in self.lanes.iter().zip(self.taken.iter_mut()) {
            if *taken {
                continue;
            }
            // A free lane is empty and unshared, so it is ours alone at once.
            if let Some(mut slot) = lane.alone()
                && slot.conn.is_none()
            {
                slot.conn = conn.take();
                *taken = true;
                idle = Some(slot);
                break;
            }
        }
        if idle.is_none() {
            self.unlaned += 1;
            let gate = Arc::new(self::gate(conn, None, &self.manager, &self.pool));
            idle = gate.alone();
        }
        let Some(mut idle) = idle else {
            unreachable!("a new gate is not borrowed")
        };
        idle.info = info;
        idle.key = key;
        let gate = Arc::clone(idle.gate());
        gate.ties().uses.store(uses, Relaxed);
        let record = Record {
            id,
            gate,
            idle: Some(idle),
            info,
            mode: Mode::Open,
            unseen_end: false,
            idle_from: None,
            slot: true,
            steered: 0,
        };
        if at == self.slab.len() {
            self.slab.push(Some(record));
        } else {
            self.slab[at] = Some(record);
        }
        key
    }

    /// The record a lease points to, if it is still there.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut Record<C>> {
        record_mut(&mut self.slab, key)
    }

    /// Takes a record out for good, with its connection when no lease holds it (else the
    /// last lease takes it, see [`empty`](Self::empty)). Its gate takes no lock-free move
    /// from here.
    pub fn remove(&mut self, key: Key) -> Option<(Record<C>, Option<C>)> {
        let place = self.slab.get_mut(key.at)?;
        if place.as_ref().is_none_or(|r| r.id != key.id) {
            return None;
        }
        let mut record = place.take()?;
        self.free.push(key.at);
        record.gate.steer(0, OPEN | WAITERS);
        record.steered = 0;
        if record.gate.ties().lane.is_none() {
            self.unlaned -= 1;
        }
        record.info.uses = record.gate.ties().uses.load(Relaxed);
        let alone = record.idle.take().or_else(|| record.gate.alone());
        let conn = alone.and_then(|alone| self.release(alone));
        Some((record, conn))
    }

    /// Takes the connection out of a gate borrowed alone whose record is gone (or going);
    /// its lane is free from then on.
    pub fn release(&mut self, mut alone: LaneAlone<C>) -> Option<C> {
        let conn = alone.conn.take();
        if let Some(at) = alone.ties().lane
            && self
                .lanes
                .get(at)
                .is_some_and(|lane| Arc::ptr_eq(lane, alone.gate()))
        {
            self.taken[at] = false;
        }
        conn
    }

    /// The open connection with the fewest leases below `max_streams`, other than `avoid`:
    /// where a new lease goes.
    pub fn pick(&self, max_streams: usize, avoid: Option<Key>) -> Option<Key> {
        let mut best: Option<(usize, Key)> = None;
        for (at, record) in self.slab.iter().enumerate() {
            let Some(record) = record else { continue };
            if record.mode != Mode::Open || avoid.is_some_and(|key| key.at == at) {
                continue;
            }
            let leases = record.leases();
            if leases >= max_streams {
                continue;
            }
            if best.is_none_or(|(fewest, _)| leases < fewest) {
                best = Some((leases, Key { at, id: record.id }));
                if leases == 0 {
                    break;
                }
            }
        }
        best.map(|(_, key)| key)
    }

    /// An idle shared connection (open, no lease), for a caller that wants one of its own.
    pub fn idle_key(&self) -> Option<Key> {
        self.keys()
            .find(|&key| self.get(key).is_some_and(Record::is_idle))
    }

    /// The keys of every record.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.slab
            .iter()
            .enumerate()
            .filter_map(|(at, r)| r.as_ref().map(|r| Key { at, id: r.id }))
    }

    /// Every record, to change.
    pub fn records_mut(&mut self) -> impl Iterator<Item = &mut Record<C>> + '_ {
        self.slab.iter_mut().flatten()
    }

    /// The record of `key`, if it is still there.
    pub fn get(&self, key: Key) -> Option<&Record<C>> {
        self.slab
            .get(key.at)
            .and_then(Option::as_ref)
            .filter(|r| r.id == key.id)
    }

    /// Counts for [`Status`](crate::Status): idle shared connections, records that hold a
    /// slot, records that gave theirs up but still carry leases, and leases held.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for record in self.slab.iter().flatten() {
            counts.idle += usize::from(record.is_idle());
            counts.slotted += usize::from(record.holds_slot());
            counts.unslotted += usize::from(!record.holds_slot());
            counts.leases += record.leases();
        }
        counts
    }
}
