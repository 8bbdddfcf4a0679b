//! Deterministic network simulation (turmoil): the echo server and pooled clients on simulated
//! hosts, under the faults a datacenter has. Each scenario runs over many seeds and checks,
//! after every run, that every request ended exactly once (a right answer or a typed error,
//! none lost, none twice, none run twice by the server), that the pool never held more than
//! `max_size` connections, `max_streams` leases per connection or `max_size` connects in
//! flight (no herd during an outage), and that after each repair a request is served again
//! within a bound. After every simulation step the pool's status is checked too.
//!
//! CI runs seeds 0..8 of each scenario. `SIM_SEEDS=64 cargo test --test sim` runs more;
//! a failing seed prints itself with the command that reruns it alone (`SIM_SEED=n`).

// The crate root of a test looks for modules beside it, so the helpers' paths are spelled out.
#[path = "sim/ledger.rs"]
mod ledger;
#[path = "sim/net.rs"]
mod net;
#[path = "sim/run.rs"]
mod run;

use std::time::Duration;

use run::{Fault, Scenario, check};

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
    scenario.script = vec![
        (secs(4), Fault::Hold),
        (secs(5), Fault::Crash),
        (secs(6), Fault::Restart),
        (secs(8), Fault::Release),
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
