//! A primary of a real 6-node Redis Cluster stopped with SIGSTOP under load (alive, its
//! sockets open, but silent): its requests end as typed timeouts at their deadline, the
//! other shards are served throughout, and after SIGCONT it serves again.
//!
//! A test binary of its own, so that its throughput figures are not shared with another
//! cluster's load. Run with `-- --nocapture` to see them.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use redis_example::cluster::{ClusterClient, ClusterError, Node};
use support::cluster::{LocalCluster, command};
use support::load::{ShardLoad, keys_by_shard, wait_until};
use tokio::time::Instant;

/// The port of a `host:port` node.
fn port(node: &Node) -> u16 {
    node.addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primary_times_out_its_own_requests_only_and_serves_again_when_it_wakes() {
    const PER_SHARD: usize = 8;
    const DEADLINE: Duration = Duration::from_secs(1);
    const SILENCE: Duration = Duration::from_secs(3);
    let cluster = LocalCluster::start().await;
    let client = ClusterClient::builder(cluster.seeds())
        .max_size(4)
        .deadline(DEADLINE)
        .connect()
        .await
        .expect("a client");
    let map = client.slot_map();
    let victim = map.shards()[0].primary.clone();
    // Its replica must not take over while it is silent (3 s is past the node timeout):
    // this test is about a node that comes back, not a failover.
    for replica in &map.shards()[0].replicas {
        let no_failover = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-replica-no-failover")
            .arg("yes")
            .clone();
        let _: () = command(port(replica), &no_failover)
            .await
            .expect("CONFIG SET");
    }
    let load = ShardLoad::start(&client, keys_by_shard(&map, "silent"), PER_SHARD, 0);
    wait_until(Duration::from_secs(30), "every shard serves", async || {
        (0..3).all(|shard| load.done(shard) >= 100)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let stopped_at = Instant::now();
    let before: Vec<f64> = (0..3)
        .map(|shard| load.rate(shard, stopped_at - Duration::from_secs(1), stopped_at))
        .collect();
    cluster.signal(port(&victim), "STOP");
    tokio::time::sleep(SILENCE).await;
    let woken_at = Instant::now();
    cluster.signal(port(&victim), "CONT");
    let back = wait_until(
        Duration::from_secs(10),
        "the woken node serves",
        async || {
            let now = Instant::now();
            load.rate(0, now - Duration::from_millis(300), now) > 0.0
        },
    )
    .await;

    // The other shards went on at half their rate or more, with pairs in every 500 ms.
    let mut during = Vec::new();
    for (shard, before) in before.iter().enumerate().skip(1) {
        let rate = load.rate(shard, stopped_at, woken_at);
        during.push(rate);
        assert!(
            rate >= before / 2.0,
            "shard {shard} served {rate:.0} pairs/s while shard 0 was silent, {before:.0} before"
        );
        let mut at = stopped_at;
        while at + Duration::from_millis(500) <= woken_at {
            let window = load.rate(shard, at, at + Duration::from_millis(500));
            assert!(
                window > 0.0,
                "shard {shard} stopped {:?} into the silence",
                at - stopped_at
            );
            at += Duration::from_millis(500);
        }
    }
    let silent_rate = load.rate(0, stopped_at + DEADLINE, woken_at);
    let ended = load.stop().await;
    let status = client.status();

    // Every failure is a timeout of a request to the silent node, ended within its
    // deadline: none hung, none reached another shard.
    assert!(
        !ended.errors.is_empty(),
        "requests to the silent node timed out"
    );
    for (shard, at, error) in &ended.errors {
        assert_eq!(*shard, 0, "a request to another shard failed: {error:?}");
        assert!(
            matches!(error, ClusterError::Timeout { node, deadline, .. }
                if *node == victim && *deadline == DEADLINE),
            "{error:?}"
        );
        assert!(
            *at >= stopped_at + DEADLINE && *at <= woken_at + DEADLINE + Duration::from_millis(500),
            "a timeout {:?} after the stop",
            *at - stopped_at
        );
    }
    assert_eq!(ended.mismatches, 0);
    assert_eq!(silent_rate, 0.0, "the stopped node answered nothing");
    println!(
        "silent node: {victim} stopped for {SILENCE:?}; {} requests to it timed out (deadline \
         {DEADLINE:?}), none elsewhere; pairs/s before {before:.0?}, other shards during \
         {during:.0?}; served again {back:.2?} after SIGCONT; client: {} retries, {} \
         refreshes, {} connections failed, {} timeouts",
        ended.errors.len(),
        status.retries,
        status.refreshes,
        status.connection_failures,
        status.timeouts,
    );
    client.close().await;
}
