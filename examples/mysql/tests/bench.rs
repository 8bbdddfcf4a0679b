//! `--bench` against a real server: both pools run every mode, and the round trips show why
//! they differ: our manager resets a connection only when it came back dirty, mysql_async's
//! pool resets every one (which also drops its prepared statements).
//!
//! The round trips come from the server's global counters, so this binary holds one test:
//! nothing else may run statements on its server meanwhile.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use mysql_example::bench::{Args, DIRTY_RATES, run};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_resets_only_dirtied_connections_and_mysql_async_every_one() {
    let server = support::shared().await;
    let pool_size = 2;
    let args = Args {
        url: Some(server.url("bench_side_by_side")),
        tasks: 8,
        pool_size,
        rounds: 2,
        round: Duration::from_millis(300),
        seed: 7,
    };
    let report = timeout(Duration::from_secs(30), run(&args))
        .await
        .expect("the bench ends within 30 s")
        .expect("the bench runs");
    println!("{report}");
    assert_eq!(report.modes.len(), DIRTY_RATES.len());
    // A reset still running as a round ends is counted in the next read: one per connection.
    let slack = pool_size as u64;
    for mode in &report.modes {
        assert_eq!(mode.ratios.len(), 2, "{report}");
        for side in [&mode.ours, &mode.theirs] {
            assert!(side.ops > 0, "{report}");
            assert_eq!(side.commands.execute, side.ops, "one select each: {report}");
            assert!(side.p99 >= side.p50, "{report}");
        }
        let (ours, theirs) = (&mode.ours.commands, &mode.theirs.commands);
        assert!(
            theirs.reset + slack >= mode.theirs.ops,
            "mysql_async resets every return: {report}"
        );
        assert!(
            theirs.prepare + slack >= mode.theirs.ops,
            "and so prepares again at every checkout: {report}"
        );
        if mode.dirty_rate == 0.0 {
            assert_eq!((ours.reset, ours.set), (0, 0), "{report}");
            assert!(
                ours.prepare <= slack,
                "prepared once per connection: {report}"
            );
        } else {
            assert!(ours.set > 0, "{report}");
            assert!(
                ours.reset.abs_diff(ours.set) <= slack,
                "ours resets each dirtied connection, and only those: {report}"
            );
        }
    }
}
