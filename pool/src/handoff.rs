//! The two ways a checkout waits, both safe to drop at any point: [`Waiting`] for its turn in
//! line, and [`Handoff`] for the outcome of a connect made for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::Manager;
use crate::inner::{Connected, Shared};
use crate::line::{Ticket, Wake};

/// A caller's turn in line. Dropped before its outcome is taken, it leaves the line under
/// the lock; a connection or slot granted to it in that instant goes to the next waiter.
///
/// The caller joined the line with its task's waker in the same poll that first polls this
/// future, so that first poll returns `Pending` without taking the lock: an outcome that
/// arrived in between has already woken the task, and the next poll finds it.
pub(crate) struct Waiting<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    ticket: Option<Ticket>,
    first_poll: bool,
}

impl<'a, M: Manager> Waiting<'a, M> {
    pub fn new(shared: &'a Arc<Shared<M>>, ticket: Ticket) -> Self {
        Waiting {
            shared,
            ticket: Some(ticket),
            first_poll: true,
        }
    }
}

impl<M: Manager> Future for Waiting<'_, M> {
    type Output = Wake<M::Connection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(ticket) = self.ticket else {
            // Polled again after it finished: nothing is owed.
            return Poll::Ready(Wake::Closed);
        };
        if std::mem::take(&mut self.first_poll) {
            return Poll::Pending;
        }
        let outcome = self.shared.lock().waiters.poll(ticket, cx);
        if outcome.is_ready() {
            self.ticket = None;
        }
        outcome
    }
}

impl<M: Manager> Drop for Waiting<'_, M> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let place = {
            let mut state = self.shared.lock();
            let unclaimed = state.waiters.leave(ticket);
            let place = unclaimed.map(|grant| match grant {
                crate::state::Grant::Conn(live) => state.place_conn(live),
                crate::state::Grant::Slot => state.release_slot(),
            });
            state.debug_check();
            place
        };
        if let Some(place) = place {
            self.shared.act(place);
        }
    }
}

/// The receiving end of a connect made for one caller. Dropped before the outcome arrives
/// (the caller gave up), it closes its channel and places whatever had already arrived, so a
/// connection made for a caller that left goes to the next waiter or idle.
pub(crate) struct Handoff<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    rx: oneshot::Receiver<Connected<M::Connection, M::Error>>,
}

impl<'a, M: Manager> Handoff<'a, M> {
    pub fn new(
        shared: &'a Arc<Shared<M>>,
        rx: oneshot::Receiver<Connected<M::Connection, M::Error>>,
    ) -> Self {
        Handoff { shared, rx }
    }

    /// Waits for the outcome; `None` when the connect task died (a panic, or a runtime
    /// shutdown).
    pub async fn recv(&mut self) -> Option<Connected<M::Connection, M::Error>> {
        (&mut self.rx).await.ok()
    }
}

impl<M: Manager> Drop for Handoff<'_, M> {
    fn drop(&mut self) {
        self.rx.close();
        // A failed connect already freed its slot; only a connection needs a home.
        if let Ok(Connected::Conn(live)) = self.rx.try_recv() {
            self.shared.place(live);
        }
    }
}
