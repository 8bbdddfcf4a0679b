//! [`TlsServerStream`]: an accepted client's stream, which does its TLS handshake at its
//! first read or write, in the connection's own task, within a deadline.

use std::fmt;
use std::future::Future;
use std::io;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::FallibleAccept;
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
    /// When the handshake must have finished; after a failed one, when the closing must.
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    peer: Endpoint,
}

/// After a failed handshake, the longest the stream reads what the client still sends
/// before it closes (never past the handshake deadline).
const LINGER: Duration = Duration::from_secs(1);
/// Reads of a closing stream in one poll, so a client that floods it cannot hold the task.
const LINGER_READS: usize = 16;

enum State<S> {
    /// Accepted, the handshake not begun: `Accept` still lends the stream to `configure`.
    Start(Box<Accept<S>>),
    /// The handshake runs; on failure it hands the stream back for the closing.
    Handshaking(Box<FallibleAccept<S>>),
    Ready(Box<TlsStream<S>>),
    /// The handshake failed and its alert is written. The stream shuts its write side down
    /// and reads (and drops) what the client still sends, until the client closes or
    /// [`LINGER`] passes; then the read or write fails with `error`. Closing at once would
    /// close a socket with the client's next bytes unread, which resets the connection, and
    /// the reset can cost the client the alert that says why it was refused.
    Closing {
        socket: S,
        error: Option<io::Error>,
        shut: bool,
    },
    /// The handshake failed or timed out, and the stream is closed or closing.
    Failed,
}

impl<S> TlsServerStream<S> {
    /// A stream whose handshake `accept` will run, and must end within `timeout` from now.
    pub(super) fn new(accept: Accept<S>, timeout: Duration, peer: Endpoint) -> Self {
        TlsServerStream {
            state: State::Start(Box::new(accept)),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            peer,
        }
    }

    /// The stream under the TLS, before the handshake begins and once it is done; `None`
    /// while it runs and once a failed handshake has closed the stream.
    pub fn get_ref(&self) -> Option<&S> {
        match &self.state {
            State::Start(accept) => accept.get_ref(),
            State::Ready(tls) => Some(tls.get_ref().0),
            State::Closing { socket, .. } => Some(socket),
            State::Handshaking(_) | State::Failed => None,
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
        matches!(self.state, State::Start(_) | State::Handshaking(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsServerStream<S> {
    /// Drives the handshake to its end; then the TLS stream, or the error that ended it
    /// (once the closing after it is done).
    fn poll_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<S>>> {
        if matches!(self.state, State::Start(_))
            && let State::Start(accept) = mem::replace(&mut self.state, State::Failed)
        {
            self.state = State::Handshaking(Box::new(accept.into_fallible()));
        }
        if let State::Handshaking(accept) = &mut self.state {
            match Pin::new(&mut **accept).poll(cx) {
                Poll::Ready(Ok(tls)) => self.state = State::Ready(Box::new(tls)),
                Poll::Ready(Err((error, socket))) => {
                    debug!(peer = %self.peer, %error, "TLS handshake failed; closing");
                    let until = (Instant::now() + LINGER).min(self.deadline.deadline());
                    self.deadline.as_mut().reset(until);
                    self.state = State::Closing {
                        socket,
                        error: Some(error),
                        shut: false,
                    };
                }
                Poll::Pending => {
                    ready!(self.deadline.as_mut().poll(cx));
                    let error = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("TLS handshake not finished within {:?}", self.timeout),
                    );
                    debug!(peer = %self.peer, %error, "closing");
                    self.state = State::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        if let State::Closing {
            socket,
            error,
            shut,
        } = &mut self.state
        {
            if self.deadline.as_mut().poll(cx).is_pending() {
                ready!(poll_linger(socket, shut, cx));
            }
            let error = error.take().unwrap_or_else(handshake_failed);
            self.state = State::Failed;
            return Poll::Ready(Err(error));
        }
        match &mut self.state {
            State::Ready(tls) => Poll::Ready(Ok(tls)),
            _ => Poll::Ready(Err(handshake_failed())),
        }
    }
}

/// Shuts the write side of `socket` down, then reads and drops what comes until the end of
/// the stream or an error: ready then.
fn poll_linger<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    shut: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if !*shut {
        if ready!(Pin::new(&mut *socket).poll_shutdown(cx)).is_err() {
            return Poll::Ready(());
        }
        *shut = true;
    }
    let mut buf = [0u8; 1024];
    for _ in 0..LINGER_READS {
        let mut read = ReadBuf::new(&mut buf);
        match ready!(Pin::new(&mut *socket).poll_read(cx, &mut read)) {
            Ok(()) if read.filled().is_empty() => return Poll::Ready(()),
            Ok(()) => {}
            Err(_) => return Poll::Ready(()),
        }
    }
    // More may come: yield to the other tasks and read on at the next poll.
    cx.waker().wake_by_ref();
    Poll::Pending
}

fn handshake_failed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the TLS handshake failed")
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
            _ => Poll::Ready(Ok(())),
        }
    }

    /// After the handshake: TLS's `close_notify`, then the stream's shutdown. Before it
    /// begins: the stream's shutdown. While it runs or after it failed: nothing; dropping
    /// the stream closes it.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Ready(tls) => Pin::new(tls).poll_shutdown(cx),
            State::Start(accept) => match accept.get_mut() {
                Some(socket) => Pin::new(socket).poll_shutdown(cx),
                None => Poll::Ready(Ok(())),
            },
            State::Handshaking(_) | State::Closing { .. } | State::Failed => Poll::Ready(Ok(())),
        }
    }
}

impl<S> fmt::Debug for TlsServerStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start(_) | State::Handshaking(_) => "handshaking",
            State::Ready(_) => "ready",
            State::Closing { .. } => "closing",
            State::Failed => "failed",
        };
        f.debug_struct("TlsServerStream")
            .field("peer", &self.peer)
            .field("state", &state)
            .finish()
    }
}
