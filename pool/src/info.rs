//! [`ConnInfo`]: what the pool knows about one connection.

use std::time::Duration;

use tokio::time::Instant;

/// A connection with what the pool knows about it.
pub(crate) struct Live<C> {
    pub conn: C,
    pub info: ConnInfo,
}

/// Facts the pool keeps about a connection; see [`Pooled::info`](crate::Pooled::info) and
/// [`Pool::retain`](crate::Pool::retain).
///
/// Times are [`tokio::time::Instant`]s, so they follow a paused test clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub(crate) created: Instant,
    pub(crate) last_used: Instant,
    pub(crate) expires: Option<Instant>,
    pub(crate) uses: u64,
}

impl ConnInfo {
    pub(crate) fn new(now: Instant, lifetime: Option<Duration>) -> Self {
        ConnInfo {
            created: now,
            last_used: now,
            expires: lifetime.map(|l| now + l),
            uses: 0,
        }
    }

    /// When the connection was opened.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// When the connection last came back to the pool (or was opened or checked). For a
    /// shared connection: when its latest run of leases began (it was leased with no lease
    /// on it), or when it was opened or checked.
    pub fn last_used(&self) -> Instant {
        self.last_used
    }

    /// When `max_lifetime` (less its jitter) retires the connection, if it is set.
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }

    /// How many times the connection has been checked out.
    pub fn uses(&self) -> u64 {
        self.uses
    }

    /// Time since the connection was opened.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| now >= at)
    }

    /// Its lifetime ends before `wake` (the background task's next wake, if it runs).
    pub(crate) fn expires_before(&self, wake: Option<Instant>) -> bool {
        self.expires.zip(wake).is_some_and(|(at, wake)| at < wake)
    }

    /// Idle at `now` for `interval` or longer since `last_used` (saturating: a `last_used`
    /// after `now` counts as no time), so its check is due. Tested as an addition and a
    /// comparison, cheaper than a subtraction of instants and its normalised `Duration`;
    /// past the clock's range, never due; a zero interval, always.
    #[inline]
    pub(crate) fn check_due(&self, now: Instant, interval: Duration) -> bool {
        interval.is_zero()
            || self
                .last_used
                .checked_add(interval)
                .is_some_and(|at| now >= at)
    }
}

/// A lifetime shortened by a random jitter of up to 2.5 % (HikariCP's variance), so that
/// connections opened together do not all expire together.
pub(crate) fn jittered(lifetime: Duration) -> Duration {
    less_random(lifetime, lifetime / 40)
}

/// `d` less a random part of `cut` (nothing for a zero `cut`). RandomState is seeded per
/// thread and stepped per instance: enough randomness for a jitter, without a dependency.
pub(crate) fn less_random(d: Duration, cut: Duration) -> Duration {
    use std::hash::BuildHasher;
    let span = u64::try_from(cut.as_nanos()).unwrap_or(u64::MAX);
    let random = std::collections::hash_map::RandomState::new().hash_one(0u8);
    d - Duration::from_nanos(random.checked_rem(span).unwrap_or(0))
}

/// `first` doubled with each step after the first (`n` counts from 1), capped at `max`.
pub(crate) fn doubled(first: Duration, n: u32, max: Duration) -> Duration {
    first
        .saturating_mul(1 << n.saturating_sub(1).min(31))
        .min(max)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::time::Instant;

    use super::ConnInfo;

    proptest! {
        /// `check_due` agrees with the subtraction it replaces (the idle time, saturating at
        /// zero, is at least the interval), with `last_used` before or after `now`, for
        /// intervals from zero to `Duration::MAX`.
        #[test]
        fn check_due_is_the_saturating_subtraction(
            last_ns in 0u64..4_000_000_000,
            now_ns in 0u64..4_000_000_000,
            interval_ns in prop_oneof![
                Just(0u64),
                0u64..4_000_000_000,
                Just(u64::MAX),
            ],
            huge in any::<bool>(),
        ) {
            let base = Instant::now();
            let mut info = ConnInfo::new(base, None);
            info.last_used = base + Duration::from_nanos(last_ns);
            let now = base + Duration::from_nanos(now_ns);
            let interval = if huge { Duration::MAX } else { Duration::from_nanos(interval_ns) };
            prop_assert_eq!(
                info.check_due(now, interval),
                now.saturating_duration_since(info.last_used) >= interval,
                "last_used +{}ns, now +{}ns, interval {:?}", last_ns, now_ns, interval
            );
        }
    }

    /// The edges, named: equal times, one nanosecond either side, a zero interval with
    /// `last_used` after `now`.
    #[test]
    fn check_due_at_its_edges() {
        let base = Instant::now();
        let mut info = ConnInfo::new(base, None);
        let second = Duration::from_secs(1);
        assert!(
            info.check_due(base + second, second),
            "exactly the interval"
        );
        assert!(!info.check_due(base + second - Duration::from_nanos(1), second));
        assert!(info.check_due(base + second + Duration::from_nanos(1), second));
        info.last_used = base + second;
        assert!(
            info.check_due(base, Duration::ZERO),
            "a zero interval is always due"
        );
        assert!(
            !info.check_due(base, Duration::from_nanos(1)),
            "last_used after now"
        );
        assert!(
            !info.check_due(base + second, Duration::MAX),
            "past the clock's range"
        );
    }
}
