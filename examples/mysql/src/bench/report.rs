//! [`Report`]: the rates, ratios, latencies and round trips of a `--bench` run, and the table
//! it prints.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use crate::Target;
use crate::bank::percentile;

use super::{Args, ROWS, Side};

/// Commands one pool's operations cost the server, over some span of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commands {
    /// `COM_STMT_PREPARE` (the server's `Com_stmt_prepare`).
    pub prepare: u64,
    /// `COM_STMT_EXECUTE` (`Com_stmt_execute`).
    pub execute: u64,
    /// `SET` statements (`Com_set_option`).
    pub set: u64,
    /// Resets on return (`COM_RESET_CONNECTION`), counted by the pool.
    pub reset: u64,
    /// Pings on checkout (`COM_PING`), counted by the pool.
    pub ping: u64,
}

impl Commands {
    /// The server's counters now (through `observer`, outside both pools) and `side`'s.
    ///
    /// # Errors
    /// The status query failed.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped mid-query, `observer` is left mid-command.
    pub async fn read(
        observer: &mut mysql_async::Conn,
        side: &Side,
    ) -> Result<Commands, mysql_async::Error> {
        use mysql_async::prelude::Queryable;
        let rows: Vec<(String, u64)> = observer
            .query(
                "SHOW GLOBAL STATUS WHERE Variable_name IN \
                 ('Com_stmt_prepare', 'Com_stmt_execute', 'Com_set_option')",
            )
            .await?;
        let value = |name: &str| {
            rows.iter()
                .find(|(variable, _)| variable.eq_ignore_ascii_case(name))
                .map_or(0, |(_, value)| *value)
        };
        Ok(Commands {
            prepare: value("Com_stmt_prepare"),
            execute: value("Com_stmt_execute"),
            set: value("Com_set_option"),
            reset: side.resets(),
            ping: side.pings(),
        })
    }

    /// Every round trip counted.
    pub fn total(&self) -> u64 {
        self.prepare + self.execute + self.set + self.reset + self.ping
    }
}

impl Add for Commands {
    type Output = Commands;
    fn add(self, other: Commands) -> Commands {
        Commands {
            prepare: self.prepare + other.prepare,
            execute: self.execute + other.execute,
            set: self.set + other.set,
            reset: self.reset + other.reset,
            ping: self.ping + other.ping,
        }
    }
}

impl Sub for Commands {
    type Output = Commands;
    fn sub(self, other: Commands) -> Commands {
        Commands {
            prepare: self.prepare.saturating_sub(other.prepare),
            execute: self.execute.saturating_sub(other.execute),
            set: self.set.saturating_sub(other.set),
            reset: self.reset.saturating_sub(other.reset),
            ping: self.ping.saturating_sub(other.ping),
        }
    }
}

/// One pool's rounds of one mode.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SideReport {
    /// Operations per second, per round.
    pub rates: Vec<f64>,
    /// Operations over all rounds.
    pub ops: u64,
    /// Latency of an operation (checkout, statements, return), over all rounds: p50.
    pub p50: Duration,
    /// The same, p99.
    pub p99: Duration,
    /// Round trips over all rounds.
    pub commands: Commands,
}

impl SideReport {
    /// From the rates per round, every latency (sorted) and the commands.
    pub fn new(rates: Vec<f64>, sorted: &[Duration], commands: Commands) -> SideReport {
        SideReport {
            rates,
            ops: sorted.len() as u64,
            p50: percentile(sorted, 0.50),
            p99: percentile(sorted, 0.99),
            commands,
        }
    }

    /// The median rate over the rounds.
    pub fn median_rate(&self) -> f64 {
        median(&self.rates)
    }

    /// Round trips per operation: (prepare, execute, SET, reset, ping, all).
    pub fn per_op(&self) -> [f64; 6] {
        let c = &self.commands;
        let ops = self.ops.max(1) as f64;
        [c.prepare, c.execute, c.set, c.reset, c.ping, c.total()].map(|n| n as f64 / ops)
    }
}

/// Both pools' rounds with one share of checkouts dirtied.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModeReport {
    /// The share of checkouts that ran `SET @x = 1` first.
    pub dirty_rate: f64,
    /// Our pool.
    pub ours: SideReport,
    /// mysql_async's pool.
    pub theirs: SideReport,
    /// Our rate over theirs, per round.
    pub ratios: Vec<f64>,
}

impl ModeReport {
    /// Both sides' rounds (in the same order), and the ratios of their rates.
    pub fn new(dirty_rate: f64, ours: SideReport, theirs: SideReport) -> ModeReport {
        let ratios = ours
            .rates
            .iter()
            .zip(&theirs.rates)
            .map(|(ours, theirs)| ours / theirs)
            .collect();
        ModeReport {
            dirty_rate,
            ours,
            theirs,
            ratios,
        }
    }

    /// Our rate over theirs: (median, min, max) over the rounds.
    pub fn ratio(&self) -> (f64, f64, f64) {
        let min = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.ratios.iter().copied().fold(0.0, f64::max);
        (median(&self.ratios), min, max)
    }
}

/// What a `--bench` run measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The settings it ran with.
    pub args: Args,
    /// Where it ran.
    pub target: Target,
    /// The server's version string.
    pub server_version: String,
    /// Whether the server was a throwaway one, started for the run.
    pub throwaway: bool,
    /// One per share of checkouts dirtied.
    pub modes: Vec<ModeReport>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args = &self.args;
        writeln!(
            f,
            "{} at {}{} ({})",
            if self.server_version.contains("MariaDB") {
                "MariaDB"
            } else {
                "MySQL"
            },
            self.target.addr,
            if self.throwaway {
                ", a throwaway server started for the run"
            } else {
                ""
            },
            self.server_version,
        )?;
        writeln!(
            f,
            "point selects by primary key (prepared, {ROWS} rows), {} tasks over {} connections \
             per pool, {} rounds of {:?} per pool, the pools alternating",
            args.tasks, args.pool_size, args.rounds, args.round,
        )?;
        writeln!(
            f,
            "{:<10} {:>6} {:>11} {:>17} {:>28} {:>10} {:>16}",
            "dirtied",
            "rounds",
            "ours ops/s",
            "mysql_async ops/s",
            "ours/mysql_async (min-max)",
            "p99 ours",
            "p99 mysql_async",
        )?;
        for mode in &self.modes {
            let (median, min, max) = mode.ratio();
            writeln!(
                f,
                "{:<10} {:>6} {:>11.0} {:>17.0} {:>28} {:>10} {:>16}",
                format!("{:.0} %", mode.dirty_rate * 100.0),
                mode.ratios.len(),
                mode.ours.median_rate(),
                mode.theirs.median_rate(),
                format!("{median:.2} ({min:.2}-{max:.2})"),
                format!("{:.2?}", mode.ours.p99),
                format!("{:.2?}", mode.theirs.p99),
            )?;
        }
        write!(
            f,
            "round trips per operation: all = prepare + execute + SET + reset + ping"
        )?;
        for mode in &self.modes {
            for (name, side) in [("ours", &mode.ours), ("mysql_async", &mode.theirs)] {
                let [prepare, execute, set, reset, ping, all] = side.per_op();
                write!(
                    f,
                    "\n{:<10} {name:<12} {all:.2} = {prepare:.2} + {execute:.2} + {set:.2} + \
                     {reset:.2} + {ping:.2}  (p50 {:.2?})",
                    format!("{:.0} %", mode.dirty_rate * 100.0),
                    side.p50,
                )?;
            }
        }
        Ok(())
    }
}
