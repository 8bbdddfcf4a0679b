//! `idle_timeout` and `max_lifetime` evict through the background reaper;
//! `min_idle` is refilled; the reaper never takes idle connections below `min_idle`.

mod support;

use std::time::Duration;

use pool::{Pool, Pooled};
use support::Mock;

const TICK: Duration = Duration::from_millis(100);

async fn take(pool: &Pool<Mock>, n: usize) -> Vec<Pooled<Mock>> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(pool.get().await.expect("a connection"));
    }
    conns
}

/// Lets the background task and its spawned connects and closes run, `d` of paused time.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_evicts_idle_connections() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .idle_timeout(Some(Duration::from_secs(1)))
        .max_lifetime(None)
        .reap_interval(TICK)
        .build()
        .expect("valid settings");
    drop(take(&pool, 3).await);
    assert_eq!(pool.status().idle, 3);

    run_for(Duration::from_millis(900)).await;
    assert_eq!(pool.status().idle, 3, "not idle long enough yet");
    assert_eq!(mock.closes_started(), 0);

    run_for(Duration::from_millis(200)).await;
    let status = pool.status();
    assert_eq!(
        (status.size, status.idle),
        (0, 0),
        "evicted within a tick of the timeout"
    );
    mock.until_closes(3).await;
    mock.assert_each_closed_once();
    assert_eq!(pool.status().counters.closed, 3);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_spares_connections_in_use() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .idle_timeout(Some(Duration::from_secs(1)))
        .reap_interval(TICK)
        .build()
        .expect("valid settings");
    let held = pool.get().await.expect("held");
    run_for(Duration::from_secs(5)).await;
    assert_eq!(pool.status().in_use, 1);
    assert_eq!(mock.closes_started(), 0);
    drop(held);
    assert_eq!(pool.status().idle, 1, "idle time starts when it comes back");
    run_for(Duration::from_millis(500)).await;
    assert_eq!(pool.status().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_evicts_idle_connections() {
    let mock = Mock::new();
    let lifetime = Duration::from_secs(10);
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .idle_timeout(None)
        .max_lifetime(Some(lifetime))
        .reap_interval(TICK)
        .build()
        .expect("valid settings");
    let conns = take(&pool, 3).await;
    let expires = Pooled::info(&conns[0])
        .expires()
        .expect("a lifetime is set");
    let jitter = lifetime / 40;
    let created = Pooled::info(&conns[0]).created();
    assert!(expires <= created + lifetime && expires >= created + lifetime - jitter);
    drop(conns);

    // Kept busy: use does not extend a lifetime.
    for _ in 0..90 {
        run_for(TICK).await;
        drop(pool.get().await.expect("in use"));
    }
    // 9 s: the earliest jittered expiry is 9.75 s.
    assert_eq!(pool.status().size, 3);
    assert_eq!(mock.closes_started(), 0);

    run_for(Duration::from_millis(1100)).await;
    let status = pool.status();
    assert_eq!(status.size, 0, "all expired by 10 s plus a tick");
    mock.until_closes(3).await;
    mock.assert_each_closed_once();
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_closes_a_connection_in_use_when_it_comes_back() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .max_lifetime(Some(Duration::from_secs(10)))
        .reap_interval(TICK)
        .build()
        .expect("valid settings");
    let held = pool.get().await.expect("held");
    run_for(Duration::from_secs(11)).await;
    assert_eq!(
        pool.status().in_use,
        1,
        "the reaper leaves connections in use alone"
    );
    drop(held);
    assert_eq!(pool.status().size, 0, "expired: closed on its return");
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert_eq!(pool.get().await.expect("a fresh one").id, 1);
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_filled_after_build() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(2)
        .build()
        .expect("valid settings");
    run_for(Duration::from_millis(1)).await;
    let status = pool.status();
    assert_eq!((status.size, status.idle), (2, 2));
    assert_eq!(mock.connected(), 2);
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_refilled_after_checkouts() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(2)
        .build()
        .expect("valid settings");
    run_for(Duration::from_millis(1)).await;
    let held = take(&pool, 2).await;
    run_for(Duration::from_millis(1)).await;
    let status = pool.status();
    assert_eq!((status.in_use, status.idle, status.size), (2, 2, 4));
    assert_eq!(mock.connected(), 4);
    drop(held);
    assert_eq!(pool.status().idle, 4);
}

#[tokio::test(start_paused = true)]
async fn min_idle_is_refilled_after_a_discard() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(2)
        .reap_interval(TICK)
        .build()
        .expect("valid settings");
    run_for(Duration::from_millis(1)).await;
    let removed = pool.retain(|conn, _| conn.id != 0);
    assert_eq!(removed, 1);
    run_for(Duration::from_millis(1)).await;
    assert_eq!(pool.status().idle, 2);
    assert_eq!(mock.connected(), 3);
}

#[tokio::test(start_paused = true)]
async fn reaper_never_breaks_min_idle() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(6)
        .min_idle(2)
        .idle_timeout(Some(Duration::from_secs(1)))
        .max_lifetime(None)
        .reap_interval(TICK)
        .build()
        .expect("valid settings");
    drop(take(&pool, 6).await);
    assert_eq!(pool.status().idle, 6);
    // Watch every tick for a long time: idle never drops below min_idle, and the surplus goes.
    for _ in 0..100 {
        run_for(TICK).await;
        assert!(
            pool.status().idle >= 2,
            "idle {} below min_idle",
            pool.status().idle
        );
    }
    let status = pool.status();
    assert_eq!((status.idle, status.size), (2, 2));
    mock.until_closes(4).await;
    assert_eq!(
        mock.connected(),
        6,
        "the min_idle ones were kept, not replaced"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_min_idle_connections_are_replaced() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(2)
        .max_lifetime(Some(Duration::from_secs(5)))
        .reap_interval(TICK)
        .build()
        .expect("valid settings");
    run_for(Duration::from_millis(1)).await;
    assert_eq!(mock.connected(), 2);
    run_for(Duration::from_secs(6)).await;
    let status = pool.status();
    assert_eq!((status.idle, status.size), (2, 2), "refilled to min_idle");
    assert_eq!(mock.connected(), 4, "with new connections");
    mock.until_closes(2).await;
    assert_eq!((mock.closes_of(0), mock.closes_of(1)), (1, 1));
}

/// A connection past its lifetime is never handed out, even before the reaper comes by.
#[tokio::test(start_paused = true)]
async fn expired_idle_connection_is_not_handed_out() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .max_lifetime(Some(Duration::from_secs(100)))
        .build()
        .expect("valid settings");
    let conn = pool.get().await.expect("connection 0");
    let expires = Pooled::info(&conn).expires().expect("a lifetime is set");
    drop(conn);
    // The reaper runs every 30 s (the default); stop just between two of its rounds.
    tokio::time::advance(expires - tokio::time::Instant::now()).await;
    let conn = pool.get().await.expect("a fresh connection");
    assert_eq!(conn.id, 1, "the expired one was discarded");
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert_eq!(pool.status().size, 1);
}

/// Built outside a runtime, the pool starts its background task with its first checkout.
#[test]
fn min_idle_fills_once_a_pool_built_outside_a_runtime_is_used() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(4)
        .min_idle(2)
        .build()
        .expect("valid settings");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        run_for(Duration::from_millis(1)).await;
        assert_eq!(mock.connects(), 0, "nothing runs before the first checkout");
        drop(pool.get().await.expect("a connection"));
        run_for(Duration::from_millis(1)).await;
        let status = pool.status();
        assert_eq!((status.idle, status.size), (2, 2));
    });
}
