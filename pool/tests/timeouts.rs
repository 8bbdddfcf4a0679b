//! Each timeout fires at its configured time and says which one fired; a wait
//! that ran out while connects were failing carries the last connect error (bb8 #141).
//!
//! These pools fail fast, so each connect's own outcome reaches its caller; retried connects
//! (the default) are proved in `connect_retry.rs`.

mod support;

use std::time::Duration;

use pool::{Pool, PoolError, TimeoutKind};
use support::{Mock, Plan};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_millis(250);
const CONNECT: Duration = Duration::from_millis(300);
const CHECK: Duration = Duration::from_millis(200);

fn pool_of(mock: &Mock, max_size: usize) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(max_size)
        .wait_timeout(WAIT)
        .connect_timeout(CONNECT)
        .check_timeout(CHECK)
        .check_interval(Duration::ZERO)
        .fail_fast(true)
        .build()
        .expect("valid settings")
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_fires_at_its_time_and_says_wait() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let _held = pool.get().await.expect("the only connection");
    let started = Instant::now();
    let error = pool.get().await.expect_err("the pool is full");
    assert_eq!(started.elapsed(), WAIT);
    assert!(
        matches!(
            error,
            PoolError::Timeout(TimeoutKind::Wait {
                last_connect_error: None
            })
        ),
        "{error:?}"
    );
    let status = pool.status();
    assert_eq!(status.waiting, 0, "the caller left the line");
    assert_eq!(status.counters.timeouts, 1);
    assert_eq!(status.counters.waited, 1);
    assert_eq!(status.counters.wait_time, WAIT);
}

#[tokio::test(start_paused = true)]
async fn try_get_on_a_full_pool_fails_at_once_with_wait() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let _held = pool.get().await.expect("the only connection");
    let started = Instant::now();
    let error = pool.try_get().await.expect_err("the pool is full");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(
        matches!(error, PoolError::Timeout(TimeoutKind::Wait { .. })),
        "{error:?}"
    );
    assert_eq!(pool.status().waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_fires_at_its_time_and_says_connect() {
    let mock = Mock::new();
    mock.push_connect(Plan::hang());
    let pool = pool_of(&mock, 1);
    let started = Instant::now();
    let error = pool.get().await.expect_err("the connect hangs");
    assert_eq!(started.elapsed(), CONNECT);
    assert!(
        matches!(error, PoolError::Timeout(TimeoutKind::Connect)),
        "{error:?}"
    );
    let status = pool.status();
    assert_eq!((status.size, status.connecting), (0, 0), "the slot is free");
    assert_eq!(status.counters.timeouts, 1);
    assert_eq!(status.counters.connect_failures, 1);
    assert_eq!(mock.in_flight(), 0, "the hung connect was dropped");
    // The next connect works.
    let conn = pool.get().await.expect("a fresh connect");
    assert_eq!(conn.id, 0);
}

#[tokio::test(start_paused = true)]
async fn check_timeout_fires_at_its_time_and_says_check() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    drop(pool.get().await.expect("a connection"));
    mock.push_check(Plan::hang());
    let started = Instant::now();
    let error = pool.get().await.expect_err("the check hangs");
    assert_eq!(started.elapsed(), CHECK);
    assert!(
        matches!(error, PoolError::Timeout(TimeoutKind::Check)),
        "{error:?}"
    );
    // The connection whose check hung is discarded, its state unknown.
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    let status = pool.status();
    assert_eq!((status.size, status.in_use, status.idle), (0, 0, 0));
    assert_eq!(status.counters.check_failures, 1);
    assert_eq!(
        status.counters.broken, 0,
        "a timed-out check is counted once, as such"
    );
    assert_eq!(status.counters.timeouts, 1);
    let conn = pool.get().await.expect("a fresh connection");
    assert_eq!(conn.id, 1);
}

/// Connects were failing; the wait runs out: the error names the last connect failure.
#[tokio::test(start_paused = true)]
async fn wait_timeout_carries_the_last_connect_error() {
    let mock = Mock::new();
    mock.push_connect(Plan::fail(
        "password authentication failed for user \"app\"",
    ));
    mock.push_connect(Plan::hang());
    let pool = pool_of(&mock, 1);

    // One connect fails: this caller sees it directly.
    match pool.get().await {
        Err(PoolError::Connect(error)) => {
            assert_eq!(error.0, "password authentication failed for user \"app\"");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    // The next connect hangs and holds the only slot; a second caller waits in line.
    let hung = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.status().connecting, 1);
    let started = Instant::now();
    let error = pool.get().await.expect_err("nothing to be had");
    assert_eq!(started.elapsed(), WAIT);
    match &error {
        PoolError::Timeout(TimeoutKind::Wait {
            last_connect_error: Some(text),
        }) => assert!(text.contains("password authentication failed"), "{text}"),
        other => panic!("expected a wait timeout with the connect error, got {other:?}"),
    }
    assert!(
        error.to_string().contains("password authentication failed"),
        "the message shows the cause: {error}"
    );
    let hung = hung.await.expect("task");
    assert!(matches!(
        hung,
        Err(PoolError::Timeout(TimeoutKind::Connect))
    ));
}

/// A successful connect clears the remembered error: later wait timeouts are plain.
#[tokio::test(start_paused = true)]
async fn wait_timeout_after_recovery_carries_no_stale_error() {
    let mock = Mock::new();
    mock.push_connect(Plan::fail("refused"));
    let pool = pool_of(&mock, 1);
    assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
    let _held = pool.get().await.expect("the server is back");
    let error = pool.get().await.expect_err("the pool is full");
    assert!(
        matches!(
            error,
            PoolError::Timeout(TimeoutKind::Wait {
                last_connect_error: None
            })
        ),
        "{error:?}"
    );
}

/// Each timeout is measured from its own start: a waiter handed a slot late still gets a whole
/// connect timeout for its connect, and the wait deadline does not cut it short.
#[tokio::test(start_paused = true)]
async fn connect_after_a_wait_gets_its_own_connect_timeout() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let held = pool.get().await.expect("the only connection");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (pool.get().await.map(|c| c.id), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The held connection comes back broken: its slot goes to the waiter, whose connect hangs.
    mock.push_connect(Plan::hang());
    let mut held = held;
    pool::Pooled::mark_broken(&mut held);
    drop(held);
    let (result, elapsed) = waiter.await.expect("task");
    assert!(
        matches!(result, Err(PoolError::Timeout(TimeoutKind::Connect))),
        "{result:?}"
    );
    assert_eq!(elapsed, Duration::from_millis(100) + CONNECT);
}
