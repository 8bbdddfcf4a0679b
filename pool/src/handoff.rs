//! [`Handoff`]: the receiving end of a grant or a connect outcome, safe to drop at any point.
//!
//! A sender may hand over a connection in the very instant its receiver gives up. The guard
//! closes its channel when dropped and takes back whatever had already arrived, so a caller
//! that gives up never strands a connection or a slot.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::Manager;
use crate::inner::{Connected, Shared};
use crate::state::Grant;

/// Something that, if never received, must go back to the pool.
pub(crate) trait Reclaim<M: Manager> {
    fn reclaim(self, shared: &Arc<Shared<M>>);
}

impl<M: Manager> Reclaim<M> for Grant<M::Connection> {
    fn reclaim(self, shared: &Arc<Shared<M>>) {
        let place = shared.replace(self);
        shared.act(place);
    }
}

impl<M: Manager> Reclaim<M> for Connected<M::Connection, M::Error> {
    fn reclaim(self, shared: &Arc<Shared<M>>) {
        // A failed connect already freed its slot; only a connection needs a home.
        if let Connected::Conn(live) = self {
            shared.place(live);
        }
    }
}

/// The receiving end; `waiter` is the caller's place in line, left when dropped.
pub(crate) struct Handoff<'a, M: Manager, T: Reclaim<M>> {
    shared: &'a Arc<Shared<M>>,
    rx: oneshot::Receiver<T>,
    waiter: Option<u64>,
}

impl<'a, M: Manager, T: Reclaim<M>> Handoff<'a, M, T> {
    pub fn new(shared: &'a Arc<Shared<M>>, rx: oneshot::Receiver<T>, waiter: Option<u64>) -> Self {
        Handoff { shared, rx, waiter }
    }

    /// Waits for the message; `None` when the sender was dropped (the pool closed, or the
    /// connect task died).
    ///
    /// Cancel safe: a message that arrives after this future is dropped is reclaimed when the
    /// guard is.
    pub async fn recv(&mut self) -> Option<T> {
        let received = (&mut self.rx).await.ok();
        // Served, or the pool closed: either way no longer in line.
        self.waiter = None;
        received
    }
}

impl<M: Manager, T: Reclaim<M>> Drop for Handoff<'_, M, T> {
    fn drop(&mut self) {
        if let Some(id) = self.waiter.take() {
            self.shared.lock().remove_waiter(id);
        }
        self.rx.close();
        if let Ok(unclaimed) = self.rx.try_recv() {
            unclaimed.reclaim(self.shared);
        }
    }
}
