//! The pool's lock, swappable for a model checker: `std::sync`'s mutex, but `loom`'s (every
//! lock and unlock a point where the checker may switch threads) in the crate's own tests built
//! with `--cfg loom` (`scripts/loom`): `loom` is a dev-dependency, working only in its model.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};
