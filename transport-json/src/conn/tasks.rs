//! The two tasks of a connection: the writer, which writes the requests queued in the shared
//! output buffer in one go, and the reader, which routes each response to its waiter.

use std::sync::Arc;
use std::task::Poll;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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

/// Owns the write half. Callers encode their requests into one shared buffer; the writer
/// swaps that buffer for its own empty one and writes it with one `write_all`, so N callers
/// that queue together cost one system call (mostly), not N. With `TCP_NODELAY` on, the
/// batch leaves at once.
pub(crate) async fn write_loop(shared: Arc<Shared>, mut half: OwnedWriteHalf) {
    let mut guard = TaskGuard {
        shared: Arc::clone(&shared),
        exit: Exit::Failed(CloseCause::Shutdown),
    };
    guard.exit = match write_batches(&shared, &mut half).await {
        Ok(()) => Exit::Graceful,
        Err(cause) => Exit::Failed(cause),
    };
}

async fn write_batches(shared: &Shared, half: &mut OwnedWriteHalf) -> Result<(), CloseCause> {
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
/// closing connection has nothing pending any more.
pub(crate) async fn read_loop(shared: Arc<Shared>, half: OwnedReadHalf, max_frame: usize) {
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
    // The request timeout's sweep: one timer for the connection, reset once per interval
    // while requests are pending, idle otherwise.
    let every = shared.sweep.map(|sweep| sweep.every);
    let tick = tokio::time::sleep(every.unwrap_or_default());
    tokio::pin!(stop, drained, arm, tick);
    let mut sweeping = false;
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
            read = route_batch(&shared, &mut frames) => match read {
                // The end of what one read brought: record the activity once, and only if
                // it answered a pending request (stray `Uid`s prove nothing).
                Ok(true) => shared.touch(),
                Ok(false) => {}
                Err(cause) => break cause,
            },
        }
    };
    guard.exit = Exit::Failed(cause);
}

/// The most responses routed in one turn of the reader's loop, so that a long burst still
/// lets it look at its other duties (stop, sweep) now and then.
const ROUTE_BATCH: usize = 128;

/// Routes every response that is ready (up to [`ROUTE_BATCH`]); waits only while none is.
/// Returns whether any of them answered a pending request. Fails with the cause to close
/// the connection for: end of stream or bad input.
async fn route_batch(
    shared: &Shared,
    frames: &mut FramedRead<OwnedReadHalf, JsonCodec<Resp, Message>>,
) -> Result<bool, CloseCause> {
    let mut routed = 0;
    let mut answered = false;
    std::future::poll_fn(|cx| {
        loop {
            match frames.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(resp))) => {
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
