//! The cluster client (`redis_example::cluster`) against a real 6-node Redis Cluster on
//! loopback (3 primaries, 3 replicas), started by `scripts/redis-cluster` and killed when
//! each test ends; bad seeds and broken clusters made of single servers.
//!
//! A missing `redis-server` is a failure, never a skip. Run with `-- --nocapture` to see
//! the numbers.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis_example::cluster::{ClusterClient, ClusterError, ConnectError, TopologyError};
use support::cluster::{
    LocalCluster, admin, client_connections, command, connections_of_every_node, key_per_slot, url,
};
use support::{RedisServer, free_port, join_tasks};
use tokio::time::{Instant, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_over_every_slot_read_back_every_value_within_max_size_per_node() {
    const TASKS: usize = 64;
    const MAX_SIZE: usize = 2;
    let cluster = LocalCluster::start().await;
    let client = ClusterClient::builder(cluster.seeds())
        .max_size(MAX_SIZE)
        .max_streams(8)
        .refresh_interval(Duration::from_millis(500))
        .connect()
        .await
        .expect("a client");
    assert!(client.uncovered().is_empty());
    assert_eq!(client.slot_map().shards().len(), 3);

    // Watch every node's client connections while the load runs.
    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (running, ports) = (Arc::clone(&running), cluster.ports().to_vec());
        tokio::spawn(async move {
            let mut most: HashMap<u16, usize> = HashMap::new();
            let mut admins = Vec::new();
            for &port in &ports {
                admins.push((port, admin(port).await));
            }
            while running.load(Ordering::Relaxed) {
                for (port, conn) in &mut admins {
                    let seen = client_connections(conn).await;
                    let top = most.entry(*port).or_default();
                    *top = (*top).max(seen);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };

    // Each task takes every 64th slot: the 64 tasks write and read one key in each of the
    // 16 384 slots.
    let keys = Arc::new(key_per_slot("fill"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (client, keys) = (client.clone(), Arc::clone(&keys));
            tokio::spawn(async move {
                for slot in (task..keys.len()).step_by(TASKS) {
                    set_then_get(&client, &keys[slot], slot).await;
                }
            })
        })
        .collect();
    join_tasks(tasks, "the 64 tasks").await;
    let elapsed = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let most = watcher.await.expect("the watcher");

    // Every key is on its shard's primary: the keys of the three primaries add up.
    let mut keys_held = 0;
    for shard in client.slot_map().shards() {
        let port: u16 = shard
            .primary
            .addr()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        keys_held += command::<usize>(port, &redis::cmd("DBSIZE"))
            .await
            .expect("DBSIZE");
    }
    assert_eq!(keys_held, 16384);

    let status = client.status();
    for (health, pool) in status.nodes.iter().zip(&status.pools) {
        let pool = pool.as_ref().expect("a pool for each node served");
        assert!(pool.size <= MAX_SIZE, "{}: {pool:?}", health.node);
        assert!(
            pool.counters.created as usize <= MAX_SIZE,
            "{}: {pool:?}",
            health.node
        );
    }
    for (port, seen) in &most {
        assert!(
            *seen <= MAX_SIZE,
            "port {port} saw {seen} client connections"
        );
    }
    assert_eq!(status.timeouts, 0, "{status:?}");
    // The periodic refresh ran (every 500 ms) and found nothing to change.
    let periodic = elapsed.as_millis() as u64 / 500;
    assert!(
        status.refreshes > periodic / 2,
        "{} refreshes in {elapsed:?}",
        status.refreshes
    );
    assert_eq!(status.refresh_failures, 0);
    assert_eq!(status.moved, 0);
    println!(
        "cluster fill: 16384 SET+GET pairs over every slot from {TASKS} tasks in {elapsed:.2?}; \
         connections per node at most {most:?}; requests served {:?}; {} refreshes, {} moved",
        status
            .nodes
            .iter()
            .map(|n| (n.node.to_string(), n.served))
            .collect::<Vec<_>>(),
        status.refreshes,
        status.moved,
    );
    client.close().await;

    // The load program on the same cluster: its summary ends with the errors and
    // mismatches, then one line per node with the requests it served.
    let mut program = tokio::process::Command::new(env!("CARGO_BIN_EXE_redis-example"));
    for seed in cluster.seeds() {
        program.arg("--cluster").arg(seed);
    }
    program.args(["--tasks", "8", "--requests", "25", "--deadline", "5"]);
    program.args(["--wait-replicas", "1", "--read-from-replicas"]);
    let output = timeout(Duration::from_secs(60), program.kill_on_drop(true).output())
        .await
        .expect("the load program ends within 60 s")
        .expect("the load program runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let tail = &lines[lines.len() - 7..];
    assert_eq!(tail[0], "errors: 0  mismatches: 0", "{stdout}");
    let served: u64 = tail[1..]
        .iter()
        .map(|line| {
            let count = line.split(": ").nth(1).and_then(|r| r.split(' ').next());
            count
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{line}"))
        })
        .sum();
    // 200 pairs: a SET+WAIT on a primary and a GET on a replica each.
    assert_eq!(served, 400, "{stdout}");
    assert_eq!(
        tail.iter().filter(|l| l.contains("(replica)")).count(),
        3,
        "{stdout}"
    );
    println!("load program on the cluster:\n{stdout}");
}

/// 24 tasks of SET+GET pairs spread over every slot, with `max_size` 4 per node and
/// `max_total` 6 across nodes, so that the 3 primaries alone could take 12: the client's
/// connections, counted by the six servers, never exceed 6, no node's exceed 4, and every
/// request is served. The first refresh leaves a connection on each of the 6 nodes, so the
/// load is served by closing idle ones (the replicas') for the primaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_across_nodes_never_exceed_max_total_under_load() {
    const TASKS: usize = 24;
    const PAIRS: usize = 200;
    const MAX_SIZE: usize = 4;
    const MAX_TOTAL: usize = 6;
    let cluster = LocalCluster::start().await;
    let client = ClusterClient::builder(cluster.seeds())
        .max_size(MAX_SIZE)
        .max_total(MAX_TOTAL)
        .max_streams(2)
        .connect()
        .await
        .expect("a client");
    assert_eq!(client.slot_map().shards().len(), 3);

    // Watch the client connections of all the nodes while the load runs.
    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (running, ports) = (Arc::clone(&running), cluster.ports().to_vec());
        tokio::spawn(async move {
            let mut admins = Vec::new();
            for &port in &ports {
                admins.push(admin(port).await);
            }
            let (mut most, mut most_one_pass, mut per_node) = (0, 0, 0);
            while running.load(Ordering::Relaxed) {
                let (counts, one_pass) = connections_of_every_node(&mut admins).await;
                most = most.max(counts.iter().sum());
                most_one_pass = most_one_pass.max(one_pass.iter().sum());
                per_node = per_node.max(counts.iter().copied().max().unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (most, most_one_pass, per_node)
        })
    };

    // The TASKS x PAIRS pairs spread evenly over the 16 384 slots; each task's next pair is
    // 16 384 / PAIRS slots on, so every task goes through every shard in turn.
    let keys = Arc::new(key_per_slot("cap"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (client, keys) = (client.clone(), Arc::clone(&keys));
            tokio::spawn(async move {
                for pair in 0..PAIRS {
                    let slot = (task + pair * TASKS) * keys.len() / (TASKS * PAIRS);
                    set_then_get(&client, &keys[slot], slot).await;
                }
            })
        })
        .collect();
    join_tasks(tasks, "the 24 tasks").await;
    let elapsed = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let (most, most_one_pass, per_node) = watcher.await.expect("the watcher");

    assert!(
        most <= MAX_TOTAL,
        "the servers saw {most} client connections"
    );
    assert!(per_node <= MAX_SIZE, "a server saw {per_node}");
    let status = client.status();
    let pools: Vec<&pool::Status> = status.pools.iter().flatten().collect();
    assert!(pools.iter().all(|pool| pool.size <= MAX_SIZE), "{pools:?}");
    assert!(
        pools.iter().map(|pool| pool.size).sum::<usize>() <= MAX_TOTAL,
        "{pools:?}"
    );
    let created: u64 = pools.iter().map(|pool| pool.counters.created).sum();
    assert!(
        created > MAX_TOTAL as u64,
        "connections were closed for other nodes and made again: {created} made"
    );
    assert_eq!(status.timeouts, 0, "{status:?}");
    println!(
        "max_total {MAX_TOTAL}: {} SET+GET pairs from {TASKS} tasks in {elapsed:.2?}; client \
         connections across the 6 nodes at most {most} ({most_one_pass} in a single pass), \
         on one node at most {per_node}; {created} connections made",
        TASKS * PAIRS
    );
    client.close().await;
}

/// Settings the pools could not honour are refused before any seed is asked.
#[tokio::test]
async fn a_max_total_below_max_size_or_a_zero_idle_timeout_is_refused() {
    let builder = || ClusterClient::builder([url(free_port())]);
    let refused = [
        builder().max_size(4).max_total(2).connect().await.err(),
        builder().max_total(0).connect().await.err(),
        builder().idle_timeout(Duration::ZERO).connect().await.err(),
    ];
    for (error, names) in refused
        .iter()
        .zip(["max_total (2)", "max_total", "above 0"])
    {
        assert!(
            matches!(error, Some(ConnectError::Settings(text)) if text.contains(names)),
            "{error:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_that_are_not_cluster_nodes_are_named_in_the_error() {
    let plain = RedisServer::start(free_port()).await;
    let nobody = free_port();
    let started = Instant::now();
    let result = ClusterClient::builder([plain.url(), url(nobody)])
        .refresh_timeout(Duration::from_secs(1))
        .connect()
        .await;
    let Err(ConnectError::Seeds(failures)) = result else {
        panic!("connected to a cluster of no cluster nodes")
    };
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(failures.len(), 2, "{failures:?}");
    let plain_port = plain.port().to_string();
    let not_cluster = failures
        .iter()
        .find(|f| f.to_string().contains(&plain_port));
    assert!(
        matches!(not_cluster, Some(TopologyError::NotCluster { .. })),
        "{failures:?}"
    );
    let refused = failures
        .iter()
        .find(|f| f.to_string().contains(&nobody.to_string()));
    assert!(
        matches!(refused, Some(TopologyError::Connect { .. })),
        "{failures:?}"
    );
    let text = ConnectError::Seeds(failures).to_string();
    assert!(text.contains("is not a cluster node"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_answers_garbage_or_nothing_fails_within_the_timeout() {
    // One listener answers every connection with bytes that are not Redis; the other
    // accepts and says nothing.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (garbage_port, silent_port) = (
        garbage.local_addr().expect("addr").port(),
        silent.local_addr().expect("addr").port(),
    );
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                Ok((mut socket, _)) = garbage.accept() => {
                    use tokio::io::AsyncWriteExt;
                    let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                    held.push(socket);
                }
                Ok((socket, _)) = silent.accept() => held.push(socket),
            }
        }
    });
    let started = Instant::now();
    let result = ClusterClient::builder([url(garbage_port), url(silent_port)])
        .connect_timeout(Duration::from_millis(500))
        .refresh_timeout(Duration::from_secs(1))
        .connect()
        .await;
    let elapsed = started.elapsed();
    server.abort();
    let Err(ConnectError::Seeds(failures)) = result else {
        panic!("connected to a cluster of garbage")
    };
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let garbage_node = format!("127.0.0.1:{garbage_port}");
    assert!(
        failures.iter().any(|f| matches!(f,
            TopologyError::NotRedis { node, .. } if node.addr() == garbage_node)),
        "{failures:?}"
    );
    let text = ConnectError::Seeds(failures).to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{garbage_port}")),
        "{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{silent_port}")), "{text}");
    println!("garbage and silent seeds: {text} (after {elapsed:.2?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_no_node_serves_fails_at_once_naming_the_uncovered_slots() {
    // A one-node cluster that serves half of the slots.
    let mut node = RedisServer::spawn_with(
        free_port(),
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ],
    );
    node.wait_ready().await;
    let _: () = command(
        node.port(),
        redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(0).arg(8191),
    )
    .await
    .expect("ADDSLOTSRANGE");
    let client = ClusterClient::builder([node.url()])
        .deadline(Duration::from_secs(2))
        .connect()
        .await
        .expect("a client of a half-covered cluster");
    assert_eq!(client.uncovered(), vec![8192..=16383]);

    let keys = key_per_slot("half");
    let started = Instant::now();
    let error = client
        .get(&keys[10000])
        .await
        .expect_err("slot 10000 is uncovered");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match &error {
        ClusterError::Uncovered { slot, uncovered } => {
            assert_eq!(*slot, 10000);
            assert_eq!(uncovered, "8192-16383");
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("8192-16383"), "{error}");
    // The covered half is served, though the node says the cluster is down (slots
    // missing): CLUSTERDOWN is retried until the deadline, then reported with its cause.
    let error = timeout(Duration::from_secs(4), client.get(&keys[5]))
        .await
        .expect("within the deadline")
        .expect_err("the cluster is down");
    assert!(error.is_timeout(), "{error:?}");
    let cause = std::error::Error::source(&error).map(|c| c.to_string());
    assert!(
        cause.is_some_and(|c| c.contains("asked to try again")),
        "{error:?}"
    );
    client.close().await;
}

/// SETs `key` (of `slot`) to `v{slot}` and reads it back; panics on an error or another value.
async fn set_then_get(client: &ClusterClient, key: &str, slot: usize) {
    let value = format!("v{slot}");
    if let Err(e) = client.set(key, &value, 600, 0).await {
        panic!("SET of slot {slot}: {e:?}");
    }
    match client.get(key).await {
        Ok(Some(read)) if read == value => {}
        other => panic!("GET of slot {slot} read {other:?}, not {value:?}"),
    }
}
