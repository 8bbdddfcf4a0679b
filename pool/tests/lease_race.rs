//! Leases that end on one thread while callers join the line on another.
//!
//! A caller that finds every connection full joins the line; a lease that ends must hand its
//! room to the oldest caller in line. If an end that races a caller joining the line could
//! miss it (the end sees nobody waiting, the caller saw no room), the caller would wait for
//! the next lease end, and where no lease ends until it is served, forever. These tests
//! hammer that window from two threads. A lease that ends beside others ends without the
//! pool's lock while nobody waits, so the pool serves the line once more after marking every
//! connection's gate with waiters (`State::sync_gates`); without that second look the first
//! test fails within 10 s (tried: it did, on every run).

mod support;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use support::{Mock, all_ended, lease_builder};

/// Rounds of the race; each is a few microseconds, and the window is hit in some of them.
const ROUNDS: usize = 20_000;

/// One connection with room for two leases, both taken: `keeper` holds its lease until the
/// caller is served, `leaver` drops its lease on another thread at the moment the caller,
/// finding the connection full, joins the line. The caller must get the room the leaver left:
/// no round may wait for a lease end that never comes.
#[tokio::test]
async fn a_lease_ending_as_a_caller_joins_the_line_serves_it() {
    let mock = Mock::new();
    let pool = lease_builder(&mock, 1, 2)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .expect("valid settings");
    let start = Arc::new(Barrier::new(2));
    for round in 0..ROUNDS {
        let keeper = pool.lease().await.expect("room for a first lease");
        let leaver = pool.lease().await.expect("room for a second lease");
        assert_eq!(keeper.id, leaver.id, "one connection");
        let barrier = Arc::clone(&start);
        let ender = thread::spawn(move || {
            barrier.wait();
            drop(leaver);
        });
        start.wait();
        // A lost wake-up would leave this caller in line while the keeper, held until it
        // is served, keeps the connection from ever ending its last lease.
        let served = tokio::time::timeout(Duration::from_secs(10), pool.lease())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the room a lease left went to nobody"))
            .expect("a lease");
        ender.join().expect("the ender does not panic");
        assert_eq!(served.id, keeper.id, "round {round}: one connection");
        drop(served);
        drop(keeper);
        let status = pool.status();
        assert_eq!(
            (status.leases, status.waiting),
            (0, 0),
            "round {round}: {status:?}"
        );
    }
    // The caller found the connection full in some rounds and joined the line (the race
    // is in reach), and found the room at once in others.
    let waited = pool.status().counters.waited;
    println!("{waited} of {ROUNDS} rounds joined the line");
    assert!(
        waited > 0,
        "no caller ever joined the line: the race was never run"
    );
    assert_eq!(mock.connects(), 1, "the one connection carried every round");
    pool.close().await;
}

/// Many tasks on two threads take and end leases on two connections of four streams each, so
/// that most ends leave other leases on their connection, while callers keep joining the
/// line. Every caller is served (none waits out its 30 s), the counts end at zero, and every
/// connection closes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_ending_beside_others_lose_no_caller_and_no_count() {
    let mock = Mock::with_limit(2);
    let pool = lease_builder(&mock, 2, 4)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .expect("valid settings");
    let mut tasks = Vec::new();
    for task in 0..32_u32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for turn in 0..500_u32 {
                let lease = pool.lease().await.unwrap_or_else(|error| {
                    panic!("task {task}, turn {turn}: no lease: {error:?}")
                });
                for _ in 0..(task + turn) % 3 {
                    tokio::task::yield_now().await;
                }
                drop(lease);
            }
        }));
    }
    all_ended(&pool, tasks).await;
    assert_eq!(mock.limit_breaches(), 0, "a connect above max_size");
    pool.close().await;
    mock.until_closes(mock.connected()).await;
    mock.assert_each_closed_once();
}
