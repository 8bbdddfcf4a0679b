//! The load program against a real server: transfers with a share dropped mid-way keep the
//! total, and leave no open transaction and no connection but the pool's.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use mysql_example::bank::{Args, run};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transfers_keep_the_total_and_leave_nothing_open() {
    let server = support::shared().await;
    let args = Args {
        url: server.database("transfers_cancelled").await,
        tasks: 16,
        pool_size: 4,
        transfers: 1500,
        accounts: 10,
        cancel_rate: 0.2,
        seed: 7,
    };
    let report = timeout(Duration::from_secs(60), run(&args))
        .await
        .expect("the run ends within 60 s")
        .expect("the run");
    println!("{report}");
    assert!(report.total_kept(), "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.cancelled > 0 && report.committed > 0, "{report}");
    assert_eq!(report.committed + report.cancelled, 1500, "{report}");
    assert_eq!(report.open_transactions, 0, "{report}");
    assert_eq!(
        report.server_connections, report.pool.size as u64,
        "no connection but the pool's: {report}"
    );
    assert!(report.pool.size <= 4, "{report}");
    assert_eq!(report.manager.kill_failures, 0, "{report}");
    assert!(
        report.manager.cut_closed > 0,
        "some transfers were cut mid-command: {report}"
    );
    let counters = &report.pool.counters;
    assert!(
        counters.resets > 0,
        "some transfers were dropped between statements, and their connections reset: {report}"
    );
    assert_eq!(counters.reset_failures, 0, "{report}");
    assert_eq!(
        report.manager.dirty_refused, 0,
        "no connection was handed out dirty: {report}"
    );
    assert_eq!(counters.leaks, 0, "{report}");
    assert_eq!(report.pool.resetting, 0, "{report}");

    // The pool is closed: the server soon has no connection in the database, and no
    // transaction anywhere in it.
    let mut observer = server.connect("transfers_cancelled").await;
    let connections = "SELECT COUNT(*) FROM information_schema.processlist \
                       WHERE DB = 'transfers_cancelled' AND ID <> CONNECTION_ID()";
    support::eventually(
        Duration::from_secs(2),
        "the pool's connections close",
        async || support::number(&mut observer, connections).await == 0,
    )
    .await;
    let open = "SELECT COUNT(*) FROM information_schema.innodb_trx t \
                JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id \
                WHERE p.DB = 'transfers_cancelled'";
    assert_eq!(support::number(&mut observer, open).await, 0);
}

#[tokio::test]
async fn the_program_exits_0_and_prints_its_summary() {
    let server = support::shared().await;
    // The program creates its database itself.
    let url = server.url("transfers_program");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mysql-example"));
    command
        .args(["--url", &url, "--tasks", "4", "--pool-size", "2"])
        .args([
            "--transfers",
            "200",
            "--accounts",
            "5",
            "--cancel-rate",
            "0.1",
        ])
        .kill_on_drop(true);
    let output = timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the program ends within 60 s")
        .expect("run the program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    for line in [
        "throughput:",
        "p50",
        "p99",
        "committed:",
        "cancelled:",
        "errors: 0",
        "resets:",
        "discarded:",
        "leaks:",
        "total balance: 5000 of 5000: kept",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn the_program_refuses_bad_flags_with_status_2() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mysql-example"))
        .args(["--cancel-rate", "2"])
        .output();
    let output = timeout(Duration::from_secs(10), output)
        .await
        .expect("the program ends within 10 s")
        .expect("run the program");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cancel-rate"));
}

#[tokio::test]
async fn the_bench_flag_prints_both_pools_side_by_side() {
    let server = support::shared().await;
    let url = server.url("transfers_bench");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mysql-example"));
    command
        .args(["--bench", "--url", &url, "--tasks", "4", "--pool-size", "2"])
        .args(["--rounds", "1", "--round-ms", "100"])
        .kill_on_drop(true);
    let output = timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the program ends within 60 s")
        .expect("run the program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    for line in [
        "ours ops/s",
        "mysql_async ops/s",
        "ours/mysql_async",
        "p99 ours",
        "0 %",
        "50 %",
        "round trips per operation",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    assert!(stderr.contains("round 1/1"), "{stderr}");
}
