//! Helpers shared by the benchmarks: run settings, a record of every measured sample so that
//! a run can print its own ratio tables, and small statistics.
//!
//! Criterion prints each benchmark on its own; the tables want ratios between peers measured
//! in the same run. So every `iter_custom` routine also hands its `(iterations, elapsed)` pair to
//! [`record`], and at the end [`throughput`] turns the measured samples of one benchmark into
//! ops/s with the same estimator criterion prints first for linear sampling (the slope of
//! elapsed time over iterations, which cancels the fixed cost of spawning the tasks).

#![allow(dead_code)] // each bench uses part of this module

pub mod peers;

use std::sync::Mutex;
use std::time::Duration;

use criterion::Criterion;

/// The runtime every bench runs on: tokio's multi-threaded scheduler with 2 workers, the
/// setting every table of BENCHMARKS.md was measured with.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Criterion settings for this repository's benches: short, since the grids are large, and
/// shorter still with `BENCH_QUICK=1` (a smoke run, numbers not worth quoting).
pub fn criterion() -> Criterion {
    let (warm_up, measure, samples) = if quick() {
        (Duration::from_millis(300), Duration::from_millis(700), 10)
    } else {
        (Duration::from_secs(1), Duration::from_millis(2500), 20)
    };
    Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measure)
        .sample_size(samples)
        .without_plots()
        .configure_from_args()
}

/// True when `BENCH_QUICK=1` asks for a short run.
pub fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// True when the bench binary only lists its benchmarks, runs them once as a test, or runs
/// them for a profiler (`--profile-time`); the extra passes and tables are skipped then.
pub fn listing_or_testing() -> bool {
    std::env::args().any(|a| a == "--list" || a == "--test" || a == "--profile-time")
}

/// One `iter_custom` call: how many iterations it ran and how long they took.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub iters: u64,
    pub elapsed: Duration,
}

/// Every sample of every benchmark, keyed by (group, function), in the order first seen.
static RECORDS: Mutex<Vec<(String, String, Vec<Sample>)>> = Mutex::new(Vec::new());

/// Remembers one `iter_custom` call of benchmark `function` in `group`.
pub fn record(group: &str, function: &str, iters: u64, elapsed: Duration) {
    let mut records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
    let sample = Sample { iters, elapsed };
    match records
        .iter_mut()
        .find(|(g, f, _)| g == group && f == function)
    {
        Some((_, _, samples)) => samples.push(sample),
        None => records.push((group.to_owned(), function.to_owned(), vec![sample])),
    }
}

/// Elements per second of one benchmark, from its last `samples` calls (criterion measures
/// after warming up, so the last `sample_size` calls are the measured ones). `None` when the
/// benchmark was not run (filtered out).
pub fn throughput(group: &str, function: &str, elements_per_iter: u64) -> Option<f64> {
    let records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
    let (_, _, samples) = records
        .iter()
        .find(|(g, f, _)| g == group && f == function)?;
    let keep = sample_count().min(samples.len());
    let measured = &samples[samples.len() - keep..];
    let secs_per_iter = slope(measured)?;
    Some(elements_per_iter as f64 / secs_per_iter)
}

/// How many calls criterion makes in its measurement phase, as configured by [`criterion`].
fn sample_count() -> usize {
    if quick() { 10 } else { 20 }
}

/// Least-squares slope through the origin of elapsed seconds over iterations (criterion's
/// "slope" estimate).
fn slope(samples: &[Sample]) -> Option<f64> {
    let (mut xy, mut xx) = (0.0, 0.0);
    for s in samples {
        let x = s.iters as f64;
        xy += x * s.elapsed.as_secs_f64();
        xx += x * x;
    }
    (xx > 0.0).then(|| xy / xx)
}

/// The value at quantile `q` (0..=1) of sorted data, nearest rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median, least and greatest of some ratios (sorted in place); zeros when there are none.
pub fn spread(ratios: &mut [f64]) -> (f64, f64, f64) {
    if ratios.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    ratios.sort_unstable_by(f64::total_cmp);
    let n = ratios.len();
    let median = if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    };
    (median, ratios[0], ratios[n - 1])
}

/// A rate as a short human string: `3.41 M`, `812 k`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.0} k", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}")
    }
}

/// Microseconds with two decimals.
pub fn micros(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}
