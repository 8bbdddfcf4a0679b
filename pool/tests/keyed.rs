//! `KeyedPool`: a pool per key under one cap across keys. Each key's manager is a mock
//! counted in its key's tally and in the total one, from the start of its connect until the
//! pool hands the connection to `close`: the peaks are what the pool held.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::poll;
use pool::keyed::{KeyedBuilder, KeyedPool};
use pool::{BuildError, Lease, PoolError, Pooled, Status, TimeoutKind};
use support::logs::Logs;
use support::{Lcg, Mock, Plan, Tally};
use tokio::task::JoinHandle;
use tokio::time::Instant;

type Key = usize;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Scripts the mock made for a key.
type Script = Box<dyn Fn(Key, &Mock) + Send + Sync>;

/// The managers of a keyed pool's keys: a new mock for each key it makes, scripted by key,
/// counted in its key's tally and in `total`.
struct Mocks {
    total: Arc<Tally>,
    keys: Vec<Arc<Tally>>,
    script: Script,
    /// Every mock made for each key: two callers racing for a new key both make one.
    made: Mutex<HashMap<Key, Vec<Mock>>>,
}

impl Mocks {
    fn new(keys: usize, script: impl Fn(Key, &Mock) + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Mocks {
            total: Tally::new(),
            keys: (0..keys).map(|_| Tally::new()).collect(),
            script: Box::new(script),
            made: Mutex::default(),
        })
    }

    fn make(&self, key: Key) -> Mock {
        let mock = Mock::counted_in(&[Arc::clone(&self.total), Arc::clone(&self.keys[key])]);
        (self.script)(key, &mock);
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.entry(key).or_default().push(mock.clone());
        mock
    }

    /// Every mock made for `key`.
    fn all(&self, key: Key) -> Vec<Mock> {
        let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.get(&key).cloned().unwrap_or_default()
    }

    /// The one mock made for `key` (no caller raced another for it).
    fn mock(&self, key: Key) -> Mock {
        let all = self.all(key);
        assert_eq!(all.len(), 1, "one mock made for key {key}");
        all[0].clone()
    }

    fn builder(self: &Arc<Self>) -> KeyedBuilder<Key, Mock> {
        let mocks = Arc::clone(self);
        KeyedPool::builder(move |key: &Key| mocks.make(*key))
    }
}

/// A keyed pool of `max_size` connections per key and `max_total` across keys, whose callers
/// wait 1 s at most.
fn capped(mocks: &Arc<Mocks>, max_size: usize, max_total: usize) -> KeyedPool<Key, Mock> {
    mocks
        .builder()
        .max_size(max_size)
        .max_total(max_total)
        .wait_timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings")
}

fn status(pool: &KeyedPool<Key, Mock>, key: Key) -> Status {
    pool.status(&key).expect("the key is held")
}

/// Waits until `done` holds (bounded: panics after 1000 yields).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never came: {what}");
}

/// 1000 tasks over 10 keys, arriving over a second on a skewed schedule and holding their
/// connection a varying while, on a paused clock: no key ever has more than `max_size`
/// connections, all keys together never more than `max_total`, both are reached, and every
/// task is served.
#[tokio::test(start_paused = true)]
async fn caps_hold_per_key_and_across_keys_under_1000_tasks() {
    const KEYS: usize = 10;
    const MAX_SIZE: usize = 4;
    const MAX_TOTAL: usize = 20;
    let mocks = Mocks::new(KEYS, |_, mock| mock.set_connect(Plan::ok().after(ms(3))));
    let pool = mocks
        .builder()
        .max_size(MAX_SIZE)
        .max_total(MAX_TOTAL)
        .wait_timeout(Duration::from_secs(600))
        .build()
        .expect("valid settings");
    let mut lcg = Lcg(7);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        // Low keys come far more often: they grow to `max_size` while others starve.
        let key = lcg.below(KEYS as u64).min(lcg.below(KEYS as u64)) as Key;
        let (start, hold) = (ms(lcg.below(1000)), ms(1 + lcg.below(20)));
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            let conn = pool.get(&key).await.expect("a connection");
            tokio::time::sleep(hold).await;
            drop(conn);
        }));
    }
    for task in tasks {
        task.await.expect("every task ends without a panic");
    }
    for (key, tally) in mocks.keys.iter().enumerate() {
        assert!(tally.peak() <= MAX_SIZE, "key {key}: {} open", tally.peak());
        let status = status(&pool, key);
        assert_eq!((status.in_use, status.waiting), (0, 0), "{status:?}");
    }
    let busiest = mocks.keys.iter().map(|tally| tally.peak()).max();
    assert_eq!(busiest, Some(MAX_SIZE), "some key reached max_size");
    assert_eq!(
        mocks.total.peak(),
        MAX_TOTAL,
        "max_total reached, never passed"
    );
    let closed: usize = (0..KEYS).map(|key| mocks.mock(key).closes()).sum();
    assert!(closed > 0, "connections were closed for starved keys");
    pool.close().await;
}

/// At `max_total`, a caller of key 1 while key 0 holds idle connections is served at once:
/// the longest-idle connection of key 0 is closed and one opens for key 1.
#[tokio::test(start_paused = true)]
async fn at_max_total_an_idle_connection_of_another_key_is_closed_for_a_caller() {
    let mocks = Mocks::new(2, |_, _| {});
    let pool = mocks
        .builder()
        .max_size(2)
        .max_total(2)
        .build()
        .expect("valid");
    let first = pool.get(&0).await.expect("a connection");
    let second = pool.get(&0).await.expect("a connection");
    let first_id = first.id;
    drop(first);
    tokio::time::sleep(ms(10)).await;
    drop(second);
    assert_eq!(status(&pool, 0).idle, 2);

    let start = Instant::now();
    let conn = pool.get(&1).await.expect("served at max_total");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no wait for key 0's idle timeout"
    );
    let a = mocks.mock(0);
    a.until_closes(1).await;
    assert_eq!(a.closes_of(first_id), 1, "the longest-idle one went");
    assert_eq!((status(&pool, 0).size, status(&pool, 1).size), (1, 1));
    assert_eq!(mocks.total.peak(), 2);
    drop(conn);
    pool.close().await;
}

/// A caller starved by `max_total` is served as soon as another key's connection comes back
/// with nobody of its own key waiting: that connection is closed for it rather than kept
/// idle. With nothing coming back, it times out in line like any waiter.
#[tokio::test(start_paused = true)]
async fn a_connection_that_would_go_idle_goes_to_a_starved_key() {
    let mocks = Mocks::new(2, |_, _| {});
    let pool = capped(&mocks, 2, 2);
    let (a, b) = (
        pool.get(&0).await.expect("a"),
        pool.get(&0).await.expect("b"),
    );
    let start = Instant::now();
    let timed_out = pool.get(&1).await.map(drop);
    assert!(
        matches!(timed_out, Err(PoolError::Timeout(TimeoutKind::Wait { .. }))),
        "{timed_out:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&1).await.map(|conn| conn.id) }
    });
    until("a caller of key 1 waits", || status(&pool, 1).waiting == 1).await;
    tokio::time::sleep(ms(100)).await;
    assert!(!waiter.is_finished(), "nothing came back: it still waits");
    let returned = a.id;
    drop(a);
    let served = waiter.await.expect("no panic");
    assert!(served.is_ok(), "{served:?}");
    mocks.mock(0).until_closes(1).await;
    assert_eq!(
        mocks.mock(0).closes_of(returned),
        1,
        "closed, not kept idle"
    );
    assert_eq!((status(&pool, 0).size, status(&pool, 1).size), (1, 1));
    assert_eq!(mocks.total.peak(), 2);
    drop(b);
    pool.close().await;
}

/// Spawns `tasks` callers of `key`, each `rounds` times getting a connection (a lease, when
/// `lease`), holding it 1 ms and dropping it: more callers than room keep someone of `key` in
/// line.
fn spawn_busy(
    pool: &KeyedPool<Key, Mock>,
    key: Key,
    tasks: usize,
    rounds: usize,
    lease: bool,
) -> Vec<JoinHandle<()>> {
    (0..tasks)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..rounds {
                    let held = match lease {
                        true => (
                            None,
                            Some(pool.lease(&key).await.expect("every round served")),
                        ),
                        false => (
                            Some(pool.get(&key).await.expect("every round served")),
                            None,
                        ),
                    };
                    tokio::time::sleep(ms(1)).await;
                    drop(held);
                }
            })
        })
        .collect()
}

/// A lease of key 1 is served within `within` while the `busy` callers of key 0 run on; then
/// every round of theirs is served.
async fn lease_served_beside(
    pool: &KeyedPool<Key, Mock>,
    within: Duration,
    busy: Vec<JoinHandle<()>>,
) {
    let start = Instant::now();
    let lease = pool.lease(&1).await.expect("served while key 0 is busy");
    assert!(start.elapsed() <= within, "waited {:?}", start.elapsed());
    drop(lease);
    assert!(
        busy.iter().all(|task| !task.is_finished()),
        "key 0 still busy"
    );
    for task in busy {
        task.await.expect("no panic");
    }
}

/// [`spawn_busy`] with `get`.
fn busy(pool: &KeyedPool<Key, Mock>, key: Key, tasks: usize, rounds: usize) -> Vec<JoinHandle<()>> {
    spawn_busy(pool, key, tasks, rounds, false)
}

/// A key that holds all of `max_total` under sustained load (8 callers on 4 connections, one
/// always in line, for 2 s) gives way to a starved key: a caller of another key, by `get`
/// and then by `lease`, is served at the busy key's next return (1 ms), not at its
/// `wait_timeout` (1 s), and every round of the busy key is still served.
#[tokio::test(start_paused = true)]
async fn a_busy_key_gives_way_to_a_starved_key() {
    let mocks = Mocks::new(2, |_, _| {});
    let pool = capped(&mocks, 4, 4);
    let busy = busy(&pool, 0, 8, 1000);
    let saturated = || {
        pool.status(&0)
            .is_some_and(|s| s.size == 4 && s.waiting > 0)
    };
    until("key 0 holds max_total, callers in line", saturated).await;

    let start = Instant::now();
    let conn = pool.get(&1).await.expect("served while key 0 is busy");
    assert!(start.elapsed() <= ms(1), "waited {:?}", start.elapsed());
    drop(conn);
    tokio::time::sleep(ms(10)).await;
    assert!(saturated(), "key 0 took its slot back");

    lease_served_beside(&pool, ms(1), busy).await;
    assert_eq!(mocks.total.peak(), 4);
    pool.close().await;
}

/// A key that holds all of `max_total` through leases (16 callers on 4 connections of 2
/// leases: the leases of each connection overlap, so none is ever left without one) gives
/// way to a starved key too: one of its connections takes no new lease, and the slot it
/// frees at its last end goes to the other key, whose caller is served within 2 ms (the two
/// leases it still carried), not at its `wait_timeout` (1 s). Alone, the same busy key keeps
/// its connections.
#[tokio::test(start_paused = true)]
async fn a_busy_leasing_key_gives_way_to_a_starved_key() {
    let mocks = Mocks::new(2, |_, _| {});
    let build = || {
        mocks
            .builder()
            .max_size(4)
            .max_total(4)
            .max_streams(2)
            .wait_timeout(Duration::from_secs(1))
            .build()
            .expect("valid settings")
    };
    let alone = build();
    for task in spawn_busy(&alone, 0, 16, 200, true) {
        task.await.expect("no panic");
    }
    let mock = mocks.mock(0);
    assert_eq!(
        (mock.connects(), mock.closes()),
        (4, 0),
        "alone, it keeps them"
    );
    alone.close().await;

    let pool = build();
    let busy = spawn_busy(&pool, 0, 16, 1000, true);
    until("key 0 holds max_total, callers in line", || {
        pool.status(&0)
            .is_some_and(|s| s.size == 4 && s.waiting > 0)
    })
    .await;
    lease_served_beside(&pool, ms(2), busy).await;
    assert!(mocks.total.peak() <= 4, "max_total held");
    pool.close().await;
}

/// A busy key alone, with nobody of another key starving, keeps its connections: under the
/// same load, none is closed and no more than `max_size` are opened.
#[tokio::test(start_paused = true)]
async fn a_busy_key_alone_keeps_its_connections() {
    let mocks = Mocks::new(1, |_, _| {});
    let pool = capped(&mocks, 4, 4);
    for task in busy(&pool, 0, 8, 1000) {
        task.await.expect("no panic");
    }
    let mock = mocks.mock(0);
    assert_eq!((mock.connects(), mock.closes()), (4, 0));
    pool.close().await;
}

/// Busy keys share `max_total`, without churn once each has a connection: a second busy key
/// gets one slot of the first's (one close) and then both keep theirs; six keys, more than
/// slots, take turns, and every round of every key is served within its `wait_timeout`.
#[tokio::test(start_paused = true)]
async fn busy_keys_share_max_total() {
    let mocks = Mocks::new(6, |_, _| {});
    let pool = capped(&mocks, 4, 4);
    let first = busy(&pool, 0, 8, 1000);
    until("key 0 holds max_total", || {
        pool.status(&0).is_some_and(|s| s.size == 4)
    })
    .await;
    let second = busy(&pool, 1, 8, 1000);
    tokio::time::sleep(ms(100)).await;
    assert_eq!((status(&pool, 0).size, status(&pool, 1).size), (3, 1));
    assert_eq!(mocks.mock(0).closes(), 1);
    tokio::time::sleep(ms(100)).await;
    assert_eq!(mocks.mock(0).closes(), 1, "settled: no churn");

    let rest: Vec<_> = (2..6).flat_map(|key| busy(&pool, key, 4, 100)).collect();
    for task in first.into_iter().chain(second).chain(rest) {
        task.await.expect("no panic");
    }
    assert_eq!(mocks.total.peak(), 4);
    pool.close().await;
}

/// A key whose connects hang and one whose connects fail hold up no other key: the other
/// keys are served at once, and the bad keys' callers time out as a pool's do, in line at
/// their `wait_timeout` (1 s), or at `connect_timeout` (10 s) for the two whose own connect
/// hangs. Each connect of the hanging key counts against `max_total`, at most its `max_size`
/// of them.
#[tokio::test(start_paused = true)]
async fn a_key_whose_connects_hang_or_fail_holds_up_no_other_key() {
    const HANG: Key = 0;
    const FAIL: Key = 1;
    let mocks = Mocks::new(5, |key, mock| match key {
        HANG => mock.set_connect(Plan::hang()),
        FAIL => mock.set_connect(Plan::fail("refused")),
        _ => {}
    });
    // Room for both bad keys' `max_size` and two connections for each of the others.
    let pool = capped(&mocks, 2, 10);
    let start = Instant::now();
    let mut bad = Vec::new();
    for key in [HANG, FAIL].into_iter().cycle().take(10) {
        let pool = pool.clone();
        bad.push(tokio::spawn(async move {
            let outcome = pool.get(&key).await.map(drop);
            (key, outcome, start.elapsed())
        }));
    }
    until("the hanging key's connects run", || {
        pool.status(&HANG).is_some_and(|s| s.connecting == 2)
    })
    .await;
    let mut held = Vec::new();
    for key in 2..5 {
        held.push(pool.get(&key).await.expect("a connection"));
        held.push(pool.get(&key).await.expect("a connection"));
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "the others at once");
    assert_eq!(status(&pool, HANG).connecting, 2, "max_size of the total");
    let mut ends = HashMap::<(Key, Duration), usize>::new();
    for task in bad {
        let (key, outcome, took) = task.await.expect("no panic");
        assert!(
            matches!(outcome, Err(PoolError::Timeout(TimeoutKind::Wait { .. }))),
            "{outcome:?}"
        );
        *ends.entry((key, took)).or_default() += 1;
    }
    let secs = Duration::from_secs;
    let expected = HashMap::from([
        ((HANG, secs(1)), 3),
        ((HANG, secs(10)), 2),
        ((FAIL, secs(1)), 5),
    ]);
    assert_eq!(ends, expected, "(key, when it ended): callers");
    assert!(
        mocks.mock(FAIL).connect_failures() > 2,
        "retried until its timeout"
    );
    assert!(mocks.total.peak() <= 10);
    drop(held);
    pool.close().await;
}

/// A hanging key's connects take up to its `max_size` of `max_total` until `connect_timeout`
/// (10 s): with only that left over, another key waits for it.
#[tokio::test(start_paused = true)]
async fn a_hanging_key_takes_at_most_max_size_of_the_total() {
    let mocks = Mocks::new(3, |key, mock| {
        if key == 0 {
            mock.set_connect(Plan::hang());
        }
    });
    let pool = capped(&mocks, 2, 4);
    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get(&0).await.map(drop) })
        })
        .collect();
    until("the hanging connects run", || {
        pool.status(&0).is_some_and(|s| s.connecting == 2)
    })
    .await;
    let held = (
        pool.get(&1).await.expect("a"),
        pool.get(&1).await.expect("b"),
    );
    let outcome = pool.get(&2).await.map(drop);
    assert!(matches!(outcome, Err(PoolError::Timeout(_))), "{outcome:?}");
    for task in hanging {
        assert!(task.await.expect("no panic").is_err());
    }
    // The hanging connects time out at 10 s and give their slots back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(status(&pool, 0).connecting, 0);
    drop(pool.get(&2).await.expect("room again"));
    drop(held);
    pool.close().await;
}

/// Keys used once each, 100,000 of them in batches 10 s apart (`idle_timeout` 10 s), on a
/// paused clock: each connection closes after its idle timeout and each key is forgotten
/// once it has held nothing for another one, so the keys held stay at three batches' worth,
/// and drop to none.
#[tokio::test(start_paused = true)]
async fn keys_that_hold_nothing_are_forgotten_so_memory_stays_flat() {
    const BATCH: usize = 1000;
    let mock = Mock::new();
    let pool = KeyedPool::builder({
        let mock = mock.clone();
        move |_: &Key| mock.clone()
    })
    .max_size(1)
    .max_total(100_000)
    .idle_timeout(Some(Duration::from_secs(10)))
    .build()
    .expect("valid");
    let mut most = 0;
    for batch in 0..100 {
        for key in batch * BATCH..(batch + 1) * BATCH {
            drop(pool.get(&key).await.expect("a connection"));
        }
        most = most.max(pool.keys_held());
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // A key lives at most three idle timeouts: idle until its connection closes (reaped
    // every half timeout), holding nothing, then forgotten by the sweep (every half timeout).
    assert_eq!(most, 3 * BATCH, "keys held at once, at most");
    assert!(pool.status(&0).is_none(), "an old key is forgotten");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(pool.keys_held(), 0);
    assert_eq!((mock.connected(), mock.closes()), (100_000, 100_000));
    assert_eq!(mock.live(), 0);
    // A key forgotten is made again on its next use.
    drop(pool.get(&0).await.expect("a connection"));
    assert_eq!(pool.keys_held(), 1);
    pool.close().await;
}

/// Leases per key place and cap as `Pool::lease` does (fewest leases first, `max_streams`
/// each, `max_size` connections, then a wait); across keys `max_total` holds, and a starved
/// key's lease is served by the connection another key's last lease leaves idle.
#[tokio::test(start_paused = true)]
async fn leases_per_key_place_and_cap_as_a_pool_does() {
    let mocks = Mocks::new(3, |_, _| {});
    let pool = mocks
        .builder()
        .max_size(2)
        .max_streams(4)
        .max_total(3)
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid");
    let mut leases: Vec<Lease<Mock>> = Vec::new();
    for _ in 0..8 {
        leases.push(pool.lease(&0).await.expect("a lease"));
    }
    let mut per_conn: HashMap<u64, usize> = HashMap::new();
    for lease in &leases {
        *per_conn.entry(lease.id).or_default() += 1;
    }
    assert_eq!(per_conn.values().copied().collect::<Vec<_>>(), [4, 4]);
    let ninth = tokio::spawn({
        let pool = pool.clone();
        async move { pool.lease(&0).await.map(drop) }
    });
    until("the ninth lease waits", || status(&pool, 0).waiting == 1).await;

    let other = pool.lease(&1).await.expect("key 1's own connection");
    assert_eq!((status(&pool, 1).size, mocks.total.peak()), (1, 3));
    let starved = tokio::spawn({
        let pool = pool.clone();
        async move { pool.lease(&2).await.map(|lease| lease.id) }
    });
    until("key 2 waits", || {
        pool.status(&2).is_some_and(|s| s.waiting == 1)
    })
    .await;
    drop(other);
    assert!(
        starved.await.expect("no panic").is_ok(),
        "served by key 1's slot"
    );
    assert_eq!(status(&pool, 1).size, 0);
    drop(leases.pop());
    assert!(
        ninth.await.expect("no panic").is_ok(),
        "the room that freed"
    );
    assert_eq!(mocks.total.peak(), 3);
    drop(leases);
    pool.close().await;
}

/// `close` closes every key's pool: waiters fail with `Closed`, idle connections close, a
/// connection in use closes as it comes back, later calls fail, and no key is held.
#[tokio::test(start_paused = true)]
async fn close_closes_every_keys_pool() {
    let mocks = Mocks::new(3, |_, _| {});
    let pool = mocks
        .builder()
        .max_size(1)
        .max_total(3)
        .build()
        .expect("valid");
    drop(pool.get(&0).await.expect("a connection"));
    let in_use = pool.get(&1).await.expect("a connection");
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get(&1).await.map(drop) }
    });
    until("a caller of key 1 waits", || status(&pool, 1).waiting == 1).await;
    pool.close().await;
    assert!(pool.is_closed());
    let waited = waiter.await.expect("no panic");
    assert!(matches!(waited, Err(PoolError::Closed)), "{waited:?}");
    assert_eq!(mocks.mock(0).closes(), 1, "the idle one closed");
    assert!(matches!(pool.get(&0).await, Err(PoolError::Closed)));
    assert!(matches!(pool.get(&2).await, Err(PoolError::Closed)));
    assert!(pool.status(&0).is_none() && pool.status(&2).is_none());
    assert_eq!(pool.keys_held(), 0);
    drop(in_use);
    mocks.mock(1).until_closes(1).await;
    assert_eq!(mocks.total.open(), 0);
}

/// A `make` that panics panics the caller that needed it, and leaves nothing behind: no key
/// is held for it, the map is not poisoned, and the next call for it calls `make` again.
#[tokio::test(start_paused = true)]
async fn a_make_that_panics_reaches_its_caller_and_leaves_nothing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let pool = KeyedPool::builder({
        let calls = Arc::clone(&calls);
        move |key: &Key| {
            calls.fetch_add(1, SeqCst);
            assert_ne!(*key, 13, "no manager for key 13");
            Mock::new()
        }
    })
    .build()
    .expect("valid");
    for attempt in 1..=2 {
        let failed = tokio::spawn({
            let pool = pool.clone();
            async move { pool.get(&13).await.map(drop) }
        });
        let panic = failed.await.expect_err("the panic reaches the caller");
        assert!(panic.is_panic());
        assert_eq!(calls.load(SeqCst), attempt);
        assert!(pool.status(&13).is_none());
        assert_eq!(pool.keys_held(), 0);
    }
    drop(pool.get(&1).await.expect("other keys work"));
    assert_eq!(pool.keys_held(), 1);
    pool.close().await;
}

/// Settings a keyed pool could not honour are refused with a typed error.
#[test]
fn the_builder_refuses_settings_it_could_not_honour() {
    let build = |max_size, max_total, max_streams| {
        KeyedPool::builder(|_: &Key| Mock::new())
            .max_size(max_size)
            .max_total(max_total)
            .max_streams(max_streams)
            .build()
            .err()
    };
    assert_eq!(build(0, 4, 1), Some(BuildError::ZeroMaxSize));
    assert_eq!(build(1, 0, 1), Some(BuildError::ZeroMaxTotal));
    assert_eq!(build(1, 4, 0), Some(BuildError::ZeroMaxStreams));
    assert_eq!(
        build(5, 4, 1),
        Some(BuildError::MaxSizeAboveTotal {
            max_size: 5,
            max_total: 4
        })
    );
    assert_eq!(build(4, 4, 1), None, "one key may take the whole total");
}

/// With `fail_fast`, a key whose connect fails answers its caller with that error at once,
/// after one connect, where by default it retries until `wait_timeout`; the other keys are
/// served as before.
#[tokio::test(start_paused = true)]
async fn fail_fast_returns_a_keys_failed_connect_at_once() {
    const FAIL: Key = 0;
    let mocks = Mocks::new(2, |key, mock| {
        if key == FAIL {
            mock.set_connect(Plan::fail("refused"));
        }
    });
    let pool = mocks
        .builder()
        .fail_fast(true)
        .wait_timeout(Duration::from_secs(30))
        .build()
        .expect("valid");
    let start = Instant::now();
    let failed = pool.lease(&FAIL).await.map(drop);
    assert!(
        matches!(&failed, Err(PoolError::Connect(e)) if e.0 == "refused"),
        "{failed:?}"
    );
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no retry until wait_timeout"
    );
    assert_eq!(mocks.mock(FAIL).connects(), 1);
    drop(pool.lease(&1).await.expect("the other key is served"));
    pool.close().await;
}

/// A key's connect that hangs ends at the keyed pool's `connect_timeout` (2 s here), not the
/// default 10 s; with `fail_fast` its caller gets that timeout then.
#[tokio::test(start_paused = true)]
async fn a_keys_hanging_connect_ends_at_connect_timeout() {
    let mocks = Mocks::new(1, |_, mock| mock.set_connect(Plan::hang()));
    let pool = mocks
        .builder()
        .connect_timeout(Duration::from_secs(2))
        .fail_fast(true)
        .build()
        .expect("valid");
    let start = Instant::now();
    let outcome = pool.get(&0).await.map(drop);
    assert!(
        matches!(outcome, Err(PoolError::Timeout(TimeoutKind::Connect))),
        "{outcome:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(status(&pool, 0).connecting, 0, "the connect was dropped");
    pool.close().await;
}

/// A check of a key's idle connection that hangs ends at the keyed pool's `check_timeout`
/// (1 s here, not the default 5 s) with that timeout, and the connection is discarded.
#[tokio::test(start_paused = true)]
async fn a_keys_hanging_check_ends_at_check_timeout() {
    let mocks = Mocks::new(1, |_, mock| mock.set_check(Plan::hang()));
    let pool = mocks
        .builder()
        .check_timeout(Duration::from_secs(1))
        .build()
        .expect("valid");
    let first = pool.get(&0).await.expect("a connection");
    let first_id = first.id;
    drop(first);
    // Past the check interval: the next checkout checks the idle connection.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let outcome = pool.get(&0).await.map(drop);
    assert!(
        matches!(outcome, Err(PoolError::Timeout(TimeoutKind::Check))),
        "{outcome:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let mock = mocks.mock(0);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(first_id), 1, "discarded");
    assert_eq!(status(&pool, 0).size, 0);
    pool.close().await;
}

/// `name_keys` names each key's pool: what a key's pool reports with the `metrics` feature
/// carries its key's name as its `pool` label.
#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn name_keys_labels_each_keys_metrics_with_its_name() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The test runs on one thread (a current-thread runtime): every pool reports here.
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let pool = KeyedPool::builder(|_: &Key| Mock::new())
        .name_keys(|key: &Key| format!("node-{key}"))
        .build()
        .expect("valid");
    let held = [
        pool.get(&1).await.expect("a"),
        pool.get(&1).await.expect("b"),
    ];
    drop(pool.get(&2).await.expect("a connection"));
    let mut created = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != "pool.connections.created" {
            continue;
        }
        let label = key.key().labels().find(|label| label.key() == "pool");
        if let (Some(label), DebugValue::Counter(n)) = (label, value) {
            created.insert(label.value().to_owned(), n);
        }
    }
    let expected = HashMap::from([("node-1".to_owned(), 2), ("node-2".to_owned(), 1)]);
    assert_eq!(created, expected);
    drop(held);
    pool.close().await;
}

/// `get` and `lease` are `#[track_caller]`: a leak report names the line that called them.
#[tokio::test(start_paused = true)]
async fn a_leak_report_names_the_line_that_called_get_or_lease() {
    let (logs, _guard) = Logs::capture();
    let pool = KeyedPool::builder(|_: &Key| Mock::new())
        .max_streams(2)
        .leak_threshold(Duration::from_secs(5))
        .build()
        .expect("valid");
    let conn = pool.get(&0).await.expect("a connection");
    let get_site = format!("pool/tests/keyed.rs:{}", line!() - 1);
    let lease = pool.lease(&1).await.expect("a lease");
    let lease_site = format!("pool/tests/keyed.rs:{}", line!() - 1);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let warned = logs.lines("WARN", "leak_threshold");
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(
        warned.iter().any(|line| line.contains(&get_site)),
        "{warned:?}"
    );
    assert!(
        warned.iter().any(|line| line.contains(&lease_site)),
        "{warned:?}"
    );
    drop((conn, lease));
    pool.close().await;
}

/// Everything at once on two threads, over 10 keys under a cap of 12: connects that fail,
/// gets and leases given up at random points, connections marked broken, a caller of one
/// key starved while others hold the cap; then `close()`. Every connection made is closed
/// exactly once, and the budget is back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_over_keys_then_close_closes_every_connection_and_frees_the_budget() {
    const KEYS: usize = 10;
    let mocks = Mocks::new(KEYS, |key, mock| {
        let mut rng = Lcg(key as u64 + 11);
        for _ in 0..1000 {
            mock.push_connect(match rng.below(7) {
                0 => Plan::fail("refused").yielding(2),
                _ => Plan::ok().yielding(3),
            });
        }
    });
    let pool = mocks
        .builder()
        .max_size(3)
        .max_total(12)
        .max_streams(2)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid");
    let mut rng = Lcg(9);
    let mut tasks = Vec::new();
    for _ in 0..2000 {
        let key = rng.below(KEYS as u64).min(rng.below(KEYS as u64)) as Key;
        let (polls, action, lease) = (rng.below(40), rng.below(5), rng.below(2) == 0);
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            if lease {
                lease_or_give_up(&pool, key, polls, action).await;
            } else {
                get_or_give_up(&pool, key, polls, action).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("every task ends without a panic");
    }
    pool.close().await;
    // Connects still running after `close` end in a closed pool, and their connections close.
    mocks.all(0)[0]
        .until("every slot is given back", || {
            pool.slots_held() == 0 && mocks.total.open() == 0
        })
        .await;
    for mock in (0..KEYS).flat_map(|key| mocks.all(key)) {
        mock.until("every connection made is closed", || {
            mock.in_flight() == 0 && mock.live() == 0
        })
        .await;
        mock.assert_each_closed_once();
    }
    assert!(mocks.total.peak() > 0);
}

/// A get of `key` polled `polls` times at most, then dropped: served, its connection is
/// marked broken (`action` 0) or held across `action` yields.
async fn get_or_give_up(pool: &KeyedPool<Key, Mock>, key: Key, polls: u64, action: u64) {
    let mut get = Box::pin(pool.get(&key));
    for _ in 0..polls {
        if let std::task::Poll::Ready(got) = poll!(get.as_mut()) {
            let mut conn = got.expect("a connection within the wait");
            if action == 0 {
                Pooled::mark_broken(&mut conn);
            }
            for _ in 0..action {
                tokio::task::yield_now().await;
            }
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// A lease of `key` polled `polls` times at most, then dropped: served, it marks its
/// connection broken (`action` 0) or is held across `action` yields.
async fn lease_or_give_up(pool: &KeyedPool<Key, Mock>, key: Key, polls: u64, action: u64) {
    let mut lease = Box::pin(pool.lease(&key));
    for _ in 0..polls {
        if let std::task::Poll::Ready(got) = poll!(lease.as_mut()) {
            let mut lease = got.expect("a lease within the wait");
            if action == 0 {
                Lease::mark_broken(&mut lease);
            }
            for _ in 0..action {
                tokio::task::yield_now().await;
            }
            return;
        }
        tokio::task::yield_now().await;
    }
}
