//! Leak reports: with `leak_threshold` set, a `Pooled` or `Lease` held longer than it is
//! reported once, while still held, as a warn event naming the `file:line` that took it, and
//! counted in `Counters::leaks`; an info event says when it comes back. Off by default.

mod support;

use std::time::Duration;

use pool::Pool;
use support::Mock;
use support::logs::Logs;

/// The threshold of these tests.
const THRESHOLD: Duration = Duration::from_secs(5);

fn pool_with(mock: &Mock, threshold: Option<Duration>) -> Pool<Mock> {
    let builder = Pool::builder(mock.clone()).max_size(2).max_streams(4);
    let builder = match threshold {
        Some(threshold) => builder.leak_threshold(threshold),
        None => builder,
    };
    builder.build().expect("valid settings")
}

/// A connection held past the threshold is reported once, within a second, while held,
/// naming the line that took it; its return is logged; a hold under the threshold is not.
#[tokio::test(start_paused = true)]
async fn a_connection_held_too_long_is_reported_once_with_its_line() {
    let (logs, _guard) = Logs::capture();
    let mock = Mock::new();
    let pool = pool_with(&mock, Some(THRESHOLD));
    let short = pool.get().await.expect("a connection");
    let conn = pool.get().await.expect("a connection");
    let site = format!("pool/tests/leaks.rs:{}", line!() - 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(short);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(logs.lines("WARN", "leak_threshold").is_empty(), "not yet");
    assert_eq!(pool.status().counters.leaks, 0);

    // Crossed at 5 s; reported by 6 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warned = logs.lines("WARN", "leak_threshold");
    assert_eq!(warned.len(), 1, "one report: {warned:?}");
    assert!(warned[0].contains(&site), "names {site}: {}", warned[0]);
    assert_eq!(pool.status().counters.leaks, 1);

    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        logs.lines("WARN", "leak_threshold").len(),
        1,
        "once per hold"
    );
    assert_eq!(pool.status().counters.leaks, 1);
    assert!(logs.lines("INFO", "came back").is_empty());

    drop(conn);
    let back = logs.lines("INFO", "came back");
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].contains(&site));
    assert_eq!(
        pool.status().counters.leaks,
        1,
        "the return is not a second leak"
    );
    pool.close().await;
}

/// A lease held too long is reported the same way, each hold once: two leases held at once
/// are two reports.
#[tokio::test(start_paused = true)]
async fn leases_held_too_long_are_reported_each_once() {
    let (logs, _guard) = Logs::capture();
    let mock = Mock::new();
    let pool = pool_with(&mock, Some(THRESHOLD));
    let first = pool.lease().await.expect("a lease");
    let first_site = format!("pool/tests/leaks.rs:{}", line!() - 1);
    let second = pool.try_lease().await.expect("a lease");
    let second_site = format!("pool/tests/leaks.rs:{}", line!() - 1);
    tokio::time::sleep(THRESHOLD + Duration::from_secs(1)).await;
    let warned = logs.lines("WARN", "leak_threshold");
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned.iter().any(|line| line.contains(&first_site)));
    assert!(warned.iter().any(|line| line.contains(&second_site)));
    assert_eq!(pool.status().counters.leaks, 2);
    drop((first, second));
    assert_eq!(logs.lines("INFO", "came back").len(), 2);
    pool.close().await;
}

/// Off by default: nothing is reported however long a connection is held.
#[tokio::test(start_paused = true)]
async fn no_report_without_a_threshold() {
    let (logs, _guard) = Logs::capture();
    let mock = Mock::new();
    let pool = pool_with(&mock, None);
    let conn = pool.get().await.expect("a connection");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(conn);
    assert!(logs.lines("WARN", "leak_threshold").is_empty());
    assert_eq!(pool.status().counters.leaks, 0);
    pool.close().await;
}
