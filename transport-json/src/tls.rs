//! TLS and mutual TLS (feature `tls`), on rustls with its `ring` provider.
//!
//! - Client: set [`ConnectOptions::tls`](crate::ConnectOptions::tls) to a [`TlsConnect`];
//!   [`Conn::connect`](crate::Conn::connect) then opens the TCP (or Unix) stream with all its
//!   socket options and runs the TLS handshake on it, both within the connect timeout. A
//!   [`JsonManager`](crate::JsonManager) with such options pools TLS connections.
//! - Server: wrap any [`Listener`](crate::server::Listener) in a [`TlsListener`] with a
//!   [`TlsAccept`] (a certificate and key, and for mutual TLS the CA that client certificates
//!   must chain to). Each client's handshake runs in its own connection's task, bounded by
//!   [`TlsAccept::handshake_timeout`]; the accept loop never waits on one.
//!
//! ```no_run
//! use transport_json::server::{Server, ServerConfig};
//! use transport_json::tls::{TlsAccept, TlsConnect, TlsListener};
//! use transport_json::{Conn, ConnectOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsAccept::from_pem_files("server.pem", "server.key")?;
//! let listener = TlsListener::new(tokio::net::TcpListener::bind("127.0.0.1:3443").await?, tls);
//! let server = Server::new(listener, ServerConfig::default())?.spawn();
//!
//! let options = ConnectOptions::new("127.0.0.1:3443")
//!     .tls(Some(TlsConnect::from_ca_file("ca.pem", "localhost")?));
//! let conn = Conn::connect(&options).await?;
//! let resp = conn.request("hello").await?;
//! assert_eq!(resp.val, "server: hello, hello");
//! # server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors a client sees
//! - A server whose certificate does not chain to the configured CA, or does not name the
//!   server name: [`Error::Tls`](crate::Error::Tls) from `connect`, its source reading
//!   `invalid peer certificate: UnknownIssuer` (or `NotValidForName`, `Expired`, ...).
//! - A server that does not speak TLS: [`Error::Tls`](crate::Error::Tls) (the server closes
//!   on the handshake's bytes, or answers bytes that are not TLS).
//! - A server requiring a client certificate the client does not present (or one it does not
//!   trust): with TLS 1.3 the client finishes its side of the handshake before the server
//!   checks the certificate, so `connect` succeeds and the first request fails with
//!   [`Error::Closed`](crate::Error::Closed), whose cause reads
//!   `received fatal alert: CertificateRequired` (or `UnknownCA`, ...).

mod accept;
mod connect;
mod stream;

use std::io;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::rustls;

pub use accept::{DEFAULT_HANDSHAKE_TIMEOUT, TlsAccept, TlsListener};
pub use connect::TlsConnect;
pub use stream::TlsServerStream;

/// Why a TLS setting could not be made: a file that cannot be read or holds no usable PEM
/// item, a server name that is not one, or a configuration rustls refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("could not read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The file is not valid PEM.
    #[error("{} is not a valid PEM file", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: pem::Error,
    },
    /// The file holds no PEM item of the kind wanted (`CERTIFICATE`, or a `PRIVATE KEY` of
    /// PKCS#8, PKCS#1 or SEC1 form).
    #[error("{} holds no PEM {what}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for: `certificate` or `private key`.
        what: &'static str,
    },
    /// A CA certificate of the file was refused as a trust anchor.
    #[error("a CA certificate in {} was refused", path.display())]
    CaCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {name:?}")]
    ServerName {
        /// The name as given.
        name: String,
        /// What the parser said.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// rustls refused the configuration (a key that does not match its certificate, a key
    /// type it does not support, no usable protocol version).
    #[error("rustls refused the TLS configuration")]
    Config(#[source] rustls::Error),
    /// rustls refused the client-certificate verifier (no usable CA certificate).
    #[error("rustls refused the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}

/// Every certificate of the PEM file at `path`, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| pem_error(path, source, "certificate");
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key of the PEM file at `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| pem_error(path, source, "private key"))
}

/// A trust store of every certificate of the PEM file at `path`.
fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::CaCertificate {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The [`TlsError`] of a PEM parse of `path` that looked for `what`.
fn pem_error(path: &Path, source: pem::Error, what: &'static str) -> TlsError {
    let path = path.to_path_buf();
    match source {
        pem::Error::Io(source) => TlsError::Read { path, source },
        pem::Error::NoItemsFound => TlsError::Missing { path, what },
        source => TlsError::Pem { path, source },
    }
}

/// The crypto provider every configuration made here uses: rustls's `ring` provider, named
/// rather than taken from the process default, so that another crate enabling a second
/// provider cannot make the choice ambiguous.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
