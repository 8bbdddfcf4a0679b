//! A primary of a real 6-node Redis Cluster killed (SIGKILL) under load: its replica takes
//! over, the client finds the new primary, no request fails and no read misses its write,
//! and the other shards are served throughout; a command cut by the kill is retried only
//! when it is declared repeatable, and otherwise fails saying its outcome is unknown.
//!
//! A test binary of its own, so that its throughput figures are not shared with another
//! cluster's load. Run with `-- --nocapture` to see them.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use redis_example::cluster::{ClusterClient, ClusterError};
use support::cluster::{LocalCluster, cluster_nodes, command};
use support::load::{ShardLoad, keys_by_shard, wait_until};
use tokio::time::Instant;

/// The port of a `host:port` node.
fn port(node: &redis_example::cluster::Node) -> u16 {
    node.addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_with_no_error_while_the_other_shards_go_on() {
    const PER_SHARD: usize = 8;
    let cluster = LocalCluster::start().await;
    let client = ClusterClient::builder(cluster.seeds())
        .max_size(4)
        .deadline(Duration::from_secs(10))
        .connect()
        .await
        .expect("a client");
    let map = client.slot_map();
    let victim = port(&map.shards()[0].primary);
    let heir = port(
        map.shards()[0]
            .replicas
            .first()
            .expect("the victim has a replica"),
    );
    let load = ShardLoad::start(&client, keys_by_shard(&map, "failover"), PER_SHARD, 1);

    // Warm: every shard has served 1.5 s since its first 100 pairs.
    wait_until(Duration::from_secs(30), "every shard serves", async || {
        (0..3).all(|shard| load.done(shard) >= 100)
    })
    .await;
    // Two blocked commands on the victim, through a client of their own (a BLPOP holds
    // its connection): one the client may not repeat, one declared repeatable.
    let blocker = ClusterClient::builder(cluster.seeds())
        .deadline(Duration::from_secs(10))
        .connect()
        .await
        .expect("a client");
    let key = keys_by_shard(&map, "blocked")[0][0].clone();
    let blocked = |seconds: u64, repeatable: bool| {
        let (blocker, key) = (blocker.clone(), key.clone());
        tokio::spawn(async move {
            let blpop = redis::cmd("BLPOP").arg(&key).arg(seconds).clone();
            let reply = if repeatable {
                blocker.query_repeatable(key.as_bytes(), &blpop).await
            } else {
                blocker.query(key.as_bytes(), &blpop).await
            };
            (reply, Instant::now())
        })
    };
    let (once, again) = (blocked(30, false), blocked(1, true));
    wait_until(Duration::from_secs(10), "two clients blocked", async || {
        let info: String = command(victim, redis::cmd("INFO").arg("clients"))
            .await
            .unwrap_or_default();
        info.contains("blocked_clients:2")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    let before: Vec<f64> = (0..3)
        .map(|shard| load.rate(shard, killed_at - Duration::from_secs(1), killed_at))
        .collect();
    cluster.kill(victim).await;

    // The replica takes over (cluster-node-timeout 2000: 2-4 s), as it says itself.
    wait_until(
        Duration::from_secs(20),
        "the replica is promoted",
        async || {
            let lines = cluster_nodes(heir).await;
            lines
                .iter()
                .any(|l| l[2].contains("myself") && l[2].contains("master"))
        },
    )
    .await;
    let promoted_at = Instant::now();
    let took = promoted_at - killed_at;
    // As a supervisor would, start the killed node again: it rejoins as the new primary's
    // replica, so that `WAIT 1` on the shard is answered again.
    cluster.restart(victim).await;
    let restarted_in = promoted_at.elapsed();
    let synced_in = {
        wait_until(
            Duration::from_secs(15),
            "the restarted node syncs",
            async || {
                let info: String = command(victim, redis::cmd("INFO").arg("replication"))
                    .await
                    .unwrap_or_default();
                info.contains("master_link_status:up")
            },
        )
        .await;
        promoted_at.elapsed()
    };

    // The shard serves again: a 500 ms window at half its rate before the kill, or more.
    wait_until(
        Duration::from_secs(15),
        "the shard serves again",
        async || {
            let now = Instant::now();
            load.rate(0, now - Duration::from_millis(500), now) >= before[0] / 2.0
        },
    )
    .await;
    // The first 500 ms window from the promotion on at that rate.
    let half = Duration::from_millis(500);
    let mut start = promoted_at;
    while load.rate(0, start, start + half) < before[0] / 2.0 && start + half < Instant::now() {
        start += Duration::from_millis(100);
    }
    let recovered_in = start - promoted_at;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ended_at = Instant::now();

    // The other shards, from the kill to a second after the promotion.
    let mut during = Vec::new();
    for (shard, before) in before.iter().enumerate().skip(1) {
        let rate = load.rate(shard, killed_at, promoted_at + Duration::from_secs(1));
        during.push(rate);
        assert!(
            rate >= before / 2.0,
            "shard {shard} served {rate:.0} pairs/s after the kill, {before:.0} before"
        );
        // And never stopped: every 500 ms window has pairs.
        let mut at = killed_at;
        while at + Duration::from_millis(500) <= promoted_at + Duration::from_secs(1) {
            let window = load.rate(shard, at, at + Duration::from_millis(500));
            assert!(
                window > 0.0,
                "shard {shard} stopped {:?} after the kill",
                at - killed_at
            );
            at += Duration::from_millis(500);
        }
    }
    let ended = load.stop().await;
    let status = client.status();

    // The BLPOP the client may not repeat failed at the kill, saying its outcome is
    // unknown; the repeatable one was sent again to the new primary and answered.
    let (once, once_at) = once.await.expect("the task");
    assert!(
        matches!(&once, Err(ClusterError::OutcomeUnknown { node, .. }) if port(node) == victim),
        "{once:?}"
    );
    assert!(
        once_at - killed_at < Duration::from_secs(1),
        "{:?}",
        once_at - killed_at
    );
    let (again, _) = again.await.expect("the task");
    assert!(matches!(again, Ok(redis::Value::Nil)), "{again:?}");
    blocker.close().await;
    println!(
        "failover: primary :{victim} killed; :{heir} promoted {took:.2?} later; :{victim} \
         restarted {restarted_in:.2?} and its replication link up {synced_in:.2?} after the \
         promotion; its shard back at half its rate {recovered_in:.2?} after the promotion; pairs/s before {before:.0?}, \
         other shards during {during:.0?}; {} errors, {} mismatches; client: {} retries, {} \
         moved, {} refreshes, {} connections failed, {} timeouts ({:.1?} in all)",
        ended.errors.len(),
        ended.mismatches,
        status.retries,
        status.moved,
        status.refreshes,
        status.connection_failures,
        status.timeouts,
        ended_at - killed_at,
    );
    let first = ended
        .errors
        .first()
        .map(|(shard, _, e)| format!("shard {shard}: {e:?}"));
    assert!(
        ended.errors.is_empty(),
        "{} errors, first {first:?}",
        ended.errors.len()
    );
    assert_eq!(ended.mismatches, 0);
    assert!(
        recovered_in <= Duration::from_secs(3),
        "the shard took {recovered_in:?} after the promotion; the log of :{victim}:\n{}",
        cluster.log(victim)
    );
    client.close().await;
}
