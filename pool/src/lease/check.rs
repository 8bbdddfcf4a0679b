//! A connection with no lease, idle past `check_interval`, checked by the caller that leases it
//! first; callers arriving meanwhile wait for it.

use crate::checkout::Next;
use crate::lease::streams::{Key, SharedConn, conn_mut};
use crate::shared::state::{Kept, State};
use crate::status::Metrics;
use crate::{Lease, Manager, Pool, PoolError, TimeoutKind};
use tokio::time::Instant;

impl<M: Manager> Pool<M>
where
    M::Connection: Sync,
{
    /// Checks the connection the caller has alone (its record is `Checking`, its room
    /// promised to callers that arrive): passed, it opens for leases with the caller's;
    /// failed, it is closed and the caller opens a fresh one in its slot.
    pub(super) async fn check_shared(
        &self,
        key: Key,
        conn: SharedConn,
        now: Instant,
    ) -> Result<Next<Lease<M>>, PoolError<M::Error>> {
        let shared = &self.shared;
        let mut checking = Checking {
            pool: self,
            key,
            conn: Some(conn),
        };
        // `is_broken` was asked as it was taken, under the lock (`State::place_lease`). `None`
        // is unreachable: nothing else holds a connection being checked.
        let Some(conn) = checking.conn.as_mut().and_then(conn_mut::<M::Connection>) else {
            return checking.failed();
        };
        let checked =
            tokio::time::timeout(shared.config.check_timeout, shared.manager.check(conn)).await;
        match checked {
            Ok(Ok(())) => {
                let Some(conn) = checking.conn.take() else {
                    return Ok(Next::Again);
                };
                let mut wakes = Vec::new();
                let leased =
                    shared.locked(|state| state.checked(key, conn.clone(), now, &mut wakes));
                self.after_sharing(conn, wakes, leased.map(Some))
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "discarding a connection that failed its check");
                Metrics::bump(&shared.metrics.check_failures);
                checking.failed()
            }
            // `checking`, dropped, closes the connection.
            Err(_elapsed) => {
                tracing::debug!(timeout = ?shared.config.check_timeout, "check timed out");
                Metrics::bump(&shared.metrics.check_failures);
                Metrics::bump(&shared.metrics.timeouts);
                Err(PoolError::Timeout(TimeoutKind::Check))
            }
        }
    }
}

/// A shared connection out for its check. Dropped before the check ends (the caller gave
/// up, or the check timed out), it closes the connection, whose state is then unknown, and
/// frees its slot.
struct Checking<'a, M: Manager> {
    pool: &'a Pool<M>,
    key: Key,
    conn: Option<SharedConn>,
}

impl<M: Manager> Checking<'_, M> {
    /// The check failed: the connection is closed, its slot kept for a fresh one.
    fn failed(mut self) -> Result<Next<Lease<M>>, PoolError<M::Error>> {
        let kept = self.give_up(|state| state.keep_slot(true));
        kept.map_or(Ok(Next::Again), Kept::into_next)
    }

    /// Takes the connection out of its check for good (once): its record goes, `slot`
    /// decides the fate of its slot under the lock, and it is closed.
    fn give_up<R>(&mut self, slot: impl FnOnce(&mut State<M::Connection>) -> R) -> Option<R> {
        let conn = self.conn.take()?;
        let shared = &self.pool.shared;
        let outcome = shared.locked(|state| {
            state.check_failed(self.key);
            slot(state)
        });
        shared.close_shared(conn);
        Some(outcome)
    }
}

impl<M: Manager> Drop for Checking<'_, M> {
    fn drop(&mut self) {
        if let Some(Some(waker)) = self.give_up(State::release_slot) {
            waker.wake();
        }
    }
}
