//! [`Inner`]: the key pools of a [`KeyedPool`](crate::keyed::KeyedPool), in a map looked up
//! once per call, filled on a key's first use, and swept of keys that hold nothing.
//!
//! The map's lock guards the lookup, the insert and the sweep only. It is taken before a key
//! pool's lock (the sweep looks into each pool), never after one, and no user code runs under
//! it: a new key's manager is made (and its pool named) with the lock released, so a `make`
//! or a `name` that panics poisons nothing and leaves nothing behind.

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::hash::Hash;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::shared::budget::Budget;
use crate::{Manager, Pool, PoolError, Status};

/// Makes the manager of a key, the first time the key is used.
pub(crate) type Make<K, M> = Box<dyn Fn(&K) -> M + Send + Sync>;

/// Names the pool of a key, as it is made.
pub(crate) type Name<K> = Box<dyn Fn(&K) -> String + Send + Sync>;

/// A key is forgotten after holding nothing for this long when `idle_timeout` is `None`.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What the handles of one keyed pool share.
pub(crate) struct Inner<K, M: Manager> {
    make: Make<K, M>,
    /// Names each key's pool; without it, each has the name in `config`.
    name: Option<Name<K>>,
    /// The settings of every key's pool.
    config: Config,
    /// `max_total`, shared by the key pools.
    pub budget: Arc<Budget>,
    keys: Mutex<Keys<K, M>>,
    /// True while a steward task runs (in whichever runtime started it).
    pub steward_started: AtomicBool,
    /// How long a key holds nothing before it is forgotten.
    pub forget_after: Duration,
}

/// The map, and whether the keyed pool is closed.
struct Keys<K, M: Manager> {
    map: HashMap<K, Entry<M>>,
    closed: bool,
}

/// One key's pool, and what the sweep knows of its use.
struct Entry<M: Manager> {
    pool: Pool<M>,
    /// Calls for this key (wrapping): unchanged between two sweeps, nobody came in between.
    uses: u64,
    /// `uses` as the last sweep saw it.
    seen: u64,
    /// Since when the sweeps have found it holding nothing, with nobody coming.
    quiet_since: Option<Instant>,
}

impl<M: Manager> Entry<M> {
    /// A caller's use of the key: counted for the sweep.
    fn used(&mut self) -> Pool<M> {
        self.uses = self.uses.wrapping_add(1);
        self.pool.clone()
    }

    /// The sweep's look at `now`: true when the key has held nothing, with nobody coming,
    /// for `forget_after`.
    fn forgotten(&mut self, now: Instant, forget_after: Duration) -> bool {
        let came = std::mem::replace(&mut self.seen, self.uses) != self.uses;
        // A caller between its lookup and its checkout, a guard, a connect, a close or the
        // pool's background task in its round holds a handle of its own: the map's is the
        // only one when nobody uses the pool.
        let quiet = !came
            && Arc::strong_count(&self.pool.shared) == 1
            && self.pool.shared.lock().holds_nothing();
        if !quiet {
            self.quiet_since = None;
            return false;
        }
        let since = *self.quiet_since.get_or_insert(now);
        now.saturating_duration_since(since) >= forget_after
    }
}

impl<K, M> Inner<K, M>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    M: Manager,
{
    pub fn new(make: Make<K, M>, name: Option<Name<K>>, config: Config, max_total: usize) -> Self {
        Inner {
            forget_after: config.idle_timeout.unwrap_or(FORGET_AFTER),
            make,
            name,
            config,
            budget: Arc::new(Budget::new(max_total)),
            keys: Mutex::new(Keys {
                map: HashMap::new(),
                closed: false,
            }),
            steward_started: AtomicBool::new(false),
        }
    }

    fn keys(&self) -> MutexGuard<'_, Keys<K, M>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool of `key`, made (with a manager from `make`) if the map holds none; with the
    /// steward running.
    ///
    /// # Errors
    /// [`PoolError::Closed`] once the keyed pool is closed.
    pub fn pool(self: &Arc<Self>, key: &K) -> Result<Pool<M>, PoolError<M::Error>> {
        self.ensure_steward();
        {
            let mut keys = self.keys();
            if keys.closed {
                return Err(PoolError::Closed);
            }
            if let Some(entry) = keys.map.get_mut(key) {
                return Ok(entry.used());
            }
        }
        // Made with the lock released: `make` and `name` are user code. Two callers that
        // race for a new key both make one; the first in is kept and the other dropped unused.
        let mut config = self.config.clone();
        if let Some(name) = &self.name {
            config.name = name(key);
        }
        let made = Pool::with_budget((self.make)(key), config, &self.budget);
        let mut keys = self.keys();
        if keys.closed {
            return Err(PoolError::Closed);
        }
        let (entry, spare) = match keys.map.entry(key.clone()) {
            Slot::Occupied(slot) => (slot.into_mut(), Some(made)),
            Slot::Vacant(slot) => {
                let entry = Entry {
                    pool: made,
                    uses: 0,
                    seen: 0,
                    quiet_since: None,
                };
                (slot.insert(entry), None)
            }
        };
        let pool = entry.used();
        drop(keys);
        drop(spare);
        Ok(pool)
    }

    /// The status of `key`'s pool, if the map holds one.
    pub fn status(&self, key: &K) -> Option<Status> {
        let pool = self.keys().map.get(key)?.pool.clone();
        Some(pool.status())
    }

    /// How many keys the map holds.
    pub fn held(&self) -> usize {
        self.keys().map.len()
    }

    pub fn is_closed(&self) -> bool {
        self.keys().closed
    }

    /// Closes the map (later calls fail with `Closed`) and takes every key's pool out of it.
    pub fn close(&self) -> Vec<Pool<M>> {
        let mut keys = self.keys();
        keys.closed = true;
        let pools = keys.map.drain().map(|(_, entry)| entry.pool).collect();
        keys.map.shrink_to_fit();
        drop(keys);
        // The steward sees the pool closed and ends.
        self.budget.steward.notify_one();
        pools
    }

    /// Forgets the keys that have held nothing, with nobody coming, for `forget_after`.
    pub fn sweep(&self, now: Instant) {
        let mut keys = self.keys();
        let forgotten: Vec<_> = keys
            .map
            .extract_if(|_, entry| entry.forgotten(now, self.forget_after))
            .collect();
        // A burst of keys leaves no table of its size behind.
        if keys.map.capacity() > 64 && keys.map.capacity() > 4 * keys.map.len() {
            keys.map.shrink_to_fit();
        }
        drop(keys);
        if !forgotten.is_empty() {
            tracing::debug!(keys = forgotten.len(), "forgetting keys that held nothing");
        }
        // Dropped with the lock released: each pool's last handle.
        drop(forgotten);
    }
}

impl<K, M: Manager> Drop for Inner<K, M> {
    /// The last handle is gone: the steward ends at its next look.
    fn drop(&mut self) {
        self.budget.steward.notify_one();
    }
}
