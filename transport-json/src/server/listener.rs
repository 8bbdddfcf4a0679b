//! [`Listener`]: what the server accepts connections from. Implemented for Tokio's TCP and
//! Unix listeners; implement it for anything else that yields byte streams (an in-memory
//! network, a TLS acceptor, a simulated network).

use std::future::Future;
use std::io;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::ServerConfig;
use crate::conn::Endpoint;

/// A source of client connections for a [`Server`](super::Server).
///
/// The server calls [`accept`](Listener::accept) in its accept loop, and serves each stream in
/// a task of its own; the [`Endpoint`] names the client in logs.
///
/// ```
/// use std::io;
/// use tokio::io::DuplexStream;
/// use tokio::sync::mpsc;
/// use transport_json::conn::Endpoint;
/// use transport_json::server::Listener;
///
/// /// Serves the in-memory streams sent down a channel.
/// struct Channel(mpsc::Receiver<DuplexStream>);
///
/// impl Listener for Channel {
///     type Stream = DuplexStream;
///
///     async fn accept(&mut self) -> io::Result<(DuplexStream, Endpoint)> {
///         match self.0.recv().await {
///             Some(stream) => Ok((stream, Endpoint::named("duplex"))),
///             // No sender left: no client will ever come.
///             None => std::future::pending().await,
///         }
///     }
///
///     fn local(&self) -> io::Result<Endpoint> {
///         Ok(Endpoint::named("channel"))
///     }
/// }
/// ```
pub trait Listener: Send + 'static {
    /// The byte stream of one accepted connection.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next client.
    ///
    /// An error of kind `ConnectionAborted`, `ConnectionReset`, `ConnectionRefused` or
    /// `Interrupted` concerns one client: the server logs it and accepts the next one at once.
    /// Any other error pauses accepting (10 ms, doubling up to 1 s), as for a process out of
    /// file descriptors; it never stops the server.
    ///
    /// # Cancel safety
    /// Must be cancel safe: the server drops the future when another event comes first (and
    /// at shutdown), and calls it again later. A client must not be lost when that happens.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, Endpoint)>> + Send;

    /// Where the listener listens, for logs and
    /// [`RunningServer::local`](super::RunningServer::local).
    ///
    /// # Errors
    /// The address could not be read; the server is then not made.
    fn local(&self) -> io::Result<Endpoint>;

    /// Sets up an accepted stream before it is served (socket options). Does nothing by
    /// default; a failure here should be logged, not refuse the client.
    fn configure(stream: &Self::Stream, peer: &Endpoint, config: &ServerConfig) {
        let _ = (stream, peer, config);
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, Endpoint)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        Ok((stream, Endpoint::Tcp(peer)))
    }

    fn local(&self) -> io::Result<Endpoint> {
        self.local_addr().map(Endpoint::Tcp)
    }

    /// `TCP_NODELAY`, and keepalive per [`ServerConfig::tcp_keepalive`].
    fn configure(stream: &TcpStream, peer: &Endpoint, config: &ServerConfig) {
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        if let Some(time) = config.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(time);
            if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
                debug!(%peer, %error, "could not set TCP keepalive");
            }
        }
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<(tokio::net::UnixStream, Endpoint)> {
        let (stream, peer) = tokio::net::UnixListener::accept(self).await?;
        Ok((stream, Endpoint::of_unix(&peer)))
    }

    fn local(&self) -> io::Result<Endpoint> {
        self.local_addr().map(|addr| Endpoint::of_unix(&addr))
    }
}

/// Removes the socket file of a Unix listener the server bound itself
/// ([`Server::bind_unix`](super::Server::bind_unix)) when the listener closes, as Go's
/// `net.Listen("unix", ...)` does, so the path can be bound again.
#[derive(Debug)]
pub(super) struct Unlink(pub(super) PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            debug!(path = %self.0.display(), %error, "could not remove the socket file");
        }
    }
}
