//! [`Conn`]: one TCP connection that many tasks pipeline requests through at once.
//!
//! ```no_run
//! use transport_json::conn::{Conn, ConnectOptions};
//!
//! # async fn run() -> Result<(), transport_json::conn::Error> {
//! let conn = Conn::connect(&ConnectOptions::new("127.0.0.1:3000")).await?;
//! let resp = conn.request("world").await?;
//! println!("{}: {}", resp.ts, resp.val);
//! conn.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! [`Conn::connect`] splits the socket between two tasks. The *writer* owns the write half: it
//! takes every request queued at that moment (one shared buffer) and writes it at once, so a
//! burst of callers costs one write, not one each. The *reader* owns the read half: it decodes each
//! response with [`JsonCodec`] and hands it to the caller waiting for
//! its `Uid`, whatever order the server answers in.
//!
//! The waiting callers sit in a table keyed by `Uid`, under a lock held only to insert, remove
//! or drain entries. A caller encodes its own request straight into the writer's buffer under
//! that same lock (one small JSON object: no allocation, no copy, no queue), and wakes the
//! writer only when the buffer was empty; the writer swaps the buffer for its own empty one,
//! so the connection's tasks only write bytes and route.
//!
//! # Every request ends exactly once
//!
//! With its response; with [`Error::Server`] when the response carries `Err`; with
//! [`Error::Timeout`] after the request timeout; or with [`Error::Closed`] naming the
//! [`CloseCause`] when the connection stops. When either task stops, the connection is closed:
//! every pending request fails at once with the cause and [`Conn::is_closed`] turns true. A
//! response for a `Uid` nobody waits for (its caller timed out or left) is counted by
//! [`Conn::unknown_responses`] and dropped; it never harms the connection.
//!
//! A server that closes the connection for a reason (a request frame over its maximum, a frame
//! not finished in time) first sends it as an `Err` with an empty `Uid`. The reader keeps the
//! last such text, and when the stream then ends or is reset, the requests pending fail with
//! [`CloseCause::Rejected`] carrying the server's words rather than a bare end of stream. On a
//! connection that stays open, such an `Err` is only counted as unknown. A failed write hands
//! its cause to the reader, which reads what the server sent before (the reason comes just
//! before the reset that failed the write) and then stops the connection.
//!
//! # A connection that stops answering is closed
//!
//! When a request times out and the server answered none of the requests pending on the
//! connection for the whole request timeout (counted from when the oldest timed-out request
//! was sent or the last answer came, whichever is later), the connection is taken for dead:
//! it closes with [`CloseCause::Unresponsive`], the timed-out requests fail with
//! [`Error::Timeout`], every other pending one with [`Error::Closed`], and a pool discards it.
//! A response for a `Uid` nobody waits for is no answer: a server that only sends those (or
//! works through a backlog of requests whose callers gave up) is as dead as a silent one. The
//! request timeout's sweep checks the rule, so it costs nothing per request; turn it off with
//! [`ConnectOptions::close_unresponsive`].

mod endpoint;
mod error;
mod options;
mod shared;
mod start;
mod tasks;
mod uid;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Encoder;

pub use endpoint::{Endpoint, NOT_TCP, UNIX_PREFIX};
pub use error::{CloseCause, Error};
pub use options::ConnectOptions;

use crate::codec::{JsonCodec, WireEncode};
use crate::{Message, Resp};
use options::Ends;
use shared::{Failure, Shared};
use uid::Key;

/// A multiplexed client connection. Cheap to clone: clones share the connection, and any
/// number of tasks may have requests in flight on it at once.
///
/// When the last clone is dropped the connection stops: its tasks end and the socket closes.
#[derive(Clone)]
pub struct Conn {
    inner: Arc<Inner>,
}

/// What the handles share; the tasks see only [`Shared`].
struct Inner {
    shared: Arc<Shared>,
    ends: Ends,
    max_frame: usize,
    request_timeout: Option<Duration>,
    permits: Option<Semaphore>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No handle left means no caller left: stop both tasks.
        self.shared.fail(CloseCause::Shutdown);
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("local", &self.inner.ends.local)
            .field("peer", &self.inner.ends.peer)
            .field("closed", &self.is_closed())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

/// A request as it goes on the wire: a [`Message`] borrowed, so that a made-up `Uid` need
/// not become a `String` first. Serializes exactly as [`Message`] does (a test checks it).
#[derive(Serialize)]
struct Request<'a> {
    #[serde(rename = "Uid")]
    uid: &'a str,
    #[serde(rename = "Val")]
    val: &'a str,
}

impl WireEncode for Request<'_> {
    fn encode_plain(&self, dst: &mut BytesMut) -> bool {
        crate::wire::plain::put_plain_object(dst, &[("Uid", self.uid), ("Val", self.val)], None)
    }
}

/// Removes a request's pending entry if its caller leaves before the request ends.
struct PendingGuard<'a> {
    shared: &'a Shared,
    uid: Key,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.forget(&self.uid, self.id);
        }
    }
}

impl Conn {
    /// Sends `message` and waits for its response.
    ///
    /// An empty `Uid` is replaced by one the connection makes up (unique among the requests
    /// in flight); the response carries it. A `Uid` you choose must not be in flight already.
    ///
    /// # Errors
    /// [`Error::Server`] when the response carries `Err`; [`Error::Timeout`] when no response
    /// came within the request timeout (see
    /// [`ConnectOptions::request_timeout`] for its precision), or no in-flight slot freed
    /// within it;
    /// [`Error::DuplicateUid`] when the `Uid` is already in flight; [`Error::RequestTooLarge`]
    /// or [`Error::Encode`] when the request cannot be sent; [`Error::Closed`] with the cause
    /// when the connection is closed or closes before the response.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future removes the request's pending entry at once, so
    /// [`pending`](Conn::pending) drops back and the `Uid` is free again. If the request was
    /// already queued it is still written; its late response is counted by
    /// [`unknown_responses`](Conn::unknown_responses) and dropped.
    pub async fn send(&self, message: Message) -> Result<Resp, Error> {
        self.call(&message.uid, &message.val).await
    }

    /// Sends `val` under a `Uid` the connection makes up, and waits for the response.
    ///
    /// # Errors
    /// As [`send`](Conn::send), except that it never fails with [`Error::DuplicateUid`].
    ///
    /// # Cancel safety
    /// Cancel safe, as [`send`](Conn::send).
    pub async fn request(&self, val: impl AsRef<str>) -> Result<Resp, Error> {
        self.call("", val.as_ref()).await
    }

    /// A request under `uid` (made up if empty): an in-flight slot, then the exchange.
    async fn call(&self, uid: &str, val: &str) -> Result<Resp, Error> {
        let shared = &*self.inner.shared;
        if shared.is_closed() {
            return Err(Error::Closed(shared.refusal()));
        }
        let _permit = match &self.inner.permits {
            Some(permits) => Some(self.in_flight_slot(permits).await?),
            None => None,
        };
        self.exchange(uid, val).await
    }

    /// A slot under `max_in_flight`: at once if one is free, else within the request timeout.
    async fn in_flight_slot<'a>(
        &self,
        permits: &'a Semaphore,
    ) -> Result<SemaphorePermit<'a>, Error> {
        let shared = &*self.inner.shared;
        // The semaphore is never closed; an error would mean it was, so refuse.
        let closed = |_| Error::Closed(shared.refusal());
        match permits.try_acquire() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(Error::Closed(shared.refusal())),
            Err(TryAcquireError::NoPermits) => match self.inner.request_timeout {
                None => permits.acquire().await.map_err(closed),
                Some(limit) => tokio::time::timeout(limit, permits.acquire())
                    .await
                    .map_err(|_| Error::Timeout(limit))?
                    .map_err(closed),
            },
        }
    }

    /// Registers the request, queues its frame and waits for its reply.
    async fn exchange(&self, uid: &str, val: &str) -> Result<Resp, Error> {
        let shared = &*self.inner.shared;
        let generated = uid.is_empty();
        let (uid, id, reply) = loop {
            let mut digits = [0; 20];
            let (key, text) = if generated {
                let n = shared.next_uid();
                (Key::Num(n), crate::decimal::decimal(n, &mut digits))
            } else {
                (Key::of(uid), uid)
            };
            let encode = |out: &mut BytesMut| self.encode(text, val, out);
            match shared.register(&key, encode) {
                Ok((id, reply)) => break (key, id, reply),
                // A made-up uid met a caller's uid in flight: make up another.
                Err(Error::DuplicateUid(_)) if generated => continue,
                Err(err) => return Err(err),
            }
        };
        let mut guard = PendingGuard {
            shared,
            uid,
            id,
            armed: true,
        };
        let reply = reply.await;
        // Whoever completed the reply (the reader or a failure) removed the entry already.
        guard.armed = false;
        match reply {
            Ok(Ok(resp)) => match resp.err {
                Some(text) => Err(Error::Server(text)),
                None => Ok(resp),
            },
            Ok(Err(Failure::Closed(cause))) => Err(Error::Closed(cause)),
            Ok(Err(Failure::TimedOut)) => Err(Error::Timeout(
                self.inner.request_timeout.unwrap_or(Duration::ZERO),
            )),
            // Only if the entry vanished unanswered, which the table's rules exclude.
            Err(_) => Err(Error::Closed(shared.refusal())),
        }
    }

    /// Appends one request's frame to `out`, refusing one longer than the maximum frame.
    /// On error `out` is left as it was.
    fn encode(&self, uid: &str, val: &str, out: &mut BytesMut) -> Result<(), Error> {
        let max = self.inner.max_frame;
        let start = out.len();
        JsonCodec::<Resp, Request<'_>>::with_max_frame(max)
            .encode(&Request { uid, val }, out)
            .map_err(Error::Encode)?;
        // The frame the server measures runs from `{` to `}`: the newline is not part of it.
        let len = (out.len() - start).saturating_sub(1);
        if len > max {
            out.truncate(start);
            return Err(Error::RequestTooLarge { len, max });
        }
        Ok(())
    }

    /// Closes the connection gracefully and waits until it has stopped.
    ///
    /// New requests are refused at once (with [`CloseCause::Shutdown`]) and
    /// [`is_closed`](Conn::is_closed) turns true. Requests already queued are written, the
    /// socket's write side is shut down (the server sees end of input), and requests in flight
    /// still get their responses; the connection stops when none is left pending, or when the
    /// server closes its side (anything then still pending fails with
    /// [`CloseCause::ClosedByPeer`]). Each request in flight is bounded by its request
    /// timeout; with no request timeout, bound the wait with [`tokio::time::timeout`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future stops only the wait. The close goes on in the
    /// connection's tasks.
    pub async fn close(&self) {
        self.inner.shared.begin_close();
        self.closed().await;
    }

    /// Waits until the connection has stopped (both of its tasks ended), for whatever reason.
    /// It does not itself close the connection.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn closed(&self) {
        self.inner.shared.wait_done().await;
    }

    /// True once the connection refuses new requests: it failed, stopped, or is closing.
    /// Reads a flag; no I/O.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// Why the connection stopped; `None` while it runs (or is still closing gracefully).
    pub fn close_cause(&self) -> Option<CloseCause> {
        self.inner.shared.close_cause()
    }

    /// How many requests wait for their responses now.
    pub fn pending(&self) -> usize {
        self.inner.shared.pending()
    }

    /// How many responses came for a `Uid` nobody waited for (late, forgotten or made up),
    /// and were dropped.
    pub fn unknown_responses(&self) -> u64 {
        self.inner.shared.unknown()
    }

    /// How many batched writes the writer made: fewer than the requests sent when callers
    /// queue requests faster than the socket takes them.
    pub fn write_batches(&self) -> u64 {
        self.inner.shared.batches()
    }

    /// Time since the last request was written or the last response to a pending request
    /// arrived (or since the connect); responses for a `Uid` nobody waits for do not count.
    /// Follows Tokio's clock.
    pub fn idle_for(&self) -> Duration {
        self.inner.shared.idle_for()
    }

    /// The local address of the socket; [`NOT_TCP`] (`0.0.0.0:0`) when the connection is not
    /// over TCP (read [`local`](Conn::local) then).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.ends.local.socket_addr().unwrap_or(NOT_TCP)
    }

    /// The server's address; [`NOT_TCP`] (`0.0.0.0:0`) when the connection is not over TCP
    /// (read [`peer`](Conn::peer) then).
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.ends.peer.socket_addr().unwrap_or(NOT_TCP)
    }

    /// This end of the connection, whatever the stream: a TCP address, a Unix socket (a
    /// client's end is usually unnamed), or `Endpoint::Named("local")` for a stream given to
    /// [`from_stream`](Conn::from_stream).
    pub fn local(&self) -> &Endpoint {
        &self.inner.ends.local
    }

    /// The server's end, whatever the stream: a TCP address, a Unix socket path, or the
    /// label given to [`from_stream`](Conn::from_stream).
    pub fn peer(&self) -> &Endpoint {
        &self.inner.ends.peer
    }
}

#[cfg(test)]
mod tests {
    use super::Request;
    use crate::Message;

    #[test]
    fn request_serializes_as_message() {
        for (uid, val) in [("1", "hello"), ("", ""), ("a\"b", "line\nbreak \u{1F600}")] {
            let message = Message {
                uid: uid.to_owned(),
                val: val.to_owned(),
            };
            let ours = serde_json::to_string(&Request { uid, val }).expect("encode");
            assert_eq!(ours, serde_json::to_string(&message).expect("encode"));
        }
    }
}
