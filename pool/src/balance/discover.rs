//! Discovery: an endpoint set read again on connect, at most once per interval, so a host
//! name that resolves to several addresses is several endpoints, re-resolved on reconnect.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// What a discovery function returns: the endpoints now, as `(name, manager)` pairs.
pub type Discovered<M> =
    Pin<Box<dyn Future<Output = Result<Vec<(String, M)>, Box<dyn Error + Send + Sync>>> + Send>>;

/// The function a [`Balanced`](super::Balanced) set is discovered with, and when it last ran.
pub(crate) struct Discovery<M> {
    pub every: Duration,
    pub discover: Box<dyn Fn() -> Discovered<M> + Send + Sync>,
    /// When discovery last ended (successful or not).
    last: Mutex<Option<Instant>>,
    /// Held while discovery runs: connects that find it due wait for the one running.
    running: tokio::sync::Mutex<()>,
}

impl<M> Discovery<M> {
    pub fn new(every: Duration, discover: Box<dyn Fn() -> Discovered<M> + Send + Sync>) -> Self {
        Discovery {
            every,
            discover,
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        }
    }

    fn due(&self, now: Instant) -> bool {
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.is_none_or(|at| now.saturating_duration_since(at) >= self.every)
    }

    /// Runs discovery when due; `None` when it was not due (or another connect just ran it).
    /// Cancel safe: a dropped run leaves the set as it was and is due again.
    pub async fn run_if_due(
        &self,
    ) -> Option<Result<Vec<(String, M)>, Box<dyn Error + Send + Sync>>> {
        if !self.due(Instant::now()) {
            return None;
        }
        let _running = self.running.lock().await;
        if !self.due(Instant::now()) {
            return None;
        }
        let result = (self.discover)().await;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        Some(result)
    }
}
