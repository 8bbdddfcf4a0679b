//! A manager hook that panics leaks nothing. For each of `is_broken`, `is_broken_shared`,
//! `lease_started`, `lease_ended`, `check` and `close`: after the panic no slot, no lease and
//! no caller in line is left behind, a caller that was waiting in line when it happened is
//! served, the next `get` or `lease` is served within the wait timeout, and at the end every
//! connection is closed exactly once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use pool::{Lease, Manager, Pool, Pooled};
use support::{Mock, MockConn, MockError, Plan};

/// Every caller's `wait_timeout`: a caller the pool forgot fails with it.
const WAIT: Duration = Duration::from_secs(5);

/// The hooks [`Hooked`] can make panic.
#[derive(Debug, Clone, Copy)]
enum Hook {
    IsBroken,
    IsBrokenShared,
    LeaseStarted,
    LeaseEnded,
    Check,
    Close,
}

/// The shared mock manager behind hooks that panic on demand ([`Hooked::arm`]), watching
/// leases (`WATCHES_LEASES`). `check` and `close` panic after the mock ran them, so the mock
/// still counts the close of a connection whose `close` panicked, and
/// `Mock::assert_each_closed_once` still tells whether the pool called `close` once for each.
#[derive(Clone)]
struct Hooked {
    mock: Mock,
    armed: Arc<[AtomicUsize; 6]>,
}

impl Hooked {
    fn new() -> Self {
        Hooked {
            mock: Mock::new(),
            armed: Arc::new(Default::default()),
        }
    }

    /// The next `n` calls of `hook` panic.
    fn arm(&self, hook: Hook, n: usize) {
        self.armed[hook as usize].store(n, SeqCst);
    }

    /// Panicking calls of `hook` still to come.
    fn armed(&self, hook: Hook) -> usize {
        self.armed[hook as usize].load(SeqCst)
    }

    /// Panics if `hook` is armed (using up one armed call).
    fn trip(&self, hook: Hook) {
        let armed = &self.armed[hook as usize];
        if armed
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("scripted {hook:?} panic");
        }
    }
}

impl Manager for Hooked {
    type Connection = MockConn;
    type Error = MockError;
    const WATCHES_LEASES: bool = true;

    async fn connect(&self) -> Result<MockConn, MockError> {
        self.mock.connect().await
    }

    async fn check(&self, conn: &mut MockConn) -> Result<(), MockError> {
        let checked = self.mock.check(conn).await;
        self.trip(Hook::Check);
        checked
    }

    fn is_broken(&self, conn: &mut MockConn) -> bool {
        self.trip(Hook::IsBroken);
        self.mock.is_broken(conn)
    }

    fn is_broken_shared(&self, conn: &MockConn) -> bool {
        self.trip(Hook::IsBrokenShared);
        self.mock.is_broken_shared(conn)
    }

    fn lease_started(&self, _conn: &MockConn) {
        self.trip(Hook::LeaseStarted);
    }

    fn lease_ended(&self, _conn: &MockConn) {
        self.trip(Hook::LeaseEnded);
    }

    async fn close(&self, conn: MockConn) {
        self.mock.close(conn).await;
        self.trip(Hook::Close);
    }
}

/// A pool of `max_size` connections of `max_streams` leases; a check is due after 1 s idle.
fn pool_of(hooked: &Hooked, max_size: usize, max_streams: usize) -> Pool<Hooked> {
    Pool::builder(hooked.clone())
        .max_size(max_size)
        .max_streams(max_streams)
        .wait_timeout(WAIT)
        .check_interval(Duration::from_secs(1))
        .build()
        .expect("valid settings")
}

/// Waits until `n` callers are in line (bounded: panics after 1000 yields).
async fn until_waiting(pool: &Pool<Hooked>, n: usize) {
    for _ in 0..1000 {
        if pool.status().waiting == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "expected {n} callers in line, have {}",
        pool.status().waiting
    );
}

/// `(size, idle, in_use, leases, discarded, waiting)`.
fn sizes(pool: &Pool<Hooked>) -> (usize, usize, usize, usize, usize, usize) {
    let s = pool.status();
    (s.size, s.idle, s.in_use, s.leases, s.discarded, s.waiting)
}

/// A task that panicked in the hook it was meant to (its join fails with a panic).
async fn panicked<T: std::fmt::Debug>(task: tokio::task::JoinHandle<T>) {
    match task.await {
        Err(error) if error.is_panic() => {}
        other => panic!("the task was to panic in the hook, got {other:?}"),
    }
}

/// Closes the pool; every connection made is then dropped, closed exactly once, and every
/// count is 0.
async fn close_and_check(pool: &Pool<Hooked>, hooked: &Hooked) {
    tokio::time::timeout(WAIT, pool.close())
        .await
        .expect("close() returns: no lease is left to wait for");
    hooked
        .mock
        .until("every connection is dropped", || hooked.mock.live() == 0)
        .await;
    hooked.mock.assert_each_closed_once();
    let status = pool.status();
    assert_eq!(
        (
            status.size,
            status.idle,
            status.in_use,
            status.leases,
            status.discarded,
            status.connecting,
            status.waiting
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "{status:?}"
    );
}

/// `is_broken` panics as a `get` guard comes back, with a caller in line: the connection
/// counts as broken, its slot goes to that caller, and nothing else is held.
#[tokio::test(start_paused = true)]
async fn is_broken_panicking_on_return_frees_the_slot_for_the_caller_in_line() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 1);
    let held = pool.get().await.expect("connection 0");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|conn| conn.id) })
    };
    until_waiting(&pool, 1).await;
    hooked.arm(Hook::IsBroken, 1);
    drop(held);
    assert_eq!(
        hooked.armed(Hook::IsBroken),
        0,
        "is_broken ran and panicked"
    );
    let id = waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(
        id, 1,
        "the connection whose is_broken panicked is not reused"
    );
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    assert_eq!(pool.status().counters.broken, 1);
    drop(pool.get().await.expect("a new get is served"));
    close_and_check(&pool, &hooked).await;
}

/// `is_broken` panics as the last lease on a connection ends (it runs under the pool's lock
/// there), with a `get` caller in line for that connection: the caller is served, and no
/// lease is left counted.
#[tokio::test(start_paused = true)]
async fn is_broken_panicking_at_the_last_lease_end_frees_the_connection_for_the_caller_in_line() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let lease = pool.lease().await.expect("a lease on connection 0");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|conn| conn.id) })
    };
    until_waiting(&pool, 1).await;
    hooked.arm(Hook::IsBroken, 1);
    drop(lease);
    assert_eq!(
        hooked.armed(Hook::IsBroken),
        0,
        "is_broken ran and panicked"
    );
    waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    drop(pool.lease().await.expect("a new lease is served"));
    close_and_check(&pool, &hooked).await;
}

/// `is_broken` panics as a shared connection with no lease is leased again: the caller still
/// gets a lease (on a fresh connection), at once.
#[tokio::test(start_paused = true)]
async fn is_broken_panicking_as_an_idle_shared_connection_is_leased_still_serves_the_lease() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    drop(pool.lease().await.expect("a lease on connection 0"));
    hooked.arm(Hook::IsBroken, 1);
    let lease = pool.lease().await.expect("a lease despite the panic");
    assert_eq!(
        hooked.armed(Hook::IsBroken),
        0,
        "is_broken ran and panicked"
    );
    assert_eq!(sizes(&pool), (1, 0, 1, 1, 0, 0));
    let other = pool.lease().await.expect("room beside it");
    assert_eq!(other.id, lease.id);
    drop((lease, other));
    close_and_check(&pool, &hooked).await;
}

/// `is_broken_shared` panics as a lease ends beside another, with a lease caller in line: the
/// connection counts as broken, its slot frees at once, the caller in line gets a lease on a
/// fresh connection, and the broken one closes after its last lease.
#[tokio::test(start_paused = true)]
async fn is_broken_shared_panicking_at_a_lease_end_frees_the_slot_for_the_caller_in_line() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let a = pool.lease().await.expect("a lease on connection 0");
    let b = pool.lease().await.expect("a second lease on connection 0");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lease().await })
    };
    until_waiting(&pool, 1).await;
    hooked.arm(Hook::IsBrokenShared, 1);
    drop(a);
    assert_eq!(hooked.armed(Hook::IsBrokenShared), 0, "it ran and panicked");
    let c = waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(c.id, 1, "a fresh connection in the freed slot");
    assert_eq!(sizes(&pool), (1, 0, 1, 2, 1, 0));
    drop(b);
    hooked.mock.until_closes(1).await;
    assert_eq!(hooked.mock.closes_of(0), 1);
    assert_eq!(sizes(&pool), (1, 0, 1, 1, 0, 0));
    let d = pool.lease().await.expect("a new lease is served");
    assert_eq!(d.id, 1);
    drop((c, d));
    close_and_check(&pool, &hooked).await;
}

/// `is_broken_shared` panics as a lease is handed out: that connection counts as broken and
/// the caller still gets a lease, on a fresh connection, at once.
#[tokio::test(start_paused = true)]
async fn is_broken_shared_panicking_at_hand_out_still_serves_the_lease() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let a = pool.lease().await.expect("a lease on connection 0");
    hooked.arm(Hook::IsBrokenShared, 1);
    let b = pool.lease().await.expect("a lease despite the panic");
    assert_eq!(hooked.armed(Hook::IsBrokenShared), 0, "it ran and panicked");
    assert_eq!(b.id, 1, "not on the connection found broken");
    assert_eq!(sizes(&pool), (1, 0, 1, 2, 1, 0));
    drop((a, b));
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    close_and_check(&pool, &hooked).await;
}

/// `lease_started` panics in a lease caller served from the line: that caller's task fails,
/// the lease it was being given ends, and its room goes to the next caller in line.
#[tokio::test(start_paused = true)]
async fn lease_started_panicking_in_a_served_caller_passes_the_room_to_the_next_in_line() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let a = pool.lease().await.expect("a lease on connection 0");
    let b = pool.lease().await.expect("a second lease on connection 0");
    let mut waiters = Vec::new();
    for n in 1..=2 {
        let caller = pool.clone();
        waiters.push(tokio::spawn(async move { caller.lease().await }));
        until_waiting(&pool, n).await;
    }
    hooked.arm(Hook::LeaseStarted, 1);
    drop(a);
    let second = waiters.pop().expect("two waiters");
    panicked(waiters.pop().expect("two waiters")).await;
    let c = second
        .await
        .expect("the second waiter does not panic")
        .expect("the next caller in line is served");
    assert_eq!(c.id, 0);
    assert_eq!(sizes(&pool), (1, 0, 1, 2, 0, 0));
    drop((b, c));
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    drop(pool.lease().await.expect("a new lease is served"));
    close_and_check(&pool, &hooked).await;
}

/// `lease_started` panics for a lease taken without waiting, the first on its connection
/// and one beside another: each caller's task fails,
/// and the lease it was being given is not left counted.
#[tokio::test(start_paused = true)]
async fn lease_started_panicking_without_a_wait_leaves_no_lease_counted() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 4);
    drop(pool.lease().await.expect("a lease on connection 0"));
    for beside in [0, 1, 2] {
        let mut held = Vec::new();
        for _ in 0..beside {
            held.push(pool.lease().await.expect("a lease"));
        }
        hooked.arm(Hook::LeaseStarted, 1);
        let caller = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.lease().await })
        };
        panicked(caller).await;
        let busy = usize::from(beside > 0);
        assert_eq!(
            sizes(&pool),
            (1, 1 - busy, busy, beside, 0, 0),
            "beside {beside}"
        );
        drop(held);
        assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0), "beside {beside}");
    }
    drop(pool.lease().await.expect("a new lease is served"));
    close_and_check(&pool, &hooked).await;
}

/// `lease_ended` panics as a lease ends beside another, nobody in line:
/// the lease is not left counted, and its room takes a new lease.
#[tokio::test(start_paused = true)]
async fn lease_ended_panicking_beside_another_lease_frees_its_room() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let a = pool.lease().await.expect("a lease on connection 0");
    let b = pool.lease().await.expect("a second lease on connection 0");
    hooked.arm(Hook::LeaseEnded, 1);
    panicked(tokio::spawn(async move { drop(a) })).await;
    assert_eq!(sizes(&pool), (1, 0, 1, 1, 0, 0));
    let c = pool.lease().await.expect("the room a lease left");
    assert_eq!(c.id, 0);
    drop((b, c));
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    close_and_check(&pool, &hooked).await;
}

/// `lease_ended` panics as a full connection's lease ends, with a lease caller in line: that
/// caller is served the room, and no lease is left counted.
#[tokio::test(start_paused = true)]
async fn lease_ended_panicking_on_a_full_connection_serves_the_lease_caller_in_line() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let a = pool.lease().await.expect("a lease on connection 0");
    let b = pool.lease().await.expect("a second lease on connection 0");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lease().await })
    };
    until_waiting(&pool, 1).await;
    hooked.arm(Hook::LeaseEnded, 1);
    panicked(tokio::spawn(async move { drop(a) })).await;
    let c = waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(c.id, 0);
    assert_eq!(sizes(&pool), (1, 0, 1, 2, 0, 0));
    drop((b, c));
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    close_and_check(&pool, &hooked).await;
}

/// `lease_ended` panics as the last lease on a connection ends, with a `get` caller in line:
/// the connection is freed and that caller served.
#[tokio::test(start_paused = true)]
async fn lease_ended_panicking_at_the_last_lease_frees_the_connection_for_the_caller_in_line() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let lease = pool.lease().await.expect("a lease on connection 0");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|conn| conn.id) })
    };
    until_waiting(&pool, 1).await;
    hooked.arm(Hook::LeaseEnded, 1);
    panicked(tokio::spawn(async move { drop(lease) })).await;
    waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    drop(pool.lease().await.expect("a new lease is served"));
    close_and_check(&pool, &hooked).await;
}

/// `lease_ended` panics as the last lease on a connection ends, nobody in line: the
/// connection is idle again, with no lease counted, and takes the next lease.
#[tokio::test(start_paused = true)]
async fn lease_ended_panicking_at_the_last_lease_leaves_the_connection_idle() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let lease = pool.lease().await.expect("a lease on connection 0");
    hooked.arm(Hook::LeaseEnded, 1);
    panicked(tokio::spawn(async move { drop(lease) })).await;
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    let conn = tokio::time::timeout(WAIT, pool.get())
        .await
        .expect("get is served before its wait times out")
        .expect("a connection");
    drop(conn);
    close_and_check(&pool, &hooked).await;
}

/// `check` panics on a connection handed from a return to the first `get` caller in line:
/// that caller's task fails, the connection is closed, and the next caller in line is
/// served.
#[tokio::test(start_paused = true)]
async fn check_panicking_on_a_handed_over_connection_frees_the_slot_for_the_next_in_line() {
    let hooked = Hooked::new();
    let pool = Pool::builder(hooked.clone())
        .max_size(1)
        .wait_timeout(WAIT)
        .check_interval(Duration::ZERO)
        .build()
        .expect("valid settings");
    let held = pool.get().await.expect("connection 0");
    let mut waiters = Vec::new();
    for n in 1..=2 {
        let caller = pool.clone();
        waiters.push(tokio::spawn(async move {
            caller.get().await.map(|conn| conn.id)
        }));
        until_waiting(&pool, n).await;
    }
    hooked.arm(Hook::Check, 1);
    drop(held);
    let second = waiters.pop().expect("two waiters");
    panicked(waiters.pop().expect("two waiters")).await;
    let id = second
        .await
        .expect("the second waiter does not panic")
        .expect("the next caller in line is served");
    assert_eq!(id, 1, "the connection whose check panicked is not reused");
    hooked.mock.until_closes(1).await;
    assert_eq!(hooked.mock.closes_of(0), 1);
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    drop(pool.get().await.expect("a new get is served"));
    close_and_check(&pool, &hooked).await;
}

/// `check` panics as a shared connection with no lease is leased after `check_interval`,
/// while another lease caller waits for it: the checking caller's task fails, the connection
/// is closed, and the caller in line is served.
#[tokio::test(start_paused = true)]
async fn check_panicking_as_a_shared_connection_is_leased_serves_the_caller_in_line() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    drop(pool.lease().await.expect("a lease on connection 0"));
    tokio::time::advance(Duration::from_secs(2)).await;
    // The check takes a second, so the second caller arrives while it runs.
    hooked
        .mock
        .push_check(Plan::ok().after(Duration::from_secs(1)));
    hooked.arm(Hook::Check, 1);
    let checking = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lease().await })
    };
    hooked
        .mock
        .until("the check runs", || hooked.mock.checks() == 1)
        .await;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lease().await })
    };
    until_waiting(&pool, 1).await;
    panicked(checking).await;
    let lease = waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(
        lease.id, 1,
        "the connection whose check panicked is not reused"
    );
    hooked.mock.until_closes(1).await;
    assert_eq!(hooked.mock.closes_of(0), 1);
    assert_eq!(sizes(&pool), (1, 0, 1, 1, 0, 0));
    drop(lease);
    drop(pool.lease().await.expect("a new lease is served"));
    close_and_check(&pool, &hooked).await;
}

/// `close` panics for a connection that came back marked broken, with a caller in line: the
/// slot went to the caller at once, and the panic in the close's own task holds nothing.
#[tokio::test(start_paused = true)]
async fn close_panicking_for_a_broken_connection_leaks_no_slot() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 1);
    let mut held = pool.get().await.expect("connection 0");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|conn| conn.id) })
    };
    until_waiting(&pool, 1).await;
    hooked.arm(Hook::Close, 1);
    Pooled::mark_broken(&mut held);
    drop(held);
    let id = waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(id, 1);
    hooked.mock.until_closes(1).await;
    assert_eq!(hooked.armed(Hook::Close), 0, "close ran and panicked");
    assert_eq!(sizes(&pool), (1, 1, 0, 0, 0, 0));
    drop(pool.get().await.expect("a new get is served"));
    close_and_check(&pool, &hooked).await;
}

/// `close` panics for a shared connection marked broken under its leases, with a lease
/// caller in line: the caller gets a fresh connection at once, the broken one closes after
/// its last lease, and neither a lease nor a discarded connection is left counted.
#[tokio::test(start_paused = true)]
async fn close_panicking_for_a_broken_shared_connection_leaks_no_slot_or_lease() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 1, 2);
    let mut a = pool.lease().await.expect("a lease on connection 0");
    let b = pool.lease().await.expect("a second lease on connection 0");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.lease().await })
    };
    until_waiting(&pool, 1).await;
    hooked.arm(Hook::Close, 1);
    Lease::mark_broken(&mut a);
    let c = waiter
        .await
        .expect("the waiter does not panic")
        .expect("the caller in line is served");
    assert_eq!(c.id, 1);
    drop((a, b));
    hooked.mock.until_closes(1).await;
    assert_eq!(hooked.armed(Hook::Close), 0, "close ran and panicked");
    assert_eq!(sizes(&pool), (1, 0, 1, 1, 0, 0));
    let d = pool.lease().await.expect("a new lease is served");
    assert_eq!(d.id, 1);
    drop((c, d));
    close_and_check(&pool, &hooked).await;
}

/// `close` panics for one of the idle connections `Pool::close` closes: `close()` still
/// returns, and the other idle connections are still closed through the manager.
#[tokio::test(start_paused = true)]
async fn close_panicking_as_the_pool_closes_leaves_the_other_closes_to_run() {
    let hooked = Hooked::new();
    let pool = pool_of(&hooked, 3, 1);
    let conns = [
        pool.get().await.expect("connection 0"),
        pool.get().await.expect("connection 1"),
        pool.get().await.expect("connection 2"),
    ];
    drop(conns);
    assert_eq!(sizes(&pool), (3, 3, 0, 0, 0, 0));
    hooked.arm(Hook::Close, 1);
    close_and_check(&pool, &hooked).await;
    assert_eq!(hooked.armed(Hook::Close), 0, "close ran and panicked");
}
