//! Clients that hold a connection without doing their part, against the server's idle, frame
//! and write timeouts and its eviction of the longest-idle connection at the cap: each
//! misbehaving client is closed, and a bystander is served within a bounded time.
//!
//! The timeouts are short (a few hundred milliseconds) and real: the server's sockets are
//! real, and paused time would jump ahead whenever every task waits on the network. A test
//! never sleeps to wait for the close; it waits for the close itself, bounded by
//! [`LIMIT`](support::LIMIT).

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::time::{Instant, timeout};
use transport_json::server::{EchoHandler, Handler, ServerConfig, handler_fn};
use transport_json::{Message, Resp};

mod support;

use support::{Client, gated, start, start_with, within};

/// The timeout under test in each test.
const SHORT: Duration = Duration::from_millis(200);

/// A server whose timeouts are all off but the ones set in `config`.
fn no_timeouts() -> ServerConfig {
    ServerConfig {
        idle_timeout: None,
        frame_timeout: None,
        write_timeout: None,
        ..ServerConfig::default()
    }
}

/// Echoes on `bystander` until `closed` is done (a bounded number of times), then once more:
/// a connection in use is served throughout, and is not the one closed.
async fn chat_until<T>(bystander: &mut Client, closed: impl Future<Output = T>) -> T {
    tokio::pin!(closed);
    for i in 0..100_000 {
        // Between two round trips: an echo cut in the middle would leave its answer behind.
        if let Some(out) = (&mut closed).now_or_never() {
            bystander.echo("after").await;
            return out;
        }
        bystander.echo(&format!("chat-{i}")).await;
    }
    panic!("the connection was not closed");
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_connection_and_not_a_busy_one() {
    let server = start(ServerConfig {
        idle_timeout: Some(SHORT),
        ..no_timeouts()
    })
    .await;
    let mut bystander = Client::connect(server.local_addr()).await;
    let mut silent = Client::connect(server.local_addr()).await;
    silent.echo("once").await;
    let since = Instant::now();

    let answered = chat_until(&mut bystander, silent.until_closed()).await;
    assert!(
        answered.is_empty(),
        "nothing to say on an idle close: {answered:?}"
    );
    assert!(
        since.elapsed() >= SHORT,
        "closed after {:?}",
        since.elapsed()
    );
}

#[tokio::test]
async fn a_request_in_flight_longer_than_the_idle_timeout_is_answered() {
    let (handler, mut arrivals) = gated();
    let server = start_with(
        ServerConfig {
            idle_timeout: Some(SHORT),
            ..no_timeouts()
        },
        handler,
    )
    .await;
    let mut slow = Client::connect(server.local_addr()).await;
    slow.send(br#"{"Uid":"slow"}"#).await;
    let (_, release) = within("the request", arrivals.recv())
        .await
        .expect("arrives");
    let early = timeout(SHORT * 3, slow.frames.next()).await;
    assert!(early.is_err(), "closed or answered early: {early:?}");
    // Still open for requests, too.
    slow.send(br#"{"Uid":"next"}"#).await;
    let (_, release_next) = within("the next request", arrivals.recv())
        .await
        .expect("arrives");
    release.send(()).expect("the handler waits");
    release_next.send(()).expect("the handler waits");
    let mut uids = [slow.recv().await.uid, slow.recv().await.uid];
    uids.sort();
    assert_eq!(uids, ["next", "slow"]);
    // Idle from now on.
    assert!(slow.until_closed().await.is_empty());
}

#[tokio::test]
async fn frame_timeout_answers_and_closes_a_connection_that_sent_half_a_frame() {
    let server = start(ServerConfig {
        frame_timeout: Some(SHORT),
        ..no_timeouts()
    })
    .await;
    let mut bystander = Client::connect(server.local_addr()).await;
    let mut half = Client::connect(server.local_addr()).await;
    // A whole request, then half of one: the whole one is answered, the half one timed out.
    half.send(br#"{"Uid":"whole"}{"Uid":"half","Val":"#).await;
    let since = Instant::now();

    let answered = chat_until(&mut bystander, half.until_closed()).await;
    assert!(
        since.elapsed() >= SHORT,
        "closed after {:?}",
        since.elapsed()
    );
    assert_eq!(answered.len(), 2, "{answered:?}");
    assert_eq!(answered[0].uid, "whole");
    assert_eq!(answered[1].uid, "", "the frame's Uid is not known");
    assert_eq!(
        answered[1].err.as_deref(),
        Some("frame not finished within 0.2s")
    );
}

#[tokio::test]
async fn write_timeout_closes_a_connection_that_does_not_read_and_frees_its_place() {
    // Every answer is 128 kB, so a few fill every socket buffer on the way back.
    const ANSWER: usize = 128 * 1024;
    let handler = handler_fn(|req: Message| async move {
        if req.uid == "bystander" {
            return EchoHandler.handle(req).await;
        }
        Resp {
            uid: req.uid,
            val: "a".repeat(ANSWER),
            ..Resp::default()
        }
    });
    let server = start_with(
        ServerConfig {
            max_connections: 1,
            max_in_flight_per_conn: 4,
            write_timeout: Some(SHORT),
            ..no_timeouts()
        },
        handler,
    )
    .await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = within("connect", socket.connect(server.local_addr()))
        .await
        .expect("connects");
    let mut greedy = Client::from_stream(stream);
    // Served: it holds the only place.
    greedy.send(br#"{"Uid":"first"}"#).await;
    assert_eq!(greedy.recv().await.uid, "first");
    // 25 MB of answers it never reads; the requests themselves fit in the socket buffers.
    let mut requests = String::new();
    for i in 0..200 {
        requests.push_str(&format!(r#"{{"Uid":"{i}"}}"#));
    }
    greedy.send(requests.as_bytes()).await;
    let since = Instant::now();

    // The greedy client is busy (answers to write), never idle: the bystander gets its place
    // only when the write timeout closes it.
    let mut bystander = Client::connect(server.local_addr()).await;
    bystander.echo("bystander").await;
    assert!(
        since.elapsed() >= SHORT,
        "served after {:?}",
        since.elapsed()
    );
    let answered = greedy.until_closed().await;
    assert!(answered.len() < 200, "all {} answered", answered.len());
}

#[tokio::test]
async fn at_the_cap_a_new_client_is_served_by_closing_the_longest_idle_connection() {
    let server = start(ServerConfig {
        max_connections: 4,
        ..no_timeouts()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..4 {
        let mut client = Client::connect(server.local_addr()).await;
        client.echo(&format!("held-{i}")).await;
        held.push(client);
    }
    // Two of them begin a frame and stop: still idle, nothing in flight.
    held[2].send(br#"{"Uid":"late-2","Val":"#).await;
    held[3].send(br#"{"Uid":"late-3","Val":"#).await;
    assert_eq!(server.active_connections(), 4);

    let mut newcomer = Client::connect(server.local_addr()).await;
    newcomer.echo("new").await;

    // The first was idle the longest: it is the one closed, and the others carry on.
    assert!(held[0].until_closed().await.is_empty());
    held[1].echo("still").await;
    held[2].send(br#""x"}"#).await;
    assert_eq!(held[2].recv().await.uid, "late-2");
    held[3].send(br#""x"}"#).await;
    assert_eq!(held[3].recv().await.uid, "late-3");
    newcomer.echo("again").await;
    assert_eq!(server.active_connections(), 4);
}

#[tokio::test]
async fn at_the_cap_clients_keep_coming_and_each_is_served() {
    let server = start(ServerConfig {
        max_connections: 2,
        ..no_timeouts()
    })
    .await;
    // Each new client closes the idlest, which by then is the one before the last.
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut client = Client::connect(server.local_addr()).await;
        client.echo(&format!("client-{i}")).await;
        clients.push(client);
    }
    for closed in &mut clients[..6] {
        assert!(closed.until_closed().await.is_empty());
    }
    for open in &mut clients[6..] {
        open.echo("still").await;
    }
    assert_eq!(server.active_connections(), 2);
}
