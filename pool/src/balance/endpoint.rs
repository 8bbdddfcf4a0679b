//! One endpoint of a [`Balanced`](super::Balanced) set: its manager, its counts and its
//! health; [`EndpointStatus`], its public snapshot; and [`Routed`], a connection that
//! remembers its endpoint.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::BalanceError;
use crate::Manager;

/// One endpoint: shared by the set and by every connection made to it, so a removed
/// endpoint's manager stays alive to close its last connections. Its counts are those
/// [`EndpointStatus`] shows, whose fields say what each counts.
pub(crate) struct Endpoint<M> {
    pub name: String,
    pub manager: M,
    pub live: AtomicUsize,
    pub draining: AtomicUsize,
    /// Raised under the set's lock (by `pick`), so placement sees every connect in flight.
    pub connecting: AtomicUsize,
    pub leases: AtomicUsize,
    removed: AtomicBool,
    health: Mutex<Health>,
}

/// Failures and ejection of one endpoint, as [`EndpointStatus`] shows them (`ejections` is the
/// backoff's exponent). Lock order: the set's lock, then this one; never the other way round.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub failures_in_row: u32,
    pub failures: u64,
    pub ejections: u32,
    pub ejected_until: Option<Instant>,
    /// A probe connect is in flight.
    pub probing: bool,
    /// When the endpoint last came back from an ejection.
    pub recovered_at: Option<Instant>,
}

impl<M> Endpoint<M> {
    pub fn new(name: String, manager: M) -> Self {
        Endpoint {
            name,
            manager,
            live: AtomicUsize::new(0),
            draining: AtomicUsize::new(0),
            connecting: AtomicUsize::new(0),
            leases: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
        }
    }

    /// The health, locked. A poisoned lock still holds consistent counts (every update is a
    /// few field writes that cannot panic), so it is used as is.
    pub fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections that take work plus connects in flight: what placement balances.
    pub fn load(&self) -> usize {
        (self.live.load(Relaxed) + self.connecting.load(Relaxed))
            .saturating_sub(self.draining.load(Relaxed))
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    /// Whether it is the endpoint of the set named `name` (not a removed one still draining).
    pub fn is_named(&self, name: &str) -> bool {
        !self.is_removed() && self.name == name
    }

    /// Takes it out of the set: it gets no new connection, and its connections drain.
    pub fn remove(&self) {
        self.removed.store(true, Relaxed);
        tracing::info!(endpoint = %self.name, "endpoint removed; its connections drain");
    }

    /// `source`, an error of this endpoint's manager, named after the endpoint.
    pub fn error<E>(&self, source: E) -> BalanceError<E> {
        BalanceError::Endpoint {
            endpoint: self.name.clone(),
            source,
        }
    }

    /// The public snapshot.
    pub fn status(&self) -> EndpointStatus {
        let health = self.health();
        EndpointStatus {
            name: self.name.clone(),
            live: self.live.load(Relaxed),
            draining: self.draining.load(Relaxed),
            connecting: self.connecting.load(Relaxed),
            leases: self.leases.load(Relaxed),
            failures: health.failures,
            failures_in_row: health.failures_in_row,
            ejections: health.ejections,
            ejected_until: health.ejected_until,
            removed: self.is_removed(),
        }
    }
}

/// A snapshot of one endpoint, from [`Balanced::endpoints`](super::Balanced::endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The name it was added under.
    pub name: String,
    /// Its open connections (made and not yet closed), draining ones included.
    pub live: usize,
    /// Of `live`, those that take no new work: broken, retired to rebalance, or all of them
    /// once the endpoint is removed.
    pub draining: usize,
    /// Connects to it in flight.
    pub connecting: usize,
    /// Leases held on its connections now.
    pub leases: usize,
    /// Failures (failed or timed-out connects, broken connections, failed checks) since it
    /// was added.
    pub failures: u64,
    /// Failures since its last successful connect.
    pub failures_in_row: u32,
    /// Ejections in a row (0 when healthy for a while).
    pub ejections: u32,
    /// When its current ejection ends (`None`: not ejected). Once past, its next connect is
    /// the probe that decides.
    pub ejected_until: Option<Instant>,
    /// Removed from the set; listed until its last connection closes.
    pub removed: bool,
}

/// A connection made by a [`Balanced`](super::Balanced) manager: the endpoint's connection
/// (it derefs to it) and the endpoint it was made to.
///
/// Its methods are associated functions (`Routed::endpoint(&conn)`), so they never shadow a
/// method of the connection.
pub struct Routed<M: Manager> {
    pub(crate) conn: M::Connection,
    pub(crate) tag: Tag<M>,
}

/// What a connection knows of its endpoint; dropping it counts the connection closed.
pub(crate) struct Tag<M> {
    pub endpoint: Arc<Endpoint<M>>,
    /// Set once the connection takes no new work (broken, or retired to rebalance).
    draining: AtomicBool,
}

impl<M> Tag<M> {
    /// Counts a new connection of `endpoint` live.
    pub fn new(endpoint: Arc<Endpoint<M>>) -> Self {
        endpoint.live.fetch_add(1, Relaxed);
        Tag {
            endpoint,
            draining: AtomicBool::new(false),
        }
    }

    /// True while the connection takes work: not draining, its endpoint not removed.
    pub fn takes_work(&self) -> bool {
        !self.draining.load(Relaxed) && !self.endpoint.is_removed()
    }

    /// Marks the connection draining; true the first time.
    pub fn drain(&self) -> bool {
        let first = !self.draining.swap(true, Relaxed);
        if first {
            self.endpoint.draining.fetch_add(1, Relaxed);
        }
        first
    }
}

impl<M> Drop for Tag<M> {
    fn drop(&mut self) {
        if self.draining.load(Relaxed) {
            self.endpoint.draining.fetch_sub(1, Relaxed);
        }
        self.endpoint.live.fetch_sub(1, Relaxed);
    }
}

impl<M: Manager> Routed<M> {
    /// The name of the endpoint this connection was made to.
    pub fn endpoint(this: &Self) -> &str {
        &this.tag.endpoint.name
    }

    /// True once the connection takes no new work: it broke, was retired to rebalance, or its
    /// endpoint was removed. Use it with [`Pool::retain`](crate::Pool::retain) to close a
    /// removed endpoint's idle connections at once rather than at their next checkout.
    pub fn is_draining(this: &Self) -> bool {
        !this.tag.takes_work()
    }
}

impl<M: Manager> Deref for Routed<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.conn
    }
}

impl<M: Manager> DerefMut for Routed<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn
    }
}

impl<M: Manager> fmt::Debug for Routed<M>
where
    M::Connection: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routed")
            .field("endpoint", &self.tag.endpoint.name)
            .field("conn", &self.conn)
            .finish()
    }
}
