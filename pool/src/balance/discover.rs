//! Discovery: an endpoint set read again on connect, at most once per interval, so a host
//! name that resolves to several addresses is several endpoints, re-resolved on reconnect.

use std::error::Error;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use super::set::Set;

/// What a discovery function returns: the endpoints now, as `(name, manager)` pairs.
pub type Discovered<M> =
    Pin<Box<dyn Future<Output = Result<Vec<(String, M)>, Box<dyn Error + Send + Sync>>> + Send>>;

/// The function a [`Balanced`](super::Balanced) set is discovered with, and when it last ran.
pub(crate) struct Discovery<M> {
    pub every: Duration,
    pub discover: Box<dyn Fn() -> Discovered<M> + Send + Sync>,
    /// When discovery last ended (successful or not). Held while discovery runs, so connects
    /// that find it due wait for the one running.
    pub last: tokio::sync::Mutex<Option<Instant>>,
}

impl<M: Send + Sync + 'static> Discovery<M> {
    /// Runs discovery when due and makes `set` what it found (a failed run changes nothing).
    /// Cancel safe: a dropped run leaves the set as it was and is due again.
    pub async fn run_if_due(&self, set: &Set<M>) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|at| Instant::now().saturating_duration_since(at) < self.every) {
            return;
        }
        let result = (self.discover)().await;
        *last = Some(Instant::now());
        drop(last);
        match result {
            Ok(found) => set.sync(found),
            Err(error) => {
                tracing::warn!(%error, "discovering endpoints failed; the set is unchanged");
            }
        }
    }
}
