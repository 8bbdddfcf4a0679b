//! A slot of a real 6-node Redis Cluster migrated to another primary under load, the way
//! `redis-cli --cluster reshard` does it (`CLUSTER SETSLOT` `IMPORTING` and `MIGRATING`,
//! `MIGRATE` in batches, `SETSLOT NODE`): every request is answered, through `ASK` during
//! the migration and `MOVED` after it, and a burst of `MOVED` makes few refreshes.
//!
//! Run with `-- --nocapture` to see the numbers.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use redis::Value;
use redis_example::cluster::slots::slot;
use redis_example::cluster::{ClusterClient, Node};
use support::cluster::{LocalCluster, cluster_nodes, command, port_of};
use support::load::{ShardLoad, wait_until};
use tokio::time::Instant;

/// The port of a `host:port` node.
fn port(node: &Node) -> u16 {
    node.addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// The node id of the node on `port`, from its own `CLUSTER NODES` line.
async fn node_id(port: u16) -> String {
    let lines = cluster_nodes(port).await;
    let own = lines
        .iter()
        .find(|l| l[2].contains("myself"))
        .expect("a myself line");
    assert_eq!(port_of(own), port);
    own[0].clone()
}

/// `CLUSTER SETSLOT slot <how> <id>` on `port`.
async fn setslot(port: u16, slot: u16, how: &str, id: &str) {
    let cmd = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(how)
        .arg(id)
        .clone();
    let _: () = command(port, &cmd)
        .await
        .unwrap_or_else(|e| panic!("SETSLOT {how} on {port}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_load_is_followed_through_ask_then_moved() {
    const TASKS: usize = 16;
    let cluster = LocalCluster::start().await;
    let client = ClusterClient::builder(cluster.seeds())
        .max_size(4)
        .deadline(Duration::from_secs(5))
        .connect()
        .await
        .expect("a client");
    let map = client.slot_map();
    let (source, target) = (
        map.shards()[0].primary.clone(),
        map.shards()[1].primary.clone(),
    );
    // A hashtag of the source's: every key of the load is in its slot.
    let tag = (0u32..)
        .map(|n| format!("{{m{n}}}"))
        .find(|tag| {
            map.shard(slot(tag.as_bytes()))
                .is_some_and(|s| s.primary == source)
        })
        .expect("a tag of the source");
    let moving = slot(tag.as_bytes());
    let keys: Vec<String> = (0..400).map(|n| format!("{tag}:{n}")).collect();
    let load = ShardLoad::start(&client, vec![keys], TASKS, 0);
    wait_until(
        Duration::from_secs(30),
        "the load writes its keys",
        async || load.done(0) >= 800,
    )
    .await;

    // The migration, as redis-cli --cluster reshard runs it, 10 keys a batch.
    let started = Instant::now();
    let (source_id, target_id) = (node_id(port(&source)).await, node_id(port(&target)).await);
    setslot(port(&target), moving, "IMPORTING", &source_id).await;
    setslot(port(&source), moving, "MIGRATING", &target_id).await;
    let mut migrated = 0;
    let mut batches = 0;
    loop {
        let getkeys = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(moving)
            .arg(10)
            .clone();
        let batch: Vec<String> = command(port(&source), &getkeys)
            .await
            .expect("GETKEYSINSLOT");
        if batch.is_empty() {
            break;
        }
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(port(&target))
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS");
        migrate.arg(&batch);
        let reply: Value = command(port(&source), &migrate).await.expect("MIGRATE");
        assert!(
            matches!(reply, Value::Okay | Value::SimpleString(_)),
            "{reply:?}"
        );
        migrated += batch.len();
        batches += 1;
        // Let the load run between batches, so that its requests meet the slot half moved.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the migration ends"
        );
    }
    let asked_before_node = client.status().asked;
    let refreshes_before = client.status().refreshes;
    // The target first (it bumps its config epoch: its claim is the newest), then the
    // source, then the third primary.
    setslot(port(&target), moving, "NODE", &target_id).await;
    setslot(port(&source), moving, "NODE", &target_id).await;
    setslot(port(&map.shards()[2].primary), moving, "NODE", &target_id).await;
    let migration = started.elapsed();

    // The client's map follows.
    let followed = wait_until(
        Duration::from_secs(15),
        "the map names the target",
        async || {
            client
                .slot_map()
                .shard(moving)
                .is_some_and(|s| s.primary == target)
        },
    )
    .await;
    let done_at_move = load.done(0);
    wait_until(Duration::from_secs(15), "the load goes on", async || {
        load.done(0) >= done_at_move + 400
    })
    .await;
    let ended = load.stop().await;
    let status = client.status();
    println!(
        "migration: slot {moving} ({tag}) from {source} to {target}: {migrated} keys in \
         {batches} batches, {migration:.2?} in all; the client's map named the target \
         {followed:.2?} after SETSLOT NODE; {} ASK followed ({asked_before_node} before \
         SETSLOT NODE), {} MOVED, {} refreshes after SETSLOT NODE; {} errors, {} mismatches",
        status.asked,
        status.moved,
        status.refreshes - refreshes_before,
        ended.errors.len(),
        ended.mismatches,
    );
    let first = ended.errors.first().map(|(_, _, e)| format!("{e:?}"));
    assert!(
        ended.errors.is_empty(),
        "{} errors, first {first:?}",
        ended.errors.len()
    );
    assert_eq!(ended.mismatches, 0);
    assert!(migrated > 0);
    assert!(
        asked_before_node > 0,
        "requests met the slot half moved: {status:?}"
    );
    assert!(status.moved > 0, "requests met the moved slot: {status:?}");
    // A burst of MOVED from 16 tasks makes few refreshes: one per map generation that
    // still routed to the source (nodes learn the new owner by gossip).
    assert!(
        status.refreshes - refreshes_before <= 3,
        "{} refreshes for {} MOVED",
        status.refreshes - refreshes_before,
        status.moved
    );
    // Every key is on the target now.
    let count = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(moving)
        .clone();
    let on_target: usize = command(port(&target), &count)
        .await
        .expect("COUNTKEYSINSLOT");
    assert_eq!(on_target, 400);
    client.close().await;
}
