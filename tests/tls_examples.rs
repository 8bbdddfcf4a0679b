//! `examples/echo_server.rs` and `examples/client.rs` with their TLS flags, as a user runs
//! them: certificates made at test time (rcgen) in PEM files, the built programs talking
//! over loopback, judged by exit status and summary.
//!
//! As in `client_example.rs`, the first test runs `cargo build` for both examples in this
//! test's profile and takes the programs' paths from cargo's JSON messages.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;
use tokio::time::timeout;

/// The bound on building the examples: generous, the machine may be busy.
const BUILD_BOUND: Duration = Duration::from_secs(600);
/// The bound on a run of a program.
const RUN_BOUND: Duration = Duration::from_secs(60);

/// The built `echo_server` and `client`, built at most once per test binary.
static PROGRAMS: OnceCell<(PathBuf, PathBuf)> = OnceCell::const_new();

async fn programs() -> &'static (PathBuf, PathBuf) {
    PROGRAMS.get_or_init(build).await
}

/// Runs `cargo build --example echo_server --example client` in this test's profile.
async fn build() -> (PathBuf, PathBuf) {
    let output = timeout(
        BUILD_BOUND,
        Command::new(env!("CARGO"))
            .args(["build", "--example", "echo_server", "--example", "client"])
            .args(["--profile", &profile()])
            .args(["--message-format", "json-render-diagnostics"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the examples build within the bound")
    .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the examples failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let executable = |name: &str| {
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|m| {
                m["reason"] == "compiler-artifact"
                    && m["target"]["name"] == name
                    && m["target"]["kind"][0] == "example"
            })
            .and_then(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("cargo's messages name the {name} example's executable"))
    };
    (executable("echo_server"), executable("client"))
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

/// PEM files in a directory of their own, removed on drop: a CA, a server certificate for
/// `localhost` and `127.0.0.1` and a client certificate signed by it, and a CA nobody trusts.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mux-pool-tls-examples-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let test_ca = ca("test CA");
        pki.write("ca.pem", &test_ca.pem());
        pki.leaf(&test_ca, "server", &["localhost", "127.0.0.1"]);
        pki.leaf(&test_ca, "client", &["client.test"]);
        pki.write("other-ca.pem", &ca("another CA").pem());
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.join(name), contents).unwrap();
    }

    /// Writes `NAME.pem` and `NAME.key`: a certificate for `names` signed by `issuer`.
    fn leaf(&self, issuer: &CertifiedIssuer<'static, KeyPair>, name: &str, names: &[&str]) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Starts `echo_server --addr 127.0.0.1:0` with `args`; returns it (killed on drop) and the
/// address it says it listens on.
async fn echo_server(args: &[String]) -> (Child, String) {
    let (server, _) = programs().await;
    let mut child = Command::new(server)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("echo_server starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = timeout(RUN_BOUND, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("echo_server: listening on ") {
                return rest.split(';').next().unwrap().to_owned();
            }
        }
        panic!("echo_server ended without listening");
    })
    .await
    .expect("echo_server says where it listens");
    // Keep reading its stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Runs the client against `addr` with `args`; returns its exit status and stderr.
async fn client(addr: &str, args: &[String]) -> (ExitStatus, String) {
    let (_, client) = programs().await;
    let output = timeout(
        RUN_BOUND,
        Command::new(client)
            .args(["--addr", addr, "--quiet"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client ends within the bound")
    .expect("the client runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test]
async fn examples_talk_mutual_tls_and_refuse_clients_without_a_trusted_certificate() {
    let pki = Pki::new();
    let (_server, addr) = echo_server(&strings(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
    ]))
    .await;

    let (status, stderr) = client(
        &addr,
        &strings(&[
            "--requests",
            "20",
            "--expect-prefix",
            "server: hello, ",
            "--tls-ca",
            &pki.path("ca.pem"),
            "--tls-cert",
            &pki.path("client.pem"),
            "--tls-key",
            &pki.path("client.key"),
        ]),
    )
    .await;
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("20 of 20 requests answered"), "{stderr}");

    // No client certificate: every request fails with the server's alert.
    let (status, stderr) = client(
        &addr,
        &strings(&["--requests", "3", "--tls-ca", &pki.path("ca.pem")]),
    )
    .await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("CertificateRequired"), "{stderr}");

    // Trusting another CA: the client refuses the server.
    let (status, stderr) = client(
        &addr,
        &strings(&["--requests", "3", "--tls-ca", &pki.path("other-ca.pem")]),
    )
    .await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );
}

#[tokio::test]
async fn examples_talk_tls_and_a_plain_client_is_refused() {
    let pki = Pki::new();
    let (_server, addr) = echo_server(&strings(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ]))
    .await;
    // The certificate names 127.0.0.1 too.
    let (status, stderr) = client(
        &addr,
        &strings(&[
            "--requests",
            "20",
            "--tls-ca",
            &pki.path("ca.pem"),
            "--tls-server-name",
            "127.0.0.1",
        ]),
    )
    .await;
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("20 of 20 requests answered"), "{stderr}");

    let (status, stderr) = client(&addr, &strings(&["--requests", "3"])).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("0 of 3 requests answered"), "{stderr}");
}

#[tokio::test]
async fn half_given_tls_flags_are_usage_errors() {
    let pki = Pki::new();
    let (server, client) = programs().await;
    let run = |program: &PathBuf, args: Vec<String>| {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).kill_on_drop(true);
        async move { timeout(RUN_BOUND, command.output()).await.unwrap().unwrap() }
    };
    let out = run(server, strings(&["--tls-cert", &pki.path("server.pem")])).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(client, strings(&["--tls-cert", &pki.path("client.pem")])).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let missing = pki.path("missing.pem");
    let out = run(
        server,
        strings(&["--tls-cert", &missing, "--tls-key", &pki.path("server.key")]),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not read"), "{stderr}");
}
