//! The two tasks of a connection: the writer, which batches queued requests into one write,
//! and the reader, which routes each response to its waiter.

use std::sync::Arc;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::FramedRead;

use super::CloseCause;
use super::shared::{Cmd, Shared};
use crate::codec::JsonCodec;
use crate::{Message, Resp};

/// A batch stops taking queued requests once it holds this many bytes; the rest go in the
/// next write.
const MAX_BATCH: usize = 256 * 1024;

/// The batch buffer is given back to the allocator when a burst grew it past this.
const KEEP_CAPACITY: usize = 64 * 1024;

/// How a task ended.
enum Exit {
    /// The writer finished a graceful close; the reader goes on until nothing is pending.
    Graceful,
    /// The connection must stop for this cause.
    Failed(CloseCause),
}

/// Ends a task's share of the connection whatever way the task ends: returned, panicked, or
/// dropped by a runtime shutdown (which counts as [`CloseCause::Shutdown`]).
struct TaskGuard {
    shared: Arc<Shared>,
    exit: Exit,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Exit::Failed(cause) = std::mem::replace(&mut self.exit, Exit::Graceful) {
            self.shared.fail(cause);
        }
        self.shared.task_done();
    }
}

/// Owns the write half. Takes every request queued at the moment into one buffer and writes
/// it with one `write_all`, so N callers that queue together cost one system call (mostly),
/// not N. With `TCP_NODELAY` on, the batch leaves at once.
pub(crate) async fn write_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    mut half: OwnedWriteHalf,
) {
    let mut guard = TaskGuard {
        shared: Arc::clone(&shared),
        exit: Exit::Failed(CloseCause::Shutdown),
    };
    guard.exit = match write_batches(&shared, &mut rx, &mut half).await {
        Ok(()) => Exit::Graceful,
        Err(cause) => Exit::Failed(cause),
    };
}

async fn write_batches(
    shared: &Shared,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    half: &mut OwnedWriteHalf,
) -> Result<(), CloseCause> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Err(CloseCause::Shutdown),
            cmd = rx.recv() => cmd,
        };
        let mut closing = false;
        match first {
            // `Shared` holds the sender: this happens only while it is dropped.
            None => return Err(CloseCause::Shutdown),
            Some(Cmd::Frame(frame)) => buf.extend_from_slice(&frame),
            Some(Cmd::Close) => closing = true,
        }
        // The writer woke for the first request, often before the callers running beside
        // it (on the other worker) queued theirs: one yield lets them, so they share this
        // write instead of each costing one. Only when other requests are in flight: a lone
        // caller (sequential round trips) has nobody to wait for.
        if !closing && rx.is_empty() && shared.pending() > 1 {
            tokio::task::yield_now().await;
        }
        // Coalesce: take everything already queued, up to the batch limit.
        while !closing && buf.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Cmd::Frame(frame)) => buf.extend_from_slice(&frame),
                Ok(Cmd::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => return Err(CloseCause::Shutdown),
                written = half.write_all(&buf) => {
                    written.map_err(|e| CloseCause::Io(Arc::new(e)))?;
                }
            }
            shared.count_batch();
            buf.clear();
            if buf.capacity() > KEEP_CAPACITY {
                buf = BytesMut::with_capacity(8 * 1024);
            }
        }
        if closing {
            // Half-close: the server reads to the end, answers what it has, then closes.
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => return Err(CloseCause::Shutdown),
                shut = half.shutdown() => shut.map_err(|e| CloseCause::Io(Arc::new(e)))?,
            }
            return Ok(());
        }
    }
}

/// Owns the read half: decodes responses and routes each by `Uid`. Stops at the end of the
/// stream, on the first read or protocol error, when the connection is stopped, or when a
/// closing connection has nothing pending any more.
pub(crate) async fn read_loop(shared: Arc<Shared>, half: OwnedReadHalf, max_frame: usize) {
    let mut guard = TaskGuard {
        shared: Arc::clone(&shared),
        exit: Exit::Failed(CloseCause::Shutdown),
    };
    let mut frames = FramedRead::new(half, JsonCodec::<Resp, Message>::with_max_frame(max_frame));
    let cause = loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break CloseCause::Shutdown,
            () = shared.drained.notified() => break CloseCause::Shutdown,
            next = frames.next() => match next {
                Some(Ok(resp)) => shared.route(resp),
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "bad response from the server; closing the connection");
                    break CloseCause::from(err);
                }
                None => break CloseCause::ClosedByPeer,
            },
        }
    };
    guard.exit = Exit::Failed(cause);
}
