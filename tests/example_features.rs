//! The examples as `cargo run --example NAME` builds them, with no optional feature: the
//! flags of a feature they were built without are refused, with a message that says which
//! feature to build with, instead of being ignored. `tests/programs` builds the programs.
#![forbid(unsafe_code)]

mod programs;

use std::path::Path;
use std::process::{Output, Stdio};

use programs::{RUN_BOUND, plain_programs};
use tokio::process::Command;
use tokio::time::timeout;

/// Runs `program` with `args` (and a free port, should it start serving after all).
async fn run(program: &Path, args: &[&str]) -> Output {
    let command = Command::new(program)
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    timeout(RUN_BOUND, command)
        .await
        .expect("a refused flag ends the program at once")
        .expect("the program runs")
}

#[tokio::test]
async fn tls_flags_without_the_tls_feature_are_refused_with_how_to_build_it() {
    let programs = plain_programs().await;
    let cases = [
        (&programs.echo_server, "echo_server", "--tls-cert"),
        (&programs.echo_server, "echo_server", "--tls-client-ca"),
        (&programs.client, "client", "--tls-ca"),
        (&programs.client, "client", "--tls-server-name"),
    ];
    for (program, name, flag) in cases {
        let out = run(program, &[flag, "some.pem"]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {flag}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}: {flag} needs the `tls` feature"))
                && stderr.contains("--features tls"),
            "{name} {flag}: {stderr}"
        );
    }
}

#[tokio::test]
async fn metrics_addr_without_the_prometheus_feature_is_refused_with_how_to_build_it() {
    let programs = plain_programs().await;
    for (program, name) in [
        (&programs.echo_server, "echo_server"),
        (&programs.client, "client"),
    ] {
        let out = run(program, &["--metrics-addr", "127.0.0.1:0"]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{name}: --metrics-addr needs the `prometheus` feature"
            )) && stderr.contains("--features prometheus"),
            "{name}: {stderr}"
        );
    }
}
