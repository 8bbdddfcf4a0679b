//! Each way a connect goes wrong gives its own [`Error`] variant, and says whether trying
//! again may help.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use mysql_example::{Error, MysqlManager};
use pool::{Manager, Pool, PoolError, TimeoutKind};
use tokio::time::timeout;

async fn connect(url: &str) -> Error {
    let manager = MysqlManager::new(url).expect("a valid URL");
    timeout(Duration::from_secs(5), manager.connect())
        .await
        .expect("an answer within 5 s")
        .expect_err("the connect fails")
}

#[test]
fn a_wrong_url_is_refused_before_any_connect_and_not_retryable() {
    for url in [
        "not a url",
        "postgres://root@127.0.0.1:3306/db",
        "mysql://root@127.0.0.1:notaport/db",
        "mysql://root@127.0.0.1:3306/db?no_such_option=1",
    ] {
        let error = MysqlManager::new(url).expect_err(url);
        assert!(matches!(error, Error::Url(_)), "{url}: {error:?}");
        assert!(!error.is_retryable(), "{url}");
    }
}

#[tokio::test]
async fn a_refused_port_is_refused_and_retryable() {
    let port = support::free_port();
    let error = connect(&format!("mysql://root@127.0.0.1:{port}/db")).await;
    match &error {
        Error::Refused { addr, .. } => assert_eq!(addr, &format!("127.0.0.1:{port}")),
        other => panic!("{other:?}"),
    }
    assert!(error.is_retryable());
    assert!(error.to_string().contains("refused"), "{error}");
}

#[tokio::test]
async fn a_wrong_password_is_access_denied_and_not_retryable() {
    let server = support::shared().await;
    let url = format!(
        "mysql://root:wrong@127.0.0.1:{}/?prefer_socket=false",
        server.port()
    );
    let error = connect(&url).await;
    match &error {
        Error::AccessDenied { user, source } => {
            assert_eq!(user, "root");
            assert_eq!(source.code, 1045);
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_missing_database_is_unknown_database_and_not_retryable() {
    let server = support::shared().await;
    let error = connect(&server.url("no_such_database")).await;
    match &error {
        Error::UnknownDatabase { database, source } => {
            assert_eq!(database, "no_such_database");
            assert_eq!(source.code, 1049);
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_failing_init_statement_is_named() {
    let server = support::shared().await;
    let url = server.database("errors_init").await;
    let manager = MysqlManager::new(&url)
        .expect("a valid URL")
        .init(["SET SESSION no_such_variable = 1"]);
    let error = timeout(Duration::from_secs(5), manager.connect())
        .await
        .expect("an answer within 5 s")
        .expect_err("the init statement fails");
    match &error {
        Error::Init { statement, source } => {
            assert_eq!(statement, "SET SESSION no_such_variable = 1");
            assert!(matches!(**source, Error::Server(_)), "{source:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.is_retryable());
}

fn pool_for(url: &str, wait: Duration) -> Pool<MysqlManager> {
    let manager = MysqlManager::new(url).expect("a valid URL");
    Pool::builder(manager)
        .max_size(1)
        .connect_timeout(Duration::from_secs(2))
        .wait_timeout(wait)
        .build()
        .expect("valid settings")
}

#[tokio::test]
async fn the_pool_hands_an_error_no_retry_fixes_to_its_caller_at_once() {
    let server = support::shared().await;
    let pool = pool_for(&server.url("no_such_database"), Duration::from_secs(10));
    let started = Instant::now();
    let error = timeout(Duration::from_secs(5), pool.get())
        .await
        .expect("an answer within 5 s, long before the 10 s wait timeout")
        .expect_err("no connection");
    match error {
        PoolError::Connect(Error::UnknownDatabase { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pool.status().counters.connect_failures, 1);
    pool.close().await;
}

#[tokio::test]
async fn the_pool_retries_a_refused_port_until_its_wait_timeout() {
    let pool = pool_for(
        &format!("mysql://root@127.0.0.1:{}/db", support::free_port()),
        Duration::from_millis(500),
    );
    let error = timeout(Duration::from_secs(5), pool.get())
        .await
        .expect("an answer within 5 s")
        .expect_err("no connection");
    assert!(
        matches!(error, PoolError::Timeout(TimeoutKind::Wait { .. })),
        "{error:?}"
    );
    assert!(
        pool.status().counters.connect_failures > 1,
        "retried: {:?}",
        pool.status()
    );
    pool.close().await;
}
