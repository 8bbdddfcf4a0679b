//! How a connection stops other than at the client's end: why reading ended, the timeouts,
//! the eviction at the connection cap, and bad input.

use std::io;
use std::task;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::requests::rejection;
use super::{Connection, Took};
use crate::codec::CodecError;
use crate::conn::Endpoint;
use crate::server::deadline::{Expired, Now, Waiting};
use crate::server::handler::Handler;
use crate::wire::Resp;

/// Why the connection stopped reading.
#[derive(Debug, Clone, Copy)]
pub(super) enum ReadEnd {
    /// The client closed its side.
    Eof,
    /// The server is shutting down.
    Shutdown,
    /// A write failed, so answers can no longer be delivered.
    WriteFailed,
    /// Bad input or a failed read: framing is lost.
    Failed,
    /// A timeout fired (see [`Deadlines`](crate::server::deadline::Deadlines); the log says which).
    TimedOut,
    /// The server closed this idle connection to make room for a new one.
    Evicted,
}

impl<'h, H, F, S> Connection<'h, H, F, S>
where
    H: Handler,
    F: Future<Output = Resp>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Records whether the connection is idle, for the accept loop and the idle timeout, and
    /// checks the deadlines; the timer and an eviction wake the task. Returns true when the
    /// connection must stop (a timeout fired or it was evicted): go round the loop to close.
    pub(super) fn before_wait(&mut self, took: Took, task: &mut task::Context<'_>) -> bool {
        let mut now = Now::default();
        let idle = self.in_flight.is_empty() && self.output.is_empty();
        let evicted = if !idle {
            self.idle_since = None;
            !self.idle.busy()
        } else if self.idle_since.is_none() || self.started {
            // Idle from now on, or again after a request that came and went in this turn.
            let since = now.get();
            self.idle_since = Some(since);
            !self.idle.idle(since, task.waker())
        } else {
            self.idle.evicted()
        };
        self.started = false;
        // Once only: the marker goes on saying so.
        if evicted && self.end.is_none() {
            debug!(peer = %self.peer, "closing an idle connection to make room for a new one");
            self.end = Some(ReadEnd::Evicted);
            return true;
        }
        let waiting = Waiting {
            idle_since: self.idle_since,
            partial_frame: took == Took::NeedInput && !self.input.is_empty(),
            write_blocked: !self.output.is_empty(),
        };
        match self.deadlines.check(waiting, &mut now, task) {
            Some(expired) => {
                self.time_out(expired);
                true
            }
            None => false,
        }
    }

    /// Ends the connection for a timeout: an idle one closes, a frame left unfinished is
    /// answered with an `Err` first, and a client that does not read loses its answers.
    pub(super) fn time_out(&mut self, expired: Expired) {
        match expired {
            Expired::Idle(after) => {
                debug!(peer = %self.peer, ?after, "closing an idle connection");
            }
            Expired::Frame(after) => {
                warn!(peer = %self.peer, ?after, "request frame not finished in time; closing the connection");
                let why = format!("frame not finished within {}", seconds(after));
                self.encode(&rejection(String::new(), &why));
            }
            Expired::Write(after) => {
                debug!(peer = %self.peer, ?after, "client does not read its responses; dropping the connection");
                self.fail_write(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no response written within the write timeout",
                ));
                // Their answers can go nowhere: stop the handlers too.
                self.in_flight = FuturesUnordered::new();
            }
        }
        self.end.get_or_insert(ReadEnd::TimedOut);
    }
}

pub(super) fn log_read_error(peer: &Endpoint, error: &CodecError) {
    match error {
        CodecError::Truncated { buffered } => {
            debug!(%peer, buffered, "client closed the connection inside a frame");
        }
        CodecError::Io(error) => debug!(%peer, %error, "read failed; closing the connection"),
        CodecError::Json(source) => {
            warn!(%peer, error = %source, "malformed JSON from client; closing the connection");
        }
        other => warn!(%peer, error = %other, "bad input from client; closing the connection"),
    }
}

/// `d` in seconds as people write them: `30s`, `0.25s`.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
