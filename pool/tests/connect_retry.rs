//! A failed connect is retried with capped, jittered exponential backoff inside
//! the caller's `wait_timeout` (as bb8 and HikariCP do), so a server restart does not fail the
//! first caller; `fail_fast` and `try_get` report the first failure at once.

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool::{Manager, Pool, PoolError, TimeoutKind};
use support::{Mock, MockError, Plan};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(3);

fn pool_of(mock: &Mock) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(2)
        .wait_timeout(WAIT)
        .build()
        .expect("valid settings")
}

#[tokio::test(start_paused = true)]
async fn refused_connects_are_retried_until_the_server_is_back() {
    let mock = Mock::new();
    mock.set_connect(Plan::fail("connection refused"));
    let pool = pool_of(&mock);
    // The server listens again after 1 s.
    let restart = {
        let mock = mock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            mock.set_connect(Plan::ok());
        })
    };
    let started = Instant::now();
    let conn = pool.get().await.expect("reached once the server is back");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    // The pause before the first try after the restart is at most the capped backoff (1 s).
    assert!(elapsed <= Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(conn.id, 0);
    assert!(mock.connect_failures() >= 3, "retried with backoff");
    let status = pool.status();
    assert_eq!(status.counters.timeouts, 0);
    assert_eq!(
        status.counters.connect_failures,
        mock.connect_failures() as u64
    );
    restart.await.expect("task");
}

#[tokio::test(start_paused = true)]
async fn retries_end_at_the_wait_timeout_carrying_the_last_error() {
    let mock = Mock::new();
    mock.set_connect(Plan::fail("connection refused"));
    let pool = pool_of(&mock);
    let started = Instant::now();
    let error = pool.get().await.expect_err("the server never comes back");
    assert_eq!(
        started.elapsed(),
        WAIT,
        "the last pause ends at the deadline"
    );
    match &error {
        PoolError::Timeout(TimeoutKind::Wait {
            last_connect_error: Some(text),
        }) => assert_eq!(text, "connection refused"),
        other => panic!("expected a wait timeout naming the refusal, got {other:?}"),
    }
    let status = pool.status();
    assert_eq!(status.counters.timeouts, 1, "one timeout, returned once");
    assert_eq!((status.size, status.connecting), (0, 0), "no slot held");
}

#[tokio::test(start_paused = true)]
async fn fail_fast_reports_the_first_refusal() {
    let mock = Mock::new();
    mock.set_connect(Plan::fail("connection refused"));
    let pool = Pool::builder(mock.clone())
        .wait_timeout(WAIT)
        .fail_fast(true)
        .build()
        .expect("valid settings");
    let started = Instant::now();
    match pool.get().await {
        Err(PoolError::Connect(MockError(text))) => assert_eq!(text, "connection refused"),
        other => panic!("expected the connect error, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(mock.connects(), 1);
}

#[tokio::test(start_paused = true)]
async fn try_get_never_retries() {
    let mock = Mock::new();
    mock.set_connect(Plan::fail("connection refused"));
    let pool = pool_of(&mock);
    assert!(matches!(pool.try_get().await, Err(PoolError::Connect(_))));
    assert_eq!(mock.connects(), 1);
}

/// A manager whose connects always fail, recording when each was made.
#[derive(Clone, Default)]
struct Refusing(Arc<Mutex<Vec<Instant>>>);

impl Manager for Refusing {
    type Connection = ();
    type Error = MockError;

    fn connect(&self) -> impl Future<Output = Result<(), MockError>> + Send {
        self.0.lock().expect("not poisoned").push(Instant::now());
        async { Err(MockError("refused".into())) }
    }

    async fn check(&self, _conn: &mut ()) -> Result<(), MockError> {
        Ok(())
    }
}

/// One caller's pauses between connects double from the first, stay within [half, whole] of
/// that (the jitter), and stop growing at the cap.
#[tokio::test(start_paused = true)]
async fn backoff_doubles_with_jitter_up_to_its_cap() {
    let manager = Refusing::default();
    let first = Duration::from_millis(100);
    let max = Duration::from_millis(800);
    let pool = Pool::builder(manager.clone())
        .max_size(1)
        .wait_timeout(Duration::from_secs(10))
        .connect_backoff(first, max)
        .build()
        .expect("valid settings");
    assert!(pool.get().await.is_err());
    let times = manager.0.lock().expect("not poisoned").clone();
    assert!(times.len() > 8, "{} connects", times.len());
    let mut jittered = false;
    for (n, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let full = (first * (1 << n.min(20))).min(max);
        // The last pause may be cut short by the deadline.
        if pair[1] - times[0] < Duration::from_secs(10) - max {
            assert!(
                gap >= full / 2 && gap <= full,
                "pause {n}: {gap:?} for {full:?}"
            );
            jittered |= gap != full && gap != full / 2;
        }
    }
    assert!(jittered, "the pauses are drawn at random");
}

/// Many callers against a refusing server: never more than `max_size` connects at once, and
/// each caller gets the wait timeout naming the cause.
#[tokio::test(start_paused = true)]
async fn retrying_callers_never_exceed_max_size_connects() {
    let mock = Mock::new();
    mock.set_connect(Plan::fail("connection refused").after(Duration::from_millis(30)));
    let pool = pool_of(&mock);
    let mut callers = Vec::new();
    for _ in 0..50 {
        let pool = pool.clone();
        callers.push(tokio::spawn(async move { pool.get().await.map(|_| ()) }));
    }
    for caller in callers {
        let result = caller.await.expect("task");
        assert!(
            matches!(
                &result,
                Err(PoolError::Timeout(TimeoutKind::Wait {
                    last_connect_error: Some(_)
                }))
            ),
            "{result:?}"
        );
    }
    assert_eq!(
        mock.max_in_flight(),
        2,
        "connects ran two at a time, no more"
    );
    let status = pool.status();
    assert_eq!((status.size, status.connecting, status.waiting), (0, 0, 0));
}

/// The mock, with `is_retryable` saying no to an error that names a denial (a wrong
/// password, say).
#[derive(Clone)]
struct Judging(Mock);

impl Manager for Judging {
    type Connection = support::MockConn;
    type Error = MockError;

    async fn connect(&self) -> Result<support::MockConn, MockError> {
        self.0.connect().await
    }

    async fn check(&self, conn: &mut support::MockConn) -> Result<(), MockError> {
        self.0.check(conn).await
    }

    fn is_retryable(&self, error: &MockError) -> bool {
        !error.0.contains("denied")
    }
}

/// An error no retry can fix reaches the caller at once, for `get` and `lease`, while a
/// refusal before it is still retried; the slot is not held.
#[tokio::test(start_paused = true)]
async fn an_error_that_no_retry_fixes_is_returned_at_once() {
    let mock = Mock::new();
    let pool = Pool::builder(Judging(mock.clone()))
        .max_size(2)
        .max_streams(2)
        .wait_timeout(WAIT)
        .build()
        .expect("valid settings");
    mock.set_connect(Plan::fail("access denied"));
    let started = Instant::now();
    match pool.get().await {
        Err(PoolError::Connect(MockError(text))) => assert_eq!(text, "access denied"),
        other => panic!("expected the connect error at once, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::ZERO, "no retry, no wait");
    assert_eq!(mock.connects(), 1);
    match pool.lease().await {
        Err(PoolError::Connect(MockError(text))) => assert_eq!(text, "access denied"),
        other => panic!("expected the connect error at once, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(mock.connects(), 2);

    // A refusal is retried; the denial after it ends the retries at once.
    mock.push_connect(Plan::fail("connection refused"));
    match pool.get().await {
        Err(PoolError::Connect(MockError(text))) => assert_eq!(text, "access denied"),
        other => panic!("expected the denial after one retry, got {other:?}"),
    }
    assert_eq!(mock.connects(), 4, "the refusal, then the denial");
    assert!(started.elapsed() < WAIT);
    let status = pool.status();
    assert_eq!((status.size, status.connecting), (0, 0), "no slot held");
    assert_eq!(status.counters.timeouts, 0);
}
