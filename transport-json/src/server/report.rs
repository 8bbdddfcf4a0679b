//! The `metrics` feature: what the server reports through the `metrics` facade (the table is
//! in the [module documentation](super)). Without the feature every item here is empty and
//! costs nothing.
//!
//! The handles are registered once, when the [`Server`](super::Server) is made, so a
//! connection's events cost an atomic add each on the recorder's own counter, and its
//! answers one add per write, not one per answer.

#[cfg(feature = "metrics")]
use std::sync::Arc;

use crate::codec::CodecError;
use crate::conn::Endpoint;

/// Connections accepted (counter).
#[cfg(feature = "metrics")]
pub(crate) const ACCEPTED: &str = "json_server.connections.accepted";
/// Connections open (gauge).
#[cfg(feature = "metrics")]
pub(crate) const OPEN: &str = "json_server.connections";
/// Responses made, `Err` ones included (counter).
#[cfg(feature = "metrics")]
pub(crate) const ANSWERED: &str = "json_server.requests.answered";
/// Input that is not a request frame (counter).
#[cfg(feature = "metrics")]
pub(crate) const DECODE_ERRORS: &str = "json_server.decode_errors";

/// The handles of one server, shared by its connections.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    #[cfg(feature = "metrics")]
    on: Arc<On>,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct On {
    accepted: metrics::Counter,
    open: metrics::Gauge,
    answered: metrics::Counter,
    decode_errors: metrics::Counter,
}

impl Report {
    /// Registers the server's metrics with the recorder in force, labelled
    /// `server = <local>`.
    pub(crate) fn new(_local: &Endpoint) -> Self {
        #[cfg(feature = "metrics")]
        {
            let labels = || vec![metrics::Label::new("server", _local.to_string())];
            Report {
                on: Arc::new(On {
                    accepted: metrics::counter!(ACCEPTED, labels()),
                    open: metrics::gauge!(OPEN, labels()),
                    answered: metrics::counter!(ANSWERED, labels()),
                    decode_errors: metrics::counter!(DECODE_ERRORS, labels()),
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Report {}
    }

    /// A client was accepted.
    #[inline]
    pub(crate) fn accepted(&self) {
        #[cfg(feature = "metrics")]
        self.on.accepted.increment(1);
    }

    /// A connection is served from now on.
    #[inline]
    pub(crate) fn opened(&self) {
        #[cfg(feature = "metrics")]
        self.on.open.increment(1.0);
    }

    /// A connection is closed.
    #[inline]
    pub(crate) fn closed(&self) {
        #[cfg(feature = "metrics")]
        self.on.open.decrement(1.0);
    }
}

/// What one connection reports. Its answers made since its last write are counted into the
/// server's counter before each write, so one write costs one add however many answers it
/// carries, and an answer is counted before the client can read it.
#[derive(Debug)]
pub(crate) struct ConnectionReport {
    #[cfg(feature = "metrics")]
    report: Report,
    #[cfg(feature = "metrics")]
    pending: u64,
}

impl ConnectionReport {
    pub(crate) fn new(_report: &Report) -> Self {
        ConnectionReport {
            #[cfg(feature = "metrics")]
            report: _report.clone(),
            #[cfg(feature = "metrics")]
            pending: 0,
        }
    }

    /// One more answer is in the output.
    #[inline]
    pub(crate) fn answered(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.pending += 1;
        }
    }

    /// The output is about to be written: count the answers it holds.
    #[inline]
    pub(crate) fn before_write(&mut self) {
        #[cfg(feature = "metrics")]
        if self.pending > 0 {
            self.report.on.answered.increment(self.pending);
            self.pending = 0;
        }
    }

    /// The input failed to decode: malformed JSON, a value that is not an object, or a
    /// frame too long. A client that closed inside a frame, and a failed read, are not input
    /// errors and are not counted.
    #[inline]
    pub(crate) fn decode_failed(&self, _error: &CodecError) {
        #[cfg(feature = "metrics")]
        if !matches!(_error, CodecError::Truncated { .. } | CodecError::Io(_)) {
            self.report.on.decode_errors.increment(1);
        }
    }
}
