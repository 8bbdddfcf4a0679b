//! [`Report`]: what a run did and what it left on the server, and the summary it prints.

use std::fmt;
use std::time::Duration;

use crate::{ManagerCounts, Target};

use super::{Args, LEAK_THRESHOLD};

/// What a run did and what it left on the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The settings it ran with.
    pub args: Args,
    /// Where it ran.
    pub target: Target,
    /// The server's version string.
    pub server_version: String,
    /// Transfers that committed.
    pub committed: u64,
    /// Transfers dropped mid-way on purpose (`--cancel-rate`).
    pub cancelled: u64,
    /// Transfers that failed.
    pub errors: u64,
    /// The first error's text, with its causes.
    pub first_error: Option<String>,
    /// Runs again after deadlocks or lock wait timeouts.
    pub retries: u64,
    /// From the first transfer to the last.
    pub elapsed: Duration,
    /// Latency of committed transfers (checkout and retries included): p50.
    pub p50: Duration,
    /// The same, p99.
    pub p99: Duration,
    /// The sum of all balances after the run.
    pub total: i64,
    /// The sum before: `accounts * 1000`.
    pub expected_total: i64,
    /// The pool's status after the run (and the settling).
    pub pool: pool::Status,
    /// The manager's counts after the run.
    pub manager: ManagerCounts,
    /// Transactions open in the database after the run, the observer's aside
    /// (`information_schema.innodb_trx`).
    pub open_transactions: u64,
    /// Connections in the database after the run, the observer's aside
    /// (`information_schema.processlist`).
    pub server_connections: u64,
    /// How long the server took to show only the pool's connections and no transaction
    /// (at most 3 s).
    pub settled_in: Duration,
}

impl Report {
    /// Transfers per second that committed.
    pub fn throughput(&self) -> f64 {
        self.committed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether the money is all there: the total is `accounts * 1000`.
    pub fn total_kept(&self) -> bool {
        self.total == self.expected_total
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args = &self.args;
        let database = self.target.database.as_deref().unwrap_or("");
        writeln!(
            f,
            "{} at {} as {:?}, database {database} ({})",
            if self.server_version.contains("MariaDB") {
                "MariaDB"
            } else {
                "MySQL"
            },
            self.target.addr,
            self.target.user,
            self.server_version,
        )?;
        writeln!(
            f,
            "{} tasks, {} transfers over {} accounts, pool of {}, cancel rate {:.2} (seed {}): {:.2?}",
            args.tasks,
            args.transfers,
            args.accounts,
            args.pool_size,
            args.cancel_rate,
            args.seed,
            self.elapsed,
        )?;
        writeln!(
            f,
            "throughput: {:.0} transfers/s  latency (committed; checkout and retries included) p50 {:.2?} p99 {:.2?}",
            self.throughput(),
            self.p50,
            self.p99,
        )?;
        writeln!(
            f,
            "committed: {}  cancelled: {}  errors: {}  deadlock retries: {}",
            self.committed, self.cancelled, self.errors, self.retries,
        )?;
        if let Some(error) = &self.first_error {
            writeln!(f, "first error: {error}")?;
        }
        let m = &self.manager;
        let c = &self.pool.counters;
        writeln!(
            f,
            "resets: {} (failed {})  discarded: {} (broken {}, failed checks {}, failed resets {})  leaks: {} (held > {:?})",
            c.resets,
            c.reset_failures,
            c.broken + c.check_failures + c.reset_failures,
            c.broken,
            c.check_failures,
            c.reset_failures,
            c.leaks,
            LEAK_THRESHOLD,
        )?;
        writeln!(
            f,
            "cut mid-command: {} closed, {} statements killed ({} kills failed)  handed out dirty: {}  pool: created {} closed {} size {}",
            m.cut_closed,
            m.kills,
            m.kill_failures,
            m.dirty_refused,
            c.created,
            c.closed,
            self.pool.size,
        )?;
        writeln!(
            f,
            "server after the run: {} open transactions, {} connections in {database} (the pool's {}), seen in {:.2?}",
            self.open_transactions, self.server_connections, self.pool.size, self.settled_in,
        )?;
        write!(
            f,
            "total balance: {} of {}: {}",
            self.total,
            self.expected_total,
            if self.total_kept() {
                "kept"
            } else {
                "NOT KEPT"
            },
        )
    }
}
