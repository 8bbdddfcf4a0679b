//! The load program as a library: a table of accounts, tasks moving money between them in
//! transactions through one pool, some of them dropped mid-way, and a [`Report`] that says
//! whether any money appeared or vanished.
//!
//! `src/main.rs` parses the flags ([`Args::parse`]) and prints the report; the tests call
//! [`run`] directly.

mod args;
mod report;
mod transfer;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder};
use pool::{BuildError, Pool, PoolError};

pub use args::{Args, USAGE};
pub use report::Report;
pub use transfer::{MAX_RETRIES, Rng, TransferError, Transferred, cut_after, transfer};

use crate::{Error, MysqlManager, Target};

/// Each account's balance before the run.
pub const START_BALANCE: i64 = 1000;

/// The pool's `leak_threshold`: a connection held longer is reported (a `tracing` warning
/// naming where it was taken) and counted in the pool's `Counters::leaks`. A transfer holds
/// its connection for a few milliseconds.
pub const LEAK_THRESHOLD: Duration = Duration::from_secs(1);

/// The pool's `reset_timeout`: a reset is one to three round trips on loopback.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(2);

/// The init statement of the program's connections, run again after every session reset: a
/// lock held by a connection that should not hold one shows up as errors within 5 s, not
/// as transfers stuck for the server's default 50 s.
pub const INIT: &str = "SET SESSION innodb_lock_wait_timeout = 5";

/// A dropped transfer is cut at one of its first this many await points.
const MAX_CUT: u64 = 8;

/// How long the report waits, after the transfers, for the server to show the pool's
/// connections only and no open transaction (discarded connections close in the
/// background).
const SETTLE: Duration = Duration::from_secs(3);

/// Why [`run`] could not run the transfers.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The URL names no database.
    #[error("the URL names no database (mysql://user@host:port/database)")]
    NoDatabase,
    /// Talking to the server failed (setting up, or reading the total).
    #[error(transparent)]
    Mysql(#[from] Error),
    /// The pool's settings were refused.
    #[error("cannot build the pool")]
    Build(#[from] BuildError),
    /// The pool gave no connection for the total.
    #[error("no connection from the pool")]
    Checkout(#[from] PoolError<Error>),
    /// A task panicked.
    #[error("a task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// The connection options for the table's set-up: the URL's, without its database (which
/// may not exist yet).
pub(crate) fn setup_opts(opts: &Opts) -> Opts {
    OptsBuilder::from_opts(opts.clone())
        .db_name(None::<String>)
        .into()
}

/// `database` quoted as an identifier.
pub(crate) fn quoted(database: &str) -> String {
    format!("`{}`", database.replace('`', "``"))
}

/// Creates the database when missing and (re)creates `accounts` with `accounts` rows of
/// [`START_BALANCE`], over a connection of its own. Returns the server's version.
///
/// # Errors
/// [`RunError::NoDatabase`] when the manager's URL names none; a failed statement.
///
/// # Cancel safety
/// Cancel safe: the table may be left half made, as a failed run leaves it.
pub async fn prepare(manager: &MysqlManager, accounts: usize) -> Result<String, RunError> {
    let target = Target::of(manager.opts());
    let database = target.database.clone().ok_or(RunError::NoDatabase)?;
    let rows: Vec<String> = (1..=accounts)
        .map(|id| format!("({id}, {START_BALANCE})"))
        .collect();
    Ok(create_table(manager, &target, &database, "accounts", &rows).await?)
}

/// Creates `database` when missing and (re)creates `table` (`id INT PRIMARY KEY, balance
/// BIGINT NOT NULL`, InnoDB) with `rows` (each `(id, balance)`), over a connection of its
/// own. Returns the server's version.
///
/// # Errors
/// A failed connect or statement, classified against `target`.
///
/// # Cancel safety
/// Cancel safe: the table may be left half made, as a failed run leaves it.
pub async fn create_table(
    manager: &MysqlManager,
    target: &Target,
    database: &str,
    table: &str,
    rows: &[String],
) -> Result<String, Error> {
    let classify = |error| Error::classify(error, target);
    let mut conn = mysql_async::Conn::new(setup_opts(manager.opts()))
        .await
        .map_err(classify)?;
    let db = quoted(database);
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(classify)?;
    for statement in [
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!("DROP TABLE IF EXISTS {db}.{table}"),
        format!(
            "CREATE TABLE {db}.{table} (id INT PRIMARY KEY, balance BIGINT NOT NULL) \
             ENGINE=InnoDB"
        ),
        format!("INSERT INTO {db}.{table} VALUES {}", rows.join(", ")),
    ] {
        conn.query_drop(statement).await.map_err(classify)?;
    }
    let _ = conn.disconnect().await;
    Ok(version.unwrap_or_default())
}

/// What one task saw.
#[derive(Default)]
struct Tally {
    committed: u64,
    cancelled: u64,
    errors: u64,
    first_error: Option<String>,
    retries: u64,
    latencies: Vec<Duration>,
}

/// An error with its causes, on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text = format!("{text}: {inner_text}");
        }
        cause = inner.source();
    }
    text
}

/// One task: `count` transfers between random accounts, a `cancel_rate` share of them
/// dropped at a random await point.
async fn run_task(pool: Pool<MysqlManager>, args: Args, task: usize, count: usize) -> Tally {
    let mut rng = Rng::new(args.seed ^ (task as u64).wrapping_mul(0x9E37_79B9));
    let accounts = args.accounts as u64;
    let mut tally = Tally::default();
    for _ in 0..count {
        let from = rng.below(accounts);
        let to = (from + 1 + rng.below(accounts - 1)) % accounts;
        let amount = 1 + rng.below(100) as i64;
        let cut = rng
            .chance(args.cancel_rate)
            .then(|| 1 + rng.below(MAX_CUT) as u32);
        let started = Instant::now();
        let moving = transfer(&pool, from as u32 + 1, to as u32 + 1, amount);
        let outcome = match cut {
            Some(waits) => cut_after(moving, waits).await,
            None => Some(moving.await),
        };
        match outcome {
            None => tally.cancelled += 1,
            Some(Ok(done)) => {
                tally.committed += 1;
                tally.retries += u64::from(done.retries);
                tally.latencies.push(started.elapsed());
            }
            Some(Err(error)) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| chain(&error));
            }
        }
    }
    tally
}

/// The observer's view of the database: (open transactions, connections), itself aside.
async fn server_view(observer: &mut mysql_async::Conn) -> Result<(u64, u64), mysql_async::Error> {
    let transactions: Option<u64> = observer
        .query_first(
            "SELECT COUNT(*) FROM information_schema.innodb_trx t \
             JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id \
             WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()",
        )
        .await?;
    let connections: Option<u64> = observer
        .query_first(
            "SELECT COUNT(*) FROM information_schema.processlist \
             WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
        )
        .await?;
    Ok((transactions.unwrap_or(0), connections.unwrap_or(0)))
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Sets up the table, runs the transfers through a pool of `args.pool_size`, reads the
/// total, waits (up to 3 s) for the server to show the pool's connections only and no open
/// transaction, closes the pool and reports.
///
/// # Errors
/// [`RunError`] when the set-up, the pool or the final read fail; failed transfers are
/// counted in the report, not returned.
///
/// # Cancel safety
/// Dropped, the tasks already spawned run on (each holds a clone of the pool) and the pool
/// is not closed: drop it only to end the program.
pub async fn run(args: &Args) -> Result<Report, RunError> {
    let manager = MysqlManager::new(&args.url)?.init([INIT]);
    let server_version = prepare(&manager, args.accounts).await?;
    let target = Target::of(manager.opts());
    let pool = Pool::builder(manager.clone())
        .max_size(args.pool_size)
        .connect_timeout(Duration::from_secs(5))
        .check_timeout(Duration::from_secs(2))
        .wait_timeout(Duration::from_secs(30))
        .reset_timeout(RESET_TIMEOUT)
        .leak_threshold(LEAK_THRESHOLD)
        .build()?;

    let started = Instant::now();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|task| {
            let count =
                args.transfers / args.tasks + usize::from(task < args.transfers % args.tasks);
            tokio::spawn(run_task(pool.clone(), args.clone(), task, count))
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        total.committed += tally.committed;
        total.cancelled += tally.cancelled;
        total.errors += tally.errors;
        total.retries += tally.retries;
        total.latencies.extend(tally.latencies);
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed();
    total.latencies.sort_unstable();

    let balance: Option<i64> = {
        let mut conn = pool.get().await?;
        conn.query_first("SELECT CAST(SUM(balance) AS SIGNED) FROM accounts")
            .await?
    };

    // Discarded connections close (and their statements are killed), and dirty ones are
    // reset, in tasks of the pool's; wait a little for the server to show only the pool's
    // connections and no transaction.
    let classify = |error| Error::classify(error, &target);
    let mut observer = mysql_async::Conn::new(manager.opts().clone())
        .await
        .map_err(classify)?;
    let settling = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (open_transactions, server_connections) = loop {
        tick.tick().await;
        let (transactions, connections) = server_view(&mut observer).await.map_err(classify)?;
        let settled = transactions == 0 && connections == pool.status().size as u64;
        if settled || settling.elapsed() > SETTLE {
            break (transactions, connections);
        }
    };
    let settled_in = settling.elapsed();
    let _ = observer.disconnect().await;

    let status = pool.status();
    pool.close().await;
    Ok(Report {
        args: args.clone(),
        target,
        server_version,
        committed: total.committed,
        cancelled: total.cancelled,
        errors: total.errors,
        first_error: total.first_error,
        retries: total.retries,
        elapsed,
        p50: percentile(&total.latencies, 0.50),
        p99: percentile(&total.latencies, 0.99),
        total: balance.unwrap_or(0),
        expected_total: args.accounts as i64 * START_BALANCE,
        pool: status,
        manager: manager.counts(),
        open_transactions,
        server_connections,
        settled_in,
    })
}
