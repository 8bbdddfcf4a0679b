//! What the tests of the examples' optional features share (`tls_examples.rs`,
//! `metrics_example.rs`): building the example programs with this test's features, starting
//! `echo_server` on a free loopback port, and a throwaway PKI.
//!
//! Cargo gives tests the path of a `[[bin]]` but not of an example, so the first test that
//! needs the programs runs `cargo build` for them with the cargo that built this test, in the
//! same profile and with the same root features (`tls`, `prometheus`: those this test was
//! built with), and takes their paths from cargo's JSON messages. The PKI is written by
//! transport-json's `tls_certs` example: rcgen is a dev-dependency of transport-json alone,
//! so the demo's build never compiles it. That example is built by a cargo run of its own:
//! building it with the others would build them with transport-json's dev-dependencies'
//! features too (its `tls` and `metrics`), not as a user's `cargo run --example` does.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;
use tokio::time::timeout;

/// The bound on building the programs: generous, the machine may be busy.
const BUILD_BOUND: Duration = Duration::from_secs(600);
/// The bound on a run of a program, or on a program's start.
pub const RUN_BOUND: Duration = Duration::from_secs(60);

/// The built example programs of this package.
pub struct Programs {
    pub echo_server: PathBuf,
    pub client: PathBuf,
}

/// The programs with this test's features, built at most once per test binary.
static PROGRAMS: OnceCell<Programs> = OnceCell::const_new();
/// The programs with no optional feature, built at most once per test binary.
static PLAIN_PROGRAMS: OnceCell<Programs> = OnceCell::const_new();
/// transport-json's `tls_certs`, built at most once per test binary.
static TLS_CERTS: OnceCell<PathBuf> = OnceCell::const_new();

/// The programs built with this test's features; the first caller builds them, the others
/// wait for it.
pub async fn programs() -> &'static Programs {
    PROGRAMS.get_or_init(|| build(features())).await
}

/// The programs built with no optional feature, as `cargo run --example NAME` builds them.
///
/// A test binary uses this or [`programs`], never both: cargo puts both builds of a program
/// at the same path.
pub async fn plain_programs() -> &'static Programs {
    PLAIN_PROGRAMS.get_or_init(|| build(String::new())).await
}

/// The root package's optional features this test was built with: the programs are built
/// with the same, so tests run under `--all-features` share one build of them.
fn features() -> String {
    let mut features = Vec::new();
    if cfg!(feature = "tls") {
        features.push("mux-pool/tls");
    }
    if cfg!(feature = "prometheus") {
        features.push("mux-pool/prometheus");
    }
    features.join(",")
}

/// transport-json's `tls_certs` example program; the first caller builds it.
async fn tls_certs() -> &'static Path {
    TLS_CERTS
        .get_or_init(|| async {
            let mut built = cargo_build(&["-p", "transport-json", "--example", "tls_certs"]).await;
            built.remove(0)
        })
        .await
}

/// Runs `cargo build` for `echo_server` and `client` in this test's profile, with `features`
/// (`,`-separated, or empty).
async fn build(features: String) -> Programs {
    let mut args = vec![
        "-p",
        "mux-pool",
        "--example",
        "echo_server",
        "--example",
        "client",
    ];
    if !features.is_empty() {
        args.extend(["--features", &features]);
    }
    let mut built = cargo_build(&args).await.into_iter();
    Programs {
        echo_server: built.next().expect("two programs"),
        client: built.next().expect("two programs"),
    }
}

/// Runs `cargo build ARGS` in this test's profile; returns the executables of the examples
/// `ARGS` names with `--example`, in their order.
async fn cargo_build(args: &[&str]) -> Vec<PathBuf> {
    let mut command = Command::new(env!("CARGO"));
    command
        .arg("build")
        .args(args)
        .args(["--profile", &profile()])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = timeout(BUILD_BOUND, command.output())
        .await
        .expect("the programs build within the bound")
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "`cargo build {}` failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let executable = |name: &&str| {
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|m| {
                m["reason"] == "compiler-artifact"
                    && m["target"]["name"] == *name
                    && m["target"]["kind"][0] == "example"
            })
            .and_then(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("cargo's messages name the {name} example's executable"))
    };
    let examples = args
        .iter()
        .zip(args.iter().skip(1))
        .filter(|(flag, _)| **flag == "--example")
        .map(|(_, name)| name);
    examples.map(executable).collect()
}

/// This test's cargo profile, read off its directory (`target/<dir>/deps/<test>`).
fn profile() -> String {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .expect("the test runs from target/<profile>/deps")
        .to_owned();
    if dir == "debug" {
        "dev".to_owned()
    } else {
        dir
    }
}

/// PEM files in a directory of their own, removed on drop, written by `tls_certs`: `ca.pem`,
/// `server.pem`/`.key` (for `localhost` and `127.0.0.1`), `client.pem`/`.key`, both by that
/// CA, and `other-ca.pem`, a CA nobody here trusts.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub async fn new() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mux-pool-tls-examples-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let pki = Pki { dir };
        let output = timeout(
            RUN_BOUND,
            Command::new(tls_certs().await)
                .arg(&pki.dir)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("tls_certs ends within the bound")
        .expect("tls_certs runs");
        assert!(output.status.success(), "tls_certs failed: {output:?}");
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `echo_server` (killed on drop): where it listens, and what it printed before.
pub struct EchoServer {
    pub child: Child,
    /// The address of its "listening on" line.
    pub addr: String,
    /// The lines it printed on stderr before that one.
    pub before: Vec<String>,
}

/// Starts `echo_server --addr 127.0.0.1:0` with `args`, and waits until it says where it
/// listens.
pub async fn echo_server(args: &[String]) -> EchoServer {
    let mut child = Command::new(&programs().await.echo_server)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("echo_server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut before = Vec::new();
    let addr = timeout(RUN_BOUND, async {
        while let Some(line) = lines.next_line().await.expect("stderr reads") {
            if let Some(rest) = line.strip_prefix("echo_server: listening on ") {
                return rest.split(';').next().expect("split yields one").to_owned();
            }
            before.push(line);
        }
        panic!("echo_server ended without listening: {before:?}");
    })
    .await
    .expect("echo_server says where it listens");
    // Keep reading its stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    EchoServer {
        child,
        addr,
        before,
    }
}

/// `args` as owned strings.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}
