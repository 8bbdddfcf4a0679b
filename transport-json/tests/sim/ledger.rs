//! The ledger: every request a client task sent and how it ended, with the checks that every
//! request ended exactly once, with a right answer or a typed error.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool::{PoolError, TimeoutKind};
use transport_json::{Error, Resp};

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The right response: its `Uid` and the echoed `Val`.
    Answered,
    /// A typed error of an expected kind (the text names it).
    Failed(String),
    /// A response or an error that must never happen (a wrong answer, an unexpected kind).
    Wrong(String),
    /// No end within the hang guard.
    Hung,
}

/// One request's line in the ledger; times are the simulation's.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request started (before its lease).
    pub start: Duration,
    /// When it ended.
    pub end: Duration,
    /// How.
    pub outcome: Outcome,
}

/// Every request's end, keyed by `Uid`, and every `Uid` recorded twice.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The requests that ended.
    pub entries: HashMap<String, Entry>,
    /// `Uid`s that ended more than once.
    pub twice: Vec<String>,
}

/// The ledger shared by the client tasks and the driver.
pub type SharedLedger = Arc<Mutex<Ledger>>;

impl Ledger {
    /// Records the end of the request `uid`.
    pub fn record(&mut self, uid: String, entry: Entry) {
        match self.entries.entry(uid) {
            std::collections::hash_map::Entry::Occupied(seen) => {
                self.twice.push(seen.key().clone())
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(entry);
            }
        }
    }

    /// How many requests ended each way, for the summary line.
    pub fn tally(&self) -> BTreeMap<String, usize> {
        let mut tally = BTreeMap::new();
        for entry in self.entries.values() {
            let key = match &entry.outcome {
                Outcome::Answered => "answered".to_owned(),
                Outcome::Failed(kind) => kind.clone(),
                Outcome::Wrong(_) => "WRONG".to_owned(),
                Outcome::Hung => "HUNG".to_owned(),
            };
            *tally.entry(key).or_default() += 1;
        }
        tally
    }

    /// Every violation of "each request ends exactly once, right or with a typed error", and
    /// of "the server ran each request at most once, and every answered one": empty when
    /// all hold. `sent` are the `Uid`s the tasks sent.
    pub fn violations(&self, sent: &[String], served: &HashMap<String, u32>) -> String {
        let mut out = String::new();
        for uid in &self.twice {
            let _ = writeln!(out, "uid {uid} ended twice");
        }
        for uid in sent {
            match self.entries.get(uid) {
                None => {
                    let _ = writeln!(out, "uid {uid} never ended (lost)");
                }
                Some(entry) => match &entry.outcome {
                    Outcome::Wrong(what) => {
                        let _ = writeln!(out, "uid {uid}: {what}");
                    }
                    Outcome::Hung => {
                        let _ = writeln!(out, "uid {uid} hung from {:?}", entry.start);
                    }
                    Outcome::Answered if served.get(uid).copied().unwrap_or(0) != 1 => {
                        let _ =
                            writeln!(out, "uid {uid} answered but served {:?}", served.get(uid));
                    }
                    _ => {}
                },
            }
        }
        if self.entries.len() != sent.len() {
            let _ = writeln!(
                out,
                "{} requests ended but {} were sent",
                self.entries.len(),
                sent.len()
            );
        }
        // The pool's pings (`JsonManager::check`) use made-up numeric `Uid`s, one series per
        // connection: only the tasks' requests are counted.
        for uid in sent {
            let times = served.get(uid).copied().unwrap_or(0);
            if times > 1 {
                let _ = writeln!(out, "the server ran uid {uid} {times} times");
            }
        }
        out
    }
}

/// The outcome of a response to the request `uid` with value `val`.
pub fn of_response(uid: &str, val: &str, resp: &Resp) -> Outcome {
    if resp.uid != uid {
        return Outcome::Wrong(format!("answered with uid {:?}", resp.uid));
    }
    if resp.val != format!("server: hello, {val}") || resp.err.is_some() {
        return Outcome::Wrong(format!("wrong answer {resp:?}"));
    }
    Outcome::Answered
}

/// The outcome of a request that failed with `err`: the kinds a faulty network may cause
/// are typed errors; a `Uid` already in flight or a server rejection never should be.
pub fn of_request_error(err: &Error) -> Outcome {
    match err {
        Error::Timeout(_) => Outcome::Failed("request timeout".into()),
        // The simulated TCP delivers bytes in order or not at all: framing is never lost.
        Error::Closed(cause @ transport_json::CloseCause::Protocol(_)) => {
            Outcome::Wrong(format!("framing lost: {cause:?}"))
        }
        Error::Closed(cause) => Outcome::Failed(format!("closed: {}", cause_kind(cause))),
        other => Outcome::Wrong(format!("unexpected error: {other}")),
    }
}

/// The outcome of a lease that failed with `err`.
pub fn of_lease_error(err: &PoolError<Error>) -> Outcome {
    match err {
        PoolError::Timeout(TimeoutKind::Wait { .. }) => Outcome::Failed("lease: wait".into()),
        PoolError::Timeout(TimeoutKind::Connect) => Outcome::Failed("lease: connect".into()),
        PoolError::Timeout(TimeoutKind::Check) => Outcome::Failed("lease: check".into()),
        PoolError::Connect(_) => Outcome::Failed("lease: connect failed".into()),
        other => Outcome::Wrong(format!("unexpected lease error: {other}")),
    }
}

fn cause_kind(cause: &transport_json::CloseCause) -> &'static str {
    use transport_json::CloseCause;
    match cause {
        CloseCause::ClosedByPeer => "by peer",
        CloseCause::Protocol(_) => "protocol",
        CloseCause::Io(_) => "io",
        CloseCause::Shutdown => "shutdown",
        CloseCause::Unresponsive(_) => "unresponsive",
        CloseCause::Rejected(_) => "rejected",
        _ => "other",
    }
}
