//! [`ConnectOptions`]: where to connect and how to set up the socket.

use std::future::Future;
use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use super::Error;
use super::endpoint::{Endpoint, unix_path};
use crate::codec::DEFAULT_MAX_FRAME;

/// Where and how [`Conn::connect`](super::Conn::connect) connects.
///
/// Start from [`ConnectOptions::new`] (or [`Default`], which targets `127.0.0.1:3000`) and
/// chain the setters, or assign the public fields:
///
/// ```
/// use std::time::Duration;
/// use transport_json::conn::ConnectOptions;
///
/// let options = ConnectOptions::new("127.0.0.1:3000")
///     .request_timeout(Some(Duration::from_secs(2)))
///     .max_in_flight(Some(512));
/// assert!(options.nodelay);
/// assert!(options.close_unresponsive);
/// assert_eq!(options.linger, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// `host:port`, resolved with Tokio's resolver on every connect; each resolved address is
    /// tried in turn. Or `unix:PATH` for the Unix domain socket at `PATH` (absolute, as
    /// `unix:/run/echo.sock`, or relative to the working directory). Default `127.0.0.1:3000`.
    pub addr: String,
    /// How long resolving and opening the TCP connection, and the TLS handshake when
    /// `tls` is set, may take in all. Default 5 s.
    pub connect_timeout: Duration,
    /// `TCP_NODELAY`: send small requests at once instead of waiting (Nagle). Default true:
    /// the writer already batches what is queued.
    pub nodelay: bool,
    /// Idle time before the first TCP keepalive probe (Linux `tcp_keepalive_time`); `None`
    /// leaves keepalive off. Default 60 s.
    pub keepalive_time: Option<Duration>,
    /// Time between keepalive probes (`tcp_keepalive_intvl`); `None` keeps the system's.
    /// Default 10 s.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`tcp_keepalive_probes`); `None`
    /// keeps the system's. Default 3.
    pub keepalive_retries: Option<u32>,
    /// `SO_LINGER`. `None` (the default) leaves the system's behaviour: a close sends a FIN
    /// and the kernel delivers what is left in the background. `Some(ZERO)` resets the
    /// connection on close; ask for it only if you know you want it.
    pub linger: Option<Duration>,
    /// How long one request may wait for its response once queued; `None` waits forever.
    /// Default 30 s. The connection enforces it with one sweep of its pending requests every
    /// eighth of the timeout (1 ms at least), not a timer per request, so a request fails
    /// between the timeout and one eighth past it. With [`max_in_flight`] set, the wait for
    /// an in-flight slot is bounded by the same limit on its own.
    ///
    /// [`max_in_flight`]: ConnectOptions::max_in_flight
    pub request_timeout: Option<Duration>,
    /// Whether the connection closes itself, with [`CloseCause::Unresponsive`], when a request
    /// times out and no pending request was answered during the whole request timeout (counted
    /// from when the oldest timed-out request was sent or the last answer came, whichever is
    /// later). Its pending requests then fail with [`Error::Closed`], new ones are refused, and
    /// a pool discards it, so a connection to a hung server, or to one that only sends
    /// `Uid`s nobody waits for, does not linger. Default true. Checked by the request
    /// timeout's sweep, so it needs a [`request_timeout`]; turn it off when some requests
    /// legitimately take longer than the timeout while nothing else is in flight (a timeout
    /// then leaves the connection open).
    ///
    /// [`request_timeout`]: ConnectOptions::request_timeout
    /// [`CloseCause::Unresponsive`]: super::CloseCause::Unresponsive
    pub close_unresponsive: bool,
    /// The most requests pending on the connection at once; more wait for a slot (within
    /// their request timeout). `None` (the default) sets no bound; `Some(0)` counts as 1.
    pub max_in_flight: Option<usize>,
    /// The longest frame accepted from the server and the longest request sent (newline
    /// included). Default [`DEFAULT_MAX_FRAME`] (1 MiB).
    pub max_frame: usize,
    /// TLS (feature `tls`): when set, [`Conn::connect`](super::Conn::connect) runs a TLS
    /// handshake on the TCP or Unix stream it opened, within what is left of
    /// [`connect_timeout`](ConnectOptions::connect_timeout), and the connection runs over
    /// TLS. Default `None`: plain text.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConnect>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            addr: "127.0.0.1:3000".to_owned(),
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
            keepalive_time: Some(Duration::from_secs(60)),
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_retries: Some(3),
            linger: None,
            request_timeout: Some(Duration::from_secs(30)),
            close_unresponsive: true,
            max_in_flight: None,
            max_frame: DEFAULT_MAX_FRAME,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// The defaults, connecting to `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        ConnectOptions {
            addr: addr.into(),
            ..ConnectOptions::default()
        }
    }

    /// Sets [`addr`](ConnectOptions::addr).
    #[must_use]
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Sets [`connect_timeout`](ConnectOptions::connect_timeout).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`nodelay`](ConnectOptions::nodelay).
    #[must_use]
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Sets the three keepalive knobs at once; `time: None` turns keepalive off.
    #[must_use]
    pub fn keepalive(
        mut self,
        time: Option<Duration>,
        interval: Option<Duration>,
        retries: Option<u32>,
    ) -> Self {
        self.keepalive_time = time;
        self.keepalive_interval = interval;
        self.keepalive_retries = retries;
        self
    }

    /// Sets [`linger`](ConnectOptions::linger).
    #[must_use]
    pub fn linger(mut self, linger: Option<Duration>) -> Self {
        self.linger = linger;
        self
    }

    /// Sets [`request_timeout`](ConnectOptions::request_timeout).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`close_unresponsive`](ConnectOptions::close_unresponsive).
    #[must_use]
    pub fn close_unresponsive(mut self, close: bool) -> Self {
        self.close_unresponsive = close;
        self
    }

    /// Sets [`max_in_flight`](ConnectOptions::max_in_flight).
    #[must_use]
    pub fn max_in_flight(mut self, max: Option<usize>) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Sets [`max_frame`](ConnectOptions::max_frame).
    #[must_use]
    pub fn max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    /// Sets [`tls`](ConnectOptions::tls) (feature `tls`).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: Option<crate::tls::TlsConnect>) -> Self {
        self.tls = tls;
        self
    }

    /// Opens the stream `addr` names within the connect timeout: a Unix socket for
    /// `unix:PATH`, else a TCP stream to the first resolved address that answers, configured.
    pub(crate) async fn open(&self) -> Result<Opened, Error> {
        let opened = match unix_path(&self.addr) {
            Some(path) => self.within_timeout(open_unix(path)).await?,
            None => Opened::Tcp(self.within_timeout(self.open_tcp()).await?),
        };
        if let Opened::Tcp(stream) = &opened {
            self.configure(stream)
                .map_err(|source| self.connect_error(source))?;
        }
        Ok(opened)
    }

    /// Resolves the address and connects to the first resolved address that answers.
    async fn open_tcp(&self) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in tokio::net::lookup_host(&self.addr).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing")
        }))
    }

    /// `dial`, bounded by the connect timeout; its failure is [`Error::Connect`].
    async fn within_timeout<T>(
        &self,
        dial: impl Future<Output = io::Result<T>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(self.connect_error(source)),
            Err(_) => Err(Error::ConnectTimeout {
                addr: self.addr.clone(),
                timeout: self.connect_timeout,
            }),
        }
    }

    /// [`Error::Connect`] for this address.
    pub(crate) fn connect_error(&self, source: io::Error) -> Error {
        Error::Connect {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Applies `nodelay`, keepalive and linger to a connected stream.
    fn configure(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(self.nodelay)?;
        let sock = SockRef::from(stream);
        if let Some(time) = self.keepalive_time {
            sock.set_tcp_keepalive(&self.keepalive_params(time))?;
        }
        if let Some(linger) = self.linger {
            sock.set_linger(Some(linger))?;
        }
        Ok(())
    }

    #[cfg_attr(
        not(any(
            target_os = "android",
            target_os = "freebsd",
            target_os = "ios",
            target_os = "linux",
            target_os = "macos",
            target_os = "netbsd",
            target_os = "windows",
        )),
        allow(unused_mut)
    )]
    fn keepalive_params(&self, time: Duration) -> TcpKeepalive {
        let mut params = TcpKeepalive::new().with_time(time);
        #[cfg(any(
            target_os = "android",
            target_os = "freebsd",
            target_os = "ios",
            target_os = "linux",
            target_os = "macos",
            target_os = "netbsd",
            target_os = "windows",
        ))]
        {
            if let Some(interval) = self.keepalive_interval {
                params = params.with_interval(interval);
            }
            if let Some(retries) = self.keepalive_retries {
                params = params.with_retries(retries);
            }
        }
        params
    }
}

/// A stream [`ConnectOptions::open`] opened.
pub(crate) enum Opened {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// Connects to the Unix socket at `path`; an empty path is refused before any system call.
async fn open_unix(path: &std::path::Path) -> io::Result<Opened> {
    if path.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty Unix socket path (write unix:/path/to/socket)",
        ));
    }
    #[cfg(unix)]
    return tokio::net::UnixStream::connect(path)
        .await
        .map(Opened::Unix);
    #[cfg(not(unix))]
    return Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "Unix domain sockets are not supported on this platform",
    ));
}

/// The two ends of a connected stream, kept for [`Conn::local`](super::Conn::local) and
/// [`Conn::peer`](super::Conn::peer).
#[derive(Debug, Clone)]
pub(crate) struct Ends {
    pub local: Endpoint,
    pub peer: Endpoint,
}

impl Ends {
    pub(crate) fn of_tcp(stream: &TcpStream) -> io::Result<Ends> {
        Ok(Ends {
            local: Endpoint::Tcp(stream.local_addr()?),
            peer: Endpoint::Tcp(stream.peer_addr()?),
        })
    }

    #[cfg(unix)]
    pub(crate) fn of_unix(stream: &tokio::net::UnixStream) -> io::Result<Ends> {
        Ok(Ends {
            local: Endpoint::of_unix(&stream.local_addr()?),
            peer: Endpoint::of_unix(&stream.peer_addr()?),
        })
    }
}
