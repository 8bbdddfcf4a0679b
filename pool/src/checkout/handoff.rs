//! The two ways a checkout waits, both safe to drop at any point: [`wait`] for its turn in
//! line, and [`Handoff`] for the outcome of a connect made for it.

use std::future::Future;
use std::sync::Arc;
use std::task::{Poll, Waker};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::Manager;
use crate::shared::Shared;
use crate::shared::connect::Connected;
use crate::shared::line::{Ticket, Wake};
use crate::shared::state::{Grant, Place};

/// Waits for the caller's turn in line, until `deadline`.
///
/// The line's timer ends the wait at `deadline`; a waiter that times itself out (the ticket
/// says so, or the timer stops meanwhile) arms a timer of its own ([`crate::shared::line`]).
///
/// The caller joined the line with its task's waker in the same poll that first polls this
/// future, so that first poll returns `Pending` without taking the lock (it only arms a
/// timer of its own, if it needs one): an outcome that arrived in between has already woken
/// the task, and the next poll finds it.
pub(crate) async fn wait<M: Manager>(
    shared: &Arc<Shared<M>>,
    ticket: Ticket,
    deadline: Instant,
) -> Wake<M::Connection> {
    let mut turn = Turn {
        shared,
        ticket: Some(ticket),
    };
    shared.rearm_maintenance(ticket.rearm);
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    let mut alone = ticket.alone;
    let mut first_poll = true;
    let (outcome, mut state) = std::future::poll_fn(|cx| {
        // The line first: a woken waiter mostly finds its outcome there, and then never polls
        // a timer of its own again (it leaves the wheel when the wait is dropped).
        if !std::mem::take(&mut first_poll) {
            let mut state = shared.lock();
            if let Poll::Ready(outcome) = state.waiters.poll(ticket, cx) {
                return Poll::Ready((outcome, state));
            }
            alone = alone || state.waiters.is_alone(ticket);
        }
        if !alone {
            return Poll::Pending;
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep_until(deadline)));
        }
        if timer
            .as_mut()
            .as_pin_mut()
            .is_some_and(|timer| timer.poll(cx).is_pending())
        {
            return Poll::Pending;
        }
        // Takes an outcome that arrived since the line was polled, if one did: a connection
        // granted in the same instant is used, not bounced.
        let mut state = shared.lock();
        let outcome = state.waiters.withdraw(ticket).unwrap_or(Wake::TimedOut);
        Poll::Ready((outcome, state))
    })
    .await;
    // The line has let go of the ticket: nothing to leave.
    turn.ticket = None;
    // Still under the lock: a connection kept from leases for this caller (one that wants a
    // connection of its own) is free for them again.
    let mut wakes = Vec::new();
    if !ticket.lease {
        state.serve_leasers_anywhere(&mut wakes);
    }
    drop(state);
    // Tested first: most waits serve no leaser (get16 pays 27 instructions more without it).
    if !wakes.is_empty() {
        wakes.into_iter().flatten().for_each(Waker::wake);
    }
    outcome
}

/// A place in line, left under the lock when its wait is dropped before its outcome is taken:
/// a connection or slot granted to it in that instant goes to the next waiter.
struct Turn<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    ticket: Option<Ticket>,
}

impl<M: Manager> Drop for Turn<'_, M> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let shared = self.shared;
        let (place, ended) = shared.locked(|state| match state.waiters.withdraw(ticket) {
            Some(Wake::Granted(Grant::Conn(live))) => (Some(state.place_conn(live)), None),
            Some(Wake::Granted(Grant::Slot)) => (Some(Place::Wake(state.release_slot())), None),
            // A lease granted in the instant the caller left: it ends at once.
            Some(Wake::Granted(Grant::Lease(leased))) => {
                let ended = state.end_lease(leased.conn, leased.key, false, |conn| {
                    shared.conn_is_broken(conn)
                });
                (None, Some(ended))
            }
            Some(Wake::Closed | Wake::TimedOut) | None => (None, None),
        });
        if !ticket.lease {
            shared.unstick_leasers();
        }
        if let Some(place) = place {
            shared.act(place);
        }
        if let Some(ended) = ended {
            shared.after_lease(ended);
        }
    }
}

/// The receiving end of a connect made for one caller. Dropped before the outcome arrives
/// (the caller gave up), it closes its channel and places whatever had already arrived, so a
/// connection made for a caller that left goes to the next waiter or idle, and the room it
/// promised to callers waiting for it (`room`) is taken off.
pub(crate) struct Handoff<'a, M: Manager> {
    pub shared: &'a Arc<Shared<M>>,
    pub rx: oneshot::Receiver<Connected<M::Connection, M::Error>>,
    pub room: usize,
}

impl<M: Manager> Drop for Handoff<'_, M> {
    fn drop(&mut self) {
        self.rx.close();
        // A failed connect already freed its slot; only a connection needs a home.
        if let Ok(Connected::Conn(live)) = self.rx.try_recv() {
            self.shared.place_opened(live, self.room);
        }
    }
}
