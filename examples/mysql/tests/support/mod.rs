//! The MariaDB server of a test binary, and small helpers shared by the MariaDB tests.
//!
//! A server takes 1-2 s to start (`mariadb-install-db`, then `mariadbd`), so each test
//! binary starts one ([`shared`], a [`MariaDb`] from the library's `throwaway` module, killed
//! and removed when the binary ends), and each test works in a database of its own
//! ([`Server::database`]). A test that kills its server starts one of its own
//! ([`Server::start`]) in a test binary of its own.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_example::throwaway::MariaDb;
use tokio::time::timeout;

/// A [`MariaDb`] whose set-up helpers panic, as a test's set-up should.
pub struct Server(MariaDb);

impl Deref for Server {
    type Target = MariaDb;
    fn deref(&self) -> &MariaDb {
        &self.0
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut MariaDb {
        &mut self.0
    }
}

impl Server {
    /// Starts a server of its own (these tests do not skip without MariaDB).
    pub async fn start() -> Server {
        let started = Instant::now();
        let server = MariaDb::start().await.unwrap_or_else(|error| {
            panic!("{error}\n(these tests need a real MariaDB server; scripts/test installs it)")
        });
        eprintln!(
            "mariadbd on 127.0.0.1:{}, answering {:.2?} after the start",
            server.port(),
            started.elapsed()
        );
        Server(server)
    }

    /// Creates `name` afresh (dropped first if there) and returns its URL.
    pub async fn database(&self, name: &str) -> String {
        timeout(Duration::from_secs(10), self.0.create_database(name))
            .await
            .expect("create a test database within 10 s")
            .expect("create a test database")
    }

    /// A plain `mysql_async` connection to `database`, outside any pool (an observer).
    pub async fn connect(&self, database: &str) -> mysql_async::Conn {
        timeout(
            Duration::from_secs(5),
            mysql_async::Conn::from_url(self.url(database)),
        )
        .await
        .expect("connect within 5 s")
        .expect("connect to the test server")
    }
}

/// The server of this test binary, started by the first test that asks.
pub async fn shared() -> &'static Server {
    static SERVER: tokio::sync::OnceCell<Server> = tokio::sync::OnceCell::const_new();
    SERVER.get_or_init(Server::start).await
}

/// A number from one query (`COUNT(*)`, say), through `conn`.
pub async fn number(conn: &mut mysql_async::Conn, sql: &str) -> u64 {
    timeout(
        Duration::from_secs(5),
        conn.query_first::<Option<u64>, _>(sql),
    )
    .await
    .unwrap_or_else(|_| panic!("{sql}: no answer within 5 s"))
    .unwrap_or_else(|error| panic!("{sql}: {error}"))
    .flatten()
    .unwrap_or(0)
}

/// Polls `probe` every 10 ms until it is true, for `within` at most; returns how long that
/// took, or panics with `what`.
pub async fn eventually(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if probe().await {
            return started.elapsed();
        }
        if started.elapsed() > within {
            panic!("{what}: not within {within:?}");
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    mysql_example::throwaway::free_port()
}
