//! `--metrics-addr` of the examples (feature `prometheus`): Prometheus text served at
//! `http://ADDR/metrics` by metrics-exporter-prometheus's own HTTP listener.
//!
//! Each example includes this file with `#[cfg(feature = "prometheus")] #[path =
//! "support/prometheus.rs"] mod prometheus;`.

use std::error::Error;
use std::net::SocketAddr;

use std::process::ExitCode;

use metrics_exporter_prometheus::PrometheusBuilder;

use super::cli::{self, Args};

/// `--metrics-addr ADDR`, when given: [`serve`]s there and says where on stderr, as `program`.
/// Call it before making what reports.
///
/// # Errors
/// The exit code to return when it cannot serve, after saying why.
pub fn serve_flag(args: &Args, program: &str) -> Result<(), ExitCode> {
    if let Some(metrics_addr) = args.given("metrics-addr") {
        match serve(metrics_addr) {
            Ok(addr) => eprintln!("{program}: Prometheus metrics at http://{addr}/metrics"),
            Err(error) => {
                let context = format!("{program}: cannot serve metrics on {metrics_addr}");
                return Err(cli::fail(&context, &*error));
            }
        }
    }
    Ok(())
}

/// Installs the Prometheus recorder and serves its text at `http://ADDR/metrics` from a task of
/// the current Tokio runtime; returns the address served. Port 0 takes a free port: the
/// exporter binds the address itself and does not say which port it got, so a free one is
/// found first (and named in the address returned).
///
/// Call it before making what reports (a server, a pool): they register their metrics with
/// the recorder in force when they are made.
///
/// # Errors
/// `addr` is not `IP:PORT`, the address cannot be bound, or a recorder is installed already.
pub fn serve(addr: &str) -> Result<SocketAddr, Box<dyn Error>> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|error| format!("{addr:?} is not IP:PORT ({error})"))?;
    let addr = match addr.port() {
        0 => std::net::TcpListener::bind(addr)?.local_addr()?,
        _ => addr,
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    Ok(addr)
}
