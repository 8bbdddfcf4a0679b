//! The transport over Unix domain sockets: the server bound with `Server::bind_unix`, a pool
//! of `JsonManager` connections dialing `unix:/path`, and the typed errors of a bad path.
#![cfg(unix)]

mod support;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pool::{Pool, PoolError};
use support::{bounded, chain, echoed, lease, pool_with};
use transport_json::conn::Endpoint;
use transport_json::server::{Server, ServerConfig};
use transport_json::{Conn, ConnectOptions, Error, JsonManager};

/// A socket path of its own for each test, in the system's temp dir; removed (if anything
/// is left at it) when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(test: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("mux-pool-{test}-{}-{n}.sock", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        SocketPath(path)
    }

    /// The address a client dials: `unix:` and the path.
    fn addr(&self) -> String {
        format!("unix:{}", self.0.display())
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_client_is_answered_over_a_unix_socket() {
    bounded(async {
        let path = SocketPath::new("pooled");
        let server = Server::bind_unix(&path.0, ServerConfig::default())
            .expect("binds the socket")
            .spawn();
        assert_eq!(server.local(), &Endpoint::unix(&path.0));

        let pool = pool_with(ConnectOptions::new(path.addr()), 2);
        let pool = &pool;
        let peer = &Endpoint::unix(&path.0);
        let mut calls: FuturesUnordered<_> = (0..64)
            .map(|i| async move {
                let conn = lease(pool).await;
                let resp = conn.request(i.to_string()).await.expect("answered");
                assert_eq!(resp.val, echoed(&i.to_string()));
                assert_eq!(conn.peer(), peer);
            })
            .collect();
        let mut answered = 0;
        while calls.next().await.is_some() {
            answered += 1;
        }
        assert_eq!(answered, 64);
        drop(calls);
        let status = pool.status();
        assert!(status.size >= 1 && status.size <= 2, "{status:?}");

        pool.close().await;
        server.shutdown().await.expect("shuts down");
        // The server removes the socket file it bound, so the path can be bound again.
        assert!(!path.0.exists(), "the socket file is left behind");
        let again = Server::bind_unix(&path.0, ServerConfig::default()).expect("binds again");
        drop(again);
        assert!(
            !path.0.exists(),
            "a server dropped unserved leaves its file"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_socket_path_is_a_typed_connect_error() {
    let path = SocketPath::new("missing");
    let error = Conn::connect(&ConnectOptions::new(path.addr()))
        .await
        .expect_err("nothing listens there");
    match &error {
        Error::Connect { addr, source } => {
            assert_eq!(addr, &path.addr());
            assert_eq!(source.kind(), io::ErrorKind::NotFound, "{}", chain(&error));
        }
        other => panic!("not a connect error: {other:?}"),
    }
    assert!(chain(&error).contains(&path.addr()), "{}", chain(&error));

    // The same through a pool that fails fast: the lease fails with that connect error.
    let pool = Pool::builder(JsonManager::new(ConnectOptions::new(path.addr())))
        .fail_fast(true)
        .build()
        .expect("valid pool settings");
    let refused = pool.lease().await.expect_err("nothing listens there");
    assert!(
        matches!(&refused, PoolError::Connect(Error::Connect { source, .. }) if source.kind() == io::ErrorKind::NotFound),
        "{}",
        chain(&refused)
    );
    pool.close().await;
}

#[tokio::test]
async fn an_empty_socket_path_is_refused_before_dialing() {
    let error = Conn::connect(&ConnectOptions::new("unix:"))
        .await
        .expect_err("no path");
    assert!(
        matches!(&error, Error::Connect { source, .. } if source.kind() == io::ErrorKind::InvalidInput),
        "{error:?}"
    );
    // The error says what is wrong, not only what the system call said.
    assert!(
        chain(&error).contains("empty Unix socket path"),
        "{}",
        chain(&error)
    );
}

#[tokio::test]
async fn binding_a_path_in_use_fails_and_leaves_the_other_socket_alone() {
    let path = SocketPath::new("in-use");
    let first = Server::bind_unix(&path.0, ServerConfig::default())
        .expect("binds")
        .spawn();
    let second = Server::bind_unix(&path.0, ServerConfig::default()).expect_err("in use");
    assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
    // The first server still answers on its path.
    let conn = Conn::connect(&ConnectOptions::new(path.addr()))
        .await
        .expect("connects");
    let resp = bounded(conn.request("still")).await.expect("answered");
    assert_eq!(resp.val, echoed("still"));
    conn.close().await;
    first.shutdown().await.expect("shuts down");
}
