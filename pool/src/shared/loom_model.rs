//! A `loom` model check of the lease protocol: the pool's real [`State`] and its real moves
//! (`place_lease`, `lease_ended`, `end_lease`, `serve_leasers`, `mark_shared_broken`,
//! `evict_shared`, `drain_shared`, the line's `rejoin`, `poll` and `close_all`), driven from
//! two or three `loom` threads through a `loom` mutex exactly as the pool drives them: lock,
//! move, unlock, then wake the wakers the move returned and close what it gave up. `loom`
//! runs every interleaving of those critical sections (up to its preemption bound) and each
//! test checks, in every one, the counts and the wake-ups the pool relies on.
//!
//! Run by `scripts/loom` (`RUSTFLAGS="--cfg loom"`, `loom_model` only: the
//! crate's other tests take the pool's lock outside a `loom` model, which `loom` refuses).
//!
//! What is modelled: the critical sections of a lease's start (`Pool::fast_lease`, then
//! `Pool::decide_lease` and the wait in line of `checkout::handoff::wait`), of its end
//! (`Shared::end_lease`), of `Lease::mark_broken` and of `Pool::close`, each a function below
//! that makes the same moves on the same state under the lock as its original. Connections
//! are plain `u64`s in the crate's own shared form ([`wrap`]); wakers count their wakes and
//! wake the `loom` thread waiting in `loom::future::block_on`, so a wake-up that is lost
//! leaves that thread parked for ever, which `loom` reports as a deadlock.
//!
//! What is not: tokio's timers (no caller times out; `wait_timeout` and `close_timeout` never
//! run out), the manager's async calls (connect, check, close: no connection is opened or
//! checked here, one is "closed" by taking it out of its last `Arc` as `Shared::close_shared`
//! does), `get` and its idle connections, `max_lifetime` and the background task, and the
//! `Lease` guard's own code around the moves (its `is_broken_shared` and hooks). Every model
//! has one connection, already shared, in a pool of `max_size` 1, so a caller that finds no
//! room waits in line.

use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use tokio::time::Instant;

use crate::info::ConnInfo;
use crate::lease::moves::{Ended, Placed};
use crate::lease::streams::{Key, SharedConn, unwrap, wrap};
use crate::shared::line::{Ticket, Wake};
use crate::shared::state::{Grant, Leased, State};

/// The pool's locked state, as the pool's threads share it.
type Model = Arc<Mutex<State<u64>>>;

/// Far longer than any model runs: no check falls due.
const CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// The one connection every model shares.
const CONN: u64 = 7;

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

/// A pool of `max_size` 1 whose one connection is shared and carries `leases` leases (at
/// most `max_streams`), made by the real moves: `State::share` for the first lease, as the
/// caller that opened the connection shares it, and `fast_lease` for the others.
fn pool_with_leases(max_streams: usize, leases: usize) -> (Model, Vec<Leased>) {
    let mut state = State::new(1, 0, max_streams);
    // The slot the connection was opened in (its connect, done, left `connecting`).
    state.slots = 1;
    let arrival = state.waiters.arrive(true);
    let mut wakes = Vec::new();
    let info = ConnInfo::new(Instant::now(), None);
    let first = state
        .share(wrap(CONN), info, arrival, &mut wakes)
        .expect("a new connection has room for its opener");
    assert!(wakes.is_empty(), "nobody waits");
    let mut held = vec![first];
    for _ in 1..leases {
        held.push(fast_lease(&mut state, &mut false).expect("room beside the first lease"));
    }
    state.debug_check();
    (Arc::new(Mutex::new(state)), held)
}

/// `Pool::fast_lease`'s critical section: a lease beside others when nobody waits, else the
/// full placement (`place_lease`). `None` when no connection has room or the pool closed.
/// `asked` is set when `is_broken` was asked (it is when a connection with no lease is
/// leased).
fn fast_lease(state: &mut State<u64>, asked: &mut bool) -> Option<Leased> {
    if state.closed {
        return None;
    }
    let mut picked = None;
    if state.waiters.is_empty() && state.idle.is_empty() {
        let max_streams = state.max_streams;
        match state.streams.lease_beside(max_streams) {
            Ok(leased) => return Some(leased),
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
    state.debug_check();
    match placed {
        Some(Placed::Lease(leased)) => Some(leased),
        Some(_) => panic!("no check is due and nothing expires: only a lease is placed"),
        None => None,
    }
}

/// How a lease's start ended.
enum Started {
    /// Found room itself (fast path or its full placement).
    Found(Leased),
    /// Waited in line and was served this lease there.
    Served(Leased),
    /// The pool closed.
    Closed,
}

/// `Pool::lease` as a future: `fast_lease`, then `decide_lease`'s critical section, which
/// either places a lease or joins the line with the task's waker (the pool is at `max_size`,
/// with nothing idle or opening), then the wait in line (`checkout::handoff::wait`: its
/// first poll, the one that joined, returns at once; each later one polls its ticket under
/// the lock).
async fn lease(model: &Model, waker: &Waker) -> Started {
    let mut ticket: Option<Ticket> = None;
    std::future::poll_fn(|_| {
        let mut cx = Context::from_waker(waker);
        let Some(ticket) = ticket else {
            if let Some(leased) = fast_lease(&mut model.lock().unwrap(), &mut false) {
                return Poll::Ready(Started::Found(leased));
            }
            let mut state = model.lock().unwrap();
            if state.closed {
                return Poll::Ready(Started::Closed);
            }
            let arrival = state.waiters.arrive(true);
            let placed = state.place_lease(None, Instant::now, CHECK_INTERVAL, |_| false);
            if let Some(Placed::Lease(leased)) = placed {
                state.debug_check();
                return Poll::Ready(Started::Found(leased));
            }
            assert!(placed.is_none(), "only a lease is placed");
            assert!(state.idle.is_empty() && state.opening_room == 0);
            assert_eq!(state.reserve_connects(1), 0, "the pool is at max_size");
            ticket = Some(state.waiters.rejoin(arrival, waker.clone()));
            state.debug_check();
            return Poll::Pending;
        };
        let mut state = model.lock().unwrap();
        match state.waiters.poll(ticket, &mut cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Wake::Granted(Grant::Lease(leased))) => {
                Poll::Ready(Started::Served(leased))
            }
            Poll::Ready(Wake::Closed) => Poll::Ready(Started::Closed),
            Poll::Ready(_) => panic!("a lease caller is served a lease"),
        }
    })
    .await
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
/// the freed slot.
fn mark_broken(model: &Model, key: Key) {
    let (_newly, wake) = {
        let mut state = model.lock().unwrap();
        let marked = state.mark_shared_broken(key);
        state.debug_check();
        marked
    };
    if let Some(waker) = wake {
        waker.wake();
    }
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

/// Runs `f` under `loom` with at most `preemptions` preemptions per execution.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// Blocks the `loom` thread on `lease` with a counting waker around its own; the outcome,
/// and the waker's count of wakes, to read once every thread that may wake it is done
/// (`loom`'s `block_on` polls again on spurious wake-ups too, so a caller may find its
/// outcome before the end that served it has woken it).
fn block_on_lease(model: &Model) -> (Started, std::sync::Arc<Counting>) {
    loom::future::block_on(async {
        let inner = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let counting = std::sync::Arc::new(Counting {
            wakes: AtomicUsize::new(0),
            inner,
        });
        let waker = Waker::from(std::sync::Arc::clone(&counting));
        let started = pin!(lease(model, &waker)).await;
        (started, counting)
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
        let (pool, mut held) = pool_with_leases(2, 1);
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
        let (pool, mut held) = pool_with_leases(2, 2);
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
        let (pool, mut held) = pool_with_leases(2, 2);
        let key = held[0].key;
        let ending = held.pop().expect("two leases");
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, ending, false))
        };
        let (started, counting) = block_on_lease(&pool);
        ender.join().unwrap();
        let wakes = counting.wakes.load(Ordering::SeqCst);
        let leased = match started {
            Started::Found(leased) => {
                assert_eq!(wakes, 0, "found room: never waited, never woken");
                leased
            }
            Started::Served(leased) => {
                assert_eq!(wakes, 1, "served in line: woken exactly once");
                leased
            }
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
        let (pool, mut held) = pool_with_leases(1, 1);
        let ending = held.pop().expect("one lease");
        let key = ending.key;
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, ending, false))
        };
        let (started, counting) = block_on_lease(&pool);
        ender.join().unwrap();
        let wakes = counting.wakes.load(Ordering::SeqCst);
        let leased = match started {
            Started::Found(leased) => {
                assert_eq!(wakes, 0, "found room: never waited, never woken");
                leased
            }
            Started::Served(leased) => {
                assert_eq!(wakes, 1, "served in line: woken exactly once");
                leased
            }
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
        let (pool, mut held) = pool_with_leases(1, 1);
        let ending = held.pop().expect("one lease");
        let ender = {
            let pool = pool.clone();
            loom::thread::spawn(move || end(&pool, ending, false).closed)
        };
        let leaser = {
            let pool = pool.clone();
            loom::thread::spawn(move || match block_on_lease(&pool) {
                (Started::Found(leased) | Started::Served(leased), _) => {
                    end(&pool, leased, false).closed
                }
                (Started::Closed, _) => None,
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
        let (pool, mut held) = pool_with_leases(2, 2);
        let key = held[0].key;
        let healthy = held.pop().expect("two leases");
        let breaking = held.pop().expect("two leases");
        let breaker = {
            let pool = pool.clone();
            loom::thread::spawn(move || {
                mark_broken(&pool, key);
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
