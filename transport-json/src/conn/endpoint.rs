//! [`Endpoint`]: one end of a connection, whatever the stream under it (TCP, a Unix socket,
//! or a stream the caller brought).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The prefix that makes an address a Unix socket path: `unix:/run/echo.sock`.
pub const UNIX_PREFIX: &str = "unix:";

/// What [`Conn::local_addr`](super::Conn::local_addr), [`Conn::peer_addr`](super::Conn::peer_addr)
/// and [`RunningServer::local_addr`](crate::server::RunningServer::local_addr) return for an
/// end that is not a TCP socket: `0.0.0.0:0`, the unspecified address. Read
/// [`Conn::peer`](super::Conn::peer) or [`RunningServer::local`](crate::server::RunningServer::local)
/// for what it really is.
pub const NOT_TCP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// One end of a connection or a listener: a TCP address, a Unix socket path, or a label for
/// a stream the caller brought (see [`Conn::from_stream`](super::Conn::from_stream)).
///
/// Its [`Display`](fmt::Display) is what logs and errors show: `127.0.0.1:3000`,
/// `unix:/run/echo.sock`, `unix:(unnamed)`, or the label.
///
/// ```
/// use transport_json::conn::Endpoint;
///
/// let tcp = Endpoint::Tcp("127.0.0.1:3000".parse().unwrap());
/// assert_eq!(tcp.to_string(), "127.0.0.1:3000");
/// assert_eq!(Endpoint::unix("/run/echo.sock").to_string(), "unix:/run/echo.sock");
/// assert_eq!(Endpoint::named("duplex").to_string(), "duplex");
/// assert!(Endpoint::named("duplex").socket_addr().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP socket's address.
    Tcp(SocketAddr),
    /// A Unix domain socket's path; `None` for an unnamed socket (a client's own end, or one
    /// of a socket pair).
    Unix(Option<PathBuf>),
    /// A stream that is neither: the label its owner gave it.
    Named(Arc<str>),
}

impl Endpoint {
    /// A Unix socket at `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Endpoint::Unix(Some(path.into()))
    }

    /// A stream labelled `label` (for logs and errors).
    pub fn named(label: impl AsRef<str>) -> Self {
        Endpoint::Named(Arc::from(label.as_ref()))
    }

    /// The TCP address, if this is a TCP end.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Tcp(addr) => Some(*addr),
            _ => None,
        }
    }

    /// The socket path, if this is a named Unix socket.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Endpoint::Unix(path) => path.as_deref(),
            _ => None,
        }
    }

    /// The end of a Unix socket as Tokio reports it.
    #[cfg(unix)]
    pub(crate) fn of_unix(addr: &tokio::net::unix::SocketAddr) -> Self {
        Endpoint::Unix(addr.as_pathname().map(Path::to_path_buf))
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Tcp(addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => addr.fmt(f),
            Endpoint::Unix(Some(path)) => write!(f, "{UNIX_PREFIX}{}", path.display()),
            Endpoint::Unix(None) => write!(f, "{UNIX_PREFIX}(unnamed)"),
            Endpoint::Named(label) => f.write_str(label),
        }
    }
}

/// The Unix socket path of an address written `unix:PATH`; `None` for any other address.
pub(crate) fn unix_path(addr: &str) -> Option<&Path> {
    addr.strip_prefix(UNIX_PREFIX).map(Path::new)
}
