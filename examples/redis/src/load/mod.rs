//! What the load program's runs share: a task's tally, percentiles, and errors on one line;
//! and `--bench` started from the program's flags.

use std::collections::BTreeMap;
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

pub use redis_example::report::{chain, percentile, run_id};

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
