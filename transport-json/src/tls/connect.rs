//! The client side: [`TlsConnect`], what [`Conn::connect`](crate::Conn::connect) needs to
//! run a TLS handshake on the stream it opened.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use super::{TlsError, provider, read_certs, read_key, read_roots};
use crate::conn::{ConnectOptions, Error};

/// The client's TLS settings: whom it trusts, the name the server's certificate must carry,
/// and for mutual TLS the certificate it presents. Set it in
/// [`ConnectOptions::tls`](crate::ConnectOptions::tls).
///
/// Cheap to clone (the rustls configuration is shared). Two are equal when they share the
/// same configuration (the same `Arc`) and server name.
#[derive(Clone)]
pub struct TlsConnect {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsConnect {
    /// Trusts the CA certificates of the PEM file `ca_file` (and nothing else: not the
    /// system's roots), and expects the server's certificate to name `server_name`, a DNS
    /// name (`localhost`, `echo.example.com`) or an IP address (`127.0.0.1`).
    ///
    /// # Errors
    /// The file cannot be read or holds no usable certificate ([`TlsError::Read`],
    /// [`TlsError::Missing`], [`TlsError::Pem`], [`TlsError::CaCertificate`]), or the
    /// server name is not one ([`TlsError::ServerName`]).
    pub fn from_ca_file(ca_file: impl AsRef<Path>, server_name: &str) -> Result<Self, TlsError> {
        let roots = read_roots(ca_file.as_ref())?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::from_config(Arc::new(config), server_name)
    }

    /// As [`from_ca_file`](TlsConnect::from_ca_file), and presents the certificate chain of
    /// the PEM file `cert_file` with the private key of `key_file` to a server that asks for
    /// one (mutual TLS).
    ///
    /// # Errors
    /// As [`from_ca_file`](TlsConnect::from_ca_file), for all three files; and
    /// [`TlsError::Config`] when the key does not fit.
    pub fn from_ca_file_with_client_cert(
        ca_file: impl AsRef<Path>,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let roots = read_roots(ca_file.as_ref())?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                read_certs(cert_file.as_ref())?,
                read_key(key_file.as_ref())?,
            )
            .map_err(TlsError::Config)?;
        Self::from_config(Arc::new(config), server_name)
    }

    /// Uses a rustls configuration made by the caller (the system's roots through a crate
    /// such as `webpki-roots`, its own verifier, ALPN, session resumption ...), expecting the
    /// server's certificate to name `server_name`.
    ///
    /// # Errors
    /// [`TlsError::ServerName`]: `server_name` is neither a DNS name nor an IP address.
    pub fn from_config(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|source| {
            TlsError::ServerName {
                name: server_name.to_owned(),
                source,
            }
        })?;
        Ok(TlsConnect {
            connector: TlsConnector::from(config),
            server_name,
        })
    }

    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// The rustls configuration in use.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        self.connector.config()
    }

    /// Runs the handshake on `stream`, until `deadline`; the error says which address.
    pub(crate) async fn handshake<S>(
        &self,
        stream: S,
        options: &ConnectOptions,
        deadline: Instant,
    ) -> Result<TlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = self.connector.connect(self.server_name.clone(), stream);
        match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(source)) => Err(Error::Tls {
                addr: options.addr.clone(),
                source,
            }),
            Err(_) => Err(Error::ConnectTimeout {
                addr: options.addr.clone(),
                timeout: options.connect_timeout,
            }),
        }
    }
}

impl PartialEq for TlsConnect {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.config(), other.config()) && self.server_name == other.server_name
    }
}

impl Eq for TlsConnect {}

impl fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnect")
            .field("server_name", &self.server_name)
            .field(
                "client_cert",
                &self.config().client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}
