//! The manager's view of a dirty connection, and its reset, called directly on a connection
//! the test dirties (`tests/reset_on_return.rs` does the same through `pool.get()`).
//!
//! The tests share one `mariadbd` (started by the first, killed when the binary ends), each
//! in a database of its own.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::Duration;

use mysql_example::{Error, MysqlConn, MysqlManager};
use pool::Manager;
use tokio::time::timeout;

/// The init statement of these tests' managers.
const INIT: &str = "SET SESSION innodb_lock_wait_timeout = 7";

/// A manager for a fresh database `name` (with table `t(id INT PRIMARY KEY)`) and one of
/// its connections.
async fn connected(name: &str) -> (MysqlManager, MysqlConn) {
    let url = support::shared().await.database(name).await;
    let manager = MysqlManager::new(&url).expect("a valid URL").init([INIT]);
    let mut conn = timeout(Duration::from_secs(5), manager.connect())
        .await
        .expect("connect within 5 s")
        .expect("connect");
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .expect("create t");
    (manager, conn)
}

/// `Manager::reset`, within 5 s.
async fn reset(manager: &MysqlManager, conn: &mut MysqlConn) {
    timeout(Duration::from_secs(5), Manager::reset(manager, conn))
        .await
        .expect("reset within 5 s")
        .expect("reset");
}

async fn number(conn: &mut MysqlConn, sql: &str) -> Option<i64> {
    conn.query_first::<Option<i64>>(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .flatten()
}

#[tokio::test]
async fn plain_statements_and_a_committed_transaction_need_no_reset() {
    let (manager, mut conn) = connected("reset_clean").await;
    assert!(!manager.needs_reset(&conn), "{:?}", conn.state());
    conn.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    conn.begin().await.expect("begin");
    conn.exec_drop("INSERT INTO t VALUES (?)", (2,))
        .await
        .expect("insert");
    conn.commit().await.expect("commit");
    let rows: Vec<i64> = conn
        .query("SELECT id FROM t ORDER BY id")
        .await
        .expect("select");
    assert_eq!(rows, [1, 2]);
    assert!(
        !manager.needs_reset(&conn),
        "nothing is left open: {:?}",
        conn.state()
    );
    assert_eq!(
        number(&mut conn, "SELECT @@innodb_lock_wait_timeout").await,
        Some(7)
    );
}

#[tokio::test]
async fn reset_rolls_back_an_open_transaction_on_the_same_connection() {
    let (manager, mut conn) = connected("reset_transaction").await;
    let id = conn.id();
    conn.begin().await.expect("begin");
    assert!(
        conn.state().in_transaction,
        "the server says a transaction is open"
    );
    conn.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    assert!(manager.needs_reset(&conn));
    assert!(!manager.is_broken(&mut conn));

    reset(&manager, &mut conn).await;
    assert!(!manager.needs_reset(&conn), "{:?}", conn.state());
    assert_eq!(conn.id(), id, "reset, not replaced");
    assert_eq!(number(&mut conn, "SELECT @@in_transaction").await, Some(0));
    assert_eq!(number(&mut conn, "SELECT COUNT(*) FROM t").await, Some(0));
    assert_eq!(manager.counts().resets, 1);
}

#[tokio::test]
async fn reset_clears_user_variables_and_session_settings_and_runs_init_again() {
    let (manager, mut conn) = connected("reset_session").await;
    conn.query_drop("SET @x = 1").await.expect("set @x");
    assert!(conn.state().session_changed);
    assert!(manager.needs_reset(&conn));
    conn.query_drop("SET SESSION innodb_lock_wait_timeout = 9")
        .await
        .expect("set a session variable");
    conn.query_drop("CREATE TEMPORARY TABLE tmp (id INT)")
        .await
        .expect("a temporary table");

    reset(&manager, &mut conn).await;
    assert!(!manager.needs_reset(&conn), "{:?}", conn.state());
    assert_eq!(
        number(&mut conn, "SELECT @x").await,
        None,
        "no user variable"
    );
    assert_eq!(
        number(&mut conn, "SELECT @@innodb_lock_wait_timeout").await,
        Some(7),
        "the init statement ran again after COM_RESET_CONNECTION"
    );
    let temporary = conn.query_drop("SELECT * FROM tmp").await;
    assert!(
        matches!(temporary, Err(Error::Server(_))),
        "the temporary table is gone: {temporary:?}"
    );
}

#[tokio::test]
async fn autocommit_off_is_a_session_change_and_its_transaction_is_rolled_back() {
    let (manager, mut conn) = connected("reset_autocommit").await;
    conn.query_drop("SET autocommit = 0")
        .await
        .expect("autocommit off");
    conn.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let state = conn.state();
    assert!(state.session_changed && state.in_transaction, "{state:?}");

    reset(&manager, &mut conn).await;
    assert_eq!(number(&mut conn, "SELECT @@autocommit").await, Some(1));
    assert_eq!(number(&mut conn, "SELECT COUNT(*) FROM t").await, Some(0));
}

#[tokio::test]
async fn reset_reads_off_a_result_left_unread() {
    let (manager, mut conn) = connected("reset_unread").await;
    let sql = "SELECT seq FROM seq_1_to_10000";
    {
        // One row read, the other 9999 left on the connection.
        let mut rows = conn.query_iter(sql).await.expect("query");
        let first = rows.next().await.expect("a row").expect("one row at least");
        assert_eq!(mysql_async::from_row::<i64>(first), 1);
    }
    assert!(conn.state().unread_result);
    assert!(manager.needs_reset(&conn));

    reset(&manager, &mut conn).await;
    assert!(!manager.needs_reset(&conn), "{:?}", conn.state());
    assert_eq!(number(&mut conn, "SELECT 42").await, Some(42));

    // Read to its end, a result leaves nothing behind.
    let mut rows = conn.query_iter(sql).await.expect("query");
    let mut read = 0;
    while rows.next().await.expect("a row").is_some() {
        read += 1;
    }
    assert_eq!(read, 10_000);
    assert!(!manager.needs_reset(&conn), "{:?}", conn.state());
}

#[tokio::test]
async fn begin_refuses_to_commit_an_open_transaction_implicitly() {
    let (_manager, mut conn) = connected("reset_begin_twice").await;
    conn.begin().await.expect("begin");
    conn.query_drop("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let again = conn.begin().await;
    assert!(matches!(again, Err(Error::TransactionOpen)), "{again:?}");
    conn.rollback().await.expect("rollback");
    assert_eq!(number(&mut conn, "SELECT COUNT(*) FROM t").await, Some(0));
}

#[tokio::test]
async fn a_connection_cut_mid_command_is_broken_and_refuses_a_reset() {
    let (manager, mut conn) = connected("reset_cut").await;
    let cut = timeout(
        Duration::from_millis(100),
        conn.query_drop("SELECT SLEEP(5)"),
    )
    .await;
    assert!(cut.is_err(), "the sleep is cut by the timeout");
    assert!(conn.state().cut);
    assert!(
        conn.inner().is_disconnected(),
        "mysql_async counts it disconnected too"
    );
    assert!(manager.is_broken(&mut conn));
    let reset = Manager::reset(&manager, &mut conn).await;
    assert!(matches!(reset, Err(Error::Unusable(_))), "{reset:?}");
    assert_eq!(manager.counts().reset_failures, 1);
    // Closing it kills the sleep (tests/cut_command.rs checks the server's side).
    timeout(Duration::from_secs(5), manager.close(conn))
        .await
        .expect("close within 5 s");
    assert_eq!(manager.counts().kills, 1);
}
