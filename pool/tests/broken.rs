//! A connection reported broken on return, or failing its check on checkout, is
//! closed and never handed out again; its slot frees at once, so a waiter gets a fresh
//! connection (bb8 #167).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures::poll;
use pool::{Pool, Pooled};
use support::{Mock, Plan};
use tokio::time::Instant;

fn pool_of(mock: &Mock, max_size: usize, check_interval: Duration) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(max_size)
        .check_interval(check_interval)
        .wait_timeout(Duration::from_secs(5))
        .build()
        .expect("valid settings")
}

/// Takes `n` connections in turn (each returned before the next), collecting their ids.
async fn ids_handed_out(pool: &Pool<Mock>, n: usize) -> HashSet<u64> {
    let mut ids = HashSet::new();
    for _ in 0..n {
        ids.insert(pool.get().await.expect("a connection").id);
    }
    ids
}

#[tokio::test(start_paused = true)]
async fn broken_on_return_is_closed() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, Duration::from_millis(500));
    let conn = pool.get().await.expect("a connection");
    assert_eq!(conn.id, 0);
    mock.set_broken(0);
    drop(conn);
    let status = pool.status();
    assert_eq!((status.size, status.idle), (0, 0), "its slot freed at once");
    assert_eq!(status.counters.broken, 1);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert!(!ids_handed_out(&pool, 5).await.contains(&0));
    assert_eq!(mock.live(), 1);
}

#[tokio::test(start_paused = true)]
async fn connection_flagged_broken_is_closed_on_return() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, Duration::from_millis(500));
    let mut conn = pool.get().await.expect("a connection");
    conn.broken = true; // the connection's own flag, read by `is_broken`
    drop(conn);
    assert_eq!(pool.status().size, 0);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert!(!ids_handed_out(&pool, 5).await.contains(&0));
}

#[tokio::test(start_paused = true)]
async fn marked_broken_is_closed_on_return() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, Duration::from_millis(500));
    let mut conn = pool.get().await.expect("a connection");
    Pooled::mark_broken(&mut conn);
    drop(conn);
    let status = pool.status();
    assert_eq!((status.size, status.idle), (0, 0));
    assert_eq!(status.counters.broken, 1);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert!(!ids_handed_out(&pool, 5).await.contains(&0));
}

#[tokio::test(start_paused = true)]
async fn failing_check_is_closed_and_caller_gets_another() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, Duration::ZERO);
    drop(pool.get().await.expect("connection 0"));
    mock.fail_checks_of(0);
    let conn = pool.get().await.expect("another connection");
    assert_eq!(conn.id, 1, "the caller is given a fresh connection");
    assert_eq!(mock.checks(), 1);
    let status = pool.status();
    assert_eq!(status.counters.check_failures, 1);
    assert_eq!(
        status.counters.broken, 0,
        "a failed check is counted once, as such"
    );
    assert_eq!((status.size, status.in_use), (1, 1));
    drop(conn);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert!(!ids_handed_out(&pool, 5).await.contains(&0));
}

/// The pool is full and a caller waits; the holder returns its connection broken, and the
/// close of it is slow. The waiter connects at once, not after the close.
#[tokio::test(start_paused = true)]
async fn broken_return_frees_the_slot_at_once_for_a_waiter() {
    let mock = Mock::new();
    mock.set_close_delay(Duration::from_secs(3600));
    let pool = pool_of(&mock, 1, Duration::from_millis(500));
    let mut held = pool.get().await.expect("the only connection");
    let mut waiter = Box::pin(pool.get());
    assert!(poll!(waiter.as_mut()).is_pending());
    assert_eq!(pool.status().waiting, 1);

    let started = Instant::now();
    Pooled::mark_broken(&mut held);
    drop(held);
    let conn = waiter.await.expect("a fresh connection");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no wait for the slow close"
    );
    assert_eq!(conn.id, 1);
    assert_eq!(mock.closes(), 0, "the old one is still closing");
    assert_eq!(mock.closes_started(), 1);
    let status = pool.status();
    assert_eq!((status.size, status.in_use, status.waiting), (1, 1, 0));
}

/// A failing check on a full pool: the connection is closed and its caller keeps the slot to
/// open a fresh one at once, ahead of the waiter that came after it (first come, first
/// served); that waiter gets the fresh connection when the checker returns it.
#[tokio::test(start_paused = true)]
async fn failing_check_keeps_the_callers_slot() {
    let mock = Mock::new();
    mock.set_close_delay(Duration::from_secs(3600));
    let pool = pool_of(&mock, 1, Duration::ZERO);
    drop(pool.get().await.expect("connection 0"));
    mock.fail_checks_of(0);
    mock.set_check(Plan::ok().after(Duration::from_millis(10)));
    // The checker runs as a task of its own: its check progresses while the test awaits.
    let checker = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let conn = pool.get().await.expect("served first");
            (conn.id, Instant::now(), conn)
        })
    };
    tokio::task::yield_now().await;
    assert_eq!(mock.checks(), 1, "checking connection 0");
    let mut waiter = Box::pin(pool.get());
    assert!(poll!(waiter.as_mut()).is_pending());
    assert_eq!(pool.status().waiting, 1);

    let started = Instant::now();
    let (id, served, conn) = checker.await.expect("task");
    assert_eq!(
        id, 1,
        "a fresh connection for the caller whose check failed"
    );
    assert_eq!(
        served - started,
        Duration::from_millis(10),
        "only the check's time"
    );
    assert_eq!(mock.closes(), 0, "connection 0 is still closing");
    assert_eq!(mock.closes_started(), 1);
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use, status.waiting),
        (1, 1, 1),
        "the later caller is still in line"
    );
    assert_eq!(status.counters.check_failures, 1);

    tokio::time::sleep(Duration::from_millis(5)).await;
    let returned = Instant::now();
    drop(conn);
    let conn = waiter.await.expect("served in turn");
    assert_eq!(conn.id, 1, "connection 0 is never handed out again");
    // Handed over at once, then checked (the interval is zero) in the check's 10 ms.
    assert_eq!(returned.elapsed(), Duration::from_millis(10));
    assert_eq!(mock.connects(), 2);
}

/// Returned while a waiter is in line, a broken connection is never handed to that waiter.
#[tokio::test(start_paused = true)]
async fn broken_connection_is_never_handed_to_a_waiter() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, Duration::from_millis(500));
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    mock.set_broken(a.id);
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        waiters.push(tokio::spawn(async move {
            let conn = pool.get().await.expect("served");
            let id = conn.id;
            tokio::task::yield_now().await;
            drop(conn);
            id
        }));
    }
    tokio::task::yield_now().await;
    assert_eq!(pool.status().waiting, 4);
    drop(a);
    drop(b);
    let mut seen = HashSet::new();
    for waiter in waiters {
        seen.insert(waiter.await.expect("task"));
    }
    assert!(
        !seen.contains(&0),
        "the broken connection 0 was handed out: {seen:?}"
    );
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
}

/// A connection that broke while idle (its peer went away) is never handed out, even inside
/// the check interval where no check runs.
#[tokio::test(start_paused = true)]
async fn broken_while_idle_is_never_handed_out() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, Duration::from_secs(60));
    drop(pool.get().await.expect("a connection"));
    mock.set_broken(0);
    let conn = pool.get().await.expect("a fresh connection");
    assert_eq!(conn.id, 1, "the broken idle connection was handed out");
    assert_eq!(mock.checks(), 0, "inside the check interval: no check ran");
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use, status.idle),
        (1, 1, 0),
        "{status:?}"
    );
    assert_eq!(status.counters.broken, 1);
}
