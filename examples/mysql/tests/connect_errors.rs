//! Each way a connect goes wrong gives its own [`Error`] variant, naming what failed, and
//! says whether trying again may help; through the pool, an error no retry fixes (a wrong
//! password, a missing database) reaches the caller at once, and a refused port is retried
//! until the wait timeout, whose error names the refusal.
#![forbid(unsafe_code)]

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use mysql_example::bank::chain;
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
    for (url, named) in [
        ("not a url", "relative URL without a base"),
        ("postgres://root@127.0.0.1:3306/db", "scheme `postgres'"),
        ("mysql://root@127.0.0.1:notaport/db", "invalid port number"),
        (
            "mysql://root@127.0.0.1:3306/db?no_such_option=1",
            "parameter `no_such_option'",
        ),
    ] {
        let error = MysqlManager::new(url).expect_err(url);
        assert!(matches!(error, Error::Url(_)), "{url}: {error:?}");
        let text = chain(&error);
        assert!(
            text.starts_with("invalid MySQL URL") && text.contains(named),
            "{url}: {text}"
        );
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
    assert_eq!(
        error.to_string(),
        format!("connection to 127.0.0.1:{port} refused")
    );
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
    assert_eq!(error.to_string(), "access denied for user \"root\"");
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
    assert_eq!(error.to_string(), "unknown database \"no_such_database\"");
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

/// A pool of one over `url`, with the pool's defaults but `wait` (`None`: its default,
/// 30 s) and a 2 s connect timeout.
fn pool_for(url: &str, wait: Option<Duration>) -> Pool<MysqlManager> {
    let manager = MysqlManager::new(url).expect("a valid URL");
    let builder = Pool::builder(manager)
        .max_size(1)
        .connect_timeout(Duration::from_secs(2));
    match wait {
        Some(wait) => builder.wait_timeout(wait),
        None => builder,
    }
    .build()
    .expect("valid settings")
}

#[tokio::test]
async fn the_pool_hands_a_wrong_password_or_a_missing_database_to_its_caller_at_once() {
    let server = support::shared().await;
    let wrong_password = format!(
        "mysql://root:wrong@127.0.0.1:{}/?prefer_socket=false",
        server.port()
    );
    let wait = Duration::from_secs(10);
    for (url, named) in [
        (wrong_password, "access denied for user \"root\""),
        (
            server.url("no_such_database"),
            "unknown database \"no_such_database\"",
        ),
    ] {
        let pool = pool_for(&url, Some(wait));
        let started = Instant::now();
        let error = timeout(wait, pool.get())
            .await
            .expect("an answer before the wait timeout")
            .expect_err("no connection");
        let elapsed = started.elapsed();
        match &error {
            PoolError::Connect(Error::AccessDenied { .. } | Error::UnknownDatabase { .. }) => {}
            other => panic!("{url}: {other:?}"),
        }
        let text = chain(&error);
        assert!(text.contains(named), "{text}");
        assert!(
            elapsed < wait / 5,
            "{url}: {elapsed:?}, well under the {wait:?} wait timeout"
        );
        assert_eq!(
            pool.status().counters.connect_failures,
            1,
            "{url}: not retried"
        );
        pool.close().await;
    }
}

/// The pool's default wait timeout (30 s) on Tokio's paused clock: a refused connect on
/// loopback fails within the `connect` call, so the clock moves only through the pool's
/// backoff and the wait timeout.
#[tokio::test(start_paused = true)]
async fn the_pool_retries_a_refused_port_until_its_default_wait_timeout_and_names_it() {
    let port = support::free_port();
    let pool = pool_for(&format!("mysql://root@127.0.0.1:{port}/db"), None);
    let started = tokio::time::Instant::now();
    let error = timeout(Duration::from_secs(60), pool.get())
        .await
        .expect("an answer within 60 s")
        .expect_err("no connection");
    let waited = started.elapsed();
    let last = match &error {
        PoolError::Timeout(TimeoutKind::Wait {
            last_connect_error: Some(last),
        }) => last,
        other => panic!("{other:?}"),
    };
    assert!(
        last.contains(&format!("connection to 127.0.0.1:{port} refused")),
        "{last}"
    );
    assert!(
        error.to_string().contains("refused"),
        "the caller's error names the refusal: {error}"
    );
    assert!(
        (Duration::from_secs(30)..Duration::from_secs(31)).contains(&waited),
        "retried until the 30 s wait timeout: {waited:?}"
    );
    let failures = pool.status().counters.connect_failures;
    assert!(failures > 10, "retried with backoff: {failures} connects");
    pool.close().await;
}
