//! What the load program's reports and the tests' messages share: percentiles of latencies,
//! an error with its causes on one line, and a number that keeps two runs' keys apart.

use std::error::Error;
use std::time::Duration;

/// A number for this run's keys (the time in nanoseconds), so that two runs never read each
/// other's.
pub fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The `p` quantile of `sorted` latencies (zero for none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// An error with its causes, on one line; a cause whose text already ends the line (the
/// `redis` crate repeats its source in its own message) is not repeated.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text = format!("{text}: {inner_text}");
        }
        cause = inner.source();
    }
    text
}
