//! Leases: at most `max_streams` leases per connection and `max_size`
//! connections, however many callers; when every connection is full a caller waits in the
//! same first-come, first-served line as `get`, up to `wait_timeout`, and an ended lease goes
//! to the oldest caller waiting.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool::{Lease, Pool, PoolError, TimeoutKind};
use support::{Lcg, Mock, Plan, until_waiting};
use tokio::sync::mpsc;
use tokio::time::Instant;

const MAX_SIZE: usize = 4;
const MAX_STREAMS: usize = 8;

/// Leases held now on each connection id, as the callers see them: counted after the lease
/// is handed out and uncounted before it ends, so never above the pool's own count.
struct PerConn(Mutex<Vec<usize>>);

impl PerConn {
    fn enter(&self, id: u64) -> usize {
        let mut held = self.0.lock().expect("not poisoned");
        let at = usize::try_from(id).expect("small id");
        if held.len() <= at {
            held.resize(at + 1, 0);
        }
        held[at] += 1;
        held[at]
    }

    fn leave(&self, id: u64) {
        let mut held = self.0.lock().expect("not poisoned");
        held[usize::try_from(id).expect("small id")] -= 1;
    }
}

/// 1000 tasks on two threads, each a `lease` or a `try_lease`, holding what it got for a
/// random number of scheduler turns. After every handout: at most `max_streams` leases on its
/// connection, at most `max_size` connections alive (the mock counts them) or in the pool's
/// status, at most `max_size * max_streams` leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_never_exceed_max_streams_or_max_size_under_1000_tasks() {
    let mock = Mock::with_limit(MAX_SIZE);
    mock.set_connect(Plan::ok().yielding(3));
    let pool = Pool::builder(mock.clone())
        .max_size(MAX_SIZE)
        .max_streams(MAX_STREAMS)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let per_conn = Arc::new(PerConn(Mutex::new(Vec::new())));
    let refused = Arc::new(AtomicUsize::new(0));
    let tried = Arc::new(AtomicUsize::new(0));
    let mut rng = Lcg(11);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let pool = pool.clone();
        let mock = mock.clone();
        let per_conn = Arc::clone(&per_conn);
        let refused = Arc::clone(&refused);
        let tried = Arc::clone(&tried);
        let try_only = rng.below(4) == 0;
        let hold = rng.below(20);
        tasks.push(tokio::spawn(async move {
            let got = if try_only {
                tried.fetch_add(1, SeqCst);
                pool.try_lease().await
            } else {
                pool.lease().await
            };
            let lease = match got {
                Ok(lease) => lease,
                Err(PoolError::Timeout(TimeoutKind::Wait { .. })) if try_only => {
                    refused.fetch_add(1, SeqCst);
                    return;
                }
                Err(error) => panic!("no lease should fail here: {error:?}"),
            };
            let on_conn = per_conn.enter(lease.id);
            assert!(on_conn <= MAX_STREAMS, "{on_conn} leases on one connection");
            let status = pool.status();
            assert!(status.size <= MAX_SIZE, "{status:?}");
            assert!(status.leases <= MAX_SIZE * MAX_STREAMS, "{status:?}");
            assert!(mock.live() <= MAX_SIZE, "{} connections alive", mock.live());
            for _ in 0..hold {
                tokio::task::yield_now().await;
            }
            per_conn.leave(lease.id);
            drop(lease);
        }));
    }
    for task in tasks {
        task.await.expect("every task ends without a panic");
    }
    let status = pool.status();
    assert_eq!((status.leases, status.in_use, status.waiting), (0, 0, 0));
    assert_eq!(mock.limit_breaches(), 0, "a connect above max_size");
    assert!(mock.connects() <= MAX_SIZE, "{} connects", mock.connects());
    let (tried, refused) = (tried.load(SeqCst), refused.load(SeqCst));
    assert!(
        tried > 0 && refused < tried,
        "{refused} of {tried} try_leases refused"
    );
    pool.close().await;
    mock.until_closes(mock.connected()).await;
    mock.assert_each_closed_once();
}

fn full_pool(mock: &Mock, max_streams: usize) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(1)
        .max_streams(max_streams)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings")
}

/// Every connection full: callers wait in line, and each lease that ends goes to the oldest
/// of them.
#[tokio::test(start_paused = true)]
async fn an_ended_lease_goes_to_the_oldest_waiter() {
    let mock = Mock::new();
    let pool = full_pool(&mock, 2);
    let first = pool.lease().await.expect("a lease");
    let kept = pool.lease().await.expect("a lease");
    let (served, mut order) = mpsc::unbounded_channel();
    const WAITERS: usize = 10;
    for i in 0..WAITERS {
        let waiter = pool.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let lease = waiter.lease().await.expect("served in turn");
            served.send((i, lease.id)).expect("test alive");
            // Held across a scheduler turn, so later waiters really wait.
            tokio::task::yield_now().await;
            drop(lease);
        });
        until_waiting(&pool, i + 1).await;
    }
    // Only the waiters send from now on: one that is never served ends the wait below.
    drop(served);
    drop(first);
    for expected in 0..WAITERS {
        let (i, id) = order.recv().await.expect("every waiter is served");
        assert_eq!(i, expected, "waiters must be served in arrival order");
        assert_eq!(id, 0);
    }
    assert_eq!(mock.connects(), 1);
    mock.until("the last waiter's lease ended", || {
        pool.status().leases == 1
    })
    .await;
    assert_eq!(pool.status().waiting, 0);
    drop(kept);
}

/// `get` and `lease` callers wait in one line: with every connection taken, each connection
/// that frees goes to the oldest caller, whichever it asked for.
#[tokio::test(start_paused = true)]
async fn leases_and_gets_wait_in_one_fifo_line() {
    let mock = Mock::new();
    let pool = full_pool(&mock, 1);
    let held = pool.lease().await.expect("a lease");
    let (served, mut order) = mpsc::unbounded_channel();
    const WAITERS: usize = 8;
    for i in 0..WAITERS {
        let waiter = pool.clone();
        let served = served.clone();
        tokio::spawn(async move {
            if i % 2 == 0 {
                let conn = waiter.get().await.expect("served in turn");
                served.send(i).expect("test alive");
                tokio::task::yield_now().await;
                drop(conn);
            } else {
                let lease = waiter.lease().await.expect("served in turn");
                served.send(i).expect("test alive");
                tokio::task::yield_now().await;
                drop(lease);
            }
        });
        until_waiting(&pool, i + 1).await;
    }
    // Only the waiters send from now on: one that is never served ends the wait below.
    drop(served);
    drop(held);
    for expected in 0..WAITERS {
        let i = order.recv().await.expect("every waiter is served");
        assert_eq!(
            i, expected,
            "get and lease callers are served in arrival order"
        );
    }
    assert_eq!(mock.connects(), 1);
}

/// A lease waits up to `wait_timeout`, then fails with `TimeoutKind::Wait`; `try_lease`
/// never waits.
#[tokio::test(start_paused = true)]
async fn a_lease_waits_up_to_wait_timeout() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .max_streams(2)
        .wait_timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings");
    let held: Vec<Lease<Mock>> = vec![
        pool.lease().await.expect("a lease"),
        pool.lease().await.expect("a lease"),
    ];
    let start = Instant::now();
    match pool.try_lease().await {
        Err(PoolError::Timeout(TimeoutKind::Wait { .. })) => {}
        other => panic!("try_lease on a full pool: {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "try_lease never waits");
    match pool.lease().await {
        Err(PoolError::Timeout(TimeoutKind::Wait { .. })) => {}
        other => panic!("lease on a full pool: {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let status = pool.status();
    assert_eq!((status.waiting, status.leases), (0, 2));
    assert_eq!(status.counters.timeouts, 2);
    drop(held);
    assert!(
        pool.try_lease().await.is_ok(),
        "room again once a lease ends"
    );
}
