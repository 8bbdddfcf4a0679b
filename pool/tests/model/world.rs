//! The system under test and its reference model: one pool in a current-thread runtime with
//! paused time, and the ledger of what the test holds, what its callers got and what the mock
//! saw. After every step the ledger predicts the pool's sizes and counters exactly, and checks
//! the bounds the pool promises where its docs leave it a choice.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pool::{Lease, Pool, PoolError, Pooled, Status};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::mock::{Mock, MockError, Plan, Seen};

/// How long a caller waits in line.
pub const WAIT: Duration = Duration::from_secs(2);
/// How long one connect may take.
pub const CONNECT: Duration = Duration::from_secs(1);
/// The longest single time advance a step makes.
pub const MAX_ADVANCE: Duration = Duration::from_secs(2);
/// Yields that let every task run until nothing moves (no task needs more hops than this).
const QUIET: usize = 100;

/// The settings of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_size: usize,
    pub max_streams: usize,
    pub fail_fast: bool,
    pub lifetime: bool,
    pub idle_timeout: bool,
}

/// One step the test takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Get,
    TryGet,
    Lease,
    TryLease,
    /// Drops the held connection at this index (modulo how many are held).
    DropGet(usize),
    MarkGet(usize),
    DetachGet(usize),
    DropLease(usize),
    MarkLease(usize),
    /// The connection at this index (among those alive) reports itself broken from now on.
    Kill(usize),
    /// The connection at this index fails its checks from now on.
    FailChecks(usize),
    /// The next connect fails, or hangs until released.
    Script(Plan),
    /// Ends the hanging connect at this index: succeeds or fails.
    Release(usize, bool),
    /// Aborts the pending caller at this index.
    Abort(usize),
    /// Retains the idle connections whose id is not of this parity.
    Retain(u64),
    Resize(usize),
    Advance(Duration),
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Lease,
}

enum Out {
    Got(Pooled<Mock>),
    Leased(Lease<Mock>),
    Failed(PoolError<MockError>),
}

struct Caller {
    kind: Kind,
    may_wait: bool,
    /// Its place in line as far as the test knows: the step it arrived at, or the last step
    /// at which the pool may rightly have sent it back (a failed connect, a resize). Callers
    /// of one kind with equal epochs may be served in either order.
    epoch: u64,
    spawned: Instant,
    after_close: bool,
    task: JoinHandle<()>,
    rx: oneshot::Receiver<Out>,
}

struct HeldGet {
    guard: Pooled<Mock>,
    id: u64,
}

struct HeldLease {
    lease: Lease<Mock>,
    id: u64,
}

/// The pool, the mock, and the ledger.
pub struct World {
    pub settings: Settings,
    pool: Pool<Mock>,
    mock: Mock,
    max_size: usize,
    gets: Vec<HeldGet>,
    leases: Vec<HeldLease>,
    callers: Vec<Caller>,
    detached: HashSet<u64>,
    /// Connections killed or marked broken by the test: `status.broken` counts at most these.
    marked: HashSet<u64>,
    /// Connections that may have given their slot up while leased (marked or killed).
    unslotted: HashSet<u64>,
    /// Connections the pool let go of when its close timed out with leases held.
    orphaned: HashSet<u64>,
    timeouts: u64,
    step: u64,
    closed_at: Option<Instant>,
    /// How far above `max_size` slots may be after a shrink (only falls).
    cap: usize,
    history: Vec<String>,
}

/// Runs the runtime until every task has settled, without moving the clock.
async fn settle() {
    let before = Instant::now();
    for _ in 0..QUIET {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        Instant::now(),
        before,
        "settling must not move the paused clock"
    );
}

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

impl World {
    /// A pool with `settings`, built inside the runtime (its background task runs there).
    pub fn new(settings: Settings) -> World {
        let mock = Mock::default();
        let pool = Pool::builder(mock.clone())
            .max_size(settings.max_size)
            .max_streams(settings.max_streams)
            .wait_timeout(WAIT)
            .connect_timeout(CONNECT)
            .check_interval(Duration::from_millis(1500))
            .close_timeout(Duration::from_secs(3))
            .reap_interval(Duration::from_secs(1))
            .max_lifetime(settings.lifetime.then_some(Duration::from_secs(6)))
            .idle_timeout(settings.idle_timeout.then_some(Duration::from_secs(4)))
            .fail_fast(settings.fail_fast)
            // No pause between retries: a retry happens within the step, at the same instant.
            .connect_backoff(Duration::ZERO, Duration::ZERO)
            .build()
            .expect("valid settings");
        World {
            settings,
            pool,
            mock,
            max_size: settings.max_size,
            gets: Vec::new(),
            leases: Vec::new(),
            callers: Vec::new(),
            detached: HashSet::new(),
            marked: HashSet::new(),
            unslotted: HashSet::new(),
            orphaned: HashSet::new(),
            timeouts: 0,
            step: 0,
            closed_at: None,
            cap: settings.max_size,
            history: Vec::new(),
        }
    }

    /// Applies one step, lets every task settle, collects what callers got, and checks the
    /// pool against the ledger.
    pub async fn apply(&mut self, step: &Step) {
        self.step += 1;
        self.history.push(format!("{}: {step:?}", self.step));
        let failures_before = self.pool.status().counters.connect_failures;
        if let Step::Advance(by) = *step {
            // Fires every timer due by then; `settle` lets their tasks run.
            tokio::time::advance(by).await;
        } else {
            self.act(step);
        }
        settle().await;
        if let Some(at) = self.closed_at
            && Instant::now() >= at + Duration::from_secs(3)
            && self.orphaned.is_empty()
        {
            // `close` waited its `close_timeout` for the leases and let go of their
            // connections: each closes when its last lease ends.
            self.orphaned = self.leases.iter().map(|l| l.id).collect();
        }
        let status = self.pool.status();
        let reshuffled =
            status.counters.connect_failures != failures_before || matches!(step, Step::Resize(_));
        if reshuffled {
            // A failed connect gives its slot to the oldest caller in line, which may have
            // come after the caller whose connect failed (that one pauses, then waits at its
            // place); a shrink may send a caller back: who is first among the callers now
            // waiting is no longer known.
            for caller in &mut self.callers {
                caller.epoch = self.step;
            }
        }
        let served = self.collect();
        self.check(&status, &served);
    }

    fn spawn(&mut self, kind: Kind, may_wait: bool) {
        let pool = self.pool.clone();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let out = match (kind, may_wait) {
                (Kind::Get, true) => pool.get().await.map(Out::Got),
                (Kind::Get, false) => pool.try_get().await.map(Out::Got),
                (Kind::Lease, true) => pool.lease().await.map(Out::Leased),
                (Kind::Lease, false) => pool.try_lease().await.map(Out::Leased),
            };
            let _ = tx.send(out.unwrap_or_else(Out::Failed));
        });
        self.callers.push(Caller {
            kind,
            may_wait,
            epoch: self.step,
            spawned: Instant::now(),
            after_close: self.closed_at.is_some(),
            task,
            rx,
        });
    }

    /// Ids of the connections alive in the mock's eyes (made, neither closed nor detached).
    fn alive(&self, seen: &Seen) -> Vec<u64> {
        (0..seen.made)
            .filter(|id| !seen.closes.contains_key(id) && !self.detached.contains(id))
            .collect()
    }

    fn act(&mut self, step: &Step) {
        match *step {
            Step::Get => self.spawn(Kind::Get, true),
            Step::TryGet => self.spawn(Kind::Get, false),
            Step::Lease => self.spawn(Kind::Lease, true),
            Step::TryLease => self.spawn(Kind::Lease, false),
            Step::DropGet(i) => {
                if !self.gets.is_empty() {
                    self.gets.swap_remove(i % self.gets.len());
                }
            }
            Step::MarkGet(i) => {
                if !self.gets.is_empty() {
                    let at = i % self.gets.len();
                    let held = &mut self.gets[at];
                    Pooled::mark_broken(&mut held.guard);
                    self.marked.insert(held.id);
                }
            }
            Step::DetachGet(i) => {
                if !self.gets.is_empty() {
                    let held = self.gets.swap_remove(i % self.gets.len());
                    let conn = Pooled::detach(held.guard);
                    self.detached.insert(conn.id);
                }
            }
            Step::DropLease(i) => {
                if !self.leases.is_empty() {
                    self.leases.swap_remove(i % self.leases.len());
                }
            }
            Step::MarkLease(i) => {
                if !self.leases.is_empty() {
                    let at = i % self.leases.len();
                    let held = &mut self.leases[at];
                    Lease::mark_broken(&mut held.lease);
                    self.marked.insert(held.id);
                    self.unslotted.insert(held.id);
                }
            }
            Step::Kill(i) => {
                let alive = self.alive(&self.mock.seen());
                if !alive.is_empty() {
                    let id = alive[i % alive.len()];
                    self.mock.kill(id);
                    self.marked.insert(id);
                    self.unslotted.insert(id);
                }
            }
            Step::FailChecks(i) => {
                let alive = self.alive(&self.mock.seen());
                if !alive.is_empty() {
                    self.mock.fail_checks_of(alive[i % alive.len()]);
                }
            }
            Step::Script(plan) => self.mock.push(plan),
            Step::Release(i, ok) => {
                let hanging = self.mock.hanging();
                if hanging > 0 {
                    self.mock.release(i % hanging, ok);
                }
            }
            Step::Abort(i) => {
                if !self.callers.is_empty() {
                    let caller = self.callers.swap_remove(i % self.callers.len());
                    caller.task.abort();
                }
            }
            Step::Retain(parity) => self.retain(parity),
            Step::Resize(n) => self.resize(n),
            Step::Advance(_) => {}
            Step::Close => {
                if self.closed_at.is_none() {
                    self.closed_at = Some(Instant::now());
                }
                let pool = self.pool.clone();
                tokio::spawn(async move { pool.close().await });
            }
        }
    }

    /// `retain` visits exactly the idle connections, and removes those its predicate drops.
    fn retain(&mut self, parity: u64) {
        let expected = self.idle_ids(&self.mock.seen());
        let mut visited = Vec::new();
        let removed = self.pool.retain(|conn, _| {
            visited.push(conn.id);
            conn.id % 2 != parity
        });
        visited.sort_unstable();
        assert_eq!(
            visited, expected,
            "retain visits exactly the idle connections"
        );
        let dropped = visited.iter().filter(|id| *id % 2 == parity).count();
        assert_eq!(removed, dropped, "retain counts what it removed");
    }

    fn resize(&mut self, n: usize) {
        let before = self.pool.status();
        match self.pool.resize(n) {
            Err(error) => {
                assert_eq!(n, 0, "only 0 is refused: {error}");
                assert_eq!(error, pool::BuildError::ZeroMaxSize);
                assert_eq!(self.pool.status().max_size, before.max_size);
            }
            Ok(()) => {
                assert_ne!(n, 0, "resize(0) must be refused");
                if n < self.max_size || n < before.size + before.connecting {
                    // Connections leased now may be drained by the shrink (their slot goes),
                    // also when the size does not change but the pool is above it (connects
                    // that were in flight at an earlier shrink).
                    self.unslotted.extend(self.leases.iter().map(|l| l.id));
                }
                self.max_size = n;
                let now = self.pool.status();
                self.cap = n.max(now.size + now.connecting);
            }
        }
    }

    /// The idle connections by the ledger: alive, in the pool, and held by nobody.
    fn idle_ids(&self, seen: &Seen) -> Vec<u64> {
        let held: HashSet<u64> = self
            .gets
            .iter()
            .map(|g| g.id)
            .chain(self.leases.iter().map(|l| l.id))
            .chain(self.orphaned.iter().copied())
            .collect();
        self.alive(seen)
            .into_iter()
            .filter(|id| !held.contains(id))
            .collect()
    }

    /// Takes in what callers got this step; returns who was served, with their epoch.
    fn collect(&mut self) -> Vec<(Kind, u64)> {
        let now = Instant::now();
        let seen = self.mock.seen();
        let mut served = Vec::new();
        let mut at = 0;
        while at < self.callers.len() {
            let out = match self.callers[at].rx.try_recv() {
                Ok(out) => out,
                Err(oneshot::error::TryRecvError::Empty) => {
                    at += 1;
                    continue;
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    panic!("a caller's task ended without a result (a panic in the pool)")
                }
            };
            let caller = self.callers.swap_remove(at);
            match out {
                Out::Got(guard) => {
                    let id = guard.id;
                    self.check_handed_out(id, Pooled::info(&guard).expires(), now, &seen);
                    assert!(!caller.after_close, "a closed pool handed out a connection");
                    self.gets.push(HeldGet { guard, id });
                    served.push((Kind::Get, caller.epoch));
                }
                Out::Leased(lease) => {
                    let id = lease.id;
                    self.check_handed_out(id, Lease::info(&lease).expires(), now, &seen);
                    assert!(!caller.after_close, "a closed pool handed out a lease");
                    self.leases.push(HeldLease { lease, id });
                    served.push((Kind::Lease, caller.epoch));
                }
                Out::Failed(error) => self.check_error(&caller, &error),
            }
        }
        served
    }

    fn check_handed_out(&self, id: u64, expires: Option<Instant>, now: Instant, seen: &Seen) {
        assert!(
            !seen.dead.contains(&id),
            "connection {id} handed out broken"
        );
        assert!(
            !seen.closes.contains_key(&id),
            "connection {id} handed out closed"
        );
        assert!(
            !self.detached.contains(&id),
            "connection {id} handed out detached"
        );
        if let Some(expires) = expires {
            assert!(
                now < expires,
                "connection {id} handed out past its max_lifetime"
            );
        }
    }

    fn check_error(&mut self, caller: &Caller, error: &PoolError<MockError>) {
        match error {
            PoolError::Timeout(_) => self.timeouts += 1,
            PoolError::Closed => {
                assert!(self.closed_at.is_some(), "Closed from an open pool");
            }
            PoolError::Connect(_) => assert!(
                self.settings.fail_fast || !caller.may_wait,
                "a caller that may wait retries a failed connect"
            ),
            other => panic!("unexpected error {other:?}"),
        }
        if caller.after_close {
            assert!(
                matches!(error, PoolError::Closed),
                "a caller of a closed pool gets Closed, not {error:?}"
            );
        }
    }

    /// The pool against the ledger, after the step settled.
    fn check(&mut self, status: &Status, served: &[(Kind, u64)]) {
        let seen = self.mock.seen();
        let now = Instant::now();
        let context = || format!("{status:?}\nsteps:\n{}", self.history.join("\n"));

        // Leases: those held, on connections the pool still owns; never above max_streams.
        let mut per_conn: BTreeMap<u64, usize> = BTreeMap::new();
        for lease in &self.leases {
            *per_conn.entry(lease.id).or_default() += 1;
        }
        for (id, n) in &per_conn {
            assert!(
                *n <= self.settings.max_streams,
                "connection {id} carries {n} leases: {}",
                context()
            );
        }
        let owned_leases: usize = per_conn
            .iter()
            .filter(|(id, _)| !self.orphaned.contains(id))
            .map(|(_, n)| n)
            .sum();
        let leased_conns = per_conn
            .keys()
            .filter(|id| !self.orphaned.contains(id))
            .count();
        assert_eq!(status.leases, owned_leases, "leases: {}", context());

        // Sizes: every connection made is closed, detached, let go of at close, or the pool's.
        let closed = seen.closes.len();
        let orphans_open = self
            .orphaned
            .iter()
            .filter(|id| !seen.closes.contains_key(id))
            .count();
        let size = seen.made as usize - closed - self.detached.len() - orphans_open;
        let in_use = self.gets.len() + leased_conns;
        // A leased connection found broken or shrunk away gave its slot up: `discarded`, not
        // in `size` or `in_use`.
        assert_eq!(status.size + status.discarded, size, "size: {}", context());
        assert_eq!(
            status.in_use + status.discarded,
            in_use,
            "in_use: {}",
            context()
        );
        assert_eq!(status.idle, size - in_use, "idle: {}", context());
        assert_eq!(
            status.connecting as u64,
            seen.in_flight,
            "connecting: {}",
            context()
        );
        assert_eq!(status.max_size, self.max_size, "max_size: {}", context());
        assert_eq!(self.pool.is_closed(), self.closed_at.is_some());

        // Counters.
        let counters = &status.counters;
        assert_eq!(counters.created, seen.made, "created: {}", context());
        assert_eq!(
            counters.closed,
            seen.total_closes(),
            "closed: {}",
            context()
        );
        assert_eq!(
            counters.connect_failures,
            seen.failed + seen.cancelled,
            "connect_failures: {}",
            context()
        );
        assert_eq!(counters.timeouts, self.timeouts, "timeouts: {}", context());
        assert_eq!(
            counters.check_failures,
            seen.check_failures,
            "check_failures: {}",
            context()
        );
        assert!(
            counters.broken <= self.marked.len() as u64,
            "broken counts only what broke: {}",
            context()
        );

        // Closes: each connection at most once, never one in use or detached.
        for (id, n) in &seen.closes {
            assert_eq!(*n, 1, "connection {id} closed {n} times: {}", context());
            assert!(!self.detached.contains(id), "detached {id} closed");
        }
        for id in self
            .gets
            .iter()
            .map(|g| g.id)
            .chain(per_conn.keys().copied())
        {
            assert!(
                !seen.closes.contains_key(&id),
                "connection {id} closed while in use: {}",
                context()
            );
        }

        // Waiting: every pending caller is in line or waits for a connect of its own.
        let pending = self.callers.len();
        assert!(status.waiting <= pending, "waiting: {}", context());
        assert!(
            status.waiting as u64 + seen.in_flight >= pending as u64,
            "a pending caller is neither in line nor connecting: {}",
            context()
        );
        if status.waiting > 0 {
            assert_eq!(
                status.idle,
                0,
                "a caller waits beside an idle connection: {}",
                context()
            );
        }
        let unslotted = per_conn
            .keys()
            .filter(|id| self.unslotted.contains(id) && !self.orphaned.contains(id))
            .count();
        // Only a leased connection marked or found broken, or leased through a shrink, may
        // have given its slot up; `size` counts exactly the connections holding one.
        assert!(
            status.discarded <= unslotted,
            "discarded: {} of {unslotted} that may be: {}",
            status.discarded,
            context()
        );
        let slotted = status.size + status.connecting;
        if status.waiting > 0 && self.callers.iter().all(|c| c.kind == Kind::Get) {
            assert!(
                slotted >= self.max_size,
                "a get caller waits while there is room: {}",
                context()
            );
        }
        // Slots: within max_size, or within what a shrink left, which only falls.
        assert!(slotted <= self.cap, "slots above max_size: {}", context());
        self.cap = self.max_size.max(slotted);
        if slotted > self.max_size {
            assert_eq!(
                status.idle,
                0,
                "idle connections kept above max_size: {}",
                context()
            );
        }

        // Fairness: with everyone pending in line, no caller was served while a caller of
        // its kind that came before it still waits.
        if status.waiting == pending {
            for (kind, epoch) in served {
                for waiter in self.callers.iter().filter(|c| c.kind == *kind) {
                    assert!(
                        waiter.epoch >= *epoch,
                        "a {kind:?} caller of step {epoch} was served before one of step {}: {}",
                        waiter.epoch,
                        context()
                    );
                }
            }
        }

        // Liveness: nobody waits past its wait and connect timeouts.
        for caller in &self.callers {
            assert!(
                now.duration_since(caller.spawned) <= WAIT + CONNECT + MAX_ADVANCE,
                "a caller hangs: {}",
                context()
            );
        }
    }

    /// Ends the case: everything dropped and released, no slot leaked (the pool still opens
    /// `max_size` connections at once), then closed: every connection closed exactly once.
    pub async fn finish(mut self) {
        self.gets.clear();
        self.leases.clear();
        for caller in self.callers.drain(..) {
            caller.task.abort();
        }
        self.mock.clear_script();
        while self.mock.hanging() > 0 {
            self.mock.release(0, false);
        }
        settle().await;
        let context = format!("steps:\n{}", self.history.join("\n"));
        if self.closed_at.is_none() {
            let status = self.pool.status();
            assert_eq!(
                (
                    status.leases,
                    status.in_use,
                    status.waiting,
                    status.connecting
                ),
                (0, 0, 0, 0),
                "all given back: {status:?}\n{context}"
            );
            let mut held = Vec::new();
            for _ in 0..self.max_size {
                let got = self.pool.try_get().await;
                held.push(got.unwrap_or_else(|e| panic!("a slot leaked: {e}\n{context}")));
            }
            assert_eq!(self.pool.status().in_use, self.max_size);
            drop(held);
        }
        self.pool.close().await;
        settle().await;
        let seen = self.mock.seen();
        for id in 0..seen.made {
            let closes = seen.closes.get(&id).copied().unwrap_or(0);
            let expected = u32::from(!self.detached.contains(&id));
            assert_eq!(closes, expected, "connection {id} closes\n{context}");
        }
        let status = self.pool.status();
        assert_eq!((status.size, status.idle), (0, 0), "{status:?}\n{context}");
    }
}
