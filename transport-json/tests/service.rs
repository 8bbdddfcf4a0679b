//! `PoolService`, the tower `Service` over a pool, on loopback TCP: a request answered, a
//! `poll_ready` that is `Pending` exactly while the pool is full, and tower's load-shed,
//! timeout and retry layers around it.
#![cfg(feature = "tower")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use pool::Pool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::codec::Framed;
use tower::retry::Policy;
use tower::{Service, ServiceBuilder, ServiceExt};
use transport_json::codec::JsonCodec;
use transport_json::server::ServerConfig;
use transport_json::{
    ConnectOptions, Error, JsonManager, Message, PoolService, Resp, ServiceError,
};

use support::within;

fn message(uid: &str, val: &str) -> Message {
    Message {
        uid: uid.to_owned(),
        val: val.to_owned(),
    }
}

/// A pool of at most `max_size` connections of `max_streams` leases each, to `addr`.
fn pool(addr: SocketAddr, max_size: usize, max_streams: usize) -> Pool<JsonManager> {
    let options = ConnectOptions::new(addr.to_string()).request_timeout(None);
    Pool::builder(JsonManager::new(options))
        .max_size(max_size)
        .max_streams(max_streams)
        .wait_timeout(support::LIMIT)
        .build()
        .expect("valid settings")
}

/// A waker that notifies the test when it is woken.
struct Woken(Notify);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }
}

#[tokio::test]
async fn a_request_is_answered_through_the_service() {
    let server = support::start(ServerConfig::default()).await;
    let pool = pool(server.local_addr(), 1, 4);
    let mut service = PoolService::new(pool.clone());

    let resp = within("a response", async {
        service.ready().await?.call(message("a", "hi")).await
    })
    .await
    .expect("answered");
    assert_eq!(resp.uid, "a");
    assert_eq!(resp.val, "server: hello, hi");
    assert!(!service.has_lease(), "the call used the reserved lease");
    assert_eq!(pool.status().leases, 0, "the lease ended with the response");
}

#[tokio::test]
async fn poll_ready_is_pending_while_the_pool_is_full_and_ready_when_a_lease_ends() {
    let server = support::start(ServerConfig::default()).await;
    let pool = pool(server.local_addr(), 1, 2);
    let mut first = PoolService::new(pool.clone());
    let mut second = first.clone();
    within("two leases", async {
        first.ready().await.expect("room");
        second.ready().await.expect("room");
    })
    .await;
    assert_eq!((pool.status().size, pool.status().leases), (1, 2));

    // One connection of two streams, both reserved: a third service has no room.
    let mut third = first.clone();
    assert!(!third.has_lease(), "a clone has no reservation of its own");
    let woken = Arc::new(Woken(Notify::new()));
    let waker = Waker::from(Arc::clone(&woken));
    let mut cx = Context::from_waker(&waker);
    assert!(third.poll_ready(&mut cx).is_pending(), "the pool is full");
    assert!(!third.has_lease());
    assert_eq!(pool.status().waiting, 1, "it waits in the pool's line");

    // A call ends its lease when its response is in: the room goes to the waiting service,
    // which is woken (no polling in between).
    let resp = within("a response", first.call(message("1", "x")))
        .await
        .expect("answered");
    assert_eq!(resp.val, "server: hello, x");
    within("the wake-up", woken.0.notified()).await;
    assert!(third.poll_ready(&mut cx).is_ready(), "woken with a lease");
    assert!(third.has_lease());
    assert_eq!(pool.status().leases, 2);
    assert_eq!(pool.status().size, 1, "no connection past max_size");
}

#[tokio::test]
async fn a_dropped_service_gives_back_its_lease_and_its_place_in_line() {
    let server = support::start(ServerConfig::default()).await;
    let pool = pool(server.local_addr(), 1, 1);
    let mut holder = PoolService::new(pool.clone());
    within("a lease", holder.ready()).await.expect("room");
    assert_eq!(pool.status().leases, 1);

    let mut waiting = holder.clone();
    assert!(waiting.ready().now_or_never().is_none(), "the pool is full");
    assert_eq!(pool.status().waiting, 1);
    drop(waiting);
    assert_eq!(pool.status().waiting, 0, "the line is left");

    drop(holder);
    assert_eq!(pool.status().leases, 0, "the reserved lease is given back");
    let mut next = PoolService::new(pool.clone());
    assert!(
        next.ready().now_or_never().is_some(),
        "its room is free at once"
    );
}

#[tokio::test]
async fn call_without_poll_ready_fails_with_not_ready() {
    let server = support::start(ServerConfig::default()).await;
    let pool = pool(server.local_addr(), 1, 1);
    let mut service = PoolService::new(pool);
    let result = within("the error", service.call(message("", "x"))).await;
    assert!(matches!(result, Err(ServiceError::NotReady)), "{result:?}");
}

#[tokio::test]
async fn load_shed_fails_an_overloaded_call_at_once_and_serves_once_there_is_room() {
    let server = support::start(ServerConfig::default()).await;
    let pool = pool(server.local_addr(), 1, 1);
    let mut holder = PoolService::new(pool.clone());
    within("a lease", holder.ready()).await.expect("room");

    let mut shed = ServiceBuilder::new()
        .load_shed()
        .service(PoolService::new(pool.clone()));
    let ready = shed.ready().now_or_never();
    assert!(matches!(ready, Some(Ok(_))), "load_shed is always ready");
    let error = shed
        .call(message("", "x"))
        .now_or_never()
        .expect("an overloaded call fails without waiting")
        .expect_err("the pool is full");
    assert!(error.is::<tower::load_shed::error::Overloaded>(), "{error}");

    // The shed call kept its place in line: once the holder's lease ends it is served.
    drop(holder);
    let resp = within("a response", async {
        shed.ready().await?.call(message("", "y")).await
    })
    .await
    .expect("served once there is room");
    assert_eq!(resp.val, "server: hello, y");
}

#[tokio::test]
async fn timeout_drops_a_request_never_answered_and_its_lease_ends() {
    let (handler, mut arrivals) = support::gated();
    let server = support::start_with(ServerConfig::default(), handler).await;
    let pool = pool(server.local_addr(), 1, 4);
    // Open the connection first, so the timeout below covers only the request.
    drop(within("a lease", pool.lease()).await.expect("connects"));

    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .service(PoolService::new(pool.clone()));
    let call = tokio::spawn(async move { service.ready().await?.call(message("t", "x")).await });
    let (uid, _release) = within("the request at the server", arrivals.recv())
        .await
        .expect("the request arrives");
    assert_eq!(uid, "t");
    assert_eq!(
        pool.status().leases,
        1,
        "the request in flight holds its lease"
    );

    let error = within("the timeout", call)
        .await
        .expect("the task ends")
        .expect_err("never answered");
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    let status = pool.status();
    assert_eq!(status.leases, 0, "the lease ended with the dropped request");
    assert_eq!(status.idle, 1, "the connection is back, unharmed");
}

/// What the first connection to a [`Scripted`] server does; every later one echoes.
enum First {
    /// Reads one request and hangs up without answering.
    HangUpOnRequest,
    /// Echoes until notified, then hangs up.
    HangUpOn(Arc<Notify>),
}

/// A server whose first connection breaks as scripted; counts the connections it accepts.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(first: First) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut first = Some(first);
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let script = first.take();
                tokio::spawn(async move {
                    let mut side = Framed::new(stream, JsonCodec::<Message, Resp>::new());
                    let hang_up = match script {
                        Some(First::HangUpOnRequest) => {
                            let _ = side.next().await;
                            return;
                        }
                        Some(First::HangUpOn(notify)) => Some(notify),
                        None => None,
                    };
                    let hung_up = async {
                        match hang_up {
                            Some(notify) => notify.notified().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::pin!(hung_up);
                    loop {
                        let msg = tokio::select! {
                            () = &mut hung_up => return,
                            next = side.next() => match next {
                                Some(Ok(msg)) => msg,
                                _ => return,
                            },
                        };
                        let resp = Resp {
                            uid: msg.uid,
                            val: format!("server: hello, {}", msg.val),
                            ts: "now".to_owned(),
                            err: None,
                        };
                        if side.send(resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, accepted }
    }
}

/// Retries a request whose connection closed under it, up to `left` times.
#[derive(Clone)]
struct RetryClosed {
    left: usize,
}

impl Policy<Message, Resp, ServiceError> for RetryClosed {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Message,
        result: &mut Result<Resp, ServiceError>,
    ) -> Option<Self::Future> {
        match result {
            Err(error) if error.is_retryable() && self.left > 0 => {
                self.left -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Message) -> Option<Message> {
        Some(req.clone())
    }
}

#[tokio::test]
async fn retry_sends_again_on_a_fresh_connection_after_a_broken_one() {
    let server = Scripted::start(First::HangUpOnRequest).await;
    let pool = pool(server.addr, 1, 4);
    let mut service = ServiceBuilder::new()
        .retry(RetryClosed { left: 1 })
        .service(PoolService::new(pool.clone()));

    let resp = within("a response", async {
        service.ready().await?.call(message("r", "again")).await
    })
    .await
    .expect("the retry is answered");
    assert_eq!(
        (resp.uid.as_str(), resp.val.as_str()),
        ("r", "server: hello, again")
    );
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        2,
        "a fresh connection"
    );
    let status = pool.status();
    assert_eq!(
        status.counters.broken, 1,
        "the broken connection was discarded"
    );
    assert_eq!((status.size, status.leases), (1, 0));
}

#[tokio::test]
async fn a_reserved_lease_whose_connection_closed_is_replaced_by_poll_ready() {
    let hang_up = Arc::new(Notify::new());
    let server = Scripted::start(First::HangUpOn(Arc::clone(&hang_up))).await;
    let pool = pool(server.addr, 1, 1);
    // A handle on the pool's one connection, to see it close.
    let conn = (*within("a lease", pool.lease()).await.expect("connects")).clone();

    let mut service = PoolService::new(pool.clone());
    within("a lease", service.ready()).await.expect("room");
    hang_up.notify_one();
    within("the connection to close", conn.closed()).await;

    let resp = within("a response", async {
        service.ready().await?.call(message("", "x")).await
    })
    .await;
    assert!(
        !matches!(&resp, Err(ServiceError::Request(Error::Closed(_)))),
        "sent on the closed connection: {resp:?}"
    );
    assert_eq!(resp.expect("answered").val, "server: hello, x");
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}
