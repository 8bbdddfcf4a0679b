//! The two ends on the simulated network: a [`Listener`] over turmoil's TCP listener for the
//! echo server (with a handler that counts what it served), and a [`pool::Manager`] that dials
//! through turmoil and counts its connects in flight.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use transport_json::server::{EchoHandler, Handler, Listener};
use transport_json::{Conn, ConnectOptions, Endpoint, Error, JsonManager, Message, Resp};

/// The server host's name on the simulated network.
pub const SERVER: &str = "server";
/// The port the echo server listens on.
pub const PORT: u16 = 3000;

/// turmoil's TCP listener, served by our [`transport_json::Server`].
pub struct SimListener(pub turmoil::net::TcpListener);

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    // turmoil's accept takes the SYN and builds the stream with no await in between, so a
    // dropped accept loses no client.
    async fn accept(&mut self) -> io::Result<(turmoil::net::TcpStream, Endpoint)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((stream, Endpoint::Tcp(peer)))
    }

    fn local(&self) -> io::Result<Endpoint> {
        self.0.local_addr().map(Endpoint::Tcp)
    }
}

/// How many times the server ran its handler for each `Uid`, across crashes and restarts.
pub type Served = Arc<Mutex<HashMap<String, u32>>>;

/// The echo handler, counting each `Uid` it answers in [`Served`].
pub struct Counting(pub Served);

impl Handler for Counting {
    async fn handle(&self, req: Message) -> Resp {
        {
            let mut served = self.0.lock().expect("served lock");
            *served.entry(req.uid.clone()).or_default() += 1;
        }
        EchoHandler.handle(req).await
    }
}

/// What a [`SimManager`] saw of its connects.
#[derive(Debug, Default)]
pub struct Probe {
    in_flight: AtomicUsize,
    /// The most connects in flight at once, over the whole run.
    pub max_in_flight: AtomicUsize,
    /// The most connects in flight at once while the driver marked an outage.
    pub max_in_outage: AtomicUsize,
    /// Connects started while the driver marked an outage.
    pub outage_attempts: AtomicU64,
    /// Connects started.
    pub attempts: AtomicU64,
    /// Set by the driver between a fault and its repair.
    pub outage: AtomicBool,
    /// Client sockets open now: made by a connect and not yet dropped by their `Conn`.
    pub open: AtomicUsize,
    /// The most client sockets open at once.
    pub max_open: AtomicUsize,
}

/// A client socket, counted in [`Probe::open`] until its `Conn`'s tasks drop it.
pub struct Counted {
    stream: turmoil::net::TcpStream,
    probe: Arc<Probe>,
}

impl Counted {
    fn new(stream: turmoil::net::TcpStream, probe: Arc<Probe>) -> Self {
        let now = probe.open.fetch_add(1, SeqCst) + 1;
        probe.max_open.fetch_max(now, SeqCst);
        Counted { stream, probe }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.probe.open.fetch_sub(1, SeqCst);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One connect in flight; counted down when the connect ends or is dropped.
struct InFlight<'a>(&'a Probe);

impl<'a> InFlight<'a> {
    fn enter(probe: &'a Probe) -> Self {
        let now = probe.in_flight.fetch_add(1, SeqCst) + 1;
        probe.attempts.fetch_add(1, SeqCst);
        probe.max_in_flight.fetch_max(now, SeqCst);
        if probe.outage.load(SeqCst) {
            probe.outage_attempts.fetch_add(1, SeqCst);
            probe.max_in_outage.fetch_max(now, SeqCst);
        }
        InFlight(probe)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

/// A [`JsonManager`] that dials the server host through turmoil: connect opens a simulated
/// TCP stream and makes a [`Conn`] of it; check, `is_broken` and close are the JSON
/// manager's own.
pub struct SimManager {
    /// Checks and closes; its options configure each [`Conn`].
    pub json: JsonManager,
    /// Counts the connects.
    pub probe: Arc<Probe>,
}

impl SimManager {
    /// A manager whose connections use `options` (its `connect_timeout` bounds the dial).
    pub fn new(options: ConnectOptions, probe: Arc<Probe>) -> Self {
        SimManager {
            json: JsonManager::new(options),
            probe,
        }
    }
}

impl pool::Manager for SimManager {
    type Connection = Conn;
    type Error = Error;

    async fn connect(&self) -> Result<Conn, Error> {
        let _in_flight = InFlight::enter(&self.probe);
        let addr = format!("{SERVER}:{PORT}");
        let options = &self.json.options;
        let timeout: Duration = options.connect_timeout;
        match tokio::time::timeout(timeout, turmoil::net::TcpStream::connect(addr.as_str())).await {
            Ok(Ok(stream)) => {
                let stream = Counted::new(stream, Arc::clone(&self.probe));
                Ok(Conn::from_stream(stream, Endpoint::named(SERVER), options))
            }
            Ok(Err(source)) => Err(Error::Connect { addr, source }),
            Err(_) => Err(Error::ConnectTimeout { addr, timeout }),
        }
    }

    async fn check(&self, conn: &mut Conn) -> Result<(), Error> {
        pool::Manager::check(&self.json, conn).await
    }

    fn is_broken(&self, conn: &mut Conn) -> bool {
        pool::Manager::is_broken(&self.json, conn)
    }

    fn is_broken_shared(&self, conn: &Conn) -> bool {
        pool::Manager::is_broken_shared(&self.json, conn)
    }

    async fn close(&self, conn: Conn) {
        pool::Manager::close(&self.json, conn).await;
    }
}
