//! Dropping `get()` futures at any point leaks nothing (deadpool's cancellation
//! matrix, at scale), and a caller that gives up never aborts a connect another caller needs.

mod support;

use std::pin::Pin;
use std::time::Duration;

use futures::poll;
use pool::{Pool, Pooled};
use support::{Lcg, Mock, Plan};
use tokio::time::Instant;

const MAX: usize = 4;

/// Asserts the pool is at rest and accounts for every connection: nothing checked out, nobody
/// in line, nothing connecting, within max_size, and exactly the connections the mock has alive.
async fn assert_at_rest(pool: &Pool<Mock>, mock: &Mock) {
    // Closes of discarded connections run in tasks of their own, a little after the discard;
    // a leaked connection would keep `live` above `size` for good, and this wait time out.
    mock.until("every connection is in the pool or closed", || {
        let status = pool.status();
        status.connecting == 0
            && mock.in_flight() == 0
            && mock.closes() == mock.closes_started()
            && mock.live() == status.size
            && status.counters.closed == mock.closes() as u64
    })
    .await;
    let status = pool.status();
    assert_eq!(status.in_use, 0, "a connection leaked: {status:?}");
    assert_eq!(status.waiting, 0, "a waiter leaked: {status:?}");
    assert!(status.size <= status.max_size, "{status:?}");
    assert_eq!(status.idle, status.size, "{status:?}");
    assert_eq!(
        mock.connected() - mock.closes(),
        status.size,
        "every connection not in the pool was closed"
    );
}

/// Thousands of checkouts, each dropped after a pseudo-random time: before its first poll
/// completes, while in line, mid-connect, mid-check, or after success (held, sometimes marked
/// broken). Connects take 10 ms and every checkout checks, taking 5 ms.
#[tokio::test(start_paused = true)]
async fn gets_dropped_at_random_points_leak_nothing() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(10)));
    mock.set_check(Plan::ok().after(Duration::from_millis(5)));
    let pool = Pool::builder(mock.clone())
        .max_size(MAX)
        .check_interval(Duration::ZERO)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let mut rng = Lcg(7);
    let mut cancelled = 0;
    let mut cancelled_mid_connect = 0;
    let mut served = 0;
    for _round in 0..50 {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let pool = pool.clone();
            let mock = mock.clone();
            let give_up = Duration::from_millis(rng.below(30));
            let hold = Duration::from_millis(rng.below(4));
            let break_it = rng.below(8) == 0;
            let start_after = Duration::from_millis(rng.below(10));
            let timer_first = rng.below(2) == 0;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(start_after).await;
                // Half the callers race the deadline after their checkout (a checkout that
                // completes in the same instant wins), half before it (the checkout is dropped
                // even when a connection was handed to it in that instant).
                let got = if timer_first {
                    tokio::select! {
                        biased;
                        () = tokio::time::sleep(give_up) => None,
                        got = pool.get() => Some(got),
                    }
                } else {
                    tokio::time::timeout(give_up, pool.get()).await.ok()
                };
                match got {
                    Some(Ok(mut conn)) => {
                        tokio::time::sleep(hold).await;
                        if break_it {
                            Pooled::mark_broken(&mut conn);
                        }
                        (1, 0, 0)
                    }
                    Some(Err(error)) => panic!("no checkout should fail here: {error:?}"),
                    None => (0, 1, usize::from(mock.in_flight() > 0)),
                }
            }));
        }
        for task in tasks {
            let (s, c, m) = task.await.expect("task");
            served += s;
            cancelled += c;
            cancelled_mid_connect += m;
        }
        assert_at_rest(&pool, &mock).await;
    }
    assert!(
        served > 100 && cancelled > 100,
        "{served} served, {cancelled} cancelled"
    );
    assert!(
        cancelled_mid_connect > 0,
        "no cancellation hit a connect in flight"
    );
    assert!(mock.checks_cancelled() > 0, "no cancellation hit a check");
    // Discarded connections free their slot before their close runs, so a connect may
    // overlap a close; but connects themselves never exceed the slots.
    assert!(
        mock.max_in_flight() <= MAX,
        "{} connects at once",
        mock.max_in_flight()
    );

    // The next get succeeds at once.
    mock.set_check(Plan::ok());
    let started = Instant::now();
    let conn = pool.try_get().await.expect("a connection, without waiting");
    assert_eq!(started.elapsed(), Duration::ZERO);
    drop(conn);
    let conn = pool.get().await.expect("a connection");
    assert_eq!(started.elapsed(), Duration::ZERO);
    drop(conn);
}

/// The same storm on two worker threads, without timers: each checkout is polled a
/// pseudo-random number of times (with scheduler turns between) and then dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_dropped_after_random_polls_leak_nothing_on_many_threads() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().yielding(4));
    mock.set_check(Plan::ok().yielding(2));
    let pool = Pool::builder(mock.clone())
        .max_size(MAX)
        .check_interval(Duration::ZERO)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let mut rng = Lcg(11);
    let mut tasks = Vec::new();
    for _ in 0..2000 {
        let pool = pool.clone();
        let polls = rng.below(40);
        let holds = rng.below(3);
        let break_it = rng.below(8) == 0;
        tasks.push(tokio::spawn(async move {
            let mut get = Box::pin(pool.get());
            for _ in 0..polls {
                if let std::task::Poll::Ready(got) = poll!(get.as_mut()) {
                    let mut conn = got.expect("no checkout should fail here");
                    for _ in 0..holds {
                        tokio::task::yield_now().await;
                    }
                    if break_it {
                        Pooled::mark_broken(&mut conn);
                    }
                    return true;
                }
                tokio::task::yield_now().await;
            }
            false // dropped while pending
        }));
    }
    let mut served = 0;
    for task in tasks {
        served += usize::from(task.await.expect("task"));
    }
    assert!(served > 0 && served < 2000, "{served} served");
    assert_at_rest(&pool, &mock).await;
    // Discarded connections free their slot before their close runs, so a connect may
    // overlap a close; but connects themselves never exceed the slots.
    assert!(
        mock.max_in_flight() <= MAX,
        "{} connects at once",
        mock.max_in_flight()
    );
    let conn = pool.try_get().await.expect("a connection, without waiting");
    drop(conn);
}

/// The caller a connect was started for gives up mid-connect; the caller behind it in line
/// gets that connection when it arrives, and no second connect is made.
#[tokio::test(start_paused = true)]
async fn cancelled_caller_never_aborts_a_connect_a_waiter_needs() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(100)));
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .build()
        .expect("valid settings");
    let started = Instant::now();
    let mut first = Box::pin(pool.get());
    assert!(poll!(first.as_mut()).is_pending());
    let mut second = Box::pin(pool.get());
    assert!(poll!(second.as_mut()).is_pending());
    assert_eq!((pool.status().connecting, pool.status().waiting), (1, 1));

    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first); // gives up mid-connect

    let conn = second
        .await
        .expect("the connect started for the first caller");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(conn.id, 0);
    assert_eq!(mock.connects(), 1);
    assert_eq!(mock.in_flight(), 0);
}

/// A waiter handed a free slot starts a connect, then gives up: the connect runs on and its
/// connection goes to the next waiter.
#[tokio::test(start_paused = true)]
async fn cancelled_waiter_mid_connect_passes_its_connection_on() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(100)));
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .build()
        .expect("valid settings");
    let mut held = pool.get().await.expect("connection 0");
    let mut second = Box::pin(pool.get());
    let mut third = Box::pin(pool.get());
    assert!(poll!(second.as_mut()).is_pending());
    assert!(poll!(third.as_mut()).is_pending());

    Pooled::mark_broken(&mut held);
    drop(held); // the slot goes to `second` ...
    assert!(poll!(second.as_mut()).is_pending()); // ... which starts its connect
    assert_eq!(pool.status().connecting, 1);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(second);

    let conn = third.await.expect("the connection second started");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(conn.id, 1);
    assert_eq!(mock.connects(), 2);
}

/// A waiter is handed a free slot but gives up before it looks: the slot passes to the next
/// waiter, who connects.
#[tokio::test(start_paused = true)]
async fn slot_of_a_waiter_that_gave_up_goes_to_the_next() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .build()
        .expect("valid settings");
    let mut held = pool.get().await.expect("connection 0");
    let mut second = Box::pin(pool.get());
    let mut third = Box::pin(pool.get());
    assert!(poll!(second.as_mut()).is_pending());
    assert!(poll!(third.as_mut()).is_pending());
    Pooled::mark_broken(&mut held);
    drop(held);
    drop(second);
    let conn = third.await.expect("the slot passed on");
    assert_eq!(conn.id, 1);
    let status = pool.status();
    assert_eq!(
        (
            status.size,
            status.in_use,
            status.waiting,
            status.connecting
        ),
        (1, 1, 0, 0)
    );
}

/// A checkout dropped in the middle of its check closes that connection (its state is
/// unknown) and frees its slot.
#[tokio::test(start_paused = true)]
async fn get_dropped_mid_check_closes_that_connection() {
    let mock = Mock::new();
    mock.set_check(Plan::ok().after(Duration::from_millis(100)));
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .check_interval(Duration::ZERO)
        .build()
        .expect("valid settings");
    drop(pool.get().await.expect("connection 0"));
    let mut get: Pin<Box<_>> = Box::pin(pool.get());
    assert!(poll!(get.as_mut()).is_pending());
    assert_eq!(mock.checks(), 1);
    assert_eq!(pool.status().in_use, 1, "out of the pool while checked");
    drop(get);
    assert_eq!(mock.checks_cancelled(), 1);
    let status = pool.status();
    assert_eq!((status.size, status.in_use, status.idle), (0, 0, 0));
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert_eq!(pool.get().await.expect("a fresh one").id, 1);
}
