//! Runs any [`Manager`](crate::Manager) inside a `deadpool::managed::Pool` (work in progress).
