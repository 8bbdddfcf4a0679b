//! Never more than `max_size` connections exist, however many tasks contend.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pool::Pool;
use support::{Mock, Plan};
use tokio::sync::Barrier;

const MAX: usize = 10;
const TASKS: usize = 1000;

/// 1000 tasks on a multi-thread runtime hammer a pool of 10. The mock asserts at every
/// connect that connections alive plus connects in flight stay within 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_size_with_1000_tasks_contending() {
    let mock = Mock::with_limit(MAX);
    // Connects take a few scheduler turns, so many tasks pile up while they run.
    mock.set_connect(Plan::ok().yielding(20));
    let pool = Pool::builder(mock.clone())
        .max_size(MAX)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let pool = pool.clone();
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let conn = pool.get().await.expect("a connection");
            let status = pool.status();
            assert!(status.size <= MAX, "size {} above max", status.size);
            assert!(status.size + status.connecting <= MAX);
            // Hold it a varying while.
            for _ in 0..(i % 7) {
                tokio::task::yield_now().await;
            }
            drop(conn);
        }));
    }
    for task in tasks {
        task.await.expect("task finished");
    }
    assert_eq!(mock.limit_breaches(), 0, "a connect started above max_size");
    assert!(mock.max_open() <= MAX, "max open {}", mock.max_open());
    // Nothing was discarded, so no connect was ever needed beyond the first MAX.
    assert!(mock.connected() <= MAX);
    let status = pool.status();
    assert!(status.size <= MAX);
    assert_eq!(status.in_use, 0);
    assert_eq!(status.waiting, 0);
    assert_eq!(
        status.size,
        mock.live(),
        "pool and mock agree on what is open"
    );
}

/// The same under a paused clock, with connects that take time and holders that keep their
/// connection a while: every task is served, within `max_size`.
#[tokio::test(start_paused = true)]
async fn never_more_than_max_size_with_slow_connects() {
    let mock = Mock::with_limit(MAX);
    mock.set_connect(Plan::ok().after(Duration::from_millis(30)));
    let pool = Pool::builder(mock.clone())
        .max_size(MAX)
        .wait_timeout(Duration::from_secs(600))
        .build()
        .expect("valid settings");
    let mut tasks = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let conn = pool.get().await.expect("a connection");
            tokio::time::sleep(Duration::from_millis(1 + (i as u64 % 5))).await;
            drop(conn);
        }));
    }
    for task in tasks {
        task.await.expect("task finished");
    }
    assert_eq!(mock.limit_breaches(), 0, "a connect started above max_size");
    assert_eq!(
        mock.max_open(),
        MAX,
        "the pool grew to max_size, no further"
    );
    assert_eq!(mock.connected(), MAX);
    let status = pool.status();
    assert_eq!((status.size, status.idle, status.in_use), (MAX, MAX, 0));
}
