//! A uid-multiplexed JSON-over-TCP transport (work in progress).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
