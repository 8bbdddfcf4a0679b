//! The full path of a lease: every move after the fast path's first, from a place in line
//! to a connection opened or readied for the caller and shared.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use crate::checkout::{Next, Times};
use crate::lease::moves::Placed;
use crate::lease::streams::{SharedConn, wrap};
use crate::shared::Shared;
use crate::shared::line::{Arrival, Ticket, Wake};
use crate::shared::state::{Grant, Leased, Live, State};
use crate::status::Metrics;
use crate::{Lease, Manager, Pool, PoolError, Pooled};

/// A move of a lease's full path, decided under the lock (its first may come placed from the
/// fast path).
enum Step<C> {
    Closed,
    Full,
    /// On a shared connection: a lease, a connection to ready, or one to retire.
    Placed(Placed<C>),
    /// A slot to open a connection in (its room for others is counted).
    Connect(usize),
    /// In line.
    Wait(Ticket),
    /// Served in line (while it waited, or while it looked again: see [`back_in_line`]), or
    /// an idle connection of its own, to share.
    Granted(Grant<C>),
}

impl<M: Manager> Pool<M>
where
    M::Connection: Sync,
{
    /// The full path of a lease, from `first` (what [`fast_lease`](Self::fast_lease)
    /// placed, if anything) on.
    pub(super) async fn checkout_lease(
        &self,
        mut times: Times,
        may_wait: bool,
        first: Option<Placed<M::Connection>>,
    ) -> Result<Lease<M>, PoolError<M::Error>> {
        let shared = &self.shared;
        let mut failed_connects = 0;
        // The caller's place in line, from its first look (`decide_lease`) on.
        let mut place = None;
        // Its ticket when it is `back_in_line`, at its place.
        let mut requeued = None;
        let mut ahead = first.map(Step::Placed);
        loop {
            let step = match ahead.take() {
                Some(step) => step,
                None => {
                    // Ready at once: nothing suspends between a requeue and this look.
                    let (step, refill) = std::future::poll_fn(|cx| {
                        Poll::Ready(self.decide_lease(
                            &mut times,
                            may_wait,
                            cx,
                            requeued.take(),
                            &mut place,
                        ))
                    })
                    .await;
                    shared.spawn_connects(refill);
                    step
                }
            };
            let next = match step {
                Step::Closed => return Err(PoolError::Closed),
                Step::Full => return Err(self.wait_timed_out()),
                Step::Placed(Placed::Lease(leased)) => self.confirm(leased, None),
                Step::Placed(Placed::Retired(conn, wake, broken)) => {
                    if broken {
                        Metrics::bump(&shared.metrics.broken);
                    }
                    if let Some(waker) = wake {
                        waker.wake();
                    }
                    shared.close_shared(conn);
                    Next::Again
                }
                Step::Placed(Placed::Check(live, room)) => {
                    let now = times.now();
                    self.ready_shared(live, Some(room), &mut place, &mut requeued, now)
                        .await?
                }
                Step::Connect(room) => Next::Connect(room),
                Step::Wait(ticket) => {
                    let (outcome, served) =
                        self.wait_turn(ticket, times.deadline(), times.now()).await;
                    times.set(served);
                    match outcome {
                        Wake::TimedOut => return Err(self.wait_timed_out()),
                        Wake::Closed => return Err(PoolError::Closed),
                        // Taken as the next step, at the time it was served.
                        Wake::Granted(grant) => {
                            ahead = Some(Step::Granted(grant));
                            continue;
                        }
                    }
                }
                Step::Granted(Grant::Lease(leased)) => {
                    let place = self.place(&mut place, true);
                    self.confirm(leased, Some((place, &mut requeued)))
                }
                Step::Granted(Grant::Slot) => Next::Connect(self.take_slot(true)?),
                Step::Granted(Grant::Conn(live)) => {
                    let now = times.now();
                    self.ready_shared(live, None, &mut place, &mut requeued, now)
                        .await?
                }
            };
            match next {
                Next::Out(lease) => return Ok(lease),
                Next::Again => times.moved(),
                Next::Connect(room) => match self.connect_for_caller(room).await {
                    Ok(pooled) => {
                        let place = self.place(&mut place, true);
                        if let Next::Out(lease) = self.share(pooled, room, place, &mut requeued)? {
                            return Ok(lease);
                        }
                        times.moved();
                    }
                    Err(error) => {
                        let deadline = times.deadline();
                        let now = self
                            .after_failed_connect(error, may_wait, deadline, &mut failed_connects)
                            .await?;
                        times.set(now);
                    }
                },
            }
        }
    }

    /// A move of a lease's full path, under the lock: a lease on the connection with the
    /// fewest leases that has room, else an idle connection to share, else a place in line
    /// behind a connection being opened with room, else a slot to open one, else a place in
    /// line. The clock is read only when a move needs it (`Times`): a lease on a connection
    /// that already carries one reads none.
    ///
    /// The caller's `place` in line is taken at its first look, and it waits at that place
    /// whenever it waits (`Line::rejoin`): it keeps its turn after a connect failed, or after
    /// its connection went to the callers ahead of it ([`back_in_line`]).
    fn decide_lease(
        &self,
        times: &mut Times,
        may_wait: bool,
        cx: &mut Context<'_>,
        requeued: Option<Ticket>,
        place: &mut Option<Arrival>,
    ) -> (Step<M::Connection>, usize) {
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(ticket) = requeued
            && let Some(Wake::Granted(grant)) = state.waiters.withdraw(ticket)
        {
            state.debug_check();
            return (Step::Granted(grant), 0);
        }
        if state.closed {
            return (Step::Closed, 0);
        }
        let arrival = *place.get_or_insert_with(|| state.waiters.arrive(true));
        let placed = state.place_lease(
            || times.now(),
            shared.config.check_interval,
            |conn| shared.conn_is_broken(conn),
        );
        let mut may_wait = || may_wait && times.deadline() > times.now();
        let step = if let Some(placed) = placed {
            Step::Placed(placed)
        } else if let Some(live) = state.take_idle(shared.config.idle_order) {
            Step::Granted(Grant::Conn(live))
        } else if !(state.waiters.leasers() < state.opening_room && may_wait())
            && state.reserve_connects(1) == 1
        {
            Step::Connect(state.promise_room())
        } else if may_wait() {
            let deadline = Some(times.deadline());
            Step::Wait(state.waiters.rejoin(arrival, cx.waker().clone(), deadline))
        } else {
            Step::Full
        };
        let refill = state.reserve_refill();
        state.debug_check();
        (step, refill)
    }

    /// A lease handed out, unless [`Manager::is_broken_shared`] says its connection died: the
    /// lease then ends, marking it broken, and the caller decides again. A caller served in
    /// line (`requeue`: its place there) keeps its turn then: it is [`back_in_line`] before
    /// the lease ends and the connection's slot is freed, so that slot, or room elsewhere,
    /// reaches it before callers that came after it.
    fn confirm(
        &self,
        leased: Leased,
        requeue: Option<(Arrival, &mut Option<Ticket>)>,
    ) -> Next<Lease<M>> {
        let mut lease = Lease::new(Arc::clone(&self.shared), leased, None);
        if !self.shared.is_broken_shared(&*lease) {
            return Next::Out(lease);
        }
        if let Some((place, requeued)) = requeue {
            self.shared
                .locked(|state| back_in_line(state, place, requeued));
        }
        Lease::mark_broken(&mut lease);
        Next::Again
    }

    /// Readies a connection this caller has alone as `get` readies one (retired if expired
    /// or broken, else checked if due), then shares it. `checked`: it came from the shared
    /// connections for its check (`Placed::Check`), with room promised to callers arriving
    /// meanwhile (`opening_room`), which goes with it, or with the connect that replaces it in
    /// its slot; else (it was retired and its slot went, or this future was dropped) it is
    /// taken back. The caller's place in line is taken first, as a look would have taken it.
    async fn ready_shared(
        &self,
        live: Live<M::Connection>,
        checked: Option<usize>,
        place: &mut Option<Arrival>,
        requeued: &mut Option<Ticket>,
        now: Instant,
    ) -> Result<Next<Lease<M>>, PoolError<M::Error>> {
        let place = self.place(place, true);
        let mut readying = Readying {
            shared: &self.shared,
            room: checked.unwrap_or(0),
            checking: checked.is_some(),
        };
        let ready = match self.fresh(live, now) {
            Ok(pooled) => Next::Out(pooled),
            Err(live) => self.ready(live, now).await?,
        };
        let room = std::mem::take(&mut readying.room);
        match ready {
            Next::Out(pooled) => self.share(pooled, room, place, requeued),
            Next::Connect(more) => Ok(Next::Connect(more + room)),
            Next::Again => {
                readying.room = room;
                Ok(Next::Again)
            }
        }
    }

    /// Puts a connection this caller has alone into shared form, first come, first served
    /// from its `place` in line (`State::share`); `room` is what the connect made for this
    /// caller promised (`opening_room`): the connection now gives it. When the callers ahead
    /// of it took every lease, the caller is [`back_in_line`].
    fn share(
        &self,
        pooled: Pooled<M>,
        room: usize,
        place: Arrival,
        requeued: &mut Option<Ticket>,
    ) -> Result<Next<Lease<M>>, PoolError<M::Error>> {
        let shared = &self.shared;
        let live = Pooled::into_live(pooled);
        let conn = wrap(live.conn);
        let mut wakes = Vec::new();
        let mut state = shared.lock();
        state.opening_room -= room;
        let leased =
            (!state.closed).then(|| state.share(conn.clone(), live.info, place, &mut wakes));
        match leased {
            None => state.free_slots(1),
            Some(None) => back_in_line(&mut state, place, requeued),
            Some(Some(_)) => {}
        }
        state.debug_check();
        // New to the shared connections (opened, or held by `get` through the background
        // task's rounds): the task must wake by its lifetime's end, or a lease could join it
        // past that end (one on a connection that carries leases reads no clock). One already
        // shared is in the task's plan.
        let rearm = leased.is_some() && live.info.expires_before(state.waiters.planned());
        drop(state);
        shared.rearm_maintenance(rearm);
        self.after_sharing(conn, wakes, leased)
    }

    /// Wakes the callers served on `conn`, just shared, then hands its caller's lease out
    /// (`Some(None)`: the callers ahead of it took every one). `None`: the pool closed
    /// meanwhile, and `conn` is closed.
    pub(super) fn after_sharing(
        &self,
        conn: SharedConn,
        wakes: Vec<Option<Waker>>,
        leased: Option<Option<Leased>>,
    ) -> Result<Next<Lease<M>>, PoolError<M::Error>> {
        for waker in wakes.into_iter().flatten() {
            waker.wake();
        }
        let Some(leased) = leased else {
            self.shared.close_shared(conn);
            return Err(PoolError::Closed);
        };
        drop(conn);
        Ok(leased.map_or(Next::Again, |leased| self.confirm(leased, None)))
    }
}

/// Puts a caller that could not use what it got (a lease on a connection that died, or a
/// connection whose leases went to the callers ahead of it) back at its `place` in line, as
/// `requeued`, unless the pool closed or a connection is idle (its next look takes that). Its
/// next look ([`Pool::decide_lease`], with nothing awaited in between) takes what it was
/// served meanwhile, or leaves the line to look.
fn back_in_line<C>(state: &mut State<C>, place: Arrival, requeued: &mut Option<Ticket>) {
    if !state.closed && state.idle.is_empty() {
        *requeued = Some(state.waiters.rejoin(place, Waker::noop().clone(), None));
    }
}

/// A connection being readied for a lease caller: the room promised to callers arriving
/// meanwhile (`opening_room`), taken back when dropped unless it went on with the connection,
/// and, for a shared connection out for its check, its count in `State::checking`.
struct Readying<'a, M: Manager> {
    shared: &'a Arc<Shared<M>>,
    room: usize,
    checking: bool,
}

impl<M: Manager> Drop for Readying<'_, M> {
    fn drop(&mut self) {
        if self.room > 0 || self.checking {
            let mut state = self.shared.lock();
            state.opening_room -= self.room;
            state.checking -= usize::from(self.checking);
        }
        if self.checking {
            self.shared.drained.notify_waiters();
        }
    }
}
