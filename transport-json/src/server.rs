//! A server for the protocol: accepts connections, answers each request with a [`Handler`]
//! (by default the [`EchoHandler`]), and shuts down gracefully.
//!
//! ```
//! use transport_json::server::{Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = Server::bind("127.0.0.1:0", ServerConfig::default()).await?;
//! println!("listening on {}", server.local_addr());
//! // Runs until the future resolves; use `shutdown_signal()` to stop on Ctrl-C.
//! server.serve(async {}).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//! - Listeners: [`bind`](Server::bind) and [`from_listener`](Server::from_listener) serve
//!   TCP, [`bind_unix`](Server::bind_unix) a Unix domain socket (its file removed when the
//!   server stops), and [`new`](Server::new) any [`Listener`], for streams of your own (an
//!   in-memory channel of `tokio::io::duplex` pairs, TLS with `tls::TlsListener` of feature
//!   `tls`, a simulated network). Every listener gets the same behaviour below; only TCP
//!   sockets get `TCP_NODELAY` and keepalive.
//! - Connections: at most [`ServerConfig::max_connections`] are served at once. At the cap the
//!   server accepts one more client and makes room for it by closing the connection that has
//!   been idle (no request in flight, nothing to write) the longest; when every connection is
//!   busy, that client waits until one closes or goes idle, and the ones after it wait in the
//!   listen backlog. Accepted sockets get `TCP_NODELAY` and TCP keepalive.
//! - Timeouts: a connection idle for [`ServerConfig::idle_timeout`] is closed; one that began
//!   a frame and did not finish it within [`ServerConfig::frame_timeout`] is answered with an
//!   `Err` and closed; one whose responses wait [`ServerConfig::write_timeout`] without the
//!   socket taking a byte (a client that does not read) is dropped, with its running
//!   requests. So a client that holds a connection without using it holds it for a bounded
//!   time, and at the cap not at all.
//! - Requests: each connection reads requests and runs the handler for each concurrently, at
//!   most [`ServerConfig::max_in_flight_per_conn`] at once; responses leave in the order they
//!   are ready, each carrying its request's `Uid`. A connection writes every response that is
//!   ready in one write, once it has no complete request left to read.
//! - Bad input: a request without a `Uid` is answered with `Err` set and the connection stays
//!   open. Malformed JSON, a top-level value that is not an object, or a frame longer than
//!   [`ServerConfig::max_frame`] logs a `tracing` warning and closes that connection (after
//!   answering the requests it had already received); every other connection carries on. A
//!   frame too long is answered first with an `Err` ("frame too large: ...", empty `Uid`,
//!   since the frame's is unknown), so the client learns why.
//! - Memory: every queue is bounded. A client that sends without reading its responses
//!   stalls its own connection (the server stops reading from it), never the others.
//! - Graceful shutdown: stop accepting and close the listener, stop reading new requests,
//!   let the running requests finish and their responses flush, then close the connections.
//!   Whatever has not finished after [`ServerConfig::shutdown_timeout`] is dropped.
//!
//! # Metrics
//! With the `metrics` feature the server reports through the
//! [`metrics`](https://docs.rs/metrics) facade, which exporters (Prometheus and others) plug
//! into; each metric is labelled `server = <where it listens>` ([`Server::local`]). The
//! handles are registered when the server is made ([`Server::new`], [`Server::bind`] ...),
//! so install the recorder before. Tested by `tests/server_metrics.rs`.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `json_server.connections.accepted` | counter | clients accepted |
//! | `json_server.connections` | gauge | connections open (served) |
//! | `json_server.requests.answered` | counter | responses made, `Err` rejections included; counted before they are written |
//! | `json_server.decode_errors` | counter | input that is not a request frame (malformed JSON, not an object, a frame too long), each closing its connection |
//!
//! A connection adds to the shared counters once per event, and to the answers once per
//! write, however many answers the write carries.
//!
//! # Decisions
//! - The server bounds what a client may hold without doing its part: an idle timeout
//!   (15 min, longer than the pool's 10 min idle timeout so the client side retires first), a
//!   frame timeout (30 s for a frame begun, the slow-send defence) and a write timeout (60 s
//!   without the socket taking a byte, nginx's `send_timeout`). All three share one timer per
//!   connection, set to the earliest deadline and reset only when that deadline moves earlier:
//!   a connection going from request to request reads the clock at most once per wake-up and
//!   touches the timer wheel about once per timeout period, not per request. Measured with
//!   the transport bench's `BENCH_SPLIT` rows (the raw client against our server, ratio to the
//!   raw pair; one run each, before and after, on a 2-core VM shared with other builds):
//!   sequential 1.02 -> 1.01, pipelined with 64 in flight 1.07 -> 1.06, within the noise.
//! - At the connection cap the server closes the connection idle the longest to serve a new
//!   client (idle: no request in flight; a frame begun counts as idle), as a cache evicts its
//!   least recently used entry: 70 silent clients can no longer lock out the 71st. Busy
//!   connections are never closed for it; when all are busy the new client waits. The accept
//!   loop finds the idlest by scanning one atomic idle stamp per connection, only at the cap.
//!   A request that arrives on the chosen connection just as it is chosen is still answered
//!   if it was read; one still in the kernel's buffer is lost with the close, the race every
//!   keep-alive close has.

mod config;
mod connection;
mod deadline;
mod handler;
mod idle;
mod listener;
mod report;
mod running;
mod signal;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::ServerConfig;
use deadline::Timeouts;
pub use handler::{EchoHandler, Handler, HandlerFn, handler_fn, rfc3339_nanos};
use idle::Registry;
pub use listener::Listener;
use listener::Unlink;
use report::Report;
pub use running::RunningServer;
pub use signal::shutdown_signal;

pub use crate::conn::Endpoint;

/// A bound server, ready to [`serve`](Server::serve) or [`spawn`](Server::spawn).
///
/// `L` is what it accepts clients from: a [`TcpListener`] by default
/// ([`bind`](Server::bind), [`from_listener`](Server::from_listener)), a
/// [`UnixListener`](tokio::net::UnixListener) ([`bind_unix`](Server::bind_unix)), or any
/// [`Listener`] ([`new`](Server::new)).
#[derive(Debug)]
pub struct Server<H = EchoHandler, L = TcpListener> {
    listener: L,
    local: Endpoint,
    /// The socket file to remove when the listener closes, for a path bound by `bind_unix`.
    unlink: Option<Unlink>,
    config: ServerConfig,
    handler: Arc<H>,
    /// The metrics of feature `metrics`, registered when the server is made.
    report: Report,
}

impl Server<EchoHandler> {
    /// Binds a listener to `addr` and makes an echo server of it.
    ///
    /// # Errors
    /// Resolving or binding the address failed.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes closes any listener it had bound.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> io::Result<Self> {
        Self::from_listener(TcpListener::bind(addr).await?, config)
    }

    /// Makes an echo server of a listener that is already bound.
    ///
    /// # Errors
    /// The listener's local address could not be read.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> io::Result<Self> {
        Server::new(listener, config)
    }
}

#[cfg(unix)]
impl Server<EchoHandler, tokio::net::UnixListener> {
    /// Binds a Unix domain socket at `path` and makes an echo server of it. The socket file
    /// is removed when the server stops (or is dropped unserved), as Go's `net.Listen` does,
    /// so the path can be bound again; a file already at the path is left alone and the bind
    /// fails, so a server never takes over another's socket.
    ///
    /// Needs a Tokio runtime.
    ///
    /// # Errors
    /// Binding failed: the path exists already (`AddrInUse`), its directory does not exist,
    /// permission is denied, or the path is longer than the system allows.
    pub fn bind_unix(path: impl AsRef<std::path::Path>, config: ServerConfig) -> io::Result<Self> {
        let path = path.as_ref();
        let listener = tokio::net::UnixListener::bind(path)?;
        let unlink = Unlink(path.to_path_buf());
        let mut server = Server::new(listener, config)?;
        server.unlink = Some(unlink);
        Ok(server)
    }
}

impl<L: Listener> Server<EchoHandler, L> {
    /// Makes an echo server of any [`Listener`]: a [`TcpListener`], a
    /// [`UnixListener`](tokio::net::UnixListener), or one of your own (in-memory streams, a
    /// TLS acceptor, a simulated network).
    ///
    /// # Errors
    /// The listener's [`local`](Listener::local) end could not be read.
    pub fn new(listener: L, config: ServerConfig) -> io::Result<Self> {
        let local = listener.local()?;
        Ok(Self {
            report: Report::new(&local),
            local,
            listener,
            unlink: None,
            config,
            handler: Arc::new(EchoHandler),
        })
    }
}

impl<H: Handler> Server<H, TcpListener> {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local.socket_addr().unwrap_or(crate::conn::NOT_TCP)
    }
}

impl<H: Handler, L: Listener> Server<H, L> {
    /// Replaces the handler.
    pub fn with_handler<H2: Handler>(self, handler: H2) -> Server<H2, L> {
        Server {
            listener: self.listener,
            local: self.local,
            unlink: self.unlink,
            config: self.config,
            handler: Arc::new(handler),
            report: self.report,
        }
    }

    /// Where the server listens, whatever the listener: a TCP address, a Unix socket path,
    /// or what a [`Listener`] of your own reports.
    pub fn local(&self) -> &Endpoint {
        &self.local
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see the
    /// [module documentation](self)) and returns.
    ///
    /// Errors on single connections (failed accepts included) are logged and never end the
    /// server.
    ///
    /// # Errors
    /// None at present; the `Result` leaves room for a fatal listener error.
    ///
    /// # Cancel safety
    /// Dropping the future stops the server at once: the listener closes and every connection
    /// is dropped without waiting for its running requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        self.run(shutdown, CancellationToken::new(), Arc::default())
            .await
    }

    /// Runs the server in a background task and returns a handle to stop it.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn spawn(self) -> RunningServer {
        let graceful = CancellationToken::new();
        let kill = CancellationToken::new();
        let active = Arc::new(AtomicUsize::new(0));
        let local = self.local.clone();
        let task = tokio::spawn(self.run(
            graceful.clone().cancelled_owned(),
            kill.clone(),
            Arc::clone(&active),
        ));
        RunningServer::new(local, graceful, kill, active, task)
    }

    /// The accept loop, then the shutdown: gracefully once `shutdown` resolves, at once if
    /// `kill` is cancelled (before or during the graceful part).
    async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        kill: CancellationToken,
        active: Arc<AtomicUsize>,
    ) -> io::Result<()> {
        let Server {
            mut listener,
            local,
            unlink,
            config,
            handler,
            report,
        } = self;
        // Closed with the listener, so the socket file goes when the listener does.
        let listener_closed = |listener: L| {
            drop(listener);
            drop(unlink);
        };
        info!(%local, "server listening");
        // A permit per connection, taken before it is served. At the cap the loop accepts one
        // client and holds it while it makes room by closing the idlest connection (see
        // `idle`); while every connection is busy, it waits for one to close or go idle, and
        // further clients wait in the listen backlog.
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let stop = CancellationToken::new();
        let mut connections = JoinSet::new();
        let mut registry = Registry::new();
        let went_idle = registry.went_idle();
        let mut slot = None;
        // The client accepted at the cap, waiting for a slot; whether a connection was told to
        // close for it.
        let mut held: Option<(L::Stream, Endpoint)> = None;
        let mut evicting = false;
        let timeouts = Timeouts {
            idle: config.idle_timeout,
            frame: config.frame_timeout,
            write: config.write_timeout,
        };
        // After an accept error such as EMFILE, pause instead of spinning on it.
        let mut paused_until: Option<Instant> = None;
        let mut backoff = ACCEPT_BACKOFF_MIN;
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                biased;
                () = kill.cancelled() => {
                    listener_closed(listener);
                    // Aborts every connection's task and waits until each is gone: a
                    // connection's task owns its socket, so every socket is closed then.
                    connections.shutdown().await;
                    info!(%local, "server aborted");
                    return Ok(());
                }
                () = &mut shutdown => break,
                Some(joined) = connections.join_next_with_id(), if !connections.is_empty() => {
                    registry.remove(log_join(joined));
                }
                () = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)),
                    if paused_until.is_some() => paused_until = None,
                permit = Arc::clone(&slots).acquire_owned(), if slot.is_none() => {
                    // The semaphore is never closed, so this is always `Ok`.
                    slot = permit.ok();
                }
                () = went_idle.notified(), if held.is_some() && !evicting => {
                    evicting = registry.evict_idlest();
                }
                accepted = listener.accept(), if held.is_none() && paused_until.is_none() => {
                    match accepted {
                        Ok((stream, peer)) => {
                            backoff = ACCEPT_BACKOFF_MIN;
                            report.accepted();
                            if slot.is_none() {
                                evicting = registry.evict_idlest();
                                debug!(%peer, evicting, "at the connection cap");
                            }
                            held = Some((stream, peer));
                        }
                        Err(error) if is_connection_error(&error) => {
                            debug!(%error, "accept failed for one connection");
                        }
                        Err(error) => {
                            warn!(%error, ?backoff, "accept failed; pausing");
                            paused_until = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        }
                    }
                }
            }
            if held.is_some()
                && let Some(permit) = slot.take()
                && let Some((stream, peer)) = held.take()
            {
                evicting = false;
                registry.fed();
                L::configure(&stream, &peer, &config);
                let (idle, idle_slot) = registry.slot();
                let cx = connection::Context {
                    handler: Arc::clone(&handler),
                    max_frame: config.max_frame.max(1),
                    max_in_flight: config.max_in_flight_per_conn.max(1),
                    shutdown: stop.clone(),
                    active: Arc::clone(&active),
                    timeouts,
                    idle,
                    report: report.clone(),
                };
                let task = connections.spawn(connection::serve(stream, peer, cx, permit));
                registry.insert(task.id(), idle_slot);
            }
        }

        // Graceful: refuse new clients at once, tell every connection to stop reading, and
        // wait for them to finish their running requests and flush.
        listener_closed(listener);
        stop.cancel();
        info!(%local, connections = connections.len(), "server shutting down");
        drop(held);
        {
            let drained = async {
                while let Some(joined) = connections.join_next_with_id().await {
                    log_join(joined);
                }
            };
            tokio::select! {
                () = drained => {}
                () = kill.cancelled() => {}
                () = tokio::time::sleep(config.shutdown_timeout) => {
                    warn!(%local, "shutdown timed out; dropping the remaining connections");
                }
            }
        }
        connections.shutdown().await;
        info!(%local, "server stopped");
        Ok(())
    }
}

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Errors of `accept` that concern one incoming connection, not the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Logs a connection task that panicked; returns the task's id.
fn log_join(joined: Result<(task::Id, ()), JoinError>) -> task::Id {
    match joined {
        Ok((id, ())) => id,
        Err(error) => {
            if error.is_panic() {
                warn!(%error, "a connection task panicked");
            }
            error.id()
        }
    }
}
