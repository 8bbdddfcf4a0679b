//! The client of the original design: sends requests through a pool of multiplexed
//! connections to a running echo server and prints each response as it arrives.
//!
//! ```sh
//! cargo run --release --example echo_server &
//! cargo run --release --example client -- --requests 5
//! # rec1: 2025-01-01T12:00:00.123456789Z: server: hello, 1
//! # ...
//! ```
//!
//! Request `i` (from 1) carries `Uid` and `Val` `i`; its response is printed as
//! `rec<i>: <Ts>: <Val>`, in the order responses arrive (`--quiet` prints only the summary).
//! A response counts only if its `Uid` and `Val` are right. The exit status is 0 only when
//! every request got its response; otherwise the failures are printed with their causes.
//! When no connection can be had at all (the server is gone), it stops sending at once.
#![forbid(unsafe_code)]

#[path = "support/cli.rs"]
mod cli;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cli::{Flag, Spec};
use pool::{IdleOrder, Pool, PoolError};
use transport_json::{Conn, ConnectOptions, Error, JsonManager, Message};

static SPEC: Spec = Spec {
    name: "client",
    about: "Sends requests to a running echo server through a pool; prints each response.",
    flags: &[
        Flag {
            name: "addr",
            value: Some("ADDR"),
            default: "127.0.0.1:3000",
            help: "the server's address",
        },
        Flag {
            name: "requests",
            value: Some("N"),
            default: "10",
            help: "requests to send",
        },
        Flag {
            name: "concurrency",
            value: Some("C"),
            default: "4",
            help: "tasks sending at once",
        },
        Flag {
            name: "pool-size",
            value: Some("P"),
            default: "4",
            help: "connections in the pool (max_size)",
        },
        Flag {
            name: "quiet",
            value: None,
            default: "",
            help: "print only the summary, not each response",
        },
    ],
};

/// The most failures printed in full; the rest are only counted.
const SHOWN_ERRORS: usize = 10;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::parse(&SPEC);
    let addr = args.value("addr").to_owned();
    let requests = args.positive("requests");
    let concurrency = args.positive("concurrency");
    let quiet = args.switch("quiet");

    let options = ConnectOptions::new(addr.clone())
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(10)));
    let pool = match Pool::builder(JsonManager::new(options))
        .max_size(args.positive("pool-size"))
        .idle_order(IdleOrder::Fifo)
        .connect_timeout(Duration::from_secs(5))
        .wait_timeout(Duration::from_secs(10))
        .build()
    {
        Ok(pool) => pool,
        Err(error) => return cli::fail("client: invalid pool settings", &error),
    };
    // Reach the server once before sending anything: a wrong address gives one clear error.
    if let Err(error) = pool.get().await {
        return cli::fail(&format!("client: cannot reach {addr}"), &error);
    }

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, stop) = (Arc::clone(&next), Arc::clone(&stop));
            tokio::spawn(run_task(pool.clone(), next, stop, requests, quiet))
        })
        .collect();
    let mut answered = 0;
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok((ok, failed)) => {
                answered += ok;
                failures.extend(failed);
            }
            Err(error) => return cli::fail("client: a task panicked", &error),
        }
    }
    let elapsed = started.elapsed();
    pool.close().await;

    eprintln!("client: {answered} of {requests} requests answered by {addr} in {elapsed:.2?}");
    if failures.is_empty() && answered == requests {
        return ExitCode::SUCCESS;
    }
    failures.sort_by_key(|(i, _)| *i);
    let unsent = requests - answered - failures.len();
    eprintln!(
        "client: {} requests failed, {unsent} not sent",
        failures.len()
    );
    // The first failures, then the last: when the server went away for good, the last one
    // says why no connection could be had.
    let shown = failures.len().min(SHOWN_ERRORS);
    for (i, error) in &failures[..shown.saturating_sub(1)] {
        eprintln!("  rec{i}: {error}");
    }
    if failures.len() > SHOWN_ERRORS {
        eprintln!("  ... {} more ...", failures.len() - SHOWN_ERRORS);
    }
    if let Some((i, error)) = failures.last() {
        eprintln!("  rec{i}: {error}");
    }
    ExitCode::FAILURE
}

/// One of the `--concurrency` tasks: takes request numbers off the shared counter until all
/// are taken, or until `stop` is set. Returns how many it got answered, and the failures
/// with their error chains.
async fn run_task(
    pool: Pool<JsonManager>,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    requests: usize,
    quiet: bool,
) -> (usize, Vec<(usize, String)>) {
    let mut answered = 0;
    let mut failed = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return (answered, failed);
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i > requests {
            return (answered, failed);
        }
        let uid = i.to_string();
        let expected = format!("server: hello, {uid}");
        let result = match checkout(&pool).await {
            Ok(conn) => conn
                .send(Message {
                    uid: uid.clone(),
                    val: uid.clone(),
                })
                .await
                .map_err(|error| cli::chain(&error)),
            Err(error) => {
                // No connection to be had: the server is gone, so the rest would fail too.
                stop.store(true, Ordering::Relaxed);
                Err(cli::chain(&error))
            }
        };
        match result {
            Ok(resp) if resp.uid == uid && resp.val == expected => {
                answered += 1;
                if !quiet {
                    // One locked write per line, so lines from different tasks never mix.
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "rec{i}: {}: {}",
                        resp.ts,
                        resp.val
                    );
                }
            }
            Ok(resp) => failed.push((i, format!("wrong response {resp:?}"))),
            Err(error) => failed.push((i, error)),
        }
    }
}

/// Takes a connection for one request: checks one out, clones the handle and returns the
/// guard at once, since a [`Conn`] carries any number of requests at a time (see
/// `examples/demo.rs` for why). A connection that closed while idle reports itself broken,
/// so the pool never hands it out.
async fn checkout(pool: &Pool<JsonManager>) -> Result<Conn, PoolError<Error>> {
    let guard = pool.get().await?;
    Ok(Conn::clone(&guard))
}
