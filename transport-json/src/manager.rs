//! [`JsonManager`]: the [`pool::Manager`] that pools [`Conn`]s.
//!
//! # Use a lease per request
//! A [`Conn`] carries many requests at once, so the way to use a pooled one is a
//! [`Lease`](pool::Lease): [`Pool::lease`](pool::Pool::lease) lends one connection to up to
//! [`max_streams`](pool::Builder::max_streams) callers at a time, each of them pipelining its
//! requests beside the others'. Take a lease for each request (or short burst of requests)
//! and drop it when the response is in: the pool then knows which connections carry work,
//! spreads the leases over them (the least-leased connection with room first), opens a new
//! connection only when every one is full, and closes a connection that broke, expired or was
//! retired only after its last lease ended, so it never cuts a request in flight.
//!
//! ```no_run
//! use pool::Pool;
//! use transport_json::conn::ConnectOptions;
//! use transport_json::manager::JsonManager;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = JsonManager::new(ConnectOptions::new("127.0.0.1:3000"));
//! // Up to 4 connections, each carrying up to 16 requests at once.
//! let pool = Pool::builder(manager).max_size(4).max_streams(16).build()?;
//! let pool = &pool;
//! let requests = (0..64).map(|i| async move {
//!     let conn = pool.lease().await?; // a lease per request
//!     let resp = conn.request(i.to_string()).await?;
//!     Ok::<_, Box<dyn std::error::Error>>(resp.val)
//! }); // dropping the lease gives its room back
//! for val in futures::future::try_join_all(requests).await? {
//!     println!("{val}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`max_streams`](pool::Builder::max_streams) sets how many leases share one connection:
//! more per connection means bigger batched writes and fewer connections; fewer means the
//! load spreads over more of them. Exclusive [`Pool::get`](pool::Pool::get) still works (a
//! caller holding the connection alone, for example to send a burst), and shares the pool
//! with leases; cloning the [`Conn`] out of a guard and returning the guard at once, as was
//! done before leases, hides the work in flight from the pool: don't.

use std::time::Duration;

use pool::balance::{Balanced, SetError};

#[cfg(doc)]
use pool::balance::Ejection;

use crate::conn::{CloseCause, Conn, ConnectOptions, Error};

/// What [`JsonManager::check`](pool::Manager::check) sends when it does a round trip.
pub const PING_VAL: &str = "ping";

/// How long [`JsonManager::close`](pool::Manager::close) waits for requests still in flight
/// on a connection it closes before it drops the connection outright.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Makes, checks and closes [`Conn`]s for a [`pool::Pool`].
///
/// - `connect` dials with [`options`](JsonManager::options).
/// - `check` fails a connection whose closed flag is set, without I/O; it sends a real
///   request ([`PING_VAL`]) only when the connection has been idle (no request written and
///   no response to a pending request received: responses for a `Uid` nobody waits for do
///   not count) for [`check_idle`](JsonManager::check_idle) or longer. The ping's response,
///   even one carrying `Err`, proves the connection alive.
/// - `is_broken` and `is_broken_shared` read the closed flag. A connection whose server
///   stopped answering sets it itself (see [`ConnectOptions::close_unresponsive`]), so the
///   pool discards it and opens a fresh one; under leases, a connection that died while ten
///   leases used it takes no eleventh, and its slot frees at once for a replacement.
/// - `close` closes the connection gracefully, waiting at most [`CLOSE_GRACE`].
#[derive(Debug, Clone)]
pub struct JsonManager {
    /// How each connection is made.
    pub options: ConnectOptions,
    /// Idle time after which `check` does a real round trip; `Duration::ZERO` makes every
    /// check a round trip. Default 10 s.
    pub check_idle: Duration,
}

impl JsonManager {
    /// The default `check_idle`.
    pub const DEFAULT_CHECK_IDLE: Duration = Duration::from_secs(10);

    /// A manager dialing with `options`, with the default `check_idle`.
    pub fn new(options: ConnectOptions) -> Self {
        JsonManager {
            options,
            check_idle: Self::DEFAULT_CHECK_IDLE,
        }
    }

    /// Sets [`check_idle`](JsonManager::check_idle).
    #[must_use]
    pub fn check_idle(mut self, idle: Duration) -> Self {
        self.check_idle = idle;
        self
    }

    /// One pool over several servers: a [`Balanced`] set with a manager per address in
    /// `addrs` (each dialing with `options` but its own address, and named by it), ejecting
    /// as [`Ejection::default`] says. Each new connection goes to the healthy server with
    /// the fewest; a server that refuses or breaks connections is ejected and probed back.
    ///
    /// ```no_run
    /// use pool::Pool;
    /// use pool::balance::Routed;
    /// use transport_json::{ConnectOptions, JsonManager};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let addrs = ["127.0.0.1:3000", "127.0.0.2:3000", "127.0.0.3:3000"];
    /// let manager = JsonManager::balanced(&ConnectOptions::default(), addrs)?;
    /// let pool = Pool::builder(manager).max_size(6).max_streams(16).build()?;
    /// let lease = pool.lease().await?;
    /// let resp = lease.request("hi").await?;
    /// println!("{} answered {}", Routed::endpoint(&lease), resp.val);
    /// for endpoint in pool.manager().endpoints() {
    ///     println!("{}: {} connections, {} leases", endpoint.name, endpoint.live, endpoint.leases);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`SetError::Duplicate`] when an address is given twice.
    pub fn balanced<A: Into<String>>(
        options: &ConnectOptions,
        addrs: impl IntoIterator<Item = A>,
    ) -> Result<Balanced<JsonManager>, SetError> {
        Balanced::from_endpoints(addrs.into_iter().map(|addr| {
            let addr = addr.into();
            let manager = JsonManager::new(options.clone().addr(addr.clone()));
            (addr, manager)
        }))
    }

    /// How often [`resolving`](JsonManager::resolving) resolves its host names again, at
    /// most: on the first connect after this long.
    pub const RESOLVE_EVERY: Duration = Duration::from_secs(1);

    /// One pool over every address the `hosts` (`host:port`) resolve to: a [`Balanced`] set
    /// with an endpoint per resolved address (named by it, dialing it with `options`),
    /// resolved again on a connect at most every [`RESOLVE_EVERY`](JsonManager::RESOLVE_EVERY).
    /// An address no longer returned is removed (its connections drain); a new one is added.
    /// A lookup that fails, or finds nothing, keeps the set as it was (and a first lookup that
    /// fails leaves it empty: connects fail with
    /// [`BalanceError::NoEndpoints`](pool::balance::BalanceError::NoEndpoints) until one
    /// succeeds).
    pub fn resolving<H: Into<String>>(
        options: &ConnectOptions,
        hosts: impl IntoIterator<Item = H>,
    ) -> Balanced<JsonManager> {
        let hosts: std::sync::Arc<[String]> = hosts.into_iter().map(Into::into).collect();
        let options = options.clone();
        Balanced::discovering(Self::RESOLVE_EVERY, move || {
            let (hosts, options) = (std::sync::Arc::clone(&hosts), options.clone());
            Box::pin(async move {
                let mut found: Vec<(String, JsonManager)> = Vec::new();
                for host in hosts.iter() {
                    for addr in tokio::net::lookup_host(host.as_str()).await? {
                        let name = addr.to_string();
                        if !found.iter().any(|(n, _)| *n == name) {
                            let manager = JsonManager::new(options.clone().addr(name.clone()));
                            found.push((name, manager));
                        }
                    }
                }
                if found.is_empty() {
                    return Err(format!("{hosts:?} resolved to no address").into());
                }
                Ok(found)
            })
        })
    }
}

impl pool::Manager for JsonManager {
    type Connection = Conn;
    type Error = Error;

    /// # Errors
    /// As [`Conn::connect`].
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Conn::connect`].
    async fn connect(&self) -> Result<Conn, Error> {
        Conn::connect(&self.options).await
    }

    /// # Errors
    /// [`Error::Closed`] when the connection is closed (no I/O); otherwise, when the
    /// connection has been idle for `check_idle` or longer, the error of the round trip
    /// (a timeout, or the connection failing under it).
    ///
    /// # Cancel safety
    /// Cancel safe: a round trip dropped half way leaves no pending entry behind.
    async fn check(&self, conn: &mut Conn) -> Result<(), Error> {
        if conn.is_closed() {
            let cause = conn.close_cause().unwrap_or(CloseCause::Shutdown);
            return Err(Error::Closed(cause));
        }
        if conn.idle_for() < self.check_idle {
            return Ok(());
        }
        match conn.request(PING_VAL).await {
            Ok(_) | Err(Error::Server(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// [`Error::is_retryable`]: a refused or timed-out connect is tried again, a TLS
    /// handshake refused on its certificates is not.
    fn is_retryable(&self, error: &Error) -> bool {
        error.is_retryable()
    }

    fn is_broken(&self, conn: &mut Conn) -> bool {
        conn.is_closed()
    }

    fn is_broken_shared(&self, conn: &Conn) -> bool {
        conn.is_closed()
    }

    /// # Cancel safety
    /// Dropping the future stops only the wait: the graceful close goes on in the
    /// connection's tasks, and ends when the last clone of the connection is dropped.
    async fn close(&self, conn: Conn) {
        let _ = tokio::time::timeout(CLOSE_GRACE, conn.close()).await;
    }
}
