//! Leases: exclusive `get` and shared `lease` use one pool. `get` takes only a
//! connection with no lease; a lease never goes to a connection held by `get`; a `get` waiting
//! behind a leased connection is served when its last lease ends.

mod support;

use std::time::Duration;

use futures::poll;
use pool::{Lease, Pool};
use support::{Mock, lease_builder, until_waiting};

fn pool_of(mock: &Mock, max_size: usize, max_streams: usize) -> Pool<Mock> {
    lease_builder(mock, max_size, max_streams)
        .build()
        .expect("valid settings")
}

/// A connection with a lease (and room for more) is not for `get`: it opens another. Once the
/// lease ends, `get` takes the connection, which then carries no lease until it comes back.
#[tokio::test(start_paused = true)]
async fn get_takes_only_a_connection_with_no_lease() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, 4);
    let lease = pool.lease().await.expect("a lease");
    assert_eq!(lease.id, 0);
    let conn = pool.get().await.expect("a connection");
    assert_eq!(conn.id, 1, "the leased connection is not for get");
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use, status.leases),
        (2, 2, 1),
        "{status:?}"
    );
    drop(conn);
    drop(lease);
    // Connection 0 has no lease now: `get` may take it, and leases then go elsewhere.
    let first = pool.get().await.expect("a connection");
    let second = pool.get().await.expect("a connection");
    let mut ids = [first.id, second.id];
    ids.sort_unstable();
    assert_eq!(
        ids,
        [0, 1],
        "both idle connections, shared or not, serve get"
    );
    let status = pool.status();
    assert_eq!((status.in_use, status.leases), (2, 0), "{status:?}");
    assert_eq!(mock.connects(), 2);
}

/// A connection held by `get` takes no lease: a lease opens another, and with the pool at
/// `max_size` it waits for the `get` to end.
#[tokio::test(start_paused = true)]
async fn a_lease_never_goes_to_a_connection_held_by_get() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, 4);
    let held = pool.get().await.expect("a connection");
    let lease = pool.lease().await.expect("a lease");
    assert_eq!((held.id, lease.id), (0, 1));
    let other = pool.lease().await.expect("a lease");
    assert_eq!(
        other.id, 1,
        "the room is on the shared connection, not on the held one"
    );
    // Full: connection 1 carries its leases (say 4), connection 0 is held by get.
    let more: Vec<Lease<Mock>> = vec![
        pool.lease().await.expect("a lease"),
        pool.lease().await.expect("a lease"),
    ];
    assert!(more.iter().all(|l| l.id == 1));
    let mut waiting = Box::pin(pool.lease());
    assert!(
        poll!(waiting.as_mut()).is_pending(),
        "no room but on the held connection"
    );
    assert_eq!(pool.status().waiting, 1);
    drop(held);
    let lease = waiting.await.expect("the returned connection");
    assert_eq!(lease.id, 0);
    assert_eq!(mock.connects(), 2);
}

/// A `get` waiting behind a leased connection gets it when its last lease ends, not before.
#[tokio::test(start_paused = true)]
async fn get_waiting_behind_a_leased_connection_is_served_when_its_last_lease_ends() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let first = pool.lease().await.expect("a lease");
    let second = pool.lease().await.expect("a lease");
    let mut get = Box::pin(pool.get());
    assert!(poll!(get.as_mut()).is_pending());
    assert_eq!(pool.status().waiting, 1);
    drop(first);
    assert!(
        poll!(get.as_mut()).is_pending(),
        "one lease still uses the connection"
    );
    drop(second);
    let conn = get.await.expect("the connection, free now");
    assert_eq!(conn.id, 0);
    let status = pool.status();
    assert_eq!(
        (status.in_use, status.leases, status.idle),
        (1, 0, 0),
        "{status:?}"
    );
    assert_eq!(mock.connects(), 1);
}

/// Lease callers waiting behind a `get` share the connection it returns: the first takes it
/// and the others get leases on it at once.
#[tokio::test(start_paused = true)]
async fn a_connection_returned_by_get_is_shared_by_the_lease_callers_waiting() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let held = pool.get().await.expect("a connection");
    let mut tasks = Vec::new();
    for i in 0..3 {
        let waiter = pool.clone();
        tasks.push(tokio::spawn(async move { waiter.lease().await }));
        until_waiting(&pool, i + 1).await;
    }
    drop(held);
    let mut leases = Vec::new();
    for task in tasks {
        leases.push(task.await.expect("task").expect("a lease"));
    }
    assert!(leases.iter().all(|l| l.id == 0));
    let status = pool.status();
    assert_eq!((status.leases, status.in_use, status.waiting), (3, 1, 0));
    assert_eq!(mock.connects(), 1);
}

/// Leases that overlap without end do not starve a `get`: while it waits, the connection with
/// the fewest leases takes no new one, so its leases run out and the `get` takes it; leasing
/// goes on on the other connection, and resumes on both once the `get` is served.
#[tokio::test(start_paused = true)]
async fn overlapping_leases_do_not_starve_a_waiting_get() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .max_streams(8)
        .wait_timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings");
    // A stream of leases, each held 30 ms, one taken every 3 ms (about ten at a time): both
    // connections always carry some, for 2 s.
    let leasing = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut holders = Vec::new();
            for _ in 0..666 {
                let pool = pool.clone();
                holders.push(tokio::spawn(async move {
                    let lease = pool.lease().await.expect("leases keep being served");
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    drop(lease);
                }));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            for holder in holders {
                holder.await.expect("lease task");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pool.status().size, 2, "{:?}", pool.status());
    assert!(pool.status().leases > 0);
    let started = tokio::time::Instant::now();
    let conn = pool.get().await.expect("served within its wait timeout");
    // The kept connection's leases run out within one hold.
    assert!(
        started.elapsed() <= Duration::from_millis(30),
        "{:?}",
        started.elapsed()
    );
    drop(conn);
    leasing.await.expect("the leasing task");
}

/// While a `get` waits, a lease caller queues rather than take room on the connection kept
/// for that `get`; when the `get` gives up, the lease caller is served at once on that room,
/// without waiting for a lease to end.
#[tokio::test(start_paused = true)]
async fn a_lease_held_back_for_a_get_is_served_when_the_get_leaves() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .max_streams(4)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings");
    let long = pool.lease().await.expect("a lease held throughout");
    let getter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(100), pool.get())
                .await
                .is_err()
        })
    };
    until_waiting(&pool, 1).await;
    let leaser = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let lease = pool.lease().await.expect("a lease");
            (lease.id, tokio::time::Instant::now())
        })
    };
    until_waiting(&pool, 2).await;
    assert_eq!(
        pool.status().leases,
        1,
        "the second lease waits behind the get"
    );
    let gave_up_at = tokio::time::Instant::now() + Duration::from_millis(100);
    assert!(getter.await.expect("getter task"), "the get gave up");
    let (id, served_at) = leaser.await.expect("leaser task");
    assert_eq!(id, 0);
    assert!(served_at <= gave_up_at, "served when the get left");
    assert_eq!(pool.status().leases, 1);
    drop(long);
}
