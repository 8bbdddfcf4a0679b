//! The shortest complete [`Manager`]: a pool of connections that speak a small line protocol
//! of their own, with its server in this file. Copy the client half (`LineConn`,
//! `LineManager`) and change the protocol.
//!
//! The protocol: one request per line, one reply per line.
//!
//! ```text
//! PING        -> PONG
//! ECHO <text> -> <text>
//! other       -> ERR unknown command
//! ```
//!
//! ```sh
//! cargo run --example custom_manager
//! ```
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use pool::{Manager, Pool};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The longest line either side accepts: a peer cannot make us buffer without bound.
const MAX_LINE: u64 = 64 * 1024;

// ----------------------------------------------------------------------------------------
// The client: a connection and its manager.
// ----------------------------------------------------------------------------------------

/// One pooled connection: the socket, and a flag saying it can no longer be trusted.
pub struct LineConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Set while a request is on the wire, cleared when its whole reply is in. If the call
    /// fails or its future is dropped halfway, it stays set: the next reply on this socket
    /// could be the late answer to the abandoned request, so the stream is out of step.
    broken: bool,
}

impl LineConn {
    /// Sends one request line and reads its reply line.
    ///
    /// # Errors
    /// Any I/O error, a peer that closed, a reply longer than [`MAX_LINE`], or a request
    /// holding a newline. All but the last leave the connection broken.
    ///
    /// # Cancel safety
    /// Dropping the future may leave a request on the wire whose reply is still to come; the
    /// connection then stays marked broken, and the pool discards it when it comes back.
    pub async fn call(&mut self, request: &str) -> io::Result<String> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection is out of step after an earlier failure",
            ));
        }
        if request.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a request is one line",
            ));
        }
        self.broken = true;
        let mut frame = Vec::with_capacity(request.len() + 1);
        frame.extend_from_slice(request.as_bytes());
        frame.push(b'\n');
        self.writer.write_all(&frame).await?;
        let reply = read_line(&mut self.reader)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed"))?;
        self.broken = false;
        Ok(reply)
    }
}

/// Opens, checks and closes [`LineConn`]s to one server.
pub struct LineManager {
    addr: SocketAddr,
}

impl Manager for LineManager {
    type Connection = LineConn;
    type Error = io::Error;

    // Cancel safety: the pool may drop this future at any `.await` (its connect timeout, or
    // a runtime shutting down). Everything it made is owned by locals, so dropping it closes
    // the half-open socket and leaves nothing behind. Do not spawn tasks here that outlive it.
    async fn connect(&self) -> io::Result<LineConn> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(LineConn {
            reader: BufReader::new(reader),
            writer,
            broken: false,
        })
    }

    // Runs on checkout, but only for a connection idle longer than the pool's
    // `check_interval` (500 ms by default), so a busy pool pays nothing. Cost: one round trip,
    // never more. Any error discards the connection and the caller gets another one.
    // If this future is dropped (the check timeout, or a caller giving up), the pool discards
    // the connection itself, so no cleanup is needed here.
    async fn check(&self, conn: &mut LineConn) -> io::Result<()> {
        let reply = conn.call("PING").await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("PING answered {reply:?}"),
            ))
        }
    }

    // Runs synchronously each time a connection comes back: read a flag, never do I/O.
    // Report broken when the connection's state is unknown (a failed or abandoned call);
    // true closes it and frees its slot at once. A connection the server closed while idle
    // is caught by `check`, or by the first call, which fails and sets the flag.
    fn is_broken(&self, conn: &mut LineConn) -> bool {
        conn.broken
    }

    // The goodbye of a connection the pool discards, run in a task of its own: keep it
    // short, and never wait on the peer without a bound. Half-closing is enough here.
    async fn close(&self, mut conn: LineConn) {
        let _ = conn.writer.shutdown().await;
    }
}

// ----------------------------------------------------------------------------------------
// The server.
// ----------------------------------------------------------------------------------------

/// Reads one `\n`-terminated line (without it); `None` at a clean end of stream.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Option<String>> {
    let mut line = String::new();
    let read = reader.take(MAX_LINE).read_line(&mut line).await?;
    if read == 0 {
        return Ok(None);
    }
    if line.pop() != Some('\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a line was cut off or longer than MAX_LINE",
        ));
    }
    Ok(Some(line))
}

/// Answers one client until it closes.
async fn serve_client(socket: TcpStream) -> io::Result<()> {
    let (reader, mut writer) = socket.into_split();
    let mut reader = BufReader::new(reader);
    while let Some(line) = read_line(&mut reader).await? {
        let reply = match line.split_once(' ') {
            _ if line == "PING" => "PONG",
            Some(("ECHO", text)) => text,
            _ => "ERR unknown command",
        };
        writer.write_all(reply.as_bytes()).await?;
        writer.write_all(b"\n").await?;
    }
    Ok(())
}

/// Accepts clients, one task each, until the listener fails.
async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(serve_client(socket));
            }
            Err(error) => {
                eprintln!("server: accept failed: {error}");
                return;
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// A run: traffic through the pool, then a call abandoned halfway.
// ----------------------------------------------------------------------------------------

// One thread, so that the abandoned call below is abandoned before the server can answer.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener));

    let pool = Pool::builder(LineManager { addr })
        .max_size(4)
        .connect_timeout(Duration::from_secs(2))
        .check_timeout(Duration::from_secs(1))
        .wait_timeout(Duration::from_secs(5))
        .build()?;

    // 32 tasks share at most 4 connections.
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.get().await?;
                let text = format!("hello from task {task}");
                let reply = conn.call(&format!("ECHO {text}")).await?;
                Ok::<bool, Box<dyn std::error::Error + Send + Sync>>(reply == text)
            })
        })
        .collect();
    let mut echoed = 0;
    for task in tasks {
        if task.await?.map_err(|e| e as Box<dyn std::error::Error>)? {
            echoed += 1;
        }
    }
    let status = pool.status();
    println!(
        "32 echoes, {echoed} correct, through {} connections (max 4)",
        status.counters.created
    );
    if echoed != 32 {
        return Err("a reply did not match its request".into());
    }

    // A call abandoned halfway (a timeout that fires before the reply): the connection
    // marks itself broken, and the pool closes it instead of handing it out again.
    let mut conn = pool.get().await?;
    let abandoned = tokio::time::timeout(Duration::ZERO, conn.call("ECHO too late")).await;
    println!(
        "abandoned call: {}",
        if abandoned.is_err() {
            "timed out"
        } else {
            "finished"
        }
    );
    drop(conn);
    let after = pool.status();
    println!(
        "after it: {} connection(s) discarded as broken, {} open",
        after.counters.broken, after.size
    );

    // The next checkout works as before.
    let mut conn = pool.get().await?;
    println!("PING -> {}", conn.call("PING").await?);
    drop(conn);

    pool.close().await;
    Ok(())
}
