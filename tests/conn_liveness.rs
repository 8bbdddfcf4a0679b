//! A pooled connection whose server stops answering is replaced: the connection closes itself
//! as unresponsive, the pool discards it, and callers go on over a fresh one.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{bounded, chain, checkout, lease, options, pool_with, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use transport_json::{CloseCause, Error, Message, Resp};

/// The request timeout of the pooled connections.
const LIMIT: Duration = Duration::from_millis(100);

/// A server whose first connection answers every request under a `Uid` it never received (a
/// server stuck answering stale requests, say), and whose later connections answer properly.
/// Counts the connections it accepted.
async fn first_connection_answers_unknown_uids() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let stray = counted.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut n = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    let Ok(req) = serde_json::from_str::<Message>(&line) else {
                        return;
                    };
                    n += 1;
                    let resp = Resp {
                        uid: if stray { format!("stray-{n}") } else { req.uid },
                        val: format!("re: {}", req.val),
                        ts: "now".to_owned(),
                        err: None,
                    };
                    let mut out = serde_json::to_vec(&resp).expect("encode");
                    out.push(b'\n');
                    if write.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_replaces_a_connection_whose_server_answers_only_unknown_uids() {
    bounded(async {
        const TASKS: usize = 16;
        const ROUNDS: usize = 50;
        let (addr, accepted) = first_connection_answers_unknown_uids().await;
        let pool = pool_with(options(addr).request_timeout(Some(LIMIT)), 1);
        // A handle on the first connection, watched from outside the pool.
        let first = checkout(&pool).await;

        // Sixteen callers, each sending through the pool until one request is answered. The
        // first connection answers none: it must be found dead and replaced within a bound
        // (without the liveness rule every request on it times out, for ever).
        let mut callers = JoinSet::new();
        for t in 0..TASKS {
            let pool = pool.clone();
            callers.spawn(async move {
                let mut failures = Vec::new();
                for round in 0..ROUNDS {
                    let conn = lease(&pool).await;
                    match conn.request(format!("{t}-{round}")).await {
                        Ok(resp) => return (resp, failures),
                        Err(err) => failures.push(err),
                    }
                }
                panic!("caller {t}: no answer in {ROUNDS} rounds: {failures:?}");
            });
        }
        let answers = within(Duration::from_secs(5), callers.join_all()).await;

        for (resp, failures) in answers {
            assert!(resp.val.starts_with("re: "), "{resp:?}");
            for err in failures {
                assert!(
                    matches!(
                        err,
                        Error::Timeout(LIMIT) | Error::Closed(CloseCause::Unresponsive(LIMIT))
                    ),
                    "{}",
                    chain(&err)
                );
            }
        }
        assert!(first.is_closed());
        assert!(matches!(
            first.close_cause(),
            Some(CloseCause::Unresponsive(LIMIT))
        ));
        let status = pool.status();
        assert_eq!(status.counters.created, 2, "{status:?}");
        assert_eq!(status.counters.broken, 1, "{status:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(first);
        pool.close().await;
    })
    .await;
}
