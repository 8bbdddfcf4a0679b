//! The managers of the pools the benches compare, the same for every bench: each holds a
//! `u64` connection (numbered, so they are distinct) whose check returns at once.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers each connection made, so they are distinct.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A new connection's number.
pub fn next_conn() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// Our pool's manager.
pub struct Ours;

impl pool::Manager for Ours {
    type Connection = u64;
    type Error = Infallible;
    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(next_conn())
    }
    async fn check(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
}

/// deadpool's manager.
pub struct Dead;

impl deadpool::managed::Manager for Dead {
    type Type = u64;
    type Error = Infallible;
    async fn create(&self) -> Result<u64, Infallible> {
        Ok(next_conn())
    }
    async fn recycle(
        &self,
        _conn: &mut u64,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// bb8's manager.
pub struct Bb8;

impl bb8::ManageConnection for Bb8 {
    type Connection = u64;
    type Error = Infallible;
    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(next_conn())
    }
    async fn is_valid(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}
