//! Leases: retirement drains. A connection past `max_lifetime` or `idle_timeout`,
//! dropped by `retain` or `resize`, takes no new lease and closes after its last lease ends;
//! no lease fails because of retirement. `close()` refuses new leases, waits for held leases
//! up to `close_timeout`, then lets every connection close (each leased one as its last lease
//! ends).

mod support;

use std::time::Duration;

use futures::poll;
use pool::{Lease, PoolError};
use support::{Mock, lease_builder};
use tokio::time::Instant;

/// The timer's resolution: a timer set for an instant fires within the next millisecond.
const TICK: Duration = Duration::from_millis(1);

fn builder(mock: &Mock, max_size: usize, max_streams: usize) -> pool::Builder<Mock> {
    lease_builder(mock, max_size, max_streams)
}

/// A leased connection past its lifetime takes no new lease from that instant (within the
/// timer's millisecond): the background task wakes at the lifetime's end, not at its next
/// round, since a lease on a busy connection reads no clock. The next lease opens a fresh
/// connection, the old lease keeps working, and the old connection closes once it ends.
#[tokio::test(start_paused = true)]
async fn a_connection_past_max_lifetime_takes_no_new_lease() {
    let mock = Mock::new();
    // The reaper runs at 0, 40 and 80 s; the lifetime (less its jitter) ends in 97.5..100 s.
    let pool = builder(&mock, 2, 4)
        .max_lifetime(Some(Duration::from_secs(100)))
        .reap_interval(Duration::from_secs(40))
        .idle_timeout(None)
        .check_interval(Duration::from_secs(1000))
        .build()
        .expect("valid settings");
    let old = pool.lease().await.expect("a lease");
    let expires = Lease::info(&old).expires().expect("a lifetime");
    // Past the round at 80 s (and let it run), then to just before the end of the lifetime.
    tokio::time::advance(Duration::from_secs(85)).await;
    tokio::task::yield_now().await;
    tokio::time::advance(expires - Instant::now() - TICK).await;
    let same = pool.lease().await.expect("a lease");
    assert_eq!(
        same.id, 0,
        "a millisecond before its lifetime's end it takes leases"
    );
    drop(same);
    tokio::time::advance(2 * TICK).await;
    // The background task, woken at the lifetime's end, runs.
    tokio::task::yield_now().await;
    let new = pool.lease().await.expect("a lease");
    assert_eq!(new.id, 1, "the expired connection takes no new lease");
    assert_eq!(old.id, 0, "its lease still works");
    assert_eq!(mock.closes_of(0), 0);
    drop(old);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    let status = pool.status();
    assert_eq!((status.size, status.leases), (1, 1), "{status:?}");
}

/// A connection whose lifetime ran out under a lease closes as that lease ends, with no
/// new lease asked and no round of the background task in between (only its wake at the
/// lifetime's end).
#[tokio::test(start_paused = true)]
async fn an_expired_connection_closes_when_its_last_lease_ends() {
    let mock = Mock::new();
    // The reaper runs at 0, 40, 80 and 120 s; the lifetime ends in 97.5..100 s.
    let pool = builder(&mock, 2, 4)
        .max_lifetime(Some(Duration::from_secs(100)))
        .reap_interval(Duration::from_secs(40))
        .idle_timeout(None)
        .build()
        .expect("valid settings");
    let lease = pool.lease().await.expect("a lease");
    let expires = Lease::info(&lease).expires().expect("a lifetime");
    // Past the round at 80 s (and let it run), then to the end of the lifetime.
    tokio::time::advance(Duration::from_secs(85)).await;
    tokio::task::yield_now().await;
    tokio::time::advance(expires - Instant::now() + TICK).await;
    drop(lease);
    tokio::task::yield_now().await;
    assert_eq!(mock.closes_started(), 1, "closed as its last lease ended");
    assert_eq!(pool.status().size, 0);
}

/// A leased connection past its lifetime keeps its slot while it drains: with the pool at
/// `max_size` a caller waits, and gets a fresh connection in that slot once the last lease
/// ends (the background task ran meanwhile and cut nothing).
#[tokio::test(start_paused = true)]
async fn an_expired_leased_connection_keeps_its_slot_until_its_last_lease_ends() {
    let mock = Mock::new();
    let pool = builder(&mock, 1, 4)
        .max_lifetime(Some(Duration::from_secs(100)))
        .idle_timeout(None)
        .check_interval(Duration::from_secs(1000))
        .build()
        .expect("valid settings");
    let old = pool.lease().await.expect("a lease");
    // Past the lifetime and through a reaper round (every 50 s here).
    tokio::time::advance(Duration::from_secs(101)).await;
    tokio::task::yield_now().await;
    let mut waiting = Box::pin(pool.lease());
    assert!(
        poll!(waiting.as_mut()).is_pending(),
        "the draining connection holds the one slot and takes no new lease"
    );
    assert_eq!(old.id, 0, "the old lease still works");
    drop(old);
    let new = waiting.await.expect("a lease on a fresh connection");
    assert_eq!(new.id, 1);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
}

/// `idle_timeout` closes a shared connection with no lease; one that carries leases is in
/// use, however long, and is left alone.
#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_an_idle_shared_connection_and_spares_a_leased_one() {
    let mock = Mock::new();
    let pool = builder(&mock, 2, 2)
        .idle_timeout(Some(Duration::from_secs(10)))
        .max_lifetime(None)
        .build()
        .expect("valid settings");
    let a = pool.lease().await.expect("a lease");
    let b = pool.lease().await.expect("a lease");
    let c = pool.lease().await.expect("a lease");
    assert_eq!((a.id, b.id, c.id), (0, 0, 1));
    drop(c);
    // Twenty seconds, a second at a time, as the background task's rounds (every 5 s) see
    // them: idleness runs from the first round after the last lease ended.
    advance_seconds(20).await;
    mock.until_closes(1).await;
    assert_eq!((mock.closes_of(0), mock.closes_of(1)), (0, 1));
    let status = pool.status();
    assert_eq!(
        (status.size, status.idle, status.leases),
        (1, 0, 2),
        "{status:?}"
    );
    let d = pool.lease().await.expect("a lease");
    assert_eq!(d.id, 2, "the idle one is gone: a fresh connection");
    assert_eq!((a.id, b.id), (0, 0));
}

/// A shared connection leased for longer than `idle_timeout` is not taken for idle as its
/// lease ends: no clock is read then, and its idleness runs from the first round of the
/// background task after the end, not from when its lease began.
#[tokio::test(start_paused = true)]
async fn a_long_lease_is_not_idleness() {
    let mock = Mock::new();
    // Rounds every 5 s.
    let pool = builder(&mock, 2, 2)
        .idle_timeout(Some(Duration::from_secs(10)))
        .max_lifetime(None)
        .build()
        .expect("valid settings");
    let lease = pool.lease().await.expect("a lease");
    advance_seconds(30).await;
    drop(lease);
    // Through the round at 35 s, which sees it idle.
    advance_seconds(7).await;
    assert_eq!(mock.closes_started(), 0, "idle for 7 s, not 37");
    assert_eq!(pool.status().idle, 1);
    // The round at 45 s finds it idle for 10 s.
    advance_seconds(8).await;
    mock.until_closes(1).await;
    assert_eq!(pool.status().size, 0);
}

/// Lets `n` seconds pass one at a time, each seen by the tasks whose timers it fires.
async fn advance_seconds(n: u32) {
    for _ in 0..n {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
}

/// `retain` visits the shared connections with no lease (and closes those it drops); a
/// connection that carries leases is borrowed and not visited.
#[tokio::test(start_paused = true)]
async fn retain_drops_idle_shared_connections_and_leaves_leased_ones() {
    let mock = Mock::new();
    let pool = builder(&mock, 2, 1).build().expect("valid settings");
    let a = pool.lease().await.expect("a lease");
    drop(pool.lease().await.expect("a lease"));
    let mut visited = Vec::new();
    let removed = pool.retain(|conn, _| {
        visited.push(conn.id);
        false
    });
    assert_eq!((removed, visited), (1, vec![1]));
    mock.until_closes(1).await;
    assert_eq!((mock.closes_of(0), mock.closes_of(1)), (0, 1));
    let status = pool.status();
    assert_eq!((status.size, status.leases), (1, 1), "{status:?}");
    drop(a);
    assert_eq!(pool.status().idle, 1, "the leased one is kept");
}

/// Shrinking drains the leased connection with the fewest leases: no new lease goes to it,
/// it closes once its last lease ends, and no lease fails.
#[tokio::test(start_paused = true)]
async fn resize_drains_a_leased_connection() {
    let mock = Mock::new();
    let pool = builder(&mock, 2, 4).build().expect("valid settings");
    let mut on_first = Vec::new();
    for _ in 0..4 {
        on_first.push(pool.lease().await.expect("a lease"));
    }
    let on_second = pool.lease().await.expect("a lease");
    assert_eq!(on_second.id, 1);
    on_first.truncate(2);
    pool.resize(1).expect("a valid size");
    // Connection 1 has the fewest leases (1 against 2): it drains.
    let next = pool.lease().await.expect("a lease");
    assert_eq!(next.id, 0, "no new lease on the draining connection");
    assert_eq!(mock.closes_of(1), 0, "its lease still uses it");
    drop(on_second);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(1), 1);
    let status = pool.status();
    assert_eq!(
        (status.size, status.max_size, status.leases),
        (1, 1, 3),
        "{status:?}"
    );
    assert_eq!(mock.connects(), 2);
}

/// Shrinking by one with one connection held by `get` and one leased retires one of them,
/// not both: the drained leased connection gives its slot up at once, so the held one is
/// kept when it comes back.
#[tokio::test(start_paused = true)]
async fn resize_retires_one_connection_for_one_of_excess() {
    let mock = Mock::new();
    let pool = builder(&mock, 2, 4).build().expect("valid settings");
    let held = pool.get().await.expect("connection 0, held");
    let lease = pool.lease().await.expect("a lease on connection 1");
    assert_eq!((held.id, lease.id), (0, 1));
    pool.resize(1).expect("a valid size");
    drop(held);
    assert_eq!(mock.closes_of(0), 0, "the held connection is kept");
    drop(lease);
    mock.until_closes(1).await;
    assert_eq!(
        mock.closes_of(1),
        1,
        "the drained one closes after its lease"
    );
    let status = pool.status();
    assert_eq!(
        (status.size, status.idle, status.max_size),
        (1, 1, 1),
        "{status:?}"
    );
}

/// `close()` refuses new leases at once (and fails callers in line), waits for the leases
/// held, then finishes; every connection is closed exactly once.
#[tokio::test(start_paused = true)]
async fn close_refuses_new_leases_and_waits_for_held_ones() {
    let mock = Mock::new();
    let pool = builder(&mock, 2, 2)
        .close_timeout(Duration::from_secs(5))
        .build()
        .expect("valid settings");
    let a = pool.lease().await.expect("a lease");
    let b = pool.lease().await.expect("a lease");
    drop(pool.lease().await.expect("a lease on a second connection"));
    let (c, d) = (
        pool.lease().await.expect("a lease"),
        pool.lease().await.expect("a lease"),
    );
    let mut in_line = Box::pin(pool.lease());
    assert!(poll!(in_line.as_mut()).is_pending());
    let mut closing = Box::pin(pool.close());
    assert!(
        poll!(closing.as_mut()).is_pending(),
        "two connections carry leases"
    );
    assert!(matches!(in_line.await, Err(PoolError::Closed)));
    assert!(matches!(pool.lease().await, Err(PoolError::Closed)));
    assert!(matches!(pool.try_lease().await, Err(PoolError::Closed)));
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(poll!(closing.as_mut()).is_pending());
    assert_eq!(
        (a.id, b.id, c.id, d.id),
        (0, 0, 1, 1),
        "held leases keep working"
    );
    drop((a, b, c));
    assert!(
        poll!(closing.as_mut()).is_pending(),
        "d still holds connection 1"
    );
    drop(d);
    tokio::time::timeout(Duration::from_secs(1), closing)
        .await
        .expect("close ends once the last lease ended");
    mock.until_closes(2).await;
    mock.assert_each_closed_once();
    let status = pool.status();
    assert_eq!(
        (status.size, status.leases, status.in_use),
        (0, 0, 0),
        "{status:?}"
    );
}

/// A lease held past `close_timeout`: `close()` returns then, and the connection is closed
/// (exactly once) when that lease ends.
#[tokio::test(start_paused = true)]
async fn close_waits_for_held_leases_up_to_close_timeout() {
    let mock = Mock::new();
    let pool = builder(&mock, 2, 2)
        .close_timeout(Duration::from_secs(2))
        .build()
        .expect("valid settings");
    let held = pool.lease().await.expect("a lease");
    let start = Instant::now();
    pool.close().await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(mock.closes_of(0), 0, "a lease still uses it");
    assert_eq!(held.id, 0);
    drop(held);
    mock.until_closes(1).await;
    mock.assert_each_closed_once();
    let status = pool.status();
    assert_eq!((status.size, status.leases), (0, 0), "{status:?}");
}

/// A check that outlasts `close_timeout`: `close()` returns at its timeout, the caller whose
/// connection was being checked gets `Closed` when the check ends, and the connection is
/// closed once, its slot given back once.
#[tokio::test(start_paused = true)]
async fn close_during_a_check_longer_than_close_timeout() {
    let mock = Mock::new();
    let pool = builder(&mock, 2, 4)
        .check_interval(Duration::from_secs(1))
        .close_timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings");
    drop(pool.lease().await.expect("a lease"));
    tokio::time::advance(Duration::from_secs(2)).await;
    mock.push_check(support::Plan::ok().after(Duration::from_secs(3)));
    let checking = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lease().await })
    };
    mock.until("the check runs", || mock.checks() == 1).await;
    let start = Instant::now();
    pool.close().await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let got = checking.await.expect("the caller ends without a panic");
    assert!(matches!(got, Err(PoolError::Closed)), "{got:?}");
    mock.until_closes(1).await;
    mock.assert_each_closed_once();
    let status = pool.status();
    assert_eq!(
        (status.size, status.leases, status.in_use),
        (0, 0, 0),
        "{status:?}"
    );
}
