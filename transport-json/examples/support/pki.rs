//! A throwaway PKI for trying TLS and for the TLS tests, made with rcgen: PEM files of a CA, a
//! server certificate signed by it, a client certificate signed by it, and a second CA with a
//! client certificate of its own, which the first CA's holders do not trust.
//!
//! Shared by `examples/tls_certs.rs` (which writes the files for a person, or for the root
//! package's tests of the examples) and `tests/tls.rs`, with `#[path]`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// The files [`write`] makes, each in the directory given to it:
///
/// | file | what |
/// |---|---|
/// | `ca.pem` | the test CA's certificate: trust it (`--tls-ca`, `--tls-client-ca`) |
/// | `server.pem`, `server.key` | a server certificate for `localhost` and `127.0.0.1`, by the test CA, and its key |
/// | `client.pem`, `client.key` | a client certificate (`client.test`), by the test CA, and its key |
/// | `other-ca.pem` | another CA's certificate, which trusts none of the above |
/// | `stranger.pem`, `stranger.key` | a client certificate (`stranger.test`) by the other CA |
pub const FILES: [&str; 8] = [
    "ca.pem",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
    "other-ca.pem",
    "stranger.pem",
    "stranger.key",
];

/// Why the PKI could not be written.
#[derive(Debug)]
pub enum PkiError {
    /// rcgen could not make a key or a certificate.
    Certificate(rcgen::Error),
    /// A file could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PkiError::Certificate(_) => f.write_str("could not make a certificate"),
            PkiError::Write { path, .. } => write!(f, "could not write {}", path.display()),
        }
    }
}

impl std::error::Error for PkiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PkiError::Certificate(source) => Some(source),
            PkiError::Write { source, .. } => Some(source),
        }
    }
}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        PkiError::Certificate(error)
    }
}

/// Writes the [`FILES`] into `dir`, which must exist; fresh keys every time.
///
/// # Errors
/// A key or certificate could not be made, or a file could not be written.
pub fn write(dir: &Path) -> Result<(), PkiError> {
    let test_ca = ca("test CA")?;
    put(dir, "ca.pem", &test_ca.pem())?;
    leaf(dir, &test_ca, "server", &["localhost", "127.0.0.1"])?;
    leaf(dir, &test_ca, "client", &["client.test"])?;
    let other = ca("another CA")?;
    put(dir, "other-ca.pem", &other.pem())?;
    leaf(dir, &other, "stranger", &["stranger.test"])
}

/// A self-signed CA named `name`.
fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// Writes `NAME.pem` and `NAME.key`: a certificate for `names` signed by `issuer`, and its key.
fn leaf(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    names: &[&str],
) -> Result<(), PkiError> {
    let key = KeyPair::generate()?;
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = CertificateParams::new(names)?.signed_by(&key, issuer)?;
    put(dir, &format!("{name}.pem"), &cert.pem())?;
    put(dir, &format!("{name}.key"), &key.serialize_pem())
}

fn put(dir: &Path, name: &str, contents: &str) -> Result<(), PkiError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| PkiError::Write { path, source })
}
