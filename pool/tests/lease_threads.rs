//! Leases taken and ended in a loop by many tasks on two threads while the pool closes,
//! resizes, retires connections by `max_lifetime`, or finds them broken: no lease ever goes
//! to a connection already closed, or beyond `max_streams` on one connection, or to a
//! connection reported broken before the lease was asked; every task ends; and every
//! connection the manager made is closed exactly once, with every count back to 0.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool::{Lease, Pool, PoolError};
use support::{Lcg, Mock, MockError, all_ended, lease_builder};
use tokio::sync::{Notify, RwLock};

const MAX_SIZE: usize = 3;
const MAX_STREAMS: usize = 4;
/// More callers than the pool has room for (3 x 4), so some always wait in line.
const TASKS: u64 = 16;
/// The most turns a task that runs until told to stop takes: far more than any test needs.
const TURN_LIMIT: usize = 100_000;

/// What the callers have seen of each connection, checked on every lease handed out.
struct Ledger {
    mock: Mock,
    book: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// Leases held on each connection id, counted after the hand-out and uncounted before the
    /// end: never above what the pool counts.
    held: HashMap<u64, usize>,
    /// For each connection id reported broken, the tick of its first report.
    broken_at: HashMap<u64, u64>,
    /// Bumped by each report; read as each lease is asked for.
    tick: u64,
}

impl Ledger {
    fn new(mock: &Mock) -> Self {
        Ledger {
            mock: mock.clone(),
            book: Mutex::new(Book::default()),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .expect("no caller panicked holding the book")
    }

    /// The tick before a lease is asked for: reports of this tick or earlier came before it.
    fn tick(&self) -> u64 {
        self.book().tick
    }

    /// A lease on `id` handed to a caller that asked at tick `since`: the connection is not
    /// closed (the mock counts a close as it starts), carries at most `max_streams` leases,
    /// and was not reported broken before the caller asked.
    fn take(&self, id: u64, since: u64) {
        assert_eq!(
            self.mock.closes_of(id),
            0,
            "a lease handed out on connection {id}, which was closed"
        );
        let mut book = self.book();
        let held = book.held.entry(id).or_default();
        *held += 1;
        assert!(
            *held <= MAX_STREAMS,
            "{held} leases on connection {id}, above max_streams"
        );
        if let Some(&at) = book.broken_at.get(&id) {
            assert!(
                at > since,
                "a lease asked at tick {since} went to connection {id}, reported broken at tick {at}"
            );
        }
    }

    /// The lease on `id` is about to end.
    fn end(&self, id: u64) {
        assert_eq!(
            self.mock.closes_of(id),
            0,
            "connection {id} was closed under a lease"
        );
        *self.book().held.get_mut(&id).expect("counted by take") -= 1;
    }

    /// Connection `id` was reported broken (the report has returned).
    fn report_broken(&self, id: u64) {
        let mut book = self.book();
        book.tick += 1;
        let tick = book.tick;
        book.broken_at.entry(id).or_insert(tick);
    }

    /// The connections that carry leases now, by id.
    fn leased(&self) -> Vec<u64> {
        let mut ids: Vec<_> = self
            .book()
            .held
            .iter()
            .filter(|&(_, &n)| n > 0)
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Connections reported broken.
    fn broken(&self) -> usize {
        self.book().broken_at.len()
    }
}

/// Turns taken by the lease tasks, with a wake-up for whoever waits for a number of them.
#[derive(Default)]
struct Progress {
    turns: AtomicUsize,
    turned: Notify,
}

impl Progress {
    fn count(&self) {
        self.turns.fetch_add(1, SeqCst);
        self.turned.notify_one();
    }

    /// Waits until the tasks have taken `n` turns in all (panics after 30 s).
    async fn until(&self, n: usize) {
        let reached = async {
            loop {
                let turned = self.turned.notified();
                if self.turns.load(SeqCst) >= n {
                    return;
                }
                turned.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), reached)
            .await
            .unwrap_or_else(|_| panic!("the tasks never reached {n} turns"));
    }
}

/// One turn of a lease task: ask for a lease, check it in the ledger, mark its connection
/// broken if `mark_broken`, hold it for up to two scheduler turns (one to three after a
/// mark), end it.
async fn turn(
    pool: &Pool<Mock>,
    ledger: &Ledger,
    rng: &mut Lcg,
    mark_broken: bool,
) -> Result<(), PoolError<MockError>> {
    let since = ledger.tick();
    let mut lease = pool.lease().await?;
    let id = lease.id;
    ledger.take(id, since);
    if mark_broken {
        Lease::mark_broken(&mut lease);
        ledger.report_broken(id);
    }
    // Held on: other callers lease meanwhile, after the report if there was one.
    for _ in 0..rng.below(3) + u64::from(mark_broken) {
        tokio::task::yield_now().await;
    }
    ledger.end(id);
    drop(lease);
    Ok(())
}

/// Spawns `TASKS` lease tasks that take turns until `stop` is set (at most `TURN_LIMIT`
/// each), every task's turns seeded apart; a turn waits while `paused` is held for writing.
fn spawn_until_stopped(
    pool: &Pool<Mock>,
    ledger: &Arc<Ledger>,
    stop: &Arc<AtomicBool>,
    progress: &Arc<Progress>,
    paused: Option<&Arc<RwLock<()>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..TASKS)
        .map(|task| {
            let pool = pool.clone();
            let ledger = Arc::clone(ledger);
            let stop = Arc::clone(stop);
            let progress = Arc::clone(progress);
            let paused = paused.map(Arc::clone);
            tokio::spawn(async move {
                let mut rng = Lcg(task);
                for _ in 0..TURN_LIMIT {
                    if stop.load(SeqCst) {
                        return;
                    }
                    // While the admin holds the write side, no turn runs.
                    let _running = match &paused {
                        Some(paused) => Some(paused.read().await),
                        None => None,
                    };
                    turn(&pool, &ledger, &mut rng, false)
                        .await
                        .unwrap_or_else(|error| panic!("task {task}: no lease: {error:?}"));
                    progress.count();
                }
            })
        })
        .collect()
}

/// Closes the pool, then checks that every connection made was closed exactly once and that
/// every count is 0.
async fn close_and_check(pool: &Pool<Mock>, mock: &Mock) {
    tokio::time::timeout(Duration::from_secs(30), pool.close())
        .await
        .expect("close() returns: no lease is held");
    mock.until("every connection is closed and dropped", || {
        pool.status().connecting == 0 && mock.in_flight() == 0 && mock.live() == 0
    })
    .await;
    mock.assert_each_closed_once();
    assert_zero(pool);
}

/// Every size of the pool is 0.
fn assert_zero(pool: &Pool<Mock>) {
    let s = pool.status();
    assert_eq!(
        (
            s.size,
            s.idle,
            s.in_use,
            s.leases,
            s.discarded,
            s.connecting,
            s.waiting
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "{s:?}"
    );
}

/// `close()` while 16 tasks take and end leases: every task's next lease fails with
/// `Closed` and the task ends, no lease asked after `close()` returned is served, `close()`
/// returns once the held leases end (well within its 60 s `close_timeout`), and every
/// connection is closed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_mid_storm_ends_every_lease_task_and_closes_each_connection_once() {
    /// Leases taken, over all tasks, before the pool closes.
    const WARM: usize = 2000;
    let mock = Mock::new();
    let pool = lease_builder(&mock, MAX_SIZE, MAX_STREAMS)
        .close_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let ledger = Arc::new(Ledger::new(&mock));
    let closed = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicUsize::new(0));
    let warm = Arc::new(Notify::new());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let pool = pool.clone();
            let ledger = Arc::clone(&ledger);
            let closed = Arc::clone(&closed);
            let taken = Arc::clone(&taken);
            let warm = Arc::clone(&warm);
            tokio::spawn(async move {
                let mut rng = Lcg(task);
                for _ in 0..TURN_LIMIT {
                    let after_close = closed.load(SeqCst);
                    match turn(&pool, &ledger, &mut rng, false).await {
                        Ok(()) => {
                            assert!(!after_close, "task {task}: a lease asked after close()");
                            if taken.fetch_add(1, SeqCst) + 1 == WARM {
                                warm.notify_one();
                            }
                        }
                        Err(PoolError::Closed) => return true,
                        Err(error) => panic!("task {task}: {error:?}"),
                    }
                }
                false
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(30), warm.notified())
        .await
        .expect("the tasks take their first leases");
    tokio::time::timeout(Duration::from_secs(30), pool.close())
        .await
        .expect("close() returns once the leases held end");
    closed.store(true, SeqCst);
    assert!(matches!(pool.lease().await, Err(PoolError::Closed)));
    assert!(matches!(pool.try_lease().await, Err(PoolError::Closed)));
    for task in tasks {
        assert!(
            task.await.expect("every task ends without a panic"),
            "a task ran out of turns before its lease failed with Closed"
        );
    }
    assert!(taken.load(SeqCst) >= WARM);
    mock.until("every connection is closed and dropped", || {
        pool.status().connecting == 0 && mock.in_flight() == 0 && mock.live() == 0
    })
    .await;
    mock.assert_each_closed_once();
    assert_zero(&pool);
}

/// `resize` down and up while 16 tasks take and end leases: never more than `max_streams`
/// leases on a connection, and once the leases held at each resize have ended (the tasks
/// paused), `size` is within the new `max_size`, with no lease and nobody in line; every
/// connection is closed exactly once at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_mid_storm_keeps_max_streams_and_settles_within_max_size() {
    let mock = Mock::new();
    let pool = lease_builder(&mock, MAX_SIZE, MAX_STREAMS)
        .build()
        .expect("valid settings");
    let ledger = Arc::new(Ledger::new(&mock));
    let stop = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(RwLock::new(()));
    let progress = Arc::new(Progress::default());
    let tasks = spawn_until_stopped(&pool, &ledger, &stop, &progress, Some(&paused));
    let mut rng = Lcg(99);
    for size in [1, 4, 2, 5, 1, 3, 2] {
        // Let the tasks run, then resize while they hold leases and wait in line.
        let turns = progress.turns.load(SeqCst);
        progress.until(turns + 200).await;
        for _ in 0..rng.below(50) {
            tokio::task::yield_now().await;
        }
        pool.resize(size).expect("a valid size");
        let quiet = tokio::time::timeout(Duration::from_secs(30), paused.write())
            .await
            .expect("the turns running at the resize end");
        let s = pool.status();
        assert_eq!(s.max_size, size, "{s:?}");
        assert!(s.size <= size, "resized to {size}: {s:?}");
        assert_eq!((s.leases, s.discarded, s.waiting), (0, 0, 0), "{s:?}");
        drop(quiet);
    }
    stop.store(true, SeqCst);
    all_ended(&pool, tasks).await;
    assert!(
        mock.connects() > MAX_SIZE,
        "the resizes replaced connections"
    );
    close_and_check(&pool, &mock).await;
}

/// A 2 ms `max_lifetime` while 16 tasks take and end leases (real time: a paused clock needs
/// the current-thread runtime): connections retire and are replaced many times, yet no lease
/// is handed out on a connection whose close has begun, or beyond `max_streams`, and every
/// connection is closed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_never_land_on_a_connection_closed_by_max_lifetime() {
    /// Retirements to see before the tasks stop.
    const RETIRED: usize = 60;
    let mock = Mock::new();
    let pool = lease_builder(&mock, MAX_SIZE, MAX_STREAMS)
        .max_lifetime(Some(Duration::from_millis(2)))
        .build()
        .expect("valid settings");
    let ledger = Arc::new(Ledger::new(&mock));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let tasks = spawn_until_stopped(&pool, &ledger, &stop, &progress, None);
    mock.until("connections retire by their lifetime", || {
        mock.closes() >= RETIRED
    })
    .await;
    stop.store(true, SeqCst);
    all_ended(&pool, tasks).await;
    assert!(mock.connected() > RETIRED);
    close_and_check(&pool, &mock).await;
}

/// Leases marked broken by their callers (`Lease::mark_broken`), and connections the manager
/// reports broken through `is_broken_shared` while 10 tasks take and end leases: no lease
/// asked after a report goes to the connection reported, `size` stays within `max_size`
/// (broken connections still leased are counted apart), and every connection is closed
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_connections_take_no_lease_asked_after_the_report_and_close_once() {
    const TURNS: usize = 1000;
    /// Fewer callers than the pool's room (3 x 4): most leases then land beside others, and
    /// must see a report as the first lease on a connection does.
    const CALLERS: u64 = 10;
    let mock = Mock::new();
    let pool = lease_builder(&mock, MAX_SIZE, MAX_STREAMS)
        .build()
        .expect("valid settings");
    let ledger = Arc::new(Ledger::new(&mock));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut tasks: Vec<_> = (0..CALLERS)
        .map(|task| {
            let pool = pool.clone();
            let ledger = Arc::clone(&ledger);
            let finished = Arc::clone(&finished);
            tokio::spawn(async move {
                let mut rng = Lcg(task + 100);
                for _ in 0..TURNS {
                    let mark = rng.below(60) == 0;
                    turn(&pool, &ledger, &mut rng, mark)
                        .await
                        .unwrap_or_else(|error| panic!("task {task}: no lease: {error:?}"));
                    if rng.below(8) == 0 {
                        let s = pool.status();
                        assert!(s.size <= MAX_SIZE, "{s:?}");
                    }
                }
                finished.fetch_add(1, SeqCst);
            })
        })
        .collect();
    // The manager finds connections broken under their leases, now and then, until the
    // callers are done.
    let reporter = {
        let mock = mock.clone();
        let ledger = Arc::clone(&ledger);
        tokio::spawn(async move {
            let mut rng = Lcg(7);
            for _ in 0..10_000 {
                if finished.load(SeqCst) == CALLERS as usize {
                    return;
                }
                for _ in 0..rng.below(30) + 5 {
                    tokio::task::yield_now().await;
                }
                let leased = ledger.leased();
                let Some(&id) = leased.get(rng.below(leased.len().max(1) as u64) as usize) else {
                    continue;
                };
                mock.set_shared_broken(id);
                ledger.report_broken(id);
            }
        })
    };
    tasks.push(reporter);
    let status = all_ended(&pool, tasks).await;
    assert!(status.size <= MAX_SIZE, "{status:?}");
    assert!(
        ledger.broken() > 5 && status.counters.broken > 5,
        "connections were reported broken: {} reports, {status:?}",
        ledger.broken()
    );
    close_and_check(&pool, &mock).await;
}
