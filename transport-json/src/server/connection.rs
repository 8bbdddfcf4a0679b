//! One accepted connection: a reader that decodes requests and runs the handler for each, and a
//! writer that batches the responses.
//!
//! The reader and the requests it runs share the connection's task; the writer has a task of
//! its own, aborted when the connection's task is dropped, so the server still drops the
//! whole connection (socket, queued responses, running handlers) by dropping one task. The
//! writer's own task is a measured choice: joined into the reader's task, sequential round
//! trips ran at half the rate (see BENCHMARKS.md).

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::handler::{Handler, rfc3339_nanos};
use crate::codec::{CodecError, JsonCodec};
use crate::wire::{Message, Resp};

/// The most responses the writer takes off its queue for one write.
const WRITE_BATCH: usize = 256;
/// A write buffer grown past this (by a huge response) is given back after use.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

/// What a connection needs from the server.
pub(super) struct Context<H> {
    pub(super) handler: Arc<H>,
    pub(super) max_frame: usize,
    pub(super) max_in_flight: usize,
    /// Cancelled when the server shuts down gracefully.
    pub(super) shutdown: CancellationToken,
    /// The server's count of open connections.
    pub(super) active: Arc<AtomicUsize>,
    /// Where the connections' writer tasks run, so that an abort can wait until every one
    /// is gone (and its socket closed).
    pub(super) writers: TaskTracker,
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy)]
enum ReadEnd {
    /// The client closed its side.
    Eof,
    /// The server is shutting down.
    Shutdown,
    /// The writer failed, so answers can no longer be delivered.
    WriterGone,
    /// Bad input or a failed read: framing is lost.
    Failed,
}

/// Keeps the server's count of open connections right however the connection ends.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn enter(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection until the client leaves, the input goes bad, or the server shuts
/// down; then lets the requests already running finish, flushes their responses and closes.
///
/// `_slot` is the connection's place under the server's connection cap, freed on return.
pub(super) async fn serve<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    cx: Context<H>,
    _slot: OwnedSemaphorePermit,
) {
    let _active = Active::enter(Arc::clone(&cx.active));
    debug!(%peer, "connection opened");
    let (read, write) = stream.into_split();
    // One queued response per in-flight request at most: a handler that finishes while the
    // queue is full waits, and holds its in-flight slot while it waits, so the reader stops
    // reading. A client that does not read its responses thus stalls only itself.
    let (tx, rx) = mpsc::channel(cx.max_in_flight);
    // The writer runs in a task of its own, aborted with the connection if the connection's
    // task is dropped (server shutdown or abort).
    let mut writer = AbortOnDrop(cx.writers.spawn(write_responses(write, rx)));
    let end = read_requests(read, peer, &cx, tx).await;
    let written = match (&mut writer.0).await {
        Ok(result) => result,
        Err(join) => Err(io::Error::other(join)),
    };
    match written {
        Ok(()) => debug!(%peer, ?end, "connection closed"),
        Err(error) => debug!(%peer, ?end, %error, "connection closed: write failed"),
    }
}

/// Decodes requests and runs the handler on each, at most `max_in_flight` at once.
///
/// Returns when it stops reading and every request it started has been answered (or could
/// not be, because the writer is gone). Dropping `tx` on return is what tells the writer that
/// no more responses will come.
async fn read_requests<H: Handler>(
    read: OwnedReadHalf,
    peer: SocketAddr,
    cx: &Context<H>,
    tx: mpsc::Sender<Resp>,
) -> ReadEnd {
    let mut frames = FramedRead::new(
        read,
        JsonCodec::<Message, Resp>::with_max_frame(cx.max_frame),
    );
    // The requests of one connection run concurrently inside the connection's own task (a
    // slow request never holds back the ones behind it, and responses leave as they finish),
    // not in a task each: a spawn per request cost a scheduler round trip and a wake-up of
    // the other worker for every answer, which dominated a fast handler's cost. A handler
    // with heavy CPU work should spawn it itself. Dropping the connection drops them all.
    let mut in_flight = FuturesUnordered::new();
    // Made once, not per turn of the loop: each would register with its notifier and
    // deregister again for every request.
    let shutdown = cx.shutdown.cancelled();
    let writer_gone = tx.closed();
    tokio::pin!(shutdown, writer_gone);
    let end = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break ReadEnd::Shutdown,
            () = &mut writer_gone => break ReadEnd::WriterGone,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            // Not reading while `max_in_flight` requests run is the backpressure: the socket's
            // receive buffer fills and TCP slows the client down.
            frame = frames.next(), if in_flight.len() < cx.max_in_flight => match frame {
                Some(Ok(req)) => {
                    in_flight.push(answer(Arc::clone(&cx.handler), req, tx.clone()));
                }
                None => break ReadEnd::Eof,
                Some(Err(error)) => {
                    log_read_error(peer, &error);
                    break ReadEnd::Failed;
                }
            },
        }
    };
    // Requests already received are answered even when the rest of the input is bad: their
    // responses are valid, and the client learns of the close right after them.
    while in_flight.next().await.is_some() {}
    end
}

fn log_read_error(peer: SocketAddr, error: &CodecError) {
    match error {
        CodecError::Truncated { buffered } => {
            debug!(%peer, buffered, "client closed the connection inside a frame");
        }
        CodecError::Io(error) => debug!(%peer, %error, "read failed; closing the connection"),
        CodecError::Json(source) => {
            warn!(%peer, error = %source, "malformed JSON from client; closing the connection");
        }
        other => warn!(%peer, error = %other, "bad input from client; closing the connection"),
    }
}

/// Runs the handler for one request and queues its response.
async fn answer<H: Handler>(handler: Arc<H>, req: Message, tx: mpsc::Sender<Resp>) {
    let resp = if req.uid.is_empty() {
        rejection(String::new(), "request has no Uid")
    } else {
        let uid = req.uid.clone();
        // A panicking handler must not leave its caller waiting for an answer forever.
        match AssertUnwindSafe(handler.handle(req)).catch_unwind().await {
            Ok(mut resp) => {
                resp.uid = uid;
                resp
            }
            Err(_) => {
                warn!(%uid, "handler panicked; answering with an error");
                rejection(uid, "internal server error")
            }
        }
    };
    // The writer is gone only when the connection is closing: nobody to answer.
    let _ = tx.send(resp).await;
}

fn rejection(uid: String, why: &str) -> Resp {
    Resp {
        uid,
        val: String::new(),
        ts: rfc3339_nanos(SystemTime::now()),
        err: Some(why.to_owned()),
    }
}

/// Writes responses as they come: everything queued goes out in one write, then the next
/// batch. Closes the write side once every sender is gone and the queue is empty.
async fn write_responses(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Resp>,
) -> io::Result<()> {
    let mut codec = JsonCodec::<Message, Resp>::new();
    let mut buf = BytesMut::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for resp in batch.drain(..) {
            // A `Resp` is all strings: encoding cannot fail, but if it ever did, losing one
            // answer is better than losing the connection.
            if let Err(error) = codec.encode(resp, &mut buf) {
                warn!(%error, "could not encode a response; dropped it");
            }
        }
        write.write_all_buf(&mut buf).await?;
        write.flush().await?;
        if buf.capacity() > KEEP_WRITE_BUFFER {
            buf = BytesMut::new();
        }
    }
    write.shutdown().await
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
