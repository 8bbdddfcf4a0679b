//! A primary and a replica behind the example's pools (`examples/redis/src/`): writes
//! on the primary wait for the replica (`WAIT`), reads spread over both through one
//! `Balanced<RedisManager>` pool, and a killed replica's reads move to the primary.
//!
//! Each test starts its own `redis-server` processes on free loopback ports (the replica with
//! `--replicaof`) and kills them at its end; a missing `redis-server` is a failure, never a
//! skip. Run with `-- --nocapture` to see the numbers.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pool::Pool;
use pool::balance::{Balanced, Ejection, Routed};
use redis_example::{RedisManager, WriteError};
use support::{RedisServer, free_port, join_tasks};
use tokio::sync::{Barrier, mpsc};
use tokio::time::timeout;

/// How long a write waits for the replica; under the 2 s reply timeout.
const WAIT: Duration = Duration::from_secs(1);

fn manager(url: &str) -> RedisManager {
    RedisManager::new(url)
        .expect("a valid URL")
        .response_timeout(Duration::from_secs(2))
        .ping_after(Duration::from_secs(1))
}

/// The primary alone, for writes.
fn write_pool(primary: &RedisServer) -> Pool<RedisManager> {
    Pool::builder(manager(&primary.url()))
        .max_size(8)
        .connect_timeout(Duration::from_secs(1))
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings")
}

/// `primary` and `replica-1` behind one pool of two connections, for reads.
fn read_pool(primary: &RedisServer, replica: &RedisServer) -> Pool<Balanced<RedisManager>> {
    let balanced = manager(&primary.url())
        .with_replicas(&[replica.url()])
        .expect("valid URLs");
    Pool::builder(balanced)
        .max_size(2)
        .connect_timeout(Duration::from_secs(1))
        .wait_timeout(Duration::from_secs(10))
        .build()
        .expect("valid settings")
}

/// SET `key` on the primary and WAIT for one replica.
async fn write(pool: &Pool<RedisManager>, key: &str, value: &str) -> Result<(), WriteError> {
    let conn = pool.get().await.expect("a primary connection");
    conn.set_replicated(key, value, 600, 1, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_the_replica_and_reads_spread_over_primary_and_replica() {
    const TASKS: usize = 64;
    const PAIRS: usize = 4;
    let mut primary = RedisServer::start(free_port()).await;
    let replica = RedisServer::start_replica(free_port(), &mut primary).await;
    let writes = write_pool(&primary);
    let reads = read_pool(&primary, &replica);

    // Why both endpoints serve exactly half the reads: a task holds its read connection
    // through a barrier of two, so every read is made while two tasks hold read connections
    // at once. The pool has at most two, so those are its two connections, and they are on
    // different endpoints: the second was placed while the first was open, and placement
    // picks the endpoint with the fewest connections (0 against 1). No connection breaks
    // here, so the two stay; each barrier round is one read on each endpoint.
    let barrier = Arc::new(Barrier::new(2));
    let served = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    // Failures are recorded, not panicked on, so every task keeps meeting the barrier.
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (writes, reads) = (writes.clone(), reads.clone());
            let (barrier, served) = (Arc::clone(&barrier), Arc::clone(&served));
            let failures = Arc::clone(&failures);
            tokio::spawn(async move {
                for i in 0..PAIRS {
                    let key = format!("replicated:{task}:{i}");
                    let value = format!("v:{task}:{i}");
                    if let Err(error) = write(&writes, &key, &value).await {
                        let failure = format!("{key}: the write failed: {error:?}");
                        failures.lock().unwrap().push(failure);
                    }
                    let conn = reads.get().await.expect("a read connection");
                    let read = conn.get(&key).await;
                    let endpoint = Routed::endpoint(&conn).to_owned();
                    if !matches!(&read, Ok(Some(read)) if *read == value) {
                        let failure = format!("{key}: GET on {endpoint} after SET+WAIT: {read:?}");
                        failures.lock().unwrap().push(failure);
                    }
                    *served.lock().unwrap().entry(endpoint).or_default() += 1;
                    barrier.wait().await;
                }
            })
        })
        .collect();
    join_tasks(tasks, "the readers").await;

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} SET+WAIT then GET pairs failed, the first: {:?}",
        failures.len(),
        TASKS * PAIRS,
        failures.first()
    );
    let served = served.lock().unwrap().clone();
    let half = TASKS * PAIRS / 2;
    assert_eq!(
        served,
        BTreeMap::from([("primary".to_owned(), half), ("replica-1".to_owned(), half)]),
        "every barrier round read once on each endpoint"
    );
    let endpoints = reads.manager().endpoints();
    for endpoint in &endpoints {
        assert_eq!(
            endpoint.live, 1,
            "one connection per endpoint: {endpoints:?}"
        );
        assert_eq!(endpoint.failures, 0, "{endpoints:?}");
    }

    // Asking for more replicas than acknowledge is an error that says so, not a success.
    let conn = writes.get().await.expect("a primary connection");
    let short = conn
        .set_replicated("two-replicas", "x", 600, 2, Duration::from_millis(50))
        .await;
    assert!(
        matches!(
            short,
            Err(WriteError::NotReplicated {
                asked: 2,
                acked: 1,
                ..
            })
        ),
        "WAIT 2 with one replica: {short:?}"
    );
    assert!(
        !conn.is_failed(),
        "a short WAIT leaves the connection healthy"
    );
    drop(conn);

    println!("reads served: {served:?}; endpoints: {endpoints:?}");
    reads.close().await;
    writes.close().await;
}

/// A read of the kill test as it ends, told to the test body.
struct Ended {
    started: Instant,
    ended: Instant,
    ok: bool,
    on_replica: bool,
}

/// One read of the kill test.
struct Read {
    started: Instant,
    ended: Instant,
    endpoint: String,
    outcome: Result<(), redis::RedisError>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_fails_only_its_reads_in_flight_and_new_reads_go_to_the_primary() {
    const KEYS: usize = 64;
    const READERS: usize = 16;
    const WARM_READS: usize = 64;
    const READS_AFTER: usize = 256;
    let mut primary = RedisServer::start(free_port()).await;
    let mut replica = RedisServer::start_replica(free_port(), &mut primary).await;
    let writes = write_pool(&primary);
    let reads = read_pool(&primary, &replica);
    // Ejected at its first failure, so "after the ejection" is the moment its connection
    // broke (the default, 3 in a row, ejects it at a later failed connect, if any).
    reads
        .manager()
        .set_ejection(Ejection::new().after(1))
        .expect("a valid policy");
    for key in 0..KEYS {
        write(&writes, &format!("kill:{key}"), &format!("v{key}"))
            .await
            .expect("the write reached the replica");
    }

    // Two connections held at once: one on each endpoint (fewest connections), and each
    // serves a read, so the replica is serving reads before it dies.
    let mut one = reads.get().await.expect("a read connection");
    let mut two = reads.get().await.expect("a read connection");
    assert_ne!(Routed::endpoint(&one), Routed::endpoint(&two));
    for conn in [&mut one, &mut two] {
        let read = conn.get("kill:0").await.expect("GET answered");
        assert_eq!(read.as_deref(), Some("v0"), "on {}", Routed::endpoint(conn));
    }
    drop((one, two));

    // Readers loop (bounded) until told to stop; each read is reported as it ends.
    let stop = Arc::new(AtomicBool::new(false));
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (reads, stop, ended_tx) = (reads.clone(), Arc::clone(&stop), ended_tx.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = (reader * 7 + i) % KEYS;
                    let started = Instant::now();
                    let conn = match reads.get().await {
                        Ok(conn) => conn,
                        Err(error) => panic!("reader {reader}: no read connection: {error:?}"),
                    };
                    let endpoint = Routed::endpoint(&conn).to_owned();
                    let outcome = conn.get(&format!("kill:{key}")).await.map(|read| {
                        let want = format!("v{key}");
                        assert_eq!(read.as_deref(), Some(want.as_str()), "on {endpoint}");
                    });
                    drop(conn);
                    let ended = Instant::now();
                    let _ = ended_tx.send(Ended {
                        started,
                        ended,
                        ok: outcome.is_ok(),
                        on_replica: endpoint == "replica-1",
                    });
                    seen.push(Read {
                        started,
                        ended,
                        endpoint,
                        outcome,
                    });
                }
                seen
            })
        })
        .collect();
    drop(ended_tx);

    // Under load before the kill: WARM_READS reads, some of them on the replica. (On a busy
    // machine, the primary alone may serve the first reads while the replica's process
    // waits for a core.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut warm, mut warm_on_replica) = (0, 0);
    while warm < WARM_READS || warm_on_replica == 0 {
        let read = tokio::time::timeout_at(deadline, ended_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("within 10 s: {warm} reads, {warm_on_replica} on the replica")
            })
            .expect("a reader stopped early");
        assert!(read.ok, "a read failed before the kill");
        warm += 1;
        warm_on_replica += usize::from(read.on_replica);
    }
    let killed_at = Instant::now();
    replica.kill();
    // Wait for the read the kill cuts off: the replica's connection is in use or next in
    // line, so its read fails once the dying process's socket closes, which takes from
    // microseconds to a few hundred milliseconds after SIGKILL (seen: up to 220 ms), or at
    // the latest when the 2 s reply timeout fires. Meanwhile the primary's connection
    // serves the other readers. Then wait for READS_AFTER successful reads that started
    // after that read ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut cut_off, mut after) = (None, 0);
    while after < READS_AFTER {
        let Ended {
            started, ended, ok, ..
        } = tokio::time::timeout_at(deadline, ended_rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "within 10 s of the kill: cut off {cut_off:?}, {after} reads after it; \
                     the replica's read should fail by its 2 s reply timeout at the latest"
                )
            })
            .expect("a reader stopped early");
        match cut_off {
            None if !ok => cut_off = Some(ended),
            Some(_) if !ok => panic!("a second read failed after the kill"),
            Some(at) if started > at => after += 1,
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let all = timeout(Duration::from_secs(30), futures::future::join_all(readers))
        .await
        .expect("the readers stop");
    let seen: Vec<Read> = all
        .into_iter()
        .flat_map(|joined| joined.expect("no reader panicked"))
        .collect();

    // Exactly one read failed: the replica's, with an I/O error. The pool gives a
    // connection to one caller at a time and discards it once a read failed on it.
    let failed: Vec<&Read> = seen.iter().filter(|r| r.outcome.is_err()).collect();
    assert_eq!(failed.len(), 1, "reads failed after the kill");
    let cut_off = failed[0];
    let error = cut_off.outcome.as_ref().unwrap_err();
    assert_eq!(
        cut_off.endpoint, "replica-1",
        "only the replica's read fails"
    );
    assert!(
        error.is_io_error() || error.is_connection_dropped(),
        "a read cut off by the kill fails with an I/O error, not {error:?}"
    );
    // The read that failed returned its connection (which ejected the replica) before it
    // ended; every read started after that succeeded on the primary.
    let later: Vec<&Read> = seen.iter().filter(|r| r.started > cut_off.ended).collect();
    assert!(later.len() >= READS_AFTER, "{} later reads", later.len());
    for read in &later {
        assert!(read.outcome.is_ok(), "a read after the ejection failed");
        assert_eq!(read.endpoint, "primary", "a read after the ejection");
    }
    let endpoints = reads.manager().endpoints();
    let status = |name: &str| endpoints.iter().find(|e| e.name == name).unwrap().clone();
    let (on_primary, on_replica) = (status("primary"), status("replica-1"));
    assert_eq!(on_replica.live, 0, "{endpoints:?}");
    assert!(on_replica.failures >= 1, "{endpoints:?}");
    assert!(on_replica.ejected_until.is_some(), "{endpoints:?}");
    assert_eq!(on_primary.failures, 0, "{endpoints:?}");
    let before_kill = seen.iter().filter(|r| r.ended < killed_at);
    let replica_reads = before_kill.filter(|r| r.endpoint == "replica-1").count();
    assert!(
        replica_reads > 0,
        "the replica served reads before the kill"
    );

    // A write now cannot reach the replica: WAIT says 0 of 1, as a typed error.
    let unreplicated = write(&writes, "kill:after", "x").await;
    assert!(
        matches!(
            unreplicated,
            Err(WriteError::NotReplicated {
                asked: 1,
                acked: 0,
                ..
            })
        ),
        "{unreplicated:?}"
    );

    println!(
        "replica kill: {} reads, {replica_reads} on the replica before the kill, 1 failed \
         {:?} after the kill ({error}), {} after it all on the primary; replica status \
         {on_replica:?}",
        seen.len(),
        cut_off.ended.saturating_duration_since(killed_at),
        later.len(),
    );
    reads.close().await;
    writes.close().await;
}
