//! Making a [`Conn`]: dialing the address of its [`ConnectOptions`] (TCP or `unix:PATH`), or
//! taking a stream that is already open, then starting the reader and writer tasks on it.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use super::options::{Ends, Opened};
use super::shared::Shared;
use super::{Conn, ConnectOptions, Endpoint, Error, Inner, tasks};

impl Conn {
    /// Resolves `options.addr`, connects within `options.connect_timeout`, sets the socket
    /// options, and starts the connection's reader and writer tasks. An address written
    /// `unix:PATH` connects to the Unix domain socket at `PATH` instead (the TCP socket
    /// options do not apply to it). With `ConnectOptions::tls` set (feature `tls`), a TLS
    /// handshake then runs on the stream, within what is left of the connect timeout, and the
    /// connection runs over TLS (split with [`tokio::io::split`]). For any other stream, see
    /// [`from_stream`](Conn::from_stream).
    ///
    /// Needs a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Connect`] when resolving, connecting or setting a socket option failed (for a
    /// Unix socket: no socket at the path, nobody listening on it, no permission, an empty
    /// path, or a platform without Unix sockets); [`Error::ConnectTimeout`] when the connect
    /// timeout fired; with `ConnectOptions::tls` set, [`Error::Tls`] when the handshake
    /// failed (a certificate refused, a server that does not speak TLS).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it completes closes any socket it opened and
    /// starts no task.
    pub async fn connect(options: &ConnectOptions) -> Result<Conn, Error> {
        let started = tokio::time::Instant::now();
        match options.open().await? {
            Opened::Tcp(stream) => {
                let ends = Ends::of_tcp(&stream).map_err(|source| options.connect_error(source))?;
                Conn::start_socket(stream, TcpStream::into_split, ends, options, started).await
            }
            #[cfg(unix)]
            Opened::Unix(stream) => {
                let ends =
                    Ends::of_unix(&stream).map_err(|source| options.connect_error(source))?;
                Conn::start_socket(stream, UnixStream::into_split, ends, options, started).await
            }
        }
    }

    /// Starts a connection on a socket [`connect`](Conn::connect) opened at `started`: over
    /// TLS when `options.tls` is set (the handshake within what is left of the connect
    /// timeout), else on the socket's owned halves (`into_split`), so no lock stands between
    /// the reader and the writer.
    async fn start_socket<S, R, W>(
        stream: S,
        into_split: impl FnOnce(S) -> (R, W),
        ends: Ends,
        options: &ConnectOptions,
        started: tokio::time::Instant,
    ) -> Result<Conn, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        #[cfg(feature = "tls")]
        if let Some(tls) = &options.tls {
            let deadline = started + options.connect_timeout;
            let stream = tls.handshake(stream, options, deadline).await?;
            return Ok(Conn::start_split(stream, ends, options));
        }
        #[cfg(not(feature = "tls"))]
        let _ = started;
        let (read, write) = into_split(stream);
        Ok(Conn::start(read, write, ends, options))
    }

    /// Makes a connection of a stream that is already open: a Unix socket, a TLS stream, an
    /// in-memory [`tokio::io::duplex`], a simulated network's stream. Starts the reader and
    /// writer tasks on it, as [`connect`](Conn::connect) does, with every option of
    /// `options` that concerns the connection (`request_timeout`, `close_unresponsive`,
    /// `max_in_flight`, `max_frame`); those that concern opening a socket (`addr`,
    /// `connect_timeout`, `nodelay`, keepalive, `linger`) are the caller's business and
    /// ignored. `peer` names the other end for [`peer`](Conn::peer), logs and `Debug`;
    /// [`local`](Conn::local) is `Endpoint::Named("local")`.
    ///
    /// The stream is split with [`tokio::io::split`], so the reader and the writer share it
    /// under a lock taken per read and per write; [`connect`](Conn::connect) avoids that for
    /// TCP and Unix sockets by splitting them into owned halves.
    ///
    /// ```
    /// use transport_json::conn::{Conn, ConnectOptions, Endpoint};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (ours, _theirs) = tokio::io::duplex(64 * 1024);
    /// let conn = Conn::from_stream(ours, Endpoint::named("duplex"), &ConnectOptions::default());
    /// assert_eq!(conn.peer().to_string(), "duplex");
    /// # }
    /// ```
    ///
    /// # Panics
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    pub fn from_stream<S>(stream: S, peer: Endpoint, options: &ConnectOptions) -> Conn
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let ends = Ends {
            local: Endpoint::named("local"),
            peer,
        };
        Conn::start_split(stream, ends, options)
    }

    /// [`start`](Conn::start) on the halves of [`tokio::io::split`].
    fn start_split<S>(stream: S, ends: Ends, options: &ConnectOptions) -> Conn
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        Conn::start(read, write, ends, options)
    }

    /// Spawns the writer on `write` and the reader on `read`: generic here, so each stream
    /// type gets its own tasks, and [`Conn`] itself names no stream type.
    fn start<R, W>(read: R, write: W, ends: Ends, options: &ConnectOptions) -> Conn
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared::new(
            options.request_timeout,
            options.close_unresponsive,
        ));
        tokio::spawn(tasks::write_loop(Arc::clone(&shared), write));
        tokio::spawn(tasks::read_loop(
            Arc::clone(&shared),
            read,
            options.max_frame,
        ));
        tracing::debug!(local = %ends.local, peer = %ends.peer, "connected");
        Conn {
            inner: Arc::new(Inner {
                shared,
                ends,
                max_frame: options.max_frame,
                request_timeout: options.request_timeout,
                permits: options.max_in_flight.map(|max| Semaphore::new(max.max(1))),
            }),
        }
    }
}
