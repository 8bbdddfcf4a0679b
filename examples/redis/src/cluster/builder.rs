//! [`Builder`]: a cluster client's settings, and its start from the seeds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::health::Health;
use crate::cluster::pools::{self, PoolSettings};
use crate::cluster::refresh::{self, RefreshState};
use crate::cluster::status::Counters;
use crate::cluster::{ClusterClient, ConnectError, Inner, Node, SlotMap};

/// The client's settings; see [`Builder`] for each.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) pools: PoolSettings,
    pub(crate) deadline: Duration,
    pub(crate) wait_timeout: Duration,
    pub(crate) read_from_replicas: bool,
    pub(crate) refresh_interval: Duration,
    pub(crate) refresh_min_gap: Duration,
    pub(crate) refresh_timeout: Duration,
    pub(crate) refresh_fanout: usize,
    pub(crate) backoff_first: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) eject_first: Duration,
    pub(crate) eject_max: Duration,
}

/// Sets up a [`ClusterClient`]: [`ClusterClient::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    seeds: Vec<String>,
    settings: Settings,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $($field:ident).+;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.settings.$($field).+ = value;
            self
        }
    )*};
}

impl Builder {
    /// The defaults, for these seeds.
    pub(crate) fn new(seeds: Vec<String>) -> Builder {
        let pools = PoolSettings {
            max_size: 4,
            max_total: None,
            max_streams: 128,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(3),
            wait_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            readonly: false,
        };
        let settings = Settings {
            pools,
            deadline: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(1),
            read_from_replicas: false,
            refresh_interval: Duration::from_secs(10),
            refresh_min_gap: Duration::from_millis(100),
            refresh_timeout: Duration::from_secs(1),
            refresh_fanout: 3,
            backoff_first: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            eject_first: Duration::from_millis(100),
            eject_max: Duration::from_secs(2),
        };
        Builder { seeds, settings }
    }

    setters! {
        /// Connections per node (default 4).
        max_size: usize => pools.max_size;
        /// How long a connection stays open with no request on it, and how long a node's
        /// pool is kept once it holds no connection: a node that left the cluster has its
        /// connections closed and its pool forgotten within a few times this (default
        /// 60 s; see [`pools`](crate::cluster::pools)).
        idle_timeout: Duration => pools.idle_timeout;
        /// Requests sharing one connection (default 128): a node's requests share one
        /// connection, so that they go out in few writes, until this many are in flight
        /// on it; only then does a second open, and leases go to the least leased.
        max_streams: usize => pools.max_streams;
        /// Each request's deadline, retries and waits included (default 5 s).
        deadline: Duration => deadline;
        /// The longest a `WAIT` after a `SET` waits for replicas (default 1 s).
        wait_timeout: Duration => wait_timeout;
        /// Reads go to the shard's replica with the fewest leases in flight, every
        /// connection sending `READONLY` (default false: reads go to primaries).
        read_from_replicas: bool => read_from_replicas;
        /// How often the slot map is refreshed without a cause (default 10 s).
        refresh_interval: Duration => refresh_interval;
        /// The least time between two refreshes' starts (default 100 ms).
        refresh_min_gap: Duration => refresh_min_gap;
        /// How long a node asked for its view may take (default 1 s).
        refresh_timeout: Duration => refresh_timeout;
        /// How many nodes a refresh asks at once (default 3).
        refresh_fanout: usize => refresh_fanout;
        /// How long a connect may take (default 1 s).
        connect_timeout: Duration => pools.connect_timeout;
        /// How long a command waits for its reply before its connection counts as failed
        /// (default 3 s; keep it above `wait_timeout`).
        response_timeout: Duration => pools.response_timeout;
    }

    /// Connections across all nodes, counting connects in flight (default 16 × `max_size`:
    /// every node of a 16-node cluster at `max_size`). A node that finds none left waits,
    /// within each request's deadline, for another node's connection to end: an idle one is
    /// closed for it at once. One below `max_size` is refused ([`ConnectError::Settings`]).
    pub fn max_total(mut self, max_total: usize) -> Self {
        self.settings.pools.max_total = Some(max_total);
        self
    }

    /// The backoff between retries: doubles from `first` up to `max`, jittered (default
    /// 10 ms to 500 ms).
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        (self.settings.backoff_first, self.settings.backoff_max) = (first, max);
        self
    }

    /// How long a node whose connects fail is ejected: doubles from `first` up to `max` with
    /// each ejection in a row, jittered (default 100 ms to 2 s).
    pub fn eject_backoff(mut self, first: Duration, max: Duration) -> Self {
        (self.settings.eject_first, self.settings.eject_max) = (first, max);
        self
    }

    /// Checks the settings, asks every seed for its view of the cluster, and starts the
    /// periodic refresh. The map may leave slots uncovered
    /// ([`ClusterClient::uncovered`]); requests for those fail with
    /// [`ClusterError::Uncovered`](crate::cluster::ClusterError::Uncovered).
    ///
    /// # Errors
    /// [`ConnectError::Url`] for a seed that is not `redis://host:port`,
    /// [`ConnectError::Settings`], and [`ConnectError::Seeds`] when no seed answered as a
    /// cluster node, with each one's failure.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped connect leaves nothing running but connects that end on
    /// their own within the connect timeout.
    pub async fn connect(self) -> Result<ClusterClient, ConnectError> {
        let Builder {
            seeds,
            mut settings,
        } = self;
        settings.pools.readonly = settings.read_from_replicas;
        if seeds.is_empty() {
            return Err(ConnectError::NoSeeds);
        }
        let seeds = seeds
            .iter()
            .map(|url| Node::from_url(url).ok_or_else(|| ConnectError::Url { url: url.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        let positive = [
            ("max_size", settings.pools.max_size),
            ("max_total", settings.pools.max_total()),
            ("max_streams", settings.pools.max_streams),
            ("refresh_fanout", settings.refresh_fanout),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, n)| *n == 0) {
            return Err(ConnectError::Settings(format!("{name} must be above 0")));
        }
        let durations = [
            settings.deadline,
            settings.refresh_interval,
            settings.pools.idle_timeout,
        ];
        if durations.iter().any(Duration::is_zero) {
            return Err(ConnectError::Settings("durations must be above 0".into()));
        }
        let pools = pools::node_pools(&settings.pools)
            .map_err(|error| ConnectError::Settings(error.to_string()))?;
        let inner = Arc::new(Inner {
            pools,
            health: Health::new(settings.eject_first, settings.eject_max),
            settings,
            seeds,
            map: Mutex::new(Arc::new(SlotMap::empty())),
            refresh: Mutex::new(RefreshState::default()),
            refreshes_ended: watch::Sender::new(0),
            counters: Counters::default(),
        });
        inner.refresh_now(true).await.map_err(ConnectError::Seeds)?;
        refresh::spawn_periodic(&inner);
        Ok(ClusterClient { inner })
    }
}
