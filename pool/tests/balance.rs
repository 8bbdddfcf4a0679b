//! One pool over several endpoints (`pool::balance::Balanced`): placement by fewest
//! connections, failover, ejection with a growing backoff, one probe, rebalancing onto an
//! endpoint that comes back or joins, removal that drains, per-endpoint status.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use pool::balance::{BalanceError, Balanced, Ejection, Routed, SetError};
use pool::{Lease, Pool, PoolError};
use support::{Mock, Plan};
use tokio::time::Instant;

const NAMES: [&str; 3] = ["a", "b", "c"];

fn three() -> (Vec<Mock>, Balanced<Mock>) {
    let mocks: Vec<Mock> = NAMES.iter().map(|_| Mock::new()).collect();
    let balanced = Balanced::from_endpoints(NAMES.iter().zip(&mocks).map(|(n, m)| (*n, m.clone())))
        .expect("distinct names");
    (mocks, balanced)
}

fn pool_of(balanced: Balanced<Mock>, max_size: usize, max_streams: usize) -> Pool<Balanced<Mock>> {
    Pool::builder(balanced)
        .max_size(max_size)
        .max_streams(max_streams)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings")
}

fn per_endpoint<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name.to_owned()).or_default() += 1;
    }
    counts
}

/// Connections per endpoint that take work (open, not draining).
fn live(pool: &Pool<Balanced<Mock>>) -> Vec<usize> {
    let endpoints = pool.manager().endpoints();
    endpoints.iter().map(|e| e.live - e.draining).collect()
}

/// Leases held per endpoint.
fn leased(pool: &Pool<Balanced<Mock>>) -> Vec<usize> {
    let endpoints = pool.manager().endpoints();
    endpoints.iter().map(|e| e.leases).collect()
}

/// 64 concurrent leases, 8 per connection, `max_size(6)`: two connections on each endpoint,
/// the leases spread 16/16/16 over them... and the lease counts per endpoint add up.
#[tokio::test(start_paused = true)]
async fn connections_go_to_the_endpoint_with_the_fewest() {
    let (mocks, balanced) = three();
    for mock in &mocks {
        mock.set_connect(Plan::ok().after(Duration::from_millis(5)));
    }
    let pool = pool_of(balanced, 6, 8);
    let leases = futures::future::try_join_all((0..48).map(|_| pool.lease()))
        .await
        .expect("every lease");
    assert_eq!(live(&pool), [2, 2, 2]);
    let counts = per_endpoint(leases.iter().map(|l| Routed::endpoint(l)));
    assert!(counts.values().all(|&n| n == 16), "{counts:?}");
    assert_eq!(leased(&pool), [16, 16, 16]);
    drop(leases);
    assert_eq!(leased(&pool), [0, 0, 0]);
}

/// An endpoint that refuses every connect is failed over within the same connect, so no
/// caller sees its error, and after `after` failures in a row it is ejected: no more connects.
#[tokio::test(start_paused = true)]
async fn a_refusing_endpoint_is_failed_over_then_ejected() {
    let (mocks, balanced) = three();
    mocks[0].set_connect(Plan::fail("refused"));
    let pool = Pool::builder(balanced)
        .max_size(9)
        .fail_fast(true)
        .build()
        .expect("valid");
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(
            pool.get()
                .await
                .expect("failover hides the refusing endpoint"),
        );
    }
    assert_eq!(mocks[0].connects(), 3, "ejected after 3 failures in a row");
    let a = &pool.manager().endpoints()[0];
    assert_eq!((a.live, a.failures, a.failures_in_row), (0, 3, 3));
    let until = a.ejected_until.expect("ejected");
    let left = until - Instant::now();
    assert!(
        left <= Duration::from_secs(1) && left >= Duration::from_millis(800),
        "{left:?}"
    );
    let mut others = live(&pool)[1..].to_vec();
    others.sort_unstable();
    assert_eq!(others, [4, 5]);
}

/// When its backoff ends, one probe connect decides; a failed probe doubles the backoff, a
/// successful one brings the endpoint back and connections move onto it, though the pool is
/// full and no caller asks for a new connection.
#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_is_probed_and_connections_move_back() {
    let (mocks, balanced) = three();
    mocks[0].set_connect(Plan::fail("down"));
    let pool = pool_of(balanced, 6, 4);
    // Steady load: 24 leases, as many as 6 connections carry.
    let mut held: Vec<Lease<Balanced<Mock>>> =
        futures::future::try_join_all((0..24).map(|_| pool.lease()))
            .await
            .expect("every lease");
    assert_eq!(live(&pool), [0, 3, 3]);
    let a = &pool.manager().endpoints()[0];
    let first = a.ejected_until.expect("ejected") - Instant::now();
    // The backoff runs out; the next connect is a probe, and it fails: ejected for longer.
    tokio::time::advance(Duration::from_millis(1001)).await;
    for _ in 0..100 {
        churn(&mut held, &pool).await;
    }
    let a = &pool.manager().endpoints()[0];
    assert_eq!(mocks[0].connects(), 4, "one probe, no more");
    let second = a.ejected_until.expect("ejected again") - Instant::now();
    // The second ejection's bound is 2 s, jitter shortens it by a fifth at most.
    assert!(first <= Duration::from_secs(1), "{first:?}");
    assert!(
        second >= Duration::from_millis(1600) && second <= Duration::from_secs(2),
        "{second:?}"
    );
    assert_eq!(a.ejections, 2);
    // The endpoint comes back; after the backoff, the probe succeeds and load moves back.
    mocks[0].set_connect(Plan::ok());
    tokio::time::advance(second + Duration::from_millis(1)).await;
    for _ in 0..200 {
        churn(&mut held, &pool).await;
        if live(&pool) == [2, 2, 2] {
            break;
        }
    }
    let a = &pool.manager().endpoints()[0];
    assert_eq!(live(&pool), [2, 2, 2], "balanced again: {a:?}");
    assert_eq!((a.ejected_until, a.failures_in_row), (None, 0));
    // The connections retired to rebalance close after their last lease.
    drop(held);
    mocks[1]
        .until("retired connections closed", || pool.status().size == 6)
        .await;
}

/// A lease ends and a new one starts: the lease traffic a rebalance rides on.
async fn churn(held: &mut Vec<Lease<Balanced<Mock>>>, pool: &Pool<Balanced<Mock>>) {
    held.remove(0);
    held.push(pool.lease().await.expect("a lease"));
    // Lets the pool's tasks run (connects, closes, the timer that ends an ejection).
    tokio::task::yield_now().await;
}

/// With every endpoint ejected, a connect tries the one whose backoff ends first instead
/// of failing without trying.
#[tokio::test(start_paused = true)]
async fn with_every_endpoint_ejected_the_first_to_end_is_tried() {
    let (mocks, balanced) = three();
    for mock in &mocks {
        mock.set_connect(Plan::fail("down"));
    }
    let pool = Pool::builder(balanced)
        .max_size(3)
        .fail_fast(true)
        .build()
        .expect("valid");
    // Three rounds of failover: 3 failures each, all ejected.
    for _ in 0..3 {
        let err = pool.get().await.expect_err("all down");
        assert!(
            matches!(err, PoolError::Connect(BalanceError::Endpoint { .. })),
            "{err:?}"
        );
    }
    let ends: Vec<Instant> = pool
        .manager()
        .endpoints()
        .iter()
        .map(|e| e.ejected_until.expect("ejected"))
        .collect();
    let first = (0..3).min_by_key(|&i| ends[i]).expect("three");
    mocks[first].set_connect(Plan::ok());
    let conn = pool
        .get()
        .await
        .expect("the earliest is tried though ejected");
    assert_eq!(Routed::endpoint(&conn), NAMES[first]);
    assert_eq!(mocks.iter().map(Mock::connects).sum::<usize>(), 10);
}

/// A connect the pool's connect timeout cuts counts as a failure of its endpoint.
#[tokio::test(start_paused = true)]
async fn a_connect_that_times_out_counts_as_a_failure() {
    let (mocks, balanced) = three();
    mocks[1].set_connect(Plan::hang());
    let pool = Pool::builder(balanced)
        .max_size(3)
        .connect_timeout(Duration::from_millis(100))
        .build()
        .expect("valid");
    let _one = pool.get().await.expect("a");
    let _two = pool.get().await.expect("b hangs, the retry goes to c");
    let b = &pool.manager().endpoints()[1];
    assert_eq!((b.failures, b.connecting, b.live), (1, 0, 0));
}

/// A connection that breaks counts once against its endpoint however often it is asked.
#[tokio::test(start_paused = true)]
async fn a_broken_connection_counts_once() {
    let (mocks, balanced) = three();
    let pool = pool_of(balanced, 3, 4);
    let leases = futures::future::try_join_all((0..12).map(|_| pool.lease()))
        .await
        .expect("every lease");
    let on_a: Vec<_> = leases
        .iter()
        .filter(|l| Routed::endpoint(l) == "a")
        .collect();
    mocks[0].set_shared_broken(on_a[0].id);
    drop(leases);
    mocks[0].until_closes(1).await;
    let a = &pool.manager().endpoints()[0];
    assert_eq!((a.failures, a.failures_in_row, a.live), (1, 1, 0));
    assert!(a.ejected_until.is_none());
}

/// Removing an endpoint drains its connections: leases on them go on, no new lease lands
/// there, each closes after its last lease; the endpoint leaves the list after that.
#[tokio::test(start_paused = true)]
async fn removing_an_endpoint_drains_it_without_cutting_leases() {
    let (mocks, balanced) = three();
    let pool = pool_of(balanced, 6, 4);
    let held = futures::future::try_join_all((0..12).map(|_| pool.lease()))
        .await
        .expect("every lease");
    assert_eq!(live(&pool), [1, 1, 1]);
    pool.manager().remove("b").expect("b is in the set");
    assert_eq!(
        pool.manager().remove("b"),
        Err(SetError::Unknown("b".into()))
    );
    let more = futures::future::try_join_all((0..8).map(|_| pool.lease()))
        .await
        .expect("every lease");
    assert!(more.iter().all(|l| Routed::endpoint(l) != "b"));
    let on_b = held.iter().filter(|l| Routed::endpoint(l) == "b").count();
    assert_eq!(on_b, 4, "leases on b still held and usable");
    assert_eq!(mocks[1].closes(), 0, "never closed under a lease");
    drop(held);
    mocks[1].until_closes(1).await;
    let names: Vec<String> = pool
        .manager()
        .endpoints()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(pool.status().counters.timeouts, 0);
    drop(more);
}

/// An endpoint added to a full pool gets connections: others drain one by one onto it.
#[tokio::test(start_paused = true)]
async fn an_added_endpoint_takes_connections_from_a_full_pool() {
    let (mocks, balanced) = three();
    drop(mocks);
    let pool = pool_of(balanced, 8, 2);
    let mut held = futures::future::try_join_all((0..16).map(|_| pool.lease()))
        .await
        .expect("every lease");
    assert_eq!(live(&pool), [3, 3, 2]);
    assert_eq!(
        pool.manager().add("a", Mock::new()),
        Err(SetError::Duplicate("a".into()))
    );
    pool.manager().add("d", Mock::new()).expect("new name");
    for _ in 0..100 {
        churn(&mut held, &pool).await;
        if live(&pool) == [2, 2, 2, 2] {
            break;
        }
    }
    assert_eq!(live(&pool), [2, 2, 2, 2]);
}

/// Bad settings are typed errors.
#[test]
fn zero_failures_to_eject_is_refused() {
    let err = Balanced::<Mock>::with_ejection(Ejection::new().after(0)).expect_err("refused");
    assert_eq!(err, SetError::ZeroFailures);
}

/// An empty set fails a connect with a typed error.
#[tokio::test(start_paused = true)]
async fn an_empty_set_fails_with_no_endpoints() {
    let pool = Pool::builder(Balanced::<Mock>::new())
        .fail_fast(true)
        .build()
        .expect("valid");
    let err = pool.get().await.expect_err("nothing to connect to");
    assert!(
        matches!(err, PoolError::Connect(BalanceError::NoEndpoints)),
        "{err:?}"
    );
}

/// A discovered set is read before the first connect and again on a connect once `every`
/// has passed: a name no longer found is removed (its connections drain), a new one added,
/// the others kept with their connections; a failed discovery keeps the set.
#[tokio::test(start_paused = true)]
async fn a_discovered_set_is_read_again_on_reconnect() {
    use std::sync::{Arc, Mutex};
    type Found = Result<Vec<(String, Mock)>, String>;
    let found: Arc<Mutex<Found>> = Arc::new(Mutex::new(Ok(vec![
        ("x".to_owned(), Mock::new()),
        ("y".to_owned(), Mock::new()),
    ])));
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let balanced = {
        let (found, runs) = (Arc::clone(&found), Arc::clone(&runs));
        Balanced::discovering(Duration::from_secs(1), move || {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let now = found.lock().expect("lock").clone();
            Box::pin(async move { now.map_err(Into::into) })
        })
    };
    let pool = Pool::builder(balanced).max_size(8).build().expect("valid");
    let names = |pool: &Pool<Balanced<Mock>>| -> Vec<(String, bool)> {
        let endpoints = pool.manager().endpoints();
        endpoints.into_iter().map(|e| (e.name, e.removed)).collect()
    };
    let (a, b) = (pool.get().await.expect("x"), pool.get().await.expect("y"));
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "once, then not due"
    );
    assert_eq!(names(&pool), [("x".into(), false), ("y".into(), false)]);
    // y goes, z comes; the next connect within the interval does not look.
    *found.lock().expect("lock") = Ok(vec![
        ("x".to_owned(), Mock::new()),
        ("z".to_owned(), Mock::new()),
    ]);
    let c = pool.get().await.expect("a third");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    let d = pool.get().await.expect("a fourth");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(Routed::endpoint(&d), "z", "the new endpoint has the fewest");
    assert_eq!(
        names(&pool),
        [("x".into(), false), ("y".into(), true), ("z".into(), false)],
        "y drains: listed, removed, until its connection closes"
    );
    // A failed discovery leaves the set as it is.
    *found.lock().expect("lock") = Err("lookup failed".to_owned());
    tokio::time::advance(Duration::from_secs(1)).await;
    let e = pool.get().await.expect("a fifth, from the set as it was");
    assert_ne!(Routed::endpoint(&e), "y");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    drop((a, b, c, d, e));
}
