//! A local Redis Cluster the test owns, started by `scripts/redis-cluster` and stopped, every
//! node killed, when it drops; and the admin commands the tests send to single nodes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::timeout;

/// The script, from the repository's root.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/redis-cluster");

/// Six nodes (3 primaries, 3 replicas) on loopback, killed on drop.
pub struct LocalCluster {
    dir: PathBuf,
    ports: Vec<u16>,
}

impl LocalCluster {
    /// Starts a cluster in a fresh temporary directory and waits until it serves (the
    /// script's own bounded wait, within 60 s here).
    pub async fn start() -> LocalCluster {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mux-pool-cluster-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // Owns the directory from here on: a failed start is stopped too.
        let mut cluster = LocalCluster {
            dir,
            ports: Vec::new(),
        };
        let run = tokio::process::Command::new(SCRIPT)
            .arg("start")
            .arg(&cluster.dir)
            .kill_on_drop(true)
            .output();
        let output = timeout(Duration::from_secs(60), run)
            .await
            .expect("scripts/redis-cluster start ends within 60 s")
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        assert!(
            output.status.success(),
            "scripts/redis-cluster start failed ({}); it needs redis-server and redis-cli \
             (apt-get install redis-server; scripts/test installs it):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.ports = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|url| {
                let port = url.rsplit(':').next().and_then(|p| p.parse().ok());
                port.unwrap_or_else(|| panic!("the script printed {url:?}, not a seed URL"))
            })
            .collect();
        assert_eq!(cluster.ports.len(), 6, "six nodes");
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.ports.iter().map(|p| url(*p)).collect()
    }

    /// Every node's port.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    fn pid(&self, port: u16) -> String {
        let file = self.dir.join(format!("node-{port}/redis.pid"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no pid file {}: {e}", file.display()))
            .trim()
            .to_owned()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the node on `port`.
    pub fn signal(&self, port: u16, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(port))
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} of the node on port {port}"
        );
    }

    /// SIGKILL, then a bounded wait until the process is gone (or a zombie: a daemonized
    /// node's parent is init, which may reap it late).
    pub async fn kill(&self, port: u16) {
        let pid = self.pid(port);
        self.signal(port, "KILL");
        for _ in 0..500 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ...`: the state follows the last `)`.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if matches!(state, None | Some("Z") | Some("X")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the node on port {port} survived SIGKILL for 5 s");
    }

    /// Starts a killed node again with its cluster configuration.
    pub async fn restart(&self, port: u16) {
        let run = tokio::process::Command::new(SCRIPT)
            .arg("restart-node")
            .arg(&self.dir)
            .arg(port.to_string())
            .kill_on_drop(true)
            .output();
        let output = timeout(Duration::from_secs(30), run)
            .await
            .expect("restart-node ends within 30 s")
            .expect("run the script");
        assert!(
            output.status.success(),
            "restart-node {port}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The node's log.
    pub fn log(&self, port: u16) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{port}/redis.log"))).unwrap_or_default()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("stop").arg(&self.dir).status();
    }
}

/// `redis://127.0.0.1:PORT`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A connection of its own to one node, for admin commands.
pub async fn admin(port: u16) -> MultiplexedConnection {
    let client = redis::Client::open(url(port)).expect("a valid URL");
    timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("an admin connection within 5 s")
    .expect("an admin connection")
}

/// One admin command on a node, within 5 s.
pub async fn command<T: redis::FromRedisValue>(
    port: u16,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    let mut conn = admin(port).await;
    match timeout(Duration::from_secs(5), cmd.query_async(&mut conn)).await {
        Ok(reply) => reply,
        Err(_) => panic!("port {port} did not answer {cmd:?} within 5 s"),
    }
}

/// The node's `CLUSTER NODES` lines, split into fields.
pub async fn cluster_nodes(port: u16) -> Vec<Vec<String>> {
    let text: String = command(port, redis::cmd("CLUSTER").arg("NODES"))
        .await
        .expect("CLUSTER NODES");
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The port of a `CLUSTER NODES` line (`ip:port@cport`).
pub fn port_of(line: &[String]) -> u16 {
    line[1]
        .split(['@', ','])
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// As `port`'s node sees it: the primary serving `slot`, and that primary's replica.
pub async fn owner_of(port: u16, slot: u16) -> (u16, Option<u16>) {
    let lines = cluster_nodes(port).await;
    let serves = |line: &Vec<String>| {
        line[8..].iter().any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                _ => false,
            }
        })
    };
    let primary = lines
        .iter()
        .find(|l| l[2].contains("master") && serves(l))
        .unwrap_or_else(|| panic!("no primary serves slot {slot}: {lines:?}"));
    let replica = lines
        .iter()
        .find(|l| l[3] == primary[0] && !l[2].contains("fail"))
        .map(|l| port_of(l));
    (port_of(primary), replica)
}

/// Client connections on the node of `admin` (`CLIENT LIST`, `flags=N`: neither replicas
/// nor the replication link), less `admin` itself.
pub async fn client_connections(admin: &mut MultiplexedConnection) -> usize {
    let list = timeout(
        Duration::from_secs(5),
        redis::cmd("CLIENT")
            .arg("LIST")
            .query_async::<String>(admin),
    )
    .await
    .expect("CLIENT LIST within 5 s")
    .expect("CLIENT LIST");
    let plain = list.lines().filter(|l| l.contains(" flags=N ")).count();
    plain.saturating_sub(1)
}

/// The client connections of every node at once, from one admin connection per node
/// ([`admin`]), as [`client_connections`] counts them. A server still lists a connection the
/// client just let go of (its close is under way) while another server may list the one
/// that took its place: each node's count is the lower of two passes over the nodes, so a
/// connection counts only when both passes saw it, and a moment's overlap between a close
/// and a connect does not. The first pass's counts come back too.
pub async fn connections_of_every_node(
    admins: &mut [MultiplexedConnection],
) -> (Vec<usize>, Vec<usize>) {
    let mut passes = [Vec::new(), Vec::new()];
    for pass in &mut passes {
        for admin in admins.iter_mut() {
            pass.push(client_connections(admin).await);
        }
    }
    let [first, second] = passes;
    let lower = first.iter().zip(&second).map(|(a, b)| *a.min(b)).collect();
    (lower, first)
}

/// A key of each hash slot: `keys[slot]` hashes to `slot` (found by counting up).
pub fn key_per_slot(prefix: &str) -> Vec<String> {
    let mut keys = vec![String::new(); 16384];
    let mut missing = 16384;
    let mut n = 0u64;
    while missing > 0 {
        let tag = n.to_string();
        let slot = usize::from(redis_example::cluster::slots::slot(tag.as_bytes()));
        if keys[slot].is_empty() {
            keys[slot] = format!("{prefix}:{{{tag}}}");
            missing -= 1;
        }
        n += 1;
    }
    keys
}
