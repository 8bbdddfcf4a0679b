//! A `redis-server` the test owns (a primary, or a replica of one), and small helpers shared
//! by the Redis tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::timeout;

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
    fn spawn_with(port: u16, extra: &[&str]) -> RedisServer {
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
            // A primary sends its first full sync to a replica at once, not after the
            // default 5 s spent waiting for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
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

    /// Starts a replica of the server on 127.0.0.1:`primary_port` (`--replicaof`) and waits
    /// until its link to the primary is up, so a write acknowledged by WAIT is on it.
    pub async fn start_replica(port: u16, primary_port: u16) -> RedisServer {
        let primary = primary_port.to_string();
        let mut server = RedisServer::spawn_with(port, &["--replicaof", "127.0.0.1", &primary]);
        server.wait_ready().await;
        server.wait_link_up().await;
        server
    }

    /// Polls `INFO replication` until it says `master_link_status:up`, with bounded retries.
    pub async fn wait_link_up(&mut self) {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut last = String::new();
        for _ in 0..1000 {
            self.assert_running();
            let info = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("INFO")
                    .arg("replication")
                    .query_async::<String>(&mut conn)
                    .await
            };
            if let Ok(Ok(info)) = timeout(Duration::from_secs(1), info).await {
                if info
                    .lines()
                    .any(|line| line.trim() == "master_link_status:up")
                {
                    return;
                }
                last = info;
            }
            tick.tick().await;
        }
        panic!(
            "the replica on port {} did not report master_link_status:up within the retries; \
             INFO replication:\n{last}\nits log:\n{}",
            self.port,
            self.log()
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

/// An error with its causes, on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text = format!("{text}: {inner_text}");
        }
        cause = inner.source();
    }
    text
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a local address").port()
}
