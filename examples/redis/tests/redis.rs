//! The pool in front of a real `redis-server`, through the manager of the example program
//! (`examples/redis/src/manager.rs`).
//!
//! Each test starts a `redis-server` of its own on a free loopback port and stops it at its
//! end. A missing `redis-server` is a failure, never a skip: install it with
//! `apt-get install redis-server` (`scripts/test` does).
//!
//! Run with `-- --nocapture` to see the numbers of the kill-and-restart test.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pool::{Pool, PoolError};
use redis::RedisError;
use redis_example::RedisManager;
use redis_example::report::chain;
use support::{RedisServer, free_port, join_tasks};
use tokio::sync::mpsc;
use tokio::time::timeout;

fn pool_for(server: &RedisServer) -> Pool<RedisManager> {
    let manager = RedisManager::new(&server.url())
        .expect("a valid URL")
        .response_timeout(Duration::from_secs(2))
        .ping_after(Duration::from_secs(1));
    Pool::builder(manager)
        .max_size(8)
        .connect_timeout(Duration::from_secs(1))
        .check_timeout(Duration::from_secs(1))
        .wait_timeout(Duration::from_secs(3))
        .build()
        .expect("valid settings")
}

/// Why one SET+GET pair failed.
#[derive(Debug)]
enum PairError {
    /// The pool gave no connection.
    Checkout(PoolError<RedisError>),
    /// A command failed on a pooled connection.
    Request(RedisError),
    /// GET read back something else.
    Mismatch(Option<String>),
}

/// One checkout, `SET key value`, `GET key`, the value compared.
async fn set_get(pool: &Pool<RedisManager>, key: &str, value: &str) -> Result<(), PairError> {
    let conn = pool.get().await.map_err(PairError::Checkout)?;
    conn.set(key, value, 600)
        .await
        .map_err(PairError::Request)?;
    let read = conn.get(key).await.map_err(PairError::Request)?;
    if read.as_deref() == Some(value) {
        Ok(())
    } else {
        Err(PairError::Mismatch(read))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_through_a_pool_of_eight_read_back_every_value() {
    const TASKS: usize = 64;
    const PAIRS: usize = 25;
    let server = RedisServer::start(free_port()).await;
    let pool = pool_for(&server);

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..PAIRS {
                    let key = format!("k:{task}:{i}");
                    let value = format!("v:{task}:{i}");
                    if let Err(error) = set_get(&pool, &key, &value).await {
                        panic!("task {task} pair {i}: {error:?}");
                    }
                }
            })
        })
        .collect();
    join_tasks(tasks, "the 64 tasks").await;

    // Every key is there, seen through a connection of its own.
    let client = redis::Client::open(server.url()).expect("a valid URL");
    let mut direct = client
        .get_multiplexed_async_connection()
        .await
        .expect("a direct connection");
    let keys: usize = redis::cmd("DBSIZE")
        .query_async(&mut direct)
        .await
        .expect("DBSIZE");
    assert_eq!(keys, TASKS * PAIRS);

    let status = pool.status();
    assert!(status.size <= 8, "{status:?}");
    assert!(
        (1..=8).contains(&status.counters.created),
        "64 tasks shared at most 8 connections: {status:?}"
    );
    assert_eq!(status.counters.broken, 0, "{status:?}");
    assert_eq!(status.in_use, 0, "{status:?}");
    pool.close().await;
}

/// How a worker of the kill test ended.
enum Ended {
    /// A command failed on a pooled connection (the server went away under it).
    Request(Instant, RedisError),
    /// The pool gave no connection (connect refused, or a wait timed out).
    Checkout(Instant, PoolError<RedisError>),
    /// A SET+GET pair did not end within the outer bound: a hang.
    Hung,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_in_flight_requests_and_the_same_pool_recovers_after_restart() {
    const WORKERS: usize = 64;
    let port = free_port();
    let mut server = RedisServer::start(port).await;
    let pool = pool_for(&server);
    let done = std::sync::Arc::new(AtomicUsize::new(0));

    // Workers run SET+GET pairs until their first error; each says once when it is warm.
    let (warm_tx, mut warm_rx) = mpsc::channel::<()>(WORKERS);
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let pool = pool.clone();
            let warm = warm_tx.clone();
            let done = std::sync::Arc::clone(&done);
            tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("kill:{worker}:{i}");
                    let pair = timeout(Duration::from_secs(10), set_get(&pool, &key, "x")).await;
                    match pair {
                        Ok(Ok(())) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            if i == 2 {
                                let _ = warm.send(()).await;
                            }
                        }
                        Ok(Err(PairError::Request(error))) => {
                            return Ended::Request(Instant::now(), error);
                        }
                        Ok(Err(PairError::Checkout(error))) => {
                            return Ended::Checkout(Instant::now(), error);
                        }
                        Ok(Err(PairError::Mismatch(read))) => {
                            panic!("worker {worker} read back {read:?}")
                        }
                        Err(_elapsed) => return Ended::Hung,
                    }
                }
                Ended::Hung
            })
        })
        .collect();
    drop(warm_tx);
    for _ in 0..WORKERS {
        timeout(Duration::from_secs(30), warm_rx.recv())
            .await
            .expect("every worker completes 3 pairs within 30 s")
            .expect("a worker stopped before it was warm");
    }

    // Kill the server with work in flight.
    let before = pool.status();
    let pairs_before_kill = done.load(Ordering::Relaxed);
    let killed_at = Instant::now();
    server.kill();

    let mut request_errors = 0;
    let mut checkout_errors = 0;
    let mut hung = 0;
    let mut last_failure = Duration::ZERO;
    let mut request_error = String::new();
    let mut checkout_error = String::new();
    let ended = timeout(Duration::from_secs(30), futures::future::join_all(workers))
        .await
        .expect("every worker ends within 30 s of the kill");
    for end in ended {
        match end.expect("no worker panicked") {
            Ended::Request(at, error) => {
                assert!(
                    error.is_io_error() || error.is_connection_dropped(),
                    "a request cut off by the kill fails with an I/O error, not {error:?}"
                );
                request_errors += 1;
                request_error = error.to_string();
                last_failure = last_failure.max(at.saturating_duration_since(killed_at));
            }
            Ended::Checkout(at, error) => {
                checkout_errors += 1;
                checkout_error = chain(&error);
                last_failure = last_failure.max(at.saturating_duration_since(killed_at));
            }
            Ended::Hung => hung += 1,
        }
    }
    let pairs_total = done.load(Ordering::Relaxed);
    assert_eq!(hung, 0, "no request may hang when the server dies");
    assert!(
        request_errors >= 1,
        "the connections open at the kill carried requests that failed"
    );
    let after_kill = pool.status();
    assert_eq!(after_kill.in_use, 0, "{after_kill:?}");
    assert!(
        after_kill.counters.broken >= request_errors as u64,
        "every connection whose request failed was discarded as broken: {after_kill:?}"
    );

    // Any connection still idle is dead too: using it fails and discards it. Afterwards the
    // pool holds no connection to the dead server.
    for _ in 0..16 {
        if pool.status().idle == 0 {
            break;
        }
        if let Ok(Ok(conn)) = timeout(Duration::from_secs(5), pool.get()).await {
            let ping = conn.query::<String>(&redis::cmd("PING")).await;
            assert!(ping.is_err(), "PING to a killed server answered {ping:?}");
            assert!(conn.is_failed());
        }
    }
    let drained = pool.status();
    assert_eq!(
        drained.size, 0,
        "dead connections are all discarded: {drained:?}"
    );

    // Restart on the same port; the same pool must serve again, with no rebuild.
    let restarted_at = Instant::now();
    let mut server = RedisServer::spawn(port);
    let mut attempts = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        attempts += 1;
        server.assert_running();
        let pair = timeout(Duration::from_secs(5), set_get(&pool, "recovered", "yes")).await;
        if let Ok(Ok(())) = pair {
            break;
        }
        assert!(
            attempts < 1000,
            "the pool did not serve again after the restart: {pair:?}"
        );
        tick.tick().await;
    }
    let recovery = restarted_at.elapsed();

    let tasks: Vec<_> = (0..WORKERS)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    let key = format!("after:{task}:{i}");
                    if let Err(error) = set_get(&pool, &key, "y").await {
                        panic!("after the restart, task {task} pair {i}: {error:?}");
                    }
                }
            })
        })
        .collect();
    join_tasks(tasks, "the traffic after the restart").await;
    let recovered = pool.status();
    assert!(
        recovered.counters.created > before.counters.created,
        "fresh connections were made: {recovered:?}"
    );
    assert!(recovered.size <= 8, "{recovered:?}");

    println!(
        "redis kill test: {pairs_before_kill} SET+GET pairs before the kill, {pairs_total} in all \
         ({} connections open at the kill); during the kill {request_errors} requests failed on \
         their connection (\"{request_error}\") and {checkout_errors} checkouts failed \
         (\"{checkout_error}\"), {hung} hung, the last failure {last_failure:.2?} after the kill; {} connections discarded as broken, {} failed their \
         check; after the restart the same pool served again in {recovery:.2?} ({attempts} \
         attempts) and ran {} more pairs",
        before.size,
        after_kill.counters.broken,
        drained.counters.check_failures,
        WORKERS * 5,
    );
    pool.close().await;
    drop(server);
}
