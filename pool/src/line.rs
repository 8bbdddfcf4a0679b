//! [`Line`]: the callers waiting for a connection, served first come, first served.
//!
//! A waiter is a slot in a slab that the pool's lock guards, not a channel: joining, being
//! served and leaving allocate nothing once the slab has grown to the longest line seen, and
//! a waiter that leaves (its future dropped) takes itself out of the line under the lock, so
//! a grant is never sent to a caller that is gone. The one timer for every waiter's deadline
//! lives in the maintenance task ([`Line::expire`]), not in each wait.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use crate::state::Grant;

/// How a wait ended.
pub(crate) enum Wake<C> {
    /// Served: a returned connection or a free slot.
    Granted(Grant<C>),
    /// The pool closed.
    Closed,
    /// `wait_timeout` ran out.
    TimedOut,
}

/// A place in line: `id` orders the line, `key` finds the slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    id: u64,
    key: usize,
}

struct Slot<C> {
    waker: Option<Waker>,
    outcome: Option<Wake<C>>,
    deadline: Instant,
}

/// The waiting callers.
///
/// Invariants: every ticket in `queue` has a slot whose `outcome` is `None`; a slot with an
/// outcome is out of the queue and belongs to its ticket until [`poll`](Line::poll) returns
/// it or [`leave`](Line::leave) frees it; `queue` is sorted by id.
pub(crate) struct Line<C> {
    queue: VecDeque<Ticket>,
    slab: Vec<Option<Slot<C>>>,
    free: Vec<usize>,
    next_id: u64,
    /// The deadline the maintenance task sleeps until, if it was told of one.
    sweep_at: Option<Instant>,
}

impl<C> Line<C> {
    pub fn new() -> Self {
        Line {
            queue: VecDeque::new(),
            slab: Vec::new(),
            free: Vec::new(),
            next_id: 0,
            sweep_at: None,
        }
    }

    /// Callers waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Joins the end of the line; `waker` is woken when the wait ends. True when the maintenance task must be woken to time this
    /// waiter out: its deadline is earlier than any the task sleeps until.
    pub fn join(&mut self, deadline: Instant, waker: Waker) -> (Ticket, bool) {
        let slot = Slot {
            waker: Some(waker),
            outcome: None,
            deadline,
        };
        let key = match self.free.pop() {
            Some(key) => {
                self.slab[key] = Some(slot);
                key
            }
            None => {
                self.slab.push(Some(slot));
                self.slab.len() - 1
            }
        };
        let ticket = Ticket {
            id: self.next_id,
            key,
        };
        self.next_id += 1;
        self.queue.push_back(ticket);
        let wake_sweeper = self.sweep_at.is_none_or(|at| deadline < at);
        if wake_sweeper {
            self.sweep_at = Some(deadline);
        }
        (ticket, wake_sweeper)
    }

    /// The outcome, once there is one (the slot is then freed); else keeps the waker.
    pub fn poll(&mut self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Wake<C>> {
        let Some(slot) = self.slab.get_mut(ticket.key).and_then(Option::as_mut) else {
            // Unreachable while the invariants hold; a closed pool is the safe answer.
            return Poll::Ready(Wake::Closed);
        };
        match slot.outcome.take() {
            Some(outcome) => {
                self.release(ticket.key);
                Poll::Ready(outcome)
            }
            None => {
                match &mut slot.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Leaves the line for good (the wait was dropped). Returns a grant that had arrived but
    /// was never taken, for the pool to place again.
    pub fn leave(&mut self, ticket: Ticket) -> Option<Grant<C>> {
        if let Ok(at) = self.queue.binary_search_by_key(&ticket.id, |t| t.id) {
            self.queue.remove(at);
        }
        let slot = self.slab.get_mut(ticket.key).and_then(Option::take);
        self.free.push(ticket.key);
        match slot?.outcome? {
            Wake::Granted(grant) => Some(grant),
            Wake::Closed | Wake::TimedOut => None,
        }
    }

    /// Hands `grant` to the oldest waiter and returns its waker to wake once the lock is
    /// released; gives the grant back when nobody waits.
    pub fn serve(&mut self, grant: Grant<C>) -> Result<Option<Waker>, Grant<C>> {
        match self.queue.pop_front() {
            Some(ticket) => Ok(self.settle(ticket, Wake::Granted(grant))),
            None => Err(grant),
        }
    }

    /// Fails every waiter with [`Wake::Closed`]; returns their wakers.
    pub fn close_all(&mut self) -> Vec<Waker> {
        let tickets: Vec<_> = self.queue.drain(..).collect();
        tickets
            .into_iter()
            .filter_map(|t| self.settle(t, Wake::Closed))
            .collect()
    }

    /// Fails the waiters whose deadline has passed with [`Wake::TimedOut`] and returns their
    /// wakers; remembers and returns the next deadline to sleep until.
    pub fn expire(&mut self, now: Instant) -> (Vec<Waker>, Option<Instant>) {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for ticket in std::mem::take(&mut self.queue) {
            let deadline = self.slab[ticket.key].as_ref().map_or(now, |s| s.deadline);
            if deadline <= now {
                expired.push(ticket);
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                kept.push_back(ticket);
            }
        }
        self.queue = kept;
        self.sweep_at = next;
        let wakers = expired
            .into_iter()
            .filter_map(|t| self.settle(t, Wake::TimedOut))
            .collect();
        (wakers, next)
    }

    fn settle(&mut self, ticket: Ticket, outcome: Wake<C>) -> Option<Waker> {
        let slot = self.slab.get_mut(ticket.key).and_then(Option::as_mut)?;
        slot.outcome = Some(outcome);
        slot.waker.take()
    }

    fn release(&mut self, key: usize) {
        self.slab[key] = None;
        self.free.push(key);
    }
}
