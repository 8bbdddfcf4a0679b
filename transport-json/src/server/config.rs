//! The server's settings.

use std::time::Duration;

use crate::codec::DEFAULT_MAX_FRAME;

/// How the server treats its connections. Values of 0 for the counts and the frame length are
/// taken as 1.
///
/// The three timeouts each close a connection that holds its place without doing its part;
/// `None` turns one off. Each is checked on one timer per connection (see the
/// [module documentation](super)), and fires between the timeout and a few milliseconds past
/// it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The most connections served at once (default 1024). At the cap a new client is served
    /// by closing the connection that has been idle (no request in flight, nothing to write)
    /// the longest; when every connection is busy, the new client waits until one closes or
    /// goes idle.
    pub max_connections: usize,
    /// The longest request frame accepted, in bytes (default [`DEFAULT_MAX_FRAME`], 1 MiB). A
    /// longer one is answered with an `Err` (empty `Uid`) and closes its connection.
    pub max_frame: usize,
    /// The most requests of one connection handled at once (default 256). Beyond it the server
    /// stops reading from that connection until one finishes.
    pub max_in_flight_per_conn: usize,
    /// How long a graceful shutdown waits for running requests to finish and flush before it
    /// drops the remaining connections (default 30 s).
    pub shutdown_timeout: Duration,
    /// Idle time before TCP keepalive probes start on an accepted socket, so half-open
    /// connections are eventually dropped (default 60 s; `None` leaves keepalive off).
    pub tcp_keepalive: Option<Duration>,
    /// Closes a connection that has had no request in flight, nothing to write and no frame
    /// begun for this long (default 15 min). Longer than the pool's default idle timeout
    /// (10 min), so that with both defaults the client retires an idle connection before the
    /// server does and never sends on one the server is closing.
    pub idle_timeout: Option<Duration>,
    /// Closes a connection whose request frame has begun and not ended within this long, after
    /// answering it with an `Err` (empty `Uid`) (default 30 s: a 1 MiB frame at 300 kbit/s;
    /// the slow-send defence of nginx's `client_header_timeout` or Go's
    /// `ReadHeaderTimeout`).
    pub frame_timeout: Option<Duration>,
    /// Closes a connection whose responses have waited this long without the socket taking a
    /// byte: a client that does not read (default 60 s, nginx's `send_timeout`). The requests
    /// it has running are dropped with it.
    pub write_timeout: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight_per_conn: 256,
            shutdown_timeout: Duration::from_secs(30),
            tcp_keepalive: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(15 * 60)),
            frame_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(60)),
        }
    }
}
