//! The state the [`Conn`](super::Conn) handles, the reader and the writer share: the table of
//! pending requests, the closed flag and the counters.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tokio_util::bytes::BytesMut;
use tokio_util::sync::CancellationToken;

use super::uid::{Key, Table};
use super::{CloseCause, Error};
use crate::Resp;

/// What a request's waiter receives: its response, or why it got none.
pub(crate) type Reply = Result<Resp, Failure>;

/// Why a request got no response.
pub(crate) enum Failure {
    /// The connection stopped.
    Closed(CloseCause),
    /// The request timeout passed (found by the reader's sweep).
    TimedOut,
}

/// How the request timeout is enforced: one sweep of the pending table every `every`, not a
/// timer per request. A request registered during sweep interval `r` has waited more than the
/// timeout once `ticks` more sweeps have begun; it fails at that sweep, so between the timeout
/// and one interval (an eighth of the timeout, or 1 ms) past it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sweep {
    pub(crate) every: Duration,
    ticks: u64,
}

impl Sweep {
    /// The sweep for `timeout`.
    pub(crate) fn for_timeout(timeout: Duration) -> Sweep {
        let every = (timeout / 8).max(Duration::from_millis(1));
        // ceil(timeout / every) whole intervals, plus the one the request was registered in.
        let whole = timeout.as_nanos().div_ceil(every.as_nanos().max(1));
        Sweep {
            every,
            ticks: u64::try_from(whole).unwrap_or(u64::MAX).saturating_add(1),
        }
    }
}

/// The output buffer's starting size (and the size the writer's own buffer goes back to).
pub(crate) const OUT_CAPACITY: usize = 8 * 1024;

/// What one sweep of the request timeout found.
pub(crate) enum Swept {
    /// Nothing is pending: stop sweeping until a request arms the sweep again.
    Idle,
    /// Requests are still pending: sweep again one interval on.
    Pending,
    /// A request timed out and no pending request was answered during the whole timeout: the
    /// sweep failed the connection with this cause (see [`Shared::sweep`]).
    Unresponsive(CloseCause),
}

/// What the writer gets when it asks for the queued output.
pub(crate) enum Take {
    /// Only one request is queued but others are in flight: yield once, so that the callers
    /// running beside the writer queue theirs, then take without asking again.
    WaitForCompany,
    /// The queued output was swapped into the writer's buffer. With `closing`, nothing more
    /// will be queued: write it, half-close and stop.
    Output { closing: bool },
}

/// One pending request.
struct Waiter {
    /// Tells this request apart from a later one that reuses its `Uid`, so that a stale drop
    /// guard never removes its successor's entry.
    id: u64,
    /// The sweep interval it was registered in (see [`Sweep`]).
    tick: u64,
    tx: oneshot::Sender<Reply>,
}

/// The state behind the lock.
///
/// Invariants (checked in debug builds by [`State::check`]):
/// - once `closed` is set, `pending` is empty and nothing is added to it again;
/// - while `closing` (or `closed`), nothing is added to `pending`;
/// - every entry of `pending` had its frame appended to `out` under this lock, before
///   `closing` was set; the writer swaps `out` out under this lock and sees `closing` in the
///   same section, so a graceful close writes every request it then waits for;
/// - `out` holds whole frames only;
/// - whenever `out` is not empty, the writer has been woken (`Shared::wake`) since it last
///   took `out`: a caller that finds `out` empty wakes it after appending.
struct State {
    pending: Table<Waiter>,
    /// Encoded requests not yet taken by the writer.
    out: BytesMut,
    /// How many frames `out` holds.
    queued: usize,
    closing: bool,
    closed: Option<CloseCause>,
    next_id: u64,
    /// Sweeps begun so far.
    tick: u64,
    /// The sweep interval in which a pending request was last answered (0 before any):
    /// the liveness rule's clock, in the same ticks as the request timeout's.
    answered: u64,
    /// Whether the reader is sweeping: on from the first request after an idle spell, off
    /// again at the first sweep that finds nothing pending.
    sweeping: bool,
    /// Why the writer failed, until the reader takes it (see [`Shared::write_failed`]).
    write_failure: Option<CloseCause>,
}

impl State {
    fn check(&self) {
        debug_assert!(self.closed.is_none() || self.pending.is_empty());
        debug_assert!(self.out.is_empty() == (self.queued == 0));
    }
}

/// Shared by every handle and both tasks of one connection.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Mirrors `state.closing || state.closed.is_some()` for a lock-free `is_closed`.
    flag: AtomicBool,
    /// Wakes the writer: output was queued into an empty buffer, or a close began.
    pub(crate) wake: Notify,
    /// Cancelled when the connection fails or the last handle goes: both tasks stop.
    pub(crate) stop: CancellationToken,
    /// Signalled when a closing connection has no pending request left: the reader may stop.
    pub(crate) drained: Notify,
    /// Tasks still running; when it reaches 0, `done` turns true.
    tasks: AtomicUsize,
    done: watch::Sender<bool>,
    /// The request timeout's sweep, if there is a request timeout.
    pub(crate) sweep: Option<Sweep>,
    /// The request timeout, when the connection closes itself once unresponsive
    /// ([`ConnectOptions::close_unresponsive`](super::ConnectOptions::close_unresponsive)).
    unresponsive: Option<Duration>,
    /// Wakes the reader to start sweeping: a request was registered while it was not.
    pub(crate) arm: Notify,
    /// Wakes the reader to end the connection: the writer failed (see
    /// [`Shared::write_failed`]).
    pub(crate) write_error: Notify,
    next_uid: AtomicU64,
    unknown: AtomicU64,
    batches: AtomicU64,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last request queued or response received.
    last_activity: AtomicU64,
}

impl Shared {
    /// Shared state for a connection with two tasks, whose requests time out after
    /// `request_timeout`, and which closes itself once unresponsive if `close_unresponsive`.
    pub(crate) fn new(request_timeout: Option<Duration>, close_unresponsive: bool) -> Shared {
        Shared {
            state: Mutex::new(State {
                pending: Table::new(),
                out: BytesMut::with_capacity(OUT_CAPACITY),
                queued: 0,
                closing: false,
                closed: None,
                next_id: 0,
                tick: 0,
                answered: 0,
                sweeping: false,
                write_failure: None,
            }),
            flag: AtomicBool::new(false),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            drained: Notify::new(),
            tasks: AtomicUsize::new(2),
            done: watch::Sender::new(false),
            sweep: request_timeout.map(Sweep::for_timeout),
            unresponsive: request_timeout.filter(|_| close_unresponsive),
            arm: Notify::new(),
            write_error: Notify::new(),
            next_uid: AtomicU64::new(1),
            unknown: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            epoch: Instant::now(),
            last_activity: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under the lock, so poisoning cannot leave it broken.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh `Uid` for a request that came without one: the next number.
    pub(crate) fn next_uid(&self) -> u64 {
        self.next_uid.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a pending entry for `uid` and has `encode` append its frame to the output
    /// buffer, or says why not (leaving the buffer as it was).
    ///
    /// `encode` runs under the lock, so that the frame goes straight into the buffer the
    /// writer takes: it must only encode, and must leave the buffer as it found it when it
    /// fails. Its errors come first, as when callers encoded before registering.
    pub(crate) fn register(
        &self,
        uid: &Key,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Result<(u64, oneshot::Receiver<Reply>), Error> {
        let (tx, rx) = oneshot::channel();
        let mut guard = self.lock();
        let state = &mut *guard;
        let start = state.out.len();
        encode(&mut state.out)?;
        let refused = if let Some(cause) = &state.closed {
            Some(Error::Closed(cause.clone()))
        } else if state.closing {
            Some(Error::Closed(CloseCause::Shutdown))
        } else {
            None
        };
        let id = state.next_id;
        let tick = state.tick;
        let refused = refused.or_else(|| {
            state
                .pending
                .insert(uid, Waiter { id, tick, tx })
                .err()
                .map(|_| Error::DuplicateUid(uid.text()))
        });
        if let Some(err) = refused {
            state.out.truncate(start);
            return Err(err);
        }
        state.next_id += 1;
        state.queued += 1;
        let arm = self.sweep.is_some() && !state.sweeping;
        state.sweeping |= arm;
        state.check();
        drop(guard);
        if start == 0 {
            // The writer took everything before this frame: it needs waking.
            self.wake.notify_one();
        }
        if arm {
            self.arm.notify_one();
        }
        Ok((id, rx))
    }

    /// Swaps the queued output into `buf` (which must be empty) for the writer, unless
    /// `may_wait` and the writer should first give other callers a chance to queue theirs.
    pub(crate) fn take_output(&self, buf: &mut BytesMut, may_wait: bool) -> Take {
        debug_assert!(buf.is_empty());
        let mut state = self.lock();
        // One request queued while others are in flight: their callers, woken by the same
        // read batch, are probably about to queue theirs.
        if may_wait && !state.closing && state.queued == 1 && state.pending.len() > 1 {
            return Take::WaitForCompany;
        }
        std::mem::swap(&mut state.out, buf);
        state.queued = 0;
        state.check();
        Take::Output {
            closing: state.closing,
        }
    }

    /// Removes the entry of a request whose caller left (dropped or timed out), unless it
    /// has already been answered or belongs to a later request with the same `Uid`.
    pub(crate) fn forget(&self, uid: &Key, id: u64) {
        let mut state = self.lock();
        state.pending.remove_if(uid, |w| w.id == id);
        let drained = state.closing && state.pending.is_empty();
        drop(state);
        if drained {
            self.drained.notify_one();
        }
    }

    /// One sweep of the request timeout: fails every request registered `ticks` sweeps ago
    /// or earlier with [`Failure::TimedOut`].
    ///
    /// The liveness rule rides on it, at no cost per request: when requests expire and no
    /// pending request was answered in the last `ticks` sweeps either, nothing was answered
    /// for the whole timeout since the later of the oldest expired request and the last
    /// answer (the sweeps ran without a break since that request was registered, as it was
    /// pending). The connection is then failed with [`CloseCause::Unresponsive`] before the
    /// expired callers hear of their timeout, so a caller that sees [`Failure::TimedOut`]
    /// already finds the connection closed (a pool discards it on return).
    pub(crate) fn sweep(&self) -> Swept {
        let Some(sweep) = self.sweep else {
            return Swept::Idle;
        };
        let mut state = self.lock();
        state.tick += 1;
        let now = state.tick;
        let expired = state
            .pending
            .take_expired(|waiter| now - waiter.tick >= sweep.ticks);
        let unresponsive = self
            .unresponsive
            .filter(|_| !expired.is_empty() && now - state.answered >= sweep.ticks);
        let go_on = !state.pending.is_empty();
        state.sweeping = go_on;
        let drained = state.closing && !go_on;
        drop(state);
        let swept = match unresponsive {
            Some(timeout) => {
                tracing::warn!(
                    ?timeout,
                    "no pending request answered within the request timeout; closing the connection"
                );
                let cause = CloseCause::Unresponsive(timeout);
                self.fail(cause.clone());
                Swept::Unresponsive(cause)
            }
            None if go_on => Swept::Pending,
            None => Swept::Idle,
        };
        for waiter in expired {
            // A caller that left at the same moment no longer listens: nothing to do.
            let _ = waiter.tx.send(Err(Failure::TimedOut));
        }
        if drained {
            self.drained.notify_one();
        }
        swept
    }

    /// Hands a response to its waiter; a response nobody waits for is counted and dropped.
    /// Returns whether it answered a pending request: only such a response proves the server
    /// alive (for the liveness rule and for [`idle_for`](Shared::idle_for)).
    pub(crate) fn route(&self, resp: Resp) -> bool {
        let mut state = self.lock();
        let waiter = state.pending.take(&resp.uid);
        let answered = waiter.is_some();
        if answered {
            state.answered = state.tick;
        }
        let drained = state.closing && state.pending.is_empty();
        drop(state);
        let delivered = match waiter {
            Some(waiter) => waiter.tx.send(Ok(resp)).is_ok(),
            None => false,
        };
        if !delivered {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("dropped a response for a uid nobody waits for");
        }
        if drained {
            self.drained.notify_one();
        }
        answered
    }

    /// Stops the connection for `cause` (the first cause recorded wins): fails every pending
    /// request with it at once, refuses new ones, and tells both tasks to stop.
    pub(crate) fn fail(&self, cause: CloseCause) {
        let mut state = self.lock();
        if state.closed.is_none() {
            // A graceful close that had nothing left to wait for ended as asked, whatever the
            // socket did last.
            let cause = if state.closing && state.pending.is_empty() {
                CloseCause::Shutdown
            } else {
                cause
            };
            match &cause {
                CloseCause::Shutdown => tracing::debug!("connection closed"),
                other => tracing::debug!(cause = %other, "connection failed"),
            }
            state.closed = Some(cause);
        }
        self.flag.store(true, Ordering::Release);
        let cause = state.closed.clone().unwrap_or(CloseCause::Shutdown);
        let waiters = state.pending.take_all();
        // Nothing queued will be written any more.
        state.out = BytesMut::new();
        state.queued = 0;
        state.check();
        drop(state);
        for waiter in waiters {
            let _ = waiter.tx.send(Err(Failure::Closed(cause.clone())));
        }
        self.stop.cancel();
    }

    /// Hands the writer's failure to the reader, which stops the connection with it once it
    /// has read what the server sent before (see `tasks::read_loop`). The reader, or its task
    /// guard if it is ending, always stops the connection: the writer need not.
    pub(crate) fn write_failed(&self, cause: CloseCause) {
        self.lock().write_failure.get_or_insert(cause);
        self.write_error.notify_one();
    }

    /// The writer's failure, once it has failed.
    pub(crate) fn write_failure(&self) -> Option<CloseCause> {
        self.lock().write_failure.clone()
    }

    /// Starts a graceful close: refuses new requests and asks the writer to write what is
    /// queued and half-close; the reader stops once nothing is pending.
    pub(crate) fn begin_close(&self) {
        let mut state = self.lock();
        if state.closing || state.closed.is_some() {
            return;
        }
        state.closing = true;
        self.flag.store(true, Ordering::Release);
        let drained = state.pending.is_empty();
        drop(state);
        // The writer takes what is queued, sees `closing` under the same lock, and
        // half-closes after writing it (see `State`).
        self.wake.notify_one();
        if drained {
            self.drained.notify_one();
        }
    }

    /// Whether new requests are refused (a close began or the connection failed).
    pub(crate) fn is_closed(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Why the connection stopped, once it has.
    pub(crate) fn close_cause(&self) -> Option<CloseCause> {
        self.lock().closed.clone()
    }

    /// The cause to report to a request refused because the connection is closing or closed.
    pub(crate) fn refusal(&self) -> CloseCause {
        self.close_cause().unwrap_or(CloseCause::Shutdown)
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Called once by each task as it ends.
    pub(crate) fn task_done(&self) {
        if self.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.send_replace(true);
        }
    }

    /// Resolves once both tasks have ended.
    pub(crate) async fn wait_done(&self) {
        let mut done = self.done.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Counts one write of queued requests (and records the activity).
    pub(crate) fn count_batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub(crate) fn unknown(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Records activity now: called once per write of queued requests and once per read
    /// batch that answered a pending request, not per request (a clock read is not free).
    pub(crate) fn touch(&self) {
        let since = Instant::now().saturating_duration_since(self.epoch);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.last_activity.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Time since the last write of requests or the last read that answered a pending request
    /// (or since the connect).
    pub(crate) fn idle_for(&self) -> Duration {
        let last = self.epoch + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last)
    }
}

#[cfg(test)]
mod tests {
    use super::Sweep;
    use std::time::Duration;

    #[test]
    fn sweep_fails_a_request_between_the_timeout_and_one_interval_past_it() {
        for ms in [1, 3, 7, 8, 100, 30_000] {
            let timeout = Duration::from_millis(ms);
            let sweep = Sweep::for_timeout(timeout);
            // Registered just before a sweep began, failed `ticks` sweeps later: waited
            // (ticks - 1) intervals at least, ticks intervals at most.
            let least = sweep.every * u32::try_from(sweep.ticks - 1).expect("few ticks");
            let most = sweep.every * u32::try_from(sweep.ticks).expect("few ticks");
            assert!(least >= timeout, "{ms} ms: fails early, after {least:?}");
            assert!(
                most <= timeout + timeout / 8 + Duration::from_millis(1),
                "{ms} ms: fails late, after {most:?}"
            );
        }
    }
}
