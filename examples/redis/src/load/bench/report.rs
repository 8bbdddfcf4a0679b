//! [`Report`]: each client's rates per round, its latencies and errors, the ratios of ours
//! to theirs, and the table the report prints.

use std::fmt;
use std::time::Duration;

use redis_example::cluster::ClusterStatus;

use super::Settings;

/// One client's rounds, summed up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SideReport {
    /// `ours` or `redis-rs`.
    pub name: &'static str,
    /// Commands per second (two per pair read back), per recorded round.
    pub rates: Vec<f64>,
    /// Pairs read back over the recorded rounds.
    pub pairs: u64,
    /// Latency of a pair read back (`SET` and `GET`, end to end), over the recorded
    /// rounds: p50.
    pub p50: Duration,
    /// The same, p99.
    pub p99: Duration,
    /// The same, the slowest.
    pub max: Duration,
    /// The whole process's CPU time (user and system) over the recorded rounds, per pair
    /// read back: what the client costs the machine per pair, the idle other client's
    /// background tasks included. `None` where the system does not tell.
    pub cpu_per_pair: Option<Duration>,
    /// The servers' CPU time (every node, user and system) over the recorded rounds, per
    /// pair read back.
    pub server_cpu_per_pair: Duration,
    /// The servers' socket reads (every node, replication links included) over the
    /// recorded rounds, per pair read back: the fewer, the more commands each read carried.
    pub server_reads_per_pair: f64,
    /// Pairs that failed, over every round, the warm-up included.
    pub errors: u64,
    /// Pairs whose `GET` read another value than the `SET` wrote, over every round.
    pub mismatches: u64,
    /// The first failure, on one line.
    pub first_error: Option<String>,
}

impl SideReport {
    /// The median rate over the recorded rounds.
    pub fn median_rate(&self) -> f64 {
        median(&self.rates)
    }
}

/// What a `--bench` run measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The settings it ran with.
    pub settings: Settings,
    /// Shards and replicas of the cluster, as our client mapped it.
    pub shards: usize,
    /// Replicas in all.
    pub replicas: usize,
    /// Our client.
    pub ours: SideReport,
    /// The redis crate's client.
    pub theirs: SideReport,
    /// Our rate over theirs, per recorded round.
    pub ratios: Vec<f64>,
    /// Our client's counters at the end (retries, redirections, timeouts), warm-up included.
    pub ours_status: ClusterStatus,
}

impl Report {
    /// Our rate over theirs: (median, min, max) over the rounds.
    pub fn ratio(&self) -> (f64, f64, f64) {
        let min = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.ratios.iter().copied().fold(0.0, f64::max);
        (median(&self.ratios), min, max)
    }

    /// Our p99 over theirs: below 1, ours is the faster.
    pub fn p99_ratio(&self) -> f64 {
        self.ours.p99.as_secs_f64() / self.theirs.p99.as_secs_f64().max(1e-9)
    }

    /// Failed and mismatched pairs of both clients: above 0, the figures measure nothing.
    pub fn errors(&self) -> u64 {
        [&self.ours, &self.theirs]
            .iter()
            .map(|side| side.errors + side.mismatches)
            .sum()
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
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
        let s = &self.settings;
        let (ours, theirs) = (&self.ours, &self.theirs);
        writeln!(
            f,
            "redis cluster via {}: {} shards, {} replicas",
            s.seeds.join(", "),
            self.shards,
            self.replicas
        )?;
        let pool = match s.max_size {
            Some(n) => format!("max_size {n}, other settings at their defaults"),
            None => "the builder's defaults".to_owned(),
        };
        writeln!(
            f,
            "{} tasks x {} SET+GET pairs (no WAIT) per client per round, {} rounds after a \
             warm-up each, ours first in odd rounds; ours: ClusterClient with {pool}, \
             deadline {:?}; redis-rs: cluster_async::ClusterConnection at its defaults",
            s.tasks, s.requests, s.rounds, s.deadline
        )?;
        writeln!(
            f,
            "{:<7} {:>14} {:>18} {:>20}",
            "round", "ours cmd/s", "redis-rs cmd/s", "ours/redis-rs"
        )?;
        for (i, ratio) in self.ratios.iter().enumerate() {
            writeln!(
                f,
                "{:<7} {:>14.0} {:>18.0} {:>20.2}",
                i + 1,
                ours.rates[i],
                theirs.rates[i],
                ratio
            )?;
        }
        let (median, min, max) = self.ratio();
        writeln!(
            f,
            "{:<7} {:>14.0} {:>18.0} {:>20}",
            "median",
            ours.median_rate(),
            theirs.median_rate(),
            format!("{median:.2} ({min:.2}-{max:.2})")
        )?;
        writeln!(f, "latency per SET+GET pair, every recorded round:")?;
        for side in [ours, theirs] {
            writeln!(
                f,
                "  {:<9} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  ({} pairs)",
                side.name, side.p50, side.p99, side.max, side.pairs,
            )?;
        }
        writeln!(f, "  p99 ours/redis-rs {:.2}", self.p99_ratio())?;
        writeln!(f, "cost per pair, every recorded round:")?;
        for side in [ours, theirs] {
            let client = side
                .cpu_per_pair
                .map_or("unknown".to_owned(), |cpu| format!("{cpu:.2?}"));
            writeln!(
                f,
                "  {:<9} client CPU {client:>9}  servers' CPU {:>9.2?}  servers' reads {:.2}",
                side.name, side.server_cpu_per_pair, side.server_reads_per_pair,
            )?;
        }
        let st = &self.ours_status;
        let opened: Vec<String> = st
            .pools
            .iter()
            .map(|pool| pool.as_ref().map_or(0, |p| p.counters.created).to_string())
            .collect();
        writeln!(
            f,
            "ours: {} requests, {} retries, {} MOVED, {} ASK, {} timeouts, {} slot map \
             refreshes; connections opened per node used: {}",
            st.requests,
            st.retries,
            st.moved,
            st.asked,
            st.timeouts,
            st.refreshes,
            opened.join(", ")
        )?;
        write!(
            f,
            "errors: ours {} (mismatches {}), redis-rs {} (mismatches {})",
            ours.errors, ours.mismatches, theirs.errors, theirs.mismatches
        )?;
        for side in [ours, theirs] {
            if let Some(first) = &side.first_error {
                write!(f, "\nfirst error of {}: {first}", side.name)?;
            }
        }
        Ok(())
    }
}
