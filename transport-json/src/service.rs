//! [`PoolService`]: a [`tower::Service`] over a pool of [`Conn`](crate::Conn)s, a lease per request, so
//! tower's middleware (timeout, retry, rate limit, concurrency limit, load shedding) applies.
//!
//! ```no_run
//! use std::time::Duration;
//! use pool::Pool;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use transport_json::service::PoolService;
//! use transport_json::{ConnectOptions, JsonManager, Message};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let manager = JsonManager::new(ConnectOptions::new("127.0.0.1:3000"));
//! let pool = Pool::builder(manager).max_size(4).max_streams(16).build()?;
//! let mut service = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(1))
//!     .service(PoolService::new(pool));
//! let message = Message { uid: String::new(), val: "world".to_owned() };
//! let resp = service.ready().await?.call(message).await?;
//! println!("{}", resp.val);
//! # Ok(())
//! # }
//! ```
//!
//! # What `poll_ready` reserves
//! [`poll_ready`](tower::Service::poll_ready) takes a [`Lease`] from the pool
//! ([`Pool::lease`]) and keeps it in the service; [`call`](tower::Service::call) takes that
//! lease and holds it until the response is in (or the request fails, or its future is
//! dropped). So `poll_ready` tells the truth about capacity: it is `Pending` exactly while
//! every connection carries `max_streams` leases and the pool is at `max_size` (the service
//! then waits in the pool's line, first come first served, and is woken when a lease ends),
//! and `call` never waits for room. A pool error (its `wait_timeout`, a failed connect, a
//! closed pool) is returned by `poll_ready` as [`ServiceError::Pool`]; the service stays
//! usable, and its next `poll_ready` asks the pool again.
//!
//! Each clone of a service has its own reservation: a clone starts with none (tower clones a
//! service per task or per retry). A reserved lease holds one of its connection's streams
//! until `call` uses it or the service is dropped, which gives it back. A lease whose
//! connection closed while reserved is given back by the next `poll_ready`, which leases
//! again.
//!
//! # Cancel safety
//! `poll_ready` and `call` are not async, but what they leave behind can be dropped at any
//! point: dropping a service drops its reservation (the lease ends) and its lease in the
//! making (it leaves the pool's line, as [`Pool::lease`] is cancel safe); dropping a
//! [`ResponseFuture`] (as `tower::timeout` does) drops the request (its pending entry goes,
//! a late response is counted and dropped, as [`Conn::send`](crate::Conn::send) says) and ends its lease.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pool::{Lease, Pool, PoolError};

use crate::conn::Error;
use crate::{JsonManager, Message, Resp};

/// A lease in the making, owned by the service that asked for it.
type Leasing =
    Pin<Box<dyn Future<Output = Result<Lease<JsonManager>, PoolError<Error>>> + Send + 'static>>;

/// A [`tower::Service`] sending each [`Message`] on a lease of its own from a
/// [`Pool`]`<`[`JsonManager`]`>`; see the [module docs](self) for what `poll_ready` reserves.
///
/// Cheap to clone (the pool is shared); a clone has no reservation of its own yet.
pub struct PoolService {
    pool: Pool<JsonManager>,
    /// The lease `poll_ready` reserved for the next `call`.
    reserved: Option<Lease<JsonManager>>,
    /// The lease `poll_ready` is waiting for, kept across polls (it holds a place in line).
    leasing: Option<Leasing>,
}

impl PoolService {
    /// A service sending its requests through `pool`.
    pub fn new(pool: Pool<JsonManager>) -> Self {
        PoolService {
            pool,
            reserved: None,
            leasing: None,
        }
    }

    /// The pool the requests go through.
    pub fn pool(&self) -> &Pool<JsonManager> {
        &self.pool
    }

    /// True when `poll_ready` reserved a lease that the next `call` will use.
    pub fn has_lease(&self) -> bool {
        self.reserved.is_some()
    }
}

impl Clone for PoolService {
    /// A service on the same pool, with no reservation: leases are not shared between clones.
    fn clone(&self) -> Self {
        PoolService::new(self.pool.clone())
    }
}

impl fmt::Debug for PoolService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolService")
            .field("pool", &self.pool)
            .field("has_lease", &self.reserved.is_some())
            .field("leasing", &self.leasing.is_some())
            .finish()
    }
}

impl tower::Service<Message> for PoolService {
    type Response = Resp;
    type Error = ServiceError;
    type Future = ResponseFuture;

    /// Ready once a lease is reserved for the next `call`: at once when a connection has
    /// room (or one can be opened), `Pending` while the pool is full, woken when a lease ends.
    ///
    /// # Errors
    /// [`ServiceError::Pool`] when the pool gives no lease (its `wait_timeout` ran out, a
    /// connect failed, the pool is closed). The service stays usable: the next call asks the
    /// pool again.
    ///
    /// # Cancel safety
    /// A lease in the making is kept in the service across polls (its place in line too);
    /// dropping the service drops it, which leaks nothing (see [`Pool::lease`]).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServiceError>> {
        if let Some(lease) = &self.reserved {
            if !lease.is_closed() {
                return Poll::Ready(Ok(()));
            }
            // Its connection closed while the lease waited for a call: give it back (the pool
            // discards the connection) and lease again.
            self.reserved = None;
        }
        let leasing = self.leasing.get_or_insert_with(|| {
            let pool = self.pool.clone();
            Box::pin(async move { pool.lease().await })
        });
        let leased = ready!(leasing.as_mut().poll(cx));
        self.leasing = None;
        match leased {
            Ok(lease) => {
                self.reserved = Some(lease);
                Poll::Ready(Ok(()))
            }
            Err(error) => Poll::Ready(Err(ServiceError::Pool(error))),
        }
    }

    /// Sends `message` on the lease `poll_ready` reserved; the lease ends when the response
    /// is in. Without a reservation (no `Ready` from `poll_ready` since the last `call`) the
    /// future fails with [`ServiceError::NotReady`] and nothing is sent.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops the request and ends its lease, as
    /// [`Conn::send`](crate::Conn::send)'s cancel safety says.
    fn call(&mut self, message: Message) -> ResponseFuture {
        let Some(lease) = self.reserved.take() else {
            return ResponseFuture {
                inner: Box::pin(std::future::ready(Err(ServiceError::NotReady))),
            };
        };
        ResponseFuture {
            inner: Box::pin(async move {
                // The lease lives in this future: it ends with the response, or when the
                // future is dropped half way.
                lease.send(message).await.map_err(ServiceError::Request)
            }),
        }
    }
}

/// The response of a [`PoolService`] call: the request in flight, holding its lease.
///
/// # Cancel safety
/// Dropping it drops the request (a late response is counted and dropped by the [`Conn`](crate::Conn))
/// and ends its lease.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Resp, ServiceError>> + Send + 'static>>,
}

impl Future for ResponseFuture {
    type Output = Result<Resp, ServiceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Why a [`PoolService`] gave no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// `poll_ready` got no lease from the pool; the source says why (a timeout, a failed
    /// connect, a closed pool).
    #[error("no lease from the pool")]
    Pool(#[source] PoolError<Error>),
    /// The request failed on its connection; the source says why.
    #[error("the request failed")]
    Request(#[source] Error),
    /// `call` came without a lease reserved by `poll_ready` (tower's contract: `poll_ready`
    /// returns `Ready(Ok)` before each `call`); nothing was sent.
    #[error("call without a lease reserved by poll_ready")]
    NotReady,
}

impl ServiceError {
    /// True when the request failed because its connection closed, before or while it was
    /// in flight ([`Error::Closed`]): the pool takes no new lease on a closed connection, so
    /// a retry goes to another one. The server may have handled the request before the
    /// connection closed: retry only requests that are safe to repeat.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServiceError::Request(Error::Closed(_)))
    }
}
