//! Transport throughput: our multiplexed `Conn` and echo server against a raw baseline.
//!
//! Everything runs over loopback TCP in this process, on a multi-threaded tokio runtime with 2
//! workers. The raw baseline is the least code that speaks the same newline-delimited JSON: a
//! hand-written client and server with a `BufReader`/`BufWriter` on each side, no `Uid` routing
//! and no tasks per request, flushing once per batch (when nothing more is buffered to read).
//! Both servers do the same work per request (parse, build `"server: hello, " + Val` with an
//! RFC 3339 timestamp, encode).
//!
//! Modes (each a criterion group holding `raw` and `ours`, measured back to back):
//! - `a_sequential`: one connection, one request at a time.
//! - `b_pipelined_1conn`: one connection, 64 requests in flight (ours: 64 tasks sharing one
//!   `Conn`; raw: one task keeping a window of 64). `ours_window` is ours in the raw client's
//!   shape: one task keeping a window of 64 requests on the `Conn`.
//! - `c_pipelined_4conn`: four connections with 64 in flight each (and `ours_window` as in b).
//! - `d_pool_get`: the load of (c) through `pool.get()` per request: a pool of 4 `Conn`s
//!   (`JsonManager`, FIFO idle order so the requests spread over the four), 64 tasks with 4
//!   requests in flight each (4 sequential loops joined in the task); each request takes a
//!   connection from the pool, clones the multiplexed `Conn` out of the guard and returns the
//!   guard before it awaits the response.
//!   Its raw baseline is raw (c).
//! - `d_pool_lease`: the tasks of (c) through `pool.lease()` per request: a pool of 4 `Conn`s
//!   with `max_streams` 64 (so the 4 carry all 256 leases), 256 tasks, each making requests
//!   one after another, each request on a lease of its own held until its response.
//!   Measured back to back with `raw` (raw (c)) and `bare` (ours in (c): the same 256 tasks on
//!   the 4 bare `Conn`s); the target is ours/bare >= 0.87 (the pool costs under 13 %).
//!
//! With `BENCH_SPLIT=1`, modes (a) and (b) also runs the mixed pairs that tell the client's share of the
//! cost from the server's: `raw_client_ours_server` (the raw client against our server) and
//! `ours_client_raw_server` (our `Conn` against the raw server).
//!
//! At the end it prints a markdown table of messages/s and the ratio ours/raw. Then a last pass
//! runs mode `d_pool_lease`'s `bare` and `ours` in alternating rounds (see [`interleaved_pass`])
//! and prints the median and range of their ratio, which a busy machine's swings between two
//! criterion functions measured seconds apart do not reach. The same rounds run two reference
//! points: `floor`, the least code that lends the bare connections by count (one `Mutex` over
//! four counters, fewest first, the count taken back on drop), what any pool that places
//! leases under one lock pays at the least; and `ideal`, the same placement with no lock at
//! all (an atomic count per connection, a compare-and-swap on the fewest, the connection's
//! `Arc` on the count's cache line): what a lease per request with fewest-first placement
//! costs however it is built, before any duty of a pool.
//!
//! Run: `cargo bench -p benches --bench transport` (about 1 minute, and about 20 s more for
//! `d_pool_lease` and its interleaved pass); `BENCH_QUICK=1` for a smoke run.

#![forbid(unsafe_code)]

mod support;

use std::hint::black_box;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use transport_json::conn::ConnectOptions;
use transport_json::server::{RunningServer, Server, ServerConfig, rfc3339_nanos};
use transport_json::{Conn, JsonManager, Message, Resp};

/// Round trips per iteration in sequential mode.
const SEQ_BATCH: u64 = 256;
/// Requests per connection per iteration in the pipelined modes.
const PIPE_BATCH: u64 = 4096;
/// Requests in flight per connection in the pipelined modes.
const WINDOW: usize = 64;
/// Connections in modes (c) and (d).
const CONNS: usize = 4;
/// Tasks in mode (d), and requests in flight per task there.
const POOL_TASKS: usize = 64;
const PER_TASK_IN_FLIGHT: usize = CONNS * WINDOW / POOL_TASKS;
/// Tasks in mode `d_pool_lease` (each one request in flight): as many as ours in (c).
const LEASE_TASKS: usize = CONNS * WINDOW;
/// Leases one connection carries at once in mode `d_pool_lease`.
const LEASE_STREAMS: usize = WINDOW;
const VAL: &str = "hello";

const MODES: [(&str, u64, f64); 5] = [
    ("a_sequential", SEQ_BATCH, 0.9),
    ("b_pipelined_1conn", PIPE_BATCH, 0.8),
    ("c_pipelined_4conn", CONNS as u64 * PIPE_BATCH, 0.8),
    ("d_pool_get", CONNS as u64 * PIPE_BATCH, 0.8),
    ("d_pool_lease", CONNS as u64 * PIPE_BATCH, 0.8),
];
/// The target of `d_pool_lease` against `bare` (the same tasks on the bare connections).
const LEASE_TARGET: f64 = 0.87;

// --- the raw baseline ----------------------------------------------------------------------

/// The raw server: one task per connection, requests answered in order, one flush per batch.
async fn raw_accept(listener: TcpListener) {
    while let Ok((socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Err(error) = raw_serve(socket).await {
                eprintln!("raw server connection: {error}");
            }
        });
    }
}

async fn raw_serve(socket: TcpStream) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut line = String::new();
    let mut out = Vec::with_capacity(256);
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return writer.flush().await;
        }
        let req: Message = serde_json::from_str(&line).map_err(io::Error::other)?;
        let resp = Resp {
            uid: req.uid,
            val: format!("server: hello, {}", req.val),
            ts: rfc3339_nanos(SystemTime::now()),
            err: None,
        };
        out.clear();
        serde_json::to_writer(&mut out, &resp).map_err(io::Error::other)?;
        out.push(b'\n');
        writer.write_all(&out).await?;
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// The raw client: one connection, driven by one task at a time.
struct RawConn {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    line: String,
    out: Vec<u8>,
    next_uid: u64,
}

impl RawConn {
    async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (read, write) = socket.into_split();
        Ok(RawConn {
            reader: BufReader::new(read),
            writer: BufWriter::new(write),
            line: String::new(),
            out: Vec::with_capacity(128),
            next_uid: 0,
        })
    }

    async fn write_one(&mut self) -> io::Result<()> {
        self.next_uid += 1;
        let req = Message {
            uid: self.next_uid.to_string(),
            val: VAL.to_owned(),
        };
        self.out.clear();
        serde_json::to_writer(&mut self.out, &req).map_err(io::Error::other)?;
        self.out.push(b'\n');
        self.writer.write_all(&self.out).await
    }

    async fn read_one(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let resp: Resp = serde_json::from_str(&self.line).map_err(io::Error::other)?;
        if let Some(err) = resp.err {
            return Err(io::Error::other(err));
        }
        black_box(resp);
        Ok(())
    }

    /// `n` round trips with up to `window` in flight; flushes once per batch of writes.
    async fn run(&mut self, n: u64, window: usize) -> io::Result<()> {
        let (mut sent, mut received) = (0, 0);
        while sent < n && sent - received < window as u64 {
            self.write_one().await?;
            sent += 1;
        }
        self.writer.flush().await?;
        while received < n {
            self.read_one().await?;
            received += 1;
            if sent < n {
                self.write_one().await?;
                sent += 1;
            }
            if self.reader.buffer().is_empty() {
                self.writer.flush().await?;
            }
        }
        Ok(())
    }
}

type Shared<T> = Arc<tokio::sync::Mutex<T>>;

/// Runs `n` round trips on each raw connection at once, `window` in flight on each.
async fn raw_round(conns: &[Shared<RawConn>], n: u64, window: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<JoinHandle<io::Result<()>>> = conns
        .iter()
        .map(|conn| {
            let conn = Arc::clone(conn);
            tokio::spawn(async move { conn.lock().await.run(n, window).await })
        })
        .collect();
    for handle in handles {
        handle
            .await
            .expect("a raw client task panicked")
            .expect("raw round trips");
    }
    start.elapsed()
}

// --- ours ----------------------------------------------------------------------------------

/// `tasks` tasks share `conn`, each making `per_task` requests one after another.
async fn ours_shared(conns: &[Conn], tasks_per_conn: usize, per_task: u64) -> Duration {
    let start = Instant::now();
    let mut handles = Vec::with_capacity(conns.len() * tasks_per_conn);
    for conn in conns {
        for _ in 0..tasks_per_conn {
            let conn = conn.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    black_box(conn.request(VAL).await.expect("a response"));
                }
            }));
        }
    }
    for handle in handles {
        handle.await.expect("a client task panicked");
    }
    start.elapsed()
}

/// One task per connection keeping `window` requests in flight on it: the raw client's shape,
/// through our `Conn` (its callers' futures share one task instead of one task each): `window`
/// sequential loops joined in the task, so the harness allocates nothing per request.
async fn ours_window(conns: &[Conn], n: u64, window: usize) -> Duration {
    let start = Instant::now();
    let per_loop = n / window as u64;
    let handles: Vec<_> = conns
        .iter()
        .map(|conn| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let loops = (0..window).map(|_| async {
                    for _ in 0..per_loop {
                        black_box(conn.request(VAL).await.expect("a response"));
                    }
                });
                futures::future::join_all(loops).await;
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a client task panicked");
    }
    start.elapsed()
}

/// Mode (d): 64 tasks, each keeping a few requests in flight, each request through `get()`.
/// A task's requests in flight are that many sequential loops joined in the task (no
/// allocation per request in the harness, unlike a `buffer_unordered` stream).
async fn ours_pool(pool: &pool::Pool<JsonManager>, per_task: u64) -> Duration {
    let start = Instant::now();
    let per_loop = per_task / PER_TASK_IN_FLIGHT as u64;
    let handles: Vec<_> = (0..POOL_TASKS)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let one_loop = || async {
                    for _ in 0..per_loop {
                        let conn = {
                            let guard = pool.get().await.expect("a pooled connection");
                            Conn::clone(&guard)
                        };
                        black_box(conn.request(VAL).await.expect("a response"));
                    }
                };
                let loops: [_; PER_TASK_IN_FLIGHT] = std::array::from_fn(|_| one_loop());
                futures::future::join_all(loops).await;
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a pool client task panicked");
    }
    start.elapsed()
}

/// A reference point of the interleaved pass, `floor`: the bare connections lent by count
/// under one `Mutex`, fewest first, with none of a pool's duties (no size, no health, no
/// waiting line).
struct MutexFloor {
    counts: std::sync::Mutex<[usize; CONNS]>,
    conns: Vec<Conn>,
}

/// A connection lent by [`MutexFloor`]; dropping it takes its count back.
struct FloorLease {
    floor: Arc<MutexFloor>,
    at: usize,
}

/// What mode `d_pool_lease` takes a connection from per request: the pool (a lease), or a
/// reference point of the interleaved pass. A handle to it, cloned into each task.
trait Lender: Clone + Send + Sync + 'static {
    /// The lent connection; dropping it ends the loan.
    type Lent: std::ops::Deref<Target = Conn> + Send;
    fn lend(&self) -> impl std::future::Future<Output = Self::Lent> + Send;
}

impl Lender for pool::Pool<JsonManager> {
    type Lent = pool::Lease<JsonManager>;

    async fn lend(&self) -> Self::Lent {
        self.lease().await.expect("a lease")
    }
}

impl Lender for Arc<MutexFloor> {
    type Lent = FloorLease;

    async fn lend(&self) -> FloorLease {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let at = (0..CONNS).min_by_key(|&at| counts[at]).unwrap_or(0);
        counts[at] += 1;
        FloorLease {
            floor: Arc::clone(self),
            at,
        }
    }
}

impl std::ops::Deref for FloorLease {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.floor.conns[self.at]
    }
}

impl Drop for FloorLease {
    fn drop(&mut self) {
        let mut counts = self.floor.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts[self.at] -= 1;
    }
}

/// The lock-free reference point of the interleaved pass, `ideal`: each bare connection in a
/// lane of its own with an atomic count of its loans; a loan reads every count, takes the
/// fewest with a compare-and-swap (at most [`LEASE_STREAMS`] a lane) and holds the lane's
/// `Arc`, whose count sits on the same cache line as the loans'. No lock, no pool `Arc`, none
/// of a pool's duties: the least a lease per request with fewest-first placement costs.
struct Lanes {
    lanes: Vec<Arc<Lane>>,
}

struct Lane {
    loans: std::sync::atomic::AtomicUsize,
    conn: Conn,
    /// Keeps the next lane's counts off this lane's cache line.
    _pad: [u64; 6],
}

/// A connection lent by [`Lanes`]; dropping it takes its loan back.
struct LaneLoan(Arc<Lane>);

impl Lender for Arc<Lanes> {
    type Lent = LaneLoan;

    async fn lend(&self) -> LaneLoan {
        use std::sync::atomic::Ordering::{AcqRel, Relaxed};
        // [`LEASE_TASKS`] loans at most fill the lanes' room exactly, so a lane always has
        // room; a lost race just looks again.
        loop {
            let fewest = self
                .lanes
                .iter()
                .map(|lane| (lane.loans.load(Relaxed), lane))
                .filter(|(loans, _)| *loans < LEASE_STREAMS)
                .min_by_key(|(loans, _)| *loans);
            if let Some((loans, lane)) = fewest
                && lane
                    .loans
                    .compare_exchange(loans, loans + 1, AcqRel, Relaxed)
                    .is_ok()
            {
                return LaneLoan(Arc::clone(lane));
            }
            std::hint::spin_loop();
        }
    }
}

impl std::ops::Deref for LaneLoan {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.0.conn
    }
}

impl Drop for LaneLoan {
    fn drop(&mut self) {
        self.0
            .loans
            .fetch_sub(1, std::sync::atomic::Ordering::Release);
    }
}

/// Mode `d_pool_lease`: [`LEASE_TASKS`] tasks, each making `per_task` requests one after
/// another, each on a loan of its own from `lender` (a lease, for the pool), held until its
/// response arrives.
async fn lender_round<L: Lender>(lender: &L, per_task: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..LEASE_TASKS)
        .map(|_| {
            let lender = lender.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let conn = lender.lend().await;
                    black_box(conn.request(VAL).await.expect("a response"));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a lease client task panicked");
    }
    start.elapsed()
}

// --- the setup -----------------------------------------------------------------------------

struct Setup {
    server: RunningServer,
    raw_server: JoinHandle<()>,
    ours: Vec<Conn>,
    raw: Vec<Shared<RawConn>>,
    /// The raw client connected to our server (for `BENCH_SPLIT`).
    raw_to_ours: Vec<Shared<RawConn>>,
    /// Our client connected to the raw server (for `BENCH_SPLIT`).
    ours_to_raw: Vec<Conn>,
    pool: pool::Pool<JsonManager>,
    /// The pool of mode `d_pool_lease`.
    leasing: pool::Pool<JsonManager>,
}

impl Setup {
    async fn start() -> io::Result<Self> {
        let server = Server::bind("127.0.0.1:0", ServerConfig::default())
            .await?
            .spawn();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let raw_addr = listener.local_addr()?;
        let raw_server = tokio::spawn(raw_accept(listener));
        let options = ConnectOptions::new(server.local_addr().to_string());
        let mut ours = Vec::with_capacity(CONNS);
        let mut raw = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            ours.push(Conn::connect(&options).await.map_err(io::Error::other)?);
            raw.push(Arc::new(tokio::sync::Mutex::new(
                RawConn::connect(raw_addr).await?,
            )));
        }
        let raw_to_ours = vec![Arc::new(tokio::sync::Mutex::new(
            RawConn::connect(server.local_addr()).await?,
        ))];
        let ours_to_raw = vec![
            Conn::connect(&ConnectOptions::new(raw_addr.to_string()))
                .await
                .map_err(io::Error::other)?,
        ];
        let pool = pool::Pool::builder(JsonManager::new(options.clone()))
            .max_size(CONNS)
            .idle_order(pool::IdleOrder::Fifo)
            .build()
            .map_err(io::Error::other)?;
        let leasing = pool::Pool::builder(JsonManager::new(options))
            .max_size(CONNS)
            .max_streams(LEASE_STREAMS)
            .build()
            .map_err(io::Error::other)?;
        Ok(Setup {
            server,
            raw_server,
            ours,
            raw,
            raw_to_ours,
            ours_to_raw,
            pool,
            leasing,
        })
    }

    async fn stop(self) {
        self.pool.close().await;
        self.leasing.close().await;
        for conn in self.ours.iter().chain(&self.ours_to_raw) {
            conn.close().await;
        }
        drop(self.raw);
        drop(self.raw_to_ours);
        self.raw_server.abort();
        if let Err(error) = self.server.shutdown().await {
            eprintln!("server shutdown: {error}");
        }
    }
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Benchmarks one side of a mode, recording its samples for the summary.
fn bench_side<F, Fut>(group: &mut Group<'_>, rt: &Runtime, mode: &str, side: &str, run: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    group.bench_function(side, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let measured = run(iters);
            async move {
                let elapsed = measured.await;
                support::record(mode, side, iters, elapsed);
                elapsed
            }
        });
    });
}

fn group_of<'a>(c: &'a mut Criterion, mode: &str, per_iter: u64) -> Group<'a> {
    let mut group = c.benchmark_group(format!("transport/{mode}"));
    group.throughput(Throughput::Elements(per_iter));
    group
}

fn modes(c: &mut Criterion, rt: &Runtime, setup: &Setup) {
    let mode = "a_sequential";
    let mut group = group_of(c, mode, SEQ_BATCH);
    bench_side(&mut group, rt, mode, "raw", |iters| {
        raw_round(&setup.raw[..1], iters * SEQ_BATCH, 1)
    });
    bench_side(&mut group, rt, mode, "ours", |iters| {
        ours_shared(&setup.ours[..1], 1, iters * SEQ_BATCH)
    });
    if std::env::var_os("BENCH_SPLIT").is_some() {
        bench_side(&mut group, rt, mode, "raw_client_ours_server", |iters| {
            raw_round(&setup.raw_to_ours, iters * SEQ_BATCH, 1)
        });
        bench_side(&mut group, rt, mode, "ours_client_raw_server", |iters| {
            ours_shared(&setup.ours_to_raw, 1, iters * SEQ_BATCH)
        });
    }
    group.finish();

    let mode = "b_pipelined_1conn";
    let mut group = group_of(c, mode, PIPE_BATCH);
    bench_side(&mut group, rt, mode, "raw", |iters| {
        raw_round(&setup.raw[..1], iters * PIPE_BATCH, WINDOW)
    });
    bench_side(&mut group, rt, mode, "ours", |iters| {
        ours_shared(&setup.ours[..1], WINDOW, iters * PIPE_BATCH / WINDOW as u64)
    });
    bench_side(&mut group, rt, mode, "ours_window", |iters| {
        ours_window(&setup.ours[..1], iters * PIPE_BATCH, WINDOW)
    });
    if std::env::var_os("BENCH_SPLIT").is_some() {
        bench_side(&mut group, rt, mode, "raw_client_ours_server", |iters| {
            raw_round(&setup.raw_to_ours, iters * PIPE_BATCH, WINDOW)
        });
        bench_side(&mut group, rt, mode, "ours_client_raw_server", |iters| {
            ours_shared(
                &setup.ours_to_raw,
                WINDOW,
                iters * PIPE_BATCH / WINDOW as u64,
            )
        });
    }
    group.finish();

    let mode = "c_pipelined_4conn";
    let mut group = group_of(c, mode, CONNS as u64 * PIPE_BATCH);
    bench_side(&mut group, rt, mode, "raw", |iters| {
        raw_round(&setup.raw, iters * PIPE_BATCH, WINDOW)
    });
    bench_side(&mut group, rt, mode, "ours", |iters| {
        ours_shared(&setup.ours, WINDOW, iters * PIPE_BATCH / WINDOW as u64)
    });
    bench_side(&mut group, rt, mode, "ours_window", |iters| {
        ours_window(&setup.ours, iters * PIPE_BATCH, WINDOW)
    });
    group.finish();

    let mode = "d_pool_get";
    let mut group = group_of(c, mode, CONNS as u64 * PIPE_BATCH);
    bench_side(&mut group, rt, mode, "raw", |iters| {
        raw_round(&setup.raw, iters * PIPE_BATCH, WINDOW)
    });
    bench_side(&mut group, rt, mode, "ours", |iters| {
        ours_pool(
            &setup.pool,
            iters * CONNS as u64 * PIPE_BATCH / POOL_TASKS as u64,
        )
    });
    group.finish();

    let mode = "d_pool_lease";
    let mut group = group_of(c, mode, CONNS as u64 * PIPE_BATCH);
    bench_side(&mut group, rt, mode, "raw", |iters| {
        raw_round(&setup.raw, iters * PIPE_BATCH, WINDOW)
    });
    bench_side(&mut group, rt, mode, "bare", |iters| {
        ours_shared(&setup.ours, WINDOW, iters * PIPE_BATCH / WINDOW as u64)
    });
    bench_side(&mut group, rt, mode, "ours", |iters| {
        lender_round(
            &setup.leasing,
            iters * CONNS as u64 * PIPE_BATCH / LEASE_TASKS as u64,
        )
    });
    group.finish();
}

/// Prints messages/s of both sides of every measured mode and the ratio.
fn print_summary() {
    println!();
    println!("## transport: round trips/s and ratio to the raw baseline");
    println!();
    println!("| mode | raw | ours | ours/raw | target |");
    println!("|---|---|---|---|---|");
    for (mode, per_iter, target) in MODES {
        for (side, label) in [
            ("ours", ""),
            ("bare", " (ours in c: the same tasks, bare `Conn`s)"),
            ("ours_window", " (ours: one task, window 64)"),
            ("raw_client_ours_server", " (raw client, our server)"),
            ("ours_client_raw_server", " (our client, raw server)"),
        ] {
            let (Some(raw), Some(ours)) = (
                support::throughput(mode, "raw", per_iter),
                support::throughput(mode, side, per_iter),
            ) else {
                continue;
            };
            let ratio = ours / raw;
            let verdict = if ratio >= target { "met" } else { "MISSED" };
            println!(
                "| {mode}{label} | {} | {} | {ratio:.2} | {verdict} >= {target} |",
                support::rate(raw),
                support::rate(ours),
            );
        }
    }
    let mode = "d_pool_lease";
    let per_iter = CONNS as u64 * PIPE_BATCH;
    if let (Some(bare), Some(lease)) = (
        support::throughput(mode, "bare", per_iter),
        support::throughput(mode, "ours", per_iter),
    ) {
        let ratio = lease / bare;
        let verdict = if ratio >= LEASE_TARGET {
            "met"
        } else {
            "MISSED"
        };
        println!();
        println!(
            "{mode}: lease per request {} vs bare connections {}: {ratio:.2} ({verdict} >= {LEASE_TARGET})",
            support::rate(lease),
            support::rate(bare),
        );
    }
    println!();
}

/// Rounds of the interleaved pass, and requests per task per round.
const ROUNDS: usize = 15;
const ROUND_PER_TASK: u64 = 512;

/// Mode `d_pool_lease`, `bare` against `ours` and against the two reference points (the
/// [`MutexFloor`] and the lock-free [`Lanes`]), in rounds that rotate their order (each side
/// first in a quarter of the rounds); prints the median and range of the per-round
/// throughput ratios to `bare`.
async fn interleaved_pass(setup: &Setup) {
    let rounds = if support::quick() { 5 } else { ROUNDS };
    let requests = (LEASE_TASKS as u64 * ROUND_PER_TASK) as f64;
    let floor = Arc::new(MutexFloor {
        counts: std::sync::Mutex::new([0; CONNS]),
        conns: setup.ours.clone(),
    });
    let lanes = Arc::new(Lanes {
        lanes: setup
            .ours
            .iter()
            .map(|conn| {
                Arc::new(Lane {
                    loans: Default::default(),
                    conn: conn.clone(),
                    _pad: [0; 6],
                })
            })
            .collect(),
    });
    const SIDES: usize = 4;
    let mut rates: [Vec<f64>; SIDES] = Default::default();
    let mut ratios: [Vec<f64>; SIDES] = Default::default();
    for round in 0..rounds {
        let mut times = [Duration::ZERO; SIDES];
        for turn in 0..SIDES {
            let side = (round + turn) % SIDES;
            times[side] = match side {
                0 => ours_shared(&setup.ours, WINDOW, ROUND_PER_TASK).await,
                1 => lender_round(&setup.leasing, ROUND_PER_TASK).await,
                2 => lender_round(&floor, ROUND_PER_TASK).await,
                _ => lender_round(&lanes, ROUND_PER_TASK).await,
            };
        }
        for side in 0..SIDES {
            rates[side].push(requests / times[side].as_secs_f64());
            ratios[side].push(times[0].as_secs_f64() / times[side].as_secs_f64());
        }
    }
    let [bare, lease, floor, ideal] = rates.map(|mut rate| support::spread(&mut rate).0);
    let [_, lease_ratio, floor_ratio, ideal_ratio] =
        ratios.map(|mut ratio| support::spread(&mut ratio));
    let (median, min, max) = lease_ratio;
    let verdict = if median >= LEASE_TARGET {
        "met"
    } else {
        "MISSED"
    };
    let spread = |(median, min, max): (f64, f64, f64)| format!("{median:.2} ({min:.2}-{max:.2})");
    println!(
        "## transport: d_pool_lease, {rounds} interleaved rounds of {} requests",
        requests as u64
    );
    println!();
    println!(
        "| bare (median) | lease per request (median) | floor (median) | lease/bare median | min | max | floor/bare median (min-max) | target | ideal (median) | ideal/bare median (min-max) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {median:.2} | {min:.2} | {max:.2} | {} | {verdict} >= {LEASE_TARGET} | {} | {} |",
        support::rate(bare),
        support::rate(lease),
        support::rate(floor),
        spread(floor_ratio),
        support::rate(ideal),
        spread(ideal_ratio),
    );
    println!();
}

fn main() {
    let rt = support::runtime();
    let setup = rt
        .block_on(Setup::start())
        .expect("servers and connections start");
    let mut c = support::criterion();
    modes(&mut c, &rt, &setup);
    c.final_summary();
    if !support::listing_or_testing() {
        print_summary();
        rt.block_on(interleaved_pass(&setup));
    }
    rt.block_on(setup.stop());
}
