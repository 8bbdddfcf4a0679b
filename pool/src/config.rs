//! The [`Builder`] and the settings it validates.

use std::time::Duration;

use crate::{Manager, Pool};

/// Which idle connection a checkout takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleOrder {
    /// The most recently returned one (the default): a small hot set stays warm and the rest
    /// ages out through `idle_timeout`.
    #[default]
    Lifo,
    /// The least recently returned one: use spreads evenly over every idle connection.
    Fifo,
}

/// Why [`Builder::build`] or [`Pool::resize`](crate::Pool::resize) refused a setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_size` was 0: such a pool could never hand out a connection.
    #[error("max_size must be at least 1")]
    ZeroMaxSize,
    /// `max_streams` was 0: no connection could carry a lease.
    #[error("max_streams must be at least 1")]
    ZeroMaxStreams,
    /// `max_total` was 0 ([`KeyedBuilder`](crate::keyed::KeyedBuilder)): no key could ever
    /// have a connection.
    #[error("max_total must be at least 1")]
    ZeroMaxTotal,
    /// `max_size` was larger than `max_total`
    /// ([`KeyedBuilder`](crate::keyed::KeyedBuilder)): no key could ever reach it.
    #[error("max_size ({max_size}) must not exceed max_total ({max_total})")]
    MaxSizeAboveTotal {
        /// The requested `max_size` (per key).
        max_size: usize,
        /// The requested `max_total` (across keys).
        max_total: usize,
    },
    /// `min_idle` was larger than `max_size`.
    #[error("min_idle ({min_idle}) must not exceed max_size ({max_size})")]
    MinIdleAboveMax {
        /// The requested `min_idle`.
        min_idle: usize,
        /// The requested `max_size`.
        max_size: usize,
    },
}

/// The settings of a pool. Defaults are documented on each [`Builder`] method.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub max_size: usize,
    pub min_idle: usize,
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub check_timeout: Duration,
    pub close_timeout: Duration,
    pub reset_timeout: Duration,
    pub leak_threshold: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub check_interval: Duration,
    pub idle_order: IdleOrder,
    pub reap_interval: Duration,
    pub max_streams: usize,
    pub fail_fast: bool,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    pub name: String,
    pub metrics_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_size: 10,
            min_idle: 0,
            wait_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            check_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            reset_timeout: Duration::from_secs(5),
            leak_threshold: None,
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            check_interval: Duration::from_millis(500),
            idle_order: IdleOrder::Lifo,
            name: String::from("default"),
            metrics_interval: Duration::from_secs(1),
            reap_interval: Duration::from_secs(30),
            max_streams: 1,
            fail_fast: false,
            backoff_first: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// The pause before a caller's next connect after `failures` failed ones (1 or more):
    /// exponential from `backoff_first`, capped at `backoff_max`, with equal jitter.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let full = crate::info::doubled(self.backoff_first, failures, self.backoff_max);
        crate::info::less_random(full, full - full / 2)
    }

    /// How often the maintenance task looks for expired connections: the configured interval,
    /// but never more than half the idle timeout or the lifetime, so an expiry is noticed
    /// within 1.5 times its setting.
    pub(crate) fn effective_reap_interval(&self) -> Duration {
        let limits = [self.idle_timeout, self.max_lifetime].into_iter().flatten();
        let every = limits.fold(self.reap_interval, |every, limit| every.min(limit / 2));
        every.max(Duration::from_millis(1))
    }
}

/// Builder methods that each set one field of the [`Config`] to the value given.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $field(mut self, $field: $ty) -> Self {
            self.config.$field = $field;
            self
        }
    )*};
}
pub(crate) use setters;

/// Configures and builds a [`Pool`]. Made by [`Pool::builder`].
///
/// ```
/// use std::time::Duration;
/// # use pool::{Manager, Pool};
/// # struct Nop;
/// # impl Manager for Nop {
/// #     type Connection = ();
/// #     type Error = std::io::Error;
/// #     async fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
/// #     async fn check(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
/// # }
/// let pool = Pool::builder(Nop)
///     .max_size(16)
///     .min_idle(2)
///     .wait_timeout(Duration::from_secs(2))
///     .build()
///     .expect("valid settings");
/// assert_eq!(pool.status().max_size, 16);
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<M: Manager> {
    manager: M,
    config: Config,
}

impl<M: Manager> std::fmt::Debug for Builder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Builder<M> {
    pub(crate) fn new(manager: M) -> Self {
        Builder {
            manager,
            config: Config::default(),
        }
    }

    setters! {
        /// The most connections that may exist at once, counting those being opened. Default 10.
        max_size: usize;

        /// How many leases ([`Pool::lease`]) one connection carries at once: more than 1 for a
        /// multiplexed connection (HTTP/2, the JSON transport's `Conn`); a new connection opens
        /// only when every open one carries this many. Default 1: a lease has it to itself.
        max_streams: usize;

        /// Idle connections kept ready in the background, within `max_size`. Default 0.
        min_idle: usize;

        /// How long [`Pool::get`] waits in line for a connection when the pool is at `max_size`.
        /// Default 30 s.
        wait_timeout: Duration;

        /// How long one [`Manager::connect`] may take. Default 10 s.
        connect_timeout: Duration;

        /// How long one [`Manager::check`] may take. Default 5 s.
        check_timeout: Duration;

        /// How long one [`Manager::close`] may take before the connection is simply dropped.
        /// Default 5 s.
        close_timeout: Duration;

        /// How long one [`Manager::reset`] may take; past it, as when a reset fails, the connection
        /// is discarded and its slot frees for a new connect. Default 5 s.
        reset_timeout: Duration;

        /// Closes a connection idle for longer than this, but only while more than `min_idle`
        /// are idle; a shared one (leases) counts as idle from the background task's first round
        /// after its last lease ended, up to a reap interval late. `None` keeps idle connections
        /// forever. Default 10 min.
        idle_timeout: Option<Duration>;

        /// Closes a connection this long after it was opened (when it is idle or comes back),
        /// less a random jitter of up to 2.5 % so that connections opened together do not all
        /// expire together; a shared one then takes no new lease and closes after its last.
        /// `None` keeps connections forever. Default 30 min.
        max_lifetime: Option<Duration>;

        /// Skips [`Manager::check`] for a connection returned less than this long ago (HikariCP's
        /// bypass window); `Duration::ZERO` checks on every checkout. Default 500 ms. For a
        /// shared connection the window runs from the start of its latest run of leases (no
        /// clock is read as a lease ends), so it is checked at least as often.
        check_interval: Duration;

        /// Which idle connection a checkout takes. Default [`IdleOrder::Lifo`].
        idle_order: IdleOrder;

        /// With the `metrics` feature, how often the background task samples the pool's gauges
        /// (the crate docs' Metrics section lists them). Unused without it. Default 1 s.
        metrics_interval: Duration;

        /// How often the background task closes expired connections and refills `min_idle`;
        /// never more than half of `idle_timeout` or `max_lifetime`. Default 30 s.
        reap_interval: Duration;

        /// Fails [`Pool::get`] with [`PoolError::Connect`](crate::PoolError::Connect) on the first
        /// failed connect made for it. Default `false`: a failed (or timed out) connect is retried
        /// with backoff until `wait_timeout`, then the caller gets
        /// [`TimeoutKind::Wait`](crate::TimeoutKind::Wait) carrying the last connect error. An
        /// error no retry can fix ([`Manager::is_retryable`]) fails the caller at once either way.
        fail_fast: bool;
    }

    /// Reports a [`Pooled`](crate::Pooled) or [`Lease`](crate::Lease) held longer than
    /// `threshold`, once per hold within a second of crossing it, as a `tracing` warn event
    /// naming the `file:line` that called `get` or `lease`, counted in
    /// [`Counters::leaks`](crate::Counters::leaks); an info event follows when it comes back.
    /// Nothing is taken from the holder. Off by default, and then it costs nothing.
    pub fn leak_threshold(mut self, threshold: Duration) -> Self {
        self.config.leak_threshold = Some(threshold);
        self
    }

    /// The pool's name: the `pool` label of everything it reports with the `metrics` feature,
    /// so two pools of one program are told apart. Default `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The pause after a caller's failed connect before it tries again: `first` after the
    /// first failure, doubling with each further one up to `max`, each pause drawn at random
    /// between half of it and all of it (so callers that failed together do not retry
    /// together), and never past the caller's `wait_timeout`. Default 50 ms and 1 s.
    pub fn connect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.config.backoff_first = first;
        self.config.backoff_max = max;
        self
    }

    /// Builds the pool. It opens no connection itself; when called inside a Tokio runtime it
    /// starts the background task that keeps `min_idle` filled and closes expired connections,
    /// otherwise that task starts with the first checkout.
    ///
    /// # Errors
    /// [`BuildError::ZeroMaxSize`], [`BuildError::ZeroMaxStreams`] or
    /// [`BuildError::MinIdleAboveMax`].
    pub fn build(self) -> Result<Pool<M>, BuildError> {
        validate(self.config.max_size, self.config.min_idle)?;
        if self.config.max_streams == 0 {
            return Err(BuildError::ZeroMaxStreams);
        }
        Ok(Pool::from_parts(self.manager, self.config))
    }
}

pub(crate) fn validate(max_size: usize, min_idle: usize) -> Result<(), BuildError> {
    if max_size == 0 {
        return Err(BuildError::ZeroMaxSize);
    }
    if min_idle > max_size {
        return Err(BuildError::MinIdleAboveMax { min_idle, max_size });
    }
    Ok(())
}
