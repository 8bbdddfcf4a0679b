//! Everything at once, on two threads: failing connects and checks, broken returns, checkouts
//! dropped at random points, resizes and retains, then `close()`, with `get` alone and with
//! leases beside it. Afterwards every connection the manager made has been closed exactly once
//! and every count is back to 0.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::poll;
use pool::{Lease, Pool, PoolError, Pooled};
use support::{Lcg, Mock, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_then_close_closes_every_connection_exactly_once() {
    let mock = Mock::new();
    let mut rng = Lcg(3);
    for _ in 0..4000 {
        mock.push_connect(match rng.below(7) {
            0 => Plan::fail("refused").yielding(2),
            _ => Plan::ok().yielding(3),
        });
        mock.push_check(match rng.below(10) {
            0 => Plan::fail("stale").yielding(1),
            _ => Plan::ok().yielding(1),
        });
    }
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(1)
        .check_interval(Duration::ZERO)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");

    let detached = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1500 {
        let pool = pool.clone();
        let detached = Arc::clone(&detached);
        let polls = rng.below(30);
        let action = rng.below(6);
        tasks.push(tokio::spawn(async move {
            get_or_give_up(&pool, polls, action, Some(&detached)).await;
        }));
    }
    let admin = resizes_and_retains(&pool);
    for task in tasks {
        task.await.expect("task");
    }
    admin.await.expect("admin");

    pool.close().await;
    mock.until("every connection made is closed or detached", || {
        pool.status().connecting == 0 && mock.in_flight() == 0 && mock.live() == 0
    })
    .await;
    let status = pool.status();
    assert_eq!(
        (
            status.size,
            status.idle,
            status.in_use,
            status.connecting,
            status.waiting
        ),
        (0, 0, 0, 0, 0),
        "{status:?}"
    );
    // Detached connections are the user's: the pool never closes them. Every other one was
    // closed by the pool, once.
    let made = mock.connected() as u64;
    let never_closed = (0..made).filter(|&id| mock.closes_of(id) == 0).count();
    for id in 0..made {
        assert!(mock.closes_of(id) <= 1, "connection {id} closed twice");
    }
    let detached = detached.load(SeqCst);
    assert!(detached > 0);
    assert_eq!(
        never_closed, detached,
        "a connection was dropped without its close"
    );
    assert_eq!(mock.closes() + detached, mock.connected());
    assert!(mock.max_in_flight() <= 6);
    assert!(mock.connect_failures() > 0 && mock.checks() > 0);
}

/// How many leases each lease task of the storm asks for, one after another.
const LEASE_TRIES: usize = 3;

/// Asks for a lease and polls it `polls` times at most, then gives up (drops the future). A
/// lease handed out marks its connection broken (`action` 0), has the manager report it
/// broken through `is_broken_shared` (1), or neither, and is held for `action` turns.
async fn lease_or_give_up(
    pool: &Pool<Mock>,
    mock: &Mock,
    polls: u64,
    action: u64,
    leased: &AtomicUsize,
) {
    let mut lease = Box::pin(pool.lease());
    for _ in 0..polls {
        if let std::task::Poll::Ready(got) = poll!(lease.as_mut()) {
            match got {
                Ok(mut lease) => {
                    leased.fetch_add(1, SeqCst);
                    match action {
                        0 => Lease::mark_broken(&mut lease),
                        1 => mock.set_shared_broken(lease.id),
                        _ => {}
                    }
                    for _ in 0..action {
                        tokio::task::yield_now().await;
                    }
                }
                Err(PoolError::Connect(_)) => {}
                Err(other) => panic!("unexpected lease error {other:?}"),
            }
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// The same storm with leases beside `get`: connections carry up to 4 leases, half of the
/// tasks ask for leases instead, three one after another (each future dropped at a random
/// point too), and some leases mark their connection broken or have the manager report it
/// broken through `is_broken_shared`; then `close()`. Every connection made is closed exactly
/// once (no connection is detached here) and every count is back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_leases_beside_gets_then_close_closes_every_connection_exactly_once() {
    let mock = Mock::new();
    let mut rng = Lcg(5);
    for _ in 0..4000 {
        mock.push_connect(match rng.below(7) {
            0 => Plan::fail("refused").yielding(2),
            _ => Plan::ok().yielding(3),
        });
        mock.push_check(match rng.below(10) {
            0 => Plan::fail("stale").yielding(1),
            _ => Plan::ok().yielding(1),
        });
    }
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .max_streams(4)
        .min_idle(1)
        .check_interval(Duration::ZERO)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");

    let leased = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1500 {
        let pool = pool.clone();
        let mock = mock.clone();
        let leased = Arc::clone(&leased);
        let polls = rng.below(30);
        let action = rng.below(6);
        let wants_lease = rng.below(2) == 0;
        tasks.push(tokio::spawn(async move {
            if wants_lease {
                for _ in 0..LEASE_TRIES {
                    lease_or_give_up(&pool, &mock, polls, action, &leased).await;
                }
                return;
            }
            get_or_give_up(&pool, polls, action, None).await;
        }));
    }
    let admin = resizes_and_retains(&pool);
    for task in tasks {
        task.await.expect("task");
    }
    admin.await.expect("admin");

    pool.close().await;
    mock.until("every connection made is closed", || {
        pool.status().connecting == 0 && mock.in_flight() == 0 && mock.live() == 0
    })
    .await;
    let status = pool.status();
    assert_eq!(
        (
            status.size,
            status.idle,
            status.in_use,
            status.leases,
            status.discarded,
            status.connecting,
            status.waiting
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "{status:?}"
    );
    mock.assert_each_closed_once();
    assert_eq!(mock.closes(), mock.connected());
    assert!(leased.load(SeqCst) > 0, "no lease was handed out");
    assert!(status.counters.broken > 0, "no connection was found broken");
    assert!(mock.max_in_flight() <= 6);
    assert!(mock.connect_failures() > 0 && mock.checks() > 0);
}

/// Beside the storm: resizes the pool six times and retains four idle connections in five.
fn resizes_and_retains(pool: &Pool<Mock>) -> tokio::task::JoinHandle<()> {
    let pool = pool.clone();
    tokio::spawn(async move {
        for size in [2, 6, 1, 4, 3, 5] {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            pool.resize(size).expect("valid size");
            pool.retain(|conn, _| conn.id % 5 != 0);
        }
    })
}

/// A `get` polled `polls` times at most (dropped unfinished after that): served, the
/// connection is marked broken (`action` 0), reports itself broken (1), is detached (2, when
/// `detached` counts them) or is held across a yield; a failed connect is expected.
async fn get_or_give_up(
    pool: &Pool<Mock>,
    polls: u64,
    action: u64,
    detached: Option<&AtomicUsize>,
) {
    let mut get = Box::pin(pool.get());
    for _ in 0..polls {
        if let std::task::Poll::Ready(got) = poll!(get.as_mut()) {
            match got {
                Ok(mut conn) => match (action, detached) {
                    (0, _) => Pooled::mark_broken(&mut conn),
                    (1, _) => conn.broken = true,
                    (2, Some(detached)) => {
                        drop(Pooled::detach(conn));
                        detached.fetch_add(1, SeqCst);
                    }
                    _ => tokio::task::yield_now().await,
                },
                Err(PoolError::Connect(_)) => {}
                Err(other) => panic!("unexpected checkout error {other:?}"),
            }
            return;
        }
        tokio::task::yield_now().await;
    }
}
