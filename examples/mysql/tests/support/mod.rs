//! A MariaDB server the tests start (`mariadbd` on a free loopback port, a throwaway data
//! directory), one per test binary, and small helpers shared by the MariaDB tests.
//!
//! Startup (measured on 2 shared cores): `mariadb-install-db` 0.8-1.7 s, then `mariadbd`
//! answers 0.1-0.2 s after it starts. So each test binary starts one server, shared by its
//! tests through a static ([`shared`]), and each test works in a database of its own
//! ([`MariaDb::database`]). A server belongs to a small shell watchdog whose standard input
//! is a pipe from the test process: when the test process ends, however it ends, the pipe
//! closes and the watchdog kills the server and removes its directory. A [`MariaDb`] that is
//! dropped closes the pipe itself.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::time::timeout;

/// The watchdog: runs the server (`"$@"`), kills it once its own standard input closes,
/// removes `$DIR` after the server exits, and exits with the server's status.
const WATCHDOG: &str = r#"
exec 3<&0
"$@" 3<&- </dev/null &
server=$!
( read -r _ <&3; kill -9 "$server" 2>/dev/null ) &
watch=$!
wait "$server"
status=$?
kill "$watch" 2>/dev/null
rm -rf "$DIR"
exit "$status"
"#;

/// A `mariadbd` the tests own: killed, and its directory removed, when this is dropped or
/// the test process ends.
pub struct MariaDb {
    watchdog: Child,
    /// The watchdog's standard input: closing it kills the server.
    lifeline: Option<ChildStdin>,
    port: u16,
    dir: PathBuf,
}

/// `name` on PATH, else in `/usr/sbin` or `/usr/bin` (Debian puts `mariadbd` in
/// `/usr/sbin`, which a non-root PATH may lack).
fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            ["/usr/sbin", "/usr/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(name))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed. These tests need a real MariaDB server and do not \
                 skip without one: install it with `apt-get install mariadb-server` \
                 (scripts/test does this)."
            )
        })
}

impl MariaDb {
    /// Makes a data directory (`mariadb-install-db`, root without a password), starts
    /// `mariadbd` on a free loopback port and waits until a connection answers `COM_PING`.
    /// Tries three ports, in case another process takes the first between its choice and
    /// the server's bind.
    pub async fn start() -> MariaDb {
        let mut last_log = String::new();
        for _ in 0..3 {
            let started = Instant::now();
            let mut server = MariaDb::spawn(free_port()).await;
            let installed = started.elapsed();
            match server.wait_ready().await {
                Ok(()) => {
                    eprintln!(
                        "mariadbd on 127.0.0.1:{}: data directory made in {installed:.2?}, \
                         answering {:.2?} after start",
                        server.port,
                        started.elapsed() - installed
                    );
                    return server;
                }
                Err(log) => last_log = log,
            }
        }
        panic!("mariadbd did not start on any of three ports; its last log:\n{last_log}");
    }

    async fn spawn(port: u16) -> MariaDb {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mux-pool-mariadb-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory for mariadbd");
        let data = dir.join("data");
        // Small InnoDB files: the default 96 MiB redo log per test binary adds up.
        let innodb = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=64M"];
        let install = tokio::process::Command::new(program("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(["--user=root", "--skip-name-resolve"])
            .args(innodb)
            .stdin(Stdio::null())
            .output();
        let installed = timeout(Duration::from_secs(60), install)
            .await
            .expect("mariadb-install-db ends within 60 s")
            .expect("run mariadb-install-db");
        if !installed.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "mariadb-install-db failed ({}):\n{}{}",
                installed.status,
                String::from_utf8_lossy(&installed.stdout),
                String::from_utf8_lossy(&installed.stderr)
            );
        }
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "mariadb-watchdog"])
            .arg(program("mariadbd"))
            // --no-defaults must come first: no /etc/mysql configuration applies.
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.join("mariadbd.log").display()
            ))
            .arg(format!("--tmpdir={}", dir.display()))
            .args([
                "--skip-log-bin",
                "--skip-name-resolve",
                "--performance-schema=OFF",
            ])
            // Throwaway data: no flush per commit, no doublewrite.
            .args([
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
            ])
            .args(innodb)
            .env("DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sh, which runs mariadbd");
        let lifeline = watchdog.stdin.take();
        MariaDb {
            watchdog,
            lifeline,
            port,
            dir,
        }
    }

    /// Polls a connect and `COM_PING` every 10 ms, 3000 times at most (30 s), each attempt
    /// bounded by 1 s. `Err` carries the log when the server exited or never answered.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = self.url("");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..3000 {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return Err(self.log());
            }
            let ping = async {
                let mut conn = mysql_async::Conn::from_url(url.as_str()).await?;
                conn.ping().await?;
                conn.disconnect().await
            };
            if let Ok(Ok(())) = timeout(Duration::from_secs(1), ping).await {
                return Ok(());
            }
            tick.tick().await;
        }
        Err(self.log())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:<port>/<database>` (no database when empty), over TCP only.
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/{database}?prefer_socket=false",
            self.port
        )
    }

    /// Creates `name` afresh (dropped first if there) and returns its URL.
    pub async fn database(&self, name: &str) -> String {
        let mut conn = self.connect("").await;
        conn.query_drop(format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"
        ))
        .await
        .expect("create a test database");
        let _ = conn.disconnect().await;
        self.url(name)
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

    /// Its log, read now.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mariadbd.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // The watchdog kills the server, removes the directory and exits.
        drop(self.lifeline.take());
        let _ = self.watchdog.wait();
    }
}

/// The server of this test binary, started by the first test that asks.
pub async fn shared() -> &'static MariaDb {
    static SERVER: tokio::sync::OnceCell<MariaDb> = tokio::sync::OnceCell::const_new();
    SERVER.get_or_init(MariaDb::start).await
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a local address").port()
}
