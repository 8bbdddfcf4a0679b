//! `Conn` over real loopback TCP, against small scripted servers built on a raw
//! `TcpListener`: out-of-order answers, silence, garbage, early closes, stray uids.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use transport_json::codec::{CodecError, JsonCodec};
use transport_json::{CloseCause, Conn, ConnectOptions, Error, Message, Resp};

mod support;

/// The server's view of one connection: decodes requests, encodes responses.
type ServerSide = Framed<TcpStream, JsonCodec<Message, Resp>>;

/// Every test body runs under this bound, so a bug shows as a failure, never a hang.
const BOUND: Duration = Duration::from_secs(20);

async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .expect("the test did not finish within its bound")
}

/// Accepts one connection and runs `script` on it.
async fn serve_one<F, Fut>(script: F) -> (SocketAddr, JoinHandle<()>)
where
    F: FnOnce(ServerSide) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        script(Framed::new(stream, JsonCodec::new())).await;
    });
    (addr, task)
}

fn options(addr: SocketAddr) -> ConnectOptions {
    ConnectOptions::new(addr.to_string())
}

fn answer(msg: &Message) -> Resp {
    Resp {
        uid: msg.uid.clone(),
        val: format!("re: {}", msg.val),
        ts: "now".to_owned(),
        err: None,
    }
}

/// Answers every request at once, in order, until the client goes.
async fn echo(mut side: ServerSide) {
    while let Some(Ok(msg)) = side.next().await {
        if side.send(answer(&msg)).await.is_err() {
            return;
        }
    }
}

/// Reads requests and never answers, until the client goes.
async fn silent(mut side: ServerSide) {
    while let Some(Ok(_)) = side.next().await {}
}

async fn read_n(side: &mut ServerSide, n: usize) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match side.next().await {
            Some(Ok(msg)) => got.push(msg),
            other => panic!("the server expected {n} requests, got {other:?}"),
        }
    }
    got
}

/// Polls `cond` until it holds, yielding to the runtime in between.
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

fn is_closed_by_peer(err: &Error) -> bool {
    matches!(err, Error::Closed(CloseCause::ClosedByPeer))
}

#[tokio::test]
async fn out_of_order_responses_reach_their_callers() {
    bounded(async {
        const N: usize = 20;
        let (addr, server) = serve_one(|mut side| async move {
            let requests = read_n(&mut side, N).await;
            for msg in requests.iter().rev() {
                side.send(answer(msg)).await.expect("answer");
            }
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let calls = (0..N).map(|i| {
            let conn = conn.clone();
            async move { (i, conn.request(format!("v{i}")).await) }
        });
        for (i, result) in futures::future::join_all(calls).await {
            let resp = result.expect("a response");
            assert_eq!(resp.val, format!("re: v{i}"));
        }
        assert_eq!(conn.pending(), 0);
        assert_eq!(conn.unknown_responses(), 0);
        server.await.expect("server");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_sends_are_each_answered_once() {
    bounded(async {
        const N: usize = 5000;
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
        let (addr, _server) = serve_one(move |mut side| async move {
            while let Some(Ok(msg)) = side.next().await {
                let _ = seen_tx.send(msg.uid.clone());
                if side.send(answer(&msg)).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let resp = conn.request(format!("v{i}")).await.expect("a response");
                    assert_eq!(resp.val, format!("re: v{i}"));
                    resp.uid
                })
            })
            .collect();
        let mut uids = HashSet::new();
        for task in tasks {
            assert!(
                uids.insert(task.await.expect("task")),
                "a uid answered twice"
            );
        }
        assert_eq!(uids.len(), N);
        let mut seen = HashSet::new();
        for _ in 0..N {
            seen.insert(seen_rx.recv().await.expect("the server saw a request"));
        }
        assert_eq!(seen, uids, "the server saw exactly the requests answered");
        assert!(seen_rx.try_recv().is_err(), "no request was sent twice");
        assert_eq!(conn.pending(), 0);
        assert_eq!(conn.unknown_responses(), 0);
        assert!(!conn.is_closed());
    })
    .await;
}

#[tokio::test]
async fn server_close_fails_every_pending_request_with_closed_by_peer() {
    bounded(async {
        const N: usize = 10;
        let (addr, server) = serve_one(|mut side| async move {
            read_n(&mut side, N).await;
            // Everything sent was read, so dropping the socket sends a FIN, not a reset.
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let calls = (0..N).map(|i| conn.request(format!("v{i}")));
        for result in futures::future::join_all(calls).await {
            let err = result.expect_err("the server closed");
            assert!(is_closed_by_peer(&err), "{err:?}");
        }
        assert!(conn.is_closed());
        assert_eq!(conn.pending(), 0);
        assert!(matches!(conn.close_cause(), Some(CloseCause::ClosedByPeer)));
        let err = conn.request("after").await.expect_err("closed");
        assert!(is_closed_by_peer(&err), "{err:?}");
        conn.closed().await;
        server.await.expect("server");
    })
    .await;
}

#[tokio::test]
async fn garbage_from_server_fails_pending_with_protocol_error() {
    bounded(async {
        const N: usize = 5;
        let (addr, _server) = serve_one(|mut side| async move {
            read_n(&mut side, N).await;
            let raw = side.get_mut();
            tokio::io::AsyncWriteExt::write_all(raw, b"this is not json\n")
                .await
                .expect("write");
            silent(side).await;
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let calls = (0..N).map(|i| conn.request(format!("v{i}")));
        for result in futures::future::join_all(calls).await {
            match result.expect_err("garbage") {
                Error::Closed(CloseCause::Protocol(codec)) => {
                    assert!(
                        matches!(*codec, CodecError::NotAnObject { found: b't' }),
                        "{codec:?}"
                    );
                }
                other => panic!("expected a protocol error, got {other:?}"),
            }
        }
        assert!(conn.is_closed());
        assert_eq!(conn.pending(), 0);
    })
    .await;
}

#[tokio::test]
async fn over_long_response_frame_is_a_protocol_error() {
    bounded(async {
        let (addr, _server) = serve_one(|mut side| async move {
            let msg = read_n(&mut side, 1).await.remove(0);
            let mut resp = answer(&msg);
            resp.val = "x".repeat(500);
            side.send(resp).await.expect("answer");
            silent(side).await;
        })
        .await;
        let conn = Conn::connect(&options(addr).max_frame(200))
            .await
            .expect("connect");
        match conn.request("hi").await.expect_err("too long") {
            Error::Closed(CloseCause::Protocol(codec)) => {
                assert!(
                    matches!(*codec, CodecError::FrameTooLong { max: 200 }),
                    "{codec:?}"
                );
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert!(conn.is_closed());
    })
    .await;
}

#[tokio::test]
async fn server_closing_mid_frame_fails_pending_with_protocol_error() {
    bounded(async {
        let (addr, _server) = serve_one(|mut side| async move {
            read_n(&mut side, 1).await;
            let raw = side.get_mut();
            tokio::io::AsyncWriteExt::write_all(raw, b"{\"Uid\":\"1\",\"Va")
                .await
                .expect("write");
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let err = conn.request("hi").await.expect_err("cut off");
        match err {
            Error::Closed(CloseCause::Protocol(codec)) => {
                assert!(matches!(*codec, CodecError::Truncated { .. }), "{codec:?}");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn request_timeout_returns_timeout_and_clears_pending() {
    bounded(async {
        let (addr, _server) = serve_one(silent).await;
        let limit = Duration::from_millis(100);
        // Off: a silent server is unresponsive, which closes the connection by default
        // (tests/liveness.rs); here only the timeout is under test.
        let conn = Conn::connect(
            &options(addr)
                .request_timeout(Some(limit))
                .close_unresponsive(false),
        )
        .await
        .expect("connect");
        let calls = (0..5).map(|i| conn.request(format!("v{i}")));
        for result in futures::future::join_all(calls).await {
            match result.expect_err("no answer") {
                Error::Timeout(after) => assert_eq!(after, limit),
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
        assert_eq!(conn.pending(), 0);
        assert!(
            !conn.is_closed(),
            "with close_unresponsive off, a timeout does not close the connection"
        );
    })
    .await;
}

#[tokio::test]
async fn request_timeout_never_fires_early_and_fires_again_after_an_idle_spell() {
    bounded(async {
        let (addr, _server) = serve_one(silent).await;
        let limit = Duration::from_millis(40);
        // Off, so that the silent server's connection outlives its first timeout.
        let conn = Conn::connect(
            &options(addr)
                .request_timeout(Some(limit))
                .close_unresponsive(false),
        )
        .await
        .expect("connect");
        // The first timeout leaves nothing pending, so the connection stops sweeping; the
        // later requests must start it again, each on its own.
        for round in 0..3 {
            let started = tokio::time::Instant::now();
            let err = conn
                .request(format!("r{round}"))
                .await
                .expect_err("no answer");
            assert!(
                matches!(err, Error::Timeout(after) if after == limit),
                "{err:?}"
            );
            let waited = started.elapsed();
            assert!(
                waited >= limit,
                "round {round}: timed out early, after {waited:?}"
            );
            assert_eq!(conn.pending(), 0);
        }
    })
    .await;
}

#[tokio::test]
async fn dropped_futures_leave_no_pending_entry() {
    bounded(async {
        const N: usize = 100;
        let (addr, _server) = serve_one(silent).await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let conn = conn.clone();
                tokio::spawn(async move { conn.request(format!("v{i}")).await })
            })
            .collect();
        until(|| conn.pending() == N).await;
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            assert!(task.await.expect_err("aborted").is_cancelled());
        }
        assert_eq!(conn.pending(), 0);
        assert!(!conn.is_closed());
    })
    .await;
}

#[tokio::test]
async fn duplicate_uid_is_refused_while_the_first_is_in_flight() {
    bounded(async {
        let release = Arc::new(Notify::new());
        let gate = Arc::clone(&release);
        let (addr, _server) = serve_one(move |mut side| async move {
            let first = read_n(&mut side, 1).await.remove(0);
            gate.notified().await;
            side.send(answer(&first)).await.expect("answer");
            echo(side).await;
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let msg = |val: &str| Message {
            uid: "same".to_owned(),
            val: val.to_owned(),
        };
        let first = tokio::spawn({
            let conn = conn.clone();
            let msg = msg("first");
            async move { conn.send(msg).await }
        });
        until(|| conn.pending() == 1).await;
        match conn.send(msg("second")).await {
            Err(Error::DuplicateUid(uid)) => assert_eq!(uid, "same"),
            other => panic!("expected DuplicateUid, got {other:?}"),
        }
        assert_eq!(conn.pending(), 1, "the first request is untouched");
        release.notify_one();
        let resp = first.await.expect("task").expect("the first is answered");
        assert_eq!(resp.val, "re: first");
        let resp = conn
            .send(msg("third"))
            .await
            .expect("the uid is free again");
        assert_eq!(resp.val, "re: third");
    })
    .await;
}

#[tokio::test]
async fn generated_uids_skip_caller_uids_in_flight() {
    bounded(async {
        let release = Arc::new(Notify::new());
        let gate = Arc::clone(&release);
        let (addr, _server) = serve_one(move |mut side| async move {
            let held = read_n(&mut side, 1).await.remove(0);
            let next = read_n(&mut side, 1).await.remove(0);
            side.send(answer(&next)).await.expect("answer");
            gate.notified().await;
            side.send(answer(&held)).await.expect("answer");
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        // The connection numbers its uids from "1": hold that one with a caller's request.
        let held = tokio::spawn({
            let conn = conn.clone();
            async move {
                conn.send(Message {
                    uid: "1".to_owned(),
                    val: "held".to_owned(),
                })
                .await
            }
        });
        until(|| conn.pending() == 1).await;
        let resp = conn.request("generated").await.expect("a response");
        assert_ne!(resp.uid, "1");
        assert_eq!(resp.val, "re: generated");
        release.notify_one();
        let resp = held.await.expect("task").expect("a response");
        assert_eq!((resp.uid.as_str(), resp.val.as_str()), ("1", "re: held"));
    })
    .await;
}

#[tokio::test]
async fn unknown_and_repeated_uids_are_counted_and_not_fatal() {
    bounded(async {
        let (addr, _server) = serve_one(|mut side| async move {
            while let Some(Ok(msg)) = side.next().await {
                let stray = Resp {
                    uid: "nobody-asked".to_owned(),
                    ..answer(&msg)
                };
                side.feed(stray).await.expect("stray");
                side.feed(answer(&msg)).await.expect("answer");
                side.feed(answer(&msg)).await.expect("repeat");
                SinkExt::<Resp>::flush(&mut side).await.expect("flush");
            }
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let resp = conn.request("one").await.expect("a response");
        assert_eq!(resp.val, "re: one");
        let resp = conn.request("two").await.expect("still served");
        assert_eq!(resp.val, "re: two");
        // The repeat of "two" may still be on its way: wait for all four strays.
        until(|| conn.unknown_responses() == 4).await;
        assert!(!conn.is_closed());
        assert_eq!(conn.pending(), 0);
    })
    .await;
}

#[tokio::test]
async fn err_field_becomes_server_error() {
    bounded(async {
        let (addr, _server) = serve_one(|mut side| async move {
            while let Some(Ok(msg)) = side.next().await {
                let resp = if msg.val == "bad" {
                    Resp {
                        err: Some("rejected".to_owned()),
                        ..answer(&msg)
                    }
                } else {
                    answer(&msg)
                };
                side.send(resp).await.expect("answer");
            }
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        match conn.request("bad").await {
            Err(Error::Server(text)) => assert_eq!(text, "rejected"),
            other => panic!("expected a server error, got {other:?}"),
        }
        let resp = conn.request("good").await.expect("still usable");
        assert_eq!(resp.val, "re: good");
        assert!(!conn.is_closed());
    })
    .await;
}

/// On a current-thread runtime the writer cannot run while `join_all` polls: every request is
/// queued before the writer wakes, so all of them leave in one batch.
#[tokio::test(flavor = "current_thread")]
async fn writer_coalesces_queued_requests_into_one_write() {
    bounded(async {
        const N: usize = 200;
        let (addr, _server) = serve_one(echo).await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let calls = (0..N).map(|i| conn.request(format!("v{i}")));
        for result in futures::future::join_all(calls).await {
            result.expect("a response");
        }
        assert_eq!(conn.write_batches(), 1);
    })
    .await;
}

#[tokio::test]
async fn max_in_flight_bounds_pending_requests() {
    bounded(async {
        let (got_tx, mut got_rx) = mpsc::unbounded_channel();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (addr, _server) = serve_one(move |mut side| async move {
            let first = read_n(&mut side, 2).await;
            let _ = got_tx.send(first.len());
            let _ = go_rx.await;
            for msg in &first {
                side.send(answer(msg)).await.expect("answer");
            }
            echo(side).await;
        })
        .await;
        let conn = Conn::connect(&options(addr).max_in_flight(Some(2)))
            .await
            .expect("connect");
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let conn = conn.clone();
                tokio::spawn(async move { conn.request(format!("v{i}")).await })
            })
            .collect();
        assert_eq!(got_rx.recv().await, Some(2));
        // The other three are parked on the semaphore, not in the table.
        for _ in 0..100 {
            tokio::task::yield_now().await;
            assert_eq!(conn.pending(), 2);
        }
        go_tx.send(()).expect("server waiting");
        for task in tasks {
            task.await.expect("task").expect("a response");
        }
        assert_eq!(conn.pending(), 0);
    })
    .await;
}

#[tokio::test]
async fn close_lets_in_flight_requests_finish_then_stops() {
    bounded(async {
        let (eof_tx, eof_rx) = oneshot::channel();
        let (addr, server) = serve_one(move |mut side| async move {
            let msg = read_n(&mut side, 1).await.remove(0);
            // The client half-closes: the server sees the end of its input...
            assert!(side.next().await.is_none());
            let _ = eof_tx.send(());
            // ...and still answers what it has.
            side.send(answer(&msg)).await.expect("answer");
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let in_flight = tokio::spawn({
            let conn = conn.clone();
            async move { conn.request("last").await }
        });
        until(|| conn.pending() == 1).await;
        let closing = tokio::spawn({
            let conn = conn.clone();
            async move { conn.close().await }
        });
        until(|| conn.is_closed()).await;
        match conn.request("refused").await {
            Err(Error::Closed(CloseCause::Shutdown)) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        eof_rx.await.expect("the server saw the half-close");
        let resp = in_flight.await.expect("task").expect("answered");
        assert_eq!(resp.val, "re: last");
        closing.await.expect("close finished");
        assert!(matches!(conn.close_cause(), Some(CloseCause::Shutdown)));
        assert_eq!(conn.pending(), 0);
        server.await.expect("server");
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_socket() {
    bounded(async {
        let (eof_tx, eof_rx) = oneshot::channel();
        let (addr, _server) = serve_one(move |side| async move {
            silent(side).await;
            let _ = eof_tx.send(());
        })
        .await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let clone = conn.clone();
        drop(conn);
        drop(clone);
        eof_rx.await.expect("the server saw the connection end");
    })
    .await;
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_with_connect_error() {
    bounded(async {
        let (_held, addr) = support::refused_port();
        match Conn::connect(&options(addr)).await {
            Err(Error::Connect { addr: shown, .. }) => assert_eq!(shown, addr.to_string()),
            other => panic!("expected a connect error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn request_longer_than_max_frame_is_refused_unsent() {
    bounded(async {
        let (addr, _server) = serve_one(echo).await;
        let conn = Conn::connect(&options(addr).max_frame(100))
            .await
            .expect("connect");
        match conn.request("x".repeat(200)).await {
            Err(Error::RequestTooLarge { len, max: 100 }) => assert!(len > 200),
            other => panic!("expected RequestTooLarge, got {other:?}"),
        }
        assert_eq!(conn.pending(), 0);
        let resp = conn.request("small").await.expect("still usable");
        assert_eq!(resp.val, "re: small");
    })
    .await;
}

#[tokio::test]
async fn activity_resets_idle_time() {
    bounded(async {
        let (addr, _server) = serve_one(echo).await;
        let conn = Conn::connect(&options(addr)).await.expect("connect");
        let before = tokio::time::Instant::now();
        conn.request("hi").await.expect("a response");
        assert!(conn.idle_for() <= before.elapsed());
        assert_eq!(
            (conn.local_addr().ip(), conn.peer_addr()),
            (addr.ip(), addr)
        );
    })
    .await;
}
