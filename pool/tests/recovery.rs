//! The server goes down, then comes back. Checkouts fail within their timeouts
//! carrying the last connect error, then recover, and never more than `max_size` connects are
//! in flight at once (no thundering herd).

mod support;

use std::time::Duration;

use pool::{Pool, PoolError, TimeoutKind};
use support::{Mock, Plan};
use tokio::time::Instant;

const MAX: usize = 3;
const WAIT: Duration = Duration::from_secs(2);
const CONNECT: Duration = Duration::from_secs(1);
const REFUSED: &str = "connection refused (os error 111)";

fn pool_of(mock: &Mock) -> Pool<Mock> {
    Pool::builder(mock.clone())
        .max_size(MAX)
        .wait_timeout(WAIT)
        .connect_timeout(CONNECT)
        .check_interval(Duration::ZERO)
        .build()
        .expect("valid settings")
}

/// 30 callers at once against a server that refuses after 400 ms.
async fn storm(
    pool: &Pool<Mock>,
    callers: usize,
) -> Vec<(Result<u64, PoolError<support::MockError>>, Duration)> {
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = pool.get().await.map(|conn| conn.id);
            (result, started.elapsed())
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

#[tokio::test(start_paused = true)]
async fn server_down_then_back_times_out_naming_the_cause_then_recovers() {
    let mock = Mock::new();
    let pool = pool_of(&mock);
    // Up: a few connections in use, then idle.
    drop(storm(&pool, 10).await);
    assert_eq!(pool.status().idle, MAX);

    // Down: the idle connections fail their checks, new connects are refused after 400 ms.
    for id in 0..MAX as u64 {
        mock.fail_checks_of(id);
    }
    mock.set_connect(Plan::fail(REFUSED).after(Duration::from_millis(400)));
    let results = storm(&pool, 30).await;
    for (result, elapsed) in &results {
        match result {
            Err(PoolError::Timeout(TimeoutKind::Wait {
                last_connect_error: Some(text),
            })) => assert_eq!(text, REFUSED, "the wait timeout names the cause"),
            other => panic!("expected a wait timeout naming the refusal, got {other:?}"),
        }
        // Connects are retried within WAIT; one begun before the deadline may run past it.
        assert!(*elapsed <= WAIT + CONNECT, "{elapsed:?}");
    }
    assert!(
        mock.max_in_flight() <= MAX,
        "{} connects at once",
        mock.max_in_flight()
    );
    let status = pool.status();
    assert_eq!(
        (status.size, status.connecting, status.waiting),
        (0, 0, 0),
        "{status:?}"
    );

    // Back: every caller is served, by at most MAX new connections, MAX connects at a time.
    mock.set_connect(Plan::ok().after(Duration::from_millis(20)));
    let connected_before = mock.connected();
    let results = storm(&pool, 30).await;
    for (result, elapsed) in &results {
        assert!(result.is_ok(), "{result:?}");
        assert!(*elapsed <= WAIT, "{elapsed:?}");
    }
    assert_eq!(mock.connected() - connected_before, MAX);
    assert!(mock.max_in_flight() <= MAX);
    let status = pool.status();
    assert_eq!((status.size, status.idle), (MAX, MAX));
}

/// While the server is down, connects in flight never exceed max_size, however many callers.
#[tokio::test(start_paused = true)]
async fn outage_never_has_more_than_max_size_connects_in_flight() {
    let mock = Mock::new();
    mock.set_connect(Plan::fail(REFUSED).after(Duration::from_millis(50)));
    let pool = pool_of(&mock);
    let results = storm(&pool, 200).await;
    assert!(results.iter().all(|(r, _)| r.is_err()));
    assert_eq!(
        mock.max_in_flight(),
        MAX,
        "connects ran in parallel, but only up to MAX"
    );
    let status = pool.status();
    assert_eq!((status.size, status.connecting, status.waiting), (0, 0, 0));
    assert_eq!(
        status.counters.connect_failures,
        mock.connect_failures() as u64
    );
}

/// A connect that times out while the server hangs is remembered as the cause too.
#[tokio::test(start_paused = true)]
async fn wait_timeout_during_a_hang_names_the_connect_timeout() {
    let mock = Mock::new();
    mock.set_connect(Plan::hang());
    let pool = Pool::builder(mock.clone())
        .max_size(1)
        .wait_timeout(Duration::from_millis(1500))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings");
    let results = storm(&pool, 3).await;
    let texts: Vec<_> = results
        .iter()
        .filter_map(|(r, _)| match r {
            Err(PoolError::Timeout(TimeoutKind::Wait {
                last_connect_error: Some(text),
            })) => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert!(!texts.is_empty(), "{results:?}");
    assert!(texts.iter().all(|t| t.contains("timed out")), "{texts:?}");
}
