//! [`Gate`]: the cell a shared connection is to live in on the lock-free lease path (issue
//! 13). Not wired into the pool yet, so compiled for the crate's tests only: its tests, run
//! under Miri by `scripts/miri`, check the protocol before the pool depends on it.
//!
//! A lease per request reaches 0.9 of bare connections only when it takes no lock and holds
//! one `Arc`, the one whose count sits beside the connection's lease count (BENCHMARKS.md,
//! "What a lease per request must not do to reach 0.9"). The pool still needs the connection
//! alone now and then (`Manager::is_broken` and `check` take `&mut`), and a registry that
//! callers read without a lock keeps references to every shared connection, so
//! `Arc::get_mut` can no longer prove it alone. The gate proves it instead: one word counts
//! the shares out, and a bit in it marks the connection borrowed alone.
//!
//! - [`Gate::try_share`] and [`Gate::share`] count one more share, never while the
//!   connection is borrowed alone; a [`Share`] lends `&C` until it ends.
//! - [`Gate::alone`] marks the connection borrowed alone, only when no share is out; while
//!   the mark stands no share can start, so the [`Alone`] guard lends `&mut` safely.
//! - The open and waiters bits steer callers (a fast share needs the open bit; a fast end
//!   needs the waiters bit clear, see [`Share::try_end`]); they are not needed for safety.
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

/// A value lent to counted shares (`&C`) or to one borrower alone (`&mut C`), never both.
pub(crate) struct Gate<C> {
    word: AtomicUsize,
    value: UnsafeCell<C>,
}

// SAFETY: the gate hands `&C` to shares on any thread (so `C: Sync`) and `&mut C` to one
// borrower at a time on any thread (so `C: Send`), never both at once (see the impl). (`Send`
// is automatic: `UnsafeCell<C>` is `Send` when `C` is.)
unsafe impl<C: Send + Sync> Sync for Gate<C> {}

impl<C> Gate<C> {
    /// A gate with no share out, closed.
    pub(crate) fn new(value: C) -> Self {
        Gate {
            word: AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// The gate's word as it is now (for placement: read every gate, then `try_share` on the
    /// fewest).
    pub(crate) fn peek(&self) -> usize {
        self.word.load(Relaxed)
    }

    /// One more share, if the word is still `seen`, `seen` is open, nobody waits, and its
    /// count is at least `min` and below `max`: the lock-free path. `None` when any of that
    /// no longer holds (the caller looks again, or takes the lock).
    pub(crate) fn try_share(
        self: &Arc<Self>,
        seen: usize,
        min: usize,
        max: usize,
    ) -> Option<Share<C>> {
        let n = count(seen);
        // `COUNT` bounds the count whatever `max` says, so it never runs into the bits.
        if seen & (OPEN | WAITERS | ALONE) != OPEN || n < min || n >= max.min(COUNT) {
            return None;
        }
        self.word
            .compare_exchange(seen, seen + 1, Acquire, Relaxed)
            .ok()
            .map(|_| Share {
                gate: Arc::clone(self),
                counted: true,
            })
    }

    /// One more share, whatever the open and waiters bits say (the pool's locked path,
    /// which has decided already). `None` only while the value is borrowed alone.
    pub(crate) fn share(self: &Arc<Self>) -> Option<Share<C>> {
        self.word
            .fetch_update(Acquire, Relaxed, |word| {
                (word & ALONE == 0 && count(word) < COUNT).then_some(word + 1)
            })
            .ok()
            .map(|_| Share {
                gate: Arc::clone(self),
                counted: true,
            })
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

    /// The value borrowed alone: only when no share is out. While the guard lives no share
    /// can start (both ways of sharing fail), and the open bit is cleared so that callers
    /// reading the gates do not try.
    pub(crate) fn alone(&self) -> Option<Alone<'_, C>> {
        self.word
            .fetch_update(Acquire, Relaxed, |word| {
                (count(word) == 0 && word & ALONE == 0).then_some((word | ALONE) & !OPEN)
            })
            .ok()
            .map(|_| Alone { gate: self })
    }
}

/// One counted share of a gate's value; ending it takes the count back.
pub(crate) struct Share<C> {
    gate: Arc<Gate<C>>,
    /// Still counted in the gate (cleared by the ends that count it back themselves).
    counted: bool,
}

impl<C> Share<C> {
    /// Ends the share without the pool's lock: only when another share stays out (the
    /// last one ends under the lock, which tests the connection) and nobody waits (an end
    /// serves the line under the lock). A compare-and-swap of the whole word, so it either
    /// lands before the waiters bit is set (and the pool's look for room after setting it
    /// sees the room), or fails and the caller takes the lock.
    pub(crate) fn try_end(mut self) -> Result<(), Self> {
        let gate = &self.gate;
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
        self.counted = false;
        Ok(())
    }

    /// Ends the share whatever the bits say (under the pool's lock); the count left.
    pub(crate) fn end(mut self) -> usize {
        self.counted = false;
        count(self.gate.word.fetch_sub(1, Release)) - 1
    }
}

impl<C> Deref for Share<C> {
    type Target = C;

    fn deref(&self) -> &C {
        // SAFETY: this share is counted in the gate's word until it ends (`try_end` and `end`
        // consume it; drop counts it back), and `Gate::alone` lends `&mut` only while the
        // count is 0 and keeps new shares out until its guard drops. The `Acquire` that
        // counted this share saw the `Release` that ended the last borrow alone.
        unsafe { &*self.gate.value.get() }
    }
}

impl<C> Drop for Share<C> {
    /// A share dropped without `end`: counted back (never left out, so the value can still
    /// be borrowed alone later).
    fn drop(&mut self) {
        if self.counted {
            self.gate.word.fetch_sub(1, Release);
        }
    }
}

/// The gate's value borrowed alone; dropping the guard lets shares start again (the open
/// bit stays cleared: the pool opens the gate when it decides to).
pub(crate) struct Alone<'a, C> {
    gate: &'a Gate<C>,
}

impl<C> Deref for Alone<'_, C> {
    type Target = C;

    fn deref(&self) -> &C {
        // SAFETY: the alone bit is set and the count was 0 when it was set; no share can
        // start until this guard drops.
        unsafe { &*self.gate.value.get() }
    }
}

impl<C> DerefMut for Alone<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        // SAFETY: as in `deref`; this guard is the only one (setting the bit needs it clear).
        unsafe { &mut *self.gate.value.get() }
    }
}

impl<C> Drop for Alone<'_, C> {
    fn drop(&mut self) {
        self.gate.word.fetch_and(!ALONE, Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Gate, OPEN, WAITERS, count};

    #[test]
    fn a_share_needs_an_open_gate_room_and_no_waiters() {
        let gate = Arc::new(Gate::new(5_u64));
        assert!(gate.try_share(gate.peek(), 0, 4).is_none(), "closed");
        let word = gate.steer(OPEN, 0);
        let first = gate.try_share(word, 0, 4).expect("open, room");
        assert_eq!(*first, 5);
        assert!(
            gate.try_share(word, 0, 4).is_none(),
            "a stale word is refused"
        );
        assert!(gate.try_share(gate.peek(), 2, 4).is_none(), "below min");
        let word = gate.steer(WAITERS, 0);
        assert!(gate.try_share(word, 0, 4).is_none(), "callers wait");
        let word = gate.steer(0, WAITERS);
        let second = gate.try_share(word, 0, 2).expect("room for two");
        assert!(gate.try_share(gate.peek(), 0, 2).is_none(), "full");
        assert_eq!(count(gate.peek()), 2);
        drop((first, second));
        assert_eq!(count(gate.peek()), 0);
    }

    #[test]
    fn the_value_is_alone_only_with_no_share_out_and_no_share_starts_meanwhile() {
        let gate = Arc::new(Gate::new(String::from("conn")));
        gate.steer(OPEN, 0);
        let share = gate.share().expect("a share");
        assert!(gate.alone().is_none(), "a share is out");
        assert_eq!(share.end(), 0);
        {
            let mut alone = gate.alone().expect("nobody shares");
            alone.push('!');
            assert_eq!(gate.peek() & OPEN, 0, "closed while alone");
            assert!(gate.share().is_none(), "no share while alone");
            assert!(gate.try_share(gate.peek() | OPEN, 0, 4).is_none());
            assert!(gate.alone().is_none(), "one borrower alone");
        }
        let share = gate.share().expect("shares start again");
        assert_eq!(*share, "conn!");
    }

    #[test]
    fn a_fast_end_leaves_the_last_share_and_any_waiters_to_the_lock() {
        let gate = Arc::new(Gate::new(1_u8));
        let word = gate.steer(OPEN, 0);
        let a = gate.try_share(word, 0, 4).expect("a");
        let b = gate.try_share(gate.peek(), 0, 4).expect("b");
        gate.steer(WAITERS, 0);
        let Err(b) = b.try_end() else {
            panic!("ended while callers wait")
        };
        gate.steer(0, WAITERS);
        assert!(b.try_end().is_ok(), "another share stays out");
        let Err(a) = a.try_end() else {
            panic!("the last share ended without the lock")
        };
        assert_eq!(a.end(), 0);
        assert_eq!(Arc::strong_count(&gate), 1, "every share let its Arc go");
    }

    /// Shares and borrows alone from several threads never overlap: each borrower alone
    /// writes a marker and puts it back, and every share reads the value unmarked. Bounded:
    /// a fixed number of rounds per thread. (Run it under Miri for the data-race check.)
    #[test]
    fn shares_and_borrows_alone_never_overlap_across_threads() {
        const ROUNDS: usize = if cfg!(miri) { 30 } else { 20_000 };
        let gate = Arc::new(Gate::new(0_u64));
        gate.steer(OPEN, 0);
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let gate = Arc::clone(&gate);
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        if t == 0 {
                            if let Some(mut value) = gate.alone() {
                                *value = 1;
                                std::hint::spin_loop();
                                *value = 0;
                            }
                            gate.steer(OPEN, 0);
                        } else if let Some(share) = gate.share() {
                            assert_eq!(*share, 0, "a share saw the value borrowed alone");
                            // The last share, or callers waiting: the share comes back to
                            // this thread and is counted back as it drops.
                            drop(share.try_end());
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
