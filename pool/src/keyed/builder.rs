//! [`KeyedBuilder`]: the settings of a [`KeyedPool`] and their checks.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, setters, validate};
use crate::keyed::KeyedPool;
use crate::keyed::keys::{Inner, Make, Name};
use crate::{BuildError, Manager};

/// Configures and builds a [`KeyedPool`]. Made by [`KeyedPool::builder`].
///
/// Each key's pool has the settings of a [`Pool`](crate::Pool) built with the defaults of
/// [`Builder`](crate::Builder) but those set here, and is named `"default"` unless
/// [`name_keys`](KeyedBuilder::name_keys) names it.
#[must_use = "a builder does nothing until `build` is called"]
pub struct KeyedBuilder<K, M: Manager> {
    make: Make<K, M>,
    config: Config,
    max_total: usize,
    name: Option<Name<K>>,
}

impl<K, M: Manager> std::fmt::Debug for KeyedBuilder<K, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedBuilder")
            .field("config", &self.config)
            .field("max_total", &self.max_total)
            .field("name_keys", &self.name.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, M> KeyedBuilder<K, M>
where
    K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    M: Manager,
{
    pub(crate) fn new(make: Make<K, M>) -> Self {
        KeyedBuilder {
            make,
            config: Config::default(),
            // Ten keys at the default `max_size`.
            max_total: 100,
            name: None,
        }
    }

    setters! {
        /// The most connections one key may have at once, counting those being opened. Default
        /// 10.
        max_size: usize;

        /// How many leases ([`KeyedPool::lease`]) one connection carries at once. Default 1
        /// (see [`Builder::max_streams`](crate::Builder::max_streams)).
        max_streams: usize;

        /// How long [`KeyedPool::get`] and [`KeyedPool::lease`] wait for a connection: in line
        /// behind the key's own callers, and for room under `max_total`. Default 30 s.
        wait_timeout: Duration;

        /// How long one [`Manager::connect`] of a key may take (see
        /// [`Builder::connect_timeout`](crate::Builder::connect_timeout)). Default 10 s.
        ///
        /// It also bounds how long a key whose connects hang holds its share of `max_total`: up
        /// to its `max_size` connects, each until this timeout.
        connect_timeout: Duration;

        /// How long one [`Manager::check`] of a key's connection may take (see
        /// [`Builder::check_timeout`](crate::Builder::check_timeout)). Default 5 s.
        check_timeout: Duration;

        /// Fails [`KeyedPool::get`] and [`KeyedPool::lease`] with
        /// [`PoolError::Connect`](crate::PoolError::Connect) (or, for a connect past
        /// `connect_timeout`, [`TimeoutKind::Connect`](crate::TimeoutKind::Connect)) on the first
        /// failed connect made for the caller, instead of retrying it with backoff until
        /// `wait_timeout` (see [`Builder::fail_fast`](crate::Builder::fail_fast)). For a caller
        /// that has somewhere else to go when a key fails (another node, another host): it
        /// learns at once. Default `false`.
        fail_fast: bool;

        /// Closes a connection idle for longer than this, and forgets a key that has had no
        /// connection and no caller for this long (see [`KeyedPool`]). `None` keeps idle
        /// connections forever; a key with none is then forgotten after the default, 10 min.
        /// Default 10 min.
        idle_timeout: Option<Duration>;
    }

    /// The most connections all keys together may have at once, counting those being opened
    /// (and, as `max_size` does, not counting broken ones whose last leases still run).
    /// Default 100.
    ///
    /// A key whose connects hang holds up to its `max_size` of them until `connect_timeout`
    /// (10 s): the other keys share what is left.
    pub fn max_total(mut self, max_total: usize) -> Self {
        self.max_total = max_total;
        self
    }

    /// Names each key's pool with `name(key)`, called once as the key's pool is made, beside
    /// `make`: the `pool` label of what that pool reports with the `metrics` feature (see
    /// [`Builder::name`](crate::Builder::name)). By default every key's pool is named
    /// `"default"`, so that a keyed pool of many keys makes few series; give each key a name
    /// of its own only when the keys are few (the nodes of a cluster, not the users of a
    /// service). A `name` that panics panics the caller that needed it, as `make` does.
    pub fn name_keys<F>(mut self, name: F) -> Self
    where
        F: Fn(&K) -> String + Send + Sync + 'static,
    {
        self.name = Some(Box::new(name));
        self
    }

    /// Reports a [`Pooled`](crate::Pooled) or [`Lease`](crate::Lease) held longer than
    /// `threshold`, naming the `file:line` that called [`KeyedPool::get`] or
    /// [`KeyedPool::lease`] (see [`Builder::leak_threshold`](crate::Builder::leak_threshold)).
    /// Off by default.
    pub fn leak_threshold(mut self, threshold: Duration) -> Self {
        self.config.leak_threshold = Some(threshold);
        self
    }

    /// Builds the keyed pool. It opens nothing itself: a key's pool is made (with `make`)
    /// when the key is first used.
    ///
    /// # Errors
    /// [`BuildError::ZeroMaxSize`], [`BuildError::ZeroMaxTotal`],
    /// [`BuildError::ZeroMaxStreams`], or [`BuildError::MaxSizeAboveTotal`]: a key could
    /// never reach a `max_size` above `max_total`, so the two were likely swapped.
    pub fn build(mut self) -> Result<KeyedPool<K, M>, BuildError> {
        let max_size = self.config.max_size;
        validate(max_size, self.config.min_idle)?;
        if self.max_total == 0 {
            return Err(BuildError::ZeroMaxTotal);
        }
        if self.config.max_streams == 0 {
            return Err(BuildError::ZeroMaxStreams);
        }
        if max_size > self.max_total {
            return Err(BuildError::MaxSizeAboveTotal {
                max_size,
                max_total: self.max_total,
            });
        }
        // A key's pool samples its gauges only as it reaps, not every second: a keyed pool
        // may hold thousands of keys.
        self.config.metrics_interval = self.config.effective_reap_interval();
        let inner = Inner::new(self.make, self.name, self.config, self.max_total);
        let inner = Arc::new(inner);
        inner.ensure_steward();
        Ok(KeyedPool { inner })
    }
}
