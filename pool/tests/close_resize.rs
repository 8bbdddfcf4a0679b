//! `close()` with holders and waiters (waiters fail at once, every connection is
//! closed exactly once, counts reach 0, `get` after close fails); `resize` shrink then grow;
//! `detach`; `retain`.

mod support;

use std::time::Duration;

use futures::poll;
use pool::{BuildError, Pool, PoolError, Pooled};
use support::{Mock, Plan, until_waiting};
use tokio::time::Instant;

fn pool_of(mock: &Mock, max_size: usize) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(max_size)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings")
}

async fn take(pool: &Pool<Mock>, n: usize) -> Vec<Pooled<Mock>> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(pool.get().await.expect("a connection"));
    }
    conns
}

#[tokio::test(start_paused = true)]
async fn close_with_holders_and_waiters() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 3);
    let held = take(&pool, 3).await;
    let mut waiters = Vec::new();
    for i in 0..5 {
        let waiter = pool.clone();
        waiters.push(tokio::spawn(async move {
            let result = waiter.get().await.map(|_| ());
            (result, Instant::now())
        }));
        until_waiting(&pool, i + 1).await;
    }

    let closed_at = Instant::now();
    pool.close().await;
    assert!(pool.is_closed());
    for waiter in waiters {
        let (result, at) = waiter.await.expect("task");
        assert!(matches!(result, Err(PoolError::Closed)), "{result:?}");
        assert_eq!(at, closed_at, "waiters fail at once");
    }
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    assert!(matches!(pool.try_get().await, Err(PoolError::Closed)));
    let status = pool.status();
    assert_eq!(
        (status.in_use, status.waiting),
        (3, 0),
        "holders keep theirs"
    );

    // Holders may still use their connections; on return they are closed.
    assert_eq!(mock.closes_started(), 0);
    drop(held);
    let status = pool.status();
    assert_eq!((status.size, status.idle, status.in_use), (0, 0, 0));
    mock.until_closes(3).await;
    mock.assert_each_closed_once();
    assert_eq!(mock.live(), 0);
    assert_eq!(pool.status().counters.closed, 3);
}

#[tokio::test(start_paused = true)]
async fn close_closes_idle_connections_before_it_returns() {
    let mock = Mock::new();
    mock.set_close_delay(Duration::from_millis(100));
    let pool = pool_of(&mock, 4);
    let mut conns = take(&pool, 4).await;
    let held = conns.split_off(2);
    drop(conns); // 2 idle, 2 held
    let started = Instant::now();
    pool.close().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(100),
        "closes run together"
    );
    assert_eq!(mock.closes(), 2, "idle ones closed when close() returns");
    assert_eq!(pool.status().counters.closed, 2);
    let mut held = held;
    Pooled::mark_broken(&mut held[0]); // broken or not, each is closed once
    drop(held);
    mock.until_closes(4).await;
    mock.assert_each_closed_once();
    let status = pool.status();
    assert_eq!(
        (status.size, status.idle, status.in_use, status.connecting),
        (0, 0, 0, 0)
    );
    assert_eq!(mock.live(), 0);
    // A second close does nothing more.
    pool.close().await;
    assert_eq!(mock.closes_started(), 4);
}

/// Connects in flight when the pool closes: their connections are closed when they arrive.
#[tokio::test(start_paused = true)]
async fn close_with_connects_in_flight_closes_them_on_arrival() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(50)));
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(3)
        .build()
        .expect("valid settings");
    let mut caller = Box::pin(pool.get());
    assert!(poll!(caller.as_mut()).is_pending());
    tokio::task::yield_now().await;
    assert!(pool.status().connecting >= 1);
    pool.close().await;
    // The caller either fails with Closed or gets its connection; either way it ends.
    if let Ok(conn) = caller.await {
        drop(conn);
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    mock.until("every connection made is closed", || {
        mock.closes() == mock.connected()
    })
    .await;
    mock.assert_each_closed_once();
    let status = pool.status();
    assert_eq!((status.size, status.idle, status.connecting), (0, 0, 0));
    assert_eq!(mock.live(), 0);
}

/// A waiter was handed a free slot just before the pool closed, and looks at it only after:
/// the closed pool opens no new connection for it, and it fails with `Closed`.
#[tokio::test(start_paused = true)]
async fn close_opens_no_connection_for_a_waiter_handed_a_slot() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let mut held = pool.get().await.expect("connection 0");
    let mut waiter = Box::pin(pool.get());
    assert!(poll!(waiter.as_mut()).is_pending());
    Pooled::mark_broken(&mut held);
    drop(held); // its slot goes to the waiter, which has not looked yet
    pool.close().await;
    let result = waiter.await;
    assert!(matches!(result, Err(PoolError::Closed)), "{result:?}");
    assert_eq!(mock.connects(), 1, "no connect after close");
    let status = pool.status();
    assert_eq!((status.size, status.connecting, status.in_use), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn resize_shrinks_then_grows() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 4);
    let mut conns = take(&pool, 4).await;
    let held = conns.split_off(2);
    drop(conns); // ids 0, 1 idle; 2, 3 held

    pool.resize(1).expect("valid size");
    let status = pool.status();
    assert_eq!(status.max_size, 1);
    assert_eq!(
        (status.idle, status.in_use),
        (0, 2),
        "idle ones above the size closed now"
    );
    mock.until_closes(2).await;
    assert_eq!((mock.closes_of(0), mock.closes_of(1)), (1, 1));

    let mut held = held.into_iter();
    drop(held.next());
    assert_eq!(
        pool.status().size,
        1,
        "a connection above the size is closed on return"
    );
    drop(held.next());
    let status = pool.status();
    assert_eq!((status.size, status.idle), (1, 1), "the last one stays");
    mock.until_closes(3).await;

    // Full at size 1, with three waiters; growing to 3 serves two of them at once.
    let kept = pool.get().await.expect("the one idle connection");
    let mut waiters = Vec::new();
    for i in 0..3 {
        let waiter = pool.clone();
        waiters.push(tokio::spawn(
            async move { waiter.get().await.map(|c| c.id) },
        ));
        until_waiting(&pool, i + 1).await;
    }
    pool.resize(3).expect("valid size");
    let mut waiters = waiters.into_iter();
    let a = waiters
        .next()
        .expect("a")
        .await
        .expect("task")
        .expect("served");
    let b = waiters
        .next()
        .expect("b")
        .await
        .expect("task")
        .expect("served");
    assert_eq!((a, b), (4, 5), "two new connections");
    assert_eq!(
        pool.status().waiting,
        0,
        "the third took a returned connection or waits"
    );
    drop(kept);
    let c = waiters
        .next()
        .expect("c")
        .await
        .expect("task")
        .expect("served");
    assert!(c <= 5);
    let status = pool.status();
    assert_eq!((status.max_size, status.size), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn resize_refuses_invalid_sizes() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(2)
        .build()
        .expect("valid settings");
    assert_eq!(pool.resize(0), Err(BuildError::ZeroMaxSize));
    assert_eq!(
        pool.resize(1),
        Err(BuildError::MinIdleAboveMax {
            min_idle: 2,
            max_size: 1
        })
    );
    assert_eq!(pool.status().max_size, 4);
}

#[tokio::test(start_paused = true)]
async fn detach_frees_the_slot() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let conn = pool.get().await.expect("connection 0");
    let mut waiter = Box::pin(pool.get());
    assert!(poll!(waiter.as_mut()).is_pending());

    let detached = Pooled::detach(conn);
    assert_eq!(detached.id, 0);
    let fresh = waiter.await.expect("the freed slot");
    assert_eq!(fresh.id, 1);
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use),
        (1, 1),
        "the detached one is not counted"
    );

    drop(fresh);
    pool.close().await;
    mock.until_closes(1).await;
    assert_eq!(
        mock.closes_of(0),
        0,
        "the pool never closes a detached connection"
    );
    assert_eq!(mock.closes_of(1), 1);
    assert_eq!(mock.live(), 1, "the detached one is still the user's");
    drop(detached);
    assert_eq!(mock.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn retain_keeps_and_removes_by_predicate() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 6);
    let mut conns = take(&pool, 6).await;
    let held = conns.split_off(4);
    // Make connection 2 look used more.
    drop(conns);
    let again = take(&pool, 2).await; // LIFO: ids 3 and 2
    drop(again);

    let mut visited = Vec::new();
    let removed = pool.retain(|conn, info| {
        visited.push(conn.id);
        conn.id % 2 == 0 && info.uses() == 1
    });
    visited.sort_unstable();
    assert_eq!(
        visited,
        vec![0, 1, 2, 3],
        "only idle connections are visited"
    );
    assert_eq!(removed, 3, "1 and 3 by id, 2 by its uses");
    let status = pool.status();
    assert_eq!((status.idle, status.in_use), (1, 2));
    mock.until_closes(3).await;
    for id in [1, 2, 3] {
        assert_eq!(mock.closes_of(id), 1);
    }
    assert_eq!(mock.closes_of(0), 0);
    assert_eq!(pool.get().await.expect("the kept one").id, 0);
    drop(held);
}
