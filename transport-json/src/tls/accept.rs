//! The server side: [`TlsAccept`] (what the server presents and whom it lets in) and
//! [`TlsListener`], a [`Listener`] whose streams speak TLS.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, server::WebPkiClientVerifier};

use super::stream::TlsServerStream;
use super::{TlsError, provider, read_certs, read_key, read_roots};
use crate::conn::Endpoint;
use crate::server::{Listener, ServerConfig};

/// How long a client may take over its TLS handshake, from accept, unless
/// [`TlsAccept::handshake_timeout`] says otherwise: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS settings: its certificate chain and key, whether clients must present a
/// certificate (mutual TLS), and how long a handshake may take.
///
/// Cheap to clone (the rustls configuration is shared).
#[derive(Clone)]
pub struct TlsAccept {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    client_auth: bool,
}

impl TlsAccept {
    /// Presents the certificate chain of the PEM file `cert_file` (the server's certificate
    /// first, then any intermediates) with the private key of the PEM file `key_file`; asks
    /// clients for no certificate.
    ///
    /// # Errors
    /// A file cannot be read or holds no certificate or key ([`TlsError::Read`],
    /// [`TlsError::Missing`], [`TlsError::Pem`]), or the key does not fit
    /// ([`TlsError::Config`]).
    pub fn from_pem_files(
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth();
        let config = builder
            .with_single_cert(
                read_certs(cert_file.as_ref())?,
                read_key(key_file.as_ref())?,
            )
            .map_err(TlsError::Config)?;
        Ok(Self::with_auth(config, false))
    }

    /// As [`from_pem_files`](TlsAccept::from_pem_files), and requires every client to present
    /// a certificate that chains to a CA of the PEM file `client_ca_file` (mutual TLS). A
    /// client without one, or with one from another CA, fails its handshake and is closed
    /// before any request is read.
    ///
    /// # Errors
    /// As [`from_pem_files`](TlsAccept::from_pem_files); and [`TlsError::CaCertificate`] or
    /// [`TlsError::ClientVerifier`] when the CA file holds no usable CA certificate.
    pub fn from_pem_files_with_client_ca(
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
        client_ca_file: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let roots = Arc::new(read_roots(client_ca_file.as_ref())?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(TlsError::ClientVerifier)?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                read_certs(cert_file.as_ref())?,
                read_key(key_file.as_ref())?,
            )
            .map_err(TlsError::Config)?;
        Ok(Self::with_auth(config, true))
    }

    /// Uses a rustls configuration made by the caller (its own verifier, ALPN, session
    /// cache, resumption ...).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        TlsAccept {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            client_auth: false,
        }
    }

    fn with_auth(config: rustls::ServerConfig, client_auth: bool) -> Self {
        TlsAccept {
            client_auth,
            ..TlsAccept::from_config(Arc::new(config))
        }
    }

    /// Sets how long a client may take over its handshake, counted from accept (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]). A client that has not finished by then (one that
    /// sends nothing, or too slowly) is closed, so it cannot hold a connection slot with a
    /// handshake that never ends.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The rustls configuration in use.
    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        self.acceptor.config()
    }
}

impl fmt::Debug for TlsAccept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAccept")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("client_ca", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// A [`Listener`] that serves TLS over the streams of another (a TCP or Unix listener, or
/// one of your own).
///
/// `accept` returns each client at once, before its handshake: the handshake runs in the
/// client's connection task, at its first read or write, within
/// [`TlsAccept::handshake_timeout`]. So a slow or silent client never holds up the accept
/// loop, and a client that fails its handshake (plain text, a wrong or missing client
/// certificate, the timeout) fails its connection's first read, which closes it.
///
/// ```no_run
/// use transport_json::server::{Server, ServerConfig};
/// use transport_json::tls::{TlsAccept, TlsListener};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = TlsAccept::from_pem_files_with_client_ca("server.pem", "server.key", "clients-ca.pem")?;
/// let listener = TlsListener::new(tokio::net::TcpListener::bind("0.0.0.0:3443").await?, tls);
/// Server::new(listener, ServerConfig::default())?.serve(async {}).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TlsListener<L> {
    inner: L,
    tls: TlsAccept,
}

impl<L: Listener> TlsListener<L> {
    /// Serves TLS with `tls` over the streams `inner` accepts.
    pub fn new(inner: L, tls: TlsAccept) -> Self {
        TlsListener { inner, tls }
    }

    /// The listener under the TLS.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The TLS settings.
    pub fn tls(&self) -> &TlsAccept {
        &self.tls
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Stream = TlsServerStream<L::Stream>;

    /// Accepts the next client of the inner listener and returns it with its handshake not
    /// yet begun (see [`TlsListener`]).
    ///
    /// # Cancel safety
    /// As cancel safe as the inner listener's `accept`: nothing happens after it returns.
    async fn accept(&mut self) -> io::Result<(Self::Stream, Endpoint)> {
        let (stream, peer) = self.inner.accept().await?;
        let stream = TlsServerStream::new(
            self.tls.acceptor.accept(stream),
            self.tls.handshake_timeout,
            peer.clone(),
        );
        Ok((stream, peer))
    }

    fn local(&self) -> io::Result<Endpoint> {
        self.inner.local()
    }

    /// The inner listener's setup (for TCP: `TCP_NODELAY` and keepalive), on the stream
    /// under the TLS.
    fn configure(stream: &Self::Stream, peer: &Endpoint, config: &ServerConfig) {
        if let Some(inner) = stream.get_ref() {
            L::configure(inner, peer, config);
        }
    }
}
