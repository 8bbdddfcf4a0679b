//! Leases: a lease goes to the open connection with the fewest leases among those
//! with room; a new connection opens only when every open or opening one is full, and callers
//! arriving meanwhile wait for the opening one.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use pool::{Lease, Pool};
use support::{Mock, Plan, lease_builder};

fn pool_of(mock: &Mock, max_size: usize, max_streams: usize) -> Pool<Mock> {
    lease_builder(mock, max_size, max_streams)
        .build()
        .expect("valid settings")
}

/// 64 concurrent leases on an empty pool with `max_streams(16)`, `max_size(8)`: exactly 4
/// connects, 16 leases each.
#[tokio::test(start_paused = true)]
async fn concurrent_leases_fill_connections_before_opening_more() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(10)));
    let pool = pool_of(&mock, 8, 16);
    let leases = futures::future::try_join_all((0..64).map(|_| pool.lease()))
        .await
        .expect("every lease");
    assert_eq!(mock.connects(), 4, "one connect per 16 leases");
    let mut per_conn: HashMap<u64, usize> = HashMap::new();
    for lease in &leases {
        *per_conn.entry(lease.id).or_default() += 1;
    }
    assert_eq!(per_conn.len(), 4);
    assert!(per_conn.values().all(|&n| n == 16), "{per_conn:?}");
    let status = pool.status();
    assert_eq!((status.size, status.in_use, status.idle), (4, 4, 0));
    assert_eq!(status.leases, 64);
    drop(leases);
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use, status.idle, status.leases),
        (4, 0, 4, 0)
    );
}

/// With room on two connections, a new lease goes to the one with fewer leases.
#[tokio::test(start_paused = true)]
async fn a_lease_goes_to_the_least_leased_connection() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, 4);
    // Connection 0 gets four leases (full), then connection 1 opens for the fifth.
    let mut held: Vec<Lease<Mock>> = Vec::new();
    for _ in 0..5 {
        held.push(pool.lease().await.expect("a lease"));
    }
    let ids: Vec<u64> = held.iter().map(|l| l.id).collect();
    assert_eq!(ids, [0, 0, 0, 0, 1]);
    // Two leases on 0 end: 0 has 2, 1 has 1. The next lease goes to 1 (fewest), then 0/1 tie.
    held.remove(0);
    held.remove(0);
    let next = pool.lease().await.expect("a lease");
    assert_eq!(next.id, 1, "the connection with the fewest leases");
    assert_eq!(mock.connects(), 2);
}

/// Callers that arrive while a connection is opening wait for it, up to `max_streams` of them
/// (the opener's lease counted): the next caller opens a second connection.
#[tokio::test(start_paused = true)]
async fn callers_arriving_during_an_open_wait_for_it_up_to_max_streams() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(10)));
    let pool = pool_of(&mock, 4, 4);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { pool.lease().await }));
    }
    support::until_waiting(&pool, 3).await;
    assert_eq!(mock.connects(), 1, "three callers wait for the one opening");
    let fifth = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lease().await })
    };
    mock.until("a second connect starts", || mock.connects() == 2)
        .await;
    let mut leases = Vec::new();
    for task in tasks {
        leases.push(task.await.expect("task").expect("a lease"));
    }
    let fifth = fifth.await.expect("task").expect("a lease");
    let ids: Vec<u64> = leases.iter().map(|l| l.id).collect();
    assert_eq!(
        ids,
        [0, 0, 0, 0],
        "the first four share the first connection"
    );
    assert_eq!(fifth.id, 1);
    assert_eq!(mock.connects(), 2);
    assert_eq!(pool.status().leases, 5);
}

/// A caller that arrives in the very instant the opening connection is made (its connect
/// finished, its opener not yet back) still waits for it rather than opening another.
#[tokio::test(start_paused = true)]
async fn a_caller_arriving_as_the_connect_ends_waits_for_it() {
    let mock = Mock::new();
    mock.set_connect(Plan::ok().after(Duration::from_millis(10)));
    let pool = pool_of(&mock, 4, 4);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move { pool.lease().await }));
    }
    support::until_waiting(&pool, 1).await;
    for yields in 0..2 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            pool.lease().await
        }));
    }
    let mut leases = Vec::new();
    for task in tasks {
        leases.push(task.await.expect("task").expect("a lease"));
    }
    let ids: Vec<u64> = leases.iter().map(|l| l.id).collect();
    assert_eq!(ids, [0, 0, 0, 0], "four callers, one connection");
    assert_eq!(mock.connects(), 1);
}

/// An idle connection of the pool's own (made by `min_idle`, or returned by `get`) has no
/// lease: a lease goes to it before it goes to a shared connection that already has one.
#[tokio::test(start_paused = true)]
async fn a_lease_prefers_an_idle_connection_to_a_leased_one() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .min_idle(2)
        .max_streams(4)
        .build()
        .expect("valid settings");
    mock.until("min_idle is filled", || pool.status().idle == 2)
        .await;
    let first = pool.lease().await.expect("a lease");
    let second = pool.lease().await.expect("a lease");
    assert_ne!(
        first.id, second.id,
        "the second lease goes to the idle connection"
    );
    assert_eq!(mock.connects(), 2);
}

/// A lease is one use of its connection: `ConnInfo::uses` counts it once.
#[tokio::test(start_paused = true)]
async fn a_lease_counts_one_use() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let first = pool.lease().await.expect("a lease");
    assert_eq!(
        Lease::info(&first).uses(),
        1,
        "a fresh connection's first lease"
    );
    let second = pool.lease().await.expect("a lease");
    assert_eq!(Lease::info(&second).uses(), 2);
    drop((first, second));
    // Taken from the idle list (a `get` returned it): one use more, not two.
    drop(pool.get().await.expect("the connection"));
    let third = pool.lease().await.expect("a lease");
    assert_eq!(Lease::info(&third).uses(), 4);
}

/// With `min_idle(1)`, one lease at a time takes the idle connection and the refill opens one
/// spare beside it: two connections at most, however many leases come and go.
#[tokio::test(start_paused = true)]
async fn min_idle_with_one_lease_at_a_time_keeps_one_spare_connection() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(1)
        .max_streams(4)
        .build()
        .expect("valid settings");
    mock.until("min_idle is filled", || pool.status().idle == 1)
        .await;
    for _ in 0..10 {
        let lease = pool.lease().await.expect("a lease");
        // The refill made for the leased one, if any, runs.
        mock.until("no connect in flight", || pool.status().connecting == 0)
            .await;
        drop(lease);
        tokio::time::advance(Duration::from_secs(31)).await;
        tokio::task::yield_now().await;
    }
    mock.until("no connect in flight", || pool.status().connecting == 0)
        .await;
    let status = pool.status();
    assert!(
        mock.connects() <= 2,
        "{} connects for one lease at a time",
        mock.connects()
    );
    assert_eq!(
        (status.size, status.idle),
        (mock.connects(), mock.connects())
    );
    assert!(status.idle <= 2, "{status:?}");
}

/// `Lease` moves into spawned tasks (it is `Send`) and its connection is shared, not
/// exclusive: it derefs to `&Connection` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_moves_into_a_spawned_task() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 2);
    let lease = pool.lease().await.expect("a lease");
    assert_send(&lease);
    let id = tokio::spawn(async move { lease.id })
        .await
        .expect("the task");
    assert_eq!(id, 0);
    assert_eq!(pool.status().leases, 0, "ended in the task");
}
