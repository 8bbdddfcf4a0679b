//! `Conn` and the server over byte streams that are not TCP: in-memory `tokio::io::duplex`
//! pairs, a `Conn` made with `Conn::from_stream`, a server fed by a `Listener` of our own.

mod support;

use std::io;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use support::{gated, within};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use transport_json::conn::{Endpoint, NOT_TCP};
use transport_json::server::{Handler, Listener, RunningServer, Server, ServerConfig};
use transport_json::{CloseCause, Conn, ConnectOptions, Error};

/// A listener that serves the duplex streams sent down a channel, each labelled by its
/// sender.
struct Channel(mpsc::UnboundedReceiver<(DuplexStream, Endpoint)>);

impl Listener for Channel {
    type Stream = DuplexStream;

    async fn accept(&mut self) -> io::Result<(DuplexStream, Endpoint)> {
        match self.0.recv().await {
            Some(accepted) => Ok(accepted),
            // Every sender is gone: no client will come again.
            None => std::future::pending().await,
        }
    }

    fn local(&self) -> io::Result<Endpoint> {
        Ok(Endpoint::named("channel"))
    }
}

/// The clients' side of a [`Channel`] listener: each `dial` is a new connection.
struct Dialer {
    to_server: mpsc::UnboundedSender<(DuplexStream, Endpoint)>,
    dialed: usize,
}

impl Dialer {
    /// A `Conn` over a fresh duplex pair whose other end the server accepts.
    fn dial(&mut self) -> Conn {
        self.dialed += 1;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let label = Endpoint::named(format!("client {}", self.dialed));
        self.to_server
            .send((theirs, label))
            .expect("the server's listener is alive");
        Conn::from_stream(ours, Endpoint::named("channel"), &ConnectOptions::default())
    }
}

/// A server with `handler` on a [`Channel`] listener, and the dialer to reach it.
fn serve_channel<H: Handler>(handler: H) -> (RunningServer, Dialer) {
    let (to_server, accepted) = mpsc::unbounded_channel();
    let server = Server::new(Channel(accepted), ServerConfig::default())
        .expect("the channel has a local end")
        .with_handler(handler)
        .spawn();
    (
        server,
        Dialer {
            to_server,
            dialed: 0,
        },
    )
}

#[tokio::test]
async fn a_conn_over_a_duplex_stream_is_answered_by_the_server_on_the_other_end() {
    let (server, mut dialer) = serve_channel(transport_json::server::EchoHandler);
    let conn = dialer.dial();

    let resp = within("a response", conn.request("duplex"))
        .await
        .expect("answered");
    assert_eq!(resp.val, "server: hello, duplex");
    assert!(!resp.ts.is_empty());

    // The ends are the labels, and the TCP accessors say "not TCP" instead of inventing one.
    assert_eq!(conn.peer(), &Endpoint::named("channel"));
    assert_eq!(conn.peer_addr(), NOT_TCP);
    assert_eq!(conn.local_addr(), NOT_TCP);
    assert_eq!(server.local(), &Endpoint::named("channel"));
    assert_eq!(server.local_addr(), NOT_TCP);
    assert_eq!(server.active_connections(), 1);

    within("the graceful shutdown", server.shutdown())
        .await
        .expect("shuts down");
}

#[tokio::test]
async fn a_server_on_its_own_listener_serves_many_clients_at_once() {
    let (server, mut dialer) = serve_channel(transport_json::server::EchoHandler);
    let conns: Vec<Conn> = (0..4).map(|_| dialer.dial()).collect();

    // 4 connections, 32 requests each, all in flight together.
    let mut calls: FuturesUnordered<_> = conns
        .iter()
        .enumerate()
        .flat_map(|(c, conn)| {
            (0..32).map(move |i| async move {
                let val = format!("{c}.{i}");
                let resp = conn.request(&val).await.expect("answered");
                assert_eq!(resp.val, format!("server: hello, {val}"));
            })
        })
        .collect();
    within("every response", async {
        let mut answered = 0;
        while calls.next().await.is_some() {
            answered += 1;
        }
        assert_eq!(answered, 4 * 32);
    })
    .await;
    assert_eq!(server.active_connections(), 4);
    drop(calls);

    within("the graceful shutdown", server.shutdown())
        .await
        .expect("shuts down");
    // The server closed each stream: every connection sees its peer's close, typed.
    for conn in &conns {
        within("the close", conn.closed()).await;
        assert!(matches!(conn.close_cause(), Some(CloseCause::ClosedByPeer)));
    }
}

#[tokio::test]
async fn the_peer_closing_a_duplex_stream_fails_the_pending_requests_as_closed_by_peer() {
    // The handler holds every request until released: the request stays pending while the
    // server's end of the stream goes away.
    let (handler, mut arrivals) = gated();
    let (server, mut dialer) = serve_channel(handler);
    let conn = dialer.dial();

    let pending = tokio::spawn({
        let conn = conn.clone();
        async move { conn.request("held").await }
    });
    let (_uid, _release) = within("the request to arrive", arrivals.recv())
        .await
        .expect("the handler saw it");

    // An abort drops the server's end of every stream at once, as a crash would.
    within("the abort", server.abort()).await;

    let failed = within("the pending request to end", pending)
        .await
        .expect("the task ran");
    assert!(
        matches!(failed, Err(Error::Closed(CloseCause::ClosedByPeer))),
        "{failed:?}"
    );
    assert!(conn.is_closed());
    let refused = conn.request("after").await;
    assert!(
        matches!(refused, Err(Error::Closed(CloseCause::ClosedByPeer))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_conn_over_a_stream_keeps_its_options() {
    // `max_frame` of the options holds for a stream given to `from_stream` too: a request
    // over it is refused before it is written.
    let (ours, _theirs) = tokio::io::duplex(1024);
    let options = ConnectOptions::default().max_frame(64);
    let conn = Conn::from_stream(ours, Endpoint::named("duplex"), &options);
    let refused = conn.request("x".repeat(100)).await;
    assert!(
        matches!(refused, Err(Error::RequestTooLarge { max: 64, .. })),
        "{refused:?}"
    );
    assert_eq!(conn.local(), &Endpoint::named("local"));
}
