//! Waiters are served in the order they came; a waiter that gave up is skipped and
//! the connection it would have had goes to the next one (mobc #63). Also the idle order.

mod support;

use std::time::Duration;

use futures::poll;
use pool::{IdleOrder, Pool};
use support::{Mock, Plan, until_waiting};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn pool_of(mock: &Mock, max_size: usize) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(max_size)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings")
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_fifo() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let held = pool.get().await.expect("the only connection");
    let (served, mut order) = mpsc::unbounded_channel();
    const WAITERS: usize = 20;
    for i in 0..WAITERS {
        let waiter = pool.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let conn = waiter.get().await.expect("served in turn");
            served.send((i, conn.id)).expect("test alive");
            // Hold it across a scheduler turn, so later waiters really wait.
            tokio::task::yield_now().await;
            drop(conn);
        });
        until_waiting(&pool, i + 1).await;
    }
    // Only the waiters send from now on: one that is never served ends the wait below.
    drop(served);
    drop(held);
    for expected in 0..WAITERS {
        let (i, id) = order.recv().await.expect("every waiter is served");
        assert_eq!(i, expected, "waiters must be served in arrival order");
        assert_eq!(id, 0, "the one connection is handed from waiter to waiter");
    }
    assert_eq!(mock.connects(), 1);
    assert_eq!(pool.status().waiting, 0);
}

/// The connection was already handed to a waiter that then gave up before it looked: it goes
/// to the next waiter, not to the idle list, and no connect is made for it.
#[tokio::test(start_paused = true)]
async fn connection_of_a_waiter_that_gave_up_goes_to_the_next() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let held = pool.get().await.expect("the only connection");
    let mut first = Box::pin(pool.get());
    let mut second = Box::pin(pool.get());
    assert!(poll!(first.as_mut()).is_pending());
    assert!(poll!(second.as_mut()).is_pending());
    assert_eq!(pool.status().waiting, 2);

    // The return hands the connection to `first` ...
    drop(held);
    assert_eq!(pool.status().waiting, 1);
    // ... which gives up without ever seeing it.
    drop(first);

    let conn = second.await.expect("the next waiter is served");
    assert_eq!(conn.id, 0, "the same connection, passed on");
    assert_eq!(mock.connects(), 1, "no connect was needed");
    let status = pool.status();
    assert_eq!((status.waiting, status.in_use, status.idle), (0, 1, 0));
}

/// A waiter whose own deadline passed leaves the line: the next return skips it.
#[tokio::test(start_paused = true)]
async fn waiter_that_timed_out_is_skipped() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let held = pool.get().await.expect("the only connection");
    let impatient = {
        let pool = pool.clone();
        tokio::spawn(
            async move { tokio::time::timeout(Duration::from_millis(50), pool.get()).await },
        )
    };
    until_waiting(&pool, 1).await;
    let patient = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|conn| conn.id) })
    };
    until_waiting(&pool, 2).await;

    let started = Instant::now();
    assert!(
        impatient.await.expect("task").is_err(),
        "gave up after 50 ms"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(pool.status().waiting, 1, "the impatient one left the line");

    drop(held);
    let id = patient
        .await
        .expect("task")
        .expect("the patient one is served");
    assert_eq!(id, 0);
    assert_eq!(mock.connects(), 1);
}

/// Many waiters, every other one gives up while in line; the rest are still served in order.
#[tokio::test(start_paused = true)]
async fn waiters_that_gave_up_do_not_disturb_the_order() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1);
    let held = pool.get().await.expect("the only connection");
    let mut line = Vec::new();
    for _ in 0..10 {
        let mut waiter = Box::pin(pool.get());
        assert!(poll!(waiter.as_mut()).is_pending());
        line.push(Some(waiter));
    }
    for slot in line.iter_mut().step_by(2) {
        *slot = None; // gives up
    }
    assert_eq!(pool.status().waiting, 5);
    drop(held);
    let mut served = Vec::new();
    for (i, waiter) in line.into_iter().enumerate() {
        if let Some(mut waiter) = waiter {
            let conn = waiter.as_mut().await.expect("served");
            served.push(i);
            drop(conn);
        }
    }
    assert_eq!(served, vec![1, 3, 5, 7, 9]);
    assert_eq!(mock.connects(), 1);
}

async fn idle_ids(pool: &Pool<Mock>, n: usize) -> Vec<u64> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(pool.get().await.expect("a connection"));
    }
    conns.iter().map(|c| c.id).collect()
}

#[tokio::test(start_paused = true)]
async fn idle_order_lifo_takes_the_last_returned() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 3);
    let conns = [
        pool.get().await.expect("0"),
        pool.get().await.expect("1"),
        pool.get().await.expect("2"),
    ];
    drop(conns); // returned in order 0, 1, 2
    assert_eq!(idle_ids(&pool, 3).await, vec![2, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn idle_order_fifo_takes_the_first_returned() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(3)
        .idle_order(IdleOrder::Fifo)
        .build()
        .expect("valid settings");
    let conns = [
        pool.get().await.expect("0"),
        pool.get().await.expect("1"),
        pool.get().await.expect("2"),
    ];
    drop(conns);
    assert_eq!(idle_ids(&pool, 3).await, vec![0, 1, 2]);
}

/// Three callers in line; the connection handed to the first fails its check. The first keeps
/// its place (it opens a fresh connection in the slot at once), so they are served in the
/// order they came.
#[tokio::test(start_paused = true)]
async fn waiter_keeps_its_place_when_its_connection_fails_its_check() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .check_interval(Duration::ZERO)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings");
    let held = pool.get().await.expect("the only connection");
    mock.fail_checks_of(held.id);
    let (served, mut order) = mpsc::unbounded_channel();
    for i in 0..3 {
        let waiter = pool.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let conn = waiter.get().await.expect("served in turn");
            served.send((i, conn.id)).expect("test alive");
            tokio::task::yield_now().await;
            drop(conn);
        });
        until_waiting(&pool, i + 1).await;
    }
    // Only the waiters send from now on: one that is never served ends the wait below.
    drop(served);
    drop(held);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(order.recv().await.expect("every waiter is served"));
    }
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2],
        "first come, first served"
    );
    assert!(
        got.iter().all(|(_, id)| *id == 1),
        "connection 0 never went out"
    );
    assert_eq!(pool.status().counters.check_failures, 1);
}

/// A caller whose connect failed pauses out of line (its slot goes to the oldest waiter) and
/// then waits at the place it came at, ahead of a caller that came after it: first come,
/// first served holds through a failed connect, for `get` as for `lease`.
#[tokio::test(start_paused = true)]
async fn a_get_caller_keeps_its_place_after_a_failed_connect() {
    keeps_its_place_after_a_failed_connect(false).await;
}

/// [`a_get_caller_keeps_its_place_after_a_failed_connect`] for lease callers (one lease per
/// connection, the default `max_streams`).
#[tokio::test(start_paused = true)]
async fn a_lease_caller_keeps_its_place_after_a_failed_connect() {
    keeps_its_place_after_a_failed_connect(true).await;
}

/// A connection taken by `get` or by `lease` (held until the box is dropped), and its id.
async fn take(pool: &Pool<Mock>, lease: bool) -> (Box<dyn Send>, u64) {
    if lease {
        let held = pool.lease().await.expect("served in turn");
        let id = held.id;
        (Box::new(held), id)
    } else {
        let held = pool.get().await.expect("served in turn");
        let id = held.id;
        (Box::new(held), id)
    }
}

async fn keeps_its_place_after_a_failed_connect(lease: bool) {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .wait_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let (held, _) = take(&pool, lease).await;
    // The first caller's connect fails after 100 ms; the next one hangs, holding its slot.
    mock.push_connect(Plan::fail("connection refused").after(Duration::from_millis(100)));
    mock.push_connect(Plan::hang());
    let (served, mut order) = mpsc::unbounded_channel();
    let caller = |name: &'static str| {
        let pool = pool.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let (held, id) = take(&pool, lease).await;
            served.send((name, id)).expect("test alive");
            drop(held);
        })
    };
    let _first = caller("first");
    mock.until("the first caller's connect", || mock.in_flight() == 1)
        .await;
    // The second takes the slot the failed connect gives back; the third waits behind it.
    let _second = caller("second");
    until_waiting(&pool, 1).await;
    let _third = caller("third");
    until_waiting(&pool, 2).await;

    tokio::time::advance(Duration::from_millis(100)).await;
    mock.until("the failed connect", || mock.connect_failures() == 1)
        .await;
    // Past the first caller's pause (the backoff's first step is far below a second).
    tokio::time::advance(Duration::from_secs(2)).await;
    until_waiting(&pool, 2).await;
    let status = pool.status();
    assert_eq!(
        (status.connecting, status.waiting),
        (1, 2),
        "the second caller connects; the first and the third wait"
    );

    drop(held);
    let (name, id) = order.recv().await.expect("a waiter is served");
    assert_eq!(
        (name, id),
        ("first", 0),
        "the caller that came first is served first"
    );
}
