//! The pool's critical sections as the models run them: each function makes the same moves
//! on the same state under the lock as its original in the pool.

use super::*;

/// How a lease's start ended.
pub(super) enum Started {
    /// Found room itself (fast path or its full placement).
    Found(Leased),
    /// Waited in line and was served this lease there.
    Served(Leased),
    /// Opened a connection in a slot it found free or was served in line, and leased it.
    Opened(Leased),
    /// The pool closed.
    Closed,
    /// Timed out in line by the line's timer ([`line_timer`]).
    TimedOut,
}

/// A move of a lease's full path (`lease::Step`, those the models reach).
pub(super) enum Step {
    Closed,
    Placed(Placed<u64>),
    /// A slot to open a connection in, with the room promised to callers arriving meanwhile.
    Connect(usize),
    Wait(Ticket),
}

/// `Pool::decide_lease`'s critical section, for a caller that may wait (no timer runs out)
/// and is never sent back in line: a lease placed on the connection with the fewest leases
/// that has room (or a connection with no lease to retire), else a place in line behind a
/// connection being opened with room, else a slot to open one in, else a place in line. The
/// caller's `place` in line is taken at its first look.
pub(super) fn decide_lease(model: &Model, waker: &Waker, place: &mut Option<Arrival>) -> Step {
    let mut state = model.lock().unwrap();
    if state.closed {
        return Step::Closed;
    }
    let arrival = *place.get_or_insert_with(|| state.waiters.arrive(true));
    let placed = state.place_lease(Instant::now, CHECK_INTERVAL, |_| false);
    let step = if let Some(placed) = checked(&state, placed) {
        Step::Placed(placed)
    } else {
        assert!(
            state.idle.is_empty(),
            "no `get` here: nothing idle of its own"
        );
        if state.waiters.leasers() >= state.opening_room && state.reserve_connects(1) == 1 {
            Step::Connect(state.promise_room())
        } else {
            // Its deadline is already past: only a model that runs the line's timer times it out.
            Step::Wait(
                state
                    .waiters
                    .rejoin(arrival, waker.clone(), Some(Instant::now())),
            )
        }
    };
    assert_eq!(state.reserve_refill(), 0, "no `min_idle` here");
    state.debug_check();
    step
}

/// `checkout::handoff::wait`, with no timer: its first poll, in the poll whose look joined
/// the line with the task's waker, returns at once; each later one polls the ticket under
/// the lock.
pub(super) async fn wait(model: &Model, ticket: Ticket, waker: &Waker) -> Wake<u64> {
    let mut first_poll = true;
    std::future::poll_fn(|_| {
        if std::mem::take(&mut first_poll) {
            return Poll::Pending;
        }
        let mut cx = Context::from_waker(waker);
        model.lock().unwrap().waiters.poll(ticket, &mut cx)
    })
    .await
}

/// `Pool::take_slot` for a lease caller: the slot it was served in line becomes its connect,
/// with the room it promises to callers arriving meanwhile; `None` (the slot given up) when
/// the pool closed.
pub(super) fn take_slot(model: &Model) -> Option<usize> {
    let mut state = model.lock().unwrap();
    if state.closed {
        state.free_slots(1);
        state.debug_check();
        return None;
    }
    state.connecting += 1;
    Some(state.promise_room())
}

/// A connect made for a caller (in a slot counted as connecting, with `room` promised)
/// succeeds with [`NEW`], and the caller shares it, in their three critical sections: the
/// connect's end (`shared::connect::connect`), the caller's look at the pool
/// (`connect_for_caller`) and `Pool::share`, which wakes the callers it served. The caller's
/// lease; `None` when the pool closed meanwhile (the connection is then closed and pushed to
/// `closed`, its slot freed).
pub(super) fn open(
    model: &Model,
    room: usize,
    place: Arrival,
    closed: &mut Vec<u64>,
) -> Option<Leased> {
    {
        let mut state = model.lock().unwrap();
        state.connecting -= 1;
        state.last_connect_error = None;
    }
    let pool_closed = {
        let mut state = model.lock().unwrap();
        if state.closed {
            state.opening_room -= room;
        }
        state.closed
    };
    if pool_closed {
        // `Shared::discard`: the slot frees (`Shared::release_slot`), then it is closed.
        if let Some(waker) = locked(model, State::release_slot) {
            waker.wake();
        }
        closed.push(NEW);
        return None;
    }
    let conn = wrap(NEW);
    let mut wakes = Vec::new();
    let leased = locked(model, |state| {
        state.opening_room -= room;
        if state.closed {
            state.free_slots(1);
            return None;
        }
        let info = ConnInfo::new(Instant::now(), None);
        let leased = state.share(std::sync::Arc::clone(&conn), info, place, &mut wakes);
        Some(leased.expect("nobody waits ahead of the opener here to take its lease"))
    });
    wakes.into_iter().flatten().for_each(Waker::wake);
    if leased.is_none() {
        closed.extend(unwrap::<u64>(conn));
    }
    leased
}

/// `Pool::lease` as a future, from `fast_lease` on through the full path
/// (`Pool::checkout_lease`): its first move placed, or decided under the lock; a connection
/// past its lifetime found with no lease is closed (its slot freed) and the caller decides
/// again; a wait in line ends with a lease, a slot or the pool's close; a slot, found or
/// served, is opened with the connection [`NEW`]. The outcome; the caller's record says
/// whether it waited in line, and the connections it closed.
pub(super) async fn lease(model: &Model, waker: &Waker, caller: &mut Caller) -> Started {
    let mut place = None;
    // Its own statement: the lock it takes is released before `decide_lease` takes it again.
    let first = fast_place(&mut model.lock().unwrap(), &mut false);
    let mut step = match first {
        Some(Placed::Lease(leased)) => return Started::Found(leased),
        Some(placed) => Step::Placed(placed),
        None => decide_lease(model, waker, &mut place),
    };
    let room = loop {
        match step {
            Step::Closed => return Started::Closed,
            Step::Placed(Placed::Lease(leased)) => return Started::Found(leased),
            Step::Placed(Placed::Retired(conn, wake, _broken)) => {
                if let Some(waker) = wake {
                    waker.wake();
                }
                caller.closed.extend(unwrap::<u64>(conn));
                step = decide_lease(model, waker, &mut place);
            }
            Step::Placed(Placed::Check(..)) => unreachable!("`checked` refuses a check"),
            Step::Connect(room) => break room,
            Step::Wait(ticket) => {
                caller.waited = true;
                match wait(model, ticket, waker).await {
                    Wake::Granted(Grant::Lease(leased)) => return Started::Served(leased),
                    Wake::Granted(Grant::Slot) => match take_slot(model) {
                        Some(room) => break room,
                        None => return Started::Closed,
                    },
                    Wake::Closed => return Started::Closed,
                    Wake::Granted(Grant::Conn(_)) => {
                        panic!("no `get` here gives a connection back")
                    }
                    Wake::TimedOut => return Started::TimedOut,
                }
            }
        }
    };
    let place = place.expect("a caller that connects has its place in line");
    open(model, room, place, &mut caller.closed).map_or(Started::Closed, Started::Opened)
}

/// The line's timer in the background task's round (`maintain::run`): under the lock, times
/// out every caller in line past its deadline (each caller's is past here), then wakes them.
pub(super) fn line_timer(model: &Model) {
    let wakers = locked(model, |state| {
        state.waiters.time_out_expired(Instant::now())
    });
    wakers.into_iter().for_each(Waker::wake);
}

/// What one lease's end did.
pub(super) struct Ending {
    /// It was the connection's last lease.
    pub(super) last: bool,
    /// `is_broken` was asked (it is, at the last lease, when the connection is open).
    pub(super) asked: bool,
    /// The connection it closed, taken out of its last `Arc`.
    pub(super) closed: Option<u64>,
}

/// `Shared::end_lease`: `State::lease_ended` under the lock, then, the lock released, the
/// wakes and the close (`Shared::after_lease`, `Shared::close_shared`).
pub(super) fn end(model: &Model, leased: Leased, broken: bool) -> Ending {
    let key = leased.key;
    let mut asked = false;
    let (ended, last) = {
        let mut state = model.lock().unwrap();
        let ended = state.lease_ended(leased.conn, key, broken, |_| {
            asked = true;
            false
        });
        // The lease was the last when the full end left its record without one (or retired
        // it); one beside others (`None`) never is.
        let last = ended.is_some() && state.streams.get(key).is_none_or(|r| r.leases == 0);
        (ended, last)
    };
    // `Shared::carry_out`: wakes who was served, then closes the connection given up, when
    // its `Arc` is the last one (`Shared::close_shared`).
    let mut closed = None;
    if let Some(ended) = ended {
        ended.wakes.into_iter().flatten().for_each(Waker::wake);
        closed = ended.close.and_then(unwrap::<u64>);
    }
    Ending {
        last,
        asked,
        closed,
    }
}

/// Ends each of `leases` in turn; the connections their ends closed.
pub(super) fn end_all(model: &Model, leases: impl IntoIterator<Item = Leased>) -> Vec<u64> {
    let ends = leases.into_iter().map(|leased| end(model, leased, false));
    ends.filter_map(|ending| ending.closed).collect()
}

/// `Lease::mark_broken`, the connection's first mark (`mark_shared_broken` under the lock,
/// then the wake of who was given the freed slot), then the lease's end. The connection that
/// end closed.
pub(super) fn break_lease(model: &Model, leased: Leased) -> Option<u64> {
    let (newly, wake) = locked(model, |state| state.mark_shared_broken(leased.key));
    assert!(newly, "the first mark");
    if let Some(waker) = wake {
        waker.wake();
    }
    end(model, leased, true).closed
}

/// `Pool::close`'s critical section and what follows it (no timer: the leases it waits for
/// end in the other threads): closed, idle connections of both forms evicted, leased ones
/// drained, every waiter failed; then the waiters woken and the evicted connections closed.
pub(super) fn close(model: &Model) -> Vec<u64> {
    let (shared_idle, waiters) = locked(model, |state| {
        state.closed = true;
        assert!(state.idle.is_empty(), "no `get` here");
        let shared_idle = state.evict_shared(|_, _| true);
        state.drain_shared(false, |_| true);
        (shared_idle, state.waiters.close_all())
    });
    waiters.into_iter().for_each(Waker::wake);
    shared_idle.into_iter().filter_map(unwrap::<u64>).collect()
}

/// The background task's round (`maintain::reap`, with no `idle_timeout`): under the lock,
/// `State::reap`; then the evicted ones closed. The connections it closed.
pub(super) fn reap(model: &Model) -> Vec<u64> {
    let (own, shared) = locked(model, |state| state.reap(Instant::now(), None));
    assert!(own.is_empty(), "no `get` here: nothing idle of its own");
    shared.into_iter().filter_map(unwrap::<u64>).collect()
}

/// `Pool::resize`'s critical section and what follows it: the new `max_size`; the slots
/// above it taken, in turn, from idle connections of the pool's own, idle shared ones
/// (evicted) and shared ones that carry leases (drained, their slots given up at once); the
/// slots below it handed to waiters; then the waiters woken and the evicted connections
/// closed. The connections it closed.
pub(super) fn resize(model: &Model, max_size: usize) -> Vec<u64> {
    let mut grants = Vec::new();
    let (evicted, shared_evicted) =
        locked(model, |state| state.resize(max_size, &mut grants)).expect("a valid size");
    assert!(evicted.is_empty(), "no `get` here: nothing idle of its own");
    grants.into_iter().flatten().for_each(Waker::wake);
    shared_evicted
        .into_iter()
        .filter_map(unwrap::<u64>)
        .collect()
}
