//! The liveness rule of `Conn` ([`ConnectOptions::close_unresponsive`]): a connection whose
//! server answers no pending request for the whole request timeout is closed as
//! unresponsive, whatever else it sends; one that answers, however slowly within the
//! timeout, is not. Scripted servers on loopback TCP.
//!
//! On the real clock, with wall-clock bounds: Tokio's paused clock runs ahead while a
//! response is still in flight on the loopback (it advances whenever the runtime is idle,
//! and on a busy machine the kernel may deliver the bytes a little later), which made
//! answered requests time out.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pool::Manager;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use transport_json::codec::JsonCodec;
use transport_json::{CloseCause, Conn, ConnectOptions, Error, JsonManager, Message, Resp};

/// The server's view of one connection: decodes requests, encodes responses.
type ServerSide = Framed<TcpStream, JsonCodec<Message, Resp>>;

/// The request timeout of every test; the sweep runs every eighth of it.
const LIMIT: Duration = Duration::from_millis(200);

/// The latest a dead connection may be found dead after its oldest request was sent: the
/// timeout and one sweep interval, plus a generous margin for a loaded machine (without the
/// liveness rule it is never found dead).
const LATEST: Duration = Duration::from_secs(2);

/// A hang guard: a test that waits for something that never comes fails instead of hanging.
const BOUND: Duration = Duration::from_secs(20);

async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .expect("the test did not finish within its bound")
}

/// Accepts one connection and runs `script` on it.
async fn serve_one<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(ServerSide) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        script(Framed::new(stream, JsonCodec::new())).await;
    });
    addr
}

fn options(addr: SocketAddr) -> ConnectOptions {
    ConnectOptions::new(addr.to_string()).request_timeout(Some(LIMIT))
}

fn answer(msg: &Message) -> Resp {
    Resp {
        uid: msg.uid.clone(),
        val: format!("re: {}", msg.val),
        ts: "now".to_owned(),
        err: None,
    }
}

/// A response to a `Uid` the client never sent.
fn stray(n: usize) -> Resp {
    Resp {
        uid: format!("stray-{n}"),
        val: "re: nothing".to_owned(),
        ts: "now".to_owned(),
        err: None,
    }
}

/// Answers every request at once, but always under a `Uid` it never received.
async fn strays_only(mut side: ServerSide) {
    let mut n = 0;
    while let Some(Ok(_)) = side.next().await {
        n += 1;
        if side.send(stray(n)).await.is_err() {
            return;
        }
    }
}

/// Answers one request per second, oldest first (the first at once).
async fn one_per_second(mut side: ServerSide) {
    let mut queue = VecDeque::new();
    let mut free_at = Instant::now();
    loop {
        tokio::select! {
            next = side.next() => match next {
                Some(Ok(msg)) => queue.push_back(msg),
                _ => return,
            },
            () = tokio::time::sleep_until(free_at), if !queue.is_empty() => {
                let Some(msg) = queue.pop_front() else { continue };
                if side.send(answer(&msg)).await.is_err() {
                    return;
                }
                free_at = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}

/// Answers each request `delay` after it arrived, requests in parallel.
async fn delayed(mut side: ServerSide, delay: Duration) {
    let (tx, mut due) = mpsc::unbounded_channel();
    loop {
        tokio::select! {
            next = side.next() => match next {
                Some(Ok(msg)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(answer(&msg));
                    });
                }
                _ => return,
            },
            Some(resp) = due.recv() => {
                if side.send(resp).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn is_unresponsive(err: &Error) -> bool {
    matches!(err, Error::Closed(CloseCause::Unresponsive(limit)) if *limit == LIMIT)
}

#[tokio::test]
async fn a_server_answering_only_unknown_uids_is_closed_as_unresponsive() {
    bounded(async {
        let addr = serve_one(strays_only).await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let started = Instant::now();
        let first = tokio::spawn({
            let conn = conn.clone();
            async move {
                let result = conn.request("first").await;
                (result, started.elapsed(), conn.is_closed())
            }
        });
        // A second request sent half a timeout later (a spacing, not a wait for an event):
        // still pending, not timed out, when the connection is found dead.
        tokio::time::sleep(LIMIT / 2).await;
        let second = conn.request("second").await.expect_err("never answered");
        assert!(is_unresponsive(&second), "{second:?}");

        let (first, after, closed) = first.await.expect("the first caller");
        assert!(
            matches!(first, Err(Error::Timeout(limit)) if limit == LIMIT),
            "{first:?}"
        );
        assert!(
            closed,
            "the connection is closed before the timeout is reported"
        );
        assert!(
            (LIMIT..=LATEST).contains(&after),
            "found dead after {after:?}"
        );
        conn.closed().await;
        assert!(matches!(
            conn.close_cause(),
            Some(CloseCause::Unresponsive(limit)) if limit == LIMIT
        ));
        assert!(conn.unknown_responses() >= 1, "the strays are counted");
        assert_eq!(conn.pending(), 0);
        let refused = conn.request("third").await.expect_err("closed");
        assert!(is_unresponsive(&refused), "{refused:?}");
    })
    .await;
}

#[tokio::test]
async fn a_server_answering_one_request_a_second_is_closed_as_unresponsive() {
    bounded(async {
        const TASKS: usize = 16;
        const ROUNDS: usize = 50;
        let addr = serve_one(one_per_second).await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        // Each caller sends until the connection refuses it (at most ROUNDS requests).
        let callers: Vec<_> = (0..TASKS)
            .map(|t| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let mut answered = 0;
                    for round in 0..ROUNDS {
                        match conn.request(format!("{t}-{round}")).await {
                            Ok(_) => answered += 1,
                            Err(Error::Timeout(_)) => {}
                            Err(err) => return (answered, Some(err)),
                        }
                    }
                    (answered, None)
                })
            })
            .collect();
        tokio::time::timeout(LATEST, conn.closed())
            .await
            .expect("the connection was found dead in time");
        let mut answered = 0;
        for caller in callers {
            let (got, last) = caller.await.expect("a caller");
            answered += got;
            let last = last.expect("every caller ends on the closed connection");
            assert!(is_unresponsive(&last), "{last:?}");
        }
        assert_eq!(answered, 1, "only the first request was answered in time");
    })
    .await;
}

#[tokio::test]
async fn a_slow_server_within_the_timeout_is_not_closed() {
    bounded(async {
        const TASKS: usize = 8;
        const ROUNDS: usize = 5;
        let addr = serve_one(|side| delayed(side, LIMIT / 2)).await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        for spell in 0..2 {
            let callers: Vec<_> = (0..TASKS)
                .map(|t| {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        for round in 0..ROUNDS {
                            let val = format!("{spell}-{t}-{round}");
                            let resp = conn.request(&val).await.expect("answered in time");
                            assert_eq!(resp.val, format!("re: {val}"));
                        }
                    })
                })
                .collect();
            for caller in callers {
                caller.await.expect("a caller");
            }
            // Idle for longer than the timeout: the next spell starts afresh.
            tokio::time::sleep(LIMIT * 3).await;
        }
        assert!(!conn.is_closed());
        assert_eq!(conn.unknown_responses(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_timeout_while_other_requests_are_answered_does_not_close_the_connection() {
    bounded(async {
        // Never answers `stall`; answers everything else at once.
        let addr = serve_one(|mut side| async move {
            while let Some(Ok(msg)) = side.next().await {
                if msg.val != "stall" && side.send(answer(&msg)).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let stalled = tokio::spawn({
            let conn = conn.clone();
            async move { conn.request("stall").await }
        });
        // Answered requests throughout the stalled one's wait, and a little after it.
        for i in 0..12 {
            tokio::time::sleep(LIMIT / 4).await;
            let resp = conn.request(format!("v{i}")).await.expect("answered");
            assert_eq!(resp.val, format!("re: v{i}"));
        }
        let stalled = stalled.await.expect("the stalled caller");
        assert!(
            matches!(stalled, Err(Error::Timeout(limit)) if limit == LIMIT),
            "{stalled:?}"
        );
        assert!(
            !conn.is_closed(),
            "the server answered other requests: it is alive"
        );
        assert_eq!(
            conn.request("after").await.expect("answered").val,
            "re: after"
        );
    })
    .await;
}

#[tokio::test]
async fn responses_to_unknown_uids_are_no_activity_for_the_pool_check() {
    bounded(async {
        const STRAYS: usize = 100;
        let (pings_tx, mut pings) = mpsc::unbounded_channel();
        // Answers each request, then sends a stray response every 10 ms, at most STRAYS.
        let addr = serve_one(move |mut side| async move {
            let mut strays = 0;
            let mut every = tokio::time::interval(Duration::from_millis(10));
            loop {
                tokio::select! {
                    next = side.next() => match next {
                        Some(Ok(msg)) => {
                            let _ = pings_tx.send(msg.val.clone());
                            if side.send(answer(&msg)).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    },
                    _ = every.tick(), if strays < STRAYS => {
                        strays += 1;
                        if side.send(stray(strays)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        let manager = JsonManager::new(options(addr)).check_idle(Duration::from_millis(400));
        let mut conn = manager.connect().await.expect("connect");
        conn.request("work").await.expect("answered");
        assert_eq!(pings.recv().await.as_deref(), Some("work"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            conn.unknown_responses() >= 10,
            "the strays came in meanwhile"
        );
        let idle = conn.idle_for();
        assert!(idle >= Duration::from_millis(500), "idle for only {idle:?}");
        manager.check(&mut conn).await.expect("healthy");
        assert_eq!(
            pings.recv().await.as_deref(),
            Some(transport_json::manager::PING_VAL),
            "the check sent a real round trip"
        );
        assert!(!conn.is_closed());
    })
    .await;
}
