//! The pool in front of a real MariaDB (or MySQL) server: a [`Manager`](pool::Manager) over
//! `mysql_async`'s connection that knows, without I/O, when a connection comes back dirty
//! (reset it) or cut mid-command (discard it and stop its statement on the server).
//!
//! ```no_run
//! use mysql_example::MysqlManager;
//! use pool::Pool;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = MysqlManager::new("mysql://root@127.0.0.1:3306/pool_example")?
//!     .init(["SET SESSION innodb_lock_wait_timeout = 5"]);
//! let pool = Pool::builder(manager).max_size(8).build()?;
//!
//! let mut conn = pool.get().await?;
//! conn.begin().await?;
//! let balance: Option<i64> = conn
//!     .exec_first("SELECT balance FROM accounts WHERE id = ? FOR UPDATE", (1,))
//!     .await?;
//! conn.commit().await?;
//! drop(conn); // clean: back to the pool as it is
//! # let _ = balance;
//! pool.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! - [`MysqlManager`]: connect (plus init statements), check (`COM_PING`), is_broken,
//!   needs_reset, reset, close (with `KILL QUERY` for a cut connection); its own
//!   [`counts`](MysqlManager::counts).
//! - [`MysqlConn`]: the pooled connection; run statements through its helpers
//!   ([`query_drop`](MysqlConn::query_drop), [`exec_first`](MysqlConn::exec_first),
//!   [`query_iter`](MysqlConn::query_iter), [`begin`](MysqlConn::begin), ...), which keep
//!   its [`ConnState`].
//! - [`Error`]: one variant per cause (wrong URL, refused port, wrong password, missing
//!   database, deadlock, ...) and [`Error::is_retryable`].
//! - [`bank`]: the load program (`cargo run --release -p mysql-example -- --url ...`) as a
//!   library, so that the tests run it too.
//! - [`bench`](mod@bench): `--bench`, our pool and `mysql_async`'s own pool side by side
//!   over one server (point selects, none or half of the checkouts dirtied), in alternating
//!   rounds.
//! - [`throwaway`]: a `mariadbd` of its own on a free loopback port with a throwaway data
//!   directory, killed and removed when dropped or when the process ends; the tests start
//!   one per test binary, and may kill it and start it again on the same data.
//!
//! # When a connection needs a reset, and when it is discarded
//! | the caller left | known from | the pool | the manager does |
//! |---|---|---|---|
//! | nothing open | | keeps it | nothing |
//! | an open transaction | the server's `SERVER_STATUS_IN_TRANS` flag | resets it | `ROLLBACK` |
//! | a result not read to its end | [`MysqlConn::query_iter`]'s [`Rows`] | resets it | reads it off, `ROLLBACK` |
//! | a changed session: `SET`, `@var`, `USE`, temporary tables, `GET_LOCK`, autocommit off | the statement's text ([`statement`]); `AUTOCOMMIT` flag | resets it | `COM_RESET_CONNECTION`, then the init statements |
//! | a command cut by a dropped future | the helper's flag, left set | discards it | `KILL QUERY <id>` on a fresh connection, then closes the socket |
//! | a connection error | `mysql_async`'s error | discards it | closes the socket |
//!
//! # Decisions
//! - A connection cut mid-command is never reset and reused: the protocol state is unknown
//!   (half a result on the wire, or a statement still running). Its statement is stopped
//!   with `KILL QUERY` because closing the socket does not stop it: MariaDB 10.11 ran a
//!   `SELECT SLEEP(5)` whose client was killed after 0.3 s to its end, 5 s, holding its
//!   transaction's locks all the while. With the kill the sleep is gone 2 ms after the
//!   next caller's answer (`tests/cut_command.rs`). The kill opens a connection of its own
//!   (0.3 ms on loopback), in the pool's close task, never on a caller's path.
//! - Each reset step runs only for its own dirt, since every step is a round trip
//!   (measured, release build, loopback, 300 resets each): an open transaction alone is one
//!   `ROLLBACK`, p50 27 µs; a changed session is `COM_RESET_CONNECTION` plus one init
//!   statement, p50 55 µs; both, p50 113 µs. A `COM_PING` is 24 µs.
//! - Session changes are read from each statement's text, conservatively (a false yes costs
//!   one reset): the server would say exactly what changed through session tracking, but
//!   `mysql_async` does not ask for that capability. Transactions are not guessed: the
//!   server's status flags report them after every command.
//! - The init statements run in the order given, by [`MysqlConn::run_init`], after connect
//!   and after every session reset; `mysql_async`'s own `setup` option (statements run
//!   after connect and `Conn::reset`) runs them last first.
//! - The pool resets a dirty connection in a task of its own before anyone else sees it;
//!   `check` still refuses a dirty connection without I/O, as a net under any other way back
//!   into the pool, since a dirty one handed out would commit the dropped caller's
//!   half-transaction at its next `START TRANSACTION` (the load program prints how often
//!   the net caught one: `handed out dirty: 0` in every run). [`begin`](MysqlConn::begin)
//!   refuses an open transaction for the same reason.
//! - A `Rows` read to its end leaves nothing to reset; one dropped early leaves its rows to
//!   the reset, which reads them off (bounded by the pool's `reset_timeout`) rather than
//!   discarding a connection that is still in step with the server.
//! - Connections go over TCP to the URL's address: `mysql_async` reconnects to a loopback
//!   server through its Unix socket by default (`prefer_socket`), which took connects from
//!   p50 306 µs to 468 µs (100 each).
//! - `mysql_async`'s own pool is unused; its recycler is where the rules above come from
//!   (it drains, rolls back and resets on return, and drops a connection a cut command
//!   left marked disconnected), with three differences: it resets every connection on
//!   return, it reuses a connection after draining a cut result, and it tracks only
//!   transactions begun through its `Transaction` type.
//! - A reset only for a connection that needs one, not on every return as `mysql_async`'s
//!   pool does (`COM_RESET_CONNECTION`, which also drops the connection's prepared
//!   statements): side by side over one server (`--bench`, [`bench`](mod@bench); point
//!   selects from 64 tasks over 8 connections, three runs on 2 cores beside other
//!   builds), ours served 2.60-3.16x its selects per second with no checkout dirtied (1
//!   round trip per select to its 3: prepare, execute, reset) and 1.41-1.75x with half of
//!   them dirtied (2.5 to 3.5); p99 10-16 ms against 24-32 ms clean.
//! - `--bench` without `--url` starts a throwaway `mariadbd` ([`throwaway`], the tests'
//!   server), so its one command reproduces its figures wherever MariaDB is installed;
//!   with `--url` it measures that server (creating its database when missing).
//!
//! A package of its own (`examples/mysql/`), so that `mysql_async` is built for this
//! program and its tests only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bank;
pub mod bench;
pub mod conn;
pub mod error;
pub mod manager;
pub mod rows;
pub mod statement;
pub mod throwaway;

pub use conn::{ConnState, MysqlConn};
pub use error::{Error, Target};
pub use manager::{ManagerCounts, MysqlManager};
pub use rows::Rows;
