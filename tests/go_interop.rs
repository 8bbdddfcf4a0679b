//! The JSON transport against peers written in Go, over real loopback TCP, in both directions.
//!
//! - `tests/go/client.go` is the original design's client: it writes each request with
//!   `conn.Write(json.Marshal(m))`, so our server reads `{..}{..}` with no separator, and reads
//!   the responses with a `json.Decoder`, matching them by `Uid` in any order.
//! - `tests/go/server.go` is the original design's server: a `json.Decoder` per connection, each
//!   request answered from its own goroutine after a small random delay through a mutex-guarded
//!   `json.Encoder` (one object plus `\n` per response), so responses leave out of order.
//! - `tests/go/utf8.go` writes requests and responses whose `Val` is not valid UTF-8 by hand
//!   (`json.Marshal` would replace the bad bytes itself) and reads each one with Go's own
//!   `json.Decoder`, the reference for what it means: we must decode it the same way.
//!
//! Both programs use only Go's standard library and are built once per test binary with the
//! `go` on `PATH`, into this crate's `CARGO_TARGET_TMPDIR`. `GOCACHE`, `GOPATH` and `HOME`
//! point under that directory unless they are set already. A missing `go` is a failure, never
//! a skip: install it with `apt-get install golang-go` (`.ci/run` does).
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pool::Pool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use transport_json::{Conn, ConnectOptions, JsonManager, Message, Resp, Server, ServerConfig};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What the test says when there is no Go toolchain.
const GO_MISSING: &str = "cannot run `go`: these tests build real Go peers and do not skip \
     without a Go toolchain. Install it with `apt-get install golang-go` (.ci/run does this).";

/// A Go program in `tests/go/`, built at most once per test binary.
struct GoProgram {
    name: &'static str,
    binary: OnceCell<PathBuf>,
}

static CLIENT: GoProgram = GoProgram {
    name: "client",
    binary: OnceCell::const_new(),
};

static SERVER: GoProgram = GoProgram {
    name: "server",
    binary: OnceCell::const_new(),
};

static UTF8: GoProgram = GoProgram {
    name: "utf8",
    binary: OnceCell::const_new(),
};

impl GoProgram {
    /// The path of the built program; the first caller builds it, the others wait for it.
    async fn binary(&'static self) -> &'static Path {
        self.binary.get_or_init(|| go_build(self.name)).await
    }
}

/// Builds `tests/go/<name>.go` and returns the path of the executable.
async fn go_build(name: &str) -> PathBuf {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-interop");
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).expect("create the directory for the Go binaries");
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/go")
        .join(format!("{name}.go"));
    // Build under a name of our own, then rename: concurrent test runs never see half a file.
    let partial = bin.join(format!("{name}.{}.partial", std::process::id()));
    let target = bin.join(name);

    let mut go = Command::new("go");
    go.arg("build")
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .current_dir(&work)
        // Standard library only: no cgo (no C compiler needed), no module download, no
        // toolchain switch, no inherited flags such as -mod=vendor.
        .env("CGO_ENABLED", "0")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("GOFLAGS", "")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (var, dir) in [("GOCACHE", "cache"), ("GOPATH", "gopath"), ("HOME", "home")] {
        if std::env::var_os(var).is_none() {
            let dir = work.join(dir);
            std::fs::create_dir_all(&dir).expect("create a directory for the Go toolchain");
            go.env(var, dir);
        }
    }
    let output = match within(Duration::from_secs(120), "go build", go.output()).await {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            panic!("{GO_MISSING} ({error})")
        }
        Err(error) => panic!("cannot run `go build` ({error}). {GO_MISSING}"),
    };
    assert!(
        output.status.success(),
        "`go build {}` failed ({}):\n{}{}",
        source.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    std::fs::rename(&partial, &target).expect("move the built Go program into place");
    target
}

/// `tests/go/server.go`, running; killed when dropped.
struct GoServer {
    child: Child,
    addr: String,
}

impl GoServer {
    /// Starts the Go server on an ephemeral loopback port and reads the address it bound.
    async fn start() -> GoServer {
        let args = [
            "-addr",
            "127.0.0.1:0",
            "-max-delay",
            "1ms",
            "-exit-on-stdin-eof",
        ];
        GoServer::spawn(&SERVER, &args).await
    }

    /// Starts a Go program that listens on an ephemeral loopback port, prints
    /// `listening <address>` first and exits when its stdin closes; reads the address.
    async fn spawn(program: &'static GoProgram, args: &[&str]) -> GoServer {
        let binary = program.binary().await;
        let mut child = Command::new(binary)
            .args(args)
            // The server exits when this pipe closes, even if this process dies without
            // running its destructors.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let stdout = child.stdout.take().expect("the server's stdout is piped");
        // From here on the guard kills the server, whatever happens next.
        let mut server = GoServer {
            child,
            addr: String::new(),
        };
        let mut lines = BufReader::new(stdout).lines();
        let line = within(
            Duration::from_secs(10),
            "the Go server's first line",
            lines.next_line(),
        )
        .await
        .expect("read the Go server's stdout")
        .expect("the Go server exited without printing its address");
        server.addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line from the Go server: {line:?}"))
            .to_owned();
        server
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        // Tokio reaps the killed process in the background.
        let _ = self.child.start_kill();
    }
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} took longer than {limit:?}"),
    }
}

/// A payload with what a JSON stream reader must get right: braces and quotes inside strings,
/// a backslash, a newline, characters Go escapes (`<`, `>`, `&`, U+2028) and non-ASCII text.
fn payload(i: usize) -> String {
    format!("hello {i} {{\"x\":[1,2]}} \\ <a&b> \n\u{2028} grüß 😀 }}{{")
}

/// Asserts that `resp` is the echo server's answer to `val`, stamped with the current UTC time.
fn assert_echo(resp: &Resp, val: &str) {
    assert_eq!(resp.val, format!("server: hello, {val}"), "Val of {resp:?}");
    assert_eq!(resp.err, None, "Err of {resp:?}");
    let ts =
        utc_nanos(&resp.ts).unwrap_or_else(|| panic!("Ts {:?} is not RFC 3339 in UTC", resp.ts));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as i128;
    let skew = Duration::from_nanos((now - ts).unsigned_abs() as u64);
    assert!(
        skew < Duration::from_secs(300),
        "Ts {:?} is {skew:?} away from now",
        resp.ts
    );
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (RFC 3339 in UTC, as Go's `time.RFC3339Nano`
/// writes it: up to nine fraction digits, trailing zeros trimmed) into nanoseconds since the
/// Unix epoch.
fn utc_nanos(ts: &str) -> Option<i128> {
    let field = |at: usize, len: usize| -> Option<i64> {
        let digits = ts.get(at..at + len)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, sep)| ts.as_bytes().get(at) != Some(&sep))
    {
        return None;
    }
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = ts.get(19..)?;
    let mut nanos: i64 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&len) {
            return None;
        }
        nanos = fraction[..len].parse::<i64>().ok()? * 10_i64.pow(9 - len as u32);
        rest = &fraction[len..];
    }
    if rest != "Z" {
        return None;
    }
    // Days since 1970-01-01 in the proleptic Gregorian calendar (eras of 400 years).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

#[test]
fn utc_nanos_reads_go_rfc3339nano() {
    assert_eq!(utc_nanos("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        utc_nanos("2024-02-29T23:59:59.5Z"),
        Some(1_709_251_199_500_000_000)
    );
    assert_eq!(
        utc_nanos("2001-09-09T01:46:40.000000001Z"),
        Some(1_000_000_000_000_000_001)
    );
    for bad in [
        "",
        "2024-02-30T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00+01:00",
        "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00.1234567890Z",
        "2024-01-01 00:00:00Z",
        "2024-1-01T00:00:00Z",
    ] {
        assert_eq!(utc_nanos(bad), None, "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_talks_to_our_server() -> TestResult {
    let client = CLIENT.binary().await;
    let (stdout, stderr) =
        go_client_against_our_server(client, &["-n", "1000", "-timeout", "30s"]).await?;
    assert!(
        stdout.lines().any(|line| line == "ok 1000"),
        "the Go client did not print `ok 1000`:\n{stdout}{stderr}"
    );
    Ok(())
}

/// Runs the Go client `client` against a server of ours on loopback (`-addr` and then
/// `args`), asserts it succeeded, stops the server, and returns the client's stdout and
/// stderr.
async fn go_client_against_our_server(
    client: &Path,
    args: &[&str],
) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    let server = Server::bind("127.0.0.1:0", ServerConfig::default())
        .await?
        .spawn();
    let addr = server.local_addr().to_string();
    let run = Command::new(client)
        .args(["-addr", &addr])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = within(Duration::from_secs(60), "the Go client", run).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Go client failed ({}):\n{stdout}{stderr}",
        output.status
    );
    within(
        Duration::from_secs(10),
        "server shutdown",
        server.shutdown(),
    )
    .await?;
    Ok((stdout.into_owned(), stderr.into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_pool_talks_to_go_server() -> TestResult {
    const REQUESTS: usize = 2000;
    const TASKS: usize = 32;
    let go = GoServer::start().await;
    let options =
        ConnectOptions::new(go.addr.clone()).request_timeout(Some(Duration::from_secs(20)));
    let pool = Pool::builder(JsonManager::new(options))
        .max_size(4)
        .build()?;

    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let pool = pool.clone();
        tasks.spawn(async move {
            let mut answered = 0;
            for i in (task..REQUESTS).step_by(TASKS) {
                let val = payload(i);
                if i % 2 == 0 {
                    // A Uid of our own comes back as it went out.
                    let uid = format!("pool-{i}");
                    let message = Message {
                        uid: uid.clone(),
                        val: val.clone(),
                    };
                    let resp = pool.get().await?.send(message).await?;
                    assert_eq!(resp.uid, uid, "Uid of {resp:?}");
                    assert_echo(&resp, &val);
                } else {
                    // A Uid the connection makes up comes back too.
                    let resp = pool.get().await?.request(val.clone()).await?;
                    assert!(!resp.uid.is_empty(), "empty Uid in {resp:?}");
                    assert_echo(&resp, &val);
                }
                answered += 1;
            }
            Ok::<usize, Box<dyn std::error::Error + Send + Sync>>(answered)
        });
    }
    let mut answered = 0;
    within(
        Duration::from_secs(60),
        "2000 requests through the pool",
        async {
            while let Some(joined) = tasks.join_next().await {
                answered += joined??;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        },
    )
    .await?;
    assert_eq!(answered, REQUESTS);

    let status = pool.status();
    assert!(status.size <= 4, "{status:?}");
    assert!(
        (1..=4).contains(&status.counters.created),
        "the pool opened {} connections",
        status.counters.created
    );
    assert_eq!(status.counters.broken, 0, "{status:?}");
    within(Duration::from_secs(10), "pool close", pool.close()).await;
    drop(go);
    Ok(())
}

// A current-thread runtime: nothing else runs while the test polls, so the order in which it
// queues the requests is the order they leave in.
#[tokio::test(flavor = "current_thread")]
async fn one_conn_pipelines_1000_requests_the_go_server_answers_out_of_order() -> TestResult {
    const REQUESTS: usize = 1000;
    let go = GoServer::start().await;
    let options =
        ConnectOptions::new(go.addr.clone()).request_timeout(Some(Duration::from_secs(20)));
    let conn = Conn::connect(&options).await?;

    // Poll each request once, in order: that queues it on the connection's writer, so
    // request `i` is the `i`-th on the wire.
    let mut requests = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let conn = conn.clone();
        let mut request = Box::pin(async move {
            let message = Message {
                uid: format!("{i}"),
                val: payload(i),
            };
            conn.send(message).await
        });
        assert!(
            futures::poll!(&mut request).is_pending(),
            "request {i} ended before it was sent"
        );
        requests.push(request);
    }
    assert_eq!(
        conn.pending(),
        REQUESTS,
        "every request is in flight at once"
    );

    let answers = within(
        Duration::from_secs(30),
        "1000 pipelined requests",
        futures::future::join_all(requests),
    )
    .await;
    let mut stamps = Vec::with_capacity(REQUESTS);
    for (i, answer) in answers.into_iter().enumerate() {
        let resp = answer?;
        assert_eq!(resp.uid, format!("{i}"), "Uid of {resp:?}");
        assert_echo(&resp, &payload(i));
        stamps.push(utc_nanos(&resp.ts).unwrap_or_default());
    }
    assert_eq!(conn.pending(), 0);
    assert_eq!(conn.unknown_responses(), 0);

    // The Go server stamps each response as it writes it, so the stamps in request order
    // show the order of the responses on the wire.
    let overtaken = stamps.windows(2).filter(|pair| pair[1] < pair[0]).count();
    assert!(
        overtaken > 0,
        "the Go server answered all {REQUESTS} requests in order; this test needs them shuffled"
    );
    println!("{overtaken} of {REQUESTS} responses overtook the request sent before them");

    within(Duration::from_secs(10), "conn close", conn.close()).await;
    assert!(conn.is_closed());
    drop(go);
    Ok(())
}

/// One of `tests/go/utf8.go`'s cases: a request frame whose `Val` is not valid UTF-8, written
/// by hand, and the `Val` Go's `json.Decoder` reads from it.
struct Utf8Case {
    frame: Vec<u8>,
    go_val: String,
}

/// The cases of `tests/go/utf8.go`, as its `-cases` mode prints them.
async fn utf8_cases() -> Vec<Utf8Case> {
    let binary = UTF8.binary().await;
    let run = Command::new(binary)
        .arg("-cases")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = within(Duration::from_secs(30), "utf8 -cases", run)
        .await
        .expect("run utf8 -cases");
    assert!(
        output.status.success(),
        "utf8 -cases failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let hex = |text: &str| -> Vec<u8> {
        assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    };
    let cases: Vec<Utf8Case> = String::from_utf8(output.stdout)
        .expect("hex is ASCII")
        .lines()
        .map(|line| {
            let (frame, val) = line.split_once(' ').expect("two fields");
            Utf8Case {
                frame: hex(frame),
                go_val: String::from_utf8(hex(val)).expect("Go decodes to UTF-8"),
            }
        })
        .collect();
    assert!(cases.len() > 100, "only {} cases", cases.len());
    cases
}

#[tokio::test]
async fn strings_that_are_not_utf8_decode_as_go_decodes_them() {
    use tokio_util::bytes::BytesMut;
    use tokio_util::codec::Decoder;
    use transport_json::JsonCodec;

    let cases = utf8_cases().await;
    let mut not_utf8 = 0;
    for (i, case) in cases.iter().enumerate() {
        not_utf8 += usize::from(std::str::from_utf8(&case.frame).is_err());
        let expected = Message {
            uid: i.to_string(),
            val: case.go_val.clone(),
        };
        // Whole (the plain path when the frame has no escape), and a byte at a time (the
        // scanner, then serde_json).
        for chunk in [case.frame.len(), 1] {
            let mut codec = JsonCodec::<Message, Resp>::new();
            let mut buf = BytesMut::new();
            let mut decoded = Vec::new();
            for piece in case.frame.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(message) = codec.decode(&mut buf).unwrap_or_else(|error| {
                    panic!(
                        "case {i} {:?}: {error}",
                        String::from_utf8_lossy(&case.frame)
                    )
                }) {
                    decoded.push(message);
                }
            }
            assert_eq!(
                decoded,
                std::slice::from_ref(&expected),
                "case {i} {:?} in chunks of {chunk}",
                String::from_utf8_lossy(&case.frame)
            );
        }
    }
    assert!(not_utf8 > 100, "only {not_utf8} cases are not UTF-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_sending_strings_that_are_not_utf8_is_answered_as_go_reads_them() -> TestResult {
    let client = UTF8.binary().await;
    let (stdout, stderr) = go_client_against_our_server(client, &[]).await?;
    assert!(
        stdout.lines().any(|line| line.starts_with("ok ")),
        "the Go client did not print `ok`:\n{stdout}{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_conn_reads_go_responses_that_are_not_utf8_as_go_does() -> TestResult {
    let cases = utf8_cases().await;
    let go = GoServer::spawn(&UTF8, &["-listen", "127.0.0.1:0"]).await;
    let options =
        ConnectOptions::new(go.addr.clone()).request_timeout(Some(Duration::from_secs(20)));
    let conn = Conn::connect(&options).await?;
    let answers = within(
        Duration::from_secs(30),
        "a request per case",
        futures::future::join_all((0..cases.len()).map(|i| conn.request(i.to_string()))),
    )
    .await;
    for (i, (answer, case)) in answers.into_iter().zip(&cases).enumerate() {
        let resp = answer.unwrap_or_else(|error| panic!("case {i}: {error}"));
        assert_eq!(resp.val, case.go_val, "case {i}");
    }
    assert!(!conn.is_closed(), "the connection is still open");
    within(Duration::from_secs(10), "conn close", conn.close()).await;
    drop(go);
    Ok(())
}
