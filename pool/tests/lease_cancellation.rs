//! Leases: dropping a `lease()` future at any point leaks nothing — no lease, no
//! slot, no promised room, no connection: during a connect, during a check, in line, and in
//! the instant a lease is granted to it.

mod support;

use std::task::Poll;
use std::time::Duration;

use futures::poll;
use pool::{Lease, Pool, PoolError};
use support::{Lcg, Mock, Plan, lease_builder};

const MAX_SIZE: usize = 4;
const MAX_STREAMS: usize = 4;

/// Takes every lease the pool can give at once, `max_size * max_streams`, each within a
/// bound (a leaked lease or promised room would make one wait); one more is refused.
async fn full_capacity(pool: &Pool<Mock>) -> Vec<Lease<Mock>> {
    let mut leases = Vec::new();
    for n in 0..MAX_SIZE * MAX_STREAMS {
        match tokio::time::timeout(Duration::from_secs(5), pool.lease()).await {
            Ok(Ok(lease)) => leases.push(lease),
            Ok(Err(error)) => panic!("lease {n} of the full capacity: {error:?}"),
            Err(_) => panic!("lease {n} of the full capacity waited: something leaked"),
        }
    }
    assert!(
        matches!(pool.try_lease().await, Err(PoolError::Timeout(_))),
        "no more than the capacity"
    );
    leases
}

/// 1000 `lease()` futures on two threads, each dropped after a pseudo-random number of polls:
/// before its first, in line, mid-connect, mid-check (every lease of an idle connection is
/// checked here), or after it got its lease (held a little, sometimes marked broken).
/// Afterwards no lease, waiter or connect is left, and the full capacity is usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_cancelled_leases_leaks_nothing() {
    let mock = Mock::new();
    let mut rng = Lcg(5);
    for _ in 0..3000 {
        mock.push_connect(match rng.below(8) {
            0 => Plan::fail("refused").yielding(2),
            _ => Plan::ok().yielding(3),
        });
        mock.push_check(match rng.below(10) {
            0 => Plan::fail("stale").yielding(1),
            _ => Plan::ok().yielding(2),
        });
    }
    let pool = Pool::builder(mock.clone())
        .max_size(MAX_SIZE)
        .max_streams(MAX_STREAMS)
        .check_interval(Duration::ZERO)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let pool = pool.clone();
        let polls = rng.below(12);
        let hold = rng.below(4);
        let break_it = rng.below(10) == 0;
        tasks.push(tokio::spawn(async move {
            let mut lease = Box::pin(pool.lease());
            for _ in 0..polls {
                if let Poll::Ready(got) = poll!(lease.as_mut()) {
                    match got {
                        Ok(mut lease) => {
                            for _ in 0..hold {
                                tokio::task::yield_now().await;
                            }
                            if break_it {
                                Lease::mark_broken(&mut lease);
                            }
                        }
                        Err(PoolError::Connect(_)) => {}
                        Err(other) => panic!("unexpected lease error {other:?}"),
                    }
                    return true;
                }
                tokio::task::yield_now().await;
            }
            false
        }));
    }
    let mut served = 0;
    for task in tasks {
        served += usize::from(task.await.expect("task"));
    }
    assert!(served > 0 && served < 1000, "{served} of 1000 served");
    mock.until("every connect ended", || {
        pool.status().connecting == 0 && mock.in_flight() == 0
    })
    .await;
    let status = pool.status();
    assert_eq!(
        (status.leases, status.waiting, status.in_use),
        (0, 0, 0),
        "{status:?}"
    );
    let leases = full_capacity(&pool).await;
    let status = pool.status();
    assert_eq!(
        (status.size, status.leases),
        (MAX_SIZE, MAX_SIZE * MAX_STREAMS)
    );
    drop(leases);
    pool.close().await;
    mock.until("every connection made is closed", || mock.live() == 0)
        .await;
    for id in 0..mock.connected() as u64 {
        assert_eq!(mock.closes_of(id), 1, "connection {id}");
    }
}

fn pool_of(mock: &Mock, max_size: usize, max_streams: usize) -> Pool<Mock> {
    lease_builder(mock, max_size, max_streams)
        .check_interval(Duration::from_secs(1))
        .build()
        .expect("valid settings")
}

/// A lease dropped in the middle of its check: the connection (state unknown) is closed,
/// its slot goes to the caller that waited for the check, which opens a fresh one. The room
/// the check promised to callers arriving meanwhile is taken back: once the fresh connection
/// is full, the next caller opens another rather than wait for leases that never come.
#[tokio::test(start_paused = true)]
async fn a_lease_dropped_during_its_check_closes_the_connection_and_frees_its_slot() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, 4);
    drop(pool.lease().await.expect("a lease"));
    tokio::time::advance(Duration::from_secs(2)).await;
    mock.push_check(Plan::hang());
    let mut checking = Box::pin(pool.lease());
    assert!(poll!(checking.as_mut()).is_pending());
    assert_eq!(mock.checks(), 1);
    let mut waiting = Box::pin(pool.lease());
    assert!(poll!(waiting.as_mut()).is_pending());
    assert_eq!(pool.status().waiting, 1, "it waits for the check");
    drop(checking);
    assert_eq!(mock.checks_cancelled(), 1);
    let lease = waiting.await.expect("a lease on a fresh connection");
    assert_eq!(lease.id, 1);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    let status = pool.status();
    assert_eq!(
        (status.size, status.leases, status.waiting),
        (1, 1, 0),
        "{status:?}"
    );
    let mut leases = vec![lease];
    for _ in 0..3 {
        leases.push(pool.lease().await.expect("a lease beside"));
    }
    assert!(leases.iter().all(|lease| lease.id == 1));
    let next = pool.lease().await.expect("a lease on another connection");
    assert_eq!(next.id, 2);
}

/// A lease dropped while its connect runs: the connect goes on, and its connection goes to the
/// caller that waited for it. The room it promised is not leaked: once that connection is
/// full, the next caller opens another rather than wait for a connection that is not coming.
#[tokio::test(start_paused = true)]
async fn a_lease_dropped_during_its_connect_passes_the_connection_on() {
    dropped_opener_passes_the_connection_on(false).await;
}

/// The same when the connection had already reached the dropped caller, unseen.
#[tokio::test(start_paused = true)]
async fn a_lease_dropped_as_its_connection_arrives_passes_it_on() {
    dropped_opener_passes_the_connection_on(true).await;
}

async fn dropped_opener_passes_the_connection_on(arrived: bool) {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(10)));
    let pool = pool_of(&mock, 2, 4);
    let mut opening = Box::pin(pool.lease());
    assert!(poll!(opening.as_mut()).is_pending());
    let mut waiting = Box::pin(pool.lease());
    assert!(poll!(waiting.as_mut()).is_pending());
    if arrived {
        // The connect ends and sends its connection to `opening`, which is not polled.
        mock.until("the connect ended", || pool.status().connecting == 0)
            .await;
    }
    drop(opening);
    let mut leases = vec![waiting.await.expect("the connection opened for the other")];
    assert_eq!(leases[0].id, 0);
    for _ in 0..3 {
        leases.push(pool.lease().await.expect("a lease"));
    }
    assert!(leases.iter().all(|l| l.id == 0));
    assert_eq!(mock.connects(), 1);
    let fifth = tokio::time::timeout(Duration::from_secs(1), pool.lease())
        .await
        .expect("no wait for room promised by a connect that ended")
        .expect("a lease");
    assert_eq!(fifth.id, 1);
}

/// The same with nobody waiting: the connection goes idle, and nothing stays promised.
#[tokio::test(start_paused = true)]
async fn a_lease_dropped_during_its_connect_leaves_the_connection_idle() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(10)));
    let pool = pool_of(&mock, 2, 2);
    let mut opening = Box::pin(pool.lease());
    assert!(poll!(opening.as_mut()).is_pending());
    drop(opening);
    mock.until("the connect ended", || pool.status().idle == 1)
        .await;
    let leases = futures::future::try_join_all((0..4).map(|_| pool.lease()))
        .await
        .expect("every lease");
    let ids: Vec<u64> = leases.iter().map(|l| l.id).collect();
    assert_eq!(ids, [0, 0, 1, 1]);
}

/// A caller that leaves the line takes nothing with it; one granted a lease in the very
/// instant it left hands that lease's room to the next caller.
#[tokio::test(start_paused = true)]
async fn a_lease_dropped_in_line_even_when_granted_in_that_instant_leaks_nothing() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 2);
    let first = pool.lease().await.expect("a lease");
    let second = pool.lease().await.expect("a lease");
    let mut gone = Box::pin(pool.lease());
    let mut granted = Box::pin(pool.lease());
    let mut next = Box::pin(pool.lease());
    assert!(poll!(gone.as_mut()).is_pending());
    assert!(poll!(granted.as_mut()).is_pending());
    assert!(poll!(next.as_mut()).is_pending());
    assert_eq!(pool.status().waiting, 3);
    // Leaves the line before anything reached it.
    drop(gone);
    assert_eq!(pool.status().waiting, 2);
    // The room of `first` is granted to `granted`, which leaves without looking.
    drop(first);
    assert_eq!((pool.status().waiting, pool.status().leases), (1, 2));
    drop(granted);
    let lease = next.await.expect("the room passed on");
    assert_eq!(lease.id, 0);
    let status = pool.status();
    assert_eq!((status.leases, status.waiting), (2, 0), "{status:?}");
    drop((second, lease));
    assert_eq!(pool.status().leases, 0);
    assert_eq!(mock.connects(), 1);
}
