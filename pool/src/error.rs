//! [`PoolError`]: why a checkout failed.

use std::fmt;

/// Which timeout fired.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The wait in line for a connection (`wait_timeout`) ran out.
    Wait {
        /// The text of the last connect failure, when connects were failing as the wait ran
        /// out: a wrong password must not look like a plain timeout.
        last_connect_error: Option<String>,
    },
    /// [`Manager::connect`](crate::Manager::connect) took longer than `connect_timeout`.
    Connect,
    /// [`Manager::check`](crate::Manager::check) took longer than `check_timeout`.
    Check,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeoutKind::Wait {
                last_connect_error: Some(e),
            } => write!(f, "waiting for a connection; the last connect failed: {e}"),
            TimeoutKind::Wait { .. } => f.write_str("waiting for a connection"),
            TimeoutKind::Connect => f.write_str("connecting"),
            TimeoutKind::Check => f.write_str("checking a connection"),
        }
    }
}

/// Why [`Pool::get`](crate::Pool::get) returned no connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError<E> {
    /// A timeout fired; the kind says which.
    #[error("pool timed out {0}")]
    Timeout(TimeoutKind),
    /// [`Manager::connect`](crate::Manager::connect) failed for this caller.
    #[error("could not connect")]
    Connect(#[source] E),
    /// The pool was closed.
    #[error("the pool is closed")]
    Closed,
    /// [`Manager::connect`](crate::Manager::connect) panicked (or its task was aborted by a
    /// runtime shutdown). The pool freed its slot.
    #[error("the manager's connect panicked")]
    ConnectPanicked,
}

impl<E> PoolError<E> {
    /// True for [`PoolError::Timeout`] of any kind.
    pub fn is_timeout(&self) -> bool {
        matches!(self, PoolError::Timeout(_))
    }
}
