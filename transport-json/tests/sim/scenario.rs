//! What a scenario is: its faults, its workload and pool settings, the script drawn from a
//! seed for the chaos scenario, and how a fault is applied to the simulated network.

use std::time::Duration;

use crate::net::SERVER;

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
    pub fn starts_outage(self) -> bool {
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
        }
    }
}

/// A 64-bit mix (splitmix64), for the workload's pauses.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
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
pub fn apply(sim: &mut turmoil::Sim<'_>, clients: &[String], fault: Fault, base: Duration) {
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
