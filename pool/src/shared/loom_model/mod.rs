//! A `loom` model check of the lease protocol: the pool's real [`State`] and its real moves
//! (`place_lease`, `lease_ended`, `end_lease`, `serve_leasers`, `share`,
//! `mark_shared_broken`, `release_slot`, `evict_shared`, `drain_shared`, `reap`, the line's
//! `rejoin`, `poll`, `serve` and `close_all`), driven from two or three `loom` threads
//! through a `loom` mutex exactly as the pool drives them: lock, move, unlock, then wake
//! the wakers the move returned and close what it gave up. `loom` runs every interleaving
//! of those critical sections (up to its preemption bound) and each test checks, in every
//! one, the counts and the wake-ups the pool relies on.
//!
//! Run by `scripts/loom` (`RUSTFLAGS="--cfg loom"`, `loom_model` only: the crate's other
//! tests take the pool's lock outside a `loom` model, which `loom` refuses).
//!
//! What is modelled: the critical sections of a lease's start (`Pool::fast_lease`, then
//! `Pool::decide_lease`, the wait in line of `checkout::handoff::wait`, `Pool::take_slot`
//! for a slot served in line, and, for a caller that opens a connection, the connect's end
//! in `shared::connect::connect`, the look of `connect_for_caller` and `Pool::share`), of
//! its end (`Shared::end_lease`), of `Lease::mark_broken`, of `Pool::close`, of
//! `Pool::resize` and of the background task's round (`maintain::reap`, and the line's timer
//! of `maintain::run`), each a function of
//! [`moves`]. Connections are plain `u64`s in the crate's own shared form ([`wrap`]);
//! wakers count their wakes and wake the `loom` thread waiting in `loom::future::block_on`,
//! so a wake-up that is lost leaves that thread parked for ever, which `loom` reports as a
//! deadlock. Every lease placed is checked, in the critical section that placed it, to be
//! on a connection open for leases.
//!
//! What is not: tokio's timers (a caller times out only by the line's timer, in the one
//! model that runs it; `close_timeout` never runs out, so `close` never lets go of the connections that carry leases:
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

mod cases;
mod moves;

use self::moves::{Started, lease};

use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use tokio::time::Instant;

use crate::info::ConnInfo;
use crate::lease::moves::Placed;
use crate::lease::streams::{Key, Mode, conn_ref, unwrap, wrap};
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

/// The connection a caller opens when it is given a slot (or finds one free).
const NEW: u64 = 9;

/// A waker that counts its wakes and passes each on to the waker it wraps (the `loom`
/// thread's, in `block_on`).
struct Counting {
    wakes: std::sync::Arc<AtomicUsize>,
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

/// A pool of `max_size` 1 whose one connection is shared and carries `N` leases (at most
/// `max_streams`), made by the real moves: `State::share` for the first lease, as the
/// caller that opened the connection shares it, and `fast_lease` for the others.
/// `lifetime` is the connection's `max_lifetime`.
fn pool_with_leases<const N: usize>(
    max_streams: usize,
    lifetime: Option<Duration>,
) -> (Model, [Leased; N]) {
    let mut state = State::new(1, 0, max_streams);
    let held = std::array::from_fn(|at| match at {
        0 => open_shared(&mut state, CONN, lifetime),
        _ => fast_lease(&mut state, &mut false).expect("room beside the first lease"),
    });
    state.debug_check();
    (Arc::new(Mutex::new(state)), held)
}

/// Makes the move `f` under the model's lock and checks the invariants, as
/// `Shared::locked` does.
fn locked<R>(model: &Model, f: impl FnOnce(&mut State<u64>) -> R) -> R {
    let mut state = model.lock().unwrap();
    let out = f(&mut state);
    state.debug_check();
    out
}

/// What `place_lease` placed, checked in the critical section that placed it: a lease only
/// on a connection open for leases (none goes to one retired, draining, or broken), and
/// never a check (none falls due here).
fn checked(state: &State<u64>, placed: Option<Placed<u64>>) -> Option<Placed<u64>> {
    match &placed {
        Some(Placed::Lease(leased)) => assert_eq!(
            state.streams.get(leased.key).map(|r| r.mode),
            Some(Mode::Open),
            "a lease is placed only on an open connection"
        ),
        Some(Placed::Check(..)) => panic!("no check falls due here"),
        Some(Placed::Retired(..)) | None => {}
    }
    placed
}

/// `Pool::fast_lease`'s critical section (`place_lease`): a lease, or a connection with no
/// lease to retire (past its lifetime). `None` when no connection has room or the pool
/// closed. `asked` is set when `is_broken` was asked (it is when a connection with no lease
/// is leased).
fn fast_place(state: &mut State<u64>, asked: &mut bool) -> Option<Placed<u64>> {
    if state.closed {
        return None;
    }
    let placed = state.place_lease(Instant::now, CHECK_INTERVAL, |_| {
        *asked = true;
        false
    });
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

/// Runs `f` under `loom` with at most `preemptions` preemptions per execution.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// What a caller's lease start left beside its outcome: whether it waited in line, the
/// connections it closed on the way, and its waker's count of wakes.
#[derive(Default)]
struct Caller {
    waited: bool,
    closed: Vec<u64>,
    wakes: std::sync::Arc<AtomicUsize>,
}

impl Caller {
    /// Checks that a caller that waited in line was woken exactly once, and one that never
    /// waited never was (no wake-up lost, none sent twice). To call once every thread that
    /// may wake it is done (`loom`'s `block_on` polls again on spurious wake-ups too, so a
    /// caller may find its outcome before the move that served it has woken it).
    fn assert_woken_once_if_waited(&self) {
        assert_eq!(
            self.wakes.load(Ordering::SeqCst),
            usize::from(self.waited),
            "woken exactly once if it waited, else never"
        );
    }
}

/// Blocks the `loom` thread on `lease` with a counting waker around its own: how it
/// started, and what else it did.
fn block_on_lease(model: &Model) -> (Started, Caller) {
    loom::future::block_on(async {
        let inner = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let mut caller = Caller::default();
        let wakes = std::sync::Arc::clone(&caller.wakes);
        let waker = Waker::from(std::sync::Arc::new(Counting { wakes, inner }));
        let started = pin!(lease(model, &waker, &mut caller)).await;
        (started, caller)
    })
}

/// Runs `f` on the pool from a `loom` thread of its own.
fn on_thread<T: Send + 'static>(
    pool: &Model,
    f: impl FnOnce(&Model) -> T + Send + 'static,
) -> loom::thread::JoinHandle<T> {
    let pool = pool.clone();
    loom::thread::spawn(move || f(&pool))
}

/// The lease of a caller at a pool kept at `max_size` and open: found (never woken) or
/// served in line (woken exactly once).
fn found_or_served(started: Started, caller: &Caller) -> Leased {
    caller.assert_woken_once_if_waited();
    match started {
        Started::Found(leased) | Started::Served(leased) => leased,
        Started::Opened(_) => panic!("the pool is at max_size: nothing opens"),
        Started::Closed => panic!("the pool never closes here"),
        Started::TimedOut => panic!("no timer runs here"),
    }
}

/// Checks that the pool let go of every connection: none shared, no lease, no slot held,
/// nobody waiting.
fn assert_emptied(state: &State<u64>) {
    state.debug_check();
    assert!(state.streams.is_empty() && state.waiters.is_empty());
    assert_eq!(
        (state.slots, state.streams.leases),
        (0, 0),
        "its slot freed, once"
    );
}

/// Checks the counts of a pool whose one connection carries `leases` leases: one record,
/// holding its slot, with that count; the pool's total the same; nothing idle or waiting.
fn assert_leased(state: &State<u64>, key: Key, leases: usize) {
    state.debug_check();
    let record = state.streams.get(key).expect("still shared");
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
