//! [`Error`]: why a request or a connect failed; [`CloseCause`]: why a connection stopped.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::CodecError;

/// Why a [`Conn`](super::Conn) stopped. Every request pending on it when it stopped, and every
/// request made after, fails with [`Error::Closed`] carrying this cause.
///
/// Cheap to clone: one cause is handed to every request that was pending.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CloseCause {
    /// The server closed the connection (end of stream).
    #[error("the server closed the connection")]
    ClosedByPeer,
    /// The server sent bytes that are not a JSON response, or a frame longer than the
    /// maximum: framing is lost, so the connection cannot be trusted any more.
    #[error("the server broke the protocol")]
    Protocol(#[source] Arc<CodecError>),
    /// Reading from or writing to the socket failed (a reset, a keepalive timeout, ...).
    #[error("I/O error on the connection")]
    Io(#[source] Arc<io::Error>),
    /// This side closed the connection: [`Conn::close`](super::Conn::close) was called, or
    /// every handle to it was dropped.
    #[error("the connection was closed by this side")]
    Shutdown,
    /// Requests timed out and the server answered none of the requests pending on the
    /// connection for the whole request timeout (the duration): it is taken for dead. Only
    /// with [`ConnectOptions::close_unresponsive`](super::ConnectOptions::close_unresponsive)
    /// on (the default). Responses to `Uid`s nobody waits for do not count as answers.
    #[error("the server answered no pending request within the request timeout of {0:?}")]
    Unresponsive(Duration),
    /// The server sent an error for the whole connection (an `Err` with an empty `Uid`) and
    /// then closed it (end of stream or a reset): the text is its reason, the last such one
    /// it sent, for example `frame too large: more than 1048576 bytes` when a request was
    /// longer than the server's maximum frame.
    #[error("the server closed the connection after an error: {0}")]
    Rejected(Arc<str>),
}

/// Why [`Conn::connect`](super::Conn::connect) or a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Resolving the address or opening the TCP connection failed.
    #[error("could not connect to {addr}")]
    Connect {
        /// The address as configured.
        addr: String,
        /// What the resolver or the socket said.
        #[source]
        source: io::Error,
    },
    /// Opening the TCP connection (and the TLS handshake, with TLS) took longer than the
    /// connect timeout.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The address as configured.
        addr: String,
        /// The connect timeout that fired.
        timeout: Duration,
    },
    /// The TLS handshake failed (feature `tls`): the server's certificate was refused (the
    /// source reads, for example, `invalid peer certificate: UnknownIssuer` for a certificate
    /// of another CA, or `NotValidForName`), the server refused ours, or it does not speak
    /// TLS.
    #[error("TLS handshake with {addr} failed")]
    Tls {
        /// The address as configured.
        addr: String,
        /// What rustls said (an `InvalidData` error carrying a `rustls::Error`), or the
        /// socket's error.
        #[source]
        source: io::Error,
    },
    /// The server answered the request with an `Err` field; the connection stays usable.
    #[error("the server rejected the request: {0}")]
    Server(String),
    /// No response came within the request timeout. The request's pending entry is gone; a
    /// late response to it is counted by
    /// [`Conn::unknown_responses`](super::Conn::unknown_responses) and dropped.
    #[error("the request timed out after {0:?}")]
    Timeout(Duration),
    /// A request with the same `Uid` is already in flight on this connection; the new one was
    /// not sent and the one in flight is untouched.
    #[error("uid {0:?} is already in flight on this connection")]
    DuplicateUid(String),
    /// The encoded request is longer than the connection's maximum frame length: a server with
    /// the same limit would drop the whole connection on it, so it was not sent.
    #[error("the request is {len} bytes, more than the maximum frame of {max} bytes")]
    RequestTooLarge {
        /// The encoded length, newline included.
        len: usize,
        /// The configured maximum frame length.
        max: usize,
    },
    /// The request could not be encoded as JSON; nothing was sent.
    #[error("could not encode the request")]
    Encode(#[source] CodecError),
    /// The connection is closed, or closed while the request was in flight; the source says
    /// why.
    #[error("the connection is closed")]
    Closed(#[source] CloseCause),
}

impl Error {
    /// The cause when this is [`Error::Closed`].
    pub fn close_cause(&self) -> Option<&CloseCause> {
        match self {
            Error::Closed(cause) => Some(cause),
            _ => None,
        }
    }

    /// True for [`Error::Timeout`] and [`Error::ConnectTimeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::ConnectTimeout { .. })
    }

    /// Whether trying again may help. False for a TLS handshake that failed on what was said
    /// (a certificate of another CA or for another name, a refused client certificate, a
    /// peer that does not speak TLS: rustls reports each as invalid data), which no retry
    /// changes; true for everything else (a refused, reset or timed-out connect, a socket
    /// error during the handshake). [`JsonManager`](crate::JsonManager) answers the pool's
    /// [`is_retryable`](pool::Manager::is_retryable) with it, so a pool with a wrong CA fails
    /// its callers at once instead of retrying until their wait timeout.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Tls { source, .. } if source.kind() == io::ErrorKind::InvalidData)
    }
}

impl From<CodecError> for CloseCause {
    /// A read error of the codec: an I/O error stays [`CloseCause::Io`], anything else is a
    /// [`CloseCause::Protocol`] error.
    fn from(err: CodecError) -> Self {
        match err {
            CodecError::Io(e) => CloseCause::Io(Arc::new(e)),
            other => CloseCause::Protocol(Arc::new(other)),
        }
    }
}
