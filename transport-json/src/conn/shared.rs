//! The state the [`Conn`](super::Conn) handles, the reader and the writer share: the table of
//! pending requests, the closed flag and the counters.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{CloseCause, Error};
use crate::Resp;

/// What a request's waiter receives: its response, or why the connection stopped.
pub(crate) type Reply = Result<Resp, CloseCause>;

/// What the writer task is asked to do.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Write one encoded request.
    Frame(Bytes),
    /// Write what came before, half-close the socket and stop.
    Close,
}

/// One pending request.
struct Waiter {
    /// Tells this request apart from a later one that reuses its `Uid`, so that a stale drop
    /// guard never removes its successor's entry.
    id: u64,
    tx: oneshot::Sender<Reply>,
}

/// The state behind the lock.
///
/// Invariants (checked in debug builds by [`State::check`]):
/// - once `closed` is set, `pending` is empty and nothing is added to it again;
/// - while `closing` (or `closed`), nothing is added to `pending`;
/// - every entry of `pending` had its frame queued to the writer, under this lock, before
///   any `Cmd::Close`, so a graceful close writes every request it then waits for.
struct State {
    pending: HashMap<String, Waiter>,
    closing: bool,
    closed: Option<CloseCause>,
    next_id: u64,
}

impl State {
    fn check(&self) {
        debug_assert!(self.closed.is_none() || self.pending.is_empty());
    }
}

/// Shared by every handle and both tasks of one connection.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Mirrors `state.closing || state.closed.is_some()` for a lock-free `is_closed`.
    flag: AtomicBool,
    /// The writer's queue. Sends happen under the `state` lock (see the invariants).
    tx: mpsc::UnboundedSender<Cmd>,
    /// Cancelled when the connection fails or the last handle goes: both tasks stop.
    pub(crate) stop: CancellationToken,
    /// Signalled when a closing connection has no pending request left: the reader may stop.
    pub(crate) drained: Notify,
    /// Tasks still running; when it reaches 0, `done` turns true.
    tasks: AtomicUsize,
    done: watch::Sender<bool>,
    next_uid: AtomicU64,
    unknown: AtomicU64,
    batches: AtomicU64,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last request queued or response received.
    last_activity: AtomicU64,
}

impl Shared {
    /// Shared state for a connection with two tasks, and the writer's end of the queue.
    pub(crate) fn new() -> (Shared, mpsc::UnboundedReceiver<Cmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                closing: false,
                closed: None,
                next_id: 0,
            }),
            flag: AtomicBool::new(false),
            tx,
            stop: CancellationToken::new(),
            drained: Notify::new(),
            tasks: AtomicUsize::new(2),
            done: watch::Sender::new(false),
            next_uid: AtomicU64::new(1),
            unknown: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            epoch: Instant::now(),
            last_activity: AtomicU64::new(0),
        };
        (shared, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under the lock, so poisoning cannot leave it broken.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh `Uid` for a request that came without one.
    pub(crate) fn next_uid(&self) -> String {
        self.next_uid.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Adds a pending entry for `uid` and queues its frame, or says why not.
    pub(crate) fn register(
        &self,
        uid: String,
        frame: Bytes,
    ) -> Result<(u64, oneshot::Receiver<Reply>), Error> {
        let mut state = self.lock();
        if let Some(cause) = &state.closed {
            return Err(Error::Closed(cause.clone()));
        }
        if state.closing {
            return Err(Error::Closed(CloseCause::Shutdown));
        }
        let id = state.next_id;
        let (tx, rx) = oneshot::channel();
        match state.pending.entry(uid) {
            Entry::Occupied(entry) => return Err(Error::DuplicateUid(entry.key().clone())),
            Entry::Vacant(entry) => {
                let key = entry.key().clone();
                entry.insert(Waiter { id, tx });
                if self.tx.send(Cmd::Frame(frame)).is_err() {
                    // The writer is gone and is about to fail the connection.
                    state.pending.remove(&key);
                    let cause = state.closed.clone().unwrap_or(CloseCause::Shutdown);
                    return Err(Error::Closed(cause));
                }
            }
        }
        state.next_id += 1;
        state.check();
        drop(state);
        self.touch();
        Ok((id, rx))
    }

    /// Removes the entry of a request whose caller left (dropped or timed out), unless it
    /// has already been answered or belongs to a later request with the same `Uid`.
    pub(crate) fn forget(&self, uid: &str, id: u64) {
        let mut state = self.lock();
        if state.pending.get(uid).is_some_and(|w| w.id == id) {
            state.pending.remove(uid);
        }
        let drained = state.closing && state.pending.is_empty();
        drop(state);
        if drained {
            self.drained.notify_one();
        }
    }

    /// Hands a response to its waiter; a response nobody waits for is counted and dropped.
    pub(crate) fn route(&self, resp: Resp) {
        self.touch();
        let mut state = self.lock();
        let waiter = state.pending.remove(&resp.uid);
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
        let waiters = std::mem::take(&mut state.pending);
        state.check();
        drop(state);
        for waiter in waiters.into_values() {
            let _ = waiter.tx.send(Err(cause.clone()));
        }
        self.stop.cancel();
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
        // Queued under the lock: after every frame of a pending request (see `State`).
        let _ = self.tx.send(Cmd::Close);
        let drained = state.pending.is_empty();
        drop(state);
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

    pub(crate) fn count_batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub(crate) fn unknown(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// Records activity now (a request queued or a response received).
    fn touch(&self) {
        let since = Instant::now().saturating_duration_since(self.epoch);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.last_activity.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Time since the last request was queued or response received (or since the connect).
    pub(crate) fn idle_for(&self) -> Duration {
        let last = self.epoch + Duration::from_nanos(self.last_activity.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last)
    }
}
