//! [`JsonManager`]: the [`pool::Manager`] that pools [`Conn`]s.
//!
//! ```no_run
//! use pool::Pool;
//! use transport_json::conn::ConnectOptions;
//! use transport_json::manager::JsonManager;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = JsonManager::new(ConnectOptions::new("127.0.0.1:3000"));
//! let pool = Pool::builder(manager).max_size(4).build()?;
//! let conn = pool.get().await?;
//! let resp = conn.request("world").await?;
//! println!("{}", resp.val);
//! # Ok(())
//! # }
//! ```
//!
//! Since one [`Conn`] carries many requests at once, a caller may also clone the connection
//! out of its guard and return the guard at once; the pool then serves as a set of
//! connections to spread load over.

use std::time::Duration;

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
/// - `is_broken` reads the closed flag. A connection whose server stopped answering sets it
///   itself (see [`ConnectOptions::close_unresponsive`]), so the pool discards it and opens a
///   fresh one.
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

    fn is_broken(&self, conn: &mut Conn) -> bool {
        conn.is_closed()
    }

    /// # Cancel safety
    /// Dropping the future stops only the wait: the graceful close goes on in the
    /// connection's tasks, and ends when the last clone of the connection is dropped.
    async fn close(&self, conn: Conn) {
        let _ = tokio::time::timeout(CLOSE_GRACE, conn.close()).await;
    }
}
