//! The two tasks of a connection: the writer, which writes the requests queued in the shared
//! output buffer in one go, and the reader, which routes each response to its waiter.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::FramedRead;

use super::CloseCause;
use super::shared::{OUT_CAPACITY, Shared, Swept, Take};
use crate::codec::JsonCodec;
use crate::{Message, Resp};

/// A batch ends with the first request that brings it to this many bytes; the rest go in the
/// next write.
const MAX_BATCH: usize = 256 * 1024;

/// The batch buffer is given back to the allocator when a burst grew it past this.
const KEEP_CAPACITY: usize = 64 * 1024;

/// How long the reader reads on after the writer failed, for the end of the stream. A failed
/// TCP write means the connection is gone, so the stream ends as soon as the reader has read
/// what the server sent before; this only bounds the wait should a failed write ever leave
/// the read side open.
const WRITE_ERROR_GRACE: Duration = Duration::from_secs(1);

/// How a task ended.
enum Exit {
    /// The task ended without failing the connection: the writer finished a graceful close
    /// (the reader goes on until nothing is pending), or handed its failure to the reader.
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

/// Owns the write half. Callers encode their requests into one shared buffer; the writer
/// swaps that buffer for its own empty one and writes it with one `write_all`, so N callers
/// that queue together cost one system call (mostly), not N. With `TCP_NODELAY` on, the
/// batch leaves at once.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut half: W) {
    let mut guard = TaskGuard {
        shared: Arc::clone(&shared),
        exit: Exit::Failed(CloseCause::Shutdown),
    };
    guard.exit = match write_batches(&shared, &mut half).await {
        Ok(()) => Exit::Graceful,
        // A write fails when the server reset the connection, often right after it sent why
        // (a request over its maximum frame is cut short): the reader reads that first and
        // then stops the connection with the writer's cause, or the server's reason.
        Err(cause @ CloseCause::Io(_)) => {
            shared.write_failed(cause);
            Exit::Graceful
        }
        Err(cause) => Exit::Failed(cause),
    };
}

async fn write_batches<W: AsyncWrite + Unpin>(
    shared: &Shared,
    half: &mut W,
) -> Result<(), CloseCause> {
    let mut buf = BytesMut::with_capacity(OUT_CAPACITY);
    loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Err(CloseCause::Shutdown),
            () = shared.wake.notified() => {}
        }
        // The writer woke for the first request, often before the callers running beside
        // it (on the other worker) queued theirs: one yield lets them, so they share this
        // write instead of each costing one. Only when other requests are in flight: a lone
        // caller (sequential round trips) has nobody to wait for.
        let closing = match shared.take_output(&mut buf, true) {
            Take::Output { closing } => closing,
            Take::WaitForCompany => {
                tokio::task::yield_now().await;
                match shared.take_output(&mut buf, false) {
                    Take::Output { closing } => closing,
                    // Not asked for without `may_wait`.
                    Take::WaitForCompany => false,
                }
            }
        };
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let batch = &rest[..batch_len(rest)];
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => return Err(CloseCause::Shutdown),
                written = half.write_all(batch) => {
                    written.map_err(|e| CloseCause::Io(Arc::new(e)))?;
                }
            }
            shared.count_batch();
            rest = &rest[batch.len()..];
        }
        buf.clear();
        if buf.capacity() > KEEP_CAPACITY {
            buf = BytesMut::with_capacity(OUT_CAPACITY);
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

/// How many bytes of `queued` (whole frames) go in the next write: all of them, or up to the
/// end of the frame that reaches [`MAX_BATCH`]. A frame ends at its newline, the only one in
/// it (JSON text escapes the newlines inside strings).
fn batch_len(queued: &[u8]) -> usize {
    if queued.len() <= MAX_BATCH {
        return queued.len();
    }
    match queued[MAX_BATCH - 1..].iter().position(|&b| b == b'\n') {
        Some(at) => MAX_BATCH + at,
        None => queued.len(),
    }
}

/// Owns the read half: decodes responses and routes each by `Uid`. Stops at the end of the
/// stream, on the first read or protocol error, when the connection is stopped, or when a
/// closing connection has nothing pending any more. After the writer failed it reads on to
/// the end of the stream (within [`WRITE_ERROR_GRACE`]) and stops with the writer's cause,
/// so that what the server sent before it closed is still routed and its reason heard.
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    half: R,
    max_frame: usize,
) {
    let mut guard = TaskGuard {
        shared: Arc::clone(&shared),
        exit: Exit::Failed(CloseCause::Shutdown),
    };
    let mut frames = FramedRead::new(half, JsonCodec::<Resp, Message>::with_max_frame(max_frame));
    // Made once, not per response: each would register with its notifier and deregister
    // again for every frame.
    let stop = shared.stop.cancelled();
    let drained = shared.drained.notified();
    let arm = shared.arm.notified();
    let write_error = shared.write_error.notified();
    // Armed once the writer failed: the bound on reading on (see `WRITE_ERROR_GRACE`).
    let grace = tokio::time::sleep(Duration::ZERO);
    let mut write_failed = false;
    // The request timeout's sweep: one timer for the connection, reset once per interval
    // while requests are pending, idle otherwise.
    let every = shared.sweep.map(|sweep| sweep.every);
    let tick = tokio::time::sleep(every.unwrap_or_default());
    tokio::pin!(stop, drained, arm, tick, write_error, grace);
    let mut sweeping = false;
    // The last error the server sent for the whole connection: the reason for a close that
    // follows it.
    let mut reason = None;
    let cause = loop {
        tokio::select! {
            biased;
            () = &mut stop => break CloseCause::Shutdown,
            () = &mut drained => break CloseCause::Shutdown,
            () = &mut arm, if every.is_some() && !sweeping => {
                arm.set(shared.arm.notified());
                sweeping = true;
                let next = Instant::now() + every.unwrap_or_default();
                tick.as_mut().reset(next);
            }
            () = &mut tick, if sweeping => match shared.sweep() {
                Swept::Pending => {
                    let next = tick.deadline() + every.unwrap_or_default();
                    tick.as_mut().reset(next);
                }
                Swept::Idle => sweeping = false,
                // The sweep failed the connection already.
                Swept::Unresponsive(cause) => break cause,
            },
            () = &mut write_error, if !write_failed => {
                write_failed = true;
                grace.as_mut().reset(Instant::now() + WRITE_ERROR_GRACE);
            }
            read = route_batch(&shared, &mut frames, &mut reason) => match read {
                // The end of what one read brought: record the activity once, and only if
                // it answered a pending request (stray `Uid`s prove nothing).
                Ok(true) => shared.touch(),
                Ok(false) => {}
                // A failed write came first, and says more than the end of stream after it.
                Err(cause) => {
                    let cause = shared.write_failure().unwrap_or(cause);
                    break explained(cause, reason.take());
                }
            },
            () = &mut grace, if write_failed => {
                let cause = shared.write_failure().unwrap_or(CloseCause::Shutdown);
                break explained(cause, reason.take());
            }
        }
    };
    guard.exit = Exit::Failed(cause);
}

/// The cause to close for when the stream ended (or a write failed) with `cause`: after the
/// server's error for the whole connection, an end of stream or a reset is that error
/// ([`CloseCause::Rejected`]), so the callers learn why the server closed.
fn explained(cause: CloseCause, reason: Option<Arc<str>>) -> CloseCause {
    match (cause, reason) {
        (CloseCause::ClosedByPeer | CloseCause::Io(_), Some(reason)) => {
            CloseCause::Rejected(reason)
        }
        (cause, _) => cause,
    }
}

/// The most responses routed in one turn of the reader's loop, so that a long burst still
/// lets it look at its other duties (stop, sweep) now and then.
const ROUTE_BATCH: usize = 128;

/// Routes every response that is ready (up to [`ROUTE_BATCH`]); waits only while none is.
/// Returns whether any of them answered a pending request. Fails with the cause to close
/// the connection for: end of stream or bad input.
///
/// An `Err` with an empty `Uid` answers no request (a made-up `Uid` is never empty): it is the
/// server's error for the whole connection, kept in `reason` (and counted as unknown, as any
/// response nobody waits for). It is not fatal by itself.
async fn route_batch<R: AsyncRead + Unpin>(
    shared: &Shared,
    frames: &mut FramedRead<R, JsonCodec<Resp, Message>>,
    reason: &mut Option<Arc<str>>,
) -> Result<bool, CloseCause> {
    let mut routed = 0;
    let mut answered = false;
    std::future::poll_fn(|cx| {
        loop {
            match frames.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(resp))) => {
                    if resp.uid.is_empty()
                        && let Some(err) = &resp.err
                    {
                        tracing::debug!(error = %err, "the server sent an error for the connection");
                        *reason = Some(Arc::from(err.as_str()));
                    }
                    answered |= shared.route(resp);
                    routed += 1;
                    if routed == ROUTE_BATCH {
                        return Poll::Ready(Ok(answered));
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    tracing::warn!(error = %err, "bad response from the server; closing the connection");
                    return Poll::Ready(Err(CloseCause::from(err)));
                }
                Poll::Ready(None) => return Poll::Ready(Err(CloseCause::ClosedByPeer)),
                // The socket has our waker: come back when more arrives, or now if this
                // turn routed something.
                Poll::Pending if routed > 0 => return Poll::Ready(Ok(answered)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{MAX_BATCH, batch_len};

    #[test]
    fn batches_end_with_the_frame_that_reaches_the_limit() {
        let frame = |len: usize| {
            let mut f = vec![b'x'; len - 1];
            f.push(b'\n');
            f
        };
        let small = [frame(10), frame(20)].concat();
        assert_eq!(batch_len(&small), 30);
        let exact = frame(MAX_BATCH);
        assert_eq!(batch_len(&[exact.clone(), frame(5)].concat()), MAX_BATCH);
        let over = [frame(MAX_BATCH - 3), frame(10), frame(7)].concat();
        assert_eq!(batch_len(&over), MAX_BATCH + 7);
    }
}
