//! [`Gate`]: the cell a shared connection lives in, for the lock-free lease path (issue 13).
//! Its tests run under Miri (`scripts/miri`), which checks the protocol for data races.
//!
//! A lease per request reaches 0.9 of bare connections only when it takes no lock and holds
//! one `Arc`, the one whose count sits beside the connection's lease count (BENCHMARKS.md,
//! "What a lease per request must not do to reach 0.9"). The pool still needs the connection
//! alone now and then (`Manager::is_broken` and `check` take `&mut`), and a registry that
//! callers read without a lock keeps references to every shared connection, so
//! `Arc::get_mut` can no longer prove it alone. The gate proves it instead: one word counts
//! the shares out, and a bit in it marks the connection borrowed alone.
//!
//! - [`Gate::try_share`] (lock-free, never on a count of 0) and [`Gate::share_below`] (the
//!   pool's locked path) count one more share, never while the value is borrowed alone; a
//!   [`Share`] lends `&T` until it ends.
//! - [`Gate::alone`] marks the value borrowed alone, only when no share is out; while the
//!   mark stands no share can start, so its guard ([`Owned`]) lends `&mut T` safely. [`Share::finish`] ends the last share straight into a borrow alone, and
//!   [`Owned::into_share`] ends a borrow alone straight into a share, each one atomic step.
//! - The open and waiters bits steer callers (a fast share needs the open bit; a fast end
//!   needs the waiters bit clear, see [`Share::try_end`]); they are not needed for safety.
//! - Beside the value, the gate keeps `ties` of type `X`, read through any share without
//!   the cell: what every holder of a share needs and nobody changes.
//!
//! `Gate<T, X>` is `Sync` when `T` is only `Send`: `&mut T` moves between threads one borrower
//! at a time, and the ways to a share (`&T` on any thread) ask `T: Sync` themselves, so no
//! share of a value that is not `Sync` can exist. The pool relies on it: a pool of
//! connections that are not `Sync` is still `Send` and `Sync`, and only `lease` needs `Sync`.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Takes shares without the pool's lock.
pub(crate) const OPEN: usize = 1 << (usize::BITS - 1);
/// Callers wait in the pool's line: ends go through the lock, to serve them.
pub(crate) const WAITERS: usize = 1 << (usize::BITS - 2);
/// Borrowed alone by the pool.
const ALONE: usize = 1 << (usize::BITS - 3);
/// The shares out.
const COUNT: usize = ALONE - 1;

/// The number of shares out in a gate word.
pub(crate) fn count(word: usize) -> usize {
    word & COUNT
}

/// The count of a word that is open for lock-free moves (open, nobody waiting), 0 while the
/// value is borrowed alone (which it is only with no share out); `None` otherwise.
/// [`Gate::try_share`] refuses a count of 0: a value with no share out is the locked
/// path's, which tests it first.
#[inline]
pub(crate) fn fast_count(word: usize) -> Option<usize> {
    if word & (OPEN | WAITERS) != OPEN {
        return None;
    }
    Some(if word & ALONE != 0 { 0 } else { count(word) })
}

/// A value lent to counted shares (`&T`) or to one borrower alone (`&mut T`), never both,
/// with `ties` beside it that every holder reads.
pub(crate) struct Gate<T, X = ()> {
    word: AtomicUsize,
    ties: X,
    value: UnsafeCell<T>,
}

// SAFETY: the gate hands `&mut T` to one borrower at a time on any thread (so `T: Send`), and
// `&T` only to shares, which only `T: Sync` can make (`try_share`, `share_below` and
// `Owned::into_share` ask it), never both at once (see the impl). `ties` is read by every
// holder (`X: Sync`). (`Send` is automatic: `UnsafeCell<T>` is `Send` when `T` is.)
unsafe impl<T: Send, X: Sync> Sync for Gate<T, X> {}

impl<T, X> Gate<T, X> {
    /// A gate with no share out, closed.
    pub(crate) fn new(value: T, ties: X) -> Self {
        Gate {
            word: AtomicUsize::new(0),
            ties,
            value: UnsafeCell::new(value),
        }
    }

    /// What the gate keeps beside its value.
    pub(crate) fn ties(&self) -> &X {
        &self.ties
    }

    /// The gate's word as it is now (for placement: read every gate, then `try_share` on the
    /// fewest).
    #[inline]
    pub(crate) fn peek(&self) -> usize {
        self.word.load(Relaxed)
    }

    /// Sets the bits of `set` and clears those of `clear` (of [`OPEN`] and [`WAITERS`]); the
    /// word after.
    pub(crate) fn steer(&self, set: usize, clear: usize) -> usize {
        debug_assert_eq!((set | clear) & !(OPEN | WAITERS), 0);
        let before = self
            .word
            .fetch_update(AcqRel, Relaxed, |word| Some((word | set) & !clear))
            .unwrap_or_else(|word| word);
        (before | set) & !clear
    }

    /// Marks the value borrowed alone, when no share is out and nobody has it alone.
    fn mark_alone(&self) -> bool {
        self.word
            .fetch_update(Acquire, Relaxed, |word| {
                (count(word) == 0 && word & ALONE == 0).then_some(word | ALONE)
            })
            .is_ok()
    }

    /// The value borrowed alone: only when no share is out. While the guard lives no share
    /// can start (every way of sharing fails). The open bit is left as it is: the alone bit
    /// keeps lock-free shares out by itself.
    pub(crate) fn alone(self: &Arc<Self>) -> Option<Owned<T, X>> {
        self.mark_alone().then(|| Owned {
            gate: Some(Arc::clone(self)),
        })
    }
}

impl<T: Sync, X> Gate<T, X> {
    /// One more share, if the word is still `seen`, `seen` is open for lock-free moves
    /// ([`fast_count`]), not borrowed alone, and its count is at least 1 and below `max`: the
    /// lock-free path. `None` when any of that no longer holds (the caller looks again, or
    /// takes the lock).
    #[inline]
    pub(crate) fn try_share(self: &Arc<Self>, seen: usize, max: usize) -> Option<Share<T, X>> {
        // `COUNT` bounds the count whatever `max` says, so it never runs into the bits.
        let n = count(seen);
        if seen & (OPEN | WAITERS | ALONE) != OPEN || n == 0 || n >= max.min(COUNT) {
            return None;
        }
        self.word
            .compare_exchange(seen, seen + 1, Acquire, Relaxed)
            .ok()
            .map(|_| Share::counted(Arc::clone(self)))
    }

    /// One more share while fewer than `max` are out, whatever the open and waiters bits say
    /// (the pool's locked path, which has decided already). `None` when the value is
    /// borrowed alone or `max` are out (lock-free shares may have taken the room).
    pub(crate) fn share_below(self: &Arc<Self>, max: usize) -> Option<Share<T, X>> {
        let max = max.min(COUNT);
        self.word
            .fetch_update(Acquire, Relaxed, |word| {
                (word & ALONE == 0 && count(word) < max).then_some(word + 1)
            })
            .ok()
            .map(|_| Share::counted(Arc::clone(self)))
    }
}

/// One counted share of a gate's value; ending it takes the count back.
pub(crate) struct Share<T, X = ()> {
    /// `None` once the share ended and counted itself back (its `Arc` moved on or dropped).
    gate: Option<Arc<Gate<T, X>>>,
}

/// How [`Share::finish`] ended a share.
pub(crate) enum Finished<T, X> {
    /// Other shares are still out.
    Left,
    /// It was the last: the value is borrowed alone from here (the share's `Arc` moved into
    /// the guard).
    Last(Owned<T, X>),
}

impl<T, X> Share<T, X> {
    fn counted(gate: Arc<Gate<T, X>>) -> Self {
        Share { gate: Some(gate) }
    }

    /// The gate shared.
    #[inline]
    pub(crate) fn gate(&self) -> &Arc<Gate<T, X>> {
        match &self.gate {
            Some(gate) => gate,
            // Emptied only by the ends, which consume the share.
            None => unreachable!("a share used after it ended"),
        }
    }

    /// What the gate keeps beside its value.
    #[inline]
    pub(crate) fn ties(&self) -> &X {
        &self.gate().ties
    }

    /// Ends the share without the pool's lock: only when another share stays out (the
    /// last one ends under the lock, which tests the connection) and nobody waits (an end
    /// serves the line under the lock). A compare-and-swap of the whole word, so it either
    /// lands before the waiters bit is set (and the pool's look for room after setting it
    /// sees the room), or fails and the caller takes the lock.
    #[inline]
    pub(crate) fn try_end(mut self) -> Result<(), Self> {
        let gate = self.gate();
        let mut word = gate.word.load(Relaxed);
        loop {
            if count(word) < 2 || word & WAITERS != 0 {
                return Err(self);
            }
            match gate
                .word
                .compare_exchange_weak(word, word - 1, Release, Relaxed)
            {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        // Counted back already: dropping the `Arc` is all that is left.
        self.gate = None;
        Ok(())
    }

    /// Ends the share whatever the bits say (under the pool's lock): when it was the last,
    /// the value is borrowed alone in the same step, so nothing can share it in between.
    pub(crate) fn finish(mut self) -> Finished<T, X> {
        let Some(gate) = self.gate.take() else {
            unreachable!("a share used after it ended")
        };
        let before = gate
            .word
            .fetch_update(AcqRel, Relaxed, |word| {
                // A counted share means no borrow alone, so the bit is clear here.
                Some(if count(word) == 1 {
                    (word - 1) | ALONE
                } else {
                    word - 1
                })
            })
            .unwrap_or_else(|word| word);
        match count(before) {
            1 => Finished::Last(Owned { gate: Some(gate) }),
            _ => Finished::Left,
        }
    }
}

impl<T, X> Deref for Share<T, X> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this share is counted in the gate's word until it ends (`try_end` and
        // `finish` consume it; drop counts it back), and a borrow alone is marked only
        // while the count is 0 and keeps new shares out until its guard drops. The `Acquire`
        // that counted this share saw the `Release` that ended the last borrow alone. A
        // share exists only for `T: Sync` (every way to make one asks it).
        unsafe { &*self.gate().value.get() }
    }
}

impl<T, X> Drop for Share<T, X> {
    /// A share dropped without `try_end` or `finish`: counted back (never left out, so the
    /// value can still be borrowed alone later).
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.word.fetch_sub(1, Release);
        }
    }
}

/// The gate's value borrowed alone, with an `Arc` of the gate; dropping the guard lets
/// shares start again.
pub(crate) struct Owned<T, X = ()> {
    /// `None` only once turned into a share.
    gate: Option<Arc<Gate<T, X>>>,
}

impl<T, X> Owned<T, X> {
    /// The gate borrowed alone.
    pub(crate) fn gate(&self) -> &Arc<Gate<T, X>> {
        match &self.gate {
            Some(gate) => gate,
            // Emptied only by `into_share`, which consumes the guard.
            None => unreachable!("a borrow alone used after it ended"),
        }
    }

    /// What the gate keeps beside its value.
    pub(crate) fn ties(&self) -> &X {
        &self.gate().ties
    }
}

impl<T: Sync, X> Owned<T, X> {
    /// Ends the borrow alone straight into a share, in one step: nothing can borrow the
    /// value alone, nor find the count at 0, in between.
    pub(crate) fn into_share(mut self) -> Share<T, X> {
        let gate = self.gate.take();
        let Some(gate) = gate else {
            unreachable!("a borrow alone used after it ended")
        };
        // The count is 0 and this guard's bit is set: nothing else changes either.
        gate.word
            .fetch_update(AcqRel, Relaxed, |word| Some((word & !ALONE) + 1))
            .ok();
        Share::counted(gate)
    }
}

impl<T, X> Deref for Owned<T, X> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the alone bit is set and the count was 0 when it was set; no share can
        // start until this guard drops.
        unsafe { &*self.gate().value.get() }
    }
}

impl<T, X> DerefMut for Owned<T, X> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; this guard is the only one (setting the bit needs it clear).
        unsafe { &mut *self.gate().value.get() }
    }
}

impl<T, X> Drop for Owned<T, X> {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.word.fetch_and(!ALONE, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Finished, Gate, OPEN, Share, WAITERS, count};

    #[test]
    fn a_fast_share_needs_an_open_gate_a_share_out_room_and_no_waiters() {
        let gate = Arc::new(Gate::new(5_u64, ()));
        let word = gate.steer(OPEN, 0);
        assert!(gate.try_share(word, 4).is_none(), "no share out yet");
        let first = gate.share_below(4).expect("the locked path shares from 0");
        assert_eq!(*first, 5);
        let word = gate.peek();
        let second = gate.try_share(word, 4).expect("open, one out, room");
        assert!(gate.try_share(word, 4).is_none(), "a stale word is refused");
        let word = gate.steer(WAITERS, 0);
        assert!(gate.try_share(word, 4).is_none(), "callers wait");
        let word = gate.steer(0, WAITERS);
        assert!(gate.try_share(word, 2).is_none(), "full at two");
        assert!(
            gate.share_below(2).is_none(),
            "full for the locked path too"
        );
        let word = gate.steer(0, OPEN);
        assert!(gate.try_share(word, 4).is_none(), "closed");
        assert!(
            gate.share_below(4).is_some(),
            "the locked path ignores the bits"
        );
        assert_eq!(count(gate.peek()), 2, "the dropped share was counted back");
        drop((first, second));
        assert_eq!(count(gate.peek()), 0);
    }

    #[test]
    fn the_value_is_alone_only_with_no_share_out_and_no_share_starts_meanwhile() {
        let gate = Arc::new(Gate::new(String::from("conn"), ()));
        gate.steer(OPEN, 0);
        let share = gate.share_below(4).expect("a share");
        assert!(gate.alone().is_none(), "a share is out");
        assert!(gate.alone().is_none(), "a share is out");
        assert!(matches!(share.finish(), Finished::Last(_)));
        {
            let mut alone = gate.alone().expect("nobody shares");
            alone.push('!');
            assert!(gate.share_below(4).is_none(), "no share while alone");
            assert!(gate.try_share(gate.peek() + 1, 4).is_none());
            assert!(gate.alone().is_none(), "one borrower alone");
            assert!(gate.alone().is_none(), "one borrower alone");
        }
        let share = gate.share_below(4).expect("shares start again");
        assert_eq!(*share, "conn!");
    }

    #[test]
    fn the_last_share_finishes_into_a_borrow_alone_and_back_into_a_share() {
        let gate = Arc::new(Gate::new(vec![1_u8], ()));
        gate.steer(OPEN, 0);
        let a = gate.share_below(4).expect("a");
        let b = gate.try_share(gate.peek(), 4).expect("b");
        assert!(matches!(a.finish(), Finished::Left));
        let Finished::Last(mut alone) = b.finish() else {
            panic!("the last share did not finish alone")
        };
        assert!(gate.share_below(4).is_none(), "nothing shares in between");
        assert!(gate.alone().is_none(), "nothing borrows alone in between");
        alone.push(2);
        let share = alone.into_share();
        assert_eq!(*share, [1, 2]);
        assert_eq!(count(gate.peek()), 1);
        assert!(gate.alone().is_none(), "the share is out");
        drop(share);
        assert!(gate.alone().is_some(), "free again");
        assert_eq!(
            gate.peek() & OPEN,
            OPEN,
            "a borrow alone leaves the open bit"
        );
    }

    #[test]
    fn a_fast_end_leaves_the_last_share_and_any_waiters_to_the_lock() {
        let gate = Arc::new(Gate::new(1_u8, ()));
        gate.steer(OPEN, 0);
        let a = gate.share_below(4).expect("a");
        let b = gate.try_share(gate.peek(), 4).expect("b");
        gate.steer(WAITERS, 0);
        let Err(b) = b.try_end() else {
            panic!("ended while callers wait")
        };
        gate.steer(0, WAITERS);
        assert!(b.try_end().is_ok(), "another share stays out");
        let Err(a) = a.try_end() else {
            panic!("the last share ended without the lock")
        };
        assert!(matches!(a.finish(), Finished::Last(_)));
        assert_eq!(Arc::strong_count(&gate), 1, "every share let its Arc go");
    }

    /// Shares and borrows alone from several threads never overlap: each borrower alone
    /// writes a marker and puts it back, and every share reads the value unmarked. Bounded:
    /// a fixed number of rounds per thread. (Run it under Miri for the data-race check.)
    #[test]
    fn shares_and_borrows_alone_never_overlap_across_threads() {
        const ROUNDS: usize = if cfg!(miri) { 30 } else { 20_000 };
        let gate = Arc::new(Gate::new(0_u64, ()));
        gate.steer(OPEN, 0);
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let gate = Arc::clone(&gate);
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        if t == 0 {
                            if let Some(mut value) = gate.alone() {
                                *value = 1;
                                std::hint::spin_loop();
                                *value = 0;
                            }
                        } else if let Some(share) = gate.share_below(8) {
                            assert_eq!(*share, 0, "a share saw the value borrowed alone");
                            // A lock-free share beside it, when the word allows.
                            let beside = gate.try_share(gate.peek(), 8);
                            if let Some(beside) = &beside {
                                assert_eq!(**beside, 0, "a share saw the value borrowed alone");
                            }
                            drop(beside.map(Share::try_end));
                            match (round % 2, share.finish()) {
                                (0, Finished::Last(mut alone)) => {
                                    *alone = 2;
                                    *alone = 0;
                                    drop(alone.into_share());
                                }
                                (_, Finished::Last(alone)) => drop(alone),
                                (_, Finished::Left) => {}
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no thread panicked");
        }
        assert_eq!(count(gate.peek()), 0, "every share was counted back");
    }
}
