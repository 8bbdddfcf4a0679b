//! Opening connections: each connect runs in a task of its own within the connect timeout,
//! in a slot reserved beforehand, which it frees if it fails, panics or is aborted.

use crate::Manager;
use crate::info::{ConnInfo, jittered};
use crate::shared::Shared;
use crate::shared::state::{Live, Place};
use crate::status::Metrics;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How a connect ended, as sent to the caller that asked for it.
pub(crate) enum Connected<C, E> {
    Conn(Live<C>),
    Failed(E),
    TimedOut,
}

impl<M: Manager> Shared<M> {
    /// Starts connects for slots already reserved (and counted in `connecting`); each new
    /// connection goes to the oldest waiter or idle.
    pub fn spawn_connects(self: &Arc<Self>, n: usize) {
        for _ in 0..n {
            tokio::spawn(connect(Arc::clone(self), None, 0));
        }
    }

    /// Reserves and starts the connects that refill `min_idle`.
    pub fn refill(self: &Arc<Self>) {
        let n = self.lock().reserve_refill();
        self.spawn_connects(n);
    }
}

/// Frees the reserved slot when dropped: on a failed connect, a panicking `Manager::connect` or
/// an aborted task (a connect that succeeds forgets it).
struct ConnectSlot<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    /// The leases this connect promised to callers waiting for it (`opening_room`).
    room: usize,
}

impl<M: Manager> Drop for ConnectSlot<'_, M> {
    fn drop(&mut self) {
        let freed = self.shared.locked(|state| {
            state.connecting -= 1;
            state.opening_room -= self.room;
            state.release_slot()
        });
        self.shared.act(Place::Wake(freed));
    }
}

/// Opens one connection for a slot already reserved and counted in `connecting`, as a task of
/// its own: a caller that gives up never aborts it. The outcome goes to `reply`, a new
/// connection nobody takes into the pool. `room` is what the connect added to `opening_room`:
/// a failed connect takes it off, a new one keeps it until its caller shares it (or
/// [`Shared::place_opened`] places it).
pub(crate) async fn connect<M: Manager>(
    shared: Arc<Shared<M>>,
    reply: Option<oneshot::Sender<Connected<M::Connection, M::Error>>>,
    room: usize,
) {
    let slot = ConnectSlot {
        shared: &shared,
        room,
    };
    let timeout = shared.config.connect_timeout;
    let outcome = match tokio::time::timeout(timeout, shared.manager.connect()).await {
        Ok(Ok(conn)) => {
            let info = ConnInfo::new(Instant::now(), shared.config.max_lifetime.map(jittered));
            Metrics::bump(&shared.metrics.created);
            {
                let mut state = shared.lock();
                state.connecting -= 1;
                state.last_connect_error = None;
            }
            std::mem::forget(slot);
            Connected::Conn(Live { conn, info })
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "pool connect failed");
            Metrics::bump(&shared.metrics.connect_failures);
            shared.lock().last_connect_error = Some(render(&error));
            drop(slot);
            Connected::Failed(error)
        }
        Err(_) => {
            tracing::warn!(?timeout, "pool connect timed out");
            Metrics::bump(&shared.metrics.connect_failures);
            shared.lock().last_connect_error = Some(format!("connect timed out after {timeout:?}"));
            drop(slot);
            Connected::TimedOut
        }
    };
    let unclaimed = match reply {
        Some(reply) => reply.send(outcome).err(),
        None => Some(outcome),
    };
    if let Some(Connected::Conn(live)) = unclaimed {
        shared.place_opened(live, room);
    }
}

/// An error with its chain of causes, as one line.
fn render(error: &dyn std::error::Error) -> String {
    let chain = std::iter::successors(Some(error), |error| error.source());
    chain.map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}
