//! Reset on return: a connection that comes back from `get` dirty (`Manager::needs_reset`) is
//! cleaned (`Manager::reset`) in a task of the pool's before anyone else gets it; a reset that
//! fails, panics or runs past `reset_timeout` discards its connection; `close` waits for the
//! resets in flight; a clean connection, and every lease, skip all of it.

mod support;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pool::{Manager, Pool, PoolError, Pooled, TimeoutKind};
use support::{Mock, MockConn, MockError};
use tokio::sync::Notify;

/// How one reset ends.
#[derive(Clone)]
enum Reset {
    Clean,
    Fail,
    Hang,
    Panic,
    /// Cleans once the notify is told.
    After(Arc<Notify>),
}

#[derive(Default)]
struct Dirt {
    /// Connections whose `needs_reset` says true.
    dirty: HashSet<u64>,
    /// Every connection is dirty (as a lease's would be, were leases reset).
    all_dirty: bool,
    /// `needs_reset` panics.
    panics: bool,
    plans: VecDeque<Reset>,
}

/// The mock manager with a dirty flag per connection and scripted resets.
#[derive(Clone)]
struct Resettable {
    mock: Mock,
    dirt: Arc<Mutex<Dirt>>,
    resets: Arc<AtomicUsize>,
    needs_reset_calls: Arc<AtomicUsize>,
}

impl Resettable {
    fn new() -> Self {
        Resettable {
            mock: Mock::new(),
            dirt: Arc::default(),
            resets: Arc::default(),
            needs_reset_calls: Arc::default(),
        }
    }

    fn dirt(&self) -> std::sync::MutexGuard<'_, Dirt> {
        self.dirt.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dirty(&self, conn: &MockConn) {
        self.dirt().dirty.insert(conn.id);
    }

    fn is_dirty(&self, id: u64) -> bool {
        self.dirt().dirty.contains(&id)
    }

    /// The next reset ends as `plan` says (later ones clean).
    fn push(&self, plan: Reset) {
        self.dirt().plans.push_back(plan);
    }

    fn resets(&self) -> usize {
        self.resets.load(SeqCst)
    }
}

impl Manager for Resettable {
    type Connection = MockConn;
    type Error = MockError;

    async fn connect(&self) -> Result<MockConn, MockError> {
        self.mock.connect().await
    }

    async fn check(&self, conn: &mut MockConn) -> Result<(), MockError> {
        self.mock.check(conn).await
    }

    fn is_broken(&self, conn: &mut MockConn) -> bool {
        self.mock.is_broken(conn)
    }

    fn needs_reset(&self, conn: &MockConn) -> bool {
        self.needs_reset_calls.fetch_add(1, SeqCst);
        let dirt = self.dirt();
        if dirt.panics {
            drop(dirt);
            panic!("scripted needs_reset panic");
        }
        dirt.all_dirty || dirt.dirty.contains(&conn.id)
    }

    async fn reset(&self, conn: &mut MockConn) -> Result<(), MockError> {
        self.resets.fetch_add(1, SeqCst);
        let plan = self.dirt().plans.pop_front().unwrap_or(Reset::Clean);
        match plan {
            Reset::Clean => {}
            Reset::Fail => return Err(MockError("scripted reset failure".into())),
            Reset::Hang => std::future::pending::<()>().await,
            Reset::Panic => panic!("scripted reset panic"),
            Reset::After(gate) => gate.notified().await,
        }
        self.dirt().dirty.remove(&conn.id);
        Ok(())
    }

    async fn close(&self, conn: MockConn) {
        self.mock.close(conn).await;
    }
}

fn pool_of(manager: &Resettable, max_size: usize) -> Pool<Resettable> {
    Pool::builder(manager.clone())
        .max_size(max_size)
        .wait_timeout(Duration::from_secs(5))
        .build()
        .expect("valid settings")
}

/// Lets every task that can run, run (the runtime is current-thread).
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// A dirty connection is handed to no one, idle or waiting, until its reset succeeded; the
/// caller's drop returns at once; the waiters in line get it after the reset, first come
/// first served.
#[tokio::test(start_paused = true)]
async fn a_dirty_connection_goes_to_no_one_until_its_reset_succeeded() {
    let manager = Resettable::new();
    let pool = pool_of(&manager, 1);
    let conn = pool.get().await.expect("a connection");
    let id = conn.id;
    manager.dirty(&conn);
    let gate = Arc::new(Notify::new());
    manager.push(Reset::After(Arc::clone(&gate)));

    let first = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|c| c.id) }
    });
    settle().await;
    let second = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|c| c.id) }
    });
    settle().await;
    assert_eq!(pool.status().waiting, 2);

    drop(conn);
    let status = pool.status();
    assert_eq!(
        (status.resetting, status.size, status.idle, status.in_use),
        (1, 1, 0, 0),
        "the dirty connection holds its slot while it resets"
    );
    settle().await;
    assert_eq!(manager.resets(), 1, "the reset runs");
    assert!(!first.is_finished() && !second.is_finished());
    assert!(
        matches!(
            pool.try_get().await,
            Err(PoolError::Timeout(TimeoutKind::Wait { .. }))
        ),
        "nothing to take while the only connection resets"
    );

    gate.notify_one();
    let got = first
        .await
        .expect("no panic")
        .expect("the first waiter is served");
    assert_eq!(got, id, "the same connection, reset");
    assert!(!manager.is_dirty(id));
    // The first waiter dropped it clean: the second gets it with no reset.
    let got = second
        .await
        .expect("no panic")
        .expect("the second waiter is served");
    assert_eq!(got, id);
    assert_eq!(manager.resets(), 1);
    let status = pool.status();
    assert_eq!((status.resetting, status.idle), (0, 1));
    assert_eq!(
        (status.counters.resets, status.counters.reset_failures),
        (1, 0)
    );
    pool.close().await;
    manager.mock.assert_each_closed_once();
}

/// A reset that fails, panics or times out discards its connection (closed once); the caller
/// waiting in line gets a fresh connection within its wait timeout, and no slot is lost.
#[tokio::test(start_paused = true)]
async fn a_failed_reset_discards_and_the_waiter_gets_a_fresh_connection() {
    for plan in [Reset::Fail, Reset::Panic, Reset::Hang] {
        let manager = Resettable::new();
        let pool = Pool::builder(manager.clone())
            .max_size(1)
            .wait_timeout(Duration::from_secs(5))
            .reset_timeout(Duration::from_secs(1))
            .build()
            .expect("valid settings");
        let conn = pool.get().await.expect("a connection");
        let id = conn.id;
        manager.dirty(&conn);
        manager.push(plan);
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get().await.map(|c| c.id) }
        });
        settle().await;
        drop(conn);
        let got = waiter
            .await
            .expect("no panic")
            .expect("served within the wait timeout");
        assert_ne!(got, id, "a fresh connection");
        manager.mock.until_closes(1).await;
        assert_eq!(manager.mock.closes_of(id), 1, "the dirty one closed once");
        let status = pool.status();
        assert_eq!(
            (status.resetting, status.size, status.idle),
            (0, 1, 1),
            "one slot, one connection, nothing lost"
        );
        assert_eq!(
            (status.counters.resets, status.counters.reset_failures),
            (1, 1)
        );
        pool.close().await;
        manager.mock.until_closes(2).await;
        manager.mock.assert_each_closed_once();
    }
}

/// `close` waits for a reset in flight, then that connection is closed once.
#[tokio::test(start_paused = true)]
async fn close_waits_for_resets_in_flight() {
    let manager = Resettable::new();
    let pool = pool_of(&manager, 2);
    let conn = pool.get().await.expect("a connection");
    let id = conn.id;
    manager.dirty(&conn);
    let gate = Arc::new(Notify::new());
    manager.push(Reset::After(Arc::clone(&gate)));
    drop(conn);
    settle().await;
    assert_eq!(pool.status().resetting, 1);

    let closing = tokio::spawn({
        let pool = pool.clone();
        async move { pool.close().await }
    });
    settle().await;
    assert!(!closing.is_finished(), "close waits for the reset");
    assert_eq!(manager.mock.closes_of(id), 0);

    gate.notify_one();
    closing.await.expect("no panic");
    assert_eq!(
        manager.mock.closes_of(id),
        1,
        "closed once, before close returned"
    );
    let status = pool.status();
    assert_eq!((status.resetting, status.size), (0, 0));
    manager.mock.assert_each_closed_once();
}

/// `close` waits for a reset no longer than `close_timeout`; the connection still closes,
/// once, when its reset times out.
#[tokio::test(start_paused = true)]
async fn close_waits_for_a_reset_no_longer_than_its_timeout() {
    let manager = Resettable::new();
    let pool = Pool::builder(manager.clone())
        .max_size(1)
        .close_timeout(Duration::from_secs(1))
        .reset_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let conn = pool.get().await.expect("a connection");
    let id = conn.id;
    manager.dirty(&conn);
    manager.push(Reset::Hang);
    drop(conn);
    settle().await;

    let started = tokio::time::Instant::now();
    pool.close().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "close_timeout, not more"
    );
    assert_eq!(manager.mock.closes_of(id), 0, "its reset still runs");

    // The paused clock runs on to the reset's timeout.
    tokio::time::sleep_until(started + Duration::from_secs(60)).await;
    manager.mock.until_closes(1).await;
    assert_eq!(manager.mock.closes_of(id), 1);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "closed as its reset timed out"
    );
    let status = pool.status();
    assert_eq!((status.resetting, status.size), (0, 0));
    assert_eq!(status.counters.reset_failures, 1);
    manager.mock.assert_each_closed_once();
}

/// A clean connection is idle again as the drop returns: no task, no reset.
#[tokio::test]
async fn a_clean_connection_is_idle_as_the_drop_returns() {
    let manager = Resettable::new();
    let pool = pool_of(&manager, 2);
    let conn = pool.get().await.expect("a connection");
    drop(conn);
    let status = pool.status();
    assert_eq!((status.idle, status.resetting), (1, 0));
    assert_eq!(manager.needs_reset_calls.load(SeqCst), 1, "asked once");
    assert_eq!(manager.resets(), 0);
    assert_eq!(status.counters.resets, 0);
}

/// A detached or broken connection is never asked about, nor reset.
#[tokio::test]
async fn detached_and_broken_connections_are_not_reset() {
    let manager = Resettable::new();
    manager.dirt().all_dirty = true;
    let pool = pool_of(&manager, 2);
    let conn = pool.get().await.expect("a connection");
    drop(Pooled::detach(conn));
    let mut conn = pool.get().await.expect("a connection");
    Pooled::mark_broken(&mut conn);
    drop(conn);
    settle().await;
    assert_eq!(manager.needs_reset_calls.load(SeqCst), 0);
    assert_eq!(manager.resets(), 0);
    pool.close().await;
}

/// Leases are never reset: a shared connection has no session of one caller.
#[tokio::test]
async fn leases_are_never_reset() {
    let manager = Resettable::new();
    manager.dirt().all_dirty = true;
    let pool = Pool::builder(manager.clone())
        .max_size(1)
        .max_streams(4)
        .build()
        .expect("valid settings");
    for _ in 0..3 {
        let a = pool.lease().await.expect("a lease");
        let b = pool.lease().await.expect("a lease");
        drop(a);
        drop(b);
    }
    settle().await;
    assert_eq!(manager.needs_reset_calls.load(SeqCst), 0);
    assert_eq!(manager.resets(), 0);
    let status = pool.status();
    assert_eq!((status.size, status.resetting), (1, 0));
    pool.close().await;
}

/// A `needs_reset` that panics discards the connection (its state is unknown) and frees its
/// slot: the next caller gets a fresh connection.
#[tokio::test]
async fn a_panicking_needs_reset_discards_the_connection() {
    let manager = Resettable::new();
    let pool = pool_of(&manager, 1);
    let conn = pool.get().await.expect("a connection");
    let id = conn.id;
    manager.dirt().panics = true;
    drop(conn);
    manager.dirt().panics = false;
    let conn = pool.get().await.expect("a fresh connection");
    assert_ne!(conn.id, id);
    manager.mock.until_closes(1).await;
    assert_eq!(manager.mock.closes_of(id), 1);
    assert_eq!(manager.resets(), 0);
    drop(conn);
    pool.close().await;
    manager.mock.assert_each_closed_once();
}

/// A pool whose runtime shuts down while a reset runs loses no slot: the reset ends as
/// failed, and the pool serves from the next runtime.
#[test]
fn a_reset_cut_off_by_its_runtime_loses_no_slot() {
    let manager = Resettable::new();
    let pool = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let pool = runtime.block_on(async {
            let pool = pool_of(&manager, 1);
            let conn = pool.get().await.expect("a connection");
            manager.dirty(&conn);
            manager.push(Reset::Hang);
            drop(conn);
            settle().await;
            assert_eq!(pool.status().resetting, 1);
            pool
        });
        drop(runtime);
        pool
    };
    let status = pool.status();
    assert_eq!(
        (status.resetting, status.size),
        (0, 0),
        "the slot came back"
    );
    assert_eq!(status.counters.reset_failures, 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let conn = pool.get().await.expect("served from the next runtime");
        drop(conn);
        pool.close().await;
    });
}
