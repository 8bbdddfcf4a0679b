//! `pool::deadpool::DeadpoolManager`: a `pool::Manager` inside a `deadpool::managed::Pool`.
//!
//! Run with `cargo test -p pool --features deadpool --test deadpool_adapter`.
#![cfg(feature = "deadpool")]
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use deadpool::managed::{Object, PoolError};
use pool::Manager;
use pool::deadpool::{DeadpoolManager, DeadpoolPool};

/// The error of the test manager.
#[derive(Debug, PartialEq, Eq)]
struct Refused(&'static str);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

/// A connection numbered in connect order; `broken` is what `is_broken` reports.
#[derive(Debug)]
struct Conn {
    id: u64,
    broken: bool,
}

/// Counts its calls; connects or checks fail when told to.
#[derive(Debug, Default)]
struct Counting {
    connects: AtomicU64,
    checks: AtomicU64,
    fail_connects: AtomicBool,
    fail_checks: AtomicBool,
}

impl Manager for Counting {
    type Connection = Conn;
    type Error = Refused;

    async fn connect(&self) -> Result<Conn, Refused> {
        if self.fail_connects.load(SeqCst) {
            return Err(Refused("connection refused"));
        }
        Ok(Conn {
            id: self.connects.fetch_add(1, SeqCst),
            broken: false,
        })
    }

    async fn check(&self, _conn: &mut Conn) -> Result<(), Refused> {
        self.checks.fetch_add(1, SeqCst);
        if self.fail_checks.load(SeqCst) {
            return Err(Refused("no PONG"));
        }
        Ok(())
    }

    fn is_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

fn pool_of(adapter: DeadpoolManager<Counting>) -> DeadpoolPool<Counting> {
    deadpool::managed::Pool::builder(adapter)
        .max_size(2)
        .build()
        .expect("valid settings")
}

fn counting(pool: &DeadpoolPool<Counting>) -> &Counting {
    pool.manager().manager()
}

#[tokio::test]
async fn create_opens_a_connection_through_connect() {
    let pool = pool_of(DeadpoolManager::new(Counting::default()));
    let conn = pool.get().await.expect("a connection");
    assert_eq!(conn.id, 0);
    assert_eq!(counting(&pool).connects.load(SeqCst), 1);
    assert_eq!(
        counting(&pool).checks.load(SeqCst),
        0,
        "a new connection is not checked"
    );
}

#[tokio::test]
async fn recycle_checks_a_healthy_connection_and_hands_it_out_again() {
    let pool = pool_of(DeadpoolManager::new(Counting::default()));
    drop(pool.get().await.expect("a connection"));
    let conn = pool.get().await.expect("the same connection");
    assert_eq!(conn.id, 0);
    assert_eq!(counting(&pool).checks.load(SeqCst), 1);
    assert_eq!(counting(&pool).connects.load(SeqCst), 1);
}

#[tokio::test]
async fn recycle_discards_a_connection_reported_broken_without_checking_it() {
    let pool = pool_of(DeadpoolManager::new(Counting::default()));
    let mut conn = pool.get().await.expect("a connection");
    conn.broken = true;
    drop(conn);
    let conn = pool.get().await.expect("a fresh connection");
    assert_eq!(conn.id, 1, "the broken connection 0 was not handed out");
    assert_eq!(
        counting(&pool).checks.load(SeqCst),
        0,
        "no check of a broken one"
    );
    assert_eq!(pool.status().size, 1, "connection 0 left the pool");
}

#[tokio::test]
async fn recycle_discards_a_connection_that_fails_its_check() {
    let pool = pool_of(DeadpoolManager::new(Counting::default()));
    drop(pool.get().await.expect("a connection"));
    counting(&pool).fail_checks.store(true, SeqCst);
    let conn = pool.get().await.expect("a fresh connection");
    assert_eq!(conn.id, 1, "connection 0 failed its check and was replaced");
    assert_eq!(counting(&pool).checks.load(SeqCst), 1);
    assert_eq!(pool.status().size, 1);
}

#[tokio::test]
async fn check_interval_skips_the_check_of_a_connection_checked_out_recently() {
    let adapter =
        DeadpoolManager::new(Counting::default()).check_interval(Duration::from_secs(3600));
    let pool = pool_of(adapter);
    drop(pool.get().await.expect("a connection"));
    counting(&pool).fail_checks.store(true, SeqCst);
    let conn = pool.get().await.expect("the same connection, unchecked");
    assert_eq!(conn.id, 0);
    assert_eq!(counting(&pool).checks.load(SeqCst), 0);
}

#[tokio::test]
async fn a_connect_error_reaches_the_caller_as_a_backend_error() {
    let pool = pool_of(DeadpoolManager::new(Counting::default()));
    counting(&pool).fail_connects.store(true, SeqCst);
    match pool.get().await {
        Err(PoolError::Backend(error)) => assert_eq!(error, Refused("connection refused")),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(
        pool.status().size,
        0,
        "no slot is held by the failed connect"
    );
}

#[tokio::test]
async fn a_taken_connection_leaves_the_pool_and_frees_its_slot() {
    let pool = pool_of(DeadpoolManager::new(Counting::default()));
    let conn = Object::take(pool.get().await.expect("a connection"));
    assert_eq!(conn.id, 0);
    assert_eq!(pool.status().size, 0);
    let next = pool.get().await.expect("a fresh connection");
    assert_eq!(next.id, 1);
}
