//! The scripted mock manager every pool test shares.
//!
//! [`Mock`] is a cheap handle (clones share one state): give one clone to the pool and keep
//! another to script the manager and read its counters. It
//! - counts connects, checks and closes, and the connections alive (made and not yet dropped);
//! - numbers each connection (`MockConn::id`, from 0 in connect order) and counts the closes of
//!   each id, so a test can prove every connection was closed exactly once;
//! - tracks connects in flight, and at every connect checks that connections alive plus
//!   connects in flight stay within a configured limit (a breach is recorded, not panicked on,
//!   because connects run in pool tasks; tests assert [`Mock::limit_breaches`] is 0). The limit
//!   only fits tests that discard nothing: a discarded connection's slot frees before its close
//!   runs, so a fresh connect may overlap that close by design;
//! - runs a [`Plan`] for each connect and each check: a delay (tokio time, so it follows a
//!   paused clock), a number of `yield_now`s, then succeed, fail with a message, hang forever
//!   or panic. Plans queued with `push_*` run first, in order; then the default plan;
//! - fails the check of chosen ids, reports chosen ids broken on return, and may delay closes;
//! - counts the calls of `is_broken` and `is_broken_shared`, and reports chosen ids broken
//!   through `is_broken_shared` (a multiplexed connection that died under its leases);
//! - counts its connections in [`Tally`]s shared with other mocks (the managers of a keyed
//!   pool's keys), from the start of their connect until the pool hands them to `close` (or
//!   drops them), with the peak: what the pool holds, across mocks ([`Mock::counted_in`]).
#![allow(dead_code)] // each test file uses a different part of the mock

pub mod logs;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pool::Manager;
use tokio::sync::Notify;

/// The error the mock's connect and check fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockError(pub String);

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MockError {}

/// How a scripted call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    Fail(String),
    Hang,
    Panic,
}

/// What one connect or check does: wait, yield, then end as `outcome` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub delay: Duration,
    pub yields: u32,
    pub outcome: Outcome,
}

impl Plan {
    pub fn ok() -> Self {
        Plan {
            delay: Duration::ZERO,
            yields: 0,
            outcome: Outcome::Succeed,
        }
    }

    pub fn fail(message: &str) -> Self {
        Plan {
            outcome: Outcome::Fail(message.to_owned()),
            ..Plan::ok()
        }
    }

    pub fn hang() -> Self {
        Plan {
            outcome: Outcome::Hang,
            ..Plan::ok()
        }
    }

    pub fn panic() -> Self {
        Plan {
            outcome: Outcome::Panic,
            ..Plan::ok()
        }
    }

    /// The same plan, after a delay on the tokio clock.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The same plan, after yielding to the scheduler `n` times (a delay that needs no timer).
    pub fn yielding(mut self, n: u32) -> Self {
        self.yields = n;
        self
    }

    /// Runs the plan's waits; returns its outcome (hangs and panics happen here).
    async fn run(&self, what: &str) -> Result<(), MockError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
        match &self.outcome {
            Outcome::Succeed => Ok(()),
            Outcome::Fail(message) => Err(MockError(message.clone())),
            Outcome::Hang => std::future::pending().await,
            Outcome::Panic => panic!("scripted {what} panic"),
        }
    }
}

struct Script {
    connects: VecDeque<Plan>,
    connect_default: Plan,
    checks: VecDeque<Plan>,
    check_default: Plan,
    failing_checks: HashSet<u64>,
    broken: HashSet<u64>,
    shared_broken: HashSet<u64>,
    close_delay: Duration,
}

struct State {
    script: Mutex<Script>,
    /// Per connection id, how many times `close` was called with it.
    closed_ids: Mutex<HashMap<u64, u32>>,
    next_id: AtomicU64,
    connects: AtomicUsize,
    connected: AtomicUsize,
    connect_failures: AtomicUsize,
    checks: AtomicUsize,
    checks_cancelled: AtomicUsize,
    closes_started: AtomicUsize,
    closes: AtomicUsize,
    live: AtomicUsize,
    is_broken_calls: AtomicUsize,
    is_broken_shared_calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    max_open: AtomicUsize,
    limit: AtomicUsize,
    limit_breaches: AtomicUsize,
    events: Notify,
    tallies: Vec<Arc<Tally>>,
}

/// Connections open across the mocks counted in it: connects in flight plus connections made
/// and not yet handed to `close` (or dropped), and the most there ever were.
#[derive(Debug, Default)]
pub struct Tally {
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Tally {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Open now.
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    /// The most ever open at once.
    pub fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

/// One connection (or connect) counted in the tallies of its mock until dropped.
#[derive(Debug)]
pub struct Counted(Vec<Arc<Tally>>);

impl Counted {
    fn new(tallies: &[Arc<Tally>]) -> Self {
        for tally in tallies {
            let open = tally.open.fetch_add(1, SeqCst) + 1;
            tally.peak.fetch_max(open, SeqCst);
        }
        Counted(tallies.to_vec())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        for tally in &self.0 {
            tally.open.fetch_sub(1, SeqCst);
        }
    }
}

/// The scripted manager; clones share one state.
#[derive(Clone)]
pub struct Mock(Arc<State>);

/// A mock connection. Counted alive from its connect until it is dropped.
#[derive(Debug)]
pub struct MockConn {
    pub id: u64,
    /// Set it to have `is_broken` report this connection broken on return.
    pub broken: bool,
    _alive: Alive,
    /// In its mock's tallies until handed to `close` or dropped.
    counted: Option<Counted>,
}

struct Alive(Arc<State>);

impl fmt::Debug for Alive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Alive")
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, SeqCst);
    }
}

/// Counts a check as cancelled if dropped before it is disarmed.
struct Checking<'a> {
    state: &'a State,
    done: bool,
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.state.checks_cancelled.fetch_add(1, SeqCst);
        }
    }
}

/// Counts a connect in flight until dropped: on success, failure, timeout or panic.
struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
        self.0.events.notify_waiters();
    }
}

impl Default for Mock {
    fn default() -> Self {
        Mock::new()
    }
}

impl Mock {
    pub fn new() -> Self {
        Mock::counted_in(&[])
    }

    /// A mock whose connections are counted in `tallies` (see [`Tally`]).
    pub fn counted_in(tallies: &[Arc<Tally>]) -> Self {
        Mock(Arc::new(State {
            script: Mutex::new(Script {
                connects: VecDeque::new(),
                connect_default: Plan::ok(),
                checks: VecDeque::new(),
                check_default: Plan::ok(),
                failing_checks: HashSet::new(),
                broken: HashSet::new(),
                shared_broken: HashSet::new(),
                close_delay: Duration::ZERO,
            }),
            closed_ids: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            connects: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            connect_failures: AtomicUsize::new(0),
            checks: AtomicUsize::new(0),
            checks_cancelled: AtomicUsize::new(0),
            closes_started: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            is_broken_calls: AtomicUsize::new(0),
            is_broken_shared_calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            limit: AtomicUsize::new(usize::MAX),
            limit_breaches: AtomicUsize::new(0),
            events: Notify::new(),
            tallies: tallies.to_vec(),
        }))
    }

    /// A mock that records a breach whenever a connect starts while `limit` connections are
    /// alive or being made.
    pub fn with_limit(limit: usize) -> Self {
        let mock = Mock::new();
        mock.0.limit.store(limit, SeqCst);
        mock
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.0.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- scripting ----

    /// The plan of every connect not scripted by [`Mock::push_connect`].
    pub fn set_connect(&self, plan: Plan) {
        self.script().connect_default = plan;
    }

    /// The plan of the next connect (queued after earlier pushes).
    pub fn push_connect(&self, plan: Plan) {
        self.script().connects.push_back(plan);
    }

    /// The plan of every check not scripted by [`Mock::push_check`].
    pub fn set_check(&self, plan: Plan) {
        self.script().check_default = plan;
    }

    /// The plan of the next check (queued after earlier pushes).
    pub fn push_check(&self, plan: Plan) {
        self.script().checks.push_back(plan);
    }

    /// Every check of connection `id` fails from now on.
    pub fn fail_checks_of(&self, id: u64) {
        self.script().failing_checks.insert(id);
    }

    /// `is_broken` reports connection `id` broken from now on.
    pub fn set_broken(&self, id: u64) {
        self.script().broken.insert(id);
    }

    /// `is_broken_shared` reports connection `id` broken from now on (its leases still use it).
    pub fn set_shared_broken(&self, id: u64) {
        self.script().shared_broken.insert(id);
    }

    /// Each close takes this long (on the tokio clock) before the connection is dropped.
    pub fn set_close_delay(&self, delay: Duration) {
        self.script().close_delay = delay;
    }

    // ---- counters ----

    /// Connects started.
    pub fn connects(&self) -> usize {
        self.0.connects.load(SeqCst)
    }

    /// Connects that succeeded.
    pub fn connected(&self) -> usize {
        self.0.connected.load(SeqCst)
    }

    /// Connects that failed (not counting hangs and panics).
    pub fn connect_failures(&self) -> usize {
        self.0.connect_failures.load(SeqCst)
    }

    /// Checks started.
    pub fn checks(&self) -> usize {
        self.0.checks.load(SeqCst)
    }

    /// Checks whose future was dropped before it finished.
    pub fn checks_cancelled(&self) -> usize {
        self.0.checks_cancelled.load(SeqCst)
    }

    /// Closes started.
    pub fn closes_started(&self) -> usize {
        self.0.closes_started.load(SeqCst)
    }

    /// Closes finished.
    pub fn closes(&self) -> usize {
        self.0.closes.load(SeqCst)
    }

    /// How many times `close` was called with connection `id`.
    pub fn closes_of(&self, id: u64) -> u32 {
        let closed = self
            .0
            .closed_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        closed.get(&id).copied().unwrap_or(0)
    }

    /// Calls of `is_broken` (through `&mut`, with the connection alone).
    pub fn is_broken_calls(&self) -> usize {
        self.0.is_broken_calls.load(SeqCst)
    }

    /// Calls of `is_broken_shared` (through `&`, while leases may use the connection).
    pub fn is_broken_shared_calls(&self) -> usize {
        self.0.is_broken_shared_calls.load(SeqCst)
    }

    /// Connections made and not yet dropped (wherever they are).
    pub fn live(&self) -> usize {
        self.0.live.load(SeqCst)
    }

    /// Connects in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(SeqCst)
    }

    /// The most connects ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.0.max_in_flight.load(SeqCst)
    }

    /// The most connections alive plus connects in flight ever seen when a connect started.
    pub fn max_open(&self) -> usize {
        self.0.max_open.load(SeqCst)
    }

    /// Connects that started above the limit given to [`Mock::with_limit`].
    pub fn limit_breaches(&self) -> usize {
        self.0.limit_breaches.load(SeqCst)
    }

    /// Asserts every connection made was closed exactly once by the pool.
    pub fn assert_each_closed_once(&self) {
        let made = self.0.next_id.load(SeqCst);
        let closed = self
            .0
            .closed_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for id in 0..made {
            assert_eq!(
                closed.get(&id).copied().unwrap_or(0),
                1,
                "connection {id} must be closed exactly once"
            );
        }
        assert_eq!(closed.len() as u64, made, "closes of unknown connections");
    }

    /// Waits, on mock events and a short tokio-clock tick, until `done` holds; panics after
    /// 10 s of tokio time (paused or not) so a test never hangs.
    pub async fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let waiting = async {
            loop {
                let event = self.0.events.notified();
                if done() {
                    return;
                }
                // An event, or a tick: some conditions (pool counters) move without one.
                let _ = tokio::time::timeout(Duration::from_millis(1), event).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .is_err()
        {
            panic!("timed out waiting until {what}");
        }
    }

    /// Waits until `n` closes have finished.
    pub async fn until_closes(&self, n: usize) {
        self.until(&format!("{n} closes finished"), || self.closes() >= n)
            .await;
    }
}

impl Manager for Mock {
    type Connection = MockConn;
    type Error = MockError;

    fn connect(&self) -> impl Future<Output = Result<MockConn, MockError>> + Send {
        let state = &self.0;
        async move {
            state.connects.fetch_add(1, SeqCst);
            let counted = Counted::new(&state.tallies);
            let in_flight = state.in_flight.fetch_add(1, SeqCst) + 1;
            let flight = InFlight(state);
            state.max_in_flight.fetch_max(in_flight, SeqCst);
            let open = state.live.load(SeqCst) + in_flight;
            state.max_open.fetch_max(open, SeqCst);
            if open > state.limit.load(SeqCst) {
                state.limit_breaches.fetch_add(1, SeqCst);
            }
            let plan = {
                let mut script = self.script();
                match script.connects.pop_front() {
                    Some(plan) => plan,
                    None => script.connect_default.clone(),
                }
            };
            let result = plan.run("connect").await;
            let result = match result {
                Ok(()) => {
                    let id = state.next_id.fetch_add(1, SeqCst);
                    // Alive before the connect leaves flight: the count never dips between.
                    state.live.fetch_add(1, SeqCst);
                    state.connected.fetch_add(1, SeqCst);
                    Ok(MockConn {
                        id,
                        broken: false,
                        _alive: Alive(Arc::clone(state)),
                        counted: Some(counted),
                    })
                }
                Err(error) => {
                    state.connect_failures.fetch_add(1, SeqCst);
                    Err(error)
                }
            };
            drop(flight);
            result
        }
    }

    fn check(&self, conn: &mut MockConn) -> impl Future<Output = Result<(), MockError>> + Send {
        let id = conn.id;
        async move {
            self.0.checks.fetch_add(1, SeqCst);
            let (plan, failing) = {
                let mut script = self.script();
                let plan = match script.checks.pop_front() {
                    Some(plan) => plan,
                    None => script.check_default.clone(),
                };
                (plan, script.failing_checks.contains(&id))
            };
            let mut checking = Checking {
                state: &self.0,
                done: false,
            };
            let ran = plan.run("check").await;
            checking.done = true;
            ran?;
            if failing {
                return Err(MockError(format!("connection {id} failed its check")));
            }
            Ok(())
        }
    }

    fn is_broken(&self, conn: &mut MockConn) -> bool {
        self.0.is_broken_calls.fetch_add(1, SeqCst);
        conn.broken || self.script().broken.contains(&conn.id)
    }

    fn is_broken_shared(&self, conn: &MockConn) -> bool {
        self.0.is_broken_shared_calls.fetch_add(1, SeqCst);
        self.script().shared_broken.contains(&conn.id)
    }

    async fn close(&self, mut conn: MockConn) {
        drop(conn.counted.take());
        self.0.closes_started.fetch_add(1, SeqCst);
        *self
            .0
            .closed_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(conn.id)
            .or_insert(0) += 1;
        let delay = self.script().close_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        drop(conn);
        self.0.closes.fetch_add(1, SeqCst);
        self.0.events.notify_waiters();
    }
}

/// Joins `tasks` (each must end without a panic), then checks that no lease, no connection in
/// use and no caller in line is left; the pool's status then.
pub async fn all_ended(
    pool: &pool::Pool<Mock>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> pool::Status {
    for task in tasks {
        task.await.expect("every task ends without a panic");
    }
    let status = pool.status();
    assert_eq!(
        (status.leases, status.in_use, status.waiting),
        (0, 0, 0),
        "{status:?}"
    );
    status
}

/// Waits until `n` callers are in line (bounded: panics after 1000 yields).
pub async fn until_waiting(pool: &pool::Pool<Mock>, n: usize) {
    for _ in 0..1000 {
        if pool.status().waiting == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("expected {n} waiters, have {}", pool.status().waiting);
}

/// A pool for the lease tests: `max_size` connections of `max_streams` leases, a 10 s wait;
/// the builder, for a test to add its own settings.
pub fn lease_builder(mock: &Mock, max_size: usize, max_streams: usize) -> pool::Builder<Mock> {
    pool::Pool::builder(mock.clone())
        .max_size(max_size)
        .max_streams(max_streams)
        .wait_timeout(Duration::from_secs(10))
}

/// A small deterministic generator (an LCG): a test's schedule is "random" but every run is
/// the same.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number, below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}
