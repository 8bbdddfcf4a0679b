//! Reset on return: a connection that comes back from `get` dirty ([`Manager::needs_reset`])
//! is cleaned ([`Manager::reset`]) in a task of the pool's before anyone else gets it. The
//! caller's drop returns at once; the connection keeps its slot (counted in `resetting`), and
//! reaches the oldest waiter or the idle list only once its reset succeeded. A reset that
//! fails, panics or runs past `reset_timeout` discards the connection: it is closed, and its
//! slot frees for a new connect (to the oldest waiter first).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use crate::Manager;
use crate::shared::Shared;
use crate::shared::state::{Live, Place};
use crate::status::Metrics;

impl<M: Manager> Shared<M> {
    /// Starts the reset of `live`, which came back dirty, in a task of the runtime at hand;
    /// with no runtime there is nowhere to run it, and the connection is discarded.
    pub fn start_reset(self: &Arc<Self>, live: Live<M::Connection>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no runtime to reset a dirty connection in; discarding it");
            return self.discard(live);
        };
        self.lock().resetting += 1;
        let reset = Resetting {
            shared: Arc::clone(self),
            live: Some(live),
        };
        runtime.spawn(reset.run());
    }
}

/// A connection being reset. Dropped before its reset ended (its runtime shut down), it
/// ends the reset as failed, so its slot is never lost.
struct Resetting<M: Manager> {
    shared: Arc<Shared<M>>,
    live: Option<Live<M::Connection>>,
}

impl<M: Manager> Resetting<M> {
    async fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let reset = AssertUnwindSafe(shared.manager.reset(&mut live.conn)).catch_unwind();
        let ok = match tokio::time::timeout(shared.config.reset_timeout, reset).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(_))) => {
                tracing::debug!("a reset failed; discarding its connection");
                false
            }
            Ok(Err(_)) => {
                tracing::debug!("a reset panicked; discarding its connection");
                false
            }
            Err(_) => {
                tracing::debug!(
                    timeout = ?shared.config.reset_timeout,
                    "a reset timed out; discarding its connection"
                );
                false
            }
        };
        if shared.lock().closed {
            // The pool closed meanwhile, and `close` waits for this connection: it is closed
            // here, before its slot is counted off.
            if let Some(live) = self.live.take() {
                let _done = ClosedReset(&shared);
                Metrics::bump(&shared.metrics.resets);
                if !ok {
                    Metrics::bump(&shared.metrics.reset_failures);
                }
                shared.close_within_timeout(live.conn).await;
                Metrics::bump(&shared.metrics.closed);
            }
            return;
        }
        self.end(ok);
    }

    /// The reset is over: the connection goes to the oldest waiter or the idle list
    /// (`clean`), or is closed and its slot freed (to the oldest waiter first).
    fn end(&mut self, clean: bool) {
        let Some(live) = self.live.take() else {
            return;
        };
        let shared = &self.shared;
        Metrics::bump(&shared.metrics.resets);
        let (place, discarded) = shared.locked(|state| {
            state.resetting -= 1;
            if clean {
                (state.place_conn(live), None)
            } else {
                (Place::Wake(state.release_slot()), Some(live))
            }
        });
        shared.act(place);
        if let Some(live) = discarded {
            Metrics::bump(&shared.metrics.reset_failures);
            shared.close_conn(live.conn);
        }
        // `close` waits for the resets in flight.
        shared.drained.notify_waiters();
    }
}

impl<M: Manager> Drop for Resetting<M> {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// The end of a reset whose connection is closed with the pool: counts its slot off, however
/// the close ends (done, or its task dropped).
struct ClosedReset<'a, M: Manager>(&'a Arc<Shared<M>>);

impl<M: Manager> Drop for ClosedReset<'_, M> {
    fn drop(&mut self) {
        self.0.locked(|state| {
            state.resetting -= 1;
            state.free_slots(1);
        });
        self.0.drained.notify_waiters();
    }
}
