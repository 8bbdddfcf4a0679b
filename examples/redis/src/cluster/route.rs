//! One request from its key to its answer: the slot's node (a replica for reads when asked),
//! a lease on that node's pool, the command, and what to do with each failure, all within
//! the request's deadline.
//!
//! | answer | what the request does |
//! |---|---|
//! | `MOVED slot node` | asks for a refresh, retries at once on `node` |
//! | `ASK slot node` | `ASKING` then the command on `node`, one pipeline (no other lease's command between them on the shared connection); no refresh |
//! | `TRYAGAIN`, `LOADING`, `MASTERDOWN` | backs off, retries |
//! | `CLUSTERDOWN`, `READONLY` (a demoted primary) | asks for a refresh, backs off, retries |
//! | another error reply | fails: [`ClusterError::Server`] |
//! | no lease (connect refused, timed out) | counts a connect failure (two eject the node), asks for a refresh, backs off, retries |
//! | node ejected | asks for a refresh, backs off, retries |
//! | connection failed after sending | asks for a refresh; retries a repeatable command, fails any other with [`ClusterError::OutcomeUnknown`] |
//! | `WAIT` short of replicas | backs off, writes again (`SET` of the same value), waits again |
//! | the deadline | fails: [`ClusterError::Timeout`], with the last failure as its source; asks for a refresh when it passed waiting for a node |
//!
//! Backoff doubles from `backoff_first` to `backoff_max`, jittered, and never sleeps past
//! the deadline. A `MOVED` is followed at once, but from the fourth redirection in a row
//! on it backs off too, so that two nodes that disagree during a migration are not asked in
//! a tight loop.

use std::sync::Arc;
use std::time::Duration;

use pool::Lease;
use redis::{Cmd, RedisError, Value};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::RedisManager;
use crate::cluster::Inner;
use crate::cluster::error::ClusterError;
use crate::cluster::health::jitter;
use crate::cluster::slots::{Node, ranges_text, slot};

/// What a request runs on the node it lands on.
pub(crate) enum Op<'a> {
    /// One command, its reply returned.
    Cmd(&'a Cmd),
    /// A `SET`, then `WAIT replicas timeout` on the same connection.
    SetWait {
        set: &'a Cmd,
        replicas: usize,
        wait: Duration,
    },
}

/// How a request may be routed and retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    /// A read: may go to a replica when the client reads from replicas.
    pub read: bool,
    /// Safe to run twice (GET, SET of the same value, WAIT): retried after a connection
    /// failed under it.
    pub repeatable: bool,
}

/// Where the next attempt goes.
enum Target {
    /// The slot's node in the current map.
    Slot,
    /// The node a `MOVED` named.
    Moved(Node),
    /// The node an `ASK` named (with `ASKING`).
    Ask(Node),
}

/// How one attempt failed.
enum Failure {
    /// Retry on this node (`ASK`) or the new owner (`MOVED`).
    Redirect(Target),
    /// Retry after a backoff; `refresh` asks for a new map first.
    Retry { error: ClusterError, refresh: bool },
    /// Give up with this error.
    Fail(ClusterError),
    /// The deadline passed during the attempt.
    Deadline,
}

impl Inner {
    /// Runs `op` for `key` until it is answered, fails for good, or `deadline` passes.
    pub(crate) async fn run(
        self: &Arc<Self>,
        key: &[u8],
        op: &Op<'_>,
        call: Call,
    ) -> Result<Value, ClusterError> {
        self.counters.requests.bump();
        let deadline = Instant::now() + self.settings.deadline;
        let slot = slot(key);
        let mut target = Target::Slot;
        let mut last: Option<ClusterError> = None;
        let mut backoffs = 0u32;
        let mut redirects = 0u32;
        let mut looked_again = false;
        loop {
            let map = self.map();
            let (node, asking) = match std::mem::replace(&mut target, Target::Slot) {
                Target::Moved(node) => (node, false),
                Target::Ask(node) => (node, true),
                Target::Slot => match self.pick(&map, slot, call.read) {
                    Some(node) => (node, false),
                    None if looked_again => {
                        return Err(ClusterError::Uncovered {
                            slot,
                            uncovered: ranges_text(&map.uncovered()),
                        });
                    }
                    None => {
                        // Uncovered: one look at a fresh map before giving up.
                        looked_again = true;
                        let mut ended = self.refreshes_ended.subscribe();
                        let before = *ended.borrow_and_update();
                        if self.map().generation() == map.generation() {
                            self.request_refresh(map.generation());
                            let fresh = ended.wait_for(|n| *n > before);
                            if timeout_at(deadline, fresh).await.is_err() {
                                let uncovered = ranges_text(&map.uncovered());
                                return Err(ClusterError::Uncovered { slot, uncovered });
                            }
                        }
                        continue;
                    }
                },
            };
            let failure = match self.health.admit(&node) {
                Err(until) => Failure::Retry {
                    error: ClusterError::Ejected {
                        node: node.clone(),
                        remaining: until.saturating_duration_since(Instant::now()),
                    },
                    refresh: true,
                },
                Ok(()) => match self.attempt(&node, op, call, asking, deadline).await {
                    Ok(value) => {
                        self.health.served(&node);
                        return Ok(value);
                    }
                    Err(failure) => failure,
                },
            };
            match failure {
                Failure::Redirect(next) => {
                    redirects += 1;
                    if let Target::Moved(_) = next {
                        self.counters.moved.bump();
                        self.request_refresh(map.generation());
                    } else {
                        self.counters.asked.bump();
                    }
                    target = next;
                    if redirects < 4 {
                        continue;
                    }
                }
                Failure::Retry { error, refresh } => {
                    if refresh {
                        self.request_refresh(map.generation());
                    }
                    last = Some(error);
                }
                Failure::Fail(error) => return Err(error),
                // The deadline passed in the attempt; `last` still says what failed before.
                // A node that does not answer may be failing over: look at the map again
                // for the requests that come after.
                Failure::Deadline => self.request_refresh(map.generation()),
            }
            let pause = jitter(
                self.settings
                    .backoff_first
                    .saturating_mul(1 << backoffs.min(16))
                    .min(self.settings.backoff_max),
            );
            backoffs += 1;
            if Instant::now() + pause >= deadline {
                sleep_until(deadline).await;
                self.counters.timeouts.bump();
                return Err(ClusterError::Timeout {
                    deadline: self.settings.deadline,
                    node,
                    last: last.map(Box::new),
                });
            }
            self.counters.retries.bump();
            sleep_until(Instant::now() + pause).await;
        }
    }

    /// The node for `slot`: its primary, or for a read when the client reads from replicas,
    /// the replica (not ejected) with the fewest leases in flight; the primary when there
    /// is none.
    fn pick(&self, map: &crate::cluster::SlotMap, slot: u16, read: bool) -> Option<Node> {
        let shard = map.shard(slot)?;
        if read && self.settings.read_from_replicas {
            let leases = |node: &Node| self.pools.status(node).map_or(0, |s| s.leases);
            let best = shard
                .replicas
                .iter()
                .filter(|node| self.health.admit(node).is_ok())
                .min_by_key(|node| leases(node));
            if let Some(node) = best {
                return Some(node.clone());
            }
        }
        Some(shard.primary.clone())
    }

    /// One attempt on `node`.
    async fn attempt(
        &self,
        node: &Node,
        op: &Op<'_>,
        call: Call,
        asking: bool,
        deadline: Instant,
    ) -> Result<Value, Failure> {
        let lease = match timeout_at(deadline, self.pools.lease(node)).await {
            Err(_) => return Err(Failure::Deadline),
            Ok(Err(source)) => {
                self.health.connect_failed(node);
                let error = ClusterError::Connect {
                    node: node.clone(),
                    source,
                };
                return Err(Failure::Retry {
                    error,
                    refresh: true,
                });
            }
            Ok(Ok(lease)) => lease,
        };
        let reply = match timeout_at(deadline, run_op(&lease, op, asking, deadline)).await {
            Err(_) => return Err(Failure::Deadline),
            Ok(reply) => reply,
        };
        match reply {
            Ok(value) => Ok(value),
            Err(OpError::NotReplicated { asked, acked }) => Err(Failure::Retry {
                error: ClusterError::NotReplicated {
                    node: node.clone(),
                    asked,
                    acked,
                },
                refresh: false,
            }),
            Err(OpError::Redis(error)) => Err(self.classify(node, error, call)),
        }
    }

    /// What to do after `error` from `node`.
    fn classify(&self, node: &Node, error: RedisError, call: Call) -> Failure {
        let node = node.clone();
        let Some((code, detail)) = server_error(&error) else {
            // No answer from the server: the connection failed, perhaps after the command
            // reached it.
            self.counters.connection_failures.bump();
            if !call.repeatable {
                return Failure::Fail(ClusterError::OutcomeUnknown {
                    node,
                    source: error,
                });
            }
            let error = ClusterError::Connection {
                node,
                source: error,
            };
            return Failure::Retry {
                error,
                refresh: true,
            };
        };
        let busy = |refresh| Failure::Retry {
            error: ClusterError::Busy {
                node: node.clone(),
                source: error.clone(),
            },
            refresh,
        };
        match code.as_str() {
            "MOVED" | "ASK" => {
                let to = detail
                    .as_deref()
                    .and_then(|d| d.split_ascii_whitespace().nth(1))
                    .and_then(Node::from_url);
                match to {
                    Some(to) if code == "MOVED" => Failure::Redirect(Target::Moved(to)),
                    Some(to) => Failure::Redirect(Target::Ask(to)),
                    None => Failure::Fail(ClusterError::BadRedirect {
                        node,
                        detail: detail.unwrap_or_default(),
                    }),
                }
            }
            "TRYAGAIN" | "LOADING" | "MASTERDOWN" => busy(false),
            "CLUSTERDOWN" | "READONLY" => busy(true),
            _ => Failure::Fail(ClusterError::Server {
                node,
                source: error,
            }),
        }
    }
}

/// The code (`MOVED`) and detail (`3999 127.0.0.1:7001`) of an error the server answered;
/// `None` when the server did not answer (I/O, timeout, protocol).
fn server_error(error: &RedisError) -> Option<(String, Option<String>)> {
    let errors = error.clone().into_server_errors()?;
    let (_, first) = errors.first()?;
    Some((first.code().to_owned(), first.details().map(str::to_owned)))
}

/// How [`run_op`] failed.
enum OpError {
    Redis(RedisError),
    NotReplicated { asked: usize, acked: usize },
}

impl From<RedisError> for OpError {
    fn from(error: RedisError) -> Self {
        OpError::Redis(error)
    }
}

/// Runs `op` on the leased connection; with `asking`, its keyed command goes right after
/// `ASKING`, in one pipeline. A `WAIT` waits no longer than until `deadline`.
async fn run_op(
    lease: &Lease<RedisManager>,
    op: &Op<'_>,
    asking: bool,
    deadline: Instant,
) -> Result<Value, OpError> {
    match op {
        Op::Cmd(cmd) => Ok(keyed(lease, cmd, asking).await?),
        Op::SetWait {
            set,
            replicas,
            wait,
        } => {
            let value = keyed(lease, set, asking).await?;
            if *replicas > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                let millis = (*wait).min(left).as_millis().max(1) as u64;
                let acked: usize = lease
                    .query(redis::cmd("WAIT").arg(*replicas).arg(millis))
                    .await?;
                if acked < *replicas {
                    return Err(OpError::NotReplicated {
                        asked: *replicas,
                        acked,
                    });
                }
            }
            Ok(value)
        }
    }
}

/// `cmd`, right after `ASKING` in one pipeline when `asking`.
async fn keyed(lease: &Lease<RedisManager>, cmd: &Cmd, asking: bool) -> Result<Value, RedisError> {
    if asking {
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").ignore().add_command(cmd.clone());
        let mut replies = lease.query_pipeline(&pipe).await?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    } else {
        lease.query::<Value>(cmd).await
    }
}
