//! [`TlsServerStream`]: an accepted client's stream, which does its TLS handshake at its
//! first read or write, in the connection's own task, within a deadline.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, rustls};
use tracing::debug;

use crate::conn::Endpoint;

/// The stream of a client accepted by a [`TlsListener`](super::TlsListener): plain bytes in
/// and out, TLS on the wire.
///
/// The handshake runs when the stream is first read from or written to, so it runs in the
/// task that serves the client, never in the accept loop. If it has not finished within the
/// handshake timeout (counted from accept), or fails (the client spoke plain text, presented
/// no certificate or one the server does not trust), that read or write fails with the cause
/// (`TimedOut`, or `InvalidData` carrying rustls's error) and every later one fails too; the
/// server then closes the connection.
pub struct TlsServerStream<S> {
    state: State<S>,
    peer: Endpoint,
}

enum State<S> {
    /// The handshake, started or not, and when it must have finished.
    Handshaking {
        accept: Box<Accept<S>>,
        deadline: Pin<Box<Sleep>>,
        timeout: Duration,
    },
    Ready(Box<TlsStream<S>>),
    /// The handshake failed or timed out; the socket is closed.
    Failed,
}

impl<S> TlsServerStream<S> {
    /// A stream whose handshake `accept` will run, and must end within `timeout` from now.
    pub(super) fn new(accept: Accept<S>, timeout: Duration, peer: Endpoint) -> Self {
        TlsServerStream {
            state: State::Handshaking {
                accept: Box::new(accept),
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
            },
            peer,
        }
    }

    /// The stream under the TLS; `None` once a failed handshake has closed it.
    pub fn get_ref(&self) -> Option<&S> {
        match &self.state {
            State::Handshaking { accept, .. } => accept.get_ref(),
            State::Ready(tls) => Some(tls.get_ref().0),
            State::Failed => None,
        }
    }

    /// The TLS session once the handshake is done (the client's certificates, the protocol
    /// version, the cipher suite ...); `None` before, or after a failed handshake.
    pub fn connection(&self) -> Option<&rustls::ServerConnection> {
        match &self.state {
            State::Ready(tls) => Some(tls.get_ref().1),
            _ => None,
        }
    }

    /// Whether the handshake has not finished (nor failed) yet.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshaking { .. })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsServerStream<S> {
    /// Drives the handshake to its end; then the TLS stream, or the error that ended it.
    fn poll_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<S>>> {
        if let State::Handshaking {
            accept,
            deadline,
            timeout,
        } = &mut self.state
        {
            match Pin::new(&mut **accept).poll(cx) {
                Poll::Ready(Ok(tls)) => self.state = State::Ready(Box::new(tls)),
                Poll::Ready(Err(error)) => {
                    debug!(peer = %self.peer, %error, "TLS handshake failed; closing");
                    self.state = State::Failed;
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => {
                    ready!(deadline.as_mut().poll(cx));
                    let error = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("TLS handshake not finished within {timeout:?}"),
                    );
                    debug!(peer = %self.peer, %error, "closing");
                    self.state = State::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match &mut self.state {
            State::Ready(tls) => Poll::Ready(Ok(tls)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsServerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tls = ready!(self.get_mut().poll_tls(cx))?;
        Pin::new(tls).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsServerStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let tls = ready!(self.get_mut().poll_tls(cx))?;
        Pin::new(tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let tls = ready!(self.get_mut().poll_tls(cx))?;
        Pin::new(tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Nothing of the caller's is buffered before the handshake ends, so a flush then is
    /// done at once.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(tls) => Pin::new(tls).poll_flush(cx),
            State::Handshaking { .. } | State::Failed => Poll::Ready(Ok(())),
        }
    }

    /// After the handshake: TLS's `close_notify`, then the stream's shutdown. During it: the
    /// stream's shutdown, dropping the handshake.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(tls) => Pin::new(tls).poll_shutdown(cx),
            State::Handshaking { accept, .. } => match accept.get_mut() {
                Some(socket) => Pin::new(socket).poll_shutdown(cx),
                None => Poll::Ready(Ok(())),
            },
            State::Failed => Poll::Ready(Ok(())),
        }
    }
}

impl<S> fmt::Debug for TlsServerStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Handshaking { .. } => "handshaking",
            State::Ready(_) => "ready",
            State::Failed => "failed",
        };
        f.debug_struct("TlsServerStream")
            .field("peer", &self.peer)
            .field("state", &state)
            .finish()
    }
}
