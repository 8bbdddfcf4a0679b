//! `--bench`: our pool and `mysql_async`'s own pool side by side over one server, in
//! alternating rounds, with no checkout dirtied and with half of them dirtied.
//!
//! Each operation is a checkout, `SET @x = 1` when dirtied, a point select by primary key
//! (a prepared statement) and the return; `tasks` tasks loop over it for a round's length,
//! through `pool_size` connections. Each round runs both pools one after the other on the
//! same server, ours first in odd rounds and second in even ones, so that a machine whose
//! load swings slows both alike; the ratio of their rates is taken per round, then its
//! median. Before each mode's rounds, each pool runs a short round unrecorded, so both hold
//! their connections and prepared statements.
//!
//! Round trips are counted per operation: prepares, executes and `SET`s from the server's
//! own counters (`SHOW GLOBAL STATUS`, read between runs), resets and pings from each pool.

mod args;
mod report;
mod side;

use std::time::{Duration, Instant};

use pool::BuildError;

pub use args::{Args, USAGE};
pub use report::{Commands, ModeReport, Report, SideReport};
pub use side::{DIRTY, OpError, SELECT, Side};

use crate::bank::Rng;
use crate::throwaway::{MariaDb, StartError};
use crate::{Error, MysqlManager, Target};

/// Rows of the table the point selects read.
pub const ROWS: u32 = 1000;

/// The share of checkouts dirtied in each mode, in the order they run.
pub const DIRTY_RATES: [f64; 2] = [0.0, 0.5];

/// An operation that takes longer has hung: the run stops with [`OpError::Hung`].
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// No `--url`, and no throwaway server could be started.
    #[error("no --url given, and no throwaway mariadbd could be started")]
    Start(#[from] StartError),
    /// The URL names no database.
    #[error("the URL names no database (mysql://user@host:port/database)")]
    NoDatabase,
    /// Setting up, or reading the server's counters, failed.
    #[error(transparent)]
    Mysql(#[from] Error),
    /// Our pool's settings were refused.
    #[error("cannot build the pool")]
    Build(#[from] BuildError),
    /// An operation failed: a benchmark with errors measures nothing.
    #[error("an operation through {side} failed")]
    Op {
        /// `ours` or `mysql_async`.
        side: &'static str,
        /// What failed.
        #[source]
        source: OpError,
    },
    /// A task panicked.
    #[error("a task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// One pool's run in one round.
struct Run {
    elapsed: Duration,
    latencies: Vec<Duration>,
    commands: Commands,
}

/// Runs the benchmark: starts a throwaway server unless `args.url` names one, fills the
/// table, runs each mode of [`DIRTY_RATES`] for `args.rounds` rounds, closes both pools.
/// Each round's rates go to standard error as it ends.
///
/// # Errors
/// [`BenchError`]; an operation that fails or hangs (10 s) ends the run.
///
/// # Cancel safety
/// Dropped, the tasks of the round under way run on (each holds a clone of its pool), and
/// a throwaway server is killed.
pub async fn run(args: &Args) -> Result<Report, BenchError> {
    let throwaway = match args.url {
        Some(_) => None,
        None => Some(MariaDb::start().await?),
    };
    let url = match (&args.url, &throwaway) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url("pool_bench"),
        (None, None) => unreachable!("started above"),
    };
    let manager = MysqlManager::new(&url)?;
    let target = Target::of(manager.opts());
    let version = prepare(&manager, &target).await?;
    let classify = |error| Error::classify(error, &target);
    let mut observer = mysql_async::Conn::new(manager.opts().clone())
        .await
        .map_err(classify)?;

    let mut modes = Vec::new();
    for dirty_rate in DIRTY_RATES {
        let sides = [
            Side::ours(manager.clone(), args.pool_size)?,
            Side::theirs(&manager, args.pool_size),
        ];
        for side in &sides {
            round(side, args, dirty_rate, args.round / 4, args.seed).await?;
        }
        let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
        for index in 0..args.rounds {
            let order = if index % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let side = &sides[i];
                let before = Commands::read(&mut observer, side)
                    .await
                    .map_err(classify)?;
                let seed = args.seed ^ (index as u64).wrapping_mul(0x2545_F491);
                let (elapsed, latencies) = round(side, args, dirty_rate, args.round, seed).await?;
                let after = Commands::read(&mut observer, side)
                    .await
                    .map_err(classify)?;
                runs[i].push(Run {
                    elapsed,
                    latencies,
                    commands: after - before,
                });
            }
            let rate = |run: &Run| run.latencies.len() as f64 / run.elapsed.as_secs_f64();
            let (ours, theirs) = (rate(&runs[0][index]), rate(&runs[1][index]));
            eprintln!(
                "{:.0} % dirtied, round {}/{}: ours {ours:.0} ops/s, \
                 mysql_async {theirs:.0} ops/s ({:.2})",
                dirty_rate * 100.0,
                index + 1,
                args.rounds,
                ours / theirs,
            );
        }
        for side in sides {
            side.close().await;
        }
        let [ours, theirs] = runs;
        modes.push(ModeReport::new(
            dirty_rate,
            summarize(ours),
            summarize(theirs),
        ));
    }
    let _ = observer.disconnect().await;
    drop(throwaway);
    Ok(Report {
        args: args.clone(),
        target,
        server_version: version,
        throwaway: args.url.is_none(),
        modes,
    })
}

/// Creates the database when missing and (re)creates `bench_rows` with [`ROWS`] rows.
/// Returns the server's version.
async fn prepare(manager: &MysqlManager, target: &Target) -> Result<String, BenchError> {
    let database = target.database.as_deref().ok_or(BenchError::NoDatabase)?;
    let rows: Vec<String> = (1..=ROWS).map(|id| format!("({id}, {id})")).collect();
    Ok(crate::bank::create_table(manager, target, database, "bench_rows", &rows).await?)
}

/// `args.tasks` tasks loop over [`Side::op`] on `side` for `length`, then finish the
/// operation they are in. Returns the time from the start to the last task's end, and
/// every operation's latency.
async fn round(
    side: &Side,
    args: &Args,
    dirty_rate: f64,
    length: Duration,
    seed: u64,
) -> Result<(Duration, Vec<Duration>), BenchError> {
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..args.tasks)
        .map(|task| {
            let side = side.clone();
            let mut rng = Rng::new(seed ^ (task as u64).wrapping_mul(0x9E37_79B9));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let id = 1 + rng.below(u64::from(ROWS)) as u32;
                    let dirty = rng.chance(dirty_rate);
                    let op_started = Instant::now();
                    match tokio::time::timeout(OP_TIMEOUT, side.op(id, dirty)).await {
                        Ok(Ok(())) => latencies.push(op_started.elapsed()),
                        Ok(Err(error)) => return Err(error),
                        Err(_) => return Err(OpError::Hung(OP_TIMEOUT)),
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        let ops = task.await?.map_err(|source| BenchError::Op {
            side: side.name(),
            source,
        })?;
        latencies.extend(ops);
    }
    Ok((started.elapsed(), latencies))
}

/// One pool's rounds of one mode, summed up.
fn summarize(runs: Vec<Run>) -> SideReport {
    let rates = runs
        .iter()
        .map(|run| run.latencies.len() as f64 / run.elapsed.as_secs_f64())
        .collect();
    let mut commands = Commands::default();
    let mut latencies = Vec::new();
    for run in runs {
        commands = commands + run.commands;
        latencies.extend(run.latencies);
    }
    latencies.sort_unstable();
    SideReport::new(rates, &latencies, commands)
}
