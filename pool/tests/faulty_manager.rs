//! A manager whose `connect` panics or hangs leaks no slot; later checkouts work.

mod support;

use std::time::Duration;

use pool::{Pool, PoolError, TimeoutKind};
use support::{Mock, Plan};
use tokio::time::Instant;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn pool_of(mock: &Mock, max_size: usize) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(max_size)
        .connect_timeout(CONNECT_TIMEOUT)
        .wait_timeout(Duration::from_secs(5))
        .build()
        .expect("valid settings")
}

fn assert_no_slot_held(pool: &Pool<Mock>) {
    let status = pool.status();
    assert_eq!(
        (
            status.size,
            status.in_use,
            status.connecting,
            status.waiting
        ),
        (0, 0, 0, 0),
        "{status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_connect_leaks_no_slot() {
    let mock = Mock::new();
    mock.push_connect(Plan::panic());
    let pool = pool_of(&mock, 1);
    let error = pool.get().await.expect_err("the connect panics");
    assert!(matches!(error, PoolError::ConnectPanicked), "{error:?}");
    assert_no_slot_held(&pool);
    assert_eq!(mock.in_flight(), 0);
    let conn = pool.get().await.expect("the next connect works");
    assert_eq!(conn.id, 0);
}

#[tokio::test(start_paused = true)]
async fn panicking_connect_after_a_delay_passes_its_slot_to_a_waiter() {
    let mock = Mock::new();
    mock.push_connect(Plan::panic().after(Duration::from_millis(50)));
    let pool = pool_of(&mock, 1);
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|c| c.id) })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    let second = pool.get().await.expect("the slot freed by the panic");
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(second.id, 0);
    assert!(matches!(
        first.await.expect("task"),
        Err(PoolError::ConnectPanicked)
    ));
}

/// Every connect of a pool of 3 panics for a while, with 20 callers: every slot comes back.
#[tokio::test(start_paused = true)]
async fn many_panicking_connects_leak_no_slot() {
    let mock = Mock::new();
    mock.set_connect(Plan::panic().after(Duration::from_millis(5)));
    let pool = pool_of(&mock, 3);
    let mut callers = Vec::new();
    for _ in 0..20 {
        let pool = pool.clone();
        callers.push(tokio::spawn(async move { pool.get().await.map(|_| ()) }));
    }
    for caller in callers {
        let result = caller.await.expect("task");
        assert!(
            matches!(result, Err(PoolError::ConnectPanicked)),
            "{result:?}"
        );
    }
    assert_no_slot_held(&pool);
    assert!(mock.max_in_flight() <= 3);
    mock.set_connect(Plan::ok());
    let conns = [
        pool.get().await.expect("1"),
        pool.get().await.expect("2"),
        pool.get().await.expect("3"),
    ];
    assert_eq!(pool.status().size, 3);
    drop(conns);
}

#[tokio::test(start_paused = true)]
async fn hanging_connect_leaks_no_slot() {
    let mock = Mock::new();
    mock.set_connect(Plan::hang());
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .connect_timeout(CONNECT_TIMEOUT)
        .wait_timeout(Duration::from_secs(5))
        .fail_fast(true)
        .build()
        .expect("valid settings");
    let mut callers = Vec::new();
    for _ in 0..6 {
        let pool = pool.clone();
        callers.push(tokio::spawn(async move {
            let started = Instant::now();
            (pool.get().await.map(|_| ()), started.elapsed())
        }));
    }
    for caller in callers {
        let (result, elapsed) = caller.await.expect("task");
        assert!(
            matches!(result, Err(PoolError::Timeout(TimeoutKind::Connect))),
            "{result:?}"
        );
        // Two rounds of hung connects at most before each caller's own one times out.
        assert!(elapsed <= CONNECT_TIMEOUT * 3, "{elapsed:?}");
    }
    assert_no_slot_held(&pool);
    assert_eq!(mock.in_flight(), 0, "every hung connect was dropped");
    assert!(mock.max_in_flight() <= 2);
    mock.set_connect(Plan::ok());
    drop(pool.get().await.expect("connects work again"));
}

/// With retries (the default), callers of a pool whose connects hang retry within their
/// wait timeout, never more than `max_size` connects at once, and then fail with the wait
/// timeout carrying the last connect error; no slot leaks.
#[tokio::test(start_paused = true)]
async fn hanging_connects_are_retried_within_the_wait_timeout() {
    let mock = Mock::new();
    mock.set_connect(Plan::hang());
    let wait = Duration::from_secs(5);
    let pool = pool_of(&mock, 2);
    let mut callers = Vec::new();
    for _ in 0..6 {
        let pool = pool.clone();
        callers.push(tokio::spawn(async move {
            let started = Instant::now();
            (pool.get().await.map(|_| ()), started.elapsed())
        }));
    }
    for caller in callers {
        let (result, elapsed) = caller.await.expect("task");
        match result {
            Err(PoolError::Timeout(TimeoutKind::Wait {
                last_connect_error: Some(error),
            })) => assert!(error.contains("connect timed out"), "{error}"),
            other => panic!("expected a wait timeout with the connect error, got {other:?}"),
        }
        // A connect begun before the deadline may run to its own timeout.
        assert!(elapsed <= wait + CONNECT_TIMEOUT, "{elapsed:?}");
    }
    assert!(mock.connects() > 2, "connects were retried");
    assert!(
        mock.max_in_flight() <= 2,
        "never more than max_size connects"
    );
    assert_no_slot_held(&pool);
    assert_eq!(mock.in_flight(), 0, "every hung connect was dropped");
}

/// A connect that hangs in the background (no caller waits for it, as when filling min_idle)
/// is dropped at the connect timeout too, and its slot frees.
#[tokio::test(start_paused = true)]
async fn hanging_background_connect_leaks_no_slot() {
    let mock = Mock::new();
    mock.push_connect(Plan::hang());
    mock.push_connect(Plan::hang());
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .min_idle(2)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .expect("valid settings");
    tokio::task::yield_now().await;
    assert_eq!(pool.status().connecting, 2);
    tokio::time::sleep(CONNECT_TIMEOUT + Duration::from_millis(1)).await;
    assert_eq!(mock.in_flight(), 0);
    assert_no_slot_held(&pool);
    // The refill goes on at the next reap; a caller need not wait for it.
    let conn = pool.get().await.expect("a connection");
    assert!(conn.id <= 1);
    assert!(pool.status().size <= 2);
}

/// A check that panics takes down only the caller's task: the connection it was checking is
/// closed and its slot freed.
#[tokio::test(start_paused = true)]
async fn panicking_check_leaks_no_slot() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .check_interval(Duration::ZERO)
        .build()
        .expect("valid settings");
    drop(pool.get().await.expect("connection 0"));
    mock.push_check(Plan::panic());
    let caller = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    assert!(caller.await.is_err(), "the caller's task panicked");
    assert_no_slot_held(&pool);
    mock.until_closes(1).await;
    assert_eq!(
        mock.closes_of(0),
        1,
        "the connection whose check panicked is closed"
    );
    assert_eq!(pool.get().await.expect("a fresh one").id, 1);
}

/// A manager whose `is_broken` panics, to show a return never leaks the slot.
struct PanickyReturn;

impl pool::Manager for PanickyReturn {
    type Connection = u64;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u64, std::io::Error> {
        Ok(7)
    }
    async fn check(&self, _: &mut u64) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn is_broken(&self, _: &mut u64) -> bool {
        panic!("scripted is_broken panic")
    }
}

#[tokio::test(start_paused = true)]
async fn panicking_is_broken_discards_the_connection_and_frees_its_slot() {
    let pool = Pool::builder(PanickyReturn)
        .max_size(1)
        .build()
        .expect("valid settings");
    let conn = pool.get().await.expect("a connection");
    drop(conn);
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use, status.idle),
        (0, 0, 0),
        "{status:?}"
    );
    assert_eq!(status.counters.broken, 1);
    // The slot is free: the next checkout opens a fresh connection at once.
    let again = tokio::time::timeout(Duration::from_millis(1), pool.get())
        .await
        .expect("no wait")
        .expect("a fresh connection");
    assert_eq!(pool.status().counters.created, 2);
    drop(again);
}

#[tokio::test(start_paused = true)]
async fn hanging_close_is_bounded_by_close_timeout() {
    let mock = Mock::new();
    mock.set_close_delay(Duration::from_secs(3600));
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .close_timeout(Duration::from_secs(2))
        .build()
        .expect("valid settings");
    let mut conn = pool.get().await.expect("a connection");
    pool::Pooled::mark_broken(&mut conn);
    let started = Instant::now();
    drop(conn);
    mock.until("the pool counted the close", || {
        pool.status().counters.closed == 1
    })
    .await;
    // `until` polls on a 1 ms tick of the paused clock.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_millis(2001),
        "{took:?}"
    );
    assert_eq!(mock.closes(), 0, "the hanging close never finished");
    assert_eq!(
        mock.live(),
        0,
        "the connection was dropped when the close timed out"
    );
}
