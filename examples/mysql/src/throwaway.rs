//! [`MariaDb`]: a throwaway `mariadbd` on a free loopback port with a data directory of its
//! own, for the tests and for `--bench` without `--url`; killed, and its directory removed,
//! when it is dropped or the process that started it ends, however it ends.
//!
//! Startup (measured on 2 shared cores): `mariadb-install-db` 0.8-1.7 s, then `mariadbd`
//! answers 0.1-0.2 s after it starts. The server runs for throwaway data: no binary log, no
//! doublewrite, small InnoDB files, and the redo log written at each commit but not flushed
//! to disk (`innodb_flush_log_at_trx_commit = 2`): a killed server loses no commit, an
//! operating system that crashes may.
//!
//! The server is a child of this process. A small shell watchdog beside it reads, on its
//! standard input (a pipe from this process), the pid of each server started in the
//! directory; when that pipe closes (the [`MariaDb`] is dropped, or this process ends, even
//! killed), it kills the last server and removes the directory. So a test may kill the
//! server ([`MariaDb::kill`]) and start it again on the same port and data
//! ([`MariaDb::restart`]) without the directory going with it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::time::timeout;

use crate::error::{Error, Target};

/// The watchdog: remembers the last pid it read (an empty line: none), and once its standard
/// input closes, kills that server and removes `$DIR`.
const WATCHDOG: &str = r#"
pid=
while read -r line; do pid=$line; done
if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null; fi
rm -rf "$DIR"
"#;

/// How long `mariadb-install-db` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a started server may take to answer a ping (crash recovery included).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a throwaway server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A program of MariaDB's is not installed.
    #[error(
        "`{program}` is not installed: install MariaDB (Debian: apt-get install mariadb-server)"
    )]
    NotInstalled {
        /// `mariadbd` or `mariadb-install-db`.
        program: &'static str,
    },
    /// A program could not be run, or a file made.
    #[error("could not {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// `mariadb-install-db` failed, or took longer than 60 s.
    #[error("mariadb-install-db failed ({status}):\n{output}")]
    Install {
        /// Its exit status, or "timed out".
        status: String,
        /// What it printed.
        output: String,
    },
    /// `mariadbd` exited, or did not answer within 30 s, on each port tried.
    #[error("mariadbd did not start; its log:\n{log}")]
    NotReady {
        /// The end of the server's log.
        log: String,
    },
}

/// A `mariadbd` this process owns: root without a password on `127.0.0.1:<port>`, over TCP.
pub struct MariaDb {
    /// The running server; `None` once killed.
    server: Option<Child>,
    watchdog: Child,
    /// The watchdog's standard input: the pid of each server started, and, closed, the end.
    lifeline: Option<ChildStdin>,
    port: u16,
    dir: PathBuf,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("pid", &self.server.as_ref().map(Child::id))
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// `name` on PATH, else in `/usr/sbin` or `/usr/bin` (Debian puts `mariadbd` in
/// `/usr/sbin`, which a non-root PATH may lack).
fn program(name: &'static str) -> Result<PathBuf, StartError> {
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
        .ok_or(StartError::NotInstalled { program: name })
}

/// A loopback port nobody listens on right now.
///
/// # Panics
/// When no loopback port can be bound at all.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a port on 127.0.0.1")
}

/// Small InnoDB files: the default 96 MiB redo log per server adds up.
const INNODB: [&str; 2] = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=64M"];

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Io { what, source }
}

impl MariaDb {
    /// Makes a data directory (`mariadb-install-db`, root without a password), starts
    /// `mariadbd` on a free loopback port and waits until a connection answers `COM_PING`.
    /// Tries three ports, in case another process takes the first between its choice and
    /// the server's bind.
    ///
    /// # Errors
    /// [`StartError`]: MariaDB is not installed, its data directory could not be made, or
    /// the server did not answer.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped, the server (if started) is killed and its directory removed.
    pub async fn start() -> Result<MariaDb, StartError> {
        let mut last = None;
        for _ in 0..3 {
            let mut db = MariaDb::install().await?;
            db.spawn()?;
            match db.wait_ready().await {
                Ok(()) => return Ok(db),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(StartError::NotReady { log: String::new() }))
    }

    /// A fresh data directory and its watchdog; no server yet.
    async fn install() -> Result<MariaDb, StartError> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let install_db = program("mariadb-install-db")?;
        program("mariadbd")?;
        let dir = std::env::temp_dir().join(format!(
            "mux-pool-mariadb-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(io_error("make a directory for mariadbd"))?;
        // The watchdog first: from here on the directory goes however this ends.
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "mariadb-watchdog"])
            .env("DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error("start sh, the watchdog of mariadbd"))?;
        let db = MariaDb {
            server: None,
            lifeline: watchdog.stdin.take(),
            watchdog,
            port: free_port(),
            dir,
        };
        let install = tokio::process::Command::new(install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", db.dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(["--user=root", "--skip-name-resolve"])
            .args(INNODB)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match timeout(INSTALL_TIMEOUT, install).await {
            Ok(output) => output.map_err(io_error("run mariadb-install-db"))?,
            Err(_) => {
                return Err(StartError::Install {
                    status: format!("no end within {INSTALL_TIMEOUT:?}"),
                    output: String::new(),
                });
            }
        };
        if !output.status.success() {
            return Err(StartError::Install {
                status: output.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        Ok(db)
    }

    /// Starts `mariadbd` on the data directory and port, and tells the watchdog its pid.
    fn spawn(&mut self) -> Result<(), StartError> {
        let dir = &self.dir;
        let server = Command::new(program("mariadbd")?)
            // --no-defaults must come first: no /etc/mysql configuration applies.
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--port={}", self.port))
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
            // Throwaway data: no flush per commit (but a write, so that a killed server loses
            // nothing: with 0, the rows of a table filled under a second before a SIGKILL were
            // gone after the restart), no doublewrite.
            .args([
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
            ])
            .args(INNODB)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error("start mariadbd"))?;
        let pid = server.id();
        self.server = Some(server);
        self.tell_watchdog(&pid.to_string());
        Ok(())
    }

    /// Writes a line to the watchdog (a pid, or empty for none).
    fn tell_watchdog(&mut self, line: &str) {
        if let Some(lifeline) = self.lifeline.as_mut() {
            // A watchdog gone already cannot be helped; the server is still ours to kill.
            let _ = writeln!(lifeline, "{line}");
        }
    }

    /// Polls a connect and `COM_PING` every 10 ms for 30 s at most, each attempt bounded by
    /// 1 s.
    async fn wait_ready(&mut self) -> Result<(), StartError> {
        let url = self.url("");
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while started.elapsed() < READY_TIMEOUT {
            let exited = match self.server.as_mut() {
                Some(server) => matches!(server.try_wait(), Ok(Some(_)) | Err(_)),
                None => true,
            };
            if exited {
                return Err(StartError::NotReady { log: self.log() });
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
        Err(StartError::NotReady { log: self.log() })
    }

    /// Kills the server with `SIGKILL`, as a crash would, and waits (10 s at most) for it to
    /// end. Its data directory stays, for [`restart`](MariaDb::restart). Does nothing if it
    /// is not running.
    ///
    /// # Cancel safety
    /// Cancel safe: the signal is sent before the first await; dropped, the server dies
    /// all the same, unreaped until this process ends.
    pub async fn kill(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        // Child::kill is SIGKILL on Unix. The watchdog forgets the pid before it is reaped
        // (after which it could be another process's).
        let _ = server.kill();
        self.tell_watchdog("");
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for _ in 0..2000 {
            if !matches!(server.try_wait(), Ok(None)) {
                break;
            }
            tick.tick().await;
        }
    }

    /// Starts the server again on the same port and data directory (InnoDB recovers what
    /// a kill left) and waits until it answers.
    ///
    /// # Errors
    /// [`StartError::NotReady`] when it exits or does not answer within 30 s (the port may
    /// have been taken meanwhile).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped while waiting, the server runs on and is killed with the rest.
    pub async fn restart(&mut self) -> Result<(), StartError> {
        self.kill().await;
        self.spawn()?;
        self.wait_ready().await
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
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
    ///
    /// # Errors
    /// Connecting or creating failed.
    ///
    /// # Cancel safety
    /// Cancel safe: the database may or may not exist afterwards.
    pub async fn create_database(&self, name: &str) -> Result<String, Error> {
        let opts = mysql_async::Opts::from_url(&self.url("")).map_err(Error::Url)?;
        let target = Target::of(&opts);
        let classify = |error| Error::classify(error, &target);
        let mut conn = mysql_async::Conn::new(opts).await.map_err(classify)?;
        let quoted = name.replace('`', "``");
        conn.query_drop(format!(
            "DROP DATABASE IF EXISTS `{quoted}`; CREATE DATABASE `{quoted}`"
        ))
        .await
        .map_err(classify)?;
        let _ = conn.disconnect().await;
        Ok(self.url(name))
    }

    /// Its error log, read now.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mariadbd.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // The watchdog kills the server, removes the directory and exits.
        drop(self.lifeline.take());
        let _ = self.watchdog.wait();
        if let Some(mut server) = self.server.take() {
            let _ = server.wait();
        }
    }
}
