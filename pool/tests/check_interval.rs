//! The check is skipped for a connection used within `check_interval`, and run
//! for one idle longer.

mod support;

use std::time::Duration;

use pool::{Pool, Pooled};
use support::Mock;

const INTERVAL: Duration = Duration::from_millis(500);

fn pool_of(mock: &Mock) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(2)
        .check_interval(INTERVAL)
        .build()
        .expect("valid settings")
}

#[tokio::test(start_paused = true)]
async fn check_is_skipped_inside_check_interval() {
    let mock = Mock::new();
    let pool = pool_of(&mock);
    drop(pool.get().await.expect("a new connection is never checked"));
    for _ in 0..10 {
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(pool.get().await.expect("the idle connection"));
    }
    assert_eq!(
        mock.checks(),
        0,
        "each reuse came within the interval of the last"
    );
    assert_eq!(mock.connects(), 1);
}

#[tokio::test(start_paused = true)]
async fn check_runs_outside_check_interval() {
    let mock = Mock::new();
    let pool = pool_of(&mock);
    drop(pool.get().await.expect("a connection"));
    tokio::time::advance(INTERVAL - Duration::from_millis(1)).await;
    drop(pool.get().await.expect("just inside the interval"));
    assert_eq!(mock.checks(), 0);

    tokio::time::advance(INTERVAL).await;
    let conn = pool.get().await.expect("idle for the whole interval");
    assert_eq!(mock.checks(), 1);
    // The check counts as a use: the clock restarts from it.
    assert_eq!(Pooled::info(&conn).uses(), 3);
    drop(conn);
    tokio::time::advance(Duration::from_secs(3)).await;
    drop(pool.get().await.expect("idle long after"));
    assert_eq!(mock.checks(), 2);
}

#[tokio::test(start_paused = true)]
async fn zero_check_interval_checks_every_checkout() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .check_interval(Duration::ZERO)
        .build()
        .expect("valid settings");
    drop(pool.get().await.expect("new, not checked"));
    for expected in 1..=5 {
        drop(pool.get().await.expect("reused"));
        assert_eq!(mock.checks(), expected);
    }
}

/// The interval runs from when the connection was last returned, not from when it was opened.
#[tokio::test(start_paused = true)]
async fn check_interval_counts_from_the_last_return() {
    let mock = Mock::new();
    let pool = pool_of(&mock);
    let conn = pool.get().await.expect("a connection");
    // Held for much longer than the interval, then returned.
    tokio::time::advance(INTERVAL * 4).await;
    drop(conn);
    tokio::time::advance(INTERVAL / 2).await;
    drop(pool.get().await.expect("recently returned"));
    assert_eq!(mock.checks(), 0);
}
