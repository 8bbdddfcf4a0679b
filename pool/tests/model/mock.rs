//! The model test's manager: each connect does what the test scripted for it (succeed, fail,
//! or hang until the test releases it), and everything the pool asks of it is counted, so the
//! test knows exactly what the pool did.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pool::Manager;
use tokio::sync::oneshot;

/// The error the mock's connect and check fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockError(pub &'static str);

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for MockError {}

/// What a scripted connect does (an unscripted one succeeds at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Fail,
    /// Hangs until [`Mock::release`] ends it (or the pool's connect timeout drops it).
    Hang,
}

/// A mock connection: just its number, from 0 in connect order.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Plan>,
    /// Hanging connects, oldest first: send `true` to make one succeed, `false` to fail it.
    gates: Vec<oneshot::Sender<bool>>,
    /// Connections that report themselves broken (`is_broken` and `is_broken_shared`).
    dead: HashSet<u64>,
    /// Connections whose checks fail.
    failing_checks: HashSet<u64>,
    /// Per connection, how many times `close` was called with it.
    closes: HashMap<u64, u32>,
    started: u64,
    made: u64,
    failed: u64,
    /// Connect futures dropped before they ended (the pool's connect timeout).
    cancelled: u64,
    check_failures: u64,
}

/// What the mock has seen, read at once.
#[derive(Debug, Clone)]
pub struct Seen {
    pub made: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub in_flight: u64,
    pub check_failures: u64,
    pub closes: HashMap<u64, u32>,
    pub dead: HashSet<u64>,
}

impl Seen {
    /// Every close the pool made.
    pub fn total_closes(&self) -> u64 {
        self.closes.values().map(|&n| u64::from(n)).sum()
    }
}

/// The scripted manager; clones share one state.
#[derive(Clone, Default)]
pub struct Mock(Arc<Mutex<Inner>>);

/// Counts a connect future dropped before it ended.
struct Flight {
    mock: Mock,
    armed: bool,
}

impl Drop for Flight {
    fn drop(&mut self) {
        if self.armed {
            self.mock.inner().cancelled += 1;
        }
    }
}

impl Mock {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The plan of the next unscripted connect.
    pub fn push(&self, plan: Plan) {
        self.inner().script.push_back(plan);
    }

    /// Forgets the plans not yet used: later connects succeed.
    pub fn clear_script(&self) {
        self.inner().script.clear();
    }

    /// Connects hanging now.
    pub fn hanging(&self) -> usize {
        let mut inner = self.inner();
        inner.gates.retain(|gate| !gate.is_closed());
        inner.gates.len()
    }

    /// Ends the hanging connect `at` (oldest first): it succeeds or fails.
    pub fn release(&self, at: usize, ok: bool) {
        let mut inner = self.inner();
        inner.gates.retain(|gate| !gate.is_closed());
        if at < inner.gates.len() {
            let _ = inner.gates.remove(at).send(ok);
        }
    }

    /// Connection `id` reports itself broken from now on.
    pub fn kill(&self, id: u64) {
        self.inner().dead.insert(id);
    }

    /// Every check of connection `id` fails from now on.
    pub fn fail_checks_of(&self, id: u64) {
        self.inner().failing_checks.insert(id);
    }

    pub fn seen(&self) -> Seen {
        let inner = self.inner();
        Seen {
            made: inner.made,
            failed: inner.failed,
            cancelled: inner.cancelled,
            in_flight: inner.started - inner.made - inner.failed - inner.cancelled,
            check_failures: inner.check_failures,
            closes: inner.closes.clone(),
            dead: inner.dead.clone(),
        }
    }
}

impl Manager for Mock {
    type Connection = Conn;
    type Error = MockError;

    fn connect(&self) -> impl Future<Output = Result<Conn, MockError>> + Send {
        let mock = self.clone();
        async move {
            let plan = {
                let mut inner = mock.inner();
                inner.started += 1;
                inner.script.pop_front()
            };
            let mut flight = Flight {
                mock: mock.clone(),
                armed: true,
            };
            let ok = match plan {
                None => true,
                Some(Plan::Fail) => false,
                Some(Plan::Hang) => {
                    let (gate, released) = oneshot::channel();
                    mock.inner().gates.push(gate);
                    released.await.unwrap_or(false)
                }
            };
            flight.armed = false;
            let mut inner = mock.inner();
            if ok {
                let id = inner.made;
                inner.made += 1;
                Ok(Conn { id })
            } else {
                inner.failed += 1;
                Err(MockError("scripted connect failure"))
            }
        }
    }

    fn check(&self, conn: &mut Conn) -> impl Future<Output = Result<(), MockError>> + Send {
        let failing = {
            let mut inner = self.inner();
            let failing = inner.failing_checks.contains(&conn.id);
            inner.check_failures += u64::from(failing);
            failing
        };
        async move {
            if failing {
                Err(MockError("scripted check failure"))
            } else {
                Ok(())
            }
        }
    }

    fn is_broken(&self, conn: &mut Conn) -> bool {
        self.inner().dead.contains(&conn.id)
    }

    fn is_broken_shared(&self, conn: &Conn) -> bool {
        self.inner().dead.contains(&conn.id)
    }

    fn close(&self, conn: Conn) -> impl Future<Output = ()> + Send {
        *self.inner().closes.entry(conn.id).or_insert(0) += 1;
        std::future::ready(())
    }
}
