//! A generic async connection pool that never leaks, never hangs, and checks out fast.
//!
//! A [`Manager`] says how to connect, check and close one connection; the [`Pool`] does the
//! rest: it caps the number of connections at `max_size`, keeps idle ones (and `min_idle` warm
//! ones), health-checks on checkout unless a connection was used within the check interval,
//! takes connections back on drop, discards broken ones, retires old ones, serves waiters in
//! order, reports a [`Pooled`] or [`Lease`] held past [`Builder::leak_threshold`] (naming the
//! `file:line` that took it), and closes cleanly.
//!
//! ```
//! use std::convert::Infallible;
//! use pool::{Manager, Pool};
//!
//! /// A "connection" that is just a number, to show the shape of a manager.
//! struct Numbers;
//!
//! impl Manager for Numbers {
//!     type Connection = u64;
//!     type Error = Infallible;
//!     async fn connect(&self) -> Result<u64, Infallible> {
//!         Ok(42)
//!     }
//!     async fn check(&self, _conn: &mut u64) -> Result<(), Infallible> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = Pool::builder(Numbers).max_size(4).build().expect("valid settings");
//! let conn = pool.get().await.expect("a connection");
//! assert_eq!(*conn, 42);
//! drop(conn); // back to the pool
//! assert_eq!(pool.status().idle, 1);
//! pool.close().await;
//! # }
//! ```
//!
//! # Metrics
//! With the `metrics` feature the pool reports through the [`metrics`](https://docs.rs/metrics)
//! facade (which Prometheus and other exporters plug into), each metric labelled
//! `pool = <name>` ([`Builder::name`]) so two pools of one program are told apart.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `pool.connections` | gauge | open connections holding a slot (`Status::size`) |
//! | `pool.connections.idle` | gauge | idle connections |
//! | `pool.connections.in_use` | gauge | connections held by `get` or carrying leases |
//! | `pool.connections.discarded` | gauge | broken or shrunk-away connections still leased (`Status::discarded`) |
//! | `pool.leases` | gauge | leases held |
//! | `pool.waiting` | gauge | callers waiting in line |
//! | `pool.connecting` | gauge | connects in flight |
//! | `pool.max_size` | gauge | the current `max_size` |
//! | `pool.connections.created` | counter | connections opened |
//! | `pool.connections.closed` | counter | connections the pool closed |
//! | `pool.connections.broken` | counter | connections found or marked broken |
//! | `pool.checks.failed` | counter | checks that failed or timed out |
//! | `pool.connects.failed` | counter | connects that failed or timed out |
//! | `pool.timeouts` | counter | timeouts returned to callers |
//! | `pool.resets` | counter | resets run on connections that came back dirty |
//! | `pool.resets.failed` | counter | resets that failed, panicked or timed out |
//! | `pool.leaks` | counter | holds reported past `leak_threshold` |
//! | `pool.wait` | histogram | seconds each caller waited in line |
//! | `pool.hold` | histogram | seconds each `Pooled` or `Lease` was held |
//!
//! Counters and histograms are reported as their events happen; the gauges are sampled by the
//! background task every [`Builder::metrics_interval`] and by every [`Pool::status`] call, so
//! the checkout fast path pays nothing for them.
//!
//! # Writing a manager
//! Only `connect` and `check` must be written; [`Manager`] says what each method must
//! guarantee, and the repository's `examples/custom_manager.rs` is one to copy. A manager
//! picked from configuration, or wrapped in a decorator, is a [`dynamic::BoxManager`] over the
//! dyn-compatible [`DynManager`](dynamic::DynManager), which every `Manager` already is.
//!
//! # Leases: one connection, many callers
//! A connection that carries many requests at once (HTTP/2, the JSON transport's `Conn`, a
//! Redis multiplexed connection) is lent to up to `max_streams` callers at once with
//! [`Pool::lease`]. The pool never closes a connection while a lease holds it: a retired
//! (`max_lifetime`, `retain`, `resize`, `close`) or broken one takes no new lease and closes
//! after its last, a broken one freeing its slot at once. A new connection opens only when
//! every open or opening one is full: the fewest connections the load needs, spread evenly.
//!
//! ```
//! # use std::convert::Infallible;
//! # use pool::{Manager, Pool};
//! # struct Numbers;
//! # impl Manager for Numbers {
//! #     type Connection = u64;
//! #     type Error = Infallible;
//! #     async fn connect(&self) -> Result<u64, Infallible> { Ok(7) }
//! #     async fn check(&self, _conn: &mut u64) -> Result<(), Infallible> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = Pool::builder(Numbers).max_size(4).max_streams(16).build().expect("valid");
//! let (a, b) = (pool.lease().await.expect("a"), pool.lease().await.expect("b"));
//! assert_eq!(pool.status().size, 1, "both leases share one connection");
//! assert_eq!(pool.status().leases, 2);
//! drop((a, b));
//! # }
//! ```
//!
//! # Several endpoints
//! [`balance::Balanced`] is a [`Manager`] over a set of per-endpoint managers (servers,
//! replicas), so one pool spreads its connections over all of them: placement, failover,
//! ejection, a set changed at run time (the [`balance`] module docs).
//!
//! # A pool per key
//! [`keyed::KeyedPool`] keeps one [`Pool`] per key (a host, a shard, a cluster node) under
//! two caps: `max_size` connections per key and `max_total` across keys. At `max_total`, a
//! caller whose key has room waits while the longest-idle connection of another key is
//! closed for it; a key whose connects hang or fail holds up no other key; a key that has
//! held nothing for `idle_timeout` is forgotten.
//!
//! ```
//! # use std::convert::Infallible;
//! # use pool::Manager;
//! # struct Shard(u16);
//! # impl Manager for Shard {
//! #     type Connection = u16;
//! #     type Error = Infallible;
//! #     async fn connect(&self) -> Result<u16, Infallible> { Ok(self.0) }
//! #     async fn check(&self, _conn: &mut u16) -> Result<(), Infallible> { Ok(()) }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use pool::keyed::KeyedPool;
//!
//! let shards = KeyedPool::builder(|shard: &u16| Shard(*shard))
//!     .max_size(2)
//!     .max_total(3)
//!     .build()
//!     .expect("valid settings");
//! let (a, b) = (shards.get(&1).await.expect("a"), shards.get(&1).await.expect("b"));
//! drop((a, b)); // both idle: key 1 holds two of the three allowed
//! let c = shards.get(&2).await.expect("c");
//! let d = shards.get(&2).await.expect("d: an idle connection of key 1 was closed for it");
//! assert_eq!(shards.status(&1).map(|s| s.size), Some(1));
//! # drop((c, d));
//! # shards.close().await;
//! # }
//! ```
//!
//! # Decisions
//! - The timeouts are separate (`wait_timeout`, `connect_timeout`, `check_timeout`) and each
//!   error says which fired; none waits forever by default.
//! - `max_size` counts connects in flight, so a burst after an outage never has more than
//!   `max_size` connects running (no thundering herd).
//! - A returned connection goes straight to the oldest waiter; a waiter that gave up is
//!   skipped and its connection goes to the next one.
//! - A waiter is a slot in a slab under the pool's lock, not a channel, so waiting allocates
//!   nothing. One timer serves the whole line: the background task wakes at the earliest
//!   deadline in line and times out every waiter past its own (a timer per waiter cost about
//!   450 of the 3,370 instructions of a wait in line, BENCHMARKS.md). No deadline depends on
//!   a task that may not run: the task dies with the runtime that started it (which a static
//!   pool shared by several `#[tokio::test]`s outlives), and a runtime nobody drives runs
//!   none of its tasks, so a waiter on another runtime than the task's arms a timer of its
//!   own, and every waiter in line does when the task ends. The task (reaping, `min_idle`,
//!   the line's timer) restarts in whichever runtime next checks out.
//! - A caller whose connection turns out bad on checkout (failed check, expired, broken)
//!   keeps that connection's slot and opens a fresh one, so it never loses its place in line
//!   to callers that came after it.
//! - A failed connect is retried with capped exponential backoff and jitter within the
//!   caller's `wait_timeout` (as bb8 and HikariCP do), so a server restart does not fail the
//!   first caller; `fail_fast(true)` reports the first failure instead. Only `max_size`
//!   connects run at once however many callers retry. The failed connect's slot goes at once
//!   to the oldest caller in line; its own caller pauses out of line, then waits at the place
//!   it took on arrival (for `get` as for `lease`), ahead of later callers.
//! - `is_broken` runs on return and again on checkout (it is a flag read), so a connection
//!   whose peer went away while it sat idle is never handed out, even inside the check
//!   interval.
//! - The fast path reads the clock twice per checkout and return (to honour `check_interval`
//!   from the last return, and `max_lifetime`): about 25 ns each on a VM's vDSO clock, the
//!   main cost above a bare semaphore plus a locked `Vec` (see BENCHMARKS.md). A coarse clock
//!   advanced by the background task would save both, but none follows Tokio's paused test
//!   clock exactly (a task woken by a timer runs after the task that moved the clock).
//! - `get` takes an idle connection that needs nothing (no check due, not expired, not
//!   broken) in a plain function that allocates nothing, before the checkout's state machine,
//!   whose waits and connects are not boxed: a boxed full path allocated on every wait in
//!   line. Measured (BENCHMARKS.md): get+drop went from 0.42-0.50 of the Semaphore+Mutex
//!   floor to 0.63-0.81. A guard is built once, its hold (leak tracking) already in it: a
//!   field written just before the guard is moved out stalls the move (0.59-0.61 of the
//!   floor, with the same instruction count).
//! - The lock guards a few field updates only: no `.await`, no manager call (but the one
//!   below) and no connection drop happens while it is held.
//! - Leases take the pool's lock, once to lease and once to end, and allocate nothing on the
//!   fast path; `is_broken` runs under that lock at the 0 -> 1 and 1 -> 0 lease moves, since
//!   only the lock proves no lease borrows the connection. A lease beside others, with nobody
//!   in line, is one pass over the shared connections to find the fewest leases; its end
//!   only counts itself off. A lock-free lease path (an `unsafe` cell whose word counted the
//!   leases) measured 0.89-0.91 of bare connections with a lease per request where the
//!   locked one measures 0.84-0.87 and a bare mutex 0.86-0.95, with ten concepts more and
//!   edges no test reached; the pool is `#![forbid(unsafe_code)]`.
//! - The lease fast path is a plain function called before anything is awaited; the rest of
//!   a lease (waiting in line, connecting, checking) is boxed, allocated only when taken.
//!   Unboxed, every lease's future carried that state (over 1 KiB) and was moved with it.
//! - User hooks that panic leak nothing: `is_broken`, `is_broken_shared` and `check` count as
//!   broken or failed, each `close` runs caught on its own, and a panicking `lease_started`
//!   or `lease_ended` reaches its caller only after the lease ended.
//! - A lease goes to the connection with the fewest leases, an idle connection of the pool's
//!   own (returned by `get`, or kept by `min_idle`) counting as one with none, so leases
//!   spread over the spare connections `min_idle` keeps opening, as it asks.
//! - A connection opened for a lease keeps its room promised to the callers that arrive while
//!   it opens until its opener shares it, not merely until its connect ends, so a caller
//!   arriving in between waits for it instead of opening another.
//! - A caller waiting for a connection of its own is not starved by leases that overlap
//!   without end: while it waits, the shared connection with the fewest leases takes no new
//!   lease but from lease callers ahead of it in line (first come, first served still
//!   holds), so its count falls, and at its last lease that caller takes it (lease callers
//!   can use room elsewhere; `get` can use nothing else).
//! - A broken shared connection, and one a shrink drains, gives its slot up at once (so a
//!   replacement can open, and a shrink by one retires one connection); while leases still
//!   use it, it counts in `Status::discarded`, not in `size` or `in_use`, so `size` never
//!   reads above `max_size` (the turmoil simulation saw 4-5 of 3 when it counted there).
//! - A shared connection lives in one `Arc` for its time as leases (made when it is first
//!   leased), as `dyn Any + Send + Sync`, so a pool of connections that are not `Sync`
//!   (which `get` can lend, `lease` cannot) stays `Send`.
//! - A lease reads the clock only when it needs the time: a lease on a connection that
//!   already carries one reads none, and only the last lease's end reads it, to stamp
//!   `last_used`. So a leased connection past `max_lifetime` is drained by the background
//!   task, which wakes at the earliest end of a lifetime (not only every `reap_interval`),
//!   planned again when a connection whose lifetime ends before that wake comes into shared
//!   form (one held by `get` through the rounds before). A lease served to a caller in line
//!   is tested against the lifetime then (the clock is read only when someone waits), so a
//!   waiter never gets a lease on a connection that expired as the previous lease ended.
//! - Room on a shared connection goes to the leasers waiting in line wherever it is not kept
//!   for a waiting `get`: when the kept connection changes (another now has fewer leases),
//!   the room on the one kept before is handed out at once, so a lease caller that came
//!   later never takes it first. A waiting caller served a lease on a connection that died
//!   meanwhile (`is_broken_shared` at hand-out) is back in line at its place before the dead
//!   connection's slot is freed, so the slot, or room elsewhere, comes to it first.
//! - A lease caller has a place in line from its first look, whether it waits or not, and
//!   waits at that place whenever it waits. A connection it opens (or readies) serves first
//!   the lease callers ahead of that place, then it, then those behind it: callers ahead may
//!   wait for room promised by a connect whose own caller left, which never reaches them
//!   while that connect hangs (the model test found a later caller served first). When the
//!   callers ahead take every lease, the opener waits at its place.
//! - Several endpoints are a [`Manager`] combinator ([`balance::Balanced`]), not a pool
//!   feature: the pool stays one set of slots, and any manager gets placement, failover,
//!   ejection and recovery. A connect that fails tries the next healthy endpoint within the
//!   same call, so a dead server costs a caller no error (measured over loopback: one of
//!   three servers refusing, 6 400 requests from 64 tasks, none failed).
//! - An endpoint's connections drain (removal, rebalancing) through `is_broken_shared` and
//!   `is_broken` answering true, not through [`Pool::retain`]: `retain` visits idle
//!   connections only, and under load every shared connection carries a lease, so nothing
//!   would drain. The pool's `broken` counter therefore includes them;
//!   [`Balanced::endpoints`](balance::Balanced::endpoints) tells failures from drains.
//! - The pool opens a connection only when a caller needs one, so an endpoint that joins or
//!   comes back would get nothing from a full pool: when one does (its ejection ends), the
//!   balancer drains one connection at a time of an endpoint carrying two more than it,
//!   and the pool's next connect lands on it (measured: a server killed under 64 tasks and
//!   restarted answers again 30-200 ms after its restart, its backoff having run out).
//! - Leases per endpoint come from two defaulted hooks, [`Manager::lease_started`] and
//!   [`Manager::lease_ended`], called outside the pool's lock and only for managers that set
//!   [`Manager::WATCHES_LEASES`] (a constant: every other manager's lease fast path compiles
//!   to what it was).
//! - The pool is model-checked (`tests/model.rs`): a state-machine property test runs random
//!   sequences of every operation and fault against a ledger of what the test and the mock
//!   know, and checks sizes, counters, fairness, liveness and closes after every step. It
//!   found the two defects above; 256 cases run in about 4 s, so CI runs it on every push.
//!   The lease moves under the lock, and the wake-ups they return, are model-checked by
//!   `loom` (`shared/loom_model/`, `scripts/loom`): every interleaving of a lease start and
//!   end, a caller joining the line, `close`, `resize`, a retirement past `max_lifetime`,
//!   `mark_broken`, and a new connection in the slot of a broken one a lease still reads.
//! - A dirty connection is reset on return, in a task of the pool's, not at the next
//!   checkout (deadpool-postgres resets there, so the next caller pays for it) and not on
//!   the dropping caller's path (a drop cannot await). It keeps its slot while it resets, so
//!   `max_size` still bounds what the server holds, and goes to no one (a waiter gets it in
//!   its turn) until the reset succeeded. `close` waits for resets in flight, up to
//!   `close_timeout`; a reset task dropped with its runtime fails the reset, so no slot is lost.
//! - Leak tracking keeps each hold (when, and the `file:line` from `#[track_caller]`) in a
//!   slab under a lock of its own, only with `leak_threshold` set or the `metrics` feature
//!   on; the background task looks over the holds at least once a second. `get` and `lease`
//!   are plain functions returning their futures, since `#[track_caller]` on an `async fn`
//!   is not stable.
//! - Every `Arc` of a shared connection is dropped under the pool's lock, and the last one
//!   is recognised there too (`Arc::get_mut`): two holders letting go at once outside the
//!   lock could each see the other's `Arc` and both drop theirs, losing the close.
//! - [`Manager`] keeps native `impl Future` methods, and the dyn-compatible form is a second
//!   trait, [`dynamic::DynManager`] (`#[async_trait]`, boxed futures), with adapters both ways:
//!   only a program that picks its manager at run time pays for the boxes. The pool's fast
//!   path calls only the synchronous `is_broken` through the box, so get+drop with a
//!   `BoxManager` costs the same as native within this VM's noise (benches/checkout.rs
//!   `dyn_pass`, 11 interleaved rounds, time boxed/native, median of two runs each: 0.99 and
//!   1.07 at T=1, 1.05 and 1.01 at T=16; with a check on every checkout, one boxed future
//!   each, 1.04 and 1.07 at T=1, 1.02 and 1.01 at T=16). `BoxManager` is a struct, not a
//!   bare `Box<dyn DynManager>`, whose pool's futures the compiler cannot prove `Send` ("not
//!   general enough"), which would keep such a pool out of `tokio::spawn`.
//! - [`keyed::KeyedPool`] is a [`Pool`] per key in a map, not one pool with a list per key:
//!   each key gets every behaviour of a pool (its FIFO line, leases, retries, resets, leak
//!   reports) unchanged, and `get(&key)` costs one lookup under the map's lock (a short one:
//!   no user code runs under it; `make` runs with it released) plus the key pool's own fast
//!   path. Only `max_total` spans keys.
//! - `max_total` is a budget that every key pool takes its slots from as well: an atomic
//!   count, taken with a CAS loop in `State::take_slots` and given back in
//!   `State::free_slots`, the only two moves that change a pool's slots, so no path can take
//!   or free a slot and miss the budget. A pool of its own has none (`None`), and measures as
//!   before (`scripts/instr`, same session, before then after: get 491.7 and 492.7
//!   instructions, lease 1007.7 and 1012.3, lease2 561.0 and 562.0; per function, one
//!   instruction more per get and per lease, the rest the clock's values). The budget's
//!   calls are cold, and `min_idle`'s refill skips a pool with a budget before it takes
//!   slots: inlined into the checkout, that call made every get copy its connection once
//!   more on the stack (10 instructions). Key pools keep no `min_idle`.
//! - A caller the budget refused waits in its own key's line (first come, first served
//!   there, with its own deadline), and the key's pool joins the budget's queue of starved
//!   pools. The work across keys, feeding a starved key a slot and closing another key's
//!   longest-idle connection for it, is one task's per keyed pool (the steward), which takes
//!   one pool's lock at a time, so no two pools' locks are ever held together. Giving a slot
//!   back while a key starves notifies the steward from under the pool's lock (the one
//!   wake-up under a lock), so no caller can forget to pass the give-back on. Why a starved
//!   waiter is always served or times out is written beside the budget (`shared/budget.rs`).
//! - While a key starves with every slot taken, a connection that would go idle in a key with
//!   nobody in line is closed (its slot goes to the starved key) rather than kept until the
//!   steward evicts it; a connection returned to a key with callers in line goes to them,
//!   unless a starved key holds nothing and this key holds more than its fair share
//!   (`max_total` over the keys holding or starved, rounded down): then it is closed, and a
//!   key that holds a slot takes no more until the starved one has one. The budget spent,
//!   some key always holds more than that share, so a key with nothing is served at a busy
//!   key's next return; with nobody starving, or every starved key holding one, nothing is
//!   closed for fairness (an even split would close and reopen at every return).
//! - A key's connects in flight count against `max_total`, as they count against
//!   `max_size`: a key whose connects hang holds at most its `max_size` of the total until
//!   `connect_timeout`. `max_size` above `max_total` is refused
//!   ([`BuildError::MaxSizeAboveTotal`]): no key could reach it, so the two were likely
//!   swapped; equal is allowed (one key may take the whole total).
//! - A key is forgotten (its pool dropped) by the steward's sweep, every half `idle_timeout`,
//!   once it has held nothing and had no caller for `idle_timeout`; "nothing" includes the
//!   map's handle being the pool's only one, since a caller holds a handle of its own from
//!   its lookup on. 100,000 keys used once each, 1,000 every 10 s with `idle_timeout` 10 s,
//!   never have more than 3,000 held at once, and none after (`tests/keyed.rs`).
//! - A `make` that panics panics the caller that needed the key (it runs in that caller's
//!   task, outside the map's lock): nothing is inserted, no lock is poisoned, and the next
//!   call for the key calls `make` again. A typed error would hide a bug in the user's code,
//!   where a panic in any other closure they pass is not hidden.
//! - A key pool samples its gauges (`metrics` feature) only as it reaps, not every second:
//!   thousands of keys report under one pool name, and the per-second wake of every key's
//!   task doubled the time of the 100,000-key test (24 s against 12 s, debug build).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod balance;
mod checkout;
mod config;
mod error;
mod info;
pub mod keyed;
mod lease;
mod manager;
mod pool;
mod shared;
mod status;
mod sync;

pub use checkout::pooled::Pooled;
pub use config::{BuildError, Builder, IdleOrder};
pub use error::{PoolError, TimeoutKind};
pub use info::ConnInfo;
pub use lease::guard::Lease;
pub use manager::Manager;
pub use pool::Pool;
pub use status::{Counters, Status};

#[cfg(feature = "deadpool")]
pub mod deadpool;
pub mod dynamic;
