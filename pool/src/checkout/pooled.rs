//! [`Pooled`]: the guard handed to the user, which returns its connection on drop.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::shared::Shared;
use crate::shared::holds::{HoldKey, Site};
use crate::shared::state::Live;
use crate::{ConnInfo, Manager};

/// `live` is emptied only by `detach`, `into_live` and `drop`, which consume the guard.
const LEFT: &str = "a Pooled guard is used after its connection left";

/// A checked-out connection. Derefs (mutably) to it and returns it to the pool on drop.
///
/// Its methods are associated functions (`Pooled::detach(conn)`), so they never shadow a
/// method of the connection.
pub struct Pooled<M: Manager> {
    shared: Arc<Shared<M>>,
    live: Option<Live<M::Connection>>,
    broken: bool,
    /// Its registered hold, when holds are tracked (`leak_threshold`, `metrics`).
    hold: Option<HoldKey>,
}

impl<M: Manager> Pooled<M> {
    /// A guard whose hold is already registered (`hold`, or `None`): the fast path registers
    /// it before building the guard, so the guard is written once, not again as it goes out.
    pub(crate) fn held(
        shared: Arc<Shared<M>>,
        live: Live<M::Connection>,
        hold: Option<HoldKey>,
    ) -> Self {
        Pooled {
            shared,
            live: Some(live),
            broken: false,
            hold,
        }
    }

    /// Registers the hold of this guard, taken at `at`, when holds are tracked.
    pub(crate) fn held_from(&mut self, at: Site) {
        self.hold = self.shared.start_hold(at);
    }

    /// Marks the connection broken: when dropped it is closed instead of returned, and its
    /// slot frees for a fresh one. Use it after an error that leaves the connection's state
    /// unknown (a request cut off halfway, say).
    pub fn mark_broken(this: &mut Self) {
        this.broken = true;
    }

    /// A connection that passed its check on checkout goes out healthy.
    pub(crate) fn unmark_broken(&mut self) {
        self.broken = false;
    }

    /// Takes the connection out of the pool for good. Its slot frees at once; the pool will
    /// neither check nor close it.
    pub fn detach(this: Self) -> M::Connection {
        this.shared.release_slot();
        Self::into_live(this).conn
    }

    /// Takes the connection back for the pool to discard, bypassing the return on drop (and
    /// its `broken` count).
    pub(crate) fn into_live(mut this: Self) -> Live<M::Connection> {
        this.live.take().expect(LEFT)
    }

    /// What the pool knows about this connection.
    pub fn info(this: &Self) -> ConnInfo {
        this.live().info
    }

    fn live(&self) -> &Live<M::Connection> {
        self.live.as_ref().expect(LEFT)
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.live().conn
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.live.as_mut().expect(LEFT).conn
    }
}

impl<M: Manager> std::fmt::Debug for Pooled<M>
where
    M::Connection: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("conn", &self.live().conn)
            .field("info", &self.live().info)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        // Read, not taken: the guard is going, and a write here, just before `live` is read
        // out of it, would cost the return path a stall.
        if let Some(key) = self.hold {
            self.shared.holds.end(key, &self.shared.metrics);
        }
        if let Some(live) = self.live.take() {
            self.shared.give_back(live, self.broken);
        }
    }
}
