//! [`Servers`]: what the cluster's `redis-server`s spent, from their own `INFO` counters
//! read between rounds: CPU time (`used_cpu_sys` + `used_cpu_user`) and socket reads
//! (`total_reads_processed`), summed over every node, replicas included.
//!
//! The clients share the machine's cores with the servers, so a client that makes the
//! servers work more per command (fewer commands per read, more replies per write) loses
//! throughput even when it costs no more CPU itself: these counters show it.

use std::ops::Sub;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis_example::cluster::Node;

/// An `INFO` that takes longer has hung.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection of its own to each node, outside both clients.
pub struct Servers {
    conns: Vec<MultiplexedConnection>,
}

/// The servers' counters, summed over every node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// CPU time, user and system.
    pub cpu: Duration,
    /// Reads from client sockets (one read may carry many commands).
    pub reads: u64,
}

impl Sub for Spent {
    type Output = Spent;
    fn sub(self, other: Spent) -> Spent {
        Spent {
            cpu: self.cpu.saturating_sub(other.cpu),
            reads: self.reads.saturating_sub(other.reads),
        }
    }
}

impl Servers {
    /// Connects to every node of `nodes`.
    ///
    /// # Errors
    /// A node could not be reached.
    ///
    /// # Cancel safety
    /// Cancel safe: the connections made so far are dropped.
    pub async fn connect(nodes: &[Node]) -> redis::RedisResult<Servers> {
        let mut conns = Vec::new();
        for node in nodes {
            let client = redis::Client::open(node.url())?;
            conns.push(client.get_multiplexed_async_connection().await?);
        }
        Ok(Servers { conns })
    }

    /// The counters now, summed over every node.
    ///
    /// # Errors
    /// A node did not answer `INFO` (within 5 s), or answered without the counters.
    ///
    /// # Cancel safety
    /// Cancel safe: a reply that comes later is dropped.
    pub async fn read(&mut self) -> redis::RedisResult<Spent> {
        let mut spent = Spent::default();
        for conn in &mut self.conns {
            let mut cmd = redis::cmd("INFO");
            cmd.arg("all");
            let info = tokio::time::timeout(INFO_TIMEOUT, cmd.query_async::<String>(conn))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
            };
            let number = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
            let (Some(sys), Some(user), Some(reads)) = (
                number("used_cpu_sys"),
                number("used_cpu_user"),
                number("total_reads_processed"),
            ) else {
                let message = "INFO without used_cpu_sys, used_cpu_user, total_reads_processed";
                return Err(std::io::Error::other(message).into());
            };
            spent.cpu += Duration::from_secs_f64(sys + user);
            spent.reads += reads as u64;
        }
        Ok(spent)
    }
}
