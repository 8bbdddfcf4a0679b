//! [`MysqlManager`]: opens, checks, resets and closes [`MysqlConn`]s for the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder};
use pool::Manager;

use crate::conn::MysqlConn;
use crate::error::{Error, Target};

/// Makes pooled MariaDB or MySQL connections from a `mysql://` URL.
///
/// - `connect` opens a `mysql_async` connection over TCP to the URL's address and runs the
///   init statements ([`init`](MysqlManager::init)).
/// - `check` refuses, without I/O, a connection handed out dirty (it was not reset), and
///   sends `COM_PING` when the connection has not answered for
///   [`ping_after`](MysqlManager::ping_after).
/// - `is_retryable` is [`Error::is_retryable`]: a connect refused for a wrong password or a
///   missing database reaches the caller at once, a refused port is retried.
/// - `is_broken` is true for a connection a dropped future cut mid-command, or one whose
///   command failed with a connection error.
/// - `needs_reset` is true for an open transaction, an unread result or a changed session;
///   `reset` cleans exactly that ([`MysqlConn::reset`]) and runs the init statements again
///   after a session reset.
/// - `close` says goodbye (`COM_QUIT`) to a healthy connection; for one cut mid-command it
///   first stops the abandoned statement with `KILL QUERY <id>` over a fresh connection, so
///   it holds no lock while the server would otherwise run it to its end.
#[derive(Debug, Clone)]
pub struct MysqlManager {
    opts: Opts,
    target: Arc<Target>,
    init: Arc<[String]>,
    ping_after: Duration,
    kill_timeout: Duration,
    counts: Arc<Counts>,
}

/// What a [`MysqlManager`] did, since it was made ([`MysqlManager::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerCounts {
    /// Resets that ended well.
    pub resets: u64,
    /// Resets that failed (the connection was then discarded).
    pub reset_failures: u64,
    /// Checks that refused a connection handed out dirty (not reset).
    pub dirty_refused: u64,
    /// `COM_PING`s sent by `check` (a connection silent for longer than
    /// [`ping_after`](MysqlManager::ping_after)).
    pub pings: u64,
    /// Connections closed after a dropped future cut their command.
    pub cut_closed: u64,
    /// `KILL QUERY` statements that stopped (or found ended) a cut connection's statement.
    pub kills: u64,
    /// `KILL QUERY` attempts that failed or timed out.
    pub kill_failures: u64,
}

/// The live counters behind [`ManagerCounts`].
#[derive(Debug, Default)]
struct Counts {
    resets: AtomicU64,
    reset_failures: AtomicU64,
    dirty_refused: AtomicU64,
    pings: AtomicU64,
    cut_closed: AtomicU64,
    kills: AtomicU64,
    kill_failures: AtomicU64,
}

/// `ER_NO_SUCH_THREAD`: `KILL` of a connection the server no longer has.
const NO_SUCH_THREAD: u16 = 1094;

impl MysqlManager {
    /// A manager for `url` (`mysql://user:password@host:port/database`). Opens nothing yet.
    ///
    /// Connections go over TCP to the URL's address: `mysql_async`'s habit of reconnecting
    /// to a loopback server through its Unix socket (`prefer_socket`) is turned off, since
    /// it costs a second handshake per connection.
    ///
    /// Defaults: no init statements, `check` pings a connection silent for 1 s, a `KILL
    /// QUERY` gets 2 s.
    ///
    /// # Errors
    /// [`Error::Url`] when `url` is not a valid `mysql://` URL.
    pub fn new(url: &str) -> Result<MysqlManager, Error> {
        let opts = Opts::from_url(url).map_err(Error::Url)?;
        let opts: Opts = OptsBuilder::from_opts(opts).prefer_socket(false).into();
        Ok(MysqlManager {
            target: Arc::new(Target::of(&opts)),
            opts,
            init: Arc::from(Vec::new()),
            ping_after: Duration::from_secs(1),
            kill_timeout: Duration::from_secs(2),
            counts: Arc::default(),
        })
    }

    /// Statements run, in order, on every new connection and after every session reset
    /// (`SET SESSION innodb_lock_wait_timeout = 5`, say). They are the clean state of a
    /// session, so they do not count as changing it.
    pub fn init<S: Into<String>>(mut self, statements: impl IntoIterator<Item = S>) -> Self {
        self.init = statements.into_iter().map(Into::into).collect();
        self
    }

    /// `check` sends `COM_PING` only when the connection has answered nothing for this long;
    /// a connection that answered more recently is known to be alive.
    pub fn ping_after(mut self, idle: Duration) -> Self {
        self.ping_after = idle;
        self
    }

    /// How long `close` gives the `KILL QUERY` of a cut connection (connect included). Keep
    /// it under the pool's `close_timeout` (5 s by default), which bounds the whole close.
    pub fn kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }

    /// The connection options, as parsed from the URL.
    pub fn opts(&self) -> &Opts {
        &self.opts
    }

    /// What this manager (and its clones) did so far.
    pub fn counts(&self) -> ManagerCounts {
        let c = &self.counts;
        ManagerCounts {
            resets: c.resets.load(Relaxed),
            reset_failures: c.reset_failures.load(Relaxed),
            dirty_refused: c.dirty_refused.load(Relaxed),
            pings: c.pings.load(Relaxed),
            cut_closed: c.cut_closed.load(Relaxed),
            kills: c.kills.load(Relaxed),
            kill_failures: c.kill_failures.load(Relaxed),
        }
    }

    /// `KILL QUERY id` over a fresh connection, closed after.
    ///
    /// # Errors
    /// Any error connecting or killing; a connection the server no longer has is not one.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, the fresh connection is dropped with it, and the statement may
    /// or may not have been stopped.
    pub async fn kill_query(&self, id: u32) -> Result<(), Error> {
        let mut conn = mysql_async::Conn::new(self.opts.clone())
            .await
            .map_err(|error| Error::classify(error, &self.target))?;
        let killed = conn.query_drop(format!("KILL QUERY {id}")).await;
        let _ = conn.disconnect().await;
        match killed {
            Ok(()) => Ok(()),
            Err(mysql_async::Error::Server(error)) if error.code == NO_SUCH_THREAD => Ok(()),
            Err(error) => Err(Error::classify(error, &self.target)),
        }
    }
}

impl Manager for MysqlManager {
    type Connection = MysqlConn;
    type Error = Error;

    // Cancel safety: dropping this future (the pool's connect timeout) drops the half-made
    // connection and its socket. The connect timeout is the pool's (`Builder::connect_timeout`).
    async fn connect(&self) -> Result<MysqlConn, Error> {
        let conn = mysql_async::Conn::new(self.opts.clone())
            .await
            .map_err(|error| Error::classify(error, &self.target))?;
        let mut conn = MysqlConn::new(conn, Arc::clone(&self.target));
        conn.run_init(&self.init).await?;
        Ok(conn)
    }

    // Cancel safety: dropped during its ping (the pool's check timeout), the connection is
    // left cut and the pool discards it. A dirty connection is refused without I/O (the pool
    // resets dirty connections before anyone sees them, so this is a safety net): a pool that resets on return never hands
    // one out; one that does not (or a connection put back some other way) must not give
    // the next caller an open transaction, whose first `START TRANSACTION` would commit it.
    async fn check(&self, conn: &mut MysqlConn) -> Result<(), Error> {
        if conn.is_broken() {
            return Err(Error::Unusable("cut mid-command or failed"));
        }
        if conn.needs_reset() {
            self.counts.dirty_refused.fetch_add(1, Relaxed);
            return Err(Error::NotReset);
        }
        if conn.last_used().elapsed() < self.ping_after {
            return Ok(());
        }
        self.counts.pings.fetch_add(1, Relaxed);
        conn.ping().await
    }

    // A refused, lost or timed-out connect is worth retrying within the caller's wait; a bad
    // URL, wrong credentials or a missing database never are: the caller hears at once.
    fn is_retryable(&self, error: &Error) -> bool {
        error.is_retryable()
    }

    fn is_broken(&self, conn: &mut MysqlConn) -> bool {
        conn.is_broken()
    }

    fn needs_reset(&self, conn: &MysqlConn) -> bool {
        conn.needs_reset()
    }

    // Cancel safety: dropped mid-way (the pool's reset timeout), the connection is left cut,
    // so it is broken and discarded, never handed out half reset.
    async fn reset(&self, conn: &mut MysqlConn) -> Result<(), Error> {
        let result = conn.reset(&self.init).await;
        let counter = match result {
            Ok(()) => &self.counts.resets,
            Err(_) => &self.counts.reset_failures,
        };
        counter.fetch_add(1, Relaxed);
        result
    }

    // Cancel safety: dropped mid-way (the pool's close timeout), the socket is closed; a kill
    // not yet sent is not sent, and the statement then runs to its end on the server.
    async fn close(&self, conn: MysqlConn) {
        let state = conn.state();
        let id = conn.id();
        let inner = conn.into_inner();
        if state.cut {
            // The server may still be running the cut statement, holding its locks: stop it,
            // then close the socket, which ends the session and rolls back its transaction.
            self.counts.cut_closed.fetch_add(1, Relaxed);
            let counter = match tokio::time::timeout(self.kill_timeout, self.kill_query(id)).await {
                Ok(Ok(())) => &self.counts.kills,
                Ok(Err(_)) | Err(_) => &self.counts.kill_failures,
            };
            counter.fetch_add(1, Relaxed);
            drop(inner);
        } else if !state.failed {
            // COM_QUIT; the server rolls back whatever is open. Bounded like a kill.
            let _ = tokio::time::timeout(self.kill_timeout, inner.disconnect()).await;
        }
    }
}
