//! Leases: health. `is_broken` and `check` take `&mut Connection`, so they run
//! only when no lease borrows the connection: `is_broken` when a connection with no lease is
//! leased and when its last lease ends, `check` when a connection with no lease is leased
//! after `check_interval`, never on every lease. `is_broken_shared` is asked on every lease
//! handed out and every lease that ends. A broken connection takes no new lease, frees its
//! slot at once, and is closed with `Manager::close` exactly once, after its last lease.

mod support;

use std::time::Duration;

use pool::{Lease, Pool};
use support::{Mock, Plan, lease_builder};

fn pool_of(mock: &Mock, max_size: usize, max_streams: usize) -> Pool<Mock> {
    lease_builder(mock, max_size, max_streams)
        .check_interval(Duration::from_secs(1))
        .build()
        .expect("valid settings")
}

/// `is_broken` runs at the two moments the connection has no lease: leasing it (0 -> 1) and
/// the end of its last lease (1 -> 0); never while other leases borrow it. A connection just
/// made is not asked.
#[tokio::test(start_paused = true)]
async fn is_broken_runs_when_no_lease_borrows_the_connection() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let a = pool.lease().await.expect("a lease");
    let b = pool.lease().await.expect("a lease");
    assert_eq!(
        mock.is_broken_calls(),
        0,
        "a new connection, then a second lease"
    );
    drop(a);
    assert_eq!(mock.is_broken_calls(), 0, "a lease still borrows it");
    drop(b);
    assert_eq!(mock.is_broken_calls(), 1, "its last lease ended");
    let c = pool.lease().await.expect("a lease");
    assert_eq!(mock.is_broken_calls(), 2, "leased with no lease on it");
    let d = pool.lease().await.expect("a lease");
    assert_eq!(mock.is_broken_calls(), 2, "leased again while c borrows it");
    drop((c, d));
    assert_eq!(mock.is_broken_calls(), 3);
}

/// `is_broken_shared` is asked on every lease handed out and every lease that ends.
#[tokio::test(start_paused = true)]
async fn is_broken_shared_is_asked_on_every_handout_and_end() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, 4);
    let mut held = Vec::new();
    for n in 1..=6 {
        held.push(pool.lease().await.expect("a lease"));
        assert_eq!(mock.is_broken_shared_calls(), n);
    }
    for n in 1..=6 {
        held.pop();
        assert_eq!(mock.is_broken_shared_calls(), 6 + n);
    }
}

/// A connection that broke while it had no lease is never leased: it is closed, and the
/// caller gets a fresh one.
#[tokio::test(start_paused = true)]
async fn a_connection_broken_while_idle_is_not_leased() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    drop(pool.lease().await.expect("a lease"));
    mock.set_broken(0);
    let lease = pool.lease().await.expect("a lease");
    assert_eq!(lease.id, 1);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert_eq!(pool.status().counters.broken, 1);
}

/// `is_broken` at the end of the last lease discards the connection: closed once, its slot
/// freed, and the next lease opens a fresh one.
#[tokio::test(start_paused = true)]
async fn a_connection_broken_at_its_last_lease_is_closed() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let a = pool.lease().await.expect("a lease");
    let b = pool.lease().await.expect("a lease");
    mock.set_broken(0);
    drop(a);
    assert_eq!(pool.status().size, 1, "is_broken waits for the last lease");
    drop(b);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    let status = pool.status();
    assert_eq!((status.size, status.counters.broken), (0, 1), "{status:?}");
    assert_eq!(pool.lease().await.expect("a lease").id, 1);
}

/// `check` runs when a connection with no lease is leased after `check_interval` idle; never
/// for a connection that carries leases, however long ago it was checked, nor within the
/// interval.
#[tokio::test(start_paused = true)]
async fn check_runs_only_for_an_idle_connection_after_check_interval() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let a = pool.lease().await.expect("a lease");
    let b = pool.lease().await.expect("a lease");
    drop((a, b));
    let c = pool.lease().await.expect("a lease");
    assert_eq!(
        mock.checks(),
        0,
        "a new connection, then within the interval"
    );
    drop(c);
    tokio::time::advance(Duration::from_secs(2)).await;
    let asked = mock.is_broken_calls();
    let d = pool.lease().await.expect("a lease");
    assert_eq!(mock.checks(), 1, "idle past check_interval");
    assert_eq!(
        mock.is_broken_calls(),
        asked + 1,
        "is_broken once per lease, checked or not"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let e = pool.lease().await.expect("a lease");
    assert_eq!(
        mock.checks(),
        1,
        "d borrows it: no check, however long since the last"
    );
    let mut more: Vec<Lease<Mock>> = Vec::new();
    for _ in 0..20 {
        more.push(pool.lease().await.expect("a lease"));
        more.pop();
    }
    assert_eq!(mock.checks(), 1, "never on every lease");
    assert_eq!((d.id, e.id), (0, 0));
    drop((d, e));
    assert_eq!(mock.checks(), 1);
    assert_eq!(mock.connects(), 1, "one connection served every lease");
}

/// A shared connection is idle from its last lease's end, not from when its run of leases
/// began: leased for longer than `check_interval`, then leased again moments after its last
/// lease ended, it is not checked; idle past the interval after that end, it is.
#[tokio::test(start_paused = true)]
async fn idle_time_counts_from_the_last_lease_end() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let first = pool.lease().await.expect("a lease");
    tokio::time::advance(Duration::from_millis(1500)).await;
    let second = pool.lease().await.expect("a lease beside the first");
    drop(first);
    tokio::time::advance(Duration::from_millis(1500)).await;
    drop(second);
    tokio::time::advance(Duration::from_millis(10)).await;
    drop(
        pool.lease()
            .await
            .expect("a lease just after the last ended"),
    );
    assert_eq!(mock.checks(), 0, "idle for 10 ms, not since the run began");
    tokio::time::advance(Duration::from_millis(1001)).await;
    drop(pool.lease().await.expect("a lease after a second idle"));
    assert_eq!(
        mock.checks(),
        1,
        "idle past check_interval since the last end"
    );
    assert_eq!(mock.connects(), 1);
}

/// Callers that arrive while an idle connection is being checked for a lease wait for it and
/// share it once it passes (up to `max_streams`): one check, one connection.
#[tokio::test(start_paused = true)]
async fn callers_arriving_during_a_check_share_the_checked_connection() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, 4);
    drop(pool.lease().await.expect("a lease"));
    tokio::time::advance(Duration::from_secs(2)).await;
    mock.set_check(Plan::ok().after(Duration::from_millis(10)));
    let leases = futures::future::try_join_all((0..4).map(|_| pool.lease()))
        .await
        .expect("every lease");
    assert!(leases.iter().all(|l| l.id == 0));
    assert_eq!((mock.checks(), mock.connects()), (1, 1));
}

/// A connection that fails its check is closed; the caller and those that waited for the
/// check share a fresh one.
#[tokio::test(start_paused = true)]
async fn a_connection_that_fails_its_check_is_replaced() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    drop(pool.lease().await.expect("a lease"));
    tokio::time::advance(Duration::from_secs(2)).await;
    mock.fail_checks_of(0);
    mock.set_check(Plan::ok().after(Duration::from_millis(10)));
    let leases = futures::future::try_join_all((0..3).map(|_| pool.lease()))
        .await
        .expect("every lease");
    assert!(leases.iter().all(|l| l.id == 1), "the fresh connection");
    assert_eq!(mock.connects(), 2);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert_eq!(pool.status().counters.check_failures, 1);
}

/// A multiplexed connection that died under ten leases gets no eleventh: `is_broken_shared`
/// says so when the eleventh is handed out, and the caller gets a lease on a fresh
/// connection. The dead one frees its slot at once and closes once its ten leases end.
#[tokio::test(start_paused = true)]
async fn a_connection_that_died_under_ten_leases_gets_no_eleventh() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 2, 16);
    let mut ten = Vec::new();
    for _ in 0..10 {
        ten.push(pool.lease().await.expect("a lease"));
    }
    assert!(ten.iter().all(|l| l.id == 0));
    mock.set_shared_broken(0);
    let eleventh = pool.lease().await.expect("a lease");
    assert_eq!(eleventh.id, 1, "no eleventh lease on the dead connection");
    let status = pool.status();
    // The dead one is still open under its ten leases, but gave its slot up: counted as
    // discarded, not in size or in use (so size stays within max_size as a replacement
    // opens beside it).
    assert_eq!(
        (
            status.size,
            status.in_use,
            status.discarded,
            status.counters.broken
        ),
        (1, 1, 1, 1),
        "{status:?}"
    );
    assert_eq!(status.leases, 11);
    let twelfth = pool.lease().await.expect("a lease");
    assert_eq!(twelfth.id, 1);
    assert_eq!(mock.closes_of(0), 0, "its leases still use it");
    drop(ten);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert_eq!(pool.status().counters.broken, 1, "counted once");
}

/// A lease that ends on a connection `is_broken_shared` finds dead marks it: no new lease
/// goes to it although it has room, and it closes after its last lease.
#[tokio::test(start_paused = true)]
async fn a_connection_found_dead_when_a_lease_ends_takes_no_new_lease() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let a = pool.lease().await.expect("a lease");
    let b = pool.lease().await.expect("a lease");
    mock.set_shared_broken(0);
    drop(a);
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use, status.discarded, status.leases),
        (0, 0, 1, 1),
        "still open under lease b, its slot given up, {status:?}"
    );
    let c = pool.lease().await.expect("a lease");
    assert_eq!(
        c.id, 1,
        "its slot was freed at once: a max_size 1 pool opened another"
    );
    drop(b);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
}

/// `Lease::mark_broken`: the connection takes no new lease, frees its slot at once (a
/// replacement opens while its leases still run), and is closed with `Manager::close`
/// exactly once, after its last lease ends.
#[tokio::test(start_paused = true)]
async fn a_connection_marked_broken_frees_its_slot_and_closes_once_after_its_last_lease() {
    let mock = Mock::new();
    let pool = pool_of(&mock, 1, 4);
    let mut first = pool.lease().await.expect("a lease");
    let second = pool.lease().await.expect("a lease");
    Lease::mark_broken(&mut first);
    Lease::mark_broken(&mut first);
    let replacement = pool.lease().await.expect("a lease on a fresh connection");
    assert_eq!(
        replacement.id, 1,
        "the slot was freed while two leases still run"
    );
    assert_eq!(
        (first.id, second.id),
        (0, 0),
        "the old leases still use their connection"
    );
    assert_eq!(mock.connects(), 2);
    let status = pool.status();
    assert_eq!(
        (status.size, status.in_use, status.discarded, status.leases),
        (1, 1, 1, 3),
        "the broken connection still carries leases: discarded, beside a max_size of 1 \
         filled by its replacement, {status:?}"
    );
    drop(first);
    tokio::task::yield_now().await;
    assert_eq!(mock.closes_of(0), 0, "one lease still uses it");
    drop(second);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    let status = pool.status();
    assert_eq!(
        (status.size, status.discarded, status.leases),
        (1, 0, 1),
        "{status:?}"
    );
    assert_eq!(status.counters.broken, 1);
    drop(replacement);
    pool.close().await;
    mock.until_closes(2).await;
    mock.assert_each_closed_once();
}
