//! What the load program's runs share: a task's tally, percentiles, and errors on one line;
//! and `--bench` started from the program's flags.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use crate::Args;

pub mod bench;
pub mod cluster;
pub mod single;

/// What one task saw.
#[derive(Default)]
pub struct Tally {
    pub pairs: usize,
    pub errors: usize,
    pub mismatches: usize,
    pub latencies: Vec<Duration>,
    /// GETs answered, by endpoint name (with replicas only).
    pub reads: BTreeMap<String, usize>,
}

impl Tally {
    /// Adds `other`'s counts to this one's.
    pub fn add(&mut self, other: Tally) {
        self.pairs += other.pairs;
        self.errors += other.errors;
        self.mismatches += other.mismatches;
        self.latencies.extend(other.latencies);
        for (endpoint, count) in other.reads {
            *self.reads.entry(endpoint).or_default() += count;
        }
    }
}

/// A number for this run's keys, so that two runs never read each other's.
pub fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The `p` quantile of `sorted` latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// An error with its causes, on one line; a cause whose text already ends the line (the
/// `redis` crate repeats its source in its own message) is not repeated.
pub fn chain(error: &dyn Error) -> String {
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

/// `--bench`: runs [`bench::run`] with the program's flags and prints its report; exits with
/// status 1 when the bench could not run or counted any error.
///
/// # Cancel safety
/// As [`bench::run`].
pub async fn run_bench(args: &Args) {
    let settings = bench::Settings {
        seeds: args.cluster.clone(),
        tasks: args.tasks,
        requests: args.requests,
        rounds: args.rounds,
        max_size: args.pool_given.then_some(args.pool),
        deadline: args.deadline,
    };
    let report = match bench::run(&settings).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!(
                "redis-example --bench: {}\nstart a cluster with `scripts/redis-cluster start \
                 DIR` and pass the URLs it prints with --cluster",
                chain(&error)
            );
            std::process::exit(1);
        }
    };
    println!("{report}");
    if report.errors() > 0 {
        eprintln!("the bench counted errors: its figures measure nothing");
        std::process::exit(1);
    }
}
