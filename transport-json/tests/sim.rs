//! Deterministic network simulation (turmoil): the echo server and pooled clients on simulated
//! hosts, under the faults a datacenter has. Each scenario runs over many seeds and checks,
//! after every run, that every request ended exactly once (a right answer or a typed error,
//! none lost, none twice, none run twice by the server, none hung past 30 s), that after each
//! repair a request started after it is answered within 5 s, that no client ever had more
//! than `max_size` connects in flight (no herd, outages included) nor more than `max_size`
//! sockets open (counted by a wrapper around each stream, from connect to drop), and that
//! each pool is empty of leases, waiters and connects after its close. After every
//! simulation step each pool's status is checked too: `size + connecting <= max_size` (the
//! connections holding a slot) and `leases <= (size + discarded) * max_streams`.
//!
//! CI runs seeds 0..8 of each scenario (about 30 s of CPU in a debug build, so 15-20 s on 2
//! cores). `SIM_SEEDS=64 cargo test -p transport-json --test sim` runs more; a failing seed
//! prints itself with the command that reruns it alone (`SIM_SEED=n`); `SIM_TICK=1` steps
//! the network every 1 ms instead of 5 (finer timing, 3 times slower); `SIM_DEBUG=1` prints
//! each fault as it is applied. A passing scenario prints one summary line (outcomes,
//! slowest recovery, connects in flight) under `--nocapture`.
//!
//! # Decisions
//! - The simulation is transport-json's test, and turmoil its dev-dependency: the root
//!   package's dev-dependencies are built by `cargo run --example demo` (tests/first_run.rs
//!   holds that set), and this crate already depends on `pool`.
//! - Nothing in the crates is made for the simulation: the client dials turmoil's
//!   `TcpStream` in a test-only `pool::Manager` (`sim/net.rs`) and makes a `Conn` of it with
//!   `Conn::from_stream`; the server serves turmoil's listener through `server::Listener`.
//!   Check, `is_broken` and close are `JsonManager`'s own, so the pool sees the real manager.
//! - turmoil's TCP never retransmits: a partition drops segments and the connection that lost
//!   one never delivers again, so a partition leaves half-open connections behind, as a
//!   real one does to a client without keepalive; `hold` is a peer that is silent but not
//!   gone; a crash closes the server's sockets (the clients see the FIN), and a crash behind
//!   a held link is a crash the client sees late: its FINs come when the link lets them
//!   through, and the requests held with them reach the restarted host, which knows none of
//!   them (released only after the restart, every connection had timed out first and the
//!   outcomes were exactly those of a plain hold). A refused SYN fails a connect at once, so
//!   during a partition the pool's retries run back to back with their backoff.
//! - A seed fixes turmoil's network (latencies, losses, which host runs first) and the
//!   workload's pauses. It does not fix the pool's jitter (connect backoff and lifetime draw
//!   from `RandomState`), so a rerun replays the same faults on the same schedule but may
//!   interleave a little differently: the invariants hold for every interleaving, so a
//!   failure stays a failure, but it may take a few reruns of its seed.
//! - The network steps every 5 ms, not turmoil's 1 ms: a run's cost is mostly per step, and
//!   the faults, timeouts (0.3-2 s) and latencies (up to 50 ms, 3 s in a spike) are far
//!   coarser. The default seeds took 72 s of CPU at 1 ms and take 25-30 s at 5 ms, with
//!   similar outcomes; all pass at both, and the mutations below fail at 5 ms.
//! - The last scenario draws its faults from the seed, one after another, with small socket
//!   buffers, 3 kB requests, hosts in random order, connections retiring every 3 s and pinged
//!   after 300 ms idle, and half the tasks keeping their leases through their pauses. It
//!   found that `Status::size` read 4-5 with `max_size` 3 while 3 sockets were open: a broken
//!   connection freed its slot at once but was counted until its last lease ended. The pool
//!   now counts those apart (`Status::discarded`); before that change the status bound failed
//!   14 of seeds 0..16 here.
//! - Found by mutation, not by luck: with `close_unresponsive(false)` the partition, one-way
//!   loss and flaky-link scenarios fail (no service for 50-100 s after the repair); with a
//!   `Conn` that forgets its waiters on close every scenario with a fault fails; with a pool
//!   that reserves one connect past `max_size` the crash, reconnect-herd and chaos scenarios
//!   fail at their first steps (sockets open, connects in flight).

// The crate root of a test looks for modules beside it, so the helpers' paths are spelled out.
#[path = "sim/ledger.rs"]
mod ledger;
#[path = "sim/net.rs"]
mod net;
#[path = "sim/run.rs"]
mod run;
#[path = "sim/scenario.rs"]
mod scenario;
#[path = "sim/seeds.rs"]
mod seeds;

use std::time::Duration;

use scenario::{Fault, Scenario};
use seeds::check;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn partition_mid_traffic_then_repair() {
    let mut scenario = Scenario::base("partition_mid_traffic_then_repair");
    scenario.script = vec![(secs(4), Fault::Partition), (secs(8), Fault::Repair)];
    check(&scenario);
}

#[test]
fn server_crash_and_restart() {
    let mut scenario = Scenario::base("server_crash_and_restart");
    scenario.script = vec![(secs(4), Fault::Crash), (secs(7), Fault::Restart)];
    check(&scenario);
}

#[test]
fn latency_spike() {
    let mut scenario = Scenario::base("latency_spike");
    scenario.script = vec![(secs(4), Fault::Slow(secs(3))), (secs(8), Fault::Fast)];
    check(&scenario);
}

#[test]
fn half_open_link_holds_messages() {
    let mut scenario = Scenario::base("half_open_link_holds_messages");
    scenario.script = vec![(secs(4), Fault::Hold), (secs(8), Fault::Release)];
    check(&scenario);
}

#[test]
fn slow_link_answers_everything() {
    let mut scenario = Scenario::base("slow_link_answers_everything");
    scenario.max_latency = Duration::from_millis(400);
    scenario.request_timeout = secs(2);
    scenario.all_answered = true;
    check(&scenario);
}

#[test]
fn many_clients_reconnect_at_once() {
    let mut scenario = Scenario::base("many_clients_reconnect_at_once");
    scenario.clients = 6;
    scenario.tasks = 8;
    // 8 tasks want 4 connections of 2 streams, one more than `max_size`: each pool is full
    // when the server comes back, so a herd past `max_size` would show.
    scenario.max_streams = 2;
    scenario.requests = 40;
    scenario.script = vec![(secs(3), Fault::Crash), (secs(5), Fault::Restart)];
    check(&scenario);
}

#[test]
fn one_way_loss_of_answers_then_of_requests() {
    let mut scenario = Scenario::base("one_way_loss_of_answers_then_of_requests");
    scenario.requests = 90;
    scenario.script = vec![
        (secs(4), Fault::DropAnswers),
        (secs(7), Fault::RepairOneway),
        (secs(10), Fault::DropRequests),
        (secs(13), Fault::RepairOneway),
    ];
    check(&scenario);
}

#[test]
fn crash_behind_a_held_link() {
    let mut scenario = Scenario::base("crash_behind_a_held_link");
    // The crash's FINs are held with the requests; the link lets them through 500 ms later,
    // before the requests' 1 s timeout, while the host is still down, and the requests reach
    // the host only once it has restarted (a new incarnation that knows none of them).
    let ms = Duration::from_millis;
    scenario.script = vec![
        (ms(4000), Fault::Hold),
        (ms(4500), Fault::Crash),
        (ms(5000), Fault::Release),
        (ms(7000), Fault::Restart),
    ];
    check(&scenario);
}

#[test]
fn flaky_link_with_retiring_and_pinged_connections() {
    let mut scenario = Scenario::base("flaky_link_with_retiring_and_pinged_connections");
    scenario.max_lifetime = Some(secs(3));
    scenario.check_idle = Duration::from_millis(300);
    scenario.script = vec![(secs(2), Fault::Flaky(0.01)), (secs(10), Fault::Flaky(0.0))];
    check(&scenario);
}

#[test]
fn leases_kept_between_requests_through_a_crash() {
    let mut scenario = Scenario::base("leases_kept_between_requests_through_a_crash");
    scenario.hold_lease = true;
    scenario.script = vec![(secs(4), Fault::Crash), (secs(7), Fault::Restart)];
    check(&scenario);
}

/// Faults drawn from the seed, small socket buffers, 3 kB requests, hosts in random order,
/// connections retiring every 3 s and pinged after 300 ms idle, half the tasks keeping their
/// leases through their pauses.
fn chaos(name: &'static str) -> Scenario {
    let mut scenario = Scenario::base(name);
    scenario.chaos = true;
    scenario.requests = 100;
    // turmoil panics when more SYNs wait than this (a kernel would drop them): 16 leaves
    // room for the SYNs a held link releases at once.
    scenario.tcp_capacity = 16;
    scenario.val_len = 3000;
    scenario.random_order = true;
    scenario.max_lifetime = Some(secs(3));
    scenario.check_idle = Duration::from_millis(300);
    scenario
}

#[test]
fn chaos_drawn_from_the_seed_with_backpressure() {
    check(&chaos("chaos_drawn_from_the_seed_with_backpressure"));
}
