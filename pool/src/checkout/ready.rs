//! Readying a connection taken from the pool: handed out as it is, retired, or checked.

use std::sync::Arc;

use tokio::time::Instant;

use crate::checkout::Next;
use crate::shared::holds::Site;
use crate::shared::state::{Kept, Live};
use crate::status::Metrics;
use crate::{Manager, Pool, PoolError, Pooled, TimeoutKind};

impl<M: Manager> Pool<M> {
    /// The fast path: a connection used within the check interval, not expired and not
    /// reporting itself broken goes out as it is, with no `.await`; any other comes back for
    /// [`ready`](Self::ready).
    pub(crate) fn fresh(
        &self,
        live: Live<M::Connection>,
        now: Instant,
    ) -> Result<Pooled<M>, Live<M::Connection>> {
        self.fresh_held(live, now, None)
    }

    /// [`fresh`](Self::fresh), registering the guard's hold as taken at `at` (when holds are
    /// tracked) as it is built.
    pub(crate) fn fresh_held(
        &self,
        mut live: Live<M::Connection>,
        now: Instant,
        at: Option<Site>,
    ) -> Result<Pooled<M>, Live<M::Connection>> {
        if live.info.expired(now)
            || live.info.check_due(now, self.shared.config.check_interval)
            || self.shared.is_broken(&mut live)
        {
            return Err(live);
        }
        live.info.uses += 1;
        let hold = at.and_then(|at| self.shared.start_hold(at));
        Ok(Pooled::held(Arc::clone(&self.shared), live, hold))
    }

    /// The slow path of a connection taken from the pool: retires it if expired or broken,
    /// else checks it (it was idle longer than the check interval). A caller whose connection
    /// is retired keeps its slot to open a fresh one (`State::keep_slot`), so a bad
    /// connection handed to the first waiter never sends it to the back of the line.
    pub(crate) async fn ready(
        &self,
        mut live: Live<M::Connection>,
        now: Instant,
    ) -> Result<Next<Pooled<M>>, PoolError<M::Error>> {
        let shared = &self.shared;
        if live.info.expired(now) {
            tracing::debug!("discarding an idle connection past its max_lifetime");
            return self.replace(live);
        }
        if shared.is_broken(&mut live) {
            Metrics::bump(&shared.metrics.broken);
            tracing::debug!("discarding an idle connection that reports itself broken");
            return self.replace(live);
        }
        // Out of the pool for its check, counted as used now should it pass: if this future is
        // dropped meanwhile, the guard closes the connection, whose state is then unknown.
        live.info.last_used = now;
        live.info.uses += 1;
        let mut guard = Pooled::held(Arc::clone(shared), live, None);
        Pooled::mark_broken(&mut guard);
        let checked = tokio::time::timeout(
            shared.config.check_timeout,
            shared.manager.check(&mut guard),
        )
        .await;
        match checked {
            Ok(Ok(())) => {
                guard.unmark_broken();
                Ok(Next::Out(guard))
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "discarding a connection that failed its check");
                Metrics::bump(&shared.metrics.check_failures);
                self.replace(Pooled::into_live(guard))
            }
            Err(_elapsed) => {
                tracing::debug!(timeout = ?shared.config.check_timeout, "check timed out");
                Metrics::bump(&shared.metrics.check_failures);
                Metrics::bump(&shared.metrics.timeouts);
                shared.discard(Pooled::into_live(guard));
                Err(PoolError::Timeout(TimeoutKind::Check))
            }
        }
    }

    /// Closes a connection its caller will not use, keeping its slot for the caller.
    pub(super) fn replace<T>(
        &self,
        live: Live<M::Connection>,
    ) -> Result<Next<T>, PoolError<M::Error>> {
        let kept = self.shared.locked(|state| state.keep_slot(false));
        self.shared.close_conn(live.conn);
        kept.into_next()
    }
}

impl Kept {
    /// Where keeping (or not) a retired connection's slot leaves its caller.
    pub(crate) fn into_next<T, E>(self) -> Result<Next<T>, PoolError<E>> {
        match self {
            Kept::Connect(room) => Ok(Next::Connect(room)),
            Kept::Again => Ok(Next::Again),
            Kept::Closed => Err(PoolError::Closed),
        }
    }
}
