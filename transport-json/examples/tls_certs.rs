//! Writes a throwaway PKI for trying TLS: a test CA, a server certificate for `localhost` and
//! `127.0.0.1`, a client certificate for mutual TLS, and another CA (to see a server refused).
//!
//! ```sh
//! cargo run -p transport-json --example tls_certs -- certs   # writes certs/*.pem, certs/*.key
//! cargo run --release --features tls --example echo_server -- --addr 127.0.0.1:3443 \
//!     --tls-cert certs/server.pem --tls-key certs/server.key --tls-client-ca certs/ca.pem
//! cargo run --release --features tls --example client -- --addr 127.0.0.1:3443 \
//!     --tls-ca certs/ca.pem --tls-cert certs/client.pem --tls-key certs/client.key
//! ```
//!
//! The keys are made afresh on each run and written unencrypted: for tests and trials only.
//! The root package's tests of the examples (`tests/tls_examples.rs`) make their certificates
//! with this program, so that rcgen stays a dev-dependency of this package alone.
#![forbid(unsafe_code)]

#[path = "support/pki.rs"]
mod pki;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), None) = (args.next().filter(|dir| !dir.starts_with('-')), args.next()) else {
        eprintln!("usage: cargo run -p transport-json --example tls_certs -- DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(&dir);
    if let Err(error) = std::fs::create_dir_all(dir) {
        eprintln!("tls_certs: cannot make {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    match pki::write(dir) {
        Ok(()) => {
            println!(
                "tls_certs: wrote {} in {}",
                pki::FILES.join(", "),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            eprintln!("tls_certs: {text}");
            ExitCode::FAILURE
        }
    }
}
