//! One simulated run: an echo server host, client hosts each with a pool and a workload of
//! tasks, a script of faults applied at set simulated times, and the invariants checked after
//! every step and at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool::{Lease, Pool};
use transport_json::server::{Server, ServerConfig};
use transport_json::{ConnectOptions, Message};

use crate::ledger::{self, Entry, Ledger, Outcome, SharedLedger};
use crate::net::{Counting, PORT, Probe, SERVER, Served, SimListener, SimManager};
use crate::scenario::{Scenario, apply, chaos_script, mix};
use crate::seeds::env_number;

/// Simulated time after which a run that has not finished counts as hung.
const SIM_LIMIT: Duration = Duration::from_secs(120);
/// A request not ended after this long (simulated) is recorded as hung.
const HANG_GUARD: Duration = Duration::from_secs(30);
/// The pool's wait and connect timeouts.
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The simulated time of one step: 5 ms by default, `SIM_TICK=n` for n ms.
///
/// turmoil delivers segments at step boundaries and runs each host until the next one, so
/// the tick is the grain of the network's timing (timers inside a host keep their own). The
/// cost of a run is mostly per step (each host's runtime is entered once a step): 5 ms runs
/// the default seeds about 3 times faster than turmoil's 1 ms, and 1 ms stays one variable
/// away for a finer search.
pub fn tick() -> Duration {
    match env_number("SIM_TICK") {
        Some(0) => panic!("SIM_TICK=0: a step must last at least 1 ms"),
        Some(ms) => Duration::from_millis(ms),
        None => Duration::from_millis(5),
    }
}

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
        .tick_duration(tick())
        .simulation_duration(SIM_LIMIT)
        .max_message_latency(scenario.max_latency)
        .tcp_capacity(scenario.tcp_capacity);
    if scenario.random_order {
        builder.enable_random_order();
    }
    let mut sim = builder.build();
    let debug = std::env::var_os("SIM_DEBUG").is_some();
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
            if debug {
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

/// The pool's bounds, read after a step: no more sockets open than `max_size`; no more
/// connections holding a slot, open or opening (`size + connecting`), than `max_size`; no
/// more leases than `max_streams` per connection, counting the connections the pool let go
/// of while leased (`discarded`: broken ones draining their last leases, which hold no slot).
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
        let slots = status.size + status.connecting;
        let room = (status.size + status.discarded) * scenario.max_streams;
        if slots > scenario.max_size || status.leases > room {
            return Err(format!(
                "client{host} at {at:?}: {open} sockets open; {status:?}"
            ));
        }
    }
    Ok(())
}
