//! A `loom` model check of the lease protocol: the pool's real [`State`] and its real moves
//! (`place_lease`, `lease_ended`, `end_lease`, `serve_leasers`, `share`,
//! `mark_shared_broken`, `release_slot`, `evict_shared`, `drain_shared`, the line's
//! `rejoin`, `poll`, `serve` and `close_all`), driven from two or three `loom` threads
//! through a `loom` mutex exactly as the pool drives them: lock, move, unlock, then wake the
//! wakers the move returned and close what it gave up. `loom` runs every interleaving of
//! those critical sections (up to its preemption bound) and each test checks, in every one,
//! the counts and the wake-ups the pool relies on.
//!
//! Run by `scripts/loom` (`RUSTFLAGS="--cfg loom"`, `loom_model` only: the
//! crate's other tests take the pool's lock outside a `loom` model, which `loom` refuses).
//!
//! What is modelled: the critical sections of a lease's start (`Pool::fast_lease`, then
//! `Pool::decide_lease`, the wait in line of `checkout::handoff::wait`, `Pool::take_slot`
//! for a slot served in line, and, for a caller that opens a connection, the connect's end
//! in `shared::connect::connect`, the look of `connect_for_caller` and `Pool::share`), of
//! its end (`Shared::end_lease`), of `Lease::mark_broken`, of `Pool::close`, of
//! `Pool::resize` and of the background task's round (`maintain::reap`), each a function
//! below that makes the same moves on the same state under the lock as its original.
//! Connections are plain `u64`s in the crate's own shared form ([`wrap`]); wakers count
//! their wakes and wake the `loom` thread waiting in `loom::future::block_on`, so a wake-up
//! that is lost leaves that thread parked for ever, which `loom` reports as a deadlock.
//! Every lease placed is checked, in the critical section that placed it, to be on a
//! connection open for leases.
//!
//! What is not: tokio's timers (no caller times out; `wait_timeout` and `close_timeout`
//! never run out, so `close` never lets go of the connections that carry leases:
//! `orphan_shared`), the manager's async calls (a connect succeeds at once with the
//! connection the model names; no connection is checked; one is "closed" by taking it out
//! of its last `Arc` as `Shared::close_shared` does), `get` and its idle connections,
//! `idle_timeout`, `min_idle` and the background task's plan of its next wake, a caller
//! sent back in line (a lease whose connection died as it was handed out, or a connection
//! whose leases went to the callers ahead of its opener), and the `Lease` guard's own code
//! around the moves (its `is_broken_shared` and hooks). A connection's `Arc` is `std`'s,
//! which `loom` does not see: a take out of the last `Arc` (`close_shared`) runs whole
//! between two of the lock's moves, never beside another. The models start from one
//! connection, already shared, in a pool of `max_size` 1 (resize's, from two in a pool of
//! 2), so a caller that finds no room waits in line; a connection with a `max_lifetime` has
//! one that ended as the model starts.

use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use tokio::time::Instant;

use crate::config::validate;
use crate::info::ConnInfo;
use crate::lease::moves::{Ended, Placed};
use crate::lease::streams::{Key, Mode, SharedConn, conn_ref, unwrap, wrap};
use crate::shared::line::{Arrival, Ticket, Wake};
use crate::shared::state::{Grant, Leased, State};

/// The pool's locked state, as the pool's threads share it.
type Model = Arc<Mutex<State<u64>>>;

/// Far longer than any model runs: no check falls due.
const CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// The connection most models share.
const CONN: u64 = 7;

/// A second connection, shared beside the first.
const OTHER: u64 = 8;

/// The connection a caller opens when it is given a slot.
const NEW: u64 = 9;

/// A waker that counts its wakes and passes each on to the waker it wraps (the `loom`
/// thread's, in `block_on`).
struct Counting {
    wakes: AtomicUsize,
    inner: Waker,
}

impl std::task::Wake for Counting {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.inner.wake_by_ref();
    }
}

/// Opens `conn` in a slot of its own (its connect done) and shares it with its opener's
/// lease, by the real move (`State::share`, as `Pool::share` makes it); `lifetime` is its
/// `max_lifetime`. The opener's lease.
fn open_shared(state: &mut State<u64>, conn: u64, lifetime: Option<Duration>) -> Leased {
    assert_eq!(state.take_slots(1), 1, "a slot for the new connection");
    let arrival = state.waiters.arrive(true);
    let mut wakes = Vec::new();
    let info = ConnInfo::new(Instant::now(), lifetime);
    let first = state
        .share(wrap(conn), info, arrival, &mut wakes)
        .expect("a new connection has room for its opener");
    assert!(wakes.is_empty(), "nobody waits");
    first
}

/// A pool of `max_size` 1 whose one connection is shared and carries `leases` leases (at
/// most `max_streams`), made by the real moves: `State::share` for the first lease, as the
/// caller that opened the connection shares it, and `fast_lease` for the others.
/// `lifetime` is the connection's `max_lifetime`.
fn pool_with_leases(
    max_streams: usize,
    leases: usize,
    lifetime: Option<Duration>,
) -> (Model, Vec<Leased>) {
    let mut state = State::new(1, 0, max_streams);
    let mut held = vec![open_shared(&mut state, CONN, lifetime)];
    for _ in 1..leases {
        held.push(fast_lease(&mut state, &mut false).expect("room beside the first lease"));
    }
    state.debug_check();
    (Arc::new(Mutex::new(state)), held)
}

/// Checks that a lease just placed, in the critical section that placed it, is on a
/// connection open for leases: none goes to a connection retired (draining) or broken.
fn assert_open(state: &State<u64>, key: Key) {
    let mode = state.streams.get(key).map(|r| r.mode);
    assert_eq!(
        mode,
        Some(Mode::Open),
        "a lease is placed only on an open connection"
    );
}

/// What `place_lease` placed, checked: a lease only on an open connection, and never a
/// check (none falls due here).
fn checked(state: &State<u64>, placed: Option<Placed>) -> Option<Placed> {
    match &placed {
        Some(Placed::Lease(leased)) => assert_open(state, leased.key),
        Some(Placed::Check(..)) => panic!("no check falls due here"),
        Some(Placed::Retired(..)) | None => {}
    }
    placed
}

/// `Pool::fast_lease`'s critical section: a lease beside others when nobody waits, else the
/// full placement (`place_lease`): a lease, or a connection with no lease to retire (past
/// its lifetime). `None` when no connection has room or the pool closed. `asked` is set
/// when `is_broken` was asked (it is when a connection with no lease is leased).
fn fast_place(state: &mut State<u64>, asked: &mut bool) -> Option<Placed> {
    if state.closed {
        return None;
    }
    let mut picked = None;
    if state.waiters.is_empty() && state.idle.is_empty() {
        let max_streams = state.max_streams;
        match state.streams.lease_beside(max_streams) {
            Ok(leased) => return checked(state, Some(Placed::Lease(leased))),
            Err(key) => picked = Some(key),
        }
    }
    let placed = match picked {
        Some(None) => None,
        picked => state.place_lease(picked.flatten(), Instant::now, CHECK_INTERVAL, |_| {
            *asked = true;
            false
        }),
    };
    assert_eq!(state.reserve_refill(), 0, "no `min_idle` here");
    state.debug_check();
    checked(state, placed)
}

/// [`fast_place`] where only a lease can be placed (no connection has a lifetime).
fn fast_lease(state: &mut State<u64>, asked: &mut bool) -> Option<Leased> {
    match fast_place(state, asked)? {
        Placed::Lease(leased) => Some(leased),
        _ => panic!("nothing expires here: only a lease is placed"),
    }
}

/// How a lease's start ended.
enum Started {
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
enum Step {
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
fn decide_lease(model: &Model, waker: &Waker, place: &mut Option<Arrival>) -> Step {
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
async fn wait(model: &Model, ticket: Ticket, waker: &Waker) -> Wake<u64> {
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
fn take_slot(model: &Model) -> Option<usize> {
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
fn release_slot(model: &Model) {
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
fn open(
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
async fn lease(model: &Model, waker: &Waker, opens: u64) -> (Started, bool, Vec<u64>) {
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
struct Ending {
    /// It was the connection's last lease.
    last: bool,
    /// `is_broken` was asked (it is, at the last lease, when the connection is open).
    asked: bool,
    /// The connection it closed, taken out of its last `Arc`.
    closed: Option<u64>,
}

/// `Shared::end_lease`: `State::lease_ended` under the lock, then, the lock released, the
/// wakes and the close (`Shared::after_lease`, `Shared::close_shared`).
fn end(model: &Model, leased: Leased, broken: bool) -> Ending {
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
fn carry_out(ended: Ended) -> Option<u64> {
    for waker in ended.wakes.into_iter().flatten() {
        waker.wake();
    }
    ended.close.and_then(close_shared)
}

/// `Shared::close_shared`: the connection, when this `Arc` is its last.
fn close_shared(conn: SharedConn) -> Option<u64> {
    unwrap::<u64>(conn)
}

/// `Lease::mark_broken`: `mark_shared_broken` under the lock, then the wake of who was given
/// the freed slot. True when this mark was the first.
fn mark_broken(model: &Model, key: Key) -> bool {
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
fn close(model: &Model) -> Vec<u64> {
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
fn reap(model: &Model) -> Vec<u64> {
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
fn resize(model: &Model, max_size: usize) -> Vec<u64> {
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

/// Runs `f` under `loom` with at most `preemptions` preemptions per execution.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// What a caller's lease start left beside its outcome: whether it waited in line, the
/// connections it closed on the way, and its waker's count of wakes.
struct Caller {
    waited: bool,
    closed: Vec<u64>,
    counting: std::sync::Arc<Counting>,
}

impl Caller {
    /// How many times the caller was woken: to read once every thread that may wake it is
    /// done (`loom`'s `block_on` polls again on spurious wake-ups too, so a caller may find
    /// its outcome before the move that served it has woken it).
    fn wakes(&self) -> usize {
        self.counting.wakes.load(Ordering::SeqCst)
    }

    /// Checks that a caller that waited in line was woken exactly once, and one that never
    /// waited never was (no wake-up lost, none sent twice).
    fn assert_woken_once_if_waited(&self) {
        let expected = usize::from(self.waited);
        assert_eq!(
            self.wakes(),
            expected,
            "woken exactly once if it waited, else never"
        );
    }
}

/// Blocks the `loom` thread on `lease` (which opens `opens` when it is given a slot) with a
/// counting waker around its own: how it started, and what else it did.
fn block_on_lease(model: &Model, opens: u64) -> (Started, Caller) {
    loom::future::block_on(async {
        let inner = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let counting = std::sync::Arc::new(Counting {
            wakes: AtomicUsize::new(0),
            inner,
        });
        let waker = Waker::from(std::sync::Arc::clone(&counting));
        let (started, waited, closed) = pin!(lease(model, &waker, opens)).await;
        let caller = Caller {
            waited,
            closed,
            counting,
        };
        (started, caller)
    })
}

/// Checks the counts of a pool whose one connection carries `leases` leases: one record,
/// holding its slot, with that count; the pool's total the same; nothing idle or waiting.
fn assert_leased(state: &State<u64>, key: Key, leases: usize) {
    state.debug_check();
    let record = state
        .streams
        .get(key)
        .expect("the connection is still shared");
    assert_eq!(record.leases, leases, "the record's count of leases");
    assert_eq!(state.streams.leases, leases, "the pool's count of leases");
    assert_eq!(state.streams.keys().count(), 1, "one shared connection");
    assert!(state.idle.is_empty(), "never idle outside shared form here");
    assert!(state.waiters.is_empty(), "nobody left waiting");
    assert_eq!(state.slots, 1, "its slot, once");
}

/// Checks that the connection of `key` is idle in shared form: no lease, and its record's
/// `Arc` the only one, so the pool may borrow it mutably (`Arc::get_mut`).
fn assert_idle(state: &mut State<u64>, key: Key) {
    assert_leased(state, key, 0);
    let record = state.streams.get_mut(key).expect("still shared");
    assert!(
        record.conn_mut::<u64>().is_some(),
        "no lease keeps an `Arc` once the record says 0"
    );
}

/// a. A lease taken while the last lease of the same connection ends: whichever goes first,
/// the connection is shared once, with exactly the new lease on it, and that lease's `Arc`
/// and the record's are the only ones; the new lease tested the connection with `is_broken`
/// exactly when it came after the end (the 0 -> 1 move); when it ends too, the connection is
/// idle.
#[test]
fn loom_model_a_lease_taken_as_the_last_one_ends() {
    model(3, || {
        let (pool, mut held) = pool_with_leases(2, 1, None);
        let last = held.pop().expect("one lease");
        let key = last.key;
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, last, false))
        };
        let mut asked = false;
        let leased =
            fast_lease(&mut pool.lock().unwrap(), &mut asked).expect("the connection has room");
        let ending = ender.join().unwrap();
        assert!(ending.closed.is_none(), "nothing closes");
        assert_eq!(
            asked, ending.last,
            "the new lease tests the connection (`is_broken`) when, and only when, it had no lease"
        );
        assert_eq!(leased.key, key, "the same connection");
        assert_eq!(
            std::sync::Arc::strong_count(&leased.conn),
            2,
            "the record's `Arc` and the new lease's, no other"
        );
        assert_leased(&pool.lock().unwrap(), key, 1);
        let ending = end(&pool, leased, false);
        assert!(ending.last && ending.asked && ending.closed.is_none());
        assert_idle(&mut pool.lock().unwrap(), key);
    });
}

/// b. Two leases of one connection end at once: exactly one of the ends sees itself last,
/// and only that one asks `is_broken` (which it can only because no other lease holds an
/// `Arc` then); afterwards the connection is idle, its record's `Arc` the only one.
#[test]
fn loom_model_b_two_last_lease_ends_at_once() {
    model(3, || {
        let (pool, mut held) = pool_with_leases(2, 2, None);
        let key = held[0].key;
        let second = held.pop().expect("two leases");
        let first = held.pop().expect("two leases");
        let other = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, second, false))
        };
        let mine = end(&pool, first, false);
        let other = other.join().unwrap();
        assert_eq!(
            usize::from(mine.last) + usize::from(other.last),
            1,
            "exactly one end is the last"
        );
        assert_eq!(
            usize::from(mine.asked) + usize::from(other.asked),
            1,
            "`is_broken` is asked once, by the last end, with the connection alone"
        );
        assert!(
            mine.closed.is_none() && other.closed.is_none(),
            "nothing closes"
        );
        assert_idle(&mut pool.lock().unwrap(), key);
    });
}

/// c, beside others. A lease ends beside another on a full connection while a caller finds
/// no room and joins the line: the caller is served the freed room in the end's critical
/// section and woken exactly once, or finds the room itself without waiting; never left in
/// line with room free (`loom` would report the parked thread as a deadlock).
#[test]
fn loom_model_c_a_lease_end_beside_others_serves_a_caller_joining_the_line() {
    model(3, || {
        let (pool, mut held) = pool_with_leases(2, 2, None);
        let key = held[0].key;
        let ending = held.pop().expect("two leases");
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, ending, false))
        };
        let (started, caller) = block_on_lease(&pool, NEW);
        ender.join().unwrap();
        let wakes = caller.wakes();
        let leased = match started {
            Started::Found(leased) => {
                assert_eq!(wakes, 0, "found room: never waited, never woken");
                leased
            }
            Started::Served(leased) => {
                assert_eq!(wakes, 1, "served in line: woken exactly once");
                leased
            }
            Started::Opened(_) => panic!("the pool is at max_size: nothing opens"),
            Started::Closed => panic!("the pool never closes here"),
        };
        assert_eq!(leased.key, key);
        assert_leased(&pool.lock().unwrap(), key, 2);
        for leased in held.into_iter().chain([leased]) {
            end(&pool, leased, false);
        }
        assert_idle(&mut pool.lock().unwrap(), key);
    });
}

/// c, the last lease. The last lease of a connection full at `max_streams` 1 ends while a
/// caller finds no room and joins the line: as above, it is served and woken once, or finds
/// the connection idle and leases it; never left in line with the connection idle.
#[test]
fn loom_model_c_the_last_lease_end_serves_a_caller_joining_the_line() {
    model(3, || {
        let (pool, mut held) = pool_with_leases(1, 1, None);
        let ending = held.pop().expect("one lease");
        let key = ending.key;
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, ending, false))
        };
        let (started, caller) = block_on_lease(&pool, NEW);
        ender.join().unwrap();
        let wakes = caller.wakes();
        let leased = match started {
            Started::Found(leased) => {
                assert_eq!(wakes, 0, "found room: never waited, never woken");
                leased
            }
            Started::Served(leased) => {
                assert_eq!(wakes, 1, "served in line: woken exactly once");
                leased
            }
            Started::Opened(_) => panic!("the pool is at max_size: nothing opens"),
            Started::Closed => panic!("the pool never closes here"),
        };
        assert_eq!(leased.key, key);
        assert_leased(&pool.lock().unwrap(), key, 1);
        end(&pool, leased, false);
        assert_idle(&mut pool.lock().unwrap(), key);
    });
}

/// d, close. `Pool::close` races a lease's start (and its end, right after) and the end of
/// the lease already there, on a connection full at `max_streams` 1: the slot accounting
/// holds at every step (`debug_check` in each move), the caller gets a lease (found, or
/// served in line by the end) or `Closed` (found, or failed in line by `close`), never left
/// waiting, and in the end the
/// connection has been closed exactly once, by whichever move let go of it last, its slot
/// freed and nothing left shared.
#[test]
fn loom_model_d_close_races_a_lease_start_and_a_lease_end() {
    model(2, || {
        let (pool, mut held) = pool_with_leases(1, 1, None);
        let ending = held.pop().expect("one lease");
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, ending, false).closed)
        };
        let leaser = {
            let pool = pool.clone();
            loom::thread::spawn(move || {
                let (started, caller) = block_on_lease(&pool, NEW);
                let mut closed = caller.closed;
                match started {
                    Started::Found(leased) | Started::Served(leased) => {
                        closed.extend(end(&pool, leased, false).closed);
                    }
                    Started::Opened(_) => panic!("the pool is at max_size: nothing opens"),
                    Started::Closed => {}
                }
                closed
            })
        };
        let mut closed = close(&pool);
        closed.extend(ender.join().unwrap());
        closed.extend(leaser.join().unwrap());
        assert_eq!(closed, [CONN], "closed exactly once");
        let state = pool.lock().unwrap();
        state.debug_check();
        assert!(state.closed && state.streams.is_empty() && state.waiters.is_empty());
        assert_eq!(
            (state.slots, state.streams.leases),
            (0, 0),
            "its slot freed"
        );
    });
}

/// d, broken. One lease marks its connection broken and ends while the other lease on it
/// ends: the slot is freed exactly once (at the mark; a second free
/// would take `slots` below 0), the connection takes no lease once marked, and it is closed
/// exactly once, by its last lease's end.
#[test]
fn loom_model_d_a_broken_mark_races_a_lease_end() {
    model(2, || {
        let (pool, mut held) = pool_with_leases(2, 2, None);
        let key = held[0].key;
        let healthy = held.pop().expect("two leases");
        let breaking = held.pop().expect("two leases");
        let breaker = {
            let pool = pool.clone();
            loom::thread::spawn(move || {
                assert!(mark_broken(&pool, key), "the first mark");
                end(&pool, breaking, true).closed
            })
        };
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, healthy, false).closed)
        };
        let mut closed: Vec<u64> = breaker.join().unwrap().into_iter().collect();
        closed.extend(ender.join().unwrap());
        assert_eq!(closed, [CONN], "closed exactly once");
        let state = pool.lock().unwrap();
        state.debug_check();
        assert!(state.streams.is_empty(), "the broken connection is gone");
        assert_eq!(
            (state.slots, state.streams.leases),
            (0, 0),
            "its slot freed once"
        );
    });
}

/// d, resize. The pool shrinks from two connections to one (`Pool::resize`) while the lease
/// on each (`max_streams` 1, both full) ends, one after the other, and a caller finds no
/// room and joins the line. Exactly one connection goes, closed exactly once: evicted by
/// the shrink when it is idle then, else drained, its slot given up at once and never
/// freed again, and closed by its last lease's end. The other stays, idle, in the one slot
/// left. The caller gets a lease, found or served in line (woken exactly once if it
/// waited), never a slot: the shrink frees none, and no lease is placed on the drained
/// connection (`assert_open` in every placement).
#[test]
fn loom_model_d_resize_races_a_lease_start_and_lease_ends() {
    model(3, || {
        let mut state = State::new(2, 0, 1);
        let first = open_shared(&mut state, CONN, None);
        let second = open_shared(&mut state, OTHER, None);
        state.debug_check();
        let pool = Arc::new(Mutex::new(state));
        let shrinker = {
            let pool = pool.clone();
            loom::thread::spawn(move || resize(&pool, 1))
        };
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || {
                let mut closed: Vec<u64> = end(&pool, first, false).closed.into_iter().collect();
                closed.extend(end(&pool, second, false).closed);
                closed
            })
        };
        let (started, caller) = block_on_lease(&pool, NEW);
        let mut closed = shrinker.join().unwrap();
        closed.extend(ender.join().unwrap());
        caller.assert_woken_once_if_waited();
        let leased = match started {
            Started::Found(leased) | Started::Served(leased) => leased,
            Started::Opened(_) => panic!("a shrink frees no slot: nothing opens"),
            Started::Closed => panic!("the pool never closes here"),
        };
        closed.extend(caller.closed);
        closed.extend(end(&pool, leased, false).closed);
        assert!(
            closed == [CONN] || closed == [OTHER],
            "one connection closed, exactly once: {closed:?}"
        );
        let mut state = pool.lock().unwrap();
        assert_eq!(state.max_size, 1);
        let kept = state.streams.keys().next().expect("one connection stays");
        let conn = state.streams.get(kept).and_then(|r| r.conn.as_ref());
        let conn = conn.and_then(conn_ref::<u64>).copied();
        assert!(
            conn.is_some_and(|conn| !closed.contains(&conn)),
            "the other one stays"
        );
        assert_idle(&mut state, kept);
    });
}

/// d, max_lifetime. A connection whose lifetime has ended carries two leases (`max_streams`
/// 2, `max_size` 1) when the background task's round (`maintain::reap`) races the end of
/// both leases, one after the other, and a caller's lease start. The connection is closed
/// exactly once, after its last lease: evicted by the round when it is idle then, retired
/// by the caller that finds it with no lease (a lease with no other on its connection reads
/// the clock), else drained by the round and closed by its last lease's end. It takes a
/// new lease only beside another and before the round drains it (a lease beside others
/// reads no clock: `assert_open` in every placement), never one served in line (a lease
/// end serves nobody on a connection past its lifetime: it drains it instead). The caller
/// gets that lease beside, or opens a new connection in the freed slot, found free or
/// served in line (woken exactly once if it waited); the new connection is never closed.
#[test]
fn loom_model_d_max_lifetime_races_a_lease_start_and_lease_ends() {
    model(3, || {
        let (pool, held) = pool_with_leases(2, 2, Some(Duration::ZERO));
        let key = held[0].key;
        let reaper = {
            let pool = pool.clone();
            loom::thread::spawn(move || reap(&pool))
        };
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || {
                let mut closed = Vec::new();
                for leased in held {
                    closed.extend(end(&pool, leased, false).closed);
                }
                closed
            })
        };
        let (started, caller) = block_on_lease(&pool, NEW);
        let mut closed = reaper.join().unwrap();
        closed.extend(ender.join().unwrap());
        caller.assert_woken_once_if_waited();
        closed.extend(caller.closed);
        let opened = match started {
            Started::Found(leased) => {
                assert_eq!(
                    leased.key, key,
                    "found beside the leases of the old connection"
                );
                closed.extend(end(&pool, leased, false).closed);
                None
            }
            Started::Opened(leased) => {
                assert_eq!(conn_ref::<u64>(&leased.conn), Some(&NEW));
                let key = leased.key;
                assert!(
                    end(&pool, leased, false).closed.is_none(),
                    "the new one stays"
                );
                Some(key)
            }
            Started::Served(_) => panic!("served a lease on a connection past its lifetime"),
            Started::Closed => panic!("the pool never closes here"),
        };
        assert_eq!(closed, [CONN], "closed exactly once");
        let mut state = pool.lock().unwrap();
        match opened {
            Some(key) => assert_idle(&mut state, key),
            None => {
                state.debug_check();
                assert!(state.streams.is_empty() && state.waiters.is_empty());
                assert_eq!(
                    (state.slots, state.streams.leases),
                    (0, 0),
                    "its slot freed"
                );
            }
        }
    });
}

/// e. A connection leaves and a new one takes its place while a stale reader still looks at
/// the old one. Of the two leases on a full connection (`max_streams` 2, `max_size` 1), one
/// marks it broken and ends while a caller finds no room. The mark frees the connection's
/// slot at once, so the caller opens a new connection in it (found free, or served in line
/// and woken once) and leases it, while the other lease, the stale reader, still holds the
/// old connection and reads it through its own `Arc`. The stale reader then ends its lease:
/// the end lands on the old connection's record, never on the new one, which keeps exactly
/// the caller's lease and its slot; the old connection is closed exactly once, by its last
/// lease, and its slot is not freed a second time.
///
/// What cannot race is a key meeting a new record in its own place in the slab: a place is
/// reused only once its record is gone, and a record outlives every lease on it (it leaves
/// at its last lease's end, or with no lease at all: evicted, unshared, or retired by
/// `place_lease`). The one exception, `orphan_shared` (`close` gave up waiting for the last
/// leases), lets go of records whose leases live on, but only in a closed pool, which never
/// shares a connection again. The key's `id`, checked on every look (`Streams::get`),
/// guards the place all the same. What can race is the connection's slot, its share of
/// `max_size`, which a broken mark frees while leases still read the connection: this case,
/// which also checks that the new connection lands in another place of the slab.
#[test]
fn loom_model_e_a_new_connection_takes_the_slot_of_one_a_stale_reader_holds() {
    model(3, || {
        let (pool, mut held) = pool_with_leases(2, 2, None);
        let stale = held.pop().expect("two leases");
        let breaking = held.pop().expect("two leases");
        let old = breaking.key;
        let breaker = {
            let pool = pool.clone();
            loom::thread::spawn(move || {
                assert!(mark_broken(&pool, old), "the first mark");
                end(&pool, breaking, true).closed
            })
        };
        let (started, mut caller) = block_on_lease(&pool, NEW);
        let Started::Opened(leased) = started else {
            panic!("the old connection takes no lease: the caller opens one in its slot");
        };
        let new = leased.key;
        assert_eq!(conn_ref::<u64>(&leased.conn), Some(&NEW));
        assert_ne!(
            new.at, old.at,
            "a place in the slab is not reused while a lease holds it"
        );
        assert_eq!(
            conn_ref::<u64>(&stale.conn),
            Some(&CONN),
            "the stale reader still reads the old connection"
        );
        let mut closed = std::mem::take(&mut caller.closed);
        closed.extend(end(&pool, stale, false).closed);
        {
            let state = pool.lock().unwrap();
            let record = state.streams.get(new).expect("the new connection stays");
            assert_eq!(
                (record.leases, record.mode, record.slot),
                (1, Mode::Open, true),
                "the stale reader's end leaves the new connection as it was"
            );
        }
        closed.extend(breaker.join().unwrap());
        caller.assert_woken_once_if_waited();
        assert_eq!(closed, [CONN], "the old connection closed exactly once");
        assert_leased(&pool.lock().unwrap(), new, 1);
        assert!(
            end(&pool, leased, false).closed.is_none(),
            "the new one stays"
        );
        assert_idle(&mut pool.lock().unwrap(), new);
    });
}
