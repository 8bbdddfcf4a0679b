//! `examples/echo_server.rs` and `examples/client.rs` with their TLS flags (feature `tls`), as
//! a user runs them: certificates made at test time (transport-json's `tls_certs` example,
//! rcgen) in PEM files, the built programs talking over loopback, judged by exit status and
//! summary. `tests/programs` builds the programs.
#![forbid(unsafe_code)]

mod programs;

use std::process::{ExitStatus, Stdio};

use programs::{Pki, RUN_BOUND, echo_server, programs, strings};
use tokio::process::Command;
use tokio::time::timeout;

/// Runs the client against `addr` with `args`; returns its exit status and stderr.
async fn client(addr: &str, args: &[String]) -> (ExitStatus, String) {
    let output = timeout(
        RUN_BOUND,
        Command::new(&programs().await.client)
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

#[tokio::test]
async fn examples_talk_mutual_tls_and_refuse_clients_without_a_trusted_certificate() {
    let pki = Pki::new().await;
    let server = echo_server(&strings(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
    ]))
    .await;

    let (status, stderr) = client(
        &server.addr,
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
        &server.addr,
        &strings(&["--requests", "3", "--tls-ca", &pki.path("ca.pem")]),
    )
    .await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("CertificateRequired"), "{stderr}");

    // Trusting another CA: the client refuses the server.
    let (status, stderr) = client(
        &server.addr,
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
    let pki = Pki::new().await;
    let server = echo_server(&strings(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ]))
    .await;
    // The certificate names 127.0.0.1 too.
    let (status, stderr) = client(
        &server.addr,
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

    let (status, stderr) = client(&server.addr, &strings(&["--requests", "3"])).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("0 of 3 requests answered"), "{stderr}");
}

#[tokio::test]
async fn half_given_tls_flags_are_usage_errors() {
    let pki = Pki::new().await;
    let programs = programs().await;
    let (server, client) = (&programs.echo_server, &programs.client);
    let run = |program: &std::path::PathBuf, args: Vec<String>| {
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
