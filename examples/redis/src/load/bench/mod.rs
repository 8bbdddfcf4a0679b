//! `--bench`: our [`ClusterClient`] beside the `redis` crate's own cluster client
//! ([`redis::cluster_async::ClusterConnection`]) on one Redis Cluster, in alternating rounds
//! of the same work.
//!
//! A request is `SET key value EX 60` then `GET key` (a pair; no `WAIT`), the keys named as
//! the load program's (`mux-pool:bench:<run>:<round>:<client>:<task>:<i>`), so that they
//! spread over every slot by their hash, and every `SET` of either client writes a new key. In a
//! round, `tasks` tasks run `requests` pairs each through one client, then through the
//! other: ours first in odd rounds and second in even ones, so that a machine whose load
//! swings slows both alike. The ratio of the two rates is taken per round, then its median.
//! Both clients connect before the rounds, and each runs one round unrecorded (its
//! connections open, its map known).
//!
//! A rate is commands per second (two per pair read back) from a round's start to its last
//! task's end; a latency is one pair's, end to end, and p50/p99 are over every recorded
//! round. Beside them, per pair: the CPU time of this process (the client), and the CPU
//! time and socket reads of the servers ([`servers`]). Every failed pair and every `GET`
//! that reads another value is counted and reported: a run with any measures nothing
//! ([`Report::errors`]).
//!
//! This module depends on the library alone, not on the rest of the load program, so that
//! its test (`tests/cluster_bench.rs`) compiles it in and calls [`run`]; hence its own
//! [`report::percentile`] and [`chain`].

mod report;
mod servers;
mod side;

use std::time::{Duration, Instant};

use redis_example::cluster::slots::ranges_text;
use redis_example::cluster::{ClusterClient, ConnectError};

pub use report::{Report, SideReport};
pub use side::Side;

use redis_example::report::{chain, percentile, run_id};
use servers::{Servers, Spent};

/// The benchmark's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seed nodes of the cluster (`redis://host:port`), for both clients.
    pub seeds: Vec<String>,
    /// Concurrent tasks per client (the load program's `--tasks`, 64 by default).
    pub tasks: usize,
    /// Pairs per task per round (`--requests`, 200 by default).
    pub requests: usize,
    /// Recorded rounds (`--rounds`, 10 by default), after a warm-up round each.
    pub rounds: usize,
    /// Our client's connections per node (`--pool`); `None`: the builder's default.
    pub max_size: Option<usize>,
    /// Our client's deadline per request (`--deadline`, 5 s: the builder's default).
    pub deadline: Duration,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Our client could not connect.
    #[error("our client could not reach the cluster")]
    Ours(#[source] ConnectError),
    /// The redis crate's client could not connect.
    #[error("redis-rs's cluster client could not reach the cluster")]
    Theirs(#[source] redis::RedisError),
    /// A node's `INFO` counters could not be read.
    #[error("could not read the servers' INFO counters")]
    Servers(#[source] redis::RedisError),
    /// The cluster leaves slots without a node: the keys go to every slot.
    #[error("no node of the cluster serves slots {0}: the bench writes keys in every slot")]
    Uncovered(String),
    /// A task panicked.
    #[error("a task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// One client's run in one round.
#[derive(Default)]
struct Round {
    elapsed: Duration,
    /// The process's CPU time over the round, when the system tells it.
    cpu: Option<Duration>,
    /// What the servers spent over the round.
    servers: Spent,
    latencies: Vec<Duration>,
    errors: u64,
    mismatches: u64,
    first_error: Option<String>,
}

impl Round {
    fn add(&mut self, other: Round) {
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a + b);
        self.servers.cpu += other.servers.cpu;
        self.servers.reads += other.servers.reads;
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.mismatches += other.mismatches;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// Commands per second: two per pair read back.
    fn rate(&self) -> f64 {
        (2 * self.latencies.len()) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Connects both clients, runs a warm-up round and `settings.rounds` recorded rounds of
/// each, alternating, then closes them. Each round's rates go to standard error as it ends.
/// A failed pair does not stop the run: it is counted in the report.
///
/// # Errors
/// [`BenchError`]: a client could not connect, slots are uncovered, a task panicked.
///
/// # Cancel safety
/// Dropped, the tasks of the round under way run on until their pairs end (each holds a
/// clone of its client); the redis crate's connection closes with its last clone.
pub async fn run(settings: &Settings) -> Result<Report, BenchError> {
    let mut builder = ClusterClient::builder(&settings.seeds).deadline(settings.deadline);
    if let Some(max_size) = settings.max_size {
        builder = builder.max_size(max_size);
    }
    let ours = builder.connect().await.map_err(BenchError::Ours)?;
    let uncovered = ours.uncovered();
    if !uncovered.is_empty() {
        ours.close().await;
        return Err(BenchError::Uncovered(ranges_text(&uncovered)));
    }
    let theirs = match redis::cluster::ClusterClient::new(settings.seeds.clone()) {
        Ok(client) => client.get_async_connection().await,
        Err(error) => Err(error),
    };
    let theirs = match theirs {
        Ok(conn) => conn,
        Err(error) => {
            ours.close().await;
            return Err(BenchError::Theirs(error));
        }
    };
    let map = ours.slot_map();
    let nodes: Vec<_> = map
        .shards()
        .iter()
        .flat_map(|shard| std::iter::once(&shard.primary).chain(&shard.replicas))
        .cloned()
        .collect();
    let mut servers = match Servers::connect(&nodes).await {
        Ok(servers) => servers,
        Err(error) => {
            ours.close().await;
            return Err(BenchError::Servers(error));
        }
    };
    let sides = [Side::Ours(ours.clone()), Side::Theirs(theirs)];

    let run = run_id();
    let mut warm_ups = [Round::default(), Round::default()];
    for (side, warm_up) in sides.iter().zip(&mut warm_ups) {
        *warm_up = round(side, settings, run, 0).await?;
    }
    let mut rounds: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
    for index in 0..settings.rounds {
        let order = if index % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let before = servers.read().await.map_err(BenchError::Servers)?;
            let mut measured = round(&sides[i], settings, run, index + 1).await?;
            measured.servers = servers.read().await.map_err(BenchError::Servers)? - before;
            rounds[i].push(measured);
        }
        let (ours_rate, theirs_rate) = (rounds[0][index].rate(), rounds[1][index].rate());
        eprintln!(
            "round {}/{}: ours {ours_rate:.0} commands/s, redis-rs {theirs_rate:.0} ({:.2})",
            index + 1,
            settings.rounds,
            ours_rate / theirs_rate,
        );
    }

    let ours_status = ours.status();
    for side in sides {
        side.close().await;
    }
    let [ours_rounds, theirs_rounds] = rounds;
    let [ours_warm_up, theirs_warm_up] = warm_ups;
    let ours = summarize("ours", ours_rounds, ours_warm_up);
    let theirs = summarize("redis-rs", theirs_rounds, theirs_warm_up);
    let ratios = ours
        .rates
        .iter()
        .zip(&theirs.rates)
        .map(|(ours, theirs)| ours / theirs)
        .collect();
    Ok(Report {
        settings: settings.clone(),
        shards: map.shards().len(),
        replicas: map.shards().iter().map(|s| s.replicas.len()).sum(),
        ours,
        theirs,
        ratios,
        ours_status,
    })
}

/// `settings.tasks` tasks run `settings.requests` pairs each through `side`: the time from
/// the start to the last task's end, each pair's latency, and the failures.
async fn round(
    side: &Side,
    settings: &Settings,
    run: u128,
    index: usize,
) -> Result<Round, BenchError> {
    let started = Instant::now();
    let cpu_before = process_cpu();
    let tasks: Vec<_> = (0..settings.tasks)
        .map(|task| {
            let mut side = side.clone();
            let (requests, name) = (settings.requests, side.name());
            tokio::spawn(async move {
                let mut tally = Round::default();
                for i in 0..requests {
                    let key = format!("mux-pool:bench:{run}:{index}:{name}:{task}:{i}");
                    let value = format!("value-{task}-{i}");
                    let pair_started = Instant::now();
                    match side.pair(&key, &value).await {
                        Ok(Some(read)) if read == value => {
                            tally.latencies.push(pair_started.elapsed());
                        }
                        Ok(_) => tally.mismatches += 1,
                        Err(error) => {
                            tally.errors += 1;
                            if tally.first_error.is_none() {
                                tally.first_error = Some(chain(&error));
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Round::default();
    for task in tasks {
        total.add(task.await?);
    }
    total.elapsed = started.elapsed();
    total.cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Ok(total)
}

/// One client's recorded rounds, and its warm-up's failures.
fn summarize(name: &'static str, rounds: Vec<Round>, warm_up: Round) -> SideReport {
    let rates = rounds.iter().map(Round::rate).collect();
    let mut all = Round {
        cpu: Some(Duration::ZERO),
        ..Round::default()
    };
    for round in rounds {
        all.add(round);
    }
    let latencies = &mut all.latencies;
    latencies.sort_unstable();
    let per_pair = latencies.len().max(1);
    SideReport {
        name,
        rates,
        pairs: latencies.len() as u64,
        p50: percentile(latencies, 0.50),
        p99: percentile(latencies, 0.99),
        max: percentile(latencies, 1.0),
        cpu_per_pair: all.cpu.map(|cpu| cpu.div_f64(per_pair as f64)),
        server_cpu_per_pair: all.servers.cpu.div_f64(per_pair as f64),
        server_reads_per_pair: all.servers.reads as f64 / per_pair as f64,
        errors: all.errors + warm_up.errors,
        mismatches: all.mismatches + warm_up.mismatches,
        first_error: warm_up.first_error.or(all.first_error),
    }
}

/// The CPU time this process has used (user and system, every thread), from
/// `/proc/self/stat` in clock ticks of 10 ms; `None` where there is no such file.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // `pid (comm) state ...`: utime and stime are the 12th and 13th fields after `)`.
    let mut fields = stat.rsplit(')').next()?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
