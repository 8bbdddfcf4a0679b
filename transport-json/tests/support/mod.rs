//! What the server tests share: a bound on every wait, a server on loopback, a raw client
//! that writes bytes and reads responses, and a handler that answers when the test says so.
//!
//! Each test file uses part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use transport_json::codec::JsonCodec;
use transport_json::server::{
    EchoHandler, Handler, RunningServer, Server, ServerConfig, handler_fn,
};
use transport_json::{Message, Resp};

/// Bounds every wait on the network: generous, only reached when something is broken.
pub const LIMIT: Duration = Duration::from_secs(10);

/// A loopback port nothing listens on, held by a bound socket that never listens: a connect
/// to it is refused, and no other test's server can take the port while the socket lives (as
/// it could between a listener's drop and the connect). Keep the socket for the test.
pub fn refused_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let held = tokio::net::TcpSocket::new_v4().expect("a socket");
    held.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = held.local_addr().expect("addr");
    (held, addr)
}

pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub async fn start(config: ServerConfig) -> RunningServer {
    start_with(config, EchoHandler).await
}

pub async fn start_with<H: Handler>(config: ServerConfig, handler: H) -> RunningServer {
    Server::bind("127.0.0.1:0", config)
        .await
        .expect("binds")
        .with_handler(handler)
        .spawn()
}

/// A client that writes raw bytes and reads responses with the codec.
pub struct Client {
    pub frames: FramedRead<OwnedReadHalf, JsonCodec<Resp, Message>>,
    pub write: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(
            within("connect", TcpStream::connect(addr))
                .await
                .expect("connects"),
        )
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_nodelay(true).expect("nodelay");
        let (read, write) = stream.into_split();
        let codec = JsonCodec::with_max_frame(16 * 1024 * 1024);
        Self {
            frames: FramedRead::new(read, codec),
            write,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within("write", self.write.write_all(bytes))
            .await
            .expect("writes");
    }

    pub async fn recv(&mut self) -> Resp {
        within("a response", self.frames.next())
            .await
            .expect("a response, not the end of the stream")
            .expect("a valid response")
    }

    /// One round trip of a fresh request on this connection.
    pub async fn echo(&mut self, uid: &str) {
        self.send(format!(r#"{{"Uid":"{uid}","Val":"ping"}}"#).as_bytes())
            .await;
        let resp = self.recv().await;
        assert_eq!(resp.uid, uid);
        assert_eq!(resp.val, "server: hello, ping");
    }

    /// Reads until the server closes the connection; returns the responses read before that.
    pub async fn until_closed(&mut self) -> Vec<Resp> {
        let mut got = Vec::new();
        within("the server to close the connection", async {
            // A reset counts as closed too.
            while let Some(Ok(resp)) = self.frames.next().await {
                got.push(resp);
            }
        })
        .await;
        got
    }
}

/// A handler that reports each request and answers it only when the test says so.
pub fn gated() -> (
    impl Handler,
    mpsc::UnboundedReceiver<(String, oneshot::Sender<()>)>,
) {
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let handler = handler_fn(move |req: Message| {
        let arrived = arrived.clone();
        async move {
            let (release, released) = oneshot::channel();
            let _ = arrived.send((req.uid.clone(), release));
            let _ = released.await;
            EchoHandler.handle(req).await
        }
    });
    (handler, arrivals)
}
