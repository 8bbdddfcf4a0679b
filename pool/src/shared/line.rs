//! [`Line`]: the callers waiting for a connection, served first come, first served.
//!
//! A waiter is a slot in a slab that the pool's lock guards, not a channel: joining, being
//! served and leaving allocate nothing once the slab has grown to the longest line seen, and
//! a waiter that leaves (its future dropped) takes itself out of the line under the lock, so
//! a grant is never sent to a caller that is gone.
//!
//! One timer serves the whole line (the crate's Decisions say why): the background task
//! times out every waiter past its deadline ([`Line::time_out_expired`]), but a waiter times
//! itself out ([`Ticket::alone`]) when that task does not run on its runtime or ends while it
//! waits ([`Line::timer_lost`]).

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use tokio::runtime::{Handle, Id};
use tokio::time::Instant;

use crate::info::Live;
use crate::lease::streams::Leased;
use crate::shared::slab_insert;

/// What a waiter is handed.
pub(crate) enum Grant<C> {
    /// A returned connection.
    Conn(Live<C>),
    /// A slot: the waiter may open a connection of its own (it is already counted).
    Slot,
    /// A lease on a shared connection (only to a caller waiting for a lease).
    Lease(Leased),
}

/// How a wait ended.
pub(crate) enum Wake<C> {
    /// Served: a returned connection or a free slot.
    Granted(Grant<C>),
    /// The pool closed.
    Closed,
    /// `wait_timeout` ran out.
    TimedOut,
}

/// A place in line: `id` orders the line, `key` finds the slot, `lease` says whether the
/// caller wants a lease (a share of a connection) rather than a connection of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    id: u64,
    key: usize,
    /// When the line's timer times it out; `None` for a caller put back in line only until
    /// its next look, which takes it out again.
    deadline: Option<Instant>,
    pub lease: bool,
    /// The waiter times itself out: the line's timer does not run on its runtime.
    pub alone: bool,
    /// The line's timer is planned past this waiter's deadline: the background task is to
    /// plan again ([`Shared::rearm`](crate::shared::Shared)).
    pub rearm: bool,
}

/// A caller's place in line by when it came ([`Line::arrive`]), kept while it is out of line:
/// it waits at that place ([`Line::rejoin`]), and a connection it opens serves the callers
/// ahead of that place first ([`Line::leaser_before`]), so first come, first served holds
/// for a caller that was never in line too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    id: u64,
    lease: bool,
}

struct Slot<C> {
    waker: Option<Waker>,
    outcome: Option<Wake<C>>,
    /// It times itself out.
    alone: bool,
}

/// The waiting callers.
///
/// Invariants: every ticket in `queue` has a slot whose `outcome` is `None`; a slot with an
/// outcome is out of the queue and belongs to its ticket until [`poll`](Line::poll) returns
/// it or [`withdraw`](Line::withdraw) frees it; `queue` is sorted by id; `leasers` counts the
/// tickets in `queue` that want a lease.
pub(crate) struct Line<C> {
    queue: VecDeque<Ticket>,
    slab: Vec<Option<Slot<C>>>,
    free: Vec<usize>,
    next_id: u64,
    leasers: usize,
    /// The runtime of the background task that times the line out, while it runs.
    timer: Option<Id>,
    /// When that task wakes next, as it last planned (`None` before it runs and once it
    /// ended): a sooner waiter's deadline, or a sooner lifetime's end of a connection coming
    /// into shared form, wakes it to plan again ([`Shared::rearm`](crate::shared::Shared)).
    planned: Option<Instant>,
}

impl<C> Line<C> {
    pub fn new() -> Self {
        Line {
            queue: VecDeque::new(),
            slab: Vec::new(),
            free: Vec::new(),
            next_id: 0,
            leasers: 0,
            timer: None,
            planned: None,
        }
    }

    /// Callers waiting for a lease.
    pub fn leasers(&self) -> usize {
        self.leasers
    }

    /// The first caller in line waits for a lease.
    pub fn leaser_first(&self) -> bool {
        self.queue.front().is_some_and(|t| t.lease)
    }

    /// The oldest caller waiting for a lease came before `arrival`.
    pub fn leaser_before(&self, arrival: Arrival) -> bool {
        self.queue
            .iter()
            .find(|t| t.lease)
            .is_some_and(|t| t.id < arrival.id)
    }

    /// Callers waiting for a connection of their own.
    pub fn exclusive(&self) -> usize {
        self.queue.len() - self.leasers
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Joins the end of the line at once (the pool's callers [`arrive`](Self::arrive) at their
    /// first look, then [`rejoin`](Self::rejoin)).
    #[cfg(test)]
    pub fn join(&mut self, waker: Waker, lease: bool) -> Ticket {
        let arrival = self.arrive(lease);
        self.rejoin(arrival, waker, None)
    }

    /// A place in line for a caller that comes now, without joining it: behind every caller
    /// in line, ahead of every caller that comes later.
    pub fn arrive(&mut self, lease: bool) -> Arrival {
        let id = self.next_id;
        self.next_id += 1;
        Arrival { id, lease }
    }

    /// Joins the line at the place `arrival` gives: its end for a caller that just came, its
    /// old turn for one that comes back (a connect failed, a lease it was served died, or
    /// callers ahead took the connection it opened). The line's timer ends the wait at
    /// `deadline`, unless the waiter times itself out ([`Ticket::alone`]).
    pub fn rejoin(&mut self, arrival: Arrival, waker: Waker, deadline: Option<Instant>) -> Ticket {
        let alone = !Handle::try_current().is_ok_and(|runtime| Some(runtime.id()) == self.timer);
        let rearm =
            !alone && deadline.is_some_and(|deadline| self.planned.is_none_or(|at| deadline < at));
        let slot = Slot {
            waker: Some(waker),
            outcome: None,
            alone,
        };
        let key = slab_insert(&mut self.slab, &mut self.free, slot);
        let ticket = Ticket {
            id: arrival.id,
            key,
            deadline,
            lease: arrival.lease,
            alone,
            rearm,
        };
        if self.queue.back().is_none_or(|last| last.id < ticket.id) {
            // A caller that just came: its place is the end, found without a search (which
            // cost a wait in line 100 instructions more, `scripts/instr get16`).
            self.queue.push_back(ticket);
        } else {
            let at = self.queue.partition_point(|t| t.id < ticket.id);
            self.queue.insert(at, ticket);
        }
        self.leasers += usize::from(ticket.lease);
        ticket
    }

    /// The outcome, once there is one (the slot is then freed); else keeps the waker.
    pub fn poll(&mut self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Wake<C>> {
        let Some(slot) = self.slab.get_mut(ticket.key).and_then(Option::as_mut) else {
            // Unreachable while the invariants hold; a closed pool is the safe answer.
            return Poll::Ready(Wake::Closed);
        };
        if let Some(outcome) = slot.outcome.take() {
            self.slab[ticket.key] = None;
            self.free.push(ticket.key);
            return Poll::Ready(outcome);
        }
        match &mut slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The waiter is to time itself out now: the line's timer stopped while it waited.
    pub fn is_alone(&self, ticket: Ticket) -> bool {
        self.slab
            .get(ticket.key)
            .and_then(Option::as_ref)
            .is_none_or(|slot| slot.alone)
    }

    pub fn planned(&self) -> Option<Instant> {
        self.planned
    }

    /// The background task of `runtime` times the line out, and next wakes at `planned`.
    pub fn timed_by(&mut self, runtime: Id, planned: Instant) {
        self.timer = Some(runtime);
        self.planned = Some(planned);
    }

    /// The earliest deadline in line, for the line's timer.
    pub fn earliest_deadline(&self) -> Option<Instant> {
        self.queue.iter().filter_map(|t| t.deadline).min()
    }

    /// Times out every waiter whose deadline is `now` or past, with [`Wake::TimedOut`];
    /// returns their wakers.
    pub fn time_out_expired(&mut self, now: Instant) -> Vec<Waker> {
        let expired = |t: &Ticket| t.deadline.is_some_and(|at| at <= now);
        let gone: Vec<_> = self.queue.iter().copied().filter(expired).collect();
        self.queue.retain(|t| !expired(t));
        gone.into_iter()
            .filter_map(|t| self.settle(t, Wake::TimedOut))
            .collect()
    }

    /// The line's timer stopped (its task ended with its runtime): every waiter times itself
    /// out from now on. Returns their wakers, so that each arms its own timer.
    pub fn timer_lost(&mut self) -> Vec<Waker> {
        self.timer = None;
        self.planned = None;
        // A slot out of the queue holds an outcome and no waker: its waiter finds the outcome.
        let mut wakers = Vec::new();
        for slot in self.slab.iter_mut().flatten() {
            slot.alone = true;
            wakers.extend(slot.waker.take());
        }
        wakers
    }

    /// Takes the ticket out of the queue and frees its slot; returns its outcome, if any
    /// (what it was served meanwhile).
    pub fn withdraw(&mut self, ticket: Ticket) -> Option<Wake<C>> {
        if let Ok(at) = self.queue.binary_search_by_key(&ticket.id, |t| t.id) {
            self.queue.remove(at);
            self.leasers -= usize::from(ticket.lease);
        }
        let slot = self.slab.get_mut(ticket.key).and_then(Option::take);
        self.free.push(ticket.key);
        slot?.outcome
    }

    /// Hands `grant` to the oldest waiter and returns its waker to wake once the lock is
    /// released; gives the grant back when nobody waits.
    pub fn serve(&mut self, grant: Grant<C>) -> Result<Option<Waker>, Grant<C>> {
        match self.queue.pop_front() {
            Some(ticket) => Ok(self.settle(ticket, Wake::Granted(grant))),
            None => Err(grant),
        }
    }

    /// Hands `grant` to the oldest caller that waits for a connection of its own, passing
    /// over callers waiting for a lease; gives it back when no such caller waits.
    pub fn serve_exclusive(&mut self, grant: Grant<C>) -> Result<Option<Waker>, Grant<C>> {
        self.serve_first(false, grant)
    }

    /// Hands `grant` (a lease) to the oldest caller that waits for a lease, passing over
    /// callers that want a connection of their own; gives it back when no such caller waits.
    pub fn serve_leaser(&mut self, grant: Grant<C>) -> Result<Option<Waker>, Grant<C>> {
        self.serve_first(true, grant)
    }

    fn serve_first(&mut self, lease: bool, grant: Grant<C>) -> Result<Option<Waker>, Grant<C>> {
        let at = self.queue.iter().position(|t| t.lease == lease);
        match at.and_then(|at| self.queue.remove(at)) {
            Some(ticket) => Ok(self.settle(ticket, Wake::Granted(grant))),
            None => Err(grant),
        }
    }

    /// Fails every waiter with [`Wake::Closed`]; returns their wakers.
    pub fn close_all(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.queue)
            .into_iter()
            .filter_map(|t| self.settle(t, Wake::Closed))
            .collect()
    }

    /// Ends the wait of `ticket`, just taken out of the queue, with `outcome`; its waker.
    fn settle(&mut self, ticket: Ticket, outcome: Wake<C>) -> Option<Waker> {
        self.leasers -= usize::from(ticket.lease);
        let slot = self.slab.get_mut(ticket.key).and_then(Option::as_mut)?;
        slot.outcome = Some(outcome);
        slot.waker.take()
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use super::{Grant, Line, Wake};

    /// Serves the oldest waiter a slot; returns which of `tickets` it was.
    fn serve_slot(line: &mut Line<()>, tickets: &[super::Ticket]) -> usize {
        line.serve(Grant::Slot).ok().expect("someone waits");
        let mut cx = Context::from_waker(Waker::noop());
        let served: Vec<_> = tickets
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                matches!(
                    line.poll(**t, &mut cx),
                    Poll::Ready(Wake::Granted(Grant::Slot))
                )
            })
            .map(|(at, _)| at)
            .collect();
        assert_eq!(served.len(), 1, "one waiter served");
        served[0]
    }

    /// A caller served and put back with `rejoin` is first again, ahead of those who came
    /// after it, and counts as a leaser again.
    #[test]
    fn a_rejoined_caller_is_back_at_its_own_place() {
        let mut line: Line<()> = Line::new();
        let waker = || Waker::noop().clone();
        // A lease caller joins at the place its arrival gives it: the end of the line.
        let arrival = line.arrive(true);
        let first = line.rejoin(arrival, waker(), None);
        let second = line.join(waker(), true);
        let get = line.join(waker(), false);
        assert!(line.leaser_first());
        // The first is served, then cannot use what it got and rejoins.
        line.serve(Grant::Slot).ok().expect("someone waits");
        assert!(matches!(line.withdraw(first), Some(Wake::Granted(_))));
        assert_eq!(line.leasers(), 1);
        let first = line.rejoin(arrival, waker(), None);
        assert_eq!((line.len(), line.leasers()), (3, 2));
        let tickets = [first, second, get];
        assert_eq!(
            serve_slot(&mut line, &tickets),
            0,
            "the rejoined caller first"
        );
        assert!(line.leaser_first(), "the second leaser is next");
        assert_eq!(serve_slot(&mut line, &tickets[1..]), 0, "then the second");
        assert!(!line.leaser_first(), "then the get");
        assert_eq!(serve_slot(&mut line, &tickets[2..]), 0);
        assert!(line.is_empty());
    }

    /// A caller that came before others but was never in line (it opened a connection) sees
    /// who came before it, and waits ahead of those who came after it.
    #[test]
    fn an_arrival_out_of_line_keeps_its_place() {
        let mut line: Line<()> = Line::new();
        let waker = || Waker::noop().clone();
        let older = line.join(waker(), true);
        let opener = line.arrive(true);
        let younger = line.join(waker(), true);
        assert!(line.leaser_before(opener), "the older leaser came first");
        line.serve_leaser(Grant::Slot).ok().expect("a leaser waits");
        assert!(matches!(line.withdraw(older), Some(Wake::Granted(_))));
        assert!(!line.leaser_before(opener), "the younger came after it");
        let opener = line.rejoin(opener, waker(), None);
        let tickets = [opener, younger];
        assert_eq!(serve_slot(&mut line, &tickets), 0, "the opener first");
        assert_eq!(serve_slot(&mut line, &tickets[1..]), 0);
        assert!(line.is_empty());
    }
}
