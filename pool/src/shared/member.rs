//! A pool as a member of a [`Budget`](crate::shared::budget::Budget): feeding its callers
//! that the budget starved, and giving up its longest-idle connection for another pool's.
//! The moves under the lock are [`State`]'s; [`Member`] carries them out for the steward.

use std::sync::Arc;
use std::task::Waker;

use tokio::time::Instant;

use crate::Manager;
use crate::lease::streams::SharedConn;
use crate::shared::Shared;
use crate::shared::budget::Member;
use crate::shared::state::{Live, State};

/// An idle connection taken out to be closed for another pool.
pub(crate) enum Evicted<C> {
    /// One of the pool's own idle connections.
    Own(Live<C>),
    /// An idle connection in shared form (no lease).
    Shared(SharedConn),
}

impl<C: 'static> State<C> {
    /// The steward feeds this pool, taken off the budget's queue: free slots go to its oldest
    /// waiters while one wants a slot (a caller waiting for a connection of its own, or more
    /// lease callers than the connections being opened will have room for) and the budget
    /// gives one; pushes their wakers. True when one still wants a slot the budget refuses:
    /// the pool stays marked starved and is queued again, at the back (without notifying the
    /// steward, which is the caller). Else its mark goes.
    pub fn feed(&mut self, wakes: &mut Vec<Option<Waker>>) -> bool {
        if self.budget.is_none() {
            return false;
        }
        let wants = |state: &Self| {
            !state.closed
                && state.slots < state.max_size
                && (state.waiters.exclusive() > 0 || state.waiters.leasers() > state.opening_room)
        };
        // Marked starved all along, so a slot the budget refuses here queues nothing.
        self.grant_slots(wants, wakes);
        let starved = wants(self);
        if let Some(account) = &mut self.budget {
            if starved {
                account.requeue();
            } else {
                account.fed();
            }
        }
        starved
    }

    /// Holds nothing: no connection (idle, in use, shared, being reset or opened), nobody
    /// in line, no mark as starved. Dropped, such a pool loses nothing.
    pub fn holds_nothing(&self) -> bool {
        self.slots == 0
            && self.waiters.is_empty()
            && self.streams.is_empty()
            && self.resetting == 0
            && self.budget.as_ref().is_none_or(|account| !account.starved)
    }

    /// When the longest-idle connection (of its own or in shared form) was last used.
    pub fn oldest_idle(&self) -> Option<Instant> {
        let own = self.idle.iter().map(|live| live.info.last_used);
        let shared = self.streams.keys().filter_map(|key| {
            let record = self.streams.get(key)?;
            record.is_idle().then_some(record.info.last_used)
        });
        own.chain(shared).min()
    }

    /// Takes out the longest-idle connection, freeing its slot.
    pub fn evict_oldest(&mut self) -> Option<Evicted<C>> {
        let oldest = self.oldest_idle()?;
        let own = self.idle.iter().position(|l| l.info.last_used == oldest);
        if let Some(live) = own.and_then(|at| self.idle.remove(at)) {
            self.free_slots(1);
            return Some(Evicted::Own(live));
        }
        let mut first = true;
        let evicted = self.evict_shared(|_, _| std::mem::replace(&mut first, false));
        evicted.into_iter().next().map(Evicted::Shared)
    }
}

impl<M: Manager> Member for Shared<M> {
    fn feed(self: Arc<Self>) -> bool {
        let mut wakes = Vec::new();
        let starved = self.locked(|state| state.feed(&mut wakes));
        wakes.into_iter().flatten().for_each(Waker::wake);
        starved
    }

    fn oldest_idle(&self) -> Option<Instant> {
        self.lock().oldest_idle()
    }

    fn evict_oldest(self: Arc<Self>) -> bool {
        let Some(evicted) = self.locked(State::evict_oldest) else {
            return false;
        };
        tracing::debug!("closing an idle connection for another pool's callers");
        match evicted {
            Evicted::Own(live) => self.close_conn(live.conn),
            Evicted::Shared(conn) => self.close_shared(conn),
        }
        true
    }
}
