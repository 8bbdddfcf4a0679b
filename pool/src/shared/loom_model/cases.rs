//! The models: each races the moves of [`super::moves`] from two or three `loom` threads and
//! checks, in every interleaving, what the pool relies on.

use super::moves::*;
use super::*;

/// a. A lease taken while the last lease of the same connection ends: whichever goes first,
/// the connection is shared once, with exactly the new lease on it, and that lease's `Arc`
/// and the record's are the only ones; the new lease tested the connection with `is_broken`
/// exactly when it came after the end (the 0 -> 1 move); when it ends too, the connection is
/// idle.
#[test]
fn loom_model_a_lease_taken_as_the_last_one_ends() {
    model(3, || {
        let (pool, [last]) = pool_with_leases(2, None);
        let key = last.key;
        let ender = on_thread(&pool, move |pool| end(pool, last, false));
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
        let (pool, [first, second]) = pool_with_leases(2, None);
        let key = first.key;
        let other = on_thread(&pool, move |pool| end(pool, second, false));
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
        let (pool, [kept, ending]) = pool_with_leases(2, None);
        let key = kept.key;
        let ender = on_thread(&pool, move |pool| end(pool, ending, false));
        let (started, caller) = block_on_lease(&pool);
        ender.join().unwrap();
        let leased = found_or_served(started, &caller);
        assert_eq!(leased.key, key);
        assert_leased(&pool.lock().unwrap(), key, 2);
        end_all(&pool, [kept, leased]);
        assert_idle(&mut pool.lock().unwrap(), key);
    });
}

/// c, the last lease. The last lease of a connection full at `max_streams` 1 ends while a
/// caller finds no room and joins the line: as above, it is served and woken once, or finds
/// the connection idle and leases it; never left in line with the connection idle.
#[test]
fn loom_model_c_the_last_lease_end_serves_a_caller_joining_the_line() {
    model(3, || {
        let (pool, [ending]) = pool_with_leases(1, None);
        let key = ending.key;
        let ender = on_thread(&pool, move |pool| end(pool, ending, false));
        let (started, caller) = block_on_lease(&pool);
        ender.join().unwrap();
        let leased = found_or_served(started, &caller);
        assert_eq!(leased.key, key);
        assert_leased(&pool.lock().unwrap(), key, 1);
        end(&pool, leased, false);
        assert_idle(&mut pool.lock().unwrap(), key);
    });
}

/// c, the line's timer. The last lease of a connection full at `max_streams` 1 ends while a
/// caller finds no room and joins the line, and the background task's round times out the
/// callers in line past their deadline (`Line::time_out_expired`): the caller ends once,
/// leasing the connection (found, or served and woken once) or timed out in line (woken
/// once), never both and never left in line; a lease not given to a caller timed out stays
/// on the connection, which is idle in the end.
#[test]
fn loom_model_c_the_line_timer_races_a_last_lease_end_serving_the_line() {
    model(2, || {
        let (pool, [ending]) = pool_with_leases(1, None);
        let key = ending.key;
        let ender = on_thread(&pool, move |pool| end(pool, ending, false));
        let timer = on_thread(&pool, line_timer);
        let (started, caller) = block_on_lease(&pool);
        ender.join().unwrap();
        timer.join().unwrap();
        caller.assert_woken_once_if_waited();
        match started {
            Started::Found(leased) | Started::Served(leased) => {
                assert_eq!(leased.key, key);
                assert_leased(&pool.lock().unwrap(), key, 1);
                end(&pool, leased, false);
            }
            Started::TimedOut => assert!(caller.waited, "only a caller in line times out"),
            Started::Opened(_) => panic!("the pool is at max_size: nothing opens"),
            Started::Closed => panic!("the pool never closes here"),
        }
        assert_idle(&mut pool.lock().unwrap(), key);
    });
}

/// d, close. `Pool::close` races a lease's start (and its end, right after) and the end of
/// the lease already there, on a connection full at `max_streams` 1: the slot accounting
/// holds at every step (`debug_check` in each move), the caller gets a lease (found, or
/// served in line by the end) or `Closed` (found, or failed in line by `close`), never left
/// waiting, and in the end the connection has been closed exactly once, by whichever move
/// let go of it last, its slot freed and nothing left shared.
#[test]
fn loom_model_d_close_races_a_lease_start_and_a_lease_end() {
    model(2, || {
        let (pool, [ending]) = pool_with_leases(1, None);
        let ender = on_thread(&pool, move |pool| end(pool, ending, false).closed);
        let leaser = on_thread(&pool, move |pool| {
            let (started, caller) = block_on_lease(pool);
            let mut closed = caller.closed;
            match started {
                Started::Found(leased) | Started::Served(leased) => {
                    closed.extend(end(pool, leased, false).closed);
                }
                Started::Opened(_) => panic!("the pool is at max_size: nothing opens"),
                Started::TimedOut => panic!("no timer runs here"),
                Started::Closed => {}
            }
            closed
        });
        let mut closed = close(&pool);
        closed.extend(ender.join().unwrap());
        closed.extend(leaser.join().unwrap());
        assert_eq!(closed, [CONN], "closed exactly once");
        let state = pool.lock().unwrap();
        assert!(state.closed);
        assert_emptied(&state);
    });
}

/// d, broken. One lease marks its connection broken and ends while the other lease on it
/// ends: the slot is freed exactly once (at the mark; a second free would take `slots`
/// below 0), the connection takes no lease once marked, and it is closed exactly once, by
/// its last lease's end.
#[test]
fn loom_model_d_a_broken_mark_races_a_lease_end() {
    model(2, || {
        let (pool, [breaking, healthy]) = pool_with_leases(2, None);
        let breaker = on_thread(&pool, move |pool| break_lease(pool, breaking));
        let ender = on_thread(&pool, move |pool| end(pool, healthy, false).closed);
        let mut closed: Vec<u64> = breaker.join().unwrap().into_iter().collect();
        closed.extend(ender.join().unwrap());
        assert_eq!(closed, [CONN], "closed exactly once");
        assert_emptied(&pool.lock().unwrap());
    });
}

/// d, resize. The pool shrinks from two connections to one (`Pool::resize`) while the lease
/// on each (`max_streams` 1, both full) ends, one after the other, and a caller finds no
/// room and joins the line. Exactly one connection goes, closed exactly once: evicted by
/// the shrink when it is idle then, else drained, its slot given up at once and never
/// freed again, and closed by its last lease's end. The other stays, idle, in the one slot
/// left. The caller gets a lease, found or served in line (woken exactly once if it
/// waited), never a slot: the shrink frees none, and no lease is placed on the drained
/// connection (`checked` in every placement).
#[test]
fn loom_model_d_resize_races_a_lease_start_and_lease_ends() {
    model(3, || {
        let mut state = State::new(2, 0, 1);
        let first = open_shared(&mut state, CONN, None);
        let second = open_shared(&mut state, OTHER, None);
        state.debug_check();
        let pool = Arc::new(Mutex::new(state));
        let shrinker = on_thread(&pool, move |pool| resize(pool, 1));
        let ender = on_thread(&pool, move |pool| end_all(pool, [first, second]));
        let (started, caller) = block_on_lease(&pool);
        let mut closed = shrinker.join().unwrap();
        closed.extend(ender.join().unwrap());
        // A shrink frees no slot: nothing opens.
        let leased = found_or_served(started, &caller);
        closed.extend(caller.closed);
        closed.extend(end(&pool, leased, false).closed);
        assert!(
            closed == [CONN] || closed == [OTHER],
            "one connection closed, exactly once: {closed:?}"
        );
        let mut state = pool.lock().unwrap();
        assert_eq!(state.max_size, 1);
        let kept = state.streams.keys().next().expect("one connection stays");
        let conn = state.streams.get(kept);
        let conn = conn.and_then(|r| conn_ref::<u64>(&r.conn)).copied();
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
/// reads no clock: `checked` in every placement), never one served in line (a lease
/// end serves nobody on a connection past its lifetime: it drains it instead). The caller
/// gets that lease beside, or opens a new connection in the freed slot, found free or
/// served in line (woken exactly once if it waited); the new connection is never closed.
#[test]
fn loom_model_d_max_lifetime_races_a_lease_start_and_lease_ends() {
    model(3, || {
        let (pool, held) = pool_with_leases::<2>(2, Some(Duration::ZERO));
        let key = held[0].key;
        let reaper = on_thread(&pool, reap);
        let ender = on_thread(&pool, move |pool| end_all(pool, held));
        let (started, caller) = block_on_lease(&pool);
        let mut closed = reaper.join().unwrap();
        closed.extend(ender.join().unwrap());
        caller.assert_woken_once_if_waited();
        closed.extend(caller.closed);
        let (leased, opened) = match started {
            Started::Found(leased) => {
                assert_eq!(leased.key, key, "beside the leases of the old connection");
                (leased, None)
            }
            Started::Opened(leased) => {
                assert_eq!(conn_ref::<u64>(&leased.conn), Some(&NEW));
                let key = leased.key;
                (leased, Some(key))
            }
            Started::Served(_) => panic!("served a lease on a connection past its lifetime"),
            Started::Closed | Started::TimedOut => {
                panic!("the pool never closes here, no timer runs")
            }
        };
        closed.extend(end(&pool, leased, false).closed);
        assert_eq!(closed, [CONN], "closed exactly once; a new one stays");
        let mut state = pool.lock().unwrap();
        match opened {
            Some(key) => assert_idle(&mut state, key),
            None => assert_emptied(&state),
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
        let (pool, [breaking, stale]) = pool_with_leases(2, None);
        let old = breaking.key;
        let breaker = on_thread(&pool, move |pool| break_lease(pool, breaking));
        let (started, mut caller) = block_on_lease(&pool);
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
        assert_leased(&pool.lock().unwrap(), new, 1);
        closed.extend(end(&pool, leased, false).closed);
        assert_eq!(
            closed,
            [CONN],
            "the old connection closed once, the new one not"
        );
        assert_idle(&mut pool.lock().unwrap(), new);
    });
}
