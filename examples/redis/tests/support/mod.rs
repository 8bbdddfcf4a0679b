//! A `redis-server` the test owns (a primary, or a replica of one), and small helpers shared
//! by the Redis tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::timeout;

pub mod cluster;
pub mod load;

/// A `redis-server` owned by the test: killed, waited for and its directory removed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on `port` without persistence, in a fresh temporary directory.
    /// Returns at once; [`wait_ready`](RedisServer::wait_ready) waits until it answers.
    pub fn spawn(port: u16) -> RedisServer {
        RedisServer::spawn_with(port, &[])
    }

    /// As [`spawn`](RedisServer::spawn), with `extra` arguments for `redis-server`.
    pub fn spawn_with(port: u16, extra: &[&str]) -> RedisServer {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mux-pool-redis-{}-{port}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory for redis-server");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // A replica's first full sync goes through an RDB file, not a socket (Redis 7's
            // default, diskless, is slower to a first acknowledged write): a diskless
            // primary waits 5 s (`repl-diskless-sync-delay`) for more replicas before it
            // starts, and after the transfer it streams no write to the replica until the
            // replica's next `REPLCONF ACK`, which the replica may have sent before the
            // primary noticed the end of the transfer, so the next one comes a second later
            // (its replication cron). Measured (30 first syncs each, from starting the
            // replica to a write acknowledged by WAIT): diskless with no delay 51-160 ms,
            // or ~1.07 s in 9 of 30; disk-based 75-304 ms.
            .args(["--repl-diskless-sync", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "cannot start `redis-server` ({error}). This test needs a real Redis server \
                 binary on PATH and does not skip without one: install it with \
                 `apt-get install redis-server` (scripts/test does this)."
                )
            }
        };
        RedisServer { child, port, dir }
    }

    /// Starts a server and waits until it answers PING.
    pub async fn start(port: u16) -> RedisServer {
        let mut server = RedisServer::spawn(port);
        server.wait_ready().await;
        server
    }

    /// Starts a replica of `primary` (`--replicaof`) and waits until the primary streams
    /// writes to it: a write on the primary followed by `WAIT 1` is acknowledged. The
    /// replica reporting `master_link_status:up` is not enough: a primary may hold its
    /// writes back until the replica's next acknowledgement.
    pub async fn start_replica(port: u16, primary: &mut RedisServer) -> RedisServer {
        let primary_port = primary.port.to_string();
        let mut server =
            RedisServer::spawn_with(port, &["--replicaof", "127.0.0.1", &primary_port]);
        server.wait_ready().await;
        primary.wait_replicated(&mut server).await;
        server
    }

    /// Polls, with bounded retries, until a write on this server (a primary) is
    /// acknowledged by one replica (`SET` then `WAIT 1 20` on one connection answers 1).
    /// The key written, `mux-pool:test:replicated`, expires after 60 s.
    async fn wait_replicated(&mut self, replica: &mut RedisServer) {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..200 {
            self.assert_running();
            replica.assert_running();
            let acked = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SET")
                    .arg("mux-pool:test:replicated")
                    .arg(1)
                    .arg("EX")
                    .arg(60)
                    .query_async::<()>(&mut conn)
                    .await?;
                redis::cmd("WAIT")
                    .arg(1)
                    .arg(20)
                    .query_async::<usize>(&mut conn)
                    .await
            };
            if let Ok(Ok(1..)) = timeout(Duration::from_secs(1), acked).await {
                return;
            }
            tick.tick().await;
        }
        panic!(
            "no write on port {} was acknowledged by the replica on port {} within the \
             retries; the primary's log:\n{}\nthe replica's log:\n{}",
            self.port,
            replica.port,
            self.log(),
            replica.log()
        );
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its log file, read now.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Panics with the server's log if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "redis-server on port {} exited ({status}); its log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// Polls PING over a fresh connection until it answers, with bounded retries.
    pub async fn wait_ready(&mut self) {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..1000 {
            self.assert_running();
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            if let Ok(Ok(pong)) = timeout(Duration::from_secs(1), ping).await
                && pong == "PONG"
            {
                return;
            }
            tick.tick().await;
        }
        panic!(
            "redis-server on port {} did not answer PING within the retries; its log:\n{}",
            self.port,
            self.log()
        );
    }

    /// SIGKILL, then reap the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits up to 60 s for every task; a task that panicked, or tasks still running then, fail
/// the test with `what` in the message.
pub async fn join_tasks(tasks: Vec<tokio::task::JoinHandle<()>>, what: &str) {
    let all = timeout(Duration::from_secs(60), futures::future::join_all(tasks))
        .await
        .unwrap_or_else(|_| panic!("{what}: not finished within 60 s"));
    for joined in all {
        joined.unwrap_or_else(|error| panic!("{what}: a task failed: {error}"));
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a local address").port()
}
