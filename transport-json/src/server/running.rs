//! The handle to a server running in the background.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conn::{Endpoint, NOT_TCP};

/// A server running in a background task, from [`Server::spawn`](super::Server::spawn).
///
/// Dropping it aborts the server, as [`abort`](RunningServer::abort) does but without waiting.
#[derive(Debug)]
#[must_use = "dropping a RunningServer aborts the server"]
pub struct RunningServer {
    local: Endpoint,
    graceful: CancellationToken,
    kill: CancellationToken,
    active: Arc<AtomicUsize>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    /// `graceful` starts a graceful shutdown, `kill` an abort; `task` runs the server.
    pub(super) fn new(
        local: Endpoint,
        graceful: CancellationToken,
        kill: CancellationToken,
        active: Arc<AtomicUsize>,
        task: JoinHandle<io::Result<()>>,
    ) -> Self {
        Self {
            local,
            graceful,
            kill,
            active,
            task: Some(task),
        }
    }

    /// The address the server listens on; [`NOT_TCP`] (`0.0.0.0:0`) when it does not listen
    /// on TCP (read [`local`](RunningServer::local) then).
    pub fn local_addr(&self) -> SocketAddr {
        self.local.socket_addr().unwrap_or(NOT_TCP)
    }

    /// Where the server listens, whatever the listener: a TCP address, a Unix socket path,
    /// or what a [`Listener`](super::Listener) of your own reports.
    pub fn local(&self) -> &Endpoint {
        &self.local
    }

    /// How many connections are open right now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Shuts the server down gracefully (see the [module documentation](super)) and waits until
    /// it has stopped: the listener is closed and every connection has been closed.
    ///
    /// # Errors
    /// The server task panicked.
    ///
    /// # Cancel safety
    /// Dropping the future aborts the server, as dropping a [`RunningServer`] does: the
    /// remaining connections are dropped without waiting.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.graceful.cancel();
        self.join().await
    }

    /// Stops the server at once: closes the listener and drops every connection, with
    /// requests in flight, as a crash would (clients see their connection closed or reset).
    /// Returns once the listener and every socket are closed, so the address can be bound
    /// again.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the abort to finish in the background.
    pub async fn abort(mut self) {
        self.kill.cancel();
        // `run` never fails, and a panic has already been logged as the task's output.
        let _ = self.join().await;
    }

    async fn join(&mut self) -> io::Result<()> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(error) => Err(io::Error::other(error)),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}
