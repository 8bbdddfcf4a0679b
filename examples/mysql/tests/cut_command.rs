//! A command whose future is dropped mid-way: the connection is discarded, never reused, and
//! the abandoned statement is stopped on the server (`KILL QUERY`), so it holds no lock.
//!
//! The tests share one `mariadbd`, each in a database of its own.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use mysql_example::MysqlManager;
use pool::Pool;
use tokio::time::timeout;

/// A pool of one connection over a fresh database `name`.
async fn pool_of_one(name: &str) -> Pool<MysqlManager> {
    let url = support::shared().await.database(name).await;
    let manager = MysqlManager::new(&url).expect("a valid URL");
    Pool::builder(manager)
        .max_size(1)
        .connect_timeout(Duration::from_secs(2))
        .check_timeout(Duration::from_secs(1))
        .wait_timeout(Duration::from_secs(2))
        .build()
        .expect("valid settings")
}

#[tokio::test]
async fn a_dropped_sleep_is_killed_and_the_next_caller_is_answered_within_a_second() {
    let server = support::shared().await;
    let pool = pool_of_one("cut_sleep").await;
    let mut observer = server.connect("cut_sleep").await;
    let sleeps = "SELECT COUNT(*) FROM information_schema.processlist \
                  WHERE DB = 'cut_sleep' AND INFO LIKE 'SELECT SLEEP(5)%'";

    let mut conn = pool.get().await.expect("a connection");
    let first_id = conn.id();
    let cut = timeout(
        Duration::from_millis(100),
        conn.query_drop("SELECT SLEEP(5)"),
    )
    .await;
    assert!(cut.is_err(), "the sleep is cut after 100 ms");
    assert_eq!(
        support::number(&mut observer, sleeps).await,
        1,
        "the server still runs the sleep the client gave up on"
    );
    let dropped_at = Instant::now();
    drop(conn);

    // Pool size 1: the next caller gets a new connection, at once.
    let mut next = timeout(Duration::from_secs(1), pool.get())
        .await
        .expect("a connection within 1 s")
        .expect("a connection");
    let answer: Option<i64> = timeout(Duration::from_secs(1), next.query_first("SELECT 1"))
        .await
        .expect("an answer within 1 s")
        .expect("SELECT 1");
    assert_eq!(answer, Some(1));
    let answered_in = dropped_at.elapsed();
    assert!(answered_in < Duration::from_secs(1), "{answered_in:?}");
    assert_ne!(next.id(), first_id, "the cut connection is never reused");
    drop(next);

    let gone_in = support::eventually(Duration::from_secs(1), "the sleep stops", async || {
        support::number(&mut observer, sleeps).await == 0
    })
    .await;
    let status = pool.status();
    assert_eq!(status.counters.broken, 1, "{status:?}");
    assert_eq!(status.counters.created, 2, "{status:?}");
    let counts = pool.manager().counts();
    assert_eq!((counts.cut_closed, counts.kills), (1, 1), "{counts:?}");
    println!(
        "cut SLEEP(5): next query answered {answered_in:.2?} after the drop; the sleep gone \
         from the server {gone_in:.2?} after that"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_row_lock_held_by_a_cut_transaction_is_released() {
    let server = support::shared().await;
    let pool = pool_of_one("cut_lock").await;
    let mut setup = server.connect("cut_lock").await;
    mysql_async::prelude::Queryable::query_drop(
        &mut setup,
        "CREATE TABLE t (id INT PRIMARY KEY, n INT) ENGINE=InnoDB; INSERT INTO t VALUES (1, 0)",
    )
    .await
    .expect("create t");

    // A transaction locks row 1, then its next statement is cut.
    let mut conn = pool.get().await.expect("a connection");
    conn.begin().await.expect("begin");
    conn.query_drop("SELECT n FROM t WHERE id = 1 FOR UPDATE")
        .await
        .expect("lock row 1");
    let cut = timeout(
        Duration::from_millis(100),
        conn.query_drop("SELECT SLEEP(5)"),
    )
    .await;
    assert!(cut.is_err());
    drop(conn);

    // Another connection takes the same lock, with a 1 s lock wait.
    let mut other = pool.get().await.expect("a connection");
    other
        .query_drop("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .expect("set the lock wait");
    other.begin().await.expect("begin");
    let locked = timeout(
        Duration::from_secs(2),
        other.query_drop("UPDATE t SET n = n + 1 WHERE id = 1"),
    )
    .await
    .expect("an answer within 2 s");
    assert!(
        locked.is_ok(),
        "the cut transaction's lock is gone: {locked:?}"
    );
    other.commit().await.expect("commit");
    drop(other);

    let mut observer = server.connect("cut_lock").await;
    let open = "SELECT COUNT(*) FROM information_schema.innodb_trx t \
                JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id \
                WHERE p.DB = 'cut_lock'";
    support::eventually(
        Duration::from_secs(1),
        "no transaction left open",
        async || support::number(&mut observer, open).await == 0,
    )
    .await;
    pool.close().await;
}
