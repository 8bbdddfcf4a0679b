//! The pool's lock, swappable for a model checker: `std::sync`'s mutex in every build but the
//! crate's own tests built with `--cfg loom` (`scripts/loom`), where it is `loom`'s, whose
//! every lock and unlock is a point where the checker may switch threads. (Only the tests:
//! `loom` is a dev-dependency, and its mutex works only inside `loom::model`.)

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};
