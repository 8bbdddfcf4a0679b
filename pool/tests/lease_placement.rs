//! Leases, behaviour 1: a lease goes to the open connection with the fewest leases among those
//! with room; a new connection opens only when every open or opening one is full, and callers
//! arriving meanwhile wait for the opening one.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use pool::{Lease, Pool};
use support::{Mock, Plan};

fn pool_of(mock: &Mock, max_size: usize, max_streams: usize) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(max_size)
        .max_streams(max_streams)
        .wait_timeout(Duration::from_secs(10))
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
