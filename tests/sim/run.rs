//! One simulated run: an echo server host, client hosts each with a pool and a workload of
//! tasks, a script of faults applied at set simulated times, and the invariants checked after
//! every step and at the end. Plus the loop over seeds that reports a failing seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pool::{Lease, Pool};
use transport_json::server::{Server, ServerConfig};
use transport_json::{ConnectOptions, Message};

use crate::ledger::{self, Entry, Ledger, Outcome, SharedLedger};
use crate::net::{Counting, PORT, Probe, SERVER, Served, SimListener, SimManager};

/// A fault, or its repair, applied between two steps. Each fault starts an outage and its
/// repair ends it.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Every client is cut from the server: segments in flight and later ones are lost.
    Partition,
    /// The partition ends (the TCP connections that lost segments stay broken).
    Repair,
    /// The server host crashes: its tasks are gone, its sockets closed.
    Crash,
    /// The server host starts again.
    Restart,
    /// Every segment between the clients and the server is held: peers that look alive but
    /// say nothing (a half-open link).
    Hold,
    /// The held segments are delivered, late, and the link flows again.
    Release,
    /// Latency spike: segments take up to this long (exponentially distributed).
    Slow(Duration),
    /// Latency back to the base.
    Fast,
    /// Only the server's segments to the clients are lost: requests arrive, answers do not.
    DropAnswers,
    /// Only the clients' segments to the server are lost.
    DropRequests,
    /// Both directions flow again (without delivering what was lost).
    RepairOneway,
    /// Each segment may randomly break the link (turmoil's fail rate), until repaired at
    /// random again; 0.0 turns it off.
    Flaky(f64),
}

impl Fault {
    /// Whether the fault starts an outage (false: it ends one).
    fn starts_outage(self) -> bool {
        match self {
            Fault::Flaky(rate) => rate > 0.0,
            _ => matches!(
                self,
                Fault::Partition
                    | Fault::Crash
                    | Fault::Hold
                    | Fault::Slow(_)
                    | Fault::DropAnswers
                    | Fault::DropRequests
            ),
        }
    }
}

/// What one scenario runs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The test's name, for the rerun hint.
    pub name: &'static str,
    /// Client hosts, each with its own pool.
    pub clients: usize,
    /// Tasks per client, each sending `requests` requests one after another.
    pub tasks: usize,
    /// Requests per task.
    pub requests: usize,
    /// The pause between two requests of a task, drawn from this range (ms) by the seed.
    pub gap_ms: (u64, u64),
    /// Each pool's `max_size`.
    pub max_size: usize,
    /// Each pool's `max_streams`.
    pub max_streams: usize,
    /// Each connection's request timeout.
    pub request_timeout: Duration,
    /// The base latency of every link, at most.
    pub max_latency: Duration,
    /// Faults, at simulated times.
    pub script: Vec<(Duration, Fault)>,
    /// After each repair, a request started after it must be answered within this long.
    pub recover_within: Duration,
    /// Every request must be answered (a healthy network, however slow).
    pub all_answered: bool,
    /// Each pool's `max_lifetime`: short, so connections retire under the faults.
    pub max_lifetime: Option<Duration>,
    /// The manager's `check_idle`: short, so checkouts send pings under the faults.
    pub check_idle: Duration,
    /// Tasks keep each lease through the pause after its request.
    pub hold_lease: bool,
    /// The script is drawn from the seed ([`chaos_script`]), and every other task keeps its
    /// leases through its pauses.
    pub chaos: bool,
    /// Segments a simulated socket buffers before a write waits (turmoil's default is 64).
    pub tcp_capacity: usize,
    /// Bytes of padding in each request's value.
    pub val_len: usize,
    /// turmoil runs the hosts in a random order each step (drawn from the seed).
    pub random_order: bool,
    /// Also hold the pool's own count to the bound: `Status::size <= max_size` after every
    /// step. The sockets are always held to it.
    pub status_size_bound: bool,
}

impl Scenario {
    /// The defaults every scenario starts from: one client of 16 tasks sharing a pool of
    /// 3 connections of 4 streams, 60 requests each, about 15 s of traffic.
    pub fn base(name: &'static str) -> Self {
        Scenario {
            name,
            clients: 1,
            tasks: 16,
            requests: 60,
            gap_ms: (50, 250),
            max_size: 3,
            max_streams: 4,
            request_timeout: Duration::from_secs(1),
            max_latency: Duration::from_millis(50),
            script: Vec::new(),
            recover_within: Duration::from_secs(5),
            all_answered: false,
            max_lifetime: None,
            check_idle: transport_json::JsonManager::DEFAULT_CHECK_IDLE,
            hold_lease: false,
            chaos: false,
            tcp_capacity: 64,
            val_len: 0,
            random_order: false,
            status_size_bound: true,
        }
    }
}

/// Simulated time after which a run that has not finished counts as hung.
const SIM_LIMIT: Duration = Duration::from_secs(120);
/// A request not ended after this long (simulated) is recorded as hung.
const HANG_GUARD: Duration = Duration::from_secs(30);
/// The pool's wait and connect timeouts.
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a passing run measured.
#[derive(Debug, Default)]
pub struct Summary {
    /// Requests by outcome.
    pub tally: BTreeMap<String, usize>,
    /// For each repair, how long until a request started after it was answered.
    pub recovery: Vec<Duration>,
    /// The most connects in flight on one client, over the run and during outages.
    pub max_connects: usize,
    /// The most connects in flight during outages.
    pub max_connects_outage: usize,
    /// Connects started during outages, over all clients.
    pub outage_connects: u64,
    /// Simulation steps.
    pub steps: u64,
}

/// The simulated time now, inside a host.
fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// A 64-bit mix (splitmix64), for the workload's pauses.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn client_name(host: usize) -> String {
    format!("client{host}")
}

fn uid(host: usize, task: usize, i: usize) -> String {
    format!("c{host}-t{task}-r{i}")
}

/// One request: a lease, a send, the outcome, and the lease (none if it failed).
async fn one(
    pool: &Pool<SimManager>,
    uid: &str,
    val: &str,
) -> (Outcome, Option<Lease<SimManager>>) {
    let lease = match pool.lease().await {
        Ok(lease) => lease,
        Err(err) => return (ledger::of_lease_error(&err), None),
    };
    let message = Message {
        uid: uid.to_owned(),
        val: val.to_owned(),
    };
    let outcome = match lease.send(message).await {
        Ok(resp) => ledger::of_response(uid, val, &resp),
        Err(err) => ledger::of_request_error(&err),
    };
    (outcome, Some(lease))
}

/// A client task: its requests one after another, each recorded in the ledger; with
/// `hold_lease`, each lease is kept through the pause after its request.
async fn task(
    pool: Pool<SimManager>,
    ledger: SharedLedger,
    gaps: Vec<Duration>,
    host: usize,
    t: usize,
    hold_lease: bool,
    val_len: usize,
) {
    for (i, gap) in gaps.into_iter().enumerate() {
        let uid = uid(host, t, i);
        let val = format!("v{i}{}", "x".repeat(val_len));
        let start = now();
        let (outcome, lease) = tokio::time::timeout(HANG_GUARD, one(&pool, &uid, &val))
            .await
            .unwrap_or((Outcome::Hung, None));
        let entry = Entry {
            start,
            end: now(),
            outcome,
        };
        ledger.lock().expect("ledger lock").record(uid, entry);
        // A caller that keeps its lease between requests keeps it on a connection that may
        // break meanwhile.
        let _kept = lease.filter(|_| hold_lease);
        tokio::time::sleep(gap).await;
    }
}

/// Runs `scenario` with `seed`; `Err` says which invariant broke.
pub fn run(scenario: &Scenario, seed: u64) -> Result<Summary, String> {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .simulation_duration(SIM_LIMIT)
        .max_message_latency(scenario.max_latency)
        .tcp_capacity(scenario.tcp_capacity);
    if scenario.random_order {
        builder.enable_random_order();
    }
    let mut sim = builder.build();
    let script = if scenario.chaos {
        chaos_script(seed)
    } else {
        scenario.script.clone()
    };

    let served: Served = Arc::default();
    let server_served = Arc::clone(&served);
    sim.host(SERVER, move || {
        let served = Arc::clone(&server_served);
        async move {
            let addr = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            Server::new(SimListener(listener), ServerConfig::default())?
                .with_handler(Counting(served))
                .serve(std::future::pending())
                .await?;
            Ok(())
        }
    });

    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::default()));
    let pools: Arc<Mutex<Vec<Pool<SimManager>>>> = Arc::default();
    let mut probes = Vec::new();
    let mut sent = Vec::new();
    let (low, high) = scenario.gap_ms;
    for host in 0..scenario.clients {
        let probe = Arc::new(Probe::default());
        probes.push(Arc::clone(&probe));
        let options = ConnectOptions::new(format!("{SERVER}:{PORT}"))
            .request_timeout(Some(scenario.request_timeout));
        let mut manager = SimManager::new(options, probe);
        manager.json.check_idle = scenario.check_idle;
        let builder = Pool::builder(manager)
            .max_lifetime(scenario.max_lifetime)
            .max_size(scenario.max_size)
            .max_streams(scenario.max_streams)
            .wait_timeout(WAIT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        let plans: Vec<Vec<Duration>> = (0..scenario.tasks)
            .map(|t| {
                (0..scenario.requests)
                    .map(|i| {
                        sent.push(uid(host, t, i));
                        let key = seed ^ ((host as u64) << 40) ^ ((t as u64) << 20) ^ i as u64;
                        Duration::from_millis(low + mix(key) % (high - low + 1))
                    })
                    .collect()
            })
            .collect();
        let (ledger, pools) = (Arc::clone(&ledger), Arc::clone(&pools));
        let (hold_lease, chaos, val_len) = (scenario.hold_lease, scenario.chaos, scenario.val_len);
        sim.client(client_name(host), async move {
            let pool = builder.build()?;
            pools.lock().expect("pools lock").push(pool.clone());
            let mut tasks = tokio::task::JoinSet::new();
            for (t, gaps) in plans.into_iter().enumerate() {
                tasks.spawn(task(
                    pool.clone(),
                    Arc::clone(&ledger),
                    gaps,
                    host,
                    t,
                    hold_lease || (chaos && t % 2 == 0),
                    val_len,
                ));
            }
            while let Some(joined) = tasks.join_next().await {
                joined?;
            }
            tokio::time::timeout(Duration::from_secs(10), pool.close()).await?;
            Ok(())
        });
    }
    let clients: Vec<String> = (0..scenario.clients).map(client_name).collect();

    let mut script = script.iter().peekable();
    let mut heals = Vec::new();
    let mut faults = 0usize;
    let mut steps = 0u64;
    loop {
        while let Some(&&(at, fault)) = script.peek() {
            if sim.elapsed() < at {
                break;
            }
            script.next();
            apply(&mut sim, &clients, fault, scenario.max_latency);
            // Faults may overlap: the network is whole again when the last one is repaired.
            if fault.starts_outage() {
                faults += 1;
            } else {
                faults = faults.saturating_sub(1);
                if faults == 0 {
                    heals.push(sim.elapsed());
                }
            }
            for probe in &probes {
                probe.outage.store(faults > 0, SeqCst);
            }
            if std::env::var("SIM_DEBUG").is_ok() {
                let attempts: Vec<_> = probes.iter().map(|p| p.attempts.load(SeqCst)).collect();
                eprintln!(
                    "{:?} {fault:?} faults={faults} attempts={attempts:?}",
                    sim.elapsed()
                );
            }
        }
        let done = sim
            .step()
            .map_err(|err| format!("the simulation failed at {:?}: {err}", sim.elapsed()))?;
        steps += 1;
        sample(
            &pools.lock().expect("pools lock"),
            &probes,
            scenario,
            sim.elapsed(),
        )?;
        if done {
            break;
        }
    }
    // Every client closed its pool after its tasks: nothing may be left held or waiting.
    for (host, pool) in pools.lock().expect("pools lock").iter().enumerate() {
        let status = pool.status();
        if status.leases + status.in_use + status.waiting + status.connecting != 0 {
            return Err(format!("client{host} left behind after close: {status:?}"));
        }
    }
    if script.peek().is_some() {
        return Err(format!(
            "the workload ended at {:?}, before the script",
            sim.elapsed()
        ));
    }
    drop(sim);

    let ledger = ledger.lock().expect("ledger lock");
    let served = served.lock().expect("served lock");
    let mut problems = ledger.violations(&sent, &served);
    let mut summary = Summary {
        tally: ledger.tally(),
        steps,
        ..Summary::default()
    };
    if scenario.all_answered && summary.tally.len() != 1 {
        let _ = writeln!(
            problems,
            "a healthy link failed requests: {:?}",
            summary.tally
        );
    }
    for heal in heals {
        let first = ledger
            .entries
            .values()
            .filter(|e| e.start >= heal && e.outcome == Outcome::Answered)
            .map(|e| e.end)
            .min();
        match first {
            Some(end) if end - heal <= scenario.recover_within => summary.recovery.push(end - heal),
            Some(end) => {
                let _ = writeln!(problems, "repaired at {heal:?}, first served at {end:?}");
            }
            None => {
                let _ = writeln!(problems, "repaired at {heal:?}, never served again");
            }
        }
    }
    for (host, probe) in probes.iter().enumerate() {
        let max = probe.max_in_flight.load(SeqCst);
        let in_outage = probe.max_in_outage.load(SeqCst);
        if max > scenario.max_size {
            let _ = writeln!(problems, "client{host}: {max} connects in flight at once");
        }
        let open = probe.max_open.load(SeqCst);
        if open > scenario.max_size {
            let _ = writeln!(problems, "client{host}: {open} sockets open at once");
        }
        summary.max_connects = summary.max_connects.max(max);
        summary.max_connects_outage = summary.max_connects_outage.max(in_outage);
        summary.outage_connects += probe.outage_attempts.load(SeqCst);
    }
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(problems)
    }
}

/// A script drawn from `seed`: from 2 s to 16 s, one fault after another, each of a kind,
/// a length (0.3-3 s) and a pause before the next (1-3 s) drawn from the seed, each repaired
/// before the next begins.
pub fn chaos_script(seed: u64) -> Vec<(Duration, Fault)> {
    let mut script = Vec::new();
    let mut draw = {
        let mut n = 0u64;
        move |range: u64| {
            n += 1;
            mix(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ n) % range
        }
    };
    let ms = Duration::from_millis;
    let mut at = ms(2000);
    while at < ms(16_000) {
        let (fault, repair) = match draw(7) {
            0 => (Fault::Partition, Fault::Repair),
            1 => (Fault::Hold, Fault::Release),
            2 => (Fault::Crash, Fault::Restart),
            3 => (Fault::Slow(ms(500 + draw(2500))), Fault::Fast),
            4 => (Fault::DropAnswers, Fault::RepairOneway),
            5 => (Fault::DropRequests, Fault::RepairOneway),
            _ => (
                Fault::Flaky(0.005 + draw(20) as f64 / 1000.0),
                Fault::Flaky(0.0),
            ),
        };
        let lasts = ms(300 + draw(2700));
        script.push((at, fault));
        script.push((at + lasts, repair));
        at += lasts + ms(1000 + draw(2000));
    }
    script
}

/// Applies one fault to the links between the server and every client.
fn apply(sim: &mut turmoil::Sim<'_>, clients: &[String], fault: Fault, base: Duration) {
    match fault {
        Fault::Crash => sim.crash(SERVER),
        Fault::Restart => sim.bounce(SERVER),
        _ => {
            for client in clients {
                let client = client.as_str();
                match fault {
                    Fault::Partition => sim.partition(SERVER, client),
                    Fault::Repair => sim.repair(SERVER, client),
                    Fault::Hold => sim.hold(SERVER, client),
                    Fault::Release => sim.release(SERVER, client),
                    Fault::Slow(max) => sim.set_link_max_message_latency(SERVER, client, max),
                    Fault::Fast => sim.set_link_max_message_latency(SERVER, client, base),
                    Fault::DropAnswers => sim.partition_oneway(SERVER, client),
                    Fault::DropRequests => sim.partition_oneway(client, SERVER),
                    Fault::RepairOneway => {
                        sim.repair_oneway(SERVER, client);
                        sim.repair_oneway(client, SERVER);
                    }
                    Fault::Flaky(rate) => {
                        sim.set_link_fail_rate(SERVER, client, rate);
                        if rate == 0.0 {
                            sim.repair(SERVER, client);
                        }
                    }
                    Fault::Crash | Fault::Restart => unreachable!("handled above"),
                }
            }
        }
    }
}

/// The pool's bounds, read after a step: no more sockets open than `max_size` (and, with
/// `status_size_bound`, no more connections counted in its status), no more leases than
/// `max_streams` per connection.
fn sample(
    pools: &[Pool<SimManager>],
    probes: &[Arc<Probe>],
    scenario: &Scenario,
    at: Duration,
) -> Result<(), String> {
    for (host, pool) in pools.iter().enumerate() {
        let status = pool.status();
        let open = probes[host].open.load(SeqCst);
        if open > scenario.max_size {
            return Err(format!(
                "client{host} at {at:?}: {open} sockets open; {status:?}"
            ));
        }
        if std::env::var("SIM_DEBUG").is_ok() && status.size > scenario.max_size {
            eprintln!("client{host} at {at:?}: {open} sockets open; {status:?}");
        }
        let size_over = scenario.status_size_bound && status.size > scenario.max_size;
        if size_over || status.leases > status.size * scenario.max_streams {
            return Err(format!("client{host} at {at:?}: {status:?}"));
        }
    }
    Ok(())
}

/// The seeds to run: `SIM_SEED=n` runs seed n alone; `SIM_SEEDS=n` runs seeds 0..n; by
/// default seeds 0..8 (CI).
fn seeds() -> Vec<u64> {
    let read = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(seed) = read("SIM_SEED") {
        return vec![seed];
    }
    (0..read("SIM_SEEDS").unwrap_or(8)).collect()
}

/// Runs `scenario` over every seed, prints each failing seed with how to rerun it, prints a
/// summary of the passing ones, and fails if any seed failed.
pub fn check(scenario: &Scenario) {
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut worst_recovery = Duration::ZERO;
    let (mut max_connects, mut max_outage, mut outage_connects, mut steps) = (0, 0, 0, 0);
    let seeds = seeds();
    for &seed in &seeds {
        let result = catch_unwind(AssertUnwindSafe(|| run(scenario, seed)));
        let problem = match result {
            Ok(Ok(summary)) => {
                for (kind, n) in summary.tally {
                    *tally.entry(kind).or_default() += n;
                }
                let worst = summary.recovery.iter().max().copied().unwrap_or_default();
                worst_recovery = worst_recovery.max(worst);
                max_connects = max_connects.max(summary.max_connects);
                max_outage = max_outage.max(summary.max_connects_outage);
                outage_connects += summary.outage_connects;
                steps += summary.steps;
                continue;
            }
            Ok(Err(problem)) => problem,
            Err(panic) => panic_text(&panic),
        };
        eprintln!(
            "sim seed {seed} failed in {}: {problem}\n  rerun: SIM_SEED={seed} cargo test --test sim {} -- --nocapture",
            scenario.name, scenario.name
        );
        failed.push(seed);
    }
    eprintln!(
        "sim {}: {} seeds in {:?} ({steps} steps); outcomes {tally:?}; slowest recovery {worst_recovery:?}; \
         most connects in flight {max_connects} ({max_outage} in an outage, {outage_connects} started in outages)",
        scenario.name,
        seeds.len(),
        started.elapsed(),
    );
    assert!(
        failed.is_empty(),
        "sim {}: seeds {failed:?} failed (see above)",
        scenario.name
    );
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic".to_owned()
    }
}
