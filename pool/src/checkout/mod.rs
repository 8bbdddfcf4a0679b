//! The insides of a checkout: the first move under the lock, readying a connection taken from
//! the pool, connects made for a caller and their retries. Shared by [`Pool::get`] and
//! [`Pool::lease`].

pub(crate) mod handoff;
pub(crate) mod pooled;
mod ready;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::checkout::handoff::Handoff;
use crate::shared::connect::Connected;
use crate::shared::connect::connect;
use crate::shared::holds::Site;
use crate::shared::line::{Arrival, Ticket, Wake};
use crate::shared::state::{Grant, Live};
use crate::status::Metrics;
use crate::{Manager, Pool, PoolError, Pooled, TimeoutKind};

/// The first move of a checkout, decided under the lock.
pub(crate) enum Step<C> {
    Closed,
    Idle(Live<C>),
    /// An idle connection the fast path found in need of readying (see [`Pool::fresh`]).
    Stale(Live<C>),
    Connect,
    Full,
    Wait(Ticket),
}

/// An idle connection taken by the fast path, and when.
type Taken<C> = (Live<C>, Instant);

/// Where handing a connection to its caller left the caller.
pub(crate) enum Next<T> {
    /// It has its connection (or lease).
    Out(T),
    /// It holds a slot, counted as connecting (and, for a lease, the room it promised to
    /// callers waiting for it): open a connection in it.
    Connect(usize),
    /// It holds nothing: decide again.
    Again,
}

impl<M: Manager> Pool<M> {
    /// `get` and `try_get`: the fast path, else the full path from what it took.
    /// The guard's hold is registered as taken at `at` (see [`Pooled::held_from`]).
    pub(crate) async fn checkout(
        &self,
        may_wait: bool,
        at: Site,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        match self.fast_checkout(at) {
            Ok(pooled) => Ok(pooled),
            // Not boxed: a caller that waits in line would allocate for it on every wait.
            Err(first) => {
                let mut pooled = self.full_checkout(may_wait, first).await?;
                pooled.held_from(at);
                Ok(pooled)
            }
        }
    }

    /// The fast path, before anything is awaited: an idle connection that is
    /// [`fresh`](Self::fresh) goes out with one lock and one clock read; one that needs more
    /// (a check, a retirement) goes to the full path with the time it was taken at, as does no
    /// idle connection (`None`).
    fn fast_checkout(&self, at: Site) -> Result<Pooled<M>, Option<Taken<M::Connection>>> {
        let shared = &self.shared;
        shared.ensure_maintenance();
        let (live, refill) = {
            let mut state = shared.lock();
            if state.closed {
                return Err(None);
            }
            let Some(live) = state.take_idle(shared.config.idle_order) else {
                return Err(None);
            };
            let refill = state.reserve_refill();
            state.debug_check();
            (live, refill)
        };
        shared.spawn_connects(refill);
        let now = Instant::now();
        self.fresh_held(live, now, Some(at))
            .map_err(|live| Some((live, now)))
    }

    /// The full path of a checkout, from what the fast path took (at the caller's arrival).
    async fn full_checkout(
        &self,
        may_wait: bool,
        mut first: Option<Taken<M::Connection>>,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let shared = &self.shared;
        let mut now = first.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        let wait = may_wait.then_some(shared.config.wait_timeout);
        let deadline = deadline_after(now, wait.unwrap_or_default());
        let mut failed_connects = 0;
        // The caller's place in line, taken once (`decide`, or `Pool::place`).
        let mut place = None;
        loop {
            // Decided inside `poll_fn` for the task's waker: a caller that joins the line
            // leaves its waker there at once, so its wait need not lock again to register it.
            let (step, refill) = match first.take() {
                Some((live, _)) => (Step::Stale(live), 0),
                None => {
                    std::future::poll_fn(|cx| {
                        Poll::Ready(self.decide(now, deadline, cx, &mut place))
                    })
                    .await
                }
            };
            shared.spawn_connects(refill);
            let next = match step {
                Step::Closed => return Err(PoolError::Closed),
                Step::Full => return Err(self.wait_timed_out()),
                Step::Connect => Next::Connect(0),
                Step::Idle(live) => match self.fresh(live, now) {
                    Ok(pooled) => return Ok(pooled),
                    Err(live) => {
                        self.place(&mut place, false);
                        self.ready(live, now).await?
                    }
                },
                Step::Stale(live) => {
                    self.place(&mut place, false);
                    self.ready(live, now).await?
                }
                Step::Wait(ticket) => {
                    let outcome;
                    (outcome, now) = self.wait_turn(ticket, deadline, now).await;
                    match outcome {
                        Wake::TimedOut => return Err(self.wait_timed_out()),
                        Wake::Closed => return Err(PoolError::Closed),
                        Wake::Granted(Grant::Conn(live)) => match self.fresh(live, now) {
                            Ok(pooled) => return Ok(pooled),
                            Err(live) => self.ready(live, now).await?,
                        },
                        Wake::Granted(Grant::Lease(leased)) => {
                            // Never sent to a caller that wants a connection of its own;
                            // given back all the same.
                            shared.end_lease(leased.conn, leased.key, false);
                            Next::Again
                        }
                        Wake::Granted(Grant::Slot) => Next::Connect(self.take_slot(false)?),
                    }
                }
            };
            match next {
                Next::Out(pooled) => return Ok(pooled),
                Next::Again => now = Instant::now(),
                Next::Connect(room) => match self.connect_for_caller(room).await {
                    Ok(pooled) => return Ok(pooled),
                    Err(error) => {
                        now = self
                            .after_failed_connect(error, may_wait, deadline, &mut failed_connects)
                            .await?;
                    }
                },
            }
        }
    }

    /// Waits in line until `deadline`, counting the wait (from `since`); returns how it ended
    /// and when.
    pub(crate) async fn wait_turn(
        &self,
        ticket: Ticket,
        deadline: Instant,
        since: Instant,
    ) -> (Wake<M::Connection>, Instant) {
        let outcome = handoff::wait(&self.shared, ticket, deadline).await;
        let served = Instant::now();
        self.shared.metrics.record_wait(served - since);
        (outcome, served)
    }

    /// A slot granted in line becomes this caller's connect (with, for a lease caller, the
    /// room it promises to callers arriving meanwhile, which it returns); granted just before
    /// the pool closed, it is given up.
    pub(crate) fn take_slot(&self, for_lease: bool) -> Result<usize, PoolError<M::Error>> {
        let mut state = self.shared.lock();
        if state.closed {
            state.free_slots(1);
            state.debug_check();
            return Err(PoolError::Closed);
        }
        state.connecting += 1;
        Ok(if for_lease { state.promise_room() } else { 0 })
    }

    /// A connect made for a caller failed: the error for the caller, or (retrying, the
    /// default) a pause with backoff and the time to decide again at, within the deadline.
    pub(crate) async fn after_failed_connect(
        &self,
        error: PoolError<M::Error>,
        may_wait: bool,
        deadline: Instant,
        failed_connects: &mut u32,
    ) -> Result<Instant, PoolError<M::Error>> {
        let shared = &self.shared;
        let retry = may_wait
            && !shared.config.fail_fast
            && match &error {
                PoolError::Connect(error) => shared.is_retryable(error),
                PoolError::Timeout(TimeoutKind::Connect) => true,
                _ => false,
            };
        if !retry {
            if error.is_timeout() {
                Metrics::bump(&shared.metrics.timeouts);
            }
            return Err(error);
        }
        // The slot went back with the failed connect (to the oldest waiter, who tries next);
        // this caller pauses, then decides again within its deadline.
        *failed_connects += 1;
        let pause = shared.config.backoff(*failed_connects);
        tracing::debug!(?pause, failed_connects, "retrying a failed connect");
        tokio::time::sleep_until(deadline_after(Instant::now(), pause).min(deadline)).await;
        let now = Instant::now();
        if now >= deadline {
            return Err(self.wait_timed_out());
        }
        Ok(now)
    }

    /// The caller's place in line: taken at its first look that found nothing free at once,
    /// or here, before it awaits anything, by a caller whose first look took a connection
    /// (or placed a lease) that needs readying or a check: should that fail and its connect
    /// fail too, it waits at this place, ahead of callers that came after it.
    pub(crate) fn place(&self, place: &mut Option<Arrival>, lease: bool) -> Arrival {
        *place.get_or_insert_with(|| self.shared.lock().waiters.arrive(lease))
    }

    /// The first move of a checkout, under the lock: an idle connection, else a slot to
    /// connect in, else a wait in line with `cx`'s waker at the caller's [`place`](Self::place),
    /// unless `deadline` is past (it is for a caller that never waits: its arrival).
    fn decide(
        &self,
        now: Instant,
        deadline: Instant,
        cx: &mut Context<'_>,
        place: &mut Option<Arrival>,
    ) -> (Step<M::Connection>, usize) {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.closed {
            return (Step::Closed, 0);
        }
        let step = if let Some(live) = state.take_idle(shared.config.idle_order) {
            Step::Idle(live)
        } else if let Some(live) = state.streams.idle_key().and_then(|key| state.unshare(key)) {
            // A connection lent as leases before and free now: taken back to be used alone.
            Step::Idle(live)
        } else {
            let arrival = *place.get_or_insert_with(|| state.waiters.arrive(false));
            if state.reserve_connects(1) == 1 {
                Step::Connect
            } else if deadline <= now {
                Step::Full
            } else {
                Step::Wait(
                    state
                        .waiters
                        .rejoin(arrival, cx.waker().clone(), Some(deadline)),
                )
            }
        };
        let refill = state.reserve_refill();
        state.debug_check();
        (step, refill)
    }

    /// Opens a connection for this caller, whose slot is reserved and counted as connecting
    /// (with `room` added to `opening_room` for a lease caller). On success the room is still
    /// promised: the lease caller takes it off when it shares the connection, with no
    /// `.await` in between.
    pub(crate) async fn connect_for_caller(
        &self,
        room: usize,
    ) -> Result<Pooled<M>, PoolError<M::Error>> {
        let shared = &self.shared;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(connect(Arc::clone(shared), Some(tx), room));
        let mut handoff = Handoff { shared, rx, room };
        match (&mut handoff.rx).await {
            Ok(Connected::Conn(mut live)) => {
                let closed = shared.locked(|state| {
                    if state.closed {
                        state.opening_room -= room;
                    }
                    state.closed
                });
                if closed {
                    // The pool closed while this connect ran: the caller gets what any
                    // caller of a closed pool gets, and the connection is closed.
                    shared.discard(live);
                    return Err(PoolError::Closed);
                }
                live.info.uses += 1;
                Ok(Pooled::held(Arc::clone(shared), live, None))
            }
            Ok(Connected::Failed(error)) => Err(PoolError::Connect(error)),
            Ok(Connected::TimedOut) => Err(PoolError::Timeout(TimeoutKind::Connect)),
            // The connect task died: a panic, or a runtime shutdown.
            Err(_) => Err(PoolError::ConnectPanicked),
        }
    }

    pub(crate) fn wait_timed_out(&self) -> PoolError<M::Error> {
        Metrics::bump(&self.shared.metrics.timeouts);
        let last_connect_error = self.shared.lock().last_connect_error.clone();
        tracing::debug!(?last_connect_error, "timed out waiting for a connection");
        PoolError::Timeout(TimeoutKind::Wait { last_connect_error })
    }
}

/// The clock of one lease call, read only when a move needs it: placing a lease on a
/// connection that already carries one needs no time at all, and a clock read costs tens of
/// nanoseconds on some machines (26 ns on the 2-core VM of BENCHMARKS.md), a fifth of a
/// lease. The first read stands for the caller's arrival, from which its deadline runs; a
/// lease that leaves the fast path reads it before it awaits anything (`Pool::start_lease`).
pub(crate) struct Times {
    arrived: Option<Instant>,
    now: Option<Instant>,
    /// `wait_timeout`, for a caller that may wait; `None` for one that never waits.
    wait: Option<Duration>,
}

impl Times {
    pub(crate) fn new(wait: Option<Duration>) -> Self {
        Times {
            arrived: None,
            now: None,
            wait,
        }
    }

    /// The time of the current move (read from the clock at its first use).
    pub(crate) fn now(&mut self) -> Instant {
        let now = self.now.unwrap_or_else(Instant::now);
        self.set(now);
        now
    }

    /// The move ended at `now` (read by the caller).
    pub(crate) fn set(&mut self, now: Instant) {
        self.arrived.get_or_insert(now);
        self.now = Some(now);
    }

    /// Time moved on (the caller awaited): the next move reads the clock again.
    pub(crate) fn moved(&mut self) {
        self.now = None;
    }

    /// The caller's deadline: its arrival plus `wait_timeout` (its arrival, for a caller
    /// that never waits).
    pub(crate) fn deadline(&mut self) -> Instant {
        let arrived = self.arrived.unwrap_or_else(|| self.now());
        deadline_after(arrived, self.wait.unwrap_or_default())
    }
}

/// `now + wait`, or a far future for a wait too long to add (`Duration::MAX`, say).
pub(crate) fn deadline_after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
