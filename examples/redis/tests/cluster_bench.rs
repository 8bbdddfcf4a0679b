//! The load program's `--bench` on a real 6-node cluster, with small numbers: both clients
//! run every round, read back every pair, and count no error. Speed is what the bench
//! itself measures (BENCHMARKS.md); this test asserts none.
//!
//! The bench is a module of the load program (a binary), written against the library
//! alone: this test compiles it in and calls its function, to read its report as values.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

#[allow(dead_code)]
#[path = "../src/load/bench/mod.rs"]
mod bench;

use std::time::Duration;

use support::cluster::LocalCluster;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_both_clients_every_round_and_reads_back_every_pair() {
    let cluster = LocalCluster::start().await;
    let settings = bench::Settings {
        seeds: cluster.seeds(),
        tasks: 8,
        requests: 20,
        rounds: 2,
        max_size: None,
        deadline: Duration::from_secs(5),
    };
    let report = timeout(Duration::from_secs(60), bench::run(&settings))
        .await
        .expect("the bench ends within 60 s")
        .expect("the bench runs");
    println!("{report}");

    assert_eq!((report.shards, report.replicas), (3, 3), "{report}");
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.ratios.len(), 2, "{report}");
    let pairs = (settings.tasks * settings.requests * settings.rounds) as u64;
    for (side, name) in [(&report.ours, "ours"), (&report.theirs, "redis-rs")] {
        assert_eq!(side.name, name);
        assert_eq!(side.rates.len(), 2, "{report}");
        assert!(side.rates.iter().all(|rate| *rate > 0.0), "{report}");
        assert_eq!(side.pairs, pairs, "every pair read back: {report}");
        assert!(side.p50 > Duration::ZERO, "{report}");
        assert!(side.p50 <= side.p99 && side.p99 <= side.max, "{report}");
        assert!(
            side.server_reads_per_pair > 0.0,
            "the servers' counters: {report}"
        );
    }
    let text = report.to_string();
    for line in [
        "ours cmd/s",
        "redis-rs cmd/s",
        "median",
        "p99 ours/redis-rs",
    ] {
        assert!(text.contains(line), "the report shows {line:?}: {text}");
    }
    assert!(text.contains("errors: ours 0 (mismatches 0), redis-rs 0 (mismatches 0)"));
}
