//! `examples/client.rs` as a user runs it: the built example program against test servers on
//! loopback, judged by its exit status and the last lines of its summary.
//!
//! Cargo gives tests the path of a `[[bin]]` but not of an example, and `cargo test --test
//! client_example` does not build the examples at all. So the first test that needs the
//! program runs `cargo build --example client` with the cargo that built this test, in the
//! same profile (hence the same target directory's compiled dependencies: only the example
//! itself is compiled), and takes the program's path from cargo's JSON messages. A program
//! left over from an older build is never run.
#![forbid(unsafe_code)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{bounded, spawn_echo, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::OnceCell;
use transport_json::ServerConfig;

/// The bound on building the example: generous, the machine may be busy.
const BUILD_BOUND: Duration = Duration::from_secs(600);

/// The client's own request timeout (`examples/client.rs`): a run against a silent server
/// that ends sooner was ended by its deadline.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The built example, built at most once per test binary.
static CLIENT: OnceCell<PathBuf> = OnceCell::const_new();

/// The path of the built `client` example; the first caller builds it, the others wait.
async fn client_binary() -> &'static Path {
    CLIENT.get_or_init(build_client).await
}

/// Runs `cargo build --example client` in this test's profile and returns the program's path.
async fn build_client() -> PathBuf {
    let output = within(
        BUILD_BOUND,
        Command::new(env!("CARGO"))
            .args(["build", "--example", "client", "--profile", &profile()])
            .args(["--message-format", "json-render-diagnostics"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|error| panic!("cannot run `cargo build --example client`: {error}"));
    assert!(
        output.status.success(),
        "`cargo build --example client` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    // One JSON message a line; the example's artifact names its executable.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "client"
                && message["target"]["kind"][0] == "example"
        })
        .and_then(|artifact| artifact["executable"].as_str().map(PathBuf::from))
        .expect("cargo's messages name the client example's executable")
}

/// The cargo profile this test was built with, read off its directory
/// (`target/<dir>/deps/<test>`): `debug` is the `dev` profile, any other is its own name.
fn profile() -> String {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .expect("the test runs from target/<profile>/deps");
    match dir {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    }
}

/// How one run of the client ended.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    /// The last `n` lines of the summary (stderr), oldest first.
    fn last_lines(&self, n: usize) -> Vec<&str> {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Everything it printed, for a failing assertion's message.
    fn printed(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the client against `addr` with `args`; a run that does not end is killed and fails
/// the test.
async fn run_client(addr: impl std::fmt::Display, args: &[&str]) -> Outcome {
    let binary = client_binary().await;
    let started = Instant::now();
    let output = bounded(
        Command::new(binary)
            .arg("--addr")
            .arg(addr.to_string())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()));
    Outcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A listener on an ephemeral loopback port, and its address.
async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("the bound address");
    (listener, addr)
}

/// A server that accepts every connection and never answers: it reads and drops what comes.
async fn silent_server() -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut socket, &mut tokio::io::sink()).await;
            });
        }
    });
    addr
}

/// A server that answers each request with the request itself, as the seed's Go server did:
/// `Uid` and `Val` unchanged, no `Ts`. Our client ends each request with `\n`, so a line is
/// a request and the same line is its answer.
async fn unchanged_echo_server() -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(mut line)) = lines.next_line().await {
                    line.push('\n');
                    if write.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A server that accepts one connection and goes away when the first request arrives: that
/// connection and the listener close, so the client's next connect is refused. (Closing at
/// once raced the client's first lease, which rightly refuses a connection already closed.)
async fn one_connection_server() -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        // Open until the first request arrives (so the client's first lease finds the
        // connection alive), then gone for good: the connection and the listener close.
        if let Ok((mut stream, _)) = listener.accept().await {
            let mut first = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut first).await;
        }
    });
    addr
}

#[tokio::test]
async fn deadline_ends_the_run_against_a_silent_server() {
    let addr = silent_server().await;
    let run = run_client(
        addr,
        &[
            "--requests",
            "50",
            "--concurrency",
            "4",
            "--deadline",
            "0.5",
        ],
    )
    .await;

    assert_eq!(run.status.code(), Some(1), "{}", run.printed());
    assert!(
        run.elapsed < CLIENT_REQUEST_TIMEOUT,
        "the run took {:?}: the requests' own timeout ended it, not the deadline\n{}",
        run.elapsed,
        run.printed()
    );
    // Each of the 4 tasks took one request and waited on it until the deadline.
    assert_eq!(
        run.last_lines(2),
        [
            "client: 0 failed, 4 in flight at the deadline, 46 not sent",
            "client: stopped: deadline of 500ms passed with 50 requests unanswered",
        ],
        "{}",
        run.printed()
    );
}

#[tokio::test]
async fn a_lost_server_is_the_summarys_last_line() {
    let addr = one_connection_server().await;
    let run = run_client(addr, &["--requests", "200", "--concurrency", "8"]).await;

    assert_eq!(run.status.code(), Some(1), "{}", run.printed());
    let last = run.last_lines(1)[0];
    assert!(
        last.starts_with("client: stopped: rec")
            && last.contains("found no connection, with")
            && last.contains("could not connect"),
        "the last line does not say why the run stopped: {last:?}\n{}",
        run.printed()
    );
}

/// Asserts that the run succeeded and its summary says every request was answered.
fn assert_all_answered(run: &Outcome, requests: usize, addr: impl std::fmt::Display) {
    assert!(run.status.success(), "{}", run.printed());
    // The line ends with the time taken.
    let answered = format!("client: {requests} of {requests} requests answered by {addr} in ");
    assert!(
        run.last_lines(1)[0].starts_with(&answered),
        "{}",
        run.printed()
    );
}

#[tokio::test]
async fn an_unchanged_echo_counts_as_answered() {
    let addr = unchanged_echo_server().await;
    let run = run_client(addr, &["--requests", "200", "--concurrency", "8"]).await;

    assert_all_answered(&run, 200, addr);
    // Each response printed as it came, with its `Val` and no `Ts`.
    let mut printed: Vec<&str> = run.stdout.lines().collect();
    printed.sort_unstable();
    let mut expected: Vec<String> = (1..=200).map(|i| format!("rec{i}: {i}")).collect();
    expected.sort_unstable();
    assert_eq!(printed, expected);
}

#[tokio::test]
async fn expect_prefix_counts_an_unchanged_echo_as_wrong() {
    let addr = unchanged_echo_server().await;
    let run = run_client(
        addr,
        &[
            "--requests",
            "200",
            "--concurrency",
            "8",
            "--quiet",
            "--expect-prefix",
            "server: hello, ",
        ],
    )
    .await;

    assert_eq!(run.status.code(), Some(1), "{}", run.printed());
    assert!(
        run.stderr.contains("  rec1: wrong response "),
        "{}",
        run.printed()
    );
    assert_eq!(
        run.last_lines(1),
        ["client: 200 failed, 0 in flight at the deadline, 0 not sent"],
        "{}",
        run.printed()
    );
}

#[tokio::test]
async fn expect_prefix_accepts_the_echo_servers_answers() {
    let server = spawn_echo(ServerConfig::default()).await;
    let addr = server.local_addr();
    let run = run_client(
        addr,
        &[
            "--requests",
            "200",
            "--concurrency",
            "8",
            "--quiet",
            "--expect-prefix",
            "server: hello, ",
        ],
    )
    .await;

    assert_all_answered(&run, 200, addr);
}

#[cfg(unix)]
#[tokio::test]
async fn the_client_reaches_a_server_on_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("mux-pool-client-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = transport_json::Server::bind_unix(&path, ServerConfig::default())
        .expect("binds the socket")
        .spawn();
    let addr = format!("unix:{}", path.display());
    let run = run_client(
        &addr,
        &["--requests", "50", "--concurrency", "8", "--quiet"],
    )
    .await;

    assert_all_answered(&run, 50, &addr);
    server.shutdown().await.expect("shuts down");
    assert!(!path.exists(), "the server removes its socket file");
}
