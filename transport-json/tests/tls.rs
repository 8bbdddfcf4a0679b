//! TLS and mutual TLS (feature `tls`), with certificates made at test time by rcgen
//! (`examples/support/pki.rs`, which `examples/tls_certs.rs` shares): a CA, a server
//! certificate for `localhost` and `127.0.0.1` signed by it, a client certificate signed by
//! it, and a second CA nobody trusts. Loopback only.
#![cfg(feature = "tls")]

#[path = "../examples/support/pki.rs"]
#[allow(dead_code)] // `FILES` is for the example's message.
mod pki;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pool::Pool;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use transport_json::server::{RunningServer, Server, ServerConfig};
use transport_json::tls::{TlsAccept, TlsConnect, TlsError, TlsListener};
use transport_json::{Conn, ConnectOptions, Error, JsonManager};

/// The hang guard of every wait: far longer than any of them should take.
const GUARD: Duration = Duration::from_secs(10);

/// PEM files in a directory of their own, removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a server certificate signed by it for `localhost` and `127.0.0.1`, a client
    /// certificate signed by it, and another CA with a client certificate of its own.
    fn new() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "transport-json-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        pki::write(&dir).expect("the test PKI is written");
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).unwrap();
    }

    /// The server's settings: its certificate, no client certificate asked.
    fn accept(&self) -> TlsAccept {
        TlsAccept::from_pem_files(self.path("server.pem"), self.path("server.key")).unwrap()
    }

    /// The server's settings for mutual TLS: clients need a certificate of the test CA.
    fn accept_mtls(&self) -> TlsAccept {
        TlsAccept::from_pem_files_with_client_ca(
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        )
        .unwrap()
    }

    /// A client trusting the test CA, expecting `localhost`.
    fn connect(&self) -> TlsConnect {
        TlsConnect::from_ca_file(self.path("ca.pem"), "localhost").unwrap()
    }

    /// A client trusting the test CA and presenting the certificate `name`.
    fn connect_as(&self, name: &str) -> TlsConnect {
        TlsConnect::from_ca_file_with_client_cert(
            self.path("ca.pem"),
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
            "localhost",
        )
        .unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An echo server on loopback serving TLS with `tls`.
async fn tls_server(tls: TlsAccept) -> RunningServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::new(TlsListener::new(listener, tls), ServerConfig::default())
        .unwrap()
        .spawn()
}

fn options(server: &RunningServer, tls: Option<TlsConnect>) -> ConnectOptions {
    ConnectOptions::new(server.local_addr().to_string())
        .connect_timeout(GUARD)
        .request_timeout(Some(GUARD))
        .tls(tls)
}

/// The error and all its sources, joined by ": ".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn request_is_answered_over_tls() {
    let pki = Pki::new();
    let server = tls_server(pki.accept()).await;
    let conn = Conn::connect(&options(&server, Some(pki.connect())))
        .await
        .unwrap();
    let resp = timeout(GUARD, conn.request("tls")).await.unwrap().unwrap();
    assert_eq!(resp.val, "server: hello, tls");
    // The certificate names 127.0.0.1 too, so an IP address works as the server name.
    let by_ip = TlsConnect::from_ca_file(pki.path("ca.pem"), "127.0.0.1").unwrap();
    let conn = Conn::connect(&options(&server, Some(by_ip))).await.unwrap();
    let resp = timeout(GUARD, conn.request("ip")).await.unwrap().unwrap();
    assert_eq!(resp.val, "server: hello, ip");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_pipelined_requests_over_tls_each_get_their_answer() {
    let pki = Pki::new();
    let server = tls_server(pki.accept()).await;
    let conn = Conn::connect(&options(&server, Some(pki.connect())))
        .await
        .unwrap();
    let requests = (0..500).map(|i| {
        let conn = conn.clone();
        async move { (i, conn.request(i.to_string()).await) }
    });
    let answers = timeout(GUARD, futures::future::join_all(requests))
        .await
        .unwrap();
    for (i, resp) in answers {
        assert_eq!(resp.unwrap().val, format!("server: hello, {i}"));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_certificate_of_another_ca_is_refused_with_unknown_issuer() {
    let pki = Pki::new();
    let server = tls_server(pki.accept()).await;
    let wrong_ca = TlsConnect::from_ca_file(pki.path("other-ca.pem"), "localhost").unwrap();
    let error = timeout(GUARD, Conn::connect(&options(&server, Some(wrong_ca))))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
    let text = chain(&error);
    assert!(text.contains("TLS handshake with 127.0.0.1:"), "{text}");
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    let server = tls_server(pki.accept()).await;
    let other_name = TlsConnect::from_ca_file(pki.path("ca.pem"), "echo.example.com").unwrap();
    let error = Conn::connect(&options(&server, Some(other_name)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
    let text = chain(&error);
    assert!(
        text.contains("certificate not valid for name \"echo.example.com\""),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn plain_text_client_against_tls_server_fails_at_once_and_others_are_served() {
    let pki = Pki::new();
    let server = tls_server(pki.accept()).await;
    // The TCP connect succeeds; the request is not TLS, so the server's handshake fails on
    // it and closes the connection: the request fails, it does not hang.
    let plain = Conn::connect(&options(&server, None)).await.unwrap();
    let error = timeout(GUARD, plain.request("plain"))
        .await
        .expect("the plain-text request must end, not hang")
        .unwrap_err();
    assert!(matches!(error, Error::Closed(_)), "{error:?}");
    // A TLS client is still served.
    let conn = Conn::connect(&options(&server, Some(pki.connect())))
        .await
        .unwrap();
    assert_eq!(
        conn.request("after").await.unwrap().val,
        "server: hello, after"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_client_against_plain_server_is_refused_at_connect() {
    let pki = Pki::new();
    let server = Server::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .unwrap()
        .spawn();
    let error = timeout(GUARD, Conn::connect(&options(&server, Some(pki.connect()))))
        .await
        .expect("the handshake must end, not hang")
        .unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn silent_client_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let handshake_timeout = Duration::from_millis(300);
    let server = tls_server(pki.accept().handshake_timeout(handshake_timeout)).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    // It sends nothing; the server closes it once the handshake timeout passes.
    let mut buf = [0u8; 64];
    let read = timeout(GUARD, silent.read(&mut buf))
        .await
        .expect("the server must close a client that never handshakes");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= handshake_timeout,
        "{:?}",
        started.elapsed()
    );
    timeout(GUARD, async {
        while server.active_connections() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("its connection slot is freed");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_mid_handshake_does_not_hold_up_the_others() {
    let pki = Pki::new();
    // A silent client would hold its handshake for a minute: long past the guard.
    let server = tls_server(pki.accept().handshake_timeout(Duration::from_secs(60))).await;
    let _silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let conn = timeout(GUARD, Conn::connect(&options(&server, Some(pki.connect()))))
        .await
        .expect("the accept loop must not wait on the silent client's handshake")
        .unwrap();
    assert_eq!(
        conn.request("next").await.unwrap().val,
        "server: hello, next"
    );
    server.abort().await;
}

#[tokio::test]
async fn mtls_server_serves_a_client_with_a_certificate_of_its_ca() {
    let pki = Pki::new();
    let server = tls_server(pki.accept_mtls()).await;
    let conn = Conn::connect(&options(&server, Some(pki.connect_as("client"))))
        .await
        .unwrap();
    let resp = timeout(GUARD, conn.request("mtls")).await.unwrap().unwrap();
    assert_eq!(resp.val, "server: hello, mtls");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mtls_server_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let server = tls_server(pki.accept_mtls()).await;
    let error = refused(&server, pki.connect()).await;
    assert!(error.contains("CertificateRequired"), "{error}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mtls_server_refuses_a_client_certificate_of_another_ca() {
    let pki = Pki::new();
    let server = tls_server(pki.accept_mtls()).await;
    let stranger = TlsConnect::from_ca_file_with_client_cert(
        pki.path("ca.pem"),
        pki.path("stranger.pem"),
        pki.path("stranger.key"),
        "localhost",
    )
    .unwrap();
    let error = refused(&server, stranger).await;
    assert!(error.contains("UnknownCA"), "{error}");
    server.shutdown().await.unwrap();
}

/// Connects with `tls` and sends a request, which must fail: at connect (TLS 1.2, or a
/// refusal the client reads during its handshake) or at the first request (TLS 1.3, where the
/// client's side of the handshake ends before the server checks its certificate). Returns
/// the error chain.
async fn refused(server: &RunningServer, tls: TlsConnect) -> String {
    let attempt = async {
        let conn = Conn::connect(&options(server, Some(tls))).await?;
        conn.request("let me in").await
    };
    let error = timeout(GUARD, attempt)
        .await
        .expect("the refusal must come, not a hang")
        .expect_err("a client without a trusted certificate must not be served");
    assert!(
        matches!(error, Error::Tls { .. } | Error::Closed(_)),
        "{error:?}"
    );
    chain(&error)
}

#[tokio::test]
async fn json_manager_pools_tls_connections() {
    let pki = Pki::new();
    let server = tls_server(pki.accept_mtls()).await;
    let manager = JsonManager::new(options(&server, Some(pki.connect_as("client"))));
    let pool = Pool::builder(manager).max_size(2).build().unwrap();
    for i in 0..20 {
        let conn = timeout(GUARD, pool.lease()).await.unwrap().unwrap();
        let resp = conn.request(i.to_string()).await.unwrap();
        assert_eq!(resp.val, format!("server: hello, {i}"));
    }
    assert!(pool.status().size >= 1);
    server.shutdown().await.unwrap();
}

/// A pool whose client trusts another CA fails its callers at once with the handshake's
/// error, instead of retrying until their wait timeout: no retry changes a certificate. A
/// refused connect (the server is down) is still retried within the wait timeout.
#[tokio::test]
async fn a_pool_with_the_wrong_ca_fails_at_once() {
    let pki = Pki::new();
    let server = tls_server(pki.accept()).await;
    let wrong_ca = TlsConnect::from_ca_file(pki.path("other-ca.pem"), "localhost").unwrap();
    let manager = JsonManager::new(options(&server, Some(wrong_ca)));
    let wait = Duration::from_secs(30);
    let pool = Pool::builder(manager)
        .max_size(2)
        .wait_timeout(wait)
        .build()
        .unwrap();
    // Well inside the wait timeout: a retrying pool would still be retrying.
    let error = timeout(GUARD, pool.get()).await.unwrap().unwrap_err();
    match &error {
        pool::PoolError::Connect(error) => {
            assert!(!error.is_retryable());
            assert!(
                chain(error).contains("invalid peer certificate: UnknownIssuer"),
                "{error:?}"
            );
        }
        other => panic!("expected the handshake's error at once, got {other:?}"),
    }
    assert_eq!(pool.status().counters.connect_failures, 1, "tried once");
    server.shutdown().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn tls_runs_over_a_unix_socket_too() {
    let pki = Pki::new();
    let path = pki.path("echo.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = Server::new(
        TlsListener::new(listener, pki.accept()),
        ServerConfig::default(),
    )
    .unwrap()
    .spawn();
    let options = ConnectOptions::new(format!("unix:{}", path.display()))
        .connect_timeout(GUARD)
        .tls(Some(pki.connect()));
    let conn = Conn::connect(&options).await.unwrap();
    let resp = timeout(GUARD, conn.request("unix")).await.unwrap().unwrap();
    assert_eq!(resp.val, "server: hello, unix");
    server.shutdown().await.unwrap();
}

#[test]
fn bad_settings_are_typed_errors() {
    let pki = Pki::new();
    let missing = TlsConnect::from_ca_file(pki.path("nothing.pem"), "localhost").unwrap_err();
    assert!(matches!(missing, TlsError::Read { .. }), "{missing:?}");
    // A key file holds no certificate.
    let no_cert = TlsConnect::from_ca_file(pki.path("server.key"), "localhost").unwrap_err();
    assert!(
        matches!(
            no_cert,
            TlsError::Missing {
                what: "certificate",
                ..
            }
        ),
        "{no_cert:?}"
    );
    assert!(
        no_cert.to_string().contains("holds no PEM certificate"),
        "{no_cert}"
    );
    let no_key =
        TlsAccept::from_pem_files(pki.path("server.pem"), pki.path("server.pem")).unwrap_err();
    assert!(
        matches!(
            no_key,
            TlsError::Missing {
                what: "private key",
                ..
            }
        ),
        "{no_key:?}"
    );
    // The client's key with the server's certificate.
    let mismatch =
        TlsAccept::from_pem_files(pki.path("server.pem"), pki.path("client.key")).unwrap_err();
    assert!(matches!(mismatch, TlsError::Config(_)), "{mismatch:?}");
    let name = TlsConnect::from_ca_file(pki.path("ca.pem"), "not a name!").unwrap_err();
    assert!(matches!(name, TlsError::ServerName { .. }), "{name:?}");
    pki.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    );
    let garbage = TlsConnect::from_ca_file(pki.path("garbage.pem"), "localhost").unwrap_err();
    assert!(matches!(garbage, TlsError::Pem { .. }), "{garbage:?}");
}

#[test]
fn connect_options_with_tls_compare_by_configuration() {
    let pki = Pki::new();
    let tls = pki.connect();
    let a = ConnectOptions::new("127.0.0.1:1").tls(Some(tls.clone()));
    assert_eq!(a, ConnectOptions::new("127.0.0.1:1").tls(Some(tls)));
    assert_ne!(
        a,
        ConnectOptions::new("127.0.0.1:1").tls(Some(pki.connect()))
    );
    assert_ne!(a, ConnectOptions::new("127.0.0.1:1"));
}

/// A client limited to TLS 1.2, through [`TlsConnect::from_config`], trusting the test CA
/// and presenting `client` when given.
fn tls12(pki: &Pki, client: Option<&str>) -> TlsConnect {
    use transport_json::tls::rustls;
    use transport_json::tls::rustls::pki_types::pem::PemObject;
    use transport_json::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let cert = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(cert, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnect::from_config(std::sync::Arc::new(config), "localhost").unwrap()
}

#[tokio::test]
async fn tls12_clients_are_served_and_refused_as_with_tls13() {
    let pki = Pki::new();
    let server = tls_server(pki.accept_mtls()).await;
    let conn = Conn::connect(&options(&server, Some(tls12(&pki, Some("client")))))
        .await
        .unwrap();
    let resp = timeout(GUARD, conn.request("1.2")).await.unwrap().unwrap();
    assert_eq!(resp.val, "server: hello, 1.2");
    // Under TLS 1.2 the server checks the client's certificate inside the handshake, so the
    // refusal comes from `connect` itself.
    let error = timeout(
        GUARD,
        Conn::connect(&options(&server, Some(tls12(&pki, None)))),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
    let text = chain(&error);
    assert!(text.contains("received fatal alert"), "{text}");
    server.shutdown().await.unwrap();
}

/// The race of a TLS 1.3 client refused for want of a certificate: its side of the handshake
/// is done, so it sends requests at once, and they may reach the server after the server
/// sent its alert. A server that closed the socket then had the client's bytes unread, so
/// its kernel answered them with a reset: the client's next write failed (`Broken pipe`)
/// and [`Conn`] reported that instead of the alert. The server now shuts its side down after
/// the alert and reads on until the client closes (1 s at most), so the client's writes
/// succeed and it reads why it was refused.
#[tokio::test]
async fn refused_client_can_still_write_and_reads_the_alert() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new();
    let server = tls_server(pki.accept_mtls()).await;
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.connect().config().clone());
    let name = pki.connect().server_name().clone();
    let mut tls = timeout(GUARD, connector.connect(name, tcp))
        .await
        .unwrap()
        .expect("TLS 1.3: the client's side of the handshake ends before the server checks");
    // Wait until the server's alert is here: the server has refused us.
    let mut first = [0u8; 1];
    timeout(GUARD, tls.get_ref().0.peek(&mut first))
        .await
        .unwrap()
        .unwrap();
    // Requests sent after the refusal: a reset would fail the second write or a later one.
    for _ in 0..20 {
        let sent = async {
            tls.write_all(b"{\"Uid\":\"1\",\"Val\":\"x\"}\n").await?;
            tls.flush().await
        };
        timeout(GUARD, sent)
            .await
            .unwrap()
            .expect("the refusing server still takes the client's bytes");
        // Let a reset, if one comes, come.
        timeout(GUARD, tls.get_ref().0.writable())
            .await
            .unwrap()
            .unwrap();
        tokio::task::yield_now().await;
    }
    let mut buf = Vec::new();
    let error = timeout(GUARD, tls.read_to_end(&mut buf))
        .await
        .expect("the refusal must come, not a hang")
        .expect_err("a client without a certificate is refused");
    assert!(
        error.to_string().contains("CertificateRequired"),
        "{:?}: {error}",
        error.kind()
    );
    server.shutdown().await.unwrap();
}
