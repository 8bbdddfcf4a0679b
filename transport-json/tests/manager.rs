//! `JsonManager` over real loopback TCP: checks that cost nothing while a connection is fresh,
//! round trips once it has idled, broken connections after a server close, and the manager
//! inside a `pool::Pool`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pool::{Manager, Pool};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::codec::Framed;
use transport_json::codec::JsonCodec;
use transport_json::manager::PING_VAL;
use transport_json::{CloseCause, Conn, ConnectOptions, Error, JsonManager, Message, Resp};

mod support;

const BOUND: Duration = Duration::from_secs(20);

async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .expect("the test did not finish within its bound")
}

/// A server for many connections that counts the requests it reads, can drop every
/// connection at once, and reports each connection's end on `ended`.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
    kill: Arc<Notify>,
    ended: mpsc::UnboundedReceiver<()>,
}

impl TestServer {
    /// `answer`: whether requests get responses (false: it reads and stays silent).
    async fn start(answer: bool) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let pings = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let (counted, pinged, killed) = (requests.clone(), pings.clone(), kill.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (requests, pings, kill) = (counted.clone(), pinged.clone(), killed.clone());
                let ended = ended_tx.clone();
                tokio::spawn(async move {
                    let mut side = Framed::new(stream, JsonCodec::<Message, Resp>::new());
                    let killed = kill.notified();
                    tokio::pin!(killed);
                    loop {
                        let msg = tokio::select! {
                            () = &mut killed => break,
                            next = side.next() => match next {
                                Some(Ok(msg)) => msg,
                                _ => break,
                            },
                        };
                        requests.fetch_add(1, Ordering::SeqCst);
                        if msg.val == PING_VAL {
                            pings.fetch_add(1, Ordering::SeqCst);
                        }
                        if answer {
                            let resp = Resp {
                                uid: msg.uid,
                                val: format!("re: {}", msg.val),
                                ts: "now".to_owned(),
                                err: None,
                            };
                            if side.send(resp).await.is_err() {
                                break;
                            }
                        }
                    }
                    let _ = ended.send(());
                });
            }
        });
        TestServer {
            addr,
            requests,
            pings,
            kill,
            ended,
        }
    }

    fn options(&self) -> ConnectOptions {
        ConnectOptions::new(self.addr.to_string())
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }

    /// Drops every connection whose server task runs now (one that answered a request).
    fn kill_connections(&self) {
        self.kill.notify_waiters();
    }
}

#[tokio::test]
async fn check_does_no_io_while_the_connection_is_fresh() {
    bounded(async {
        let server = TestServer::start(true).await;
        let manager = JsonManager::new(server.options()).check_idle(Duration::from_secs(3600));
        let mut conn = manager.connect().await.expect("connect");
        conn.request("work").await.expect("a response");
        for _ in 0..3 {
            manager.check(&mut conn).await.expect("healthy");
        }
        assert_eq!(
            server.requests(),
            1,
            "only the request itself reached the server"
        );
        assert_eq!(server.pings(), 0);
    })
    .await;
}

#[tokio::test]
async fn check_round_trips_once_idle_past_check_idle() {
    bounded(async {
        let server = TestServer::start(true).await;
        // Zero: any idle time at all is past it, so every check is a real round trip.
        let manager = JsonManager::new(server.options()).check_idle(Duration::ZERO);
        let mut conn = manager.connect().await.expect("connect");
        manager.check(&mut conn).await.expect("healthy");
        assert_eq!(server.pings(), 1);
        manager.check(&mut conn).await.expect("healthy");
        assert_eq!(server.pings(), 2);
        assert_eq!(conn.pending(), 0);
    })
    .await;
}

#[tokio::test]
async fn check_fails_when_the_round_trip_times_out() {
    bounded(async {
        let server = TestServer::start(false).await;
        let options = server
            .options()
            .request_timeout(Some(Duration::from_millis(100)));
        let manager = JsonManager::new(options).check_idle(Duration::ZERO);
        let mut conn = manager.connect().await.expect("connect");
        let err = manager.check(&mut conn).await.expect_err("no answer");
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert_eq!(server.pings(), 1);
        assert_eq!(conn.pending(), 0);
    })
    .await;
}

#[tokio::test]
async fn server_close_makes_the_connection_broken_and_check_fail_without_io() {
    bounded(async {
        let mut server = TestServer::start(true).await;
        // Zero would make a healthy connection's check a round trip: a failing check below
        // that sends nothing proves the closed flag is read first.
        let manager = JsonManager::new(server.options()).check_idle(Duration::ZERO);
        let mut conn = manager.connect().await.expect("connect");
        assert!(!manager.is_broken(&mut conn));
        conn.request("work").await.expect("a response");
        server.kill_connections();
        server.ended.recv().await.expect("the server dropped it");
        conn.closed().await;
        assert!(manager.is_broken(&mut conn));
        let err = manager.check(&mut conn).await.expect_err("closed");
        assert!(
            matches!(err, Error::Closed(CloseCause::ClosedByPeer)),
            "{err:?}"
        );
        assert_eq!(server.requests(), 1, "the failed check sent nothing");
    })
    .await;
}

#[tokio::test]
async fn manager_close_ends_the_connection_gracefully() {
    bounded(async {
        let mut server = TestServer::start(true).await;
        let manager = JsonManager::new(server.options());
        let conn = manager.connect().await.expect("connect");
        let handle = conn.clone();
        manager.close(conn).await;
        server.ended.recv().await.expect("the server saw the end");
        assert!(handle.is_closed());
        assert!(matches!(handle.close_cause(), Some(CloseCause::Shutdown)));
    })
    .await;
}

#[tokio::test]
async fn connect_failure_is_a_connect_error() {
    bounded(async {
        let (_held, addr) = support::refused_port();
        let manager = JsonManager::new(ConnectOptions::new(addr.to_string()));
        let err = manager.connect().await.expect_err("nobody listens");
        assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn pool_gets_sends_returns_and_reuses_a_connection() {
    bounded(async {
        let server = TestServer::start(true).await;
        let pool = Pool::builder(JsonManager::new(server.options()))
            .max_size(2)
            .build()
            .expect("valid settings");
        let conn = pool.get().await.expect("a connection");
        let first = conn.local_addr();
        assert_eq!(
            conn.request("one").await.expect("a response").val,
            "re: one"
        );
        drop(conn);
        let conn = pool.get().await.expect("a connection");
        assert_eq!(conn.local_addr(), first, "the idle connection was reused");
        assert_eq!(
            conn.request("two").await.expect("a response").val,
            "re: two"
        );
        drop(conn);
        let status = pool.status();
        assert_eq!((status.size, status.idle), (1, 1));
        assert_eq!(server.pings(), 0, "a fresh connection is not pinged");
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn pool_replaces_a_connection_the_server_closed() {
    bounded(async {
        let mut server = TestServer::start(true).await;
        let pool = Pool::builder(JsonManager::new(server.options()))
            .max_size(1)
            .check_interval(Duration::ZERO)
            .build()
            .expect("valid settings");
        let conn = pool.get().await.expect("a connection");
        let first = conn.local_addr();
        let handle = Conn::clone(&conn);
        conn.request("one").await.expect("a response");
        drop(conn);
        server.kill_connections();
        server.ended.recv().await.expect("the server dropped it");
        handle.closed().await;
        drop(handle);
        let conn = pool.get().await.expect("a fresh connection");
        assert_ne!(
            conn.local_addr(),
            first,
            "the closed connection was discarded"
        );
        assert_eq!(
            conn.request("two").await.expect("a response").val,
            "re: two"
        );
        drop(conn);
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn pool_discards_a_connection_that_closed_while_checked_out() {
    bounded(async {
        let mut server = TestServer::start(true).await;
        let pool = Pool::builder(JsonManager::new(server.options()))
            .max_size(1)
            .build()
            .expect("valid settings");
        let conn = pool.get().await.expect("a connection");
        // Answered: the server's task for this connection runs and will see the kill.
        conn.request("one").await.expect("a response");
        server.kill_connections();
        server.ended.recv().await.expect("the server dropped it");
        conn.closed().await;
        drop(conn); // is_broken: discarded, its slot freed
        let status = pool.status();
        assert_eq!((status.size, status.idle), (0, 0));
        assert_eq!(status.counters.broken, 1);
        let conn = pool.get().await.expect("a fresh connection");
        conn.request("again").await.expect("a response");
    })
    .await;
}

#[tokio::test]
async fn lease_per_request_pool_answers_every_request_and_gives_every_lease_back() {
    bounded(async {
        const REQUESTS: usize = 64;
        let server = TestServer::start(true).await;
        let pool = Pool::builder(JsonManager::new(server.options()))
            .max_size(2)
            .max_streams(16)
            .build()
            .expect("valid settings");
        let calls = (0..REQUESTS).map(|i| {
            let pool = pool.clone();
            async move {
                let conn = pool.lease().await.expect("a lease");
                let resp = conn.request(format!("r{i}")).await.expect("a response");
                (i, resp, conn.local_addr())
            }
        });
        let answers = futures::future::join_all(calls).await;
        for (i, resp, _) in &answers {
            assert_eq!(resp.val, format!("re: r{i}"));
        }
        // 64 at once over 2 connections of 16 streams: both connections carried work.
        let mut used: Vec<_> = answers.iter().map(|(_, _, addr)| *addr).collect();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 2, "{used:?}");
        let status = pool.status();
        assert_eq!(status.leases, 0, "{status:?}");
        assert_eq!(status.counters.created, 2, "{status:?}");
        assert_eq!(server.requests(), REQUESTS);
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn connection_that_died_under_its_leases_gets_no_new_lease_and_is_replaced() {
    bounded(async {
        const HELD: usize = 10;
        let mut server = TestServer::start(true).await;
        // One slot: the replacement can open only because the dead connection frees it at
        // once, while its ten leases still hold it.
        let pool = Pool::builder(JsonManager::new(server.options()))
            .max_size(1)
            .max_streams(16)
            .build()
            .expect("valid settings");
        let mut held = Vec::with_capacity(HELD);
        for _ in 0..HELD {
            held.push(pool.lease().await.expect("a lease"));
        }
        let first = held[0].local_addr();
        assert!(held.iter().all(|lease| lease.local_addr() == first));
        // Answered: the server's task for this connection runs and will see the kill.
        held[0].request("one").await.expect("a response");
        server.kill_connections();
        server.ended.recv().await.expect("the server dropped it");
        held[0].closed().await;

        // The dead connection has room for six more leases; is_broken_shared refuses them.
        let fresh = pool.lease().await.expect("a lease on a fresh connection");
        assert_ne!(
            fresh.local_addr(),
            first,
            "the eleventh lease went to the dead connection"
        );
        assert_eq!(
            fresh.request("two").await.expect("a response").val,
            "re: two"
        );
        let status = pool.status();
        assert_eq!(status.counters.created, 2, "{status:?}");
        assert_eq!(status.counters.broken, 1, "{status:?}");
        assert_eq!(status.leases, HELD + 1, "{status:?}");

        // The old leases still see the cause; ending them closes the dead connection.
        let err = held[1].request("late").await.expect_err("closed");
        assert!(
            matches!(err, Error::Closed(CloseCause::ClosedByPeer)),
            "{err:?}"
        );
        drop(held);
        drop(fresh);
        let status = pool.status();
        assert_eq!((status.size, status.leases), (1, 0), "{status:?}");
        pool.close().await;
    })
    .await;
}
