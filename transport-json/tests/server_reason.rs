//! A server that closes a connection for a reason says why first (an `Err` with an empty
//! `Uid`): every request pending on the closed `Conn` fails with an error that carries the
//! server's words, and such an `Err` alone, with the connection left open, harms nothing.

mod support;

use std::error::Error as _;

use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use transport_json::codec::JsonCodec;
use transport_json::{CloseCause, Conn, ConnectOptions, Error, Message, Resp, ServerConfig};

use support::{start, within};

/// The server's maximum frame in these tests: small, so that one request is over it.
const SERVER_MAX: usize = 256;

/// `err` and every source under it, as one line.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Asserts that `result` failed because the server closed the connection for a frame over
/// its maximum, and that the error's chain says so.
fn assert_rejected_for_size(result: Result<Resp, Error>) {
    let err = result.expect_err("the server closed the connection");
    let text = chain(&err);
    assert!(
        text.contains(&format!("frame too large: more than {SERVER_MAX} bytes")),
        "the error does not carry the server's reason: {text}"
    );
    assert!(
        matches!(err.close_cause(), Some(CloseCause::Rejected(_))),
        "{err:?}"
    );
}

/// A client that allows frames far larger than the server does.
fn client(addr: std::net::SocketAddr) -> ConnectOptions {
    ConnectOptions::new(addr.to_string()).max_frame(64 * 1024 * 1024)
}

async fn small_server() -> transport_json::RunningServer {
    start(ServerConfig {
        max_frame: SERVER_MAX,
        ..ServerConfig::default()
    })
    .await
}

/// On a current-thread runtime every request below is queued before the writer runs, so they
/// leave in one write, the large one first: the server stops reading at it, and the two after
/// it stay pending until the server closes.
#[tokio::test(flavor = "current_thread")]
async fn a_frame_over_the_servers_maximum_fails_every_pending_request_with_its_reason() {
    let server = small_server().await;
    let conn = Conn::connect(&client(server.local_addr()))
        .await
        .expect("connects");
    assert_eq!(
        conn.request("fits").await.expect("answered").val,
        "server: hello, fits"
    );
    let large = "x".repeat(2 * SERVER_MAX);
    let results = within(
        "the requests end",
        join_all([
            conn.request(large.as_str()),
            conn.request("after"),
            conn.request("after, again"),
        ]),
    )
    .await;
    for result in results {
        assert_rejected_for_size(result);
    }
    assert!(matches!(conn.close_cause(), Some(CloseCause::Rejected(_))));
    // Refused afterwards with the same cause.
    assert_rejected_for_size(conn.request("later").await);
}

/// A request far over the server's maximum is still being written when the server has read
/// enough of it, answered and closed: the write fails (a reset), yet the callers still learn
/// the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_being_written_when_the_server_closes_fails_with_its_reason() {
    let server = small_server().await;
    let conn = Conn::connect(&client(server.local_addr()))
        .await
        .expect("connects");
    let huge = "x".repeat(32 * 1024 * 1024);
    let (first, second) = within("the requests end", async {
        tokio::join!(conn.request(huge.as_str()), conn.request("beside it"))
    })
    .await;
    assert_rejected_for_size(first);
    assert_rejected_for_size(second);
}

/// The server sends its reason and resets the connection; the writer's next write fails
/// before the reader has read the reason (the current-thread runtime runs the writer, woken
/// by the request, before it next polls for I/O events, which would wake the reader). The
/// reason still reaches the pending request: a failed write waits for the reader.
#[tokio::test(flavor = "current_thread")]
async fn a_write_failing_before_the_reason_is_read_still_reports_the_reason() {
    use std::io::{BufRead, BufReader, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("an address");
    let conn = Conn::connect(&ConnectOptions::new(addr.to_string()))
        .await
        .expect("connects");
    // The handshake is done: the connection waits in the backlog, `accept` does not block.
    let (stream, _) = listener.accept().expect("accepts");
    // Blocking reads and writes on the server's side, each short, on loopback.
    let serve_first = std::thread::spawn(move || {
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("reads the first request");
        let uid = serde_json::from_str::<Message>(&line)
            .expect("a request")
            .uid;
        let answer = format!("{{\"Uid\":\"{uid}\",\"Val\":\"re\",\"Ts\":\"now\"}}\n");
        (&stream).write_all(answer.as_bytes()).expect("answers");
        stream
    });
    let first = within("the first answer", conn.request("first")).await;
    assert_eq!(first.expect("answered").val, "re");
    let stream = serve_first.join().expect("the server thread");
    // The reason, then a reset: both are in the client's socket before it sends again.
    (&stream)
        .write_all(
            br#"{"Uid":"","Val":"","Ts":"now","Err":"frame too large: more than 256 bytes"}"#,
        )
        .expect("writes the reason");
    socket2::SockRef::from(&stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .expect("sets linger");
    drop(stream);
    assert_rejected_for_size(within("the second request ends", conn.request("second")).await);
}

/// An `Err` with an empty `Uid` that the server does not follow with a close is counted as a
/// response nobody waits for, and the connection goes on serving.
#[tokio::test]
async fn an_err_with_an_empty_uid_on_an_open_connection_is_not_fatal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let (served, mut done) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accepts");
        let mut side = Framed::new(stream, JsonCodec::<Message, Resp>::new());
        while let Some(Ok(msg)) = side.next().await {
            let stray = Resp {
                uid: String::new(),
                val: String::new(),
                ts: "now".to_owned(),
                err: Some("request has no Uid".to_owned()),
            };
            let answer = Resp {
                uid: msg.uid,
                val: format!("re: {}", msg.val),
                ts: "now".to_owned(),
                err: None,
            };
            side.feed(stray).await.expect("writes");
            side.send(answer).await.expect("writes");
        }
        drop(served);
    });
    let conn = Conn::connect(&ConnectOptions::new(addr.to_string()))
        .await
        .expect("connects");
    for val in ["one", "two"] {
        let resp = within("an answer", conn.request(val))
            .await
            .expect("still served");
        assert_eq!(resp.val, format!("re: {val}"));
    }
    assert_eq!(conn.unknown_responses(), 2);
    assert!(!conn.is_closed());
    assert!(conn.close_cause().is_none());
    within("the close", conn.close()).await;
    assert!(matches!(conn.close_cause(), Some(CloseCause::Shutdown)));
    // The server saw the end of the requests and stopped.
    assert!(within("the server ends", done.recv()).await.is_none());
}
