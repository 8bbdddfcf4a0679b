//! [`KeyedBuilder`]: the settings of a [`KeyedPool`] and their checks.

use std::time::Duration;

use crate::config::Config;
use crate::keyed::KeyedPool;
use crate::keyed::keys::{Inner, Make};
use crate::{BuildError, Manager};

/// Configures and builds a [`KeyedPool`]. Made by [`KeyedPool::builder`].
///
/// Each key's pool has the settings of a [`Pool`](crate::Pool) built with the defaults of
/// [`Builder`](crate::Builder) but those set here.
#[must_use = "a builder does nothing until `build` is called"]
pub struct KeyedBuilder<K, M: Manager> {
    make: Make<K, M>,
    config: Config,
    max_total: usize,
}

impl<K, M: Manager> std::fmt::Debug for KeyedBuilder<K, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedBuilder")
            .field("config", &self.config)
            .field("max_total", &self.max_total)
            .finish_non_exhaustive()
    }
}

/// The default `max_total`: ten keys at the default `max_size`.
const MAX_TOTAL: usize = 100;

impl<K, M> KeyedBuilder<K, M>
where
    K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    M: Manager,
{
    pub(crate) fn new(make: Make<K, M>) -> Self {
        KeyedBuilder {
            make,
            config: Config::default(),
            max_total: MAX_TOTAL,
        }
    }

    /// The most connections one key may have at once, counting those being opened. Default
    /// 10.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.config.max_size = max_size;
        self
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

    /// How many leases ([`KeyedPool::lease`]) one connection carries at once. Default 1
    /// (see [`Builder::max_streams`](crate::Builder::max_streams)).
    pub fn max_streams(mut self, max_streams: usize) -> Self {
        self.config.max_streams = max_streams;
        self
    }

    /// How long [`KeyedPool::get`] and [`KeyedPool::lease`] wait for a connection: in line
    /// behind the key's own callers, and for room under `max_total`. Default 30 s.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.config.wait_timeout = timeout;
        self
    }

    /// Closes a connection idle for longer than this, and forgets a key that has had no
    /// connection and no caller for this long (see [`KeyedPool`]). `None` keeps idle
    /// connections forever; a key with none is then forgotten after the default, 10 min.
    /// Default 10 min.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
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
        if max_size == 0 {
            return Err(BuildError::ZeroMaxSize);
        }
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
        // may hold thousands of keys, all reporting under one pool name.
        self.config.metrics_interval = self.config.effective_reap_interval();
        Ok(KeyedPool::from_inner(Inner::new(
            self.make,
            self.config,
            self.max_total,
        )))
    }
}
