//! The server killed under load (SIGKILL, as a crash): only the transfers in flight fail,
//! each with a typed connection error; callers that come during the outage wait in line (a
//! refused connect is retried) and are served once the server is back on the same port and
//! data; nothing hangs, nothing panics, and the money adds up after InnoDB's recovery.
//!
//! This binary kills its server, so it holds this one test and its own server.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mysql_example::bank::{self, Rng, START_BALANCE, TransferError, chain, transfer};
use mysql_example::{Error, MysqlManager};
use pool::Pool;
use tokio::time::timeout;

const TASKS: usize = 16;
const POOL_SIZE: usize = 4;
const ACCOUNTS: usize = 20;
/// The pool's wait timeout: callers in line during the outage wait this long at most.
const WAIT: Duration = Duration::from_secs(15);
/// A transfer still running this long has hung: its checkout waits [`WAIT`] at most, and
/// its statements fail at once on a dead connection.
const HUNG: Duration = Duration::from_secs(17);

/// What the load saw, shared with the test while it runs.
#[derive(Default)]
struct Seen {
    committed: AtomicU64,
    hung: AtomicU64,
}

/// A transfer that failed: when it started and ended, and why.
struct Failure {
    started: Instant,
    ended: Instant,
    error: TransferError,
}

/// One task's loop of transfers until `stop`, each bounded by [`HUNG`].
async fn load(
    pool: Pool<MysqlManager>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    task: u64,
) -> Vec<Failure> {
    let mut rng = Rng::new(task);
    let mut failures = Vec::new();
    while !stop.load(Relaxed) {
        let from = 1 + rng.below(ACCOUNTS as u64) as u32;
        let to = 1 + (from as u64 + rng.below(ACCOUNTS as u64 - 1)) as u32 % ACCOUNTS as u32;
        let started = Instant::now();
        match timeout(HUNG, transfer(&pool, from, to, 1 + rng.below(50) as i64)).await {
            Ok(Ok(_)) => {
                seen.committed.fetch_add(1, Relaxed);
            }
            Ok(Err(error)) => {
                failures.push(Failure {
                    started,
                    ended: Instant::now(),
                    error,
                });
            }
            Err(_) => {
                seen.hung.fetch_add(1, Relaxed);
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_only_the_transfers_in_flight_and_serves_again_after_its_restart() {
    let mut server = support::Server::start().await;
    let url = server.database("killed").await;
    let manager = MysqlManager::new(&url).expect("a valid URL");
    timeout(Duration::from_secs(10), bank::prepare(&manager, ACCOUNTS))
        .await
        .expect("the table within 10 s")
        .expect("the table");
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .connect_timeout(Duration::from_secs(2))
        .check_timeout(Duration::from_secs(1))
        .wait_timeout(WAIT)
        .build()
        .expect("valid settings");
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|task| tokio::spawn(load(pool.clone(), seen.clone(), stop.clone(), task)))
        .collect();

    support::eventually(Duration::from_secs(10), "transfers commit", async || {
        seen.committed.load(Relaxed) >= 100
    })
    .await;
    let open_at_kill = pool.status().size as u64;
    let connect_failures_before = pool.status().counters.connect_failures;
    let killed_at = Instant::now();
    server.kill().await;

    // The pool finds the server gone: its connects are refused (and retried).
    support::eventually(Duration::from_secs(5), "a connect is refused", async || {
        pool.status().counters.connect_failures > connect_failures_before
    })
    .await;
    let committed_before_restart = seen.committed.load(Relaxed);
    timeout(Duration::from_secs(40), server.restart())
        .await
        .expect("the server restarts within 40 s")
        .unwrap_or_else(|error| panic!("restart: {error}"));
    let restarted_in = killed_at.elapsed();
    let served_again_in = support::eventually(WAIT, "transfers commit again", async || {
        seen.committed.load(Relaxed) >= committed_before_restart + 100
    })
    .await;

    stop.store(true, Relaxed);
    let mut failures = Vec::new();
    for task in tasks {
        let task_failures = timeout(HUNG + Duration::from_secs(5), task)
            .await
            .expect("every load task ends")
            .expect("no load task panicked");
        failures.extend(task_failures);
    }
    println!(
        "killed with {open_at_kill} connections open; server back {restarted_in:.2?} after \
         the kill, 100 transfers committed {served_again_in:.2?} after that; {} failed, {} \
         committed in all",
        failures.len(),
        seen.committed.load(Relaxed),
    );
    for failure in &failures {
        println!(
            "  failed {:.2?} after the kill, started {:.2?} before it: {}",
            failure.ended.duration_since(killed_at),
            killed_at.saturating_duration_since(failure.started),
            chain(&failure.error)
        );
    }

    assert_eq!(seen.hung.load(Relaxed), 0, "no transfer hung");
    assert!(!failures.is_empty(), "the transfers in flight failed");
    assert!(
        failures.len() as u64 <= open_at_kill,
        "at most one transfer per connection open at the kill ({open_at_kill}) fails: {}",
        failures.len()
    );
    for failure in &failures {
        assert!(failure.ended >= killed_at, "no failure before the kill");
        match &failure.error {
            TransferError::Mysql(error @ (Error::ConnectionLost { .. } | Error::Io { .. })) => {
                assert!(error.is_retryable(), "{error:?}");
            }
            other => panic!("a connection error, not {}", chain(other)),
        }
    }
    let status = pool.status();
    assert!(
        status.counters.broken >= failures.len() as u64,
        "each failed connection was discarded: {status:?}"
    );
    assert_eq!(
        status.counters.timeouts, 0,
        "no caller timed out: {status:?}"
    );

    // InnoDB recovered every transfer whole or not at all.
    let mut observer = server.connect("killed").await;
    let total = support::number(
        &mut observer,
        "SELECT CAST(SUM(balance) AS UNSIGNED) FROM accounts",
    )
    .await;
    assert_eq!(total, ACCOUNTS as u64 * START_BALANCE as u64);
    timeout(Duration::from_secs(10), pool.close())
        .await
        .expect("the pool closes within 10 s");
}
