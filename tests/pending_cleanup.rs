//! Requests that end without their response (a request timeout, a caller that leaves) leave
//! no pending entry behind on a pooled connection, and their late responses harm nothing.

mod support;

use std::time::Duration;

use pool::Pool;
use support::{STALL, bounded, chain, echoed, options, pool_with, recv_n, stalling_server, until};
use tokio::sync::{mpsc, watch};
use transport_json::server::RunningServer;
use transport_json::{Error, JsonManager, Message};

const STALLED: usize = 20;

struct Setup {
    server: RunningServer,
    pool: Pool<JsonManager>,
    arrived: mpsc::UnboundedReceiver<String>,
    release: watch::Sender<bool>,
}

/// A stalling server and a one-connection pool whose requests time out after `timeout`.
/// The connection does not close itself when every pending request stalls past the timeout
/// (that is tests/conn_liveness.rs): here the stalled requests' clean-up is under test.
async fn setup(timeout: Duration) -> Setup {
    let (server, arrived, release) = stalling_server().await;
    let pool = pool_with(
        options(server.local_addr())
            .request_timeout(Some(timeout))
            .close_unresponsive(false),
        1,
    );
    Setup {
        server,
        pool,
        arrived,
        release,
    }
}

fn stalled(i: usize) -> Message {
    Message {
        uid: format!("stalled-{i}"),
        val: STALL.to_owned(),
    }
}

/// Lets the server answer the stalled requests, waits until their late responses have come
/// back and been dropped, and proves the connection still works.
async fn late_responses_are_dropped_and_the_connection_still_works(setup: Setup) {
    let Setup {
        server,
        pool,
        release,
        ..
    } = setup;
    release.send_replace(true);
    let guard = pool.get().await.expect("checkout");
    until(|| guard.unknown_responses() == STALLED as u64).await;
    assert_eq!(guard.pending(), 0);
    assert!(!guard.is_closed());
    let resp = guard.request("after").await.map_err(|e| chain(&e));
    assert_eq!(resp.map(|r| r.val), Ok(echoed("after")));
    drop(guard);

    let status = pool.status();
    assert_eq!(status.counters.created, 1, "{status:?}");
    assert_eq!(status.counters.broken, 0, "{status:?}");
    pool.close().await;
    server.shutdown().await.expect("server shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeouts_leave_no_pending_entry_on_the_pooled_connection() {
    bounded(async {
        let mut setup = setup(Duration::from_millis(200)).await;
        let guard = setup.pool.get().await.expect("checkout");
        let sends = (0..STALLED).map(|i| guard.send(stalled(i)));
        let results = futures::future::join_all(sends).await;
        for result in results {
            match result {
                Err(Error::Timeout(limit)) => assert_eq!(limit, Duration::from_millis(200)),
                other => panic!("expected a timeout, got {:?}", other.map_err(|e| chain(&e))),
            }
        }
        // Every stalled request did reach the server, so each had a pending entry.
        recv_n(&mut setup.arrived, STALLED).await;
        assert_eq!(guard.pending(), 0);
        assert!(
            !guard.is_closed(),
            "a timeout must not close the connection"
        );
        drop(guard);

        late_responses_are_dropped_and_the_connection_still_works(setup).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_request_futures_leave_no_pending_entry_on_the_pooled_connection() {
    bounded(async {
        let mut setup = setup(Duration::from_secs(20)).await;
        let conn = support::checkout(&setup.pool).await;
        let callers: Vec<_> = (0..STALLED)
            .map(|i| {
                let conn = conn.clone();
                tokio::spawn(async move { conn.send(stalled(i)).await })
            })
            .collect();
        // Every request is at the server, and so pending on the connection.
        recv_n(&mut setup.arrived, STALLED).await;
        assert_eq!(conn.pending(), STALLED);

        for caller in &callers {
            caller.abort();
        }
        for caller in callers {
            let joined = caller.await;
            assert!(
                joined.as_ref().is_err_and(|e| e.is_cancelled()),
                "the caller finished instead of being dropped: {joined:?}"
            );
        }
        assert_eq!(conn.pending(), 0);
        assert!(
            !conn.is_closed(),
            "a dropped request must not close the connection"
        );
        drop(conn);

        late_responses_are_dropped_and_the_connection_still_works(setup).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_given_up_by_an_outer_timeout_leave_no_pending_entry() {
    bounded(async {
        let mut setup = setup(Duration::from_secs(20)).await;
        let guard = setup.pool.get().await.expect("checkout");
        let arrived = &mut setup.arrived;
        // Each request is given up by the caller's own select once the server has it.
        for i in 0..STALLED {
            tokio::select! {
                result = guard.send(stalled(i)) => {
                    panic!("request {i} ended: {:?}", result.map_err(|e| chain(&e)));
                }
                uid = arrived.recv() => assert_eq!(uid, Some(format!("stalled-{i}"))),
            }
            assert_eq!(guard.pending(), 0, "request {i} left its entry");
        }
        drop(guard);

        late_responses_are_dropped_and_the_connection_still_works(setup).await;
    })
    .await;
}
