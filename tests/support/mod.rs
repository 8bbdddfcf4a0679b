//! What the cross-crate tests share: bounds, a pool of `JsonManager` connections in front of a
//! real server, the ways a multiplexed connection is taken from it, and test servers.
//!
//! Each test file uses part of it.
#![allow(dead_code)]

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pool::{IdleOrder, Lease, Pool};
use tokio::sync::{mpsc, watch};
use transport_json::server::{Handler, RunningServer, Server, ServerConfig, handler_fn};
use transport_json::{CloseCause, Conn, ConnectOptions, Error, JsonManager, Message, Resp};

/// The bound on a whole test: generous, so only a hang trips it.
pub const BOUND: Duration = Duration::from_secs(30);

/// Runs `fut`, failing the test if it takes longer than [`BOUND`].
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    within(BOUND, fut).await
}

/// Runs `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("did not finish within {limit:?}"),
    }
}

/// Yields until `cond` holds (the caller bounds the wait).
pub async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

/// `error` and its whole `source()` chain: `Error::Closed` names the cause only in its source.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The options of every test connection: short connect timeout, and a request timeout long
/// enough that it never decides a test unless the test sets its own.
pub fn options(addr: SocketAddr) -> ConnectOptions {
    ConnectOptions::new(addr.to_string())
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(20)))
}

/// How many leases one test connection carries at once.
pub const MAX_STREAMS: usize = 16;

/// A pool of at most `max_size` connections made with `options`, handing idle ones out in
/// turn, each carrying up to [`MAX_STREAMS`] leases.
pub fn pool_with(options: ConnectOptions, max_size: usize) -> Pool<JsonManager> {
    Pool::builder(JsonManager::new(options))
        .max_size(max_size)
        .max_streams(MAX_STREAMS)
        .idle_order(IdleOrder::Fifo)
        .wait_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("valid pool settings")
}

/// A pool of at most `max_size` connections to `addr`.
pub fn pool_to(addr: SocketAddr, max_size: usize) -> Pool<JsonManager> {
    pool_with(options(addr), max_size)
}

/// A lease for one request: the way a pooled `Conn` is used.
pub async fn lease(pool: &Pool<JsonManager>) -> Lease<JsonManager> {
    pool.lease().await.unwrap_or_else(|error| {
        panic!("lease failed: {}", chain(&error));
    })
}

/// Checks a connection out, clones the handle, and returns the guard at once. Only for a
/// test that watches a connection from outside the pool (one idle in the pool when its
/// server dies, say) or hands it to spawned tasks: to send requests, take a [`lease`].
pub async fn checkout(pool: &Pool<JsonManager>) -> Conn {
    let guard = pool.get().await.unwrap_or_else(|error| {
        panic!("checkout failed: {}", chain(&error));
    });
    Conn::clone(&guard)
}

/// What the echo handler answers to `val`.
pub fn echoed(val: &str) -> String {
    format!("server: hello, {val}")
}

/// True when the error is a connection failure caused by the server going away: closed by
/// the peer (end of stream) or an I/O error such as a reset.
pub fn is_server_gone(error: &Error) -> bool {
    matches!(
        error,
        Error::Closed(CloseCause::ClosedByPeer | CloseCause::Io(_))
    )
}

/// Spawns a server on `addr` (port 0 for an ephemeral one) with `config` and `handler`.
pub async fn spawn_server<H: Handler>(
    addr: SocketAddr,
    config: ServerConfig,
    handler: H,
) -> RunningServer {
    Server::bind(addr, config)
        .await
        .unwrap_or_else(|error| panic!("bind {addr}: {error}"))
        .with_handler(handler)
        .spawn()
}

/// Holds `addr`'s port with nothing listening on it: a socket bound there that never listens,
/// so a connect to it is refused, and no other socket can take the port while it is held (a
/// server that a test running beside this one binds to port 0 could otherwise get it, and the
/// client would find a live server where the test wants none, or the test's own restart on
/// the port would fail). Dropping it lets the port go.
pub fn hold(addr: SocketAddr) -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    // As the servers' own listeners do, so a server can bind the port again once it is let go.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(addr)
        .unwrap_or_else(|error| panic!("hold {addr}: {error}"));
    socket
}

/// Spawns the echo server on an ephemeral loopback port.
pub async fn spawn_echo(config: ServerConfig) -> RunningServer {
    Server::bind("127.0.0.1:0", config)
        .await
        .expect("bind an ephemeral port")
        .spawn()
}

/// A handler that echoes every request except those whose `Val` is [`STALL`]: it reports
/// their `Uid` on `arrived` and answers them only once `release` turns true.
pub fn stalling_handler(
    arrived: mpsc::UnboundedSender<String>,
    release: watch::Receiver<bool>,
) -> impl Handler {
    let arrived = Arc::new(arrived);
    handler_fn(move |req: Message| {
        let arrived = Arc::clone(&arrived);
        let mut release = release.clone();
        async move {
            if req.val == STALL {
                let _ = arrived.send(req.uid.clone());
                // A dropped sender also releases: the test is over.
                let _ = release.wait_for(|released| *released).await;
            }
            Resp {
                val: echoed(&req.val),
                ts: "ts".to_owned(),
                uid: req.uid,
                err: None,
            }
        }
    })
}

/// Starts a server with the [`stalling_handler`] on an ephemeral port; returns it with the
/// receiver of the stalled `Uid`s and the sender that releases them.
pub async fn stalling_server() -> (
    RunningServer,
    mpsc::UnboundedReceiver<String>,
    watch::Sender<bool>,
) {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let server = spawn_server(
        "127.0.0.1:0".parse().expect("addr"),
        ServerConfig::default(),
        stalling_handler(arrived_tx, release_rx),
    )
    .await;
    (server, arrived, release)
}

/// The `Val` the [`stalling_handler`] holds back.
pub const STALL: &str = "stall";

/// Receives `n` items from `rx` (the caller bounds the wait).
pub async fn recv_n<T>(rx: &mut mpsc::UnboundedReceiver<T>, n: usize) -> Vec<T> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match rx.recv().await {
            Some(item) => got.push(item),
            None => panic!("the channel closed after {} of {n} items", got.len()),
        }
    }
    got
}
