//! The pool and the multiplexed JSON connection together, over real loopback TCP against the
//! crate's server: responses that leave the server out of order reach the right callers, and
//! ten thousand concurrent requests through a pool of four connections are each answered once.

mod support;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use support::{bounded, chain, echoed, lease, pool_to, spawn_server};
use tokio::task::JoinSet;
use transport_json::server::{ServerConfig, handler_fn};
use transport_json::{Message, Resp};

/// A small pseudo-random delay for `uid`, from a hash: random-looking, and the same on
/// every run, so a failure can be replayed.
fn delay_for(uid: &str, max_millis: u64) -> Duration {
    let mut hasher = DefaultHasher::new();
    uid.hash(&mut hasher);
    Duration::from_micros(hasher.finish() % (max_millis * 1000 + 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_responses_reach_their_callers() {
    bounded(async {
        const N: u64 = 40;
        // Request `i` waits (N - i) * 3 ms: the last one sent is answered first, the first
        // one last, with 3 ms between neighbours.
        let handler = handler_fn(|req: Message| async move {
            let i: u64 = req.val.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis((N - i.min(N)) * 3)).await;
            Resp {
                val: echoed(&req.val),
                ts: "ts".to_owned(),
                uid: req.uid,
                err: None,
            }
        });
        let server = spawn_server(
            "127.0.0.1:0".parse().expect("addr"),
            ServerConfig::default(),
            handler,
        )
        .await;
        // One connection: the reordering happens inside it, not across connections.
        let pool = pool_to(server.local_addr(), 1);
        let guard = pool.get().await.expect("checkout");

        let mut calls: FuturesUnordered<_> = (0..N)
            .map(|i| {
                let conn = &*guard;
                async move {
                    let resp = conn
                        .send(Message {
                            uid: format!("u{i}"),
                            val: i.to_string(),
                        })
                        .await;
                    (i, resp)
                }
            })
            .collect();
        let mut finished = Vec::new();
        while let Some((i, result)) = calls.next().await {
            let resp = result.unwrap_or_else(|error| panic!("request {i}: {}", chain(&error)));
            assert_eq!(
                resp.uid,
                format!("u{i}"),
                "request {i} got another's response"
            );
            assert_eq!(resp.val, echoed(&i.to_string()));
            finished.push(i);
        }
        drop(calls);

        assert_eq!(finished.len(), N as usize);
        let position = |i| finished.iter().position(|&f| f == i).expect("finished");
        assert!(
            position(N - 1) < position(0),
            "the server answered in request order, so the test proved nothing: {finished:?}"
        );
        assert_eq!(guard.pending(), 0);
        assert_eq!(guard.unknown_responses(), 0);
        assert_eq!(pool.status().counters.created, 1);
        drop(guard);
        pool.close().await;
        server.shutdown().await.expect("server shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_through_four_connections_are_each_answered_once() {
    bounded(async {
        const N: usize = 10_000;
        // The server counts how often it handled each uid, and answers after a random delay
        // of up to 2 ms, so responses leave each connection out of order.
        let handled: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let seen = Arc::clone(&handled);
        let handler = handler_fn(move |req: Message| {
            let seen = Arc::clone(&seen);
            async move {
                *seen
                    .lock()
                    .expect("lock")
                    .entry(req.uid.clone())
                    .or_default() += 1;
                tokio::time::sleep(delay_for(&req.uid, 2)).await;
                Resp {
                    val: echoed(&req.val),
                    ts: "ts".to_owned(),
                    uid: req.uid,
                    err: None,
                }
            }
        });
        let server = spawn_server(
            "127.0.0.1:0".parse().expect("addr"),
            ServerConfig::default(),
            handler,
        )
        .await;
        let pool = pool_to(server.local_addr(), 4);

        let mut tasks = JoinSet::new();
        for i in 0..N {
            let pool = pool.clone();
            tasks.spawn(async move {
                let msg = Message {
                    uid: format!("u{i}"),
                    val: format!("v{i}"),
                };
                let result = if i % 10 == 0 {
                    // Some callers hold their guard for the whole request: they queue for a
                    // connection with no lease while the others pipeline on leases.
                    let guard = pool.get().await.expect("checkout");
                    guard.send(msg).await
                } else {
                    lease(&pool).await.send(msg).await
                };
                (i, result)
            });
        }

        let mut answers: HashMap<String, usize> = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, result) = joined.expect("task");
            let resp = result.unwrap_or_else(|error| panic!("request {i}: {}", chain(&error)));
            assert_eq!(resp.val, echoed(&format!("v{i}")), "uid u{i} got {resp:?}");
            *answers.entry(resp.uid).or_default() += 1;
        }

        assert_eq!(answers.len(), N, "every uid answered");
        assert!(answers.values().all(|&n| n == 1), "no uid answered twice");
        for i in 0..N {
            assert_eq!(answers.get(&format!("u{i}")), Some(&1), "uid u{i}");
        }
        {
            let handled = handled.lock().expect("lock");
            assert_eq!(handled.len(), N, "the server saw every uid");
            assert!(
                handled.values().all(|&n| n == 1),
                "no request was sent twice"
            );
        }
        let status = pool.status();
        assert!(status.counters.created <= 4, "{status:?}");
        assert!(status.size <= 4, "{status:?}");
        assert_eq!(status.counters.broken, 0, "{status:?}");
        pool.close().await;
        server.shutdown().await.expect("server shutdown");
    })
    .await;
}
