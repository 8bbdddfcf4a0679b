//! [`Balanced`]: one [`Manager`] over several endpoints (servers, replicas), each with a
//! manager of its own, so one [`Pool`](crate::Pool) spreads its connections over all of them.
//!
//! - Placement: each new connection goes to the healthy endpoint with the fewest connections
//!   (open, not draining, plus connects in flight), ties rotating. The connection is a
//!   [`Routed`]: it derefs to the endpoint's connection and remembers its endpoint.
//! - Failover: a connect that fails tries the next healthy endpoint within the same
//!   [`connect`](Manager::connect) call, so no caller sees a dead endpoint's error while
//!   another is up.
//! - Ejection and recovery ([`Ejection`]): a failing endpoint gets no new connection for a
//!   backoff; with every endpoint ejected, a connect tries the one whose backoff ends first.
//! - Rebalancing: when an endpoint joins or comes back, connections of endpoints that carry
//!   two or more than it drain one by one, so the pool reconnects onto it even when full.
//! - Changes at run time: [`add`](Balanced::add), [`remove`](Balanced::remove) (never cutting
//!   a request) and [`discovering`](Balanced::discovering); [`endpoints`](Balanced::endpoints)
//!   shows per endpoint its connections, leases, failures and ejection.
//!
//! ```
//! use std::convert::Infallible;
//! use pool::Pool;
//! use pool::balance::{Balanced, Routed};
//! # use pool::Manager;
//! # struct Server(&'static str);
//! # impl Manager for Server {
//! #     type Connection = &'static str;
//! #     type Error = Infallible;
//! #     async fn connect(&self) -> Result<&'static str, Infallible> { Ok(self.0) }
//! #     async fn check(&self, _c: &mut &'static str) -> Result<(), Infallible> { Ok(()) }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let balanced = Balanced::from_endpoints([("a", Server("a")), ("b", Server("b"))])?;
//! let pool = Pool::builder(balanced).max_size(4).build()?;
//! let (one, two) = (pool.get().await?, pool.get().await?);
//! assert_ne!(Routed::endpoint(&one), Routed::endpoint(&two), "one connection on each");
//! assert_eq!(pool.manager().endpoints()[0].live, 1);
//! # Ok(())
//! # }
//! ```

mod discover;
mod ejection;
mod endpoint;
mod set;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

pub use discover::Discovered;
pub use ejection::Ejection;
pub use endpoint::{EndpointStatus, Routed};

use crate::Manager;
use discover::Discovery;
use endpoint::{Endpoint, Tag};
use set::Set;

/// A [`Manager`] over a set of endpoints, each made by a manager of type `M`; see the
/// [module docs](self).
///
/// Reach it through [`Pool::manager`](crate::Pool::manager) to change the set or read it.
pub struct Balanced<M: Manager> {
    set: Arc<Set<M>>,
    discovery: Option<Discovery<M>>,
}

/// A change of the endpoint set that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// An endpoint of that name is already in the set.
    #[error("an endpoint named {0:?} is already in the set")]
    Duplicate(String),
    /// No endpoint of that name is in the set.
    #[error("no endpoint named {0:?} is in the set")]
    Unknown(String),
    /// [`Ejection::after`] is 0: an endpoint would be ejected before it failed.
    #[error("ejection after 0 failures in a row")]
    ZeroFailures,
}

/// Why a [`Balanced`] connect or check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalanceError<E> {
    /// The set has no endpoint (or only removed ones).
    #[error("no endpoint to connect to")]
    NoEndpoints,
    /// The endpoint's manager failed; after a failover, the last endpoint tried.
    #[error("endpoint {endpoint}: {source}")]
    Endpoint {
        /// The endpoint's name.
        endpoint: String,
        /// Its manager's error.
        #[source]
        source: E,
    },
}

impl<M: Manager> Balanced<M> {
    /// An empty set with the default [`Ejection`]; add endpoints with [`add`](Balanced::add).
    pub fn new() -> Self {
        Balanced {
            set: Arc::new(Set::new()),
            discovery: None,
        }
    }

    /// An empty set ejecting as `ejection` says.
    ///
    /// # Errors
    /// [`SetError::ZeroFailures`] when `ejection.after` is 0.
    pub fn with_ejection(ejection: Ejection) -> Result<Self, SetError> {
        let balanced = Balanced::new();
        balanced.set_ejection(ejection)?;
        Ok(balanced)
    }

    /// A set found by `discover`, run on a connect when the last run is `every` old or more
    /// (and before the first connect): new names are added, names no longer returned are
    /// removed (they drain), the others keep their connections and health; a failed run keeps
    /// the set. Connects that find it due wait for the one running. For example, make each
    /// address of a host name an endpoint, re-resolved on reconnect (as `JsonManager::resolving`
    /// in the `transport-json` crate does).
    pub fn discovering(
        every: Duration,
        discover: impl Fn() -> Discovered<M> + Send + Sync + 'static,
    ) -> Self {
        Balanced {
            discovery: Some(Discovery {
                every,
                discover: Box::new(discover),
                last: Default::default(),
            }),
            ..Balanced::new()
        }
    }

    /// A set of the given `(name, manager)` endpoints, with the default [`Ejection`].
    ///
    /// # Errors
    /// [`SetError::Duplicate`] when two share a name.
    pub fn from_endpoints(
        endpoints: impl IntoIterator<Item = (impl Into<String>, M)>,
    ) -> Result<Self, SetError> {
        let balanced = Balanced::new();
        for (name, manager) in endpoints {
            balanced.add(name, manager)?;
        }
        Ok(balanced)
    }

    /// Adds an endpoint. It takes new connections at once, rebalanced onto when the pool is full.
    ///
    /// # Errors
    /// [`SetError::Duplicate`] when an endpoint of that name is in the set (a removed one
    /// still draining does not count).
    pub fn add(&self, name: impl Into<String>, manager: M) -> Result<(), SetError> {
        self.set.add(name.into(), manager)
    }

    /// Removes an endpoint: it gets no new connection, and its connections drain as retired
    /// ones do, each closed after its last lease ends (an idle one at its next checkout, or at
    /// once through [`Pool::retain`](crate::Pool::retain) with [`Routed::is_draining`]). It is
    /// listed in [`endpoints`](Balanced::endpoints) until its last connection closes.
    ///
    /// # Errors
    /// [`SetError::Unknown`] when no endpoint of that name is in the set.
    pub fn remove(&self, name: &str) -> Result<(), SetError> {
        let table = self.set.table();
        let endpoint = table.endpoints.iter().find(|e| e.is_named(name));
        let endpoint = endpoint.ok_or_else(|| SetError::Unknown(name.to_owned()))?;
        endpoint.remove();
        Ok(())
    }

    /// A snapshot of every endpoint, in the order they were added.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        let table = self.set.table();
        table.endpoints.iter().map(|e| e.status()).collect()
    }

    /// The ejection policy.
    pub fn ejection(&self) -> Ejection {
        self.set.table().ejection
    }

    /// Changes the ejection policy; it applies from the next failure on.
    ///
    /// # Errors
    /// [`SetError::ZeroFailures`] when `ejection.after` is 0.
    pub fn set_ejection(&self, ejection: Ejection) -> Result<(), SetError> {
        if ejection.after == 0 {
            return Err(SetError::ZeroFailures);
        }
        self.set.table().ejection = ejection;
        Ok(())
    }

    /// Counts a failure of a connection's endpoint once per connection (a draining connection
    /// is never asked again); the connection then drains.
    fn connection_failed(&self, tag: &Tag<M>) {
        if tag.drain() {
            self.set.failed(&tag.endpoint, Instant::now(), false);
        }
    }

    /// `is_broken` and `is_broken_shared`, whose test by the endpoint's manager is `broken`.
    fn drains(&self, tag: &Tag<M>, broken: impl FnOnce() -> bool) -> bool {
        if !tag.takes_work() {
            return true;
        }
        if broken() {
            self.connection_failed(tag);
            return true;
        }
        self.set.retire_to_rebalance(tag)
    }
}

impl<M: Manager> Default for Balanced<M> {
    fn default() -> Self {
        Balanced::new()
    }
}

impl<M: Manager> std::fmt::Debug for Balanced<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("endpoints", &self.endpoints())
            .finish_non_exhaustive()
    }
}

/// A connect in flight to one endpoint: uncounted when it ends, and counted as the
/// endpoint's failure when it is dropped unfinished (the pool's connect timeout fired).
struct Attempt<'a, M: Manager> {
    set: &'a Arc<Set<M>>,
    endpoint: &'a Endpoint<M>,
    finished: bool,
}

impl<M: Manager> Drop for Attempt<'_, M> {
    fn drop(&mut self) {
        if !self.finished {
            self.set.failed(self.endpoint, Instant::now(), true);
        }
        self.endpoint.connecting.fetch_sub(1, Relaxed);
    }
}

impl<M: Manager> Manager for Balanced<M> {
    type Connection = Routed<M>;
    type Error = BalanceError<M::Error>;
    const WATCHES_LEASES: bool = true;

    /// # Errors
    /// [`BalanceError::NoEndpoints`] when the set is empty; otherwise the error of the last
    /// endpoint tried, after every healthy one failed.
    ///
    /// # Cancel safety
    /// Cancel safe: a connect dropped mid-way counts as a failure of its endpoint (a timeout)
    /// and leaves nothing behind.
    async fn connect(&self) -> Result<Routed<M>, Self::Error> {
        if let Some(discovery) = &self.discovery {
            discovery.run_if_due(&self.set).await;
        }
        let mut tried = Vec::new();
        let mut last = BalanceError::NoEndpoints;
        while let Some(endpoint) = self.set.pick(Instant::now(), &tried) {
            let mut attempt = Attempt {
                set: &self.set,
                endpoint: &endpoint,
                finished: false,
            };
            match endpoint.manager.connect().await {
                Ok(conn) => {
                    // Counted live before the attempt stops counting it as connecting, so
                    // placement never sees it as neither.
                    let tag = Tag::new(Arc::clone(&endpoint));
                    attempt.finished = true;
                    drop(attempt);
                    if !endpoint.is_removed() {
                        self.set.connected(&endpoint, Instant::now());
                        return Ok(Routed { conn, tag });
                    }
                    // Removed while it connected: closed, and the next endpoint is tried.
                    self.close(Routed { conn, tag }).await;
                }
                Err(source) => {
                    drop(attempt); // unfinished: counts the failure
                    tracing::debug!(endpoint = %endpoint.name, error = %source, "connect failed; trying the next endpoint");
                    last = endpoint.error(source);
                }
            }
            tried.push(endpoint);
        }
        Err(last)
    }

    /// # Errors
    /// The endpoint's check error; it counts as a failure of the endpoint.
    ///
    /// # Cancel safety
    /// As the endpoint manager's `check`.
    async fn check(&self, conn: &mut Routed<M>) -> Result<(), Self::Error> {
        let Routed { conn, tag } = conn;
        tag.endpoint.manager.check(conn).await.map_err(|source| {
            self.connection_failed(tag);
            tag.endpoint.error(source)
        })
    }

    fn is_broken(&self, conn: &mut Routed<M>) -> bool {
        let Routed { conn, tag } = conn;
        self.drains(tag, || tag.endpoint.manager.is_broken(conn))
    }

    fn is_broken_shared(&self, conn: &Routed<M>) -> bool {
        let Routed { conn, tag } = conn;
        self.drains(tag, || tag.endpoint.manager.is_broken_shared(conn))
    }

    fn needs_reset(&self, conn: &Routed<M>) -> bool {
        conn.tag.endpoint.manager.needs_reset(&conn.conn)
    }

    /// # Errors
    /// The endpoint's reset error (the connection is then discarded).
    ///
    /// # Cancel safety
    /// As the endpoint manager's `reset`.
    async fn reset(&self, conn: &mut Routed<M>) -> Result<(), Self::Error> {
        let Routed { conn, tag } = conn;
        let result = tag.endpoint.manager.reset(conn).await;
        result.map_err(|source| tag.endpoint.error(source))
    }

    fn lease_started(&self, conn: &Routed<M>) {
        conn.tag.endpoint.leases.fetch_add(1, Relaxed);
        if M::WATCHES_LEASES {
            conn.tag.endpoint.manager.lease_started(&conn.conn);
        }
    }

    fn lease_ended(&self, conn: &Routed<M>) {
        conn.tag.endpoint.leases.fetch_sub(1, Relaxed);
        if M::WATCHES_LEASES {
            conn.tag.endpoint.manager.lease_ended(&conn.conn);
        }
    }

    /// # Cancel safety
    /// As the endpoint manager's `close`; the connection counts as closed when this ends or
    /// is dropped.
    async fn close(&self, conn: Routed<M>) {
        // The tag, dropped as this ends, counts the connection closed.
        conn.tag.endpoint.manager.close(conn.conn).await;
    }
}
