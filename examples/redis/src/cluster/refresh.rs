//! The slot map shared by all callers, and its refresh: in the background, periodically and
//! whenever a request sees a sign that the map is stale (`MOVED`, a failed connection or
//! connect, `CLUSTERDOWN`, `READONLY` from a demoted primary), one at a time.
//!
//! Single flight: a request asks for a refresh with the generation of the map it routed
//! with. The ask is dropped when a newer map is already installed (someone refreshed since)
//! or a refresh is running (its map will be newer than the one the request saw), so a burst
//! of `MOVED` answers makes one refresh; refreshes also start at least `refresh_min_gap`
//! apart, so a cluster in flux is not asked back to back. Nothing waits for a refresh but a
//! request whose slot the map leaves uncovered: the others follow `MOVED` to the node it
//! names or back off and retry within their deadline, with whatever map is current then.
//!
//! A refresh asks `refresh_fanout` nodes at once (primaries first, then replicas, then the
//! seeds; ejected nodes last), each within `refresh_timeout`, and all the others only if
//! none of those answered; it merges every answer, the newest configuration epoch winning
//! each slot (see [`topology`](super::topology)).

use std::collections::HashSet;
use std::sync::Arc;

use pool::PoolError;
use redis::{ErrorKind, RedisError};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cluster::Inner;
use crate::cluster::error::TopologyError;
use crate::cluster::health::random_fraction;
use crate::cluster::slots::{Node, SlotMap};
use crate::cluster::topology::{NodeLine, merge, parse_nodes};

/// Whether a refresh runs, and when the last one started.
#[derive(Debug, Default)]
pub(crate) struct RefreshState {
    /// Invariant: true from a refresh's spawn until its [`Running`] guard drops, so at most
    /// one refresh runs at a time.
    running: bool,
    last_start: Option<Instant>,
}

/// Ends a refresh, even one whose task was dropped unfinished or never polled (a runtime
/// shutting down): clears `running` and counts the refresh as ended for callers waiting on
/// it.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.refresh_state().running = false;
        self.0.refreshes_ended.send_modify(|ended| *ended += 1);
    }
}

/// Starts the periodic refresh: every `refresh_interval`, a refresh asked for as a request
/// would ask (so it is skipped while one runs). The task holds the client weakly and ends
/// once the client is dropped or closed.
pub(crate) fn spawn_periodic(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let every = inner.settings.refresh_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.pools.is_closed() {
                return;
            }
            inner.request_refresh(inner.map().generation());
        }
    });
}

impl Inner {
    /// The current slot map.
    pub(crate) fn map(&self) -> Arc<SlotMap> {
        Arc::clone(&self.map.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn refresh_state(&self) -> std::sync::MutexGuard<'_, RefreshState> {
        self.refresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a refresh in the background, from a caller that routed with the map of
    /// generation `seen`; see the module's doc for when it is dropped.
    pub(crate) fn request_refresh(self: &Arc<Self>, seen: u64) {
        let delay = {
            let mut state = self.refresh_state();
            if state.running || self.map().generation() > seen {
                return;
            }
            state.running = true;
            let earliest = state
                .last_start
                .map(|at| at + self.settings.refresh_min_gap);
            earliest.map_or(Default::default(), |at| {
                at.saturating_duration_since(Instant::now())
            })
        };
        let running = Running(Arc::clone(self));
        tokio::spawn(async move {
            let inner = &running.0;
            tokio::time::sleep(delay).await;
            inner.refresh_state().last_start = Some(Instant::now());
            if let Err(errors) = inner.refresh_now(false).await {
                tracing::warn!(?errors, "no node answered the slot map refresh");
            }
            drop(running);
        });
    }

    /// Asks nodes for their views and installs the merged map. With `all`, asks every
    /// candidate at once (the first refresh, from the seeds).
    ///
    /// # Errors
    /// Every node's failure, when none answered; the map is left as it was.
    pub(crate) async fn refresh_now(self: &Arc<Self>, all: bool) -> Result<(), Vec<TopologyError>> {
        self.counters.refreshes.bump();
        let current = self.map();
        let candidates = self.candidates(&current);
        let fanout = if all {
            candidates.len()
        } else {
            self.settings.refresh_fanout
        };
        let (first, rest) = candidates.split_at(fanout.min(candidates.len()));
        let (mut views, mut errors) = self.ask(first).await;
        if views.is_empty() && !rest.is_empty() {
            let (more, more_errors) = self.ask(rest).await;
            views = more;
            errors.extend(more_errors);
        }
        if views.is_empty() {
            self.counters.refresh_failures.bump();
            return Err(errors);
        }
        // A node the new map leaves out gets no more requests; its pool lets its connections
        // go once idle, and is then forgotten (see `pools`).
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        *map = Arc::new(merge(&views, map.generation() + 1));
        Ok(())
    }

    /// The nodes to ask, in order: the map's primaries (from a random one on), its replicas,
    /// then the seeds; each once; ejected nodes after all the others.
    fn candidates(&self, map: &SlotMap) -> Vec<Node> {
        let mut primaries: Vec<Node> = map.shards().iter().map(|s| s.primary.clone()).collect();
        let count = primaries.len();
        if count > 0 {
            let start = (random_fraction() * count as f64) as usize;
            primaries.rotate_left(start.min(count - 1));
        }
        let replicas = map.shards().iter().flat_map(|s| s.replicas.iter().cloned());
        let mut seen = HashSet::new();
        let all: Vec<Node> = primaries
            .into_iter()
            .chain(replicas)
            .chain(self.seeds.iter().cloned())
            .filter(|node| seen.insert(node.clone()))
            .collect();
        let (mut admitted, ejected): (Vec<Node>, Vec<Node>) = all
            .into_iter()
            .partition(|node| self.health.admit(node).is_ok());
        admitted.extend(ejected);
        admitted
    }

    /// Asks `nodes` at once, each within `refresh_timeout`.
    async fn ask(self: &Arc<Self>, nodes: &[Node]) -> (Vec<Vec<NodeLine>>, Vec<TopologyError>) {
        let mut asked = JoinSet::new();
        for node in nodes {
            let inner = Arc::clone(self);
            let node = node.clone();
            let after = self.settings.refresh_timeout;
            asked.spawn(async move {
                match tokio::time::timeout(after, inner.view_of(&node)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(TopologyError::Timeout { node, after }),
                }
            });
        }
        let (mut views, mut errors) = (Vec::new(), Vec::new());
        while let Some(joined) = asked.join_next().await {
            match joined {
                Ok(Ok(view)) => views.push(view),
                Ok(Err(error)) => errors.push(error),
                // A panicking query is a bug; the other answers still count.
                Err(error) => tracing::error!(%error, "a CLUSTER NODES query failed"),
            }
        }
        (views, errors)
    }

    /// `node`'s view of the cluster (`CLUSTER NODES`), on a lease of its pool.
    async fn view_of(&self, node: &Node) -> Result<Vec<NodeLine>, TopologyError> {
        let lease = self.pools.lease(node).await.map_err(|source| {
            self.health.connect_failed(node);
            let node = node.clone();
            match source {
                // The connection's handshake read bytes that are not RESP.
                PoolError::Connect(source) if source.kind() == ErrorKind::Parse => {
                    TopologyError::NotRedis { node, source }
                }
                source => TopologyError::Connect { node, source },
            }
        })?;
        let reply: String = lease
            .query(redis::cmd("CLUSTER").arg("NODES"))
            .await
            .map_err(|source| topology_error(node, source))?;
        parse_nodes(&reply, node).map_err(|source| TopologyError::Garbage {
            node: node.clone(),
            source,
        })
    }
}

/// A failed `CLUSTER NODES`, named: a server without cluster support says so in its error.
fn topology_error(node: &Node, source: RedisError) -> TopologyError {
    let node = node.clone();
    let disabled = source
        .detail()
        .is_some_and(|detail| detail.contains("cluster support disabled"));
    if disabled {
        TopologyError::NotCluster { node, source }
    } else if source.kind() == ErrorKind::Parse {
        TopologyError::NotRedis { node, source }
    } else {
        TopologyError::Failed { node, source }
    }
}
