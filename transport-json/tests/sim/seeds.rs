//! The loop over seeds: which seeds run (`SIM_SEED`, `SIM_SEEDS`), each failing seed printed
//! with the command that reruns it, a summary of the passing ones.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::run::run;
use crate::scenario::Scenario;

/// The seeds CI runs: 0..8 of each scenario.
const DEFAULT_SEEDS: u64 = 8;

/// The number in the environment variable `name`, if set; a value that is not a number
/// fails the test rather than quietly running the default.
pub fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(err) => panic!("{name}={value:?} is not a whole number: {err}"),
    }
}

/// The seeds to run: `SIM_SEED=n` runs seed n alone; `SIM_SEEDS=n` runs seeds 0..n; by
/// default seeds 0..8 (CI).
fn seeds() -> Vec<u64> {
    if let Some(seed) = env_number("SIM_SEED") {
        return vec![seed];
    }
    (0..env_number("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

/// The command that reruns `seed` of `scenario` alone, with the same tick.
fn rerun(scenario: &Scenario, seed: u64) -> String {
    let tick = match std::env::var("SIM_TICK") {
        Ok(ms) => format!("SIM_TICK={ms} "),
        Err(_) => String::new(),
    };
    format!(
        "{tick}SIM_SEED={seed} cargo test -p transport-json --test sim -- --exact {} --nocapture",
        scenario.name
    )
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
            "sim seed {seed} failed in {}: {problem}\n  rerun: {}",
            scenario.name,
            rerun(scenario, seed)
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
