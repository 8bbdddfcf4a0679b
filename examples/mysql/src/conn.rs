//! [`MysqlConn`]: a `mysql_async` connection that knows, without I/O, whether it is dirty
//! (needs a reset) or was cut mid-command (must be discarded).
//!
//! Every command goes through a helper that sets [`ConnState::cut`] before it awaits and
//! clears it after, so a future dropped at any `.await` leaves the flag set; after each
//! command the helper reads the server's status flags (open transaction, autocommit) from
//! the OK packet that ended it, and the statement's text for session changes
//! ([`may_change_session`]).

use std::sync::Arc;
use std::time::Instant;

use mysql_async::Params;
use mysql_async::consts::StatusFlags;
use mysql_async::prelude::{FromRow, Queryable};

use crate::error::{Error, Target};
use crate::rows::Rows;
use crate::statement::may_change_session;

/// What a connection knows about itself, without I/O.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnState {
    /// The server reported an open transaction after the last command (its
    /// `SERVER_STATUS_IN_TRANS` flag). Kept as it was after a command the server refused,
    /// since an error packet carries no status.
    pub in_transaction: bool,
    /// A result of [`MysqlConn::query_iter`] was not read to its end.
    pub unread_result: bool,
    /// A statement may have changed the session (variables, user variables, autocommit,
    /// temporary tables, named locks, the schema), or the caller said so.
    pub session_changed: bool,
    /// A command's future was dropped before it ended: the protocol state is unknown.
    pub cut: bool,
    /// A command failed with a connection error: the connection is gone.
    pub failed: bool,
}

impl ConnState {
    /// True when the connection must be discarded: cut mid-command or failed.
    pub fn is_broken(&self) -> bool {
        self.cut || self.failed
    }

    /// True when the connection must be reset before anyone else uses it: an open
    /// transaction, an unread result or a changed session (or it is broken, which no reset
    /// mends).
    pub fn needs_reset(&self) -> bool {
        self.in_transaction || self.unread_result || self.session_changed || self.is_broken()
    }
}

/// A pooled MariaDB or MySQL connection: `mysql_async`'s [`Conn`](mysql_async::Conn) and
/// what it knows about its own state ([`ConnState`]).
///
/// Run statements through its helpers, not through the inner connection, so that the pool
/// knows when to reset it and when to discard it.
pub struct MysqlConn {
    conn: mysql_async::Conn,
    state: ConnState,
    last_used: Instant,
    target: Arc<Target>,
}

impl std::fmt::Debug for MysqlConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConn")
            .field("id", &self.conn.id())
            .field("state", &self.state)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

impl MysqlConn {
    /// Wraps a connection just opened (or whose session is known to be clean).
    pub fn new(conn: mysql_async::Conn, target: Arc<Target>) -> MysqlConn {
        MysqlConn {
            conn,
            state: ConnState::default(),
            last_used: Instant::now(),
            target,
        }
    }

    /// The server's id of this connection (`CONNECTION_ID()`), as `KILL` takes it.
    pub fn id(&self) -> u32 {
        self.conn.id()
    }

    /// What the connection knows about itself.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// When the last command ended well.
    pub fn last_used(&self) -> Instant {
        self.last_used
    }

    /// The inner connection, to read (server version, last insert id, ...).
    pub fn inner(&self) -> &mysql_async::Conn {
        &self.conn
    }

    /// True when the connection must be discarded: [`ConnState::is_broken`], or
    /// `mysql_async` itself counts it disconnected (it marks a connection so while a command
    /// runs, and after a connection error).
    pub fn is_broken(&self) -> bool {
        self.state.is_broken() || self.conn.is_disconnected()
    }

    /// True when the connection must be reset before another caller uses it
    /// ([`ConnState::needs_reset`]).
    pub fn needs_reset(&self) -> bool {
        self.state.needs_reset() || self.conn.is_disconnected()
    }

    /// Says that the session changed in a way the statement text does not show (a stored
    /// procedure that sets variables, say), so the connection is reset when it comes back.
    pub fn mark_session_changed(&mut self) {
        self.state.session_changed = true;
    }

    /// Runs one or more statements and drops their results.
    ///
    /// # Errors
    /// The server's refusal ([`Error::Server`], [`Error::Deadlock`], ...) leaves the
    /// connection usable; a connection error marks it failed.
    ///
    /// # Cancel safety
    /// Not cancel safe: a future dropped before the end cuts the command, and the connection
    /// reports itself broken ([`is_broken`](MysqlConn::is_broken)), so the pool discards it
    /// and stops the statement on the server.
    pub async fn query_drop(&mut self, sql: &str) -> Result<(), Error> {
        self.start(sql);
        let result = self.conn.query_drop(sql).await;
        self.finish(result)
    }

    /// Runs a statement and collects the rows of its first result.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn query<T>(&mut self, sql: &str) -> Result<Vec<T>, Error>
    where
        T: FromRow + Send + 'static,
    {
        self.start(sql);
        let result = self.conn.query(sql).await;
        self.finish(result)
    }

    /// Runs a statement and returns the first row of its result, if any.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn query_first<T>(&mut self, sql: &str) -> Result<Option<T>, Error>
    where
        T: FromRow + Send + 'static,
    {
        self.start(sql);
        let result = self.conn.query_first(sql).await;
        self.finish(result)
    }

    /// Prepares (once per connection: `mysql_async` caches statements) and runs a statement
    /// with parameters, dropping its result.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn exec_drop(
        &mut self,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<(), Error> {
        self.start(sql);
        let result = self.conn.exec_drop(sql, params).await;
        self.finish(result)
    }

    /// As [`exec_drop`](MysqlConn::exec_drop), returning the first row, if any.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn exec_first<T>(
        &mut self,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<Option<T>, Error>
    where
        T: FromRow + Send + 'static,
    {
        self.start(sql);
        let result = self.conn.exec_first(sql, params).await;
        self.finish(result)
    }

    /// Runs a statement and hands its rows out one at a time ([`Rows::next`]). Rows left
    /// unread when [`Rows`] is dropped stay on the connection ([`ConnState::unread_result`])
    /// until a reset reads them off.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn query_iter(&mut self, sql: &str) -> Result<Rows<'_>, Error> {
        self.start(sql);
        let result = self
            .conn
            .query_iter(sql)
            .await
            .map(|result| result.is_empty());
        let empty = self.finish(result)?;
        self.state.unread_result = !empty;
        Ok(Rows::new(self))
    }

    /// `START TRANSACTION`.
    ///
    /// # Errors
    /// [`Error::TransactionOpen`] when a transaction is already open (the server would
    /// commit it silently); otherwise as [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn begin(&mut self) -> Result<(), Error> {
        if self.state.in_transaction {
            return Err(Error::TransactionOpen);
        }
        self.query_drop("START TRANSACTION").await
    }

    /// `COMMIT`.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop): cut, the transaction may or may not have
    /// committed, and the connection is discarded.
    pub async fn commit(&mut self) -> Result<(), Error> {
        self.query_drop("COMMIT").await
    }

    /// `ROLLBACK`.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn rollback(&mut self) -> Result<(), Error> {
        self.query_drop("ROLLBACK").await
    }

    /// `COM_PING`: one round trip.
    ///
    /// # Errors
    /// As [`query_drop`](MysqlConn::query_drop).
    ///
    /// # Cancel safety
    /// As [`query_drop`](MysqlConn::query_drop).
    pub async fn ping(&mut self) -> Result<(), Error> {
        self.state.cut = true;
        let result = self.conn.ping().await;
        self.finish(result)
    }

    /// Cleans the connection as [`MysqlManager::reset`](crate::MysqlManager) does: reads
    /// off an unread result and rolls back an open transaction (`ROLLBACK`), and when the
    /// session changed, `COM_RESET_CONNECTION` (`COM_CHANGE_USER` on servers without it)
    /// then `init` in order. Each step runs only when its own flag is set. Afterwards the
    /// connection is clean.
    ///
    /// # Errors
    /// [`Error::Unusable`] for a broken connection (no reset mends it); any error of the
    /// steps. Either way the connection should be discarded.
    ///
    /// # Cancel safety
    /// Not cancel safe: cut, the connection reports itself broken.
    pub async fn reset(&mut self, init: &[String]) -> Result<(), Error> {
        if self.is_broken() {
            return Err(Error::Unusable(
                "cut mid-command or failed; it is discarded",
            ));
        }
        let state = self.state;
        if state.unread_result || state.in_transaction {
            // `mysql_async` reads any pending result off before it sends a command.
            self.state.cut = true;
            let result = self.conn.query_drop("ROLLBACK").await;
            self.finish(result)?;
            self.state.unread_result = false;
        }
        if state.session_changed {
            self.state.cut = true;
            let result = match self.conn.reset().await {
                Ok(true) => Ok(()),
                Ok(false) => self.conn.change_user(Default::default()).await,
                Err(error) => Err(error),
            };
            self.finish(result)?;
            self.run_init(init).await?;
        }
        self.state = ConnState::default();
        Ok(())
    }

    /// Runs `init` in order, as the baseline of a clean session: the statements themselves
    /// do not mark the session changed.
    ///
    /// # Errors
    /// [`Error::Init`] naming the statement that failed.
    ///
    /// # Cancel safety
    /// Not cancel safe: cut, the connection reports itself broken.
    pub async fn run_init(&mut self, init: &[String]) -> Result<(), Error> {
        for statement in init {
            self.state.cut = true;
            let result = self.conn.query_drop(statement.as_str()).await;
            self.finish(result).map_err(|source| Error::Init {
                statement: statement.clone(),
                source: Box::new(source),
            })?;
        }
        self.state.session_changed = false;
        Ok(())
    }

    /// Its state, for [`Rows`] to keep.
    pub(crate) fn state_mut(&mut self) -> &mut ConnState {
        &mut self.state
    }

    /// The inner connection, for [`Rows`] to read from.
    pub(crate) fn inner_mut(&mut self) -> &mut mysql_async::Conn {
        &mut self.conn
    }

    /// Takes the inner connection, to close it.
    pub(crate) fn into_inner(self) -> mysql_async::Conn {
        self.conn
    }

    /// Before a command: marks it in flight, and the session changed if `sql` may change it.
    fn start(&mut self, sql: &str) {
        self.state.cut = true;
        if may_change_session(sql) {
            self.state.session_changed = true;
        }
    }

    /// After a command: it ended, so it is no longer cut; on success the server's status
    /// flags say whether a transaction is open and autocommit on; a connection error marks
    /// the connection failed.
    pub(crate) fn finish<T>(&mut self, result: mysql_async::Result<T>) -> Result<T, Error> {
        self.state.cut = false;
        match result {
            Ok(value) => {
                self.last_used = Instant::now();
                self.read_status();
                Ok(value)
            }
            Err(error) => {
                if error.is_fatal() {
                    self.state.failed = true;
                }
                Err(Error::classify(error, &self.target))
            }
        }
    }

    /// Reads the status flags of the OK packet that ended the last command.
    fn read_status(&mut self) {
        if let Some(ok) = self.conn.last_ok_packet() {
            let flags = ok.status_flags();
            self.state.in_transaction = flags.contains(StatusFlags::SERVER_STATUS_IN_TRANS);
            if !flags.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT) {
                self.state.session_changed = true;
            }
        }
    }
}
