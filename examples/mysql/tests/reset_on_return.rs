//! End to end through `pool.get()`: a connection that comes back dirty is reset by the pool
//! (`Manager::needs_reset` as the guard drops, `Manager::reset` in a task of the pool's)
//! before the next caller sees it, and it is the same connection (reset, not replaced).
//! `tests/reset.rs` calls the manager's reset directly.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use mysql_example::{MysqlConn, MysqlManager};
use pool::{Pool, Pooled};
use tokio::time::timeout;

const INIT: &str = "SET SESSION innodb_lock_wait_timeout = 7";

/// A pool of one connection over a fresh database `name` with a table `t(id INT)`. The check
/// interval is long, so that no check on checkout can stand in for the reset (the manager's
/// check refuses a dirty connection, and the pool would then open another).
async fn pool_of_one(name: &str) -> Pool<MysqlManager> {
    let server = support::shared().await;
    let url = server.database(name).await;
    let mut setup = server.connect(name).await;
    mysql_async::prelude::Queryable::query_drop(
        &mut setup,
        "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB",
    )
    .await
    .expect("create t");
    let manager = MysqlManager::new(&url).expect("a valid URL").init([INIT]);
    Pool::builder(manager)
        .max_size(1)
        .check_interval(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(2))
        .wait_timeout(Duration::from_secs(3))
        .build()
        .expect("valid settings")
}

async fn get(pool: &Pool<MysqlManager>) -> Pooled<MysqlManager> {
    timeout(Duration::from_secs(3), pool.get())
        .await
        .expect("a connection within 3 s")
        .expect("a connection")
}

async fn number(conn: &mut MysqlConn, sql: &str) -> Option<i64> {
    conn.query_first::<Option<i64>>(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .flatten()
}

#[tokio::test]
async fn a_transaction_left_open_is_rolled_back_for_the_next_caller() {
    let pool = pool_of_one("return_transaction").await;
    let mut conn = get(&pool).await;
    let id = conn.id();
    conn.begin().await.expect("begin");
    conn.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    drop(conn);

    let mut next = get(&pool).await;
    assert_eq!(
        number(&mut next, "SELECT @@in_transaction").await,
        Some(0),
        "the next caller finds no open transaction"
    );
    assert_eq!(number(&mut next, "SELECT COUNT(*) FROM t").await, Some(0));
    assert!(!next.needs_reset(), "{:?}", next.state());
    assert_eq!(
        next.id(),
        id,
        "the same connection, reset rather than replaced"
    );
    let status = pool.status();
    assert_eq!(status.counters.created, 1, "{status:?}");
    assert_eq!(status.counters.resets, 1, "{status:?}");
    assert_eq!(pool.manager().counts().resets, 1);
    drop(next);
    pool.close().await;
}

#[tokio::test]
async fn a_user_variable_set_is_gone_for_the_next_caller() {
    let pool = pool_of_one("return_variable").await;
    let mut conn = get(&pool).await;
    let id = conn.id();
    conn.query_drop("SET @x = 1").await.expect("set @x");
    conn.query_drop("SET SESSION innodb_lock_wait_timeout = 9")
        .await
        .expect("set a session variable");
    drop(conn);

    let mut next = get(&pool).await;
    assert_eq!(
        number(&mut next, "SELECT @x").await,
        None,
        "the next caller finds no user variable"
    );
    assert_eq!(
        number(&mut next, "SELECT @@innodb_lock_wait_timeout").await,
        Some(7),
        "the init statement ran again after the reset"
    );
    assert_eq!(
        next.id(),
        id,
        "the same connection, reset rather than replaced"
    );
    assert_eq!(pool.status().counters.resets, 1);
    drop(next);
    pool.close().await;
}

#[tokio::test]
async fn a_result_left_unread_is_read_off_for_the_next_caller() {
    let pool = pool_of_one("return_unread").await;
    let mut conn = get(&pool).await;
    let id = conn.id();
    {
        // One row read, the other 9999 left on the connection.
        let mut rows = conn
            .query_iter("SELECT seq FROM seq_1_to_10000")
            .await
            .expect("query");
        rows.next().await.expect("a row").expect("one row at least");
    }
    drop(conn);

    let mut next = get(&pool).await;
    assert!(
        !next.needs_reset(),
        "the next caller gets a clean connection: {:?}",
        next.state()
    );
    assert_eq!(number(&mut next, "SELECT 42").await, Some(42));
    assert_eq!(
        next.id(),
        id,
        "the same connection, reset rather than replaced"
    );
    assert_eq!(pool.status().counters.resets, 1);
    drop(next);
    pool.close().await;
}

#[tokio::test]
async fn a_clean_connection_comes_back_without_a_reset() {
    let pool = pool_of_one("return_clean").await;
    let mut conn = get(&pool).await;
    conn.begin().await.expect("begin");
    conn.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    conn.commit().await.expect("commit");
    drop(conn);
    let mut next = get(&pool).await;
    assert_eq!(number(&mut next, "SELECT COUNT(*) FROM t").await, Some(1));
    drop(next);
    assert_eq!(pool.status().counters.resets, 0, "nothing was left dirty");
    pool.close().await;
}

#[tokio::test]
async fn a_connection_cut_mid_command_is_discarded_not_reset() {
    let pool = pool_of_one("return_cut").await;
    let mut conn = get(&pool).await;
    let id = conn.id();
    let cut = timeout(
        Duration::from_millis(100),
        conn.query_drop("SELECT SLEEP(5)"),
    )
    .await;
    assert!(cut.is_err());
    drop(conn);
    let mut next = get(&pool).await;
    assert_ne!(next.id(), id, "never reused");
    assert_eq!(number(&mut next, "SELECT 1").await, Some(1));
    drop(next);
    let status = pool.status();
    assert_eq!(
        (status.counters.resets, status.counters.broken),
        (0, 1),
        "{status:?}"
    );
    pool.close().await;
}
