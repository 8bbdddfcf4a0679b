//! The server dies with requests in flight, then comes back on the same port: every request
//! in flight fails promptly with the cause, the pool discards the dead connections, and the
//! same pool serves new requests once the server is back.

mod support;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pool::Pool;
use support::{
    STALL, bounded, chain, checkout, echoed, hold, is_server_gone, lease, options, pool_to, recv_n,
    stalling_server, within,
};
use transport_json::server::{Server, ServerConfig};
use transport_json::{JsonManager, Message};

/// How soon after the kill every request in flight must have failed. The request timeout is
/// far longer (20 s), so only the connection's failure can end them this soon.
const PROMPT: Duration = Duration::from_secs(3);

/// Binds `addr` again after the server that held it stopped. `abort` returns once the
/// listener is closed, so the first try should do; a few more cover a slow kernel.
async fn rebind(addr: SocketAddr) -> Server {
    let mut last = None;
    for _ in 0..1000 {
        match Server::bind(addr, ServerConfig::default()).await {
            Ok(server) => return server,
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                last = Some(error);
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("rebind {addr}: {error}"),
        }
    }
    panic!("{addr} still in use: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_requests_in_flight_and_the_pool_recovers_after_restart() {
    bounded(async {
        const CONNS: usize = 2;
        const PER_CONN: usize = 5;
        let (server, mut arrived, _release) = stalling_server().await;
        let addr = server.local_addr();
        let pool = pool_to(addr, CONNS);

        // Two callers, each holding a connection of its own and pipelining requests the
        // server will not answer.
        let guards = futures::future::try_join_all((0..CONNS).map(|_| pool.get()))
            .await
            .expect("checkouts");
        let callers: Vec<_> = guards
            .into_iter()
            .enumerate()
            .map(|(c, guard)| {
                tokio::spawn(async move {
                    let sends = (0..PER_CONN).map(|r| {
                        guard.send(Message {
                            uid: format!("c{c}-r{r}"),
                            val: STALL.to_owned(),
                        })
                    });
                    let results = futures::future::join_all(sends).await;
                    // The guard goes back to the pool here, after its requests ended.
                    (results, Instant::now())
                })
            })
            .collect();
        recv_n(&mut arrived, CONNS * PER_CONN).await;
        let before = pool.status();
        assert_eq!(before.size, CONNS, "{before:?}");
        assert_eq!(before.in_use, CONNS, "{before:?}");

        let killed = Instant::now();
        server.abort().await;
        // Refusing until the restart below, and no other server can take the port meanwhile.
        let held = hold(addr);

        for caller in callers {
            let (results, ended) = within(PROMPT, caller).await.expect("caller task");
            assert!(
                ended.duration_since(killed) < PROMPT,
                "failed only after {:?}",
                ended.duration_since(killed)
            );
            for result in results {
                match result {
                    Err(error) if is_server_gone(&error) => {}
                    other => panic!(
                        "expected Closed(ClosedByPeer | Io), got {:?}",
                        other.map_err(|e| chain(&e))
                    ),
                }
            }
        }

        // Both connections came back closed: the pool discarded them and freed their slots.
        let after = pool.status();
        assert_eq!(after.size, 0, "{after:?}");
        assert_eq!(after.counters.broken, CONNS as u64, "{after:?}");

        // The server comes back on the same port; the same pool serves again.
        drop(held);
        let server = rebind(addr).await.spawn();
        assert_eq!(server.local_addr(), addr);
        let sends = (0..20).map(|i| {
            let pool = pool.clone();
            async move {
                let val = format!("again {i}");
                let resp = lease(&pool)
                    .await
                    .send(Message {
                        uid: format!("again-{i}"),
                        val: val.clone(),
                    })
                    .await
                    .unwrap_or_else(|error| panic!("after restart: {}", chain(&error)));
                assert_eq!(resp.val, echoed(&val));
            }
        });
        futures::future::join_all(sends).await;
        let recovered = pool.status();
        assert!(recovered.counters.created > CONNS as u64, "{recovered:?}");
        assert!(recovered.size >= 1, "{recovered:?}");

        pool.close().await;
        server.shutdown().await.expect("server shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_idle_in_the_pool_when_the_server_dies_is_never_handed_out() {
    bounded(async {
        let (server, _arrived, _release) = stalling_server().await;
        let addr = server.local_addr();
        let pool = pool_to(addr, 1);
        let resp = lease(&pool).await.request("hi").await.expect("request");
        assert_eq!(resp.val, echoed("hi"));
        // The connection is idle in the pool, just used, when the server dies.
        let idle = checkout(&pool).await;
        server.abort().await;
        let held = hold(addr);
        within(PROMPT, idle.closed()).await;
        assert!(idle.is_closed());
        drop(idle);

        drop(held);
        let server = rebind(addr).await.spawn();
        // The first checkout after the restart must not hand out the dead connection, even
        // though it was used within the pool's check interval.
        let guard = pool.get().await.expect("checkout");
        assert!(
            !guard.is_closed(),
            "the pool handed out a closed connection"
        );
        let resp = guard.request("back").await.map_err(|e| chain(&e));
        assert_eq!(resp.map(|r| r.val), Ok(echoed("back")));
        drop(guard);
        let status = pool.status();
        assert_eq!(status.counters.created, 2, "{status:?}");

        pool.close().await;
        server.shutdown().await.expect("server shutdown");
    })
    .await;
}

/// A server that refuses for 1 s, then listens again: a `get` with a 3 s `wait_timeout`
/// retries its refused connects with backoff and reaches it; a pool that fails fast reports
/// the refusal at once instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_reaches_a_server_that_refuses_for_a_second_then_listens() {
    bounded(async {
        let (server, _arrived, _release) = stalling_server().await;
        let addr = server.local_addr();
        let pool = Pool::builder(JsonManager::new(options(addr)))
            .max_size(2)
            .wait_timeout(Duration::from_secs(3))
            .build()
            .expect("valid settings");
        let fail_fast = Pool::builder(JsonManager::new(options(addr)))
            .fail_fast(true)
            .build()
            .expect("valid settings");
        let used = checkout(&pool).await;
        used.request("hi").await.expect("request");
        server.abort().await;
        // Refusing through the outage, and no other server can take the port meanwhile.
        let held = hold(addr);
        // The client must see the close before `get`, or the pool can only hand the
        // connection out as healthy (seen in 1 run of 15 under load, `get` back in 8 µs).
        within(PROMPT, used.closed()).await;
        drop(used);

        // While the server is down, the pool that fails fast says why at once.
        let failure = fail_fast.get().await.map(|_| ()).map_err(|e| chain(&e));
        let failure = failure.expect_err("the server is down");
        assert!(failure.contains("could not connect"), "{failure}");

        // The server listens again 1 s into the outage.
        let down = Instant::now();
        let restart = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(held);
            rebind(addr).await.spawn()
        });
        let guard = pool.get().await.map_err(|e| chain(&e));
        let reached = down.elapsed();
        let guard = guard.expect("reached once the server is back, within the wait timeout");
        assert!(reached >= Duration::from_secs(1), "{reached:?}");
        let resp = guard.request("back").await.map_err(|e| chain(&e));
        assert_eq!(resp.map(|r| r.val), Ok(echoed("back")));
        let status = pool.status();
        assert!(status.counters.connect_failures >= 1, "{status:?}");
        assert_eq!(status.counters.timeouts, 0, "{status:?}");

        drop(guard);
        pool.close().await;
        fail_fast.close().await;
        let server = restart.await.expect("restart task");
        server.shutdown().await.expect("server shutdown");
    })
    .await;
}
