//! The client of the original design: sends requests through a pool of multiplexed
//! connections to a running echo server and prints each response as it arrives.
//!
//! ```sh
//! cargo run --release --example echo_server &
//! cargo run --release --example client -- --requests 5 --expect-prefix "server: hello, "
//! # rec1: 2025-01-01T12:00:00.123456789Z: server: hello, 1
//! # ...
//! cargo run --release --example client -- --addr unix:/tmp/echo.sock   # over a Unix socket
//! cargo run --release --features tls --example client -- --addr 127.0.0.1:3443 \
//!     --tls-ca ca.pem                                              # TLS
//! cargo run --release --features tls --example client -- --addr 127.0.0.1:3443 \
//!     --tls-ca ca.pem --tls-cert client.pem --tls-key client.key   # mutual TLS
//! ```
//!
//! `--tls-ca F` connects over TLS, trusting the CA certificates of the PEM file `F` and
//! expecting the server's certificate to name `--tls-server-name` (default `localhost`);
//! `--tls-cert` and `--tls-key` present a client certificate to a server that asks for one.
//! The TLS flags need the root package's `tls` feature (rustls); a build without it refuses
//! them and says so.
//!
//! `--metrics-addr ADDR` (feature `prometheus`) serves the pool's metrics as Prometheus text
//! at `http://ADDR/metrics` while the client runs (labelled `pool="client"`).
//!
//! Request `i` (from 1) carries `Uid` and `Val` `i`; its response is printed as
//! `rec<i>: <Ts>: <Val>` (`rec<i>: <Val>` when it has no `Ts`), in the order responses arrive
//! (`--quiet` prints only the summary). The exit status is 0 only when every request got its
//! response; otherwise the summary on stderr lists the failures with their causes, counts them,
//! and its last line says why the run stopped early when it did.
//!
//! Decisions:
//! - Each request takes a lease of its own ([`Pool::lease`]) and drops it with the response:
//!   up to `--max-streams` requests share one connection, over at most `--pool-size`
//!   connections, and a new connection opens only when every open one is full. The default
//!   (64, as the demo's) comes from the demo's measurements on loopback, where one full
//!   connection beat the same requests spread thin (see the README); over a real network more
//!   connections may pay, so lower it there.
//! - A response with the request's `Uid` and no `Err` counts as answered, whatever its `Val`:
//!   servers differ in what they answer (the seed's Go server echoes the request unchanged,
//!   with no `Ts`). `--expect-prefix P` opts into checking that `Val` is `P` followed by the
//!   request's `Val`; a mismatch is then a "wrong response".
//! - `--deadline` (60 s by default) bounds the whole run, from the first connect: when it
//!   passes, the requests in flight are dropped (a dropped `send` forgets its request), none
//!   more is sent, and both are counted as failed. A server that accepts and never answers
//!   thus ends the run at the deadline, not after every request's own timeout.
//! - The run stops early at the first fatal error: the deadline, or a checkout that finds no
//!   connection at all (the server is gone, so the rest would fail too). That error is the
//!   summary's last line, apart from the per-request failures, which can number thousands.
#![forbid(unsafe_code)]

#[path = "support/cli.rs"]
mod cli;
#[cfg(feature = "prometheus")]
#[path = "support/prometheus.rs"]
mod prometheus;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cli::{Flag, Spec};
use pool::Pool;
use pool::balance::Balanced;
use tokio::time::Instant;
#[cfg(feature = "tls")]
use transport_json::tls::TlsConnect;
use transport_json::{ConnectOptions, JsonManager, Message, Resp};

static SPEC: Spec = Spec {
    name: "client",
    about: "Sends requests to a running echo server through a pool; prints each response.",
    flags: &[
        Flag {
            name: "addr",
            value: Some("ADDR"),
            default: "127.0.0.1:3000",
            help: "the server's address (host:port, or unix:/path); several, comma-separated, share one pool",
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
            name: "max-streams",
            value: Some("S"),
            default: "64",
            help: "requests one connection carries at once (leases per connection)",
        },
        Flag {
            name: "deadline",
            value: Some("SECS"),
            default: "60",
            help: "stop sending and fail what is left after SECS seconds",
        },
        Flag {
            name: "expect-prefix",
            value: Some("PREFIX"),
            default: "",
            help: "also check each Val is PREFIX + the request's Val (off unless given)",
        },
        Flag {
            name: "quiet",
            value: None,
            default: "",
            help: "print only the summary, not each response",
        },
        Flag {
            name: "tls-ca",
            value: Some("FILE"),
            default: "",
            help: "connect over TLS, trusting the CA certificates of this PEM file (feature tls)",
        },
        Flag {
            name: "tls-server-name",
            value: Some("NAME"),
            default: "localhost",
            help: "with --tls-ca: the name the server's certificate must carry",
        },
        Flag {
            name: "tls-cert",
            value: Some("FILE"),
            default: "",
            help: "with --tls-ca: present this PEM client certificate (mutual TLS)",
        },
        Flag {
            name: "tls-key",
            value: Some("FILE"),
            default: "",
            help: "the PEM private key of --tls-cert",
        },
        Flag {
            name: "metrics-addr",
            value: Some("ADDR"),
            default: "",
            help: "serve the pool's Prometheus text at http://ADDR/metrics (feature prometheus)",
        },
    ],
};

/// The flags of the `tls` feature, refused without it.
const TLS_FLAGS: [&str; 4] = ["tls-ca", "tls-server-name", "tls-cert", "tls-key"];

/// The most failures printed in full; the rest are only counted.
const SHOWN_ERRORS: usize = 10;

/// What every task shares: the pool, the requests to send, and how the run may end.
struct Run {
    pool: Pool<Balanced<JsonManager>>,
    /// The number of the next request to send, from 1.
    next: AtomicUsize,
    requests: usize,
    /// `--deadline`, and when it passes.
    deadline_after: Duration,
    deadline: Instant,
    /// `--expect-prefix`: when set, a response's `Val` must be it + the request's `Val`.
    expect_prefix: Option<String>,
    quiet: bool,
    /// Why the run stopped early: the first fatal error, set once.
    stop: OnceLock<Stop>,
}

impl Run {
    /// Whether `resp` answers the request whose `Uid` and `Val` are `uid`: the right `Uid`, no
    /// `Err`, and with `--expect-prefix P`, a `Val` of `P` followed by `uid`.
    fn is_answer(&self, uid: &str, resp: &Resp) -> bool {
        let val_ok = match &self.expect_prefix {
            Some(prefix) => resp.val.strip_prefix(prefix.as_str()) == Some(uid),
            None => true,
        };
        resp.uid == uid && resp.err.is_none() && val_ok
    }
}

/// What ended a run before every request was sent.
enum Stop {
    /// `--deadline` passed.
    Deadline,
    /// Request `rec` found no connection to be had; `error` is the pool's error chain.
    NoConnection { rec: usize, error: String },
}

/// What the tasks did with the requests they took.
#[derive(Default)]
struct Tally {
    answered: usize,
    /// The requests that failed, with their error chains.
    failed: Vec<(usize, String)>,
    /// The requests in flight when the deadline passed.
    cut: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::parse(&SPEC);
    let addr = args.value("addr").to_owned();
    let requests = args.positive("requests");
    let concurrency = args.positive("concurrency");
    let deadline_after = args.seconds("deadline");
    let started = Instant::now();
    // A deadline past what `Instant` can hold is as good as none: a year.
    let deadline = started
        .checked_add(deadline_after)
        .unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));

    if let Err(code) = cli::refuse_missing_features(&args, &TLS_FLAGS) {
        return code;
    }
    // Before the pool is built: it registers its metrics with the recorder then in force.
    #[cfg(feature = "prometheus")]
    if let Err(code) = prometheus::serve_flag(&args, "client") {
        return code;
    }
    let options = ConnectOptions::new(addr.clone())
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Some(Duration::from_secs(10)));
    #[cfg(feature = "tls")]
    let options = match tls_settings(&args) {
        Ok(tls) => options.tls(tls),
        Err(code) => return code,
    };
    // One endpoint per comma-separated address: new connections go to the one with the
    // fewest, and a server that fails is ejected for a while (`pool::balance`).
    let addrs = addr.split(',').map(str::trim).filter(|a| !a.is_empty());
    let manager = match JsonManager::balanced(&options, addrs) {
        Ok(manager) if !manager.endpoints().is_empty() => manager,
        Ok(_) => {
            eprintln!("client: --addr names no server");
            return ExitCode::FAILURE;
        }
        Err(error) => return cli::fail("client: invalid --addr", &error),
    };
    let pool = match Pool::builder(manager)
        .name("client")
        .max_size(args.positive("pool-size"))
        .max_streams(args.positive("max-streams"))
        .connect_timeout(Duration::from_secs(5))
        .wait_timeout(Duration::from_secs(10))
        .build()
    {
        Ok(pool) => pool,
        Err(error) => return cli::fail("client: invalid pool settings", &error),
    };
    // Reach the server once before sending anything: a wrong address gives one clear error.
    match tokio::time::timeout_at(deadline, pool.lease()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return cli::fail(&format!("client: cannot reach {addr}"), &error),
        Err(_) => {
            eprintln!(
                "client: stopped: deadline of {deadline_after:?} passed connecting to {addr}"
            );
            return ExitCode::FAILURE;
        }
    }

    let run = Arc::new(Run {
        pool,
        next: AtomicUsize::new(1),
        requests,
        deadline_after,
        deadline,
        expect_prefix: args.given("expect-prefix").map(str::to_owned),
        quiet: args.switch("quiet"),
        stop: OnceLock::new(),
    });
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(run_task(Arc::clone(&run))))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => {
                total.answered += tally.answered;
                total.failed.extend(tally.failed);
                total.cut += tally.cut;
            }
            Err(error) => return cli::fail("client: a task panicked", &error),
        }
    }
    let elapsed = started.elapsed();
    run.pool.close().await;
    summarize(&run, &addr, total, elapsed)
}

/// The TLS settings of `--tls-ca`, `--tls-server-name`, `--tls-cert` and `--tls-key`;
/// `None` without `--tls-ca`.
#[cfg(feature = "tls")]
fn tls_settings(args: &cli::Args) -> Result<Option<TlsConnect>, ExitCode> {
    let name = args.value("tls-server-name");
    let tls = match (
        args.given("tls-ca"),
        args.given("tls-cert"),
        args.given("tls-key"),
    ) {
        (None, None, None) if args.given("tls-server-name").is_none() => return Ok(None),
        (Some(ca), None, None) => TlsConnect::from_ca_file(ca, name),
        (Some(ca), Some(cert), Some(key)) => {
            TlsConnect::from_ca_file_with_client_cert(ca, cert, key, name)
        }
        _ => {
            eprintln!(
                "client: --tls-cert and --tls-key go together; they and --tls-server-name \
                 need --tls-ca"
            );
            return Err(ExitCode::from(2));
        }
    };
    tls.map(Some)
        .map_err(|error| cli::fail("client: invalid TLS settings", &error))
}

/// Prints the summary on stderr and returns the exit status. When some request was not
/// answered: the first failures, then the counts, and last, apart from them, why the run
/// stopped early if it did.
fn summarize(run: &Run, addr: &str, mut total: Tally, elapsed: Duration) -> ExitCode {
    let Tally { answered, cut, .. } = total;
    let requests = run.requests;
    eprintln!("client: {answered} of {requests} requests answered by {addr} in {elapsed:.2?}");
    if answered == requests {
        return ExitCode::SUCCESS;
    }
    total.failed.sort_by_key(|(i, _)| *i);
    for (i, error) in total.failed.iter().take(SHOWN_ERRORS) {
        eprintln!("  rec{i}: {error}");
    }
    if total.failed.len() > SHOWN_ERRORS {
        eprintln!("  ... {} more ...", total.failed.len() - SHOWN_ERRORS);
    }
    let unanswered = requests - answered;
    let failed = total.failed.len();
    let unsent = unanswered - failed - cut;
    eprintln!("client: {failed} failed, {cut} in flight at the deadline, {unsent} not sent");
    match run.stop.get() {
        Some(Stop::Deadline) => eprintln!(
            "client: stopped: deadline of {:?} passed with {unanswered} requests unanswered",
            run.deadline_after
        ),
        Some(Stop::NoConnection { rec, error }) => eprintln!(
            "client: stopped: rec{rec} found no connection, with {unanswered} requests \
             unanswered: {error}"
        ),
        None => {}
    }
    ExitCode::FAILURE
}

/// One of the `--concurrency` tasks: takes request numbers off the shared counter until all
/// are taken, or the run stops (see [`Stop`]).
async fn run_task(run: Arc<Run>) -> Tally {
    let mut tally = Tally::default();
    loop {
        if run.stop.get().is_some() {
            return tally;
        }
        if Instant::now() >= run.deadline {
            let _ = run.stop.set(Stop::Deadline);
            return tally;
        }
        let i = run.next.fetch_add(1, Ordering::Relaxed);
        if i > run.requests {
            return tally;
        }
        let uid = i.to_string();
        let request = async {
            // A lease per request: dropped when this block ends, with the response.
            let conn = match run.pool.lease().await {
                Ok(conn) => conn,
                Err(error) => {
                    // No connection to be had: the server is gone, so the rest would fail too.
                    let error = cli::chain(&error);
                    let _ = run.stop.set(Stop::NoConnection {
                        rec: i,
                        error: error.clone(),
                    });
                    return Err(error);
                }
            };
            conn.send(Message {
                uid: uid.clone(),
                val: uid.clone(),
            })
            .await
            .map_err(|error| cli::chain(&error))
        };
        let Ok(result) = tokio::time::timeout_at(run.deadline, request).await else {
            // Dropping the `send` forgot the request: its late response, if any, is dropped.
            tally.cut += 1;
            let _ = run.stop.set(Stop::Deadline);
            return tally;
        };
        match result {
            Ok(resp) if run.is_answer(&uid, &resp) => {
                tally.answered += 1;
                if !run.quiet {
                    // One locked write per line, so lines from different tasks never mix.
                    let mut out = std::io::stdout().lock();
                    let _ = if resp.ts.is_empty() {
                        writeln!(out, "rec{i}: {}", resp.val)
                    } else {
                        writeln!(out, "rec{i}: {}: {}", resp.ts, resp.val)
                    };
                }
            }
            Ok(resp) => tally.failed.push((i, format!("wrong response {resp:?}"))),
            Err(error) => tally.failed.push((i, error)),
        }
    }
}
