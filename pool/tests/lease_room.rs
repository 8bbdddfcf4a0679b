//! Leases beside others, from two threads with fewer callers than room, so nearly every lease
//! lands on a connection that carries leases and nearly every end leaves others behind: at
//! most `max_streams` per connection, a new connection only when every one is full, no lease
//! on a connection held by `get`, and every count back at zero.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool::{Lease, Pool};
use support::{Lcg, Mock, all_ended};

const MAX_SIZE: usize = 4;
const MAX_STREAMS: usize = 8;

/// What holds each connection id now, as the callers see it: counted after a handout and
/// uncounted before the end, so never above what the pool counts.
#[derive(Default)]
struct Holders(Mutex<HashMap<u64, (usize, bool)>>);

impl Holders {
    /// A lease on `id`: the leases on it now. Panics if `get` holds it.
    fn lease(&self, id: u64) -> usize {
        let mut held = self.0.lock().expect("not poisoned");
        let (leases, alone) = held.entry(id).or_default();
        assert!(!*alone, "a lease on connection {id}, which get holds");
        *leases += 1;
        *leases
    }

    fn unlease(&self, id: u64) {
        let mut held = self.0.lock().expect("not poisoned");
        held.get_mut(&id).expect("counted").0 -= 1;
    }

    /// `get` holds `id`. Panics if a lease holds it.
    fn get(&self, id: u64) {
        let mut held = self.0.lock().expect("not poisoned");
        let (leases, alone) = held.entry(id).or_default();
        assert_eq!(
            *leases, 0,
            "get holds connection {id}, which carries leases"
        );
        assert!(!*alone, "get holds connection {id} twice");
        *alone = true;
    }

    fn unget(&self, id: u64) {
        let mut held = self.0.lock().expect("not poisoned");
        held.get_mut(&id).expect("counted").1 = false;
    }
}

fn pool(mock: &Mock) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(MAX_SIZE)
        .max_streams(MAX_STREAMS)
        .wait_timeout(Duration::from_secs(60))
        .build()
        .expect("valid settings")
}

/// 20 tasks on two threads, each taking and ending 1000 leases, holding each for a few
/// scheduler turns: never more than `max_streams` on a connection, never a connection opened
/// while another had room (20 callers fit in 3 connections of 8), and every count at zero at
/// the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_free_leases_keep_max_streams_placement_and_every_count() {
    let mock = Mock::with_limit(MAX_SIZE);
    let pool = pool(&mock);
    let holders = Arc::new(Holders::default());
    let mut tasks = Vec::new();
    for task in 0..20_u64 {
        let pool = pool.clone();
        let holders = Arc::clone(&holders);
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(task);
            for _ in 0..1000 {
                let lease = pool.lease().await.expect("a lease");
                let on_conn = holders.lease(lease.id);
                assert!(on_conn <= MAX_STREAMS, "{on_conn} leases on one connection");
                for _ in 0..rng.below(3) {
                    tokio::task::yield_now().await;
                }
                holders.unlease(lease.id);
                drop(lease);
            }
        }));
    }
    all_ended(&pool, tasks).await;
    assert_eq!(
        mock.connects(),
        3,
        "20 callers need 3 connections of {MAX_STREAMS}"
    );
    pool.close().await;
    mock.until_closes(mock.connected()).await;
    mock.assert_each_closed_once();
}

/// Lock-free leases beside `get` callers and leases that mark their connection broken, on two
/// threads: `get` only ever holds a connection with no lease, no lease goes to a connection
/// `get` holds, the pool's connections stay within `max_size` (broken ones still draining
/// their leases gave their slot up, so they may be alive beside them), and every connection
/// closes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_free_leases_beside_get_and_broken_connections_keep_every_rule() {
    let mock = Mock::new();
    let pool = pool(&mock);
    let holders = Arc::new(Holders::default());
    let mut tasks = Vec::new();
    for task in 0..36_u64 {
        let pool = pool.clone();
        let holders = Arc::clone(&holders);
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(task + 100);
            for _ in 0..500 {
                let mut lease = pool.lease().await.expect("a lease");
                let on_conn = holders.lease(lease.id);
                assert!(on_conn <= MAX_STREAMS, "{on_conn} leases on one connection");
                for _ in 0..rng.below(3) {
                    tokio::task::yield_now().await;
                }
                if rng.below(10) == 0 {
                    let size = pool.status().size;
                    assert!(size <= MAX_SIZE, "{size} connections");
                }
                holders.unlease(lease.id);
                if rng.below(50) == 0 {
                    Lease::mark_broken(&mut lease);
                }
                drop(lease);
            }
        }));
    }
    for task in 0..2_u64 {
        let pool = pool.clone();
        let holders = Arc::clone(&holders);
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(task + 200);
            for _ in 0..200 {
                let conn = pool.get().await.expect("a connection");
                holders.get(conn.id);
                for _ in 0..rng.below(3) {
                    tokio::task::yield_now().await;
                }
                holders.unget(conn.id);
                drop(conn);
            }
        }));
    }
    let status = all_ended(&pool, tasks).await;
    assert!(
        status.counters.broken > 0,
        "no lease marked a connection broken"
    );
    pool.close().await;
    mock.until_closes(mock.connected()).await;
    mock.assert_each_closed_once();
}
