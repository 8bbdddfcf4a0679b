//! The echo server of the original design, as a program: answers every
//! `{"Uid":..,"Val":..}` with `{"Uid":..,"Val":"server: hello, "+Val,"Ts":<RFC 3339 UTC>}`.
//!
//! ```sh
//! cargo run --release --example echo_server                 # listens on 127.0.0.1:3000
//! cargo run --release --example echo_server -- --addr 0.0.0.0:4000
//! cargo run --release --example echo_server -- --addr unix:/tmp/echo.sock   # a Unix socket
//! cargo run --release --example echo_server -- --max-connections 64 --idle-timeout 60 --frame-timeout 5
//! cargo run --release --features tls --example echo_server -- --addr 127.0.0.1:3443 \
//!     --tls-cert server.pem --tls-key server.key                 # TLS
//! cargo run --release --features tls --example echo_server -- --addr 127.0.0.1:3443 \
//!     --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem   # mutual TLS
//! ```
//!
//! With `--tls-cert` and `--tls-key` (PEM files: the certificate chain, server's first, and
//! its private key) it serves TLS, on TCP or a Unix socket; `--tls-client-ca` also requires
//! every client to present a certificate signed by a CA of that PEM file. The TLS flags need
//! the root package's `tls` feature (rustls); a build without it refuses them and says so.
//! `cargo run -p transport-json --example tls_certs -- DIR` writes certificates to try it.
//!
//! With `--metrics-addr ADDR` (`IP:PORT`; port 0 takes a free one, printed) it serves
//! Prometheus text at `http://ADDR/metrics`: clients accepted, connections open, requests
//! answered and decode errors (transport-json's server metrics, labelled with the address it
//! serves). That needs the root package's `prometheus` feature:
//!
//! ```sh
//! cargo run --release --features prometheus --example echo_server -- --metrics-addr 127.0.0.1:9000
//! curl -s http://127.0.0.1:9000/metrics
//! ```
//!
//! It runs until Ctrl-C (or SIGTERM), then shuts down gracefully: it stops accepting, lets
//! the requests in flight finish and their responses flush, and closes every connection.
//! Talk to it with `cargo run --release --example client`, or with the original Go client.
#![forbid(unsafe_code)]

#[path = "support/cli.rs"]
mod cli;
#[cfg(feature = "prometheus")]
#[path = "support/prometheus.rs"]
mod prometheus;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cli::{Flag, Spec};
use transport_json::conn::UNIX_PREFIX;
use transport_json::server::{EchoHandler, Listener, Server, ServerConfig, shutdown_signal};
#[cfg(feature = "tls")]
use transport_json::tls::{TlsAccept, TlsListener};

static SPEC: Spec = Spec {
    name: "echo_server",
    about: "The JSON echo server: answers each request with \"server: hello, \" + Val.",
    flags: &[
        Flag {
            name: "addr",
            value: Some("ADDR"),
            default: "127.0.0.1:3000",
            help: "address to listen on: host:port, or unix:/path for a Unix socket",
        },
        Flag {
            name: "max-connections",
            value: Some("N"),
            default: "1024",
            help: "connections served at once; at the cap the idlest is closed for a new one",
        },
        Flag {
            name: "idle-timeout",
            value: Some("SECS"),
            default: "900",
            help: "close a connection idle this long (or off)",
        },
        Flag {
            name: "frame-timeout",
            value: Some("SECS"),
            default: "30",
            help: "close a connection that leaves a request half sent this long (or off)",
        },
        Flag {
            name: "write-timeout",
            value: Some("SECS"),
            default: "60",
            help: "close a connection that does not read its responses for this long (or off)",
        },
        Flag {
            name: "tls-cert",
            value: Some("FILE"),
            default: "",
            help: "serve TLS with this PEM certificate chain (needs --tls-key; feature tls)",
        },
        Flag {
            name: "tls-key",
            value: Some("FILE"),
            default: "",
            help: "the PEM private key of --tls-cert",
        },
        Flag {
            name: "tls-client-ca",
            value: Some("FILE"),
            default: "",
            help: "mutual TLS: admit only clients with a certificate of a CA in this PEM file",
        },
        Flag {
            name: "metrics-addr",
            value: Some("ADDR"),
            default: "",
            help: "serve Prometheus text at http://ADDR/metrics (IP:PORT; feature prometheus)",
        },
    ],
};

/// The flags of the `tls` feature, refused without it.
const TLS_FLAGS: [&str; 3] = ["tls-cert", "tls-key", "tls-client-ca"];

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::parse(&SPEC);
    let addr = args.value("addr");
    let config = ServerConfig {
        max_connections: args.positive("max-connections"),
        idle_timeout: args.timeout("idle-timeout"),
        frame_timeout: args.timeout("frame-timeout"),
        write_timeout: args.timeout("write-timeout"),
        ..ServerConfig::default()
    };

    if let Err(code) = cli::refuse_missing_features(&args, &TLS_FLAGS) {
        return code;
    }
    // Before the server is made: it registers its metrics with the recorder then in force.
    #[cfg(feature = "prometheus")]
    if let Err(code) = prometheus::serve_flag(&args, "echo_server") {
        return code;
    }
    #[cfg(feature = "tls")]
    match tls_settings(&args) {
        Ok(None) => {}
        Ok(Some(tls)) => {
            eprintln!(
                "echo_server: serving TLS ({})",
                match args.given("tls-client-ca") {
                    Some(_) => "only clients with a certificate of --tls-client-ca",
                    None => "no client certificate asked",
                }
            );
            return match serve_tls(addr, tls, config).await {
                Ok(drained) => stopped(drained),
                Err(error) => {
                    cli::fail(&format!("echo_server: cannot serve TLS on {addr}"), &*error)
                }
            };
        }
        Err(code) => return code,
    }

    // The socket file of a Unix socket is removed when the server stops.
    let result = match addr.strip_prefix(UNIX_PREFIX) {
        #[cfg(unix)]
        Some(path) => match Server::bind_unix(path, config) {
            Ok(server) => run(server).await,
            Err(error) => return cli::fail(&format!("cannot listen on {addr}"), &error),
        },
        #[cfg(not(unix))]
        Some(_) => {
            eprintln!("echo_server: Unix sockets are not supported on this platform");
            return ExitCode::from(2);
        }
        None => match Server::bind(addr, config).await {
            Ok(server) => run(server).await,
            Err(error) => return cli::fail(&format!("cannot listen on {addr}"), &error),
        },
    };
    match result {
        Ok(drained) => stopped(drained),
        Err(error) => cli::fail("echo_server: failed", &error),
    }
}

fn stopped(drained: Duration) -> ExitCode {
    eprintln!("echo_server: stopped ({drained:.1?} to drain)");
    ExitCode::SUCCESS
}

/// The TLS settings of `--tls-cert`, `--tls-key` and `--tls-client-ca`; `None` without them.
#[cfg(feature = "tls")]
fn tls_settings(args: &cli::Args) -> Result<Option<TlsAccept>, ExitCode> {
    let cert = args.given("tls-cert");
    let key = args.given("tls-key");
    let client_ca = args.given("tls-client-ca");
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) if client_ca.is_none() => return Ok(None),
        _ => {
            eprintln!("echo_server: TLS needs both --tls-cert and --tls-key");
            return Err(ExitCode::from(2));
        }
    };
    let tls = match client_ca {
        Some(ca) => TlsAccept::from_pem_files_with_client_ca(cert, key, ca),
        None => TlsAccept::from_pem_files(cert, key),
    };
    tls.map(Some)
        .map_err(|error| cli::fail("echo_server: invalid TLS settings", &error))
}

/// Serves TLS on `addr` (TCP, or `unix:PATH`) until Ctrl-C or SIGTERM.
#[cfg(feature = "tls")]
async fn serve_tls(
    addr: &str,
    tls: TlsAccept,
    config: ServerConfig,
) -> Result<Duration, Box<dyn std::error::Error>> {
    match addr.strip_prefix(UNIX_PREFIX) {
        #[cfg(unix)]
        Some(path) => {
            let listener = tokio::net::UnixListener::bind(path)?;
            // This listener is ours, not `bind_unix`'s: remove its socket file ourselves.
            let served = run(Server::new(TlsListener::new(listener, tls), config)?).await;
            let _ = std::fs::remove_file(path);
            Ok(served?)
        }
        #[cfg(not(unix))]
        Some(_) => Err("Unix sockets are not supported on this platform".into()),
        None => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(run(Server::new(TlsListener::new(listener, tls), config)?).await?)
        }
    }
}

/// Serves until Ctrl-C or SIGTERM; returns how long the graceful shutdown took.
async fn run<L: Listener>(server: Server<EchoHandler, L>) -> std::io::Result<Duration> {
    // No tracing subscriber is installed (the workspace does not depend on one), so the
    // server's own `tracing` events are not shown: this program says what matters itself.
    eprintln!(
        "echo_server: listening on {}; Ctrl-C to stop",
        server.local()
    );

    let mut signalled = None;
    server
        .serve(async {
            shutdown_signal().await;
            signalled = Some(Instant::now());
            eprintln!("echo_server: shutting down: finishing the requests in flight");
        })
        .await?;
    Ok(signalled.map(|at| at.elapsed()).unwrap_or_default())
}
