//! The run against a Redis Cluster (`--cluster`): the same SET-then-GET pairs, each key in
//! the slot its name hashes to, through a [`ClusterClient`]; the summary ends with the
//! errors and mismatches, then the requests each node served.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Instant;

use redis_example::cluster::slots::ranges_text;
use redis_example::cluster::{ClusterClient, ClusterError, Node};

use crate::Args;
use crate::load::{Tally, chain, percentile, run_id};

/// Runs the load and prints its summary; exits with status 1 when the cluster cannot be
/// reached, leaves slots uncovered, or a pair failed.
///
/// # Errors
/// A task that panicked.
pub async fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let connected = ClusterClient::builder(&args.cluster)
        .max_size(args.pool)
        .deadline(args.deadline)
        .read_from_replicas(args.read_from_replicas)
        .connect()
        .await;
    let client = match connected {
        Ok(client) => client,
        Err(error) => {
            eprintln!(
                "could not reach a Redis Cluster at {}: {}\nstart one with \
                 `scripts/redis-cluster start DIR` and pass the URLs it prints with --cluster",
                args.cluster.join(", "),
                chain(&error)
            );
            std::process::exit(1);
        }
    };
    let uncovered = client.uncovered();
    if !uncovered.is_empty() {
        eprintln!(
            "no node of the cluster serves slots {}: the run writes keys in every slot",
            ranges_text(&uncovered)
        );
        std::process::exit(1);
    }

    let run = run_id();
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.tasks)
        .map(|task| {
            let client = client.clone();
            let (requests, replicas) = (args.requests, args.wait_replicas);
            tokio::spawn(run_task(client, task, requests, replicas, run))
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.add(task.await?);
    }
    let elapsed = started.elapsed();
    total.latencies.sort_unstable();

    let map = client.slot_map();
    let status = client.status();
    let replicas: usize = map.shards().iter().map(|s| s.replicas.len()).sum();
    println!(
        "redis cluster via {}: {} shards, {replicas} replicas",
        args.cluster.join(", "),
        map.shards().len()
    );
    let mut what = "SET+GET pairs".to_owned();
    if args.wait_replicas > 0 {
        what = format!("SET+WAIT {} then GET", args.wait_replicas);
    }
    if args.read_from_replicas {
        what.push_str(" on a replica");
    }
    println!(
        "{} tasks x {} {what} through pools of {} per node, each request within {:?}, in {:.2?}",
        args.tasks, args.requests, args.pool, args.deadline, elapsed
    );
    let commands = if args.wait_replicas > 0 { 3 } else { 2 };
    println!(
        "throughput: {:.0} commands/s  latency per pair (retries included) p50 {:.2?} p99 {:.2?} max {:.2?}",
        (total.pairs * commands) as f64 / elapsed.as_secs_f64(),
        percentile(&total.latencies, 0.50),
        percentile(&total.latencies, 0.99),
        percentile(&total.latencies, 1.0),
    );
    println!(
        "client: {} requests, {} retries, {} MOVED, {} ASK, {} timeouts, {} connections failed, \
         {} slot map refreshes ({} failed)",
        status.requests,
        status.retries,
        status.moved,
        status.asked,
        status.timeouts,
        status.connection_failures,
        status.refreshes,
        status.refresh_failures,
    );
    println!("pairs read back: {}", total.pairs);
    println!("errors: {}  mismatches: {}", total.errors, total.mismatches);

    // The requests each node served, every node of the map listed.
    let mut roles: BTreeMap<Node, &str> = BTreeMap::new();
    for shard in map.shards() {
        roles.insert(shard.primary.clone(), "primary");
        for replica in &shard.replicas {
            roles.insert(replica.clone(), "replica");
        }
    }
    let mut served: BTreeMap<Node, String> = roles
        .keys()
        .map(|node| (node.clone(), "0 requests".to_owned()))
        .collect();
    for (health, pool) in status.nodes.iter().zip(&status.pools) {
        let connections = pool.as_ref().map_or(0, |p| p.size);
        let state = match health.ejected_until {
            Some(until) => format!(
                "ejected for {:?}",
                until.saturating_duration_since(tokio::time::Instant::now())
            ),
            None if health.failures > 0 => format!("{} connect failures", health.failures),
            None => "healthy".to_owned(),
        };
        served.insert(
            health.node.clone(),
            format!(
                "{} requests ({connections} connections, {state})",
                health.served
            ),
        );
    }
    for (node, line) in served {
        let role = roles.get(&node).copied().unwrap_or("not in the map");
        println!("{node} ({role}): {line}");
    }
    client.close().await;
    if total.errors > 0 || total.mismatches > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// SET (with its WAIT) then GET of distinct keys, `requests` times.
async fn run_task(
    client: ClusterClient,
    task: usize,
    requests: usize,
    replicas: usize,
    run: u128,
) -> Tally {
    let mut tally = Tally::default();
    for i in 0..requests {
        let key = format!("mux-pool:example:{run}:{task}:{i}");
        let value = format!("value-{task}-{i}");
        let started = Instant::now();
        let outcome: Result<Option<String>, ClusterError> = async {
            client.set(&key, &value, 60, replicas).await?;
            client.get(&key).await
        }
        .await;
        tally.latencies.push(started.elapsed());
        match outcome {
            Ok(Some(read)) if read == value => tally.pairs += 1,
            Ok(_) => tally.mismatches += 1,
            Err(error) => {
                if tally.errors == 0 {
                    eprintln!("task {task}: {}", chain(&error));
                }
                tally.errors += 1;
            }
        }
    }
    tally
}
