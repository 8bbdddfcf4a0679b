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
}

/// A move of a lease's full path (`lease::Step`, those the models reach).
pub(super) enum Step {
    Closed,
    Placed(Placed),
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
    let placed = state.place_lease(None, Instant::now, CHECK_INTERVAL, |_| false);
    let step = if let Some(placed) = checked(&state, placed) {
        Step::Placed(placed)
    } else {
        assert!(
            state.idle.is_empty(),
            "no `get` here: nothing idle of its own"
        );
        if state.waiters.leasers() < state.opening_room {
            Step::Wait(state.waiters.rejoin(arrival, waker.clone()))
        } else if state.reserve_connects(1) == 1 {
            Step::Connect(state.promise_room())
        } else {
            Step::Wait(state.waiters.rejoin(arrival, waker.clone()))
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

/// `Shared::release_slot`: a slot frees, to the oldest waiter (woken once the lock is
/// released) or given up.
pub(super) fn release_slot(model: &Model) {
    let waker = {
        let mut state = model.lock().unwrap();
        let waker = state.release_slot();
        state.debug_check();
        waker
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// A connect made for a caller (in a slot counted as connecting, with `room` promised)
/// succeeds with `conn`, and the caller shares it, in their three critical sections: the
/// connect's end (`shared::connect::connect`), the caller's look at the pool
/// (`connect_for_caller`) and `Pool::share`, which wakes the callers it served. The caller's
/// lease; `None` when the pool closed meanwhile (the connection is then closed and pushed to
/// `closed`, its slot freed).
pub(super) fn open(
    model: &Model,
    room: usize,
    place: Arrival,
    conn: u64,
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
        // `Shared::discard`: the slot frees, then the connection closes.
        release_slot(model);
        closed.push(conn);
        return None;
    }
    let conn = wrap(conn);
    let mut wakes = Vec::new();
    let leased = {
        let mut state = model.lock().unwrap();
        state.opening_room -= room;
        let leased = if state.closed {
            state.free_slots(1);
            None
        } else {
            let info = ConnInfo::new(Instant::now(), None);
            let leased = state.share(std::sync::Arc::clone(&conn), info, place, &mut wakes);
            Some(leased.expect("nobody waits ahead of the opener here to take its lease"))
        };
        state.debug_check();
        leased
    };
    for waker in wakes.into_iter().flatten() {
        waker.wake();
    }
    if leased.is_none() {
        closed.extend(close_shared(conn));
    }
    leased
}

/// `Pool::lease` as a future, from `fast_lease` on through the full path
/// (`Pool::checkout_lease`): its first move placed, or decided under the lock; a connection
/// past its lifetime found with no lease is closed (its slot freed) and the caller decides
/// again; a wait in line ends with a lease, a slot or the pool's close; a slot, found or
/// served, is opened with the connection `opens`. The outcome, whether the caller waited in
/// line, and the connections it closed.
pub(super) async fn lease(model: &Model, waker: &Waker, opens: u64) -> (Started, bool, Vec<u64>) {
    let mut closed = Vec::new();
    let mut waited = false;
    let mut first = match fast_place(&mut model.lock().unwrap(), &mut false) {
        Some(Placed::Lease(leased)) => return (Started::Found(leased), waited, closed),
        other => other,
    };
    let mut place = None;
    loop {
        let step = match first.take() {
            Some(placed) => Step::Placed(placed),
            None => decide_lease(model, waker, &mut place),
        };
        let room = match step {
            Step::Closed => return (Started::Closed, waited, closed),
            Step::Placed(Placed::Lease(leased)) => {
                return (Started::Found(leased), waited, closed);
            }
            Step::Placed(Placed::Retired(conn, wake, _broken)) => {
                if let Some(waker) = wake {
                    waker.wake();
                }
                closed.extend(close_shared(conn));
                continue;
            }
            Step::Placed(Placed::Check(..)) => unreachable!("`checked` refuses a check"),
            Step::Connect(room) => room,
            Step::Wait(ticket) => {
                waited = true;
                match wait(model, ticket, waker).await {
                    Wake::Granted(Grant::Lease(leased)) => {
                        return (Started::Served(leased), waited, closed);
                    }
                    Wake::Granted(Grant::Slot) => match take_slot(model) {
                        Some(room) => room,
                        None => return (Started::Closed, waited, closed),
                    },
                    Wake::Closed => return (Started::Closed, waited, closed),
                    Wake::Granted(Grant::Conn(_)) => {
                        panic!("no `get` here gives a connection back")
                    }
                    Wake::TimedOut => panic!("no timer runs out here"),
                }
            }
        };
        let place = place.expect("a caller that connects has its place in line");
        let started = match open(model, room, place, opens, &mut closed) {
            Some(leased) => Started::Opened(leased),
            None => Started::Closed,
        };
        return (started, waited, closed);
    }
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
    let closed = ended.and_then(carry_out);
    Ending {
        last,
        asked,
        closed,
    }
}

/// `Shared::carry_out`: wakes who was served, then closes the connection given up, when its
/// `Arc` is the last one (`Shared::close_shared`). The connection closed.
pub(super) fn carry_out(ended: Ended) -> Option<u64> {
    for waker in ended.wakes.into_iter().flatten() {
        waker.wake();
    }
    ended.close.and_then(close_shared)
}

/// `Shared::close_shared`: the connection, when this `Arc` is its last.
pub(super) fn close_shared(conn: SharedConn) -> Option<u64> {
    unwrap::<u64>(conn)
}

/// `Lease::mark_broken`: `mark_shared_broken` under the lock, then the wake of who was given
/// the freed slot. True when this mark was the first.
pub(super) fn mark_broken(model: &Model, key: Key) -> bool {
    let (newly, wake) = {
        let mut state = model.lock().unwrap();
        let marked = state.mark_shared_broken(key);
        state.debug_check();
        marked
    };
    if let Some(waker) = wake {
        waker.wake();
    }
    newly
}

/// `Pool::close`'s critical section and what follows it (no timer: the leases it waits for
/// end in the other threads): closed, idle connections of both forms evicted, leased ones
/// drained, every waiter failed; then the waiters woken and the evicted connections closed.
pub(super) fn close(model: &Model) -> Vec<u64> {
    let (shared_idle, waiters) = {
        let mut state = model.lock().unwrap();
        state.closed = true;
        assert!(state.idle.is_empty(), "no `get` here");
        let shared_idle = state.evict_shared(|_, _| true);
        state.drain_shared(false, |_| true);
        let waiters = state.waiters.close_all();
        state.debug_check();
        (shared_idle, waiters)
    };
    for waker in waiters {
        waker.wake();
    }
    shared_idle.into_iter().filter_map(close_shared).collect()
}

/// The background task's round (`maintain::reap`, with no `idle_timeout`): under the lock,
/// idle connections past their lifetime evicted, of both forms, and shared ones past it that
/// carry leases drained (no new lease; each closes after its last); then the evicted ones
/// closed. The connections it closed.
pub(super) fn reap(model: &Model) -> Vec<u64> {
    let now = Instant::now();
    let idle_timeout: Option<Duration> = None;
    let shared_evicted = {
        let mut state = model.lock().unwrap();
        let min_idle = state.min_idle;
        let retire = |info: &ConnInfo, remaining: usize| {
            let stale =
                idle_timeout.is_some_and(|t| now.saturating_duration_since(info.last_used) >= t);
            info.expired(now) || (stale && remaining > min_idle)
        };
        let evicted = state.evict(|live, remaining| retire(&live.info, remaining));
        assert!(evicted.is_empty(), "no `get` here: nothing idle of its own");
        let shared_evicted = state.evict_shared(retire);
        state.drain_shared(false, |info| info.expired(now));
        state.debug_check();
        shared_evicted
    };
    shared_evicted
        .into_iter()
        .filter_map(close_shared)
        .collect()
}

/// `Pool::resize`'s critical section and what follows it: the new `max_size`; the slots
/// above it taken, in turn, from idle connections of the pool's own, idle shared ones
/// (evicted) and shared ones that carry leases (drained, their slots given up at once); the
/// slots below it handed to waiters; then the waiters woken and the evicted connections
/// closed. The connections it closed.
pub(super) fn resize(model: &Model, max_size: usize) -> Vec<u64> {
    let (shared_evicted, grants) = {
        let mut state = model.lock().unwrap();
        validate(max_size, state.min_idle).expect("a valid size");
        state.max_size = max_size;
        let excess = state.slots.saturating_sub(max_size);
        let mut shared_evicted = Vec::new();
        if excess > 0 {
            let mut left = excess;
            let mut pick = || {
                let pick = left > 0;
                left = left.saturating_sub(1);
                pick
            };
            let evicted = state.evict(|_, _| pick());
            assert!(evicted.is_empty(), "no `get` here: nothing idle of its own");
            shared_evicted = state.evict_shared(|_, _| pick());
            state.drain_shared(true, |_| pick());
        }
        let mut grants = Vec::new();
        state.grant_slots(|state| !state.waiters.is_empty(), &mut grants);
        state.debug_check();
        (shared_evicted, grants)
    };
    for waker in grants.into_iter().flatten() {
        waker.wake();
    }
    shared_evicted
        .into_iter()
        .filter_map(close_shared)
        .collect()
}
