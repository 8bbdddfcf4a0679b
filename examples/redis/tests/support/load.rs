//! Load on a cluster, shard by shard: tasks run SET-then-GET pairs on keys of one shard each
//! and count what completes in 100 ms buckets, so that a test reads each shard's throughput
//! over any window, and every error with the shard it hit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_example::cluster::{ClusterClient, ClusterError, SlotMap};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::cluster::key_per_slot;

/// The width of a bucket.
const BUCKET: Duration = Duration::from_millis(100);
/// Buckets kept: two minutes.
const BUCKETS: usize = 1200;

/// What the tasks share.
struct Shared {
    started: Instant,
    /// Pairs completed, by shard and bucket.
    done: Vec<Vec<AtomicU64>>,
    mismatches: AtomicU64,
    /// Each failed pair: its shard, when, and the error.
    errors: Mutex<Vec<(usize, Instant, ClusterError)>>,
    stop: AtomicBool,
}

/// Tasks running pairs on every shard.
pub struct ShardLoad {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// How a load ended.
pub struct Ended {
    /// GETs that read something else than their SET wrote.
    pub mismatches: u64,
    /// Each failed pair: its shard, when, and the error.
    pub errors: Vec<(usize, Instant, ClusterError)>,
}

/// The keys of each shard of `map` (shard `i` is `map.shards()[i]`), one per slot.
pub fn keys_by_shard(map: &SlotMap, prefix: &str) -> Vec<Vec<String>> {
    let mut keys = vec![Vec::new(); map.shards().len()];
    for (slot, key) in key_per_slot(prefix).into_iter().enumerate() {
        let primary = &map
            .shard(slot as u16)
            .expect("every slot is served")
            .primary;
        let shard = map.shards().iter().position(|s| &s.primary == primary);
        keys[shard.expect("a shard of the map")].push(key);
    }
    keys
}

impl ShardLoad {
    /// Starts `per_shard` tasks on each shard's keys; each SET waits for `replicas`.
    pub fn start(
        client: &ClusterClient,
        keys: Vec<Vec<String>>,
        per_shard: usize,
        replicas: usize,
    ) -> ShardLoad {
        let shared = Arc::new(Shared {
            started: Instant::now(),
            done: (0..keys.len())
                .map(|_| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            mismatches: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let keys = Arc::new(keys);
        let mut tasks = Vec::new();
        for shard in 0..keys.len() {
            for task in 0..per_shard {
                let (client, keys, shared) =
                    (client.clone(), Arc::clone(&keys), Arc::clone(&shared));
                tasks.push(tokio::spawn(async move {
                    // Keys of this task alone, so that no other task writes them between
                    // its SET and its GET.
                    let mine: Vec<&String> =
                        keys[shard].iter().skip(task).step_by(per_shard).collect();
                    for n in 0u64.. {
                        if shared.stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let key = mine[n as usize % mine.len()];
                        let value = n.to_string();
                        let pair = async {
                            client.set(key, &value, 600, replicas).await?;
                            client.get(key).await
                        };
                        match pair.await {
                            Ok(Some(read)) if read == value => {
                                let bucket =
                                    shared.started.elapsed().as_millis() / BUCKET.as_millis();
                                let bucket = (bucket as usize).min(BUCKETS - 1);
                                shared.done[shard][bucket].fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {
                                shared.mismatches.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                let mut errors = shared.errors.lock().expect("not poisoned");
                                errors.push((shard, Instant::now(), error));
                            }
                        }
                    }
                }));
            }
        }
        ShardLoad { shared, tasks }
    }

    /// Pairs completed on `shard` from `from` to `to` (whole buckets), per second.
    pub fn rate(&self, shard: usize, from: Instant, to: Instant) -> f64 {
        let index = |at: Instant| {
            let since = at.saturating_duration_since(self.shared.started);
            ((since.as_millis() / BUCKET.as_millis()) as usize).min(BUCKETS)
        };
        let (first, last) = (index(from), index(to));
        if last <= first {
            return 0.0;
        }
        let done: u64 = self.shared.done[shard][first..last]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum();
        done as f64 / ((last - first) as f64 * BUCKET.as_secs_f64())
    }

    /// Pairs completed on `shard` so far.
    pub fn done(&self, shard: usize) -> u64 {
        let buckets = &self.shared.done[shard];
        buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Failed pairs so far.
    pub fn errors(&self) -> usize {
        self.shared.errors.lock().expect("not poisoned").len()
    }

    /// Stops the tasks after their pair in flight (each within its deadline), bounded by
    /// 60 s.
    pub async fn stop(self) -> Ended {
        self.shared.stop.store(true, Ordering::Relaxed);
        crate::support::join_tasks(self.tasks, "the load's tasks").await;
        let errors = std::mem::take(&mut *self.shared.errors.lock().expect("not poisoned"));
        Ended {
            mismatches: self.shared.mismatches.load(Ordering::Relaxed),
            errors,
        }
    }
}

/// Polls `done` every 20 ms until it is true, for at most `limit`; the time it took.
pub async fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while started.elapsed() < limit {
        if done().await {
            return started.elapsed();
        }
        tick.tick().await;
    }
    panic!("{what}: not within {limit:?}");
}
