//! One accepted connection, served by one task: no channel, no writer task.
//!
//! The task runs one poll loop, in the shape of the plain buffered server of
//! `benches/transport.rs` (read, answer everything buffered, write once, read again):
//!
//! 1. decode each complete request in the input buffer and start its handler. The handler's
//!    future is polled once at once, in a box reused from one request to the next; if it
//!    answers then (the echo handler always does), its response is encoded straight into the
//!    output buffer: no allocation, no queue, no wake-up. Only a future still pending goes
//!    into a `FuturesUnordered`, with its `Uid`;
//! 2. encode each response of those that is ready;
//! 3. write the output buffer once no complete request is left in the input (or a bound below
//!    stops the decoding), and keep writing while the socket takes it;
//! 4. read more input and start over; wait when neither the socket nor a handler can go on.
//!
//! Bounds: at most `max_in_flight` requests running or answered but not yet written, and no
//! decoding while the output holds [`OUTPUT_HIGH`] bytes; past either the connection stops
//! reading, so a client that does not read its answers stalls only itself. A graceful shutdown
//! stops reading, lets the running requests finish, writes their answers and shuts the write
//! side down; bad input does the same after the requests before it (a frame over the maximum,
//! or one not finished within the frame timeout, is answered with an `Err` first). Dropping the
//! task (an abort) drops the whole connection at once: socket, buffers, running handlers.
//!
//! Before it waits, the loop tells its [`Deadlines`] what it waits on (one timer for the idle,
//! frame and write timeouts) and its [`Marker`] whether it is idle, so that the accept loop can
//! close the idlest connection at the cap; an idle connection that is evicted or times out
//! closes as a graceful shutdown does, one whose writes time out is dropped with its requests.
//!
//! # Why one loop
//!
//! The previous design ran a writer of its own, in a task fed by a channel, beside a reader
//! that pushed every request into the `FuturesUnordered`; an earlier `select!` join of the two
//! halves in one task had halved the sequential rate. A single task was not the cost (the raw
//! server of the benchmark is one): the per-request machinery was (a set node, a channel send
//! and a wake-up of the writer per answer, the `select!` rotation). Measured with the
//! benchmark's `BENCH_SPLIT=1` rows (the raw client against each server, ratio to the raw pair
//! in the same run; quick runs on a 2-core VM shared with other builds; both servers built
//! from the same tree), previous design -> this loop:
//!
//! - pipelined, 64 in flight on one connection: 0.77-0.83 -> 0.88-1.02 (1.03-1.23 in three
//!   runs of the bench on a quieter machine);
//! - sequential: 0.88-1.18 -> 1.01-1.11 (0.95-1.10), the raw rate itself moving by 20 %.
//!
//! In CPU, a single-thread run of the raw client against this server costs 0.89 times the
//! same run against the raw server; against the previous design, 1.40 times (batches of 64,
//! both with the codec's plain-frame fast paths). Reading through `AsyncRead` rather than
//! `try_read_buf` matters: see [`Connection::poll_fill`].

mod ending;
mod requests;

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{self, Poll, ready};

use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::deadline::{Deadlines, Timeouts};
use super::handler::Handler;
use super::idle::Marker;
use super::report::{ConnectionReport, Report};
use crate::codec::{CodecError, JsonCodec};
use crate::conn::Endpoint;
use crate::wire::{Message, Resp};
use ending::{ReadEnd, log_read_error};
use requests::{Running, rejection, start_handler};

/// Room made in the input buffer before a read.
const READ_CHUNK: usize = 8 * 1024;
/// Output past this many bytes stops decoding until it is written: a long burst of input still
/// gets its answers out, and a client that does not read holds at most this much (plus one
/// response) in our buffer.
const OUTPUT_HIGH: usize = 64 * 1024;
/// A buffer grown past this (by a huge request or response) is given back once empty.
const KEEP_BUFFER: usize = 64 * 1024;
/// The `Uid` buffer grown past this (by a huge `Uid`) is given back at the end of a batch.
const KEEP_UID: usize = 1024;

/// What a connection needs from the server.
pub(super) struct Context<H> {
    pub(super) handler: Arc<H>,
    pub(super) max_frame: usize,
    pub(super) max_in_flight: usize,
    /// Cancelled when the server shuts down gracefully.
    pub(super) shutdown: CancellationToken,
    /// The server's count of open connections.
    pub(super) active: Arc<AtomicUsize>,
    pub(super) timeouts: Timeouts,
    /// The connection's idle stamp, read by the accept loop at the cap.
    pub(super) idle: Marker,
    /// The server's metrics (feature `metrics`).
    pub(super) report: Report,
}

/// Keeps the server's count of open connections (and its gauge) right however the
/// connection ends.
struct Active(Arc<AtomicUsize>, Report);

impl Active {
    fn enter(count: Arc<AtomicUsize>, report: Report) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        report.opened();
        Self(count, report)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.closed();
    }
}

/// Serves one connection until the client leaves, the input goes bad, or the server shuts
/// down; then lets the requests already running finish, writes their responses and closes.
///
/// `_slot` is the connection's place under the server's connection cap, freed on return.
///
/// Generic over the stream, so a TCP connection runs the same code it ran before streams of
/// other kinds were served (no boxed stream, no dynamic call per read or write).
pub(super) async fn serve<H: Handler, S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: Endpoint,
    cx: Context<H>,
    _slot: OwnedSemaphorePermit,
) {
    let _active = Active::enter(Arc::clone(&cx.active), cx.report.clone());
    debug!(%peer, "connection opened");
    let mut conn = Connection {
        handler: &*cx.handler,
        start: start_handler::<H>,
        peer,
        stream,
        codec: JsonCodec::with_max_frame(cx.max_frame),
        input: BytesMut::new(),
        eof: false,
        output: BytesMut::new(),
        unwritten: 0,
        in_flight: FuturesUnordered::new(),
        spare: None,
        uid: String::new(),
        max_in_flight: cx.max_in_flight,
        end: None,
        write_error: None,
        closed: false,
        deadlines: Deadlines::new(cx.timeouts),
        idle: cx.idle,
        idle_since: None,
        started: false,
        report: ConnectionReport::new(&cx.report),
    };
    let mut shutdown = pin!(cx.shutdown.cancelled());
    let end = std::future::poll_fn(|task| {
        // Polled once per wake-up, not per request: polling it takes the token's locks.
        if conn.end.is_none() && shutdown.as_mut().poll(task).is_ready() {
            conn.end = Some(ReadEnd::Shutdown);
        }
        conn.poll_serve(task)
    })
    .await;
    let peer = &conn.peer;
    match &conn.write_error {
        None => debug!(%peer, ?end, "connection closed"),
        Some(error) => debug!(%peer, ?end, %error, "connection closed: write failed"),
    }
}

/// The state of one connection; see the module documentation for the loop.
///
/// `F` is the type of the handler's future, named by `start`; `S` the stream's.
struct Connection<'h, H, F, S> {
    handler: &'h H,
    start: fn(&'h H, Message) -> F,
    peer: Endpoint,
    stream: S,
    codec: JsonCodec<Message, Resp>,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// The client closed its side; what is left in `input` is all there will be.
    eof: bool,
    /// Encoded responses not yet written.
    output: BytesMut,
    /// How many responses `output` holds (counted until it is written out completely).
    /// Invariant: 0 whenever `output` is empty.
    unwritten: usize,
    /// Requests whose handler did not answer on its first poll.
    in_flight: FuturesUnordered<Running<F>>,
    /// A finished handler's box, reused for the next request.
    spare: Option<Pin<Box<F>>>,
    /// The `Uid` of the request being started, in a buffer reused from one to the next.
    uid: String,
    max_in_flight: usize,
    /// Why reading stopped; `None` while reading.
    end: Option<ReadEnd>,
    /// The write that failed; responses are dropped from then on.
    write_error: Option<io::Error>,
    /// The write side has been shut down.
    closed: bool,
    deadlines: Deadlines,
    idle: Marker,
    /// Since when no request is in flight and nothing is left to write, as of the last wait;
    /// `None` while busy.
    idle_since: Option<Instant>,
    /// A request was started since the last wait.
    started: bool,
    report: ConnectionReport,
}

/// What stopped [`Connection::take_requests`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Took {
    /// No complete request is left in the input: read more.
    NeedInput,
    /// `max_in_flight` or the output bound is reached: write first.
    Full,
    /// Reading has stopped.
    Stopped,
}

impl<'h, H, F, S> Connection<'h, H, F, S>
where
    H: Handler,
    F: Future<Output = Resp>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The loop of the module documentation. Returns `Pending` only after every source it
    /// waits on (socket, running handlers) has registered the waker; returns once reading has
    /// stopped, every request has been answered, and the write side is shut down (or failed).
    fn poll_serve(&mut self, task: &mut task::Context<'_>) -> Poll<ReadEnd> {
        loop {
            let took = self.take_requests(task);
            self.collect_answers(task);
            self.poll_write_out(task);
            if let Some(end) = self.end
                && self.in_flight.is_empty()
                && self.output.is_empty()
            {
                return self.poll_close(task).map(|()| end);
            }
            if took == Took::NeedInput && self.poll_fill(task).is_ready() {
                continue;
            }
            // Room freed by a complete write (or by a response that failed to encode) lets the
            // requests still buffered in `input` in: decode them now, nothing would wake us
            // for them.
            if took == Took::Full && self.end.is_none() && self.has_room() {
                continue;
            }
            // Waiting now: every running handler was polled until pending, any output left is
            // blocked on the socket, and reading is blocked on the socket (`NeedInput`), on
            // those two (`Full`), or over. Unless a timeout or an eviction ends it first.
            if self.before_wait(took, task) {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Whether another request may start: the running and the unwritten ones stay under
    /// `max_in_flight`, and the output under its bound. Not reading beyond that is the
    /// backpressure: the socket's receive buffer fills and TCP slows the client down, so a
    /// client that does not read its responses stalls only itself.
    fn has_room(&self) -> bool {
        self.in_flight.len() + self.unwritten < self.max_in_flight
            && self.output.len() < OUTPUT_HIGH
    }

    /// Decodes and starts requests while there is room.
    fn take_requests(&mut self, task: &mut task::Context<'_>) -> Took {
        loop {
            if self.end.is_some() {
                return Took::Stopped;
            }
            if !self.has_room() {
                return Took::Full;
            }
            let decoded = if self.eof {
                self.codec.decode_eof(&mut self.input)
            } else {
                self.codec.decode(&mut self.input)
            };
            match decoded {
                Ok(Some(req)) => {
                    self.deadlines.frame_done();
                    self.start_request(req, task);
                }
                Ok(None) if self.eof => self.end = Some(ReadEnd::Eof),
                Ok(None) => {
                    if self.input.is_empty() && self.input.capacity() > KEEP_BUFFER {
                        self.input = BytesMut::new();
                    }
                    if self.uid.capacity() > KEEP_UID {
                        self.uid = String::new();
                    }
                    return Took::NeedInput;
                }
                Err(error) => {
                    // Requests already started are still answered: their responses are valid,
                    // and the client learns of the close right after them (and why, when the
                    // frame was too long).
                    log_read_error(&self.peer, &error);
                    self.report.decode_failed(&error);
                    if let CodecError::FrameTooLong { max } = error {
                        let why = format!("frame too large: more than {max} bytes");
                        self.encode(&rejection(String::new(), &why));
                    }
                    self.end = Some(ReadEnd::Failed);
                }
            }
        }
    }

    fn encode(&mut self, resp: &Resp) {
        if self.write_error.is_some() {
            return;
        }
        // A `Resp` is all strings: encoding cannot fail, but if it ever did, losing one
        // answer is better than losing the connection.
        match self.codec.encode(resp, &mut self.output) {
            Ok(()) => {
                self.unwritten += 1;
                self.report.answered();
            }
            Err(error) => {
                warn!(peer = %self.peer, %error, "could not encode a response; dropped it")
            }
        }
    }

    /// Writes `output` while the socket takes it; leaves the waker registered if it could not
    /// write everything. A failed write ends reading and drops the output.
    fn poll_write_out(&mut self, task: &mut task::Context<'_>) {
        if !self.output.is_empty() {
            self.report.before_write();
        }
        while !self.output.is_empty() {
            match Pin::new(&mut self.stream).poll_write(task, &self.output) {
                Poll::Ready(Ok(0)) => return self.fail_write(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.deadlines.wrote();
                    self.output.advance(n);
                    if self.output.is_empty() {
                        self.unwritten = 0;
                        if self.output.capacity() > KEEP_BUFFER {
                            self.output = BytesMut::new();
                        }
                    }
                }
                Poll::Ready(Err(error)) => return self.fail_write(error),
                Poll::Pending => return,
            }
        }
    }

    fn fail_write(&mut self, error: io::Error) {
        self.write_error = Some(error);
        self.output = BytesMut::new();
        self.unwritten = 0;
        self.end.get_or_insert(ReadEnd::WriteFailed);
    }

    /// Reads what the socket has into `input`. `Ready` when something changed: bytes came,
    /// the client closed its side (`eof`), or the read failed (reading ends).
    fn poll_fill(&mut self, task: &mut task::Context<'_>) -> Poll<()> {
        if self.input.capacity() - self.input.len() < READ_CHUNK / 2 {
            self.input.reserve(READ_CHUNK);
        }
        // Through `AsyncRead` (the future is cancel safe and made afresh per call): a read that
        // does not fill the buffer tells tokio the socket is drained, so the next poll waits
        // for readiness instead of making a read that would block. `poll_read_ready` and
        // `try_read_buf` made that extra syscall once per batch: 5-8 % of the cost per request
        // in batches of 64.
        let read = pin!(self.stream.read_buf(&mut self.input)).poll(task);
        match ready!(read) {
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(error) => {
                log_read_error(&self.peer, &CodecError::Io(error));
                self.end = Some(ReadEnd::Failed);
            }
        }
        Poll::Ready(())
    }

    /// Shuts the write side down once, so the client sees the end of the responses.
    fn poll_close(&mut self, task: &mut task::Context<'_>) -> Poll<()> {
        if self.write_error.is_none() && !self.closed {
            if let Err(error) = ready!(Pin::new(&mut self.stream).poll_shutdown(task)) {
                self.write_error = Some(error);
            }
            self.closed = true;
        }
        Poll::Ready(())
    }
}
