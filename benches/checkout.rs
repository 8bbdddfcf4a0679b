//! Checkout throughput: our pool against deadpool 0.13, bb8 0.9 and the floor.
//!
//! Every pool holds trivial connections (a `u64`) whose health check returns at once, each with
//! its default settings but `max_size`. The floor is the least any async pool can do: a tokio
//! `Semaphore` for the slots plus a `std::sync::Mutex<Vec<u64>>` for the connections.
//!
//! Grid: `max_size` {4, 16} x tasks {1, 4, 16, 64} x hold {none, yield}. One criterion
//! iteration is a batch of [`BATCH`] get+drop operations split evenly over the tasks, on a
//! multi-threaded tokio runtime with 2 workers; `hold = yield` calls `yield_now` once while the
//! connection is out. The four peers of a cell are the four functions of one criterion group,
//! so they are measured back to back in the same run. At the end the bench prints a markdown
//! table of ops/s and ratios (copied into `BENCHMARKS.md`), then a separate pass measures the
//! wait of each `get` with 64 tasks on 4 connections and prints its p50/p99/max.
//!
//! Leases: the cells with `max_size` 4 hold a fifth function, `ours_lease`, a pool built with
//! `max_streams` [`LEASE_STREAMS`] whose tasks loop `lease().await` then drop in place of
//! get+drop, so lease+drop is measured back to back with get+drop and the peers, and a sixth,
//! `ours_lease_max64`, the same lease+drop on a pool of `max_size` [`LEASE_WIDE_MAX`] (same
//! `max_streams`), which must lease as fast as the pool of 4. A second table prints lease+drop
//! against get+drop (`lease/get`, time per op), the wide pool against the narrow one
//! (`max64/max4`, time per op) and the peers. Since criterion measures one function after the
//! other, a last pass times get+drop and the two lease+drops in alternating rounds on the same
//! pools (see [`interleaved_pass`]), which keeps a busy machine's swings out of their ratios.
//!
//! A boxed manager: the cells with T in [`DYN_TASKS`] hold `ours_dyn`, our pool over the same
//! manager behind a `pool::dynamic::BoxManager` (a `dyn DynManager`), beside `ours`; a third
//! table prints boxed over native, and [`dyn_pass`] times the two in alternating rounds, on the
//! fast path and with a check on every checkout (one boxed future each).
//!
//! Run: `cargo bench -p benches --bench checkout` (about 5 minutes, and about 2 more for the
//! lease rows and the interleaved pass); `BENCH_QUICK=1` for a smoke run. The boxed rows alone:
//! `cargo bench -p benches --bench checkout -- 't(1|16)/none/ours'`; the `max_size` 4 cells,
//! which hold the lease rows: `cargo bench -p benches --bench checkout -- max4/`.

#![forbid(unsafe_code)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures::future::{FutureExt, LocalBoxFuture};
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, SemaphorePermit};

/// get+drop operations per criterion iteration, split over the tasks (divisible by each T).
const BATCH: u64 = 4096;
const MAX_SIZES: [usize; 2] = [4, 16];
const TASKS: [usize; 4] = [1, 4, 16, 64];
const HOLDS: [Hold; 2] = [Hold::None, Hold::Yield];
const PEERS: [&str; 4] = ["ours", "deadpool", "bb8", "floor"];
/// The `max_size` of the cells that also measure lease+drop.
const LEASE_MAX: usize = 4;
/// `max_streams` of the leasing pool: 4 connections carry 64 leases, so no task of the grid
/// ever waits in line for one.
const LEASE_STREAMS: usize = 16;
/// The `max_size` of the second leasing pool, measured beside the first. The load is the
/// same (T tasks need at most 4 connections of 16 leases), but a lease looks over every
/// shared connection: a pool sized for bursts must not make each lease slower.
const LEASE_WIDE_MAX: usize = 64;

/// The task counts of the cells that also measure the boxed manager (`ours_dyn`): one
/// uncontended, one contended.
const DYN_TASKS: [usize; 2] = [1, 16];

/// What a task does while it holds a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// Drops it at once.
    None,
    /// Yields to the scheduler once, then drops it.
    Yield,
}

impl Hold {
    fn name(self) -> &'static str {
        match self {
            Hold::None => "none",
            Hold::Yield => "yield",
        }
    }
}

/// Numbers each connection made, so they are distinct.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

fn next_conn() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

// --- the four peers ----------------------------------------------------------------------

/// Our pool's manager.
struct Ours;

impl pool::Manager for Ours {
    type Connection = u64;
    type Error = Infallible;
    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(next_conn())
    }
    async fn check(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Our manager chosen at run time: [`Ours`] behind a `dyn DynManager`.
type Boxed = pool::dynamic::BoxManager<u64, Infallible>;

/// deadpool's manager.
struct Dead;

impl deadpool::managed::Manager for Dead {
    type Type = u64;
    type Error = Infallible;
    async fn create(&self) -> Result<u64, Infallible> {
        Ok(next_conn())
    }
    async fn recycle(
        &self,
        _conn: &mut u64,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// bb8's manager.
struct Bb8;

impl bb8::ManageConnection for Bb8 {
    type Connection = u64;
    type Error = Infallible;
    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(next_conn())
    }
    async fn is_valid(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}

/// The floor: a semaphore for the slots and a locked stack of connections.
#[derive(Clone)]
struct Floor(Arc<FloorInner>);

struct FloorInner {
    permits: Semaphore,
    conns: Mutex<Vec<u64>>,
}

impl Floor {
    fn new(max_size: usize) -> Self {
        Floor(Arc::new(FloorInner {
            permits: Semaphore::new(max_size),
            conns: Mutex::new((0..max_size).map(|_| next_conn()).collect()),
        }))
    }
}

/// A connection out of the floor; the connection goes back before the permit is released.
struct FloorGuard<'a> {
    conns: &'a Mutex<Vec<u64>>,
    conn: u64,
    _permit: SemaphorePermit<'a>,
}

impl Drop for FloorGuard<'_> {
    fn drop(&mut self) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.conn);
    }
}

/// A pool under test: something that hands out a guard and takes it back on drop.
trait Subject: Clone + Send + Sync + 'static {
    type Guard<'a>: Send
    where
        Self: 'a;
    fn checkout(&self) -> impl Future<Output = Self::Guard<'_>> + Send;
}

impl Subject for pool::Pool<Ours> {
    type Guard<'a> = pool::Pooled<Ours>;
    async fn checkout(&self) -> Self::Guard<'_> {
        self.get().await.expect("our pool hands out a connection")
    }
}

impl Subject for pool::Pool<Boxed> {
    type Guard<'a> = pool::Pooled<Boxed>;
    async fn checkout(&self) -> Self::Guard<'_> {
        self.get().await.expect("our pool hands out a connection")
    }
}

/// Our pool, leasing: the same pool type, built with `max_streams`, and `lease` for `get`.
#[derive(Clone)]
struct Leasing(pool::Pool<Ours>);

impl Subject for Leasing {
    type Guard<'a> = pool::Lease<Ours>;
    async fn checkout(&self) -> Self::Guard<'_> {
        self.0.lease().await.expect("our pool hands out a lease")
    }
}

impl Subject for deadpool::managed::Pool<Dead> {
    type Guard<'a> = deadpool::managed::Object<Dead>;
    async fn checkout(&self) -> Self::Guard<'_> {
        self.get().await.expect("deadpool hands out a connection")
    }
}

impl Subject for bb8::Pool<Bb8> {
    type Guard<'a> = bb8::PooledConnection<'a, Bb8>;
    async fn checkout(&self) -> Self::Guard<'_> {
        self.get().await.expect("bb8 hands out a connection")
    }
}

impl Subject for Floor {
    type Guard<'a> = FloorGuard<'a>;
    async fn checkout(&self) -> FloorGuard<'_> {
        let permit = self
            .0
            .permits
            .acquire()
            .await
            .expect("the floor's semaphore is never closed");
        let conn = self
            .0
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .expect("a permit guarantees a connection");
        FloorGuard {
            conns: &self.0.conns,
            conn,
            _permit: permit,
        }
    }
}

/// The four peers of one cell, built fresh with the same `max_size`, and our pool leasing
/// (with that `max_size`, and with [`LEASE_WIDE_MAX`]).
struct Peers {
    ours: pool::Pool<Ours>,
    boxed: pool::Pool<Boxed>,
    lease: Leasing,
    lease_wide: Leasing,
    dead: deadpool::managed::Pool<Dead>,
    /// deadpool with a wait timeout, as ours (30 s by default) and bb8 (its
    /// `connection_timeout`, 30 s) have: a caller that waits arms a timer in all three.
    dead_timed: deadpool::managed::Pool<Dead>,
    bb8: bb8::Pool<Bb8>,
    floor: Floor,
}

impl Peers {
    fn build(rt: &Runtime, max_size: usize) -> Self {
        let _entered = rt.enter();
        Peers {
            ours: pool::Pool::builder(Ours)
                .max_size(max_size)
                .build()
                .expect("valid settings"),
            boxed: pool::Pool::builder(Boxed::new(Ours))
                .max_size(max_size)
                .build()
                .expect("valid settings"),
            lease: Leasing(
                pool::Pool::builder(Ours)
                    .max_size(max_size)
                    .max_streams(LEASE_STREAMS)
                    .build()
                    .expect("valid settings"),
            ),
            lease_wide: Leasing(
                pool::Pool::builder(Ours)
                    .max_size(LEASE_WIDE_MAX)
                    .max_streams(LEASE_STREAMS)
                    .build()
                    .expect("valid settings"),
            ),
            dead: deadpool::managed::Pool::builder(Dead)
                .max_size(max_size)
                .build()
                .expect("valid settings"),
            dead_timed: deadpool::managed::Pool::builder(Dead)
                .max_size(max_size)
                .wait_timeout(Some(WAIT_TIMEOUT))
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .expect("valid settings"),
            bb8: rt
                .block_on(bb8::Pool::builder().max_size(max_size as u32).build(Bb8))
                .expect("valid settings"),
            floor: Floor::new(max_size),
        }
    }

    fn close(self, rt: &Runtime) {
        rt.block_on(self.ours.close());
        rt.block_on(self.boxed.close());
        rt.block_on(self.lease.0.close());
        rt.block_on(self.lease_wide.0.close());
        self.dead.close();
        self.dead_timed.close();
    }
}

// --- the workload --------------------------------------------------------------------------

/// One get+drop, holding the connection as `hold` says.
async fn cycle<S: Subject>(subject: &S, hold: Hold) {
    let guard = subject.checkout().await;
    if hold == Hold::Yield {
        tokio::task::yield_now().await;
    }
    black_box(&guard);
    drop(guard);
}

/// Runs `iters` batches: `tasks` tasks each doing `iters * BATCH / tasks` get+drops. Returns
/// the wall time from the first spawn to the last task's end.
async fn run_batches<S: Subject>(subject: &S, tasks: usize, iters: u64, hold: Hold) -> Duration {
    let per_task = iters * BATCH / tasks as u64;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let subject = subject.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    cycle(&subject, hold).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a bench task panicked");
    }
    start.elapsed()
}

/// Benchmarks one peer in the current group, recording its samples for the summary.
fn bench_peer<S: Subject>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    cell: &str,
    name: &'static str,
    subject: &S,
    tasks: usize,
    hold: Hold,
) {
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let subject = subject.clone();
            let cell = cell.to_owned();
            async move {
                let elapsed = run_batches(&subject, tasks, iters, hold).await;
                support::record(&cell, name, iters, elapsed);
                elapsed
            }
        });
    });
}

/// The criterion function of lease+drop on the pool of `max_size` [`LEASE_WIDE_MAX`].
const WIDE: &str = "ours_lease_max64";

fn cell_name(max_size: usize, tasks: usize, hold: Hold) -> String {
    format!("checkout/max{max_size}/t{tasks}/{}", hold.name())
}

fn grid(c: &mut Criterion, rt: &Runtime) {
    for max_size in MAX_SIZES {
        for tasks in TASKS {
            for hold in HOLDS {
                let cell = cell_name(max_size, tasks, hold);
                let peers = Peers::build(rt, max_size);
                let mut group = c.benchmark_group(&cell);
                group.throughput(Throughput::Elements(BATCH));
                bench_peer(&mut group, rt, &cell, "ours", &peers.ours, tasks, hold);
                if DYN_TASKS.contains(&tasks) {
                    let boxed = &peers.boxed;
                    bench_peer(&mut group, rt, &cell, "ours_dyn", boxed, tasks, hold);
                }
                if max_size == LEASE_MAX {
                    let lease = &peers.lease;
                    bench_peer(&mut group, rt, &cell, "ours_lease", lease, tasks, hold);
                    let wide = &peers.lease_wide;
                    bench_peer(&mut group, rt, &cell, WIDE, wide, tasks, hold);
                }
                bench_peer(&mut group, rt, &cell, "deadpool", &peers.dead, tasks, hold);
                bench_peer(&mut group, rt, &cell, "bb8", &peers.bb8, tasks, hold);
                bench_peer(&mut group, rt, &cell, "floor", &peers.floor, tasks, hold);
                group.finish();
                peers.close(rt);
            }
        }
    }
}

// --- the summary ---------------------------------------------------------------------------

/// Prints the ops/s of every measured cell, its ratios to the peers, and whether the cell meets
/// its checkout target (T = 1: within 1.5x the floor's time; T > 1: at least deadpool and bb8).
fn print_summary() {
    println!();
    println!("## checkout: ops/s (get+drop) and ratios");
    println!();
    println!(
        "| max | T | hold | ours | deadpool | bb8 | floor | ours/deadpool | ours/bb8 | ours/floor | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for max_size in MAX_SIZES {
        for tasks in TASKS {
            for hold in HOLDS {
                let cell = cell_name(max_size, tasks, hold);
                let rates: Vec<Option<f64>> = PEERS
                    .iter()
                    .map(|peer| support::throughput(&cell, peer, BATCH))
                    .collect();
                let [Some(ours), Some(dead), Some(bb8), Some(floor)] = rates[..] else {
                    continue;
                };
                let target = if tasks == 1 {
                    // Within 1.5x of the floor's time per op.
                    verdict(ours / floor >= 1.0 / 1.5, "<=1.5x floor")
                } else {
                    verdict(ours / dead >= 1.0 && ours / bb8 >= 1.0, ">=1.0x dp, >=bb8")
                };
                println!(
                    "| {max_size} | {tasks} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {target} |",
                    hold.name(),
                    support::rate(ours),
                    support::rate(dead),
                    support::rate(bb8),
                    support::rate(floor),
                    ours / dead,
                    ours / bb8,
                    ours / floor,
                );
            }
        }
    }
    println!();
}

/// Prints lease+drop against get+drop and the peers, for the cells that measured it, and
/// lease+drop on the pool of `max_size` [`LEASE_WIDE_MAX`] against the pool of 4 (a dash when
/// a filter left it out).
fn print_lease_summary() {
    println!(
        "## checkout: lease+drop (max_streams {LEASE_STREAMS}) beside get+drop, max = {LEASE_MAX}; lease max{LEASE_WIDE_MAX}: the same lease+drop on a pool of max_size {LEASE_WIDE_MAX}"
    );
    println!();
    println!(
        "| T | hold | lease | lease max{LEASE_WIDE_MAX} | get | deadpool | bb8 | floor | lease/get (time) | max{LEASE_WIDE_MAX}/max{LEASE_MAX} (time) | lease/deadpool | lease/bb8 | lease/floor | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for tasks in TASKS {
        for hold in HOLDS {
            let cell = cell_name(LEASE_MAX, tasks, hold);
            let rates: Vec<Option<f64>> = ["ours_lease", "ours", "deadpool", "bb8", "floor"]
                .iter()
                .map(|peer| support::throughput(&cell, peer, BATCH))
                .collect();
            let [Some(lease), Some(get), Some(dead), Some(bb8), Some(floor)] = rates[..] else {
                continue;
            };
            // Time per op: lease+drop over get+drop, so 1.20 means 20 % slower.
            let cost = get / lease;
            // Time per op again: the wide pool's lease+drop over the narrow one's.
            let (wide, wide_cost) = match support::throughput(&cell, WIDE, BATCH) {
                Some(wide) => (support::rate(wide), format!("{:.2}", lease / wide)),
                None => ("-".to_owned(), "-".to_owned()),
            };
            let target = if tasks == 1 {
                verdict(cost <= 1.1, "<=1.1x get")
            } else {
                String::new()
            };
            println!(
                "| {tasks} | {} | {} | {wide} | {} | {} | {} | {} | {cost:.2} | {wide_cost} | {:.2} | {:.2} | {:.2} | {target} |",
                hold.name(),
                support::rate(lease),
                support::rate(get),
                support::rate(dead),
                support::rate(bb8),
                support::rate(floor),
                lease / dead,
                lease / bb8,
                lease / floor,
            );
        }
    }
    println!();
}

/// Prints the boxed manager against the native one, for the cells that measured it.
fn print_dyn_summary() {
    println!("## checkout: get+drop, manager boxed (`BoxManager`) beside native");
    println!();
    println!("| max | T | hold | native | boxed | boxed/native (time) |");
    println!("|---|---|---|---|---|---|");
    for max_size in MAX_SIZES {
        for tasks in DYN_TASKS {
            for hold in HOLDS {
                let cell = cell_name(max_size, tasks, hold);
                let native = support::throughput(&cell, "ours", BATCH);
                let boxed = support::throughput(&cell, "ours_dyn", BATCH);
                let (Some(native), Some(boxed)) = (native, boxed) else {
                    continue;
                };
                println!(
                    "| {max_size} | {tasks} | {} | {} | {} | {:.2} |",
                    hold.name(),
                    support::rate(native),
                    support::rate(boxed),
                    native / boxed,
                );
            }
        }
    }
    println!();
}

fn verdict(met: bool, what: &str) -> String {
    format!("{} {what}", if met { "met" } else { "MISSED" })
}

// --- the wait-latency pass -----------------------------------------------------------------

const LATENCY_TASKS: usize = 64;
const LATENCY_MAX: usize = 4;
const LATENCY_ROUNDS: usize = 3;

/// Each of `tasks` tasks times `per_task` gets (from the call to the guard in hand).
async fn wait_times<S: Subject>(
    subject: &S,
    tasks: usize,
    per_task: usize,
    hold: Hold,
) -> Vec<Duration> {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let subject = subject.clone();
            tokio::spawn(async move {
                let mut waits = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let start = Instant::now();
                    let guard = subject.checkout().await;
                    waits.push(start.elapsed());
                    if hold == Hold::Yield {
                        tokio::task::yield_now().await;
                    }
                    drop(guard);
                }
                waits
            })
        })
        .collect();
    let mut all = Vec::with_capacity(tasks * per_task);
    for handle in handles {
        all.extend(handle.await.expect("a latency task panicked"));
    }
    all
}

/// Measures the wait per get with 64 tasks on 4 connections, peers interleaved round by
/// round, and prints p50/p99/max for each.
fn latency_pass(rt: &Runtime) {
    let per_task = if support::quick() { 500 } else { 2000 };
    println!("## checkout: wait per get, T = {LATENCY_TASKS}, max = {LATENCY_MAX}");
    println!();
    println!("| hold | pool | p50 us | p99 us | p99.9 us | max us | gets |");
    println!("|---|---|---|---|---|---|---|");
    for hold in HOLDS {
        let peers = Peers::build(rt, LATENCY_MAX);
        let mut waits: [Vec<Duration>; 4] = Default::default();
        for _ in 0..LATENCY_ROUNDS {
            rt.block_on(async {
                let t = LATENCY_TASKS;
                waits[0].extend(wait_times(&peers.ours, t, per_task, hold).await);
                waits[1].extend(wait_times(&peers.dead, t, per_task, hold).await);
                waits[2].extend(wait_times(&peers.bb8, t, per_task, hold).await);
                waits[3].extend(wait_times(&peers.floor, t, per_task, hold).await);
            });
        }
        for (peer, mut w) in PEERS.iter().zip(waits) {
            w.sort_unstable();
            println!(
                "| {} | {peer} | {} | {} | {} | {} | {} |",
                hold.name(),
                support::micros(support::quantile(&w, 0.50)),
                support::micros(support::quantile(&w, 0.99)),
                support::micros(support::quantile(&w, 0.999)),
                support::micros(support::quantile(&w, 1.0)),
                w.len(),
            );
        }
        peers.close(rt);
    }
    println!();
}

/// Rounds of the interleaved pass, and get+drops (or lease+drops) per round and pool.
const ROUNDS: usize = 11;
const ROUND_OPS: u64 = 64 * BATCH;
/// The wait timeout of the timed deadpool: our pool's default `wait_timeout` and bb8's default
/// `connection_timeout`.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Rounds of [`get_pass`] (16 cells of 5 peers).
const GET_ROUNDS: usize = 7;

/// get+drop against lease+drop, `max_size` [`LEASE_MAX`], and lease+drop on the pool of
/// `max_size` [`LEASE_WIDE_MAX`], in alternating rounds on the same three pools (get, lease,
/// wide lease in even rounds, the other way round in odd ones, so each pair alternates which
/// goes first); prints the median and range of the per-round ratios of time per op (lease over
/// get, wide lease over lease).
fn interleaved_pass(rt: &Runtime) {
    let rounds = if support::quick() { 5 } else { ROUNDS };
    println!(
        "## checkout: lease+drop / get+drop, and lease+drop max{LEASE_WIDE_MAX} / max{LEASE_MAX}, time per op, {rounds} interleaved rounds of {ROUND_OPS} ops, max = {LEASE_MAX}"
    );
    println!();
    println!(
        "| T | hold | get ns/op (median) | lease ns/op (median) | lease max{LEASE_WIDE_MAX} ns/op (median) | lease/get median | min | max | max{LEASE_WIDE_MAX}/max{LEASE_MAX} median | min | max | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for tasks in TASKS {
        for hold in HOLDS {
            let peers = Peers::build(rt, LEASE_MAX);
            let pools = [
                runner(&peers.ours, tasks, hold),
                runner(&peers.lease, tasks, hold),
                runner(&peers.lease_wide, tasks, hold),
            ];
            let ns = interleaved_rounds(rt, &pools, rounds);
            let (median, min, max) = support::spread(&mut per_round_ratios(&ns[0], &ns[1]));
            let (wide_median, wide_min, wide_max) =
                support::spread(&mut per_round_ratios(&ns[1], &ns[2]));
            let target = if tasks == 1 {
                verdict(median <= 1.1, "<=1.1x get")
            } else {
                String::new()
            };
            println!(
                "| {tasks} | {} | {:.1} | {:.1} | {:.1} | {median:.2} | {min:.2} | {max:.2} | {wide_median:.2} | {wide_min:.2} | {wide_max:.2} | {target} |",
                hold.name(),
                median_of(&ns[0]),
                median_of(&ns[1]),
                median_of(&ns[2]),
            );
            drop(pools);
            peers.close(rt);
        }
    }
    println!();
}

/// get+drop of every peer in alternating rounds on the same pools, every cell of the grid:
/// the ratios the `get` targets are read from (criterion measures one peer after the other,
/// seconds apart, while a 2-core machine swings). A ratio is the peer's time per op over
/// ours (so above 1 means ours is faster), taken per round, then the median.
fn get_pass(rt: &Runtime) {
    let rounds = if support::quick() { 3 } else { GET_ROUNDS };
    println!(
        "## checkout: get+drop against the peers, time per op, {rounds} interleaved rounds of {ROUND_OPS} ops"
    );
    println!();
    println!(
        "| max | T | hold | ours ns/op | deadpool 30 s/ours | min | max | bb8/ours | min | max | deadpool no timeout/ours | ours/floor (throughput) | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for max_size in MAX_SIZES {
        for tasks in TASKS {
            for hold in HOLDS {
                let peers = Peers::build(rt, max_size);
                let pools = [
                    runner(&peers.ours, tasks, hold),
                    runner(&peers.dead_timed, tasks, hold),
                    runner(&peers.bb8, tasks, hold),
                    runner(&peers.floor, tasks, hold),
                    runner(&peers.dead, tasks, hold),
                ];
                let ns = interleaved_rounds(rt, &pools, rounds);
                let (dead, dead_min, dead_max) =
                    support::spread(&mut per_round_ratios(&ns[0], &ns[1]));
                let (bb8, bb8_min, bb8_max) =
                    support::spread(&mut per_round_ratios(&ns[0], &ns[2]));
                let (floor, _, _) = support::spread(&mut per_round_ratios(&ns[0], &ns[3]));
                let (untimed, _, _) = support::spread(&mut per_round_ratios(&ns[0], &ns[4]));
                let target = if tasks == 1 && hold == Hold::None {
                    verdict(floor >= 0.67, ">=0.67x floor")
                } else if tasks > 1 {
                    verdict(dead >= 1.0 && bb8 >= 1.0, ">=1.0x deadpool 30 s and bb8")
                } else {
                    String::new()
                };
                println!(
                    "| {max_size} | {tasks} | {} | {:.1} | {dead:.2} | {dead_min:.2} | {dead_max:.2} | {bb8:.2} | {bb8_min:.2} | {bb8_max:.2} | {untimed:.2} | {floor:.2} | {target} |",
                    hold.name(),
                    median_of(&ns[0]),
                );
                drop(pools);
                peers.close(rt);
            }
        }
    }
    println!();
}

/// The boxed manager against the native one, in alternating rounds as [`interleaved_pass`]
/// does, `max_size` 4, hold none: on the fast path (default `check_interval`, so a checkout
/// calls only `is_broken` through the box), and with a check on every checkout
/// (`check_interval` zero, so each checkout allocates the boxed `check` future).
fn dyn_pass(rt: &Runtime) {
    let rounds = if support::quick() { 5 } else { ROUNDS };
    let max_size = 4;
    println!(
        "## checkout: boxed / native manager, time per op, {rounds} interleaved rounds of {ROUND_OPS} ops, max = {max_size}, hold none"
    );
    println!();
    println!(
        "| T | check | native ns/op (median) | boxed ns/op (median) | boxed/native median | min | max |"
    );
    println!("|---|---|---|---|---|---|---|");
    for tasks in DYN_TASKS {
        for (check, interval) in [
            ("within interval", None),
            ("every checkout", Some(Duration::ZERO)),
        ] {
            let _entered = rt.enter();
            let mut native = pool::Pool::builder(Ours).max_size(max_size);
            let mut boxed = pool::Pool::builder(Boxed::new(Ours)).max_size(max_size);
            if let Some(interval) = interval {
                native = native.check_interval(interval);
                boxed = boxed.check_interval(interval);
            }
            let native = native.build().expect("valid settings");
            let boxed = boxed.build().expect("valid settings");
            let pools = [
                runner(&native, tasks, Hold::None),
                runner(&boxed, tasks, Hold::None),
            ];
            let ns = interleaved_rounds(rt, &pools, rounds);
            drop(pools);
            let (median, min, max) = support::spread(&mut per_round_ratios(&ns[0], &ns[1]));
            println!(
                "| {tasks} | {check} | {:.1} | {:.1} | {median:.2} | {min:.2} | {max:.2} |",
                median_of(&ns[0]),
                median_of(&ns[1]),
            );
            rt.block_on(native.close());
            rt.block_on(boxed.close());
        }
    }
    println!();
}

/// One pool of an interleaved pass: runs `iters` batches on it (its tasks and hold are set
/// when it is made) and returns their wall time. Boxed so that pools of different types take
/// turns in one list; that is one allocation per round of [`ROUND_OPS`] ops.
type Runner<'a> = Box<dyn Fn(u64) -> LocalBoxFuture<'a, Duration> + 'a>;

/// `subject` as one pool of an interleaved pass, run by `tasks` tasks holding as `hold` says.
fn runner<S: Subject>(subject: &S, tasks: usize, hold: Hold) -> Runner<'_> {
    Box::new(move |iters| run_batches(subject, tasks, iters, hold).boxed_local())
}

/// Times each of `pools` in `rounds` rounds of [`ROUND_OPS`] ops each, in list order in even
/// rounds and in reverse order in odd ones, so that of any two pools each goes first in every
/// other round. Returns, for each pool, its ns/op in each round, in round order.
fn interleaved_rounds(rt: &Runtime, pools: &[Runner<'_>], rounds: usize) -> Vec<Vec<f64>> {
    let iters = ROUND_OPS / BATCH;
    let mut ns = vec![Vec::with_capacity(rounds); pools.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..pools.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        rt.block_on(async {
            for at in order {
                let time = pools[at](iters).await;
                ns[at].push(time.as_secs_f64() * 1e9 / ROUND_OPS as f64);
            }
        });
    }
    ns
}

/// The per-round ratios of time per op, `b` over `a` (both from [`interleaved_rounds`]).
fn per_round_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| b / a).collect()
}

/// The median of some ns/op values, left in their order.
fn median_of(ns: &[f64]) -> f64 {
    support::spread(&mut ns.to_vec()).0
}

fn main() {
    let rt = support::runtime();
    let mut c = support::criterion();
    grid(&mut c, &rt);
    c.final_summary();
    if !support::listing_or_testing() {
        print_summary();
        print_lease_summary();
        print_dyn_summary();
        // `BENCH_PASSES=get,lease` runs only those passes (all by default).
        let passes = std::env::var("BENCH_PASSES").unwrap_or_default();
        let wanted = |name: &str| passes.is_empty() || passes.split(',').any(|p| p == name);
        if wanted("get") {
            get_pass(&rt);
        }
        if wanted("lease") {
            interleaved_pass(&rt);
        }
        if wanted("dyn") {
            dyn_pass(&rt);
        }
        if wanted("latency") {
            latency_pass(&rt);
        }
    }
}
