//! [`Ejection`]: after how many failures in a row an endpoint is ejected, and for how long.

use std::time::Duration;

/// When [`Balanced`](super::Balanced) ejects an endpoint, and for how long, as Envoy's
/// outlier detection and Finagle's failure accrual do.
///
/// An endpoint whose connects fail (or time out), whose connections break or whose checks
/// fail [`after`](Ejection::after) times in a row is ejected: it gets no new connection until
/// its backoff ends. Then one connect (the probe) decides: success brings it back, failure
/// ejects it again for twice as long, up to [`max`](Ejection::max). The n-th ejection in a row
/// lasts `min(base * 2^(n-1), max)` shortened by a random jitter of up to a fifth, so
/// endpoints ejected together are not probed together. An endpoint that stayed healthy for
/// `max` after its last ejection starts again from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Failures in a row that eject an endpoint (a successful connect resets the count).
    /// Default 3; must not be 0.
    pub after: u32,
    /// How long the first ejection lasts. Default 1 s.
    pub base: Duration,
    /// The longest ejection. Default 30 s.
    pub max: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            after: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Ejection {
    /// The defaults: ejected after 3 failures in a row, for 1 s doubling up to 30 s.
    pub fn new() -> Self {
        Ejection::default()
    }

    /// Sets [`after`](Ejection::after).
    #[must_use]
    pub fn after(mut self, failures: u32) -> Self {
        self.after = failures;
        self
    }

    /// Sets [`base`](Ejection::base).
    #[must_use]
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets [`max`](Ejection::max).
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The longest the `n`-th ejection in a row lasts (counting from 1): the bound before its
    /// jitter shortens it.
    pub fn backoff(&self, n: u32) -> Duration {
        crate::info::doubled(self.base, n, self.max)
    }

    /// The `n`-th ejection's length, less a random jitter of up to a fifth of it.
    pub(crate) fn jittered(&self, n: u32) -> Duration {
        let bound = self.backoff(n);
        crate::info::less_random(bound, bound / 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let e = Ejection::new()
            .base(Duration::from_millis(100))
            .max(Duration::from_millis(500));
        let bounds: Vec<_> = (1..=5).map(|n| e.backoff(n).as_millis()).collect();
        assert_eq!(bounds, [100, 200, 400, 500, 500]);
        assert_eq!(e.backoff(u32::MAX), Duration::from_millis(500));
        for n in 1..=5 {
            let j = e.jittered(n);
            assert!(j <= e.backoff(n) && j >= e.backoff(n) * 4 / 5, "{j:?}");
        }
    }
}
