//! The server's settings.

use std::time::Duration;

use crate::codec::DEFAULT_MAX_FRAME;

/// How the server treats its connections. Values of 0 for the counts and the frame length are
/// taken as 1.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The most connections served at once (default 1024). At the cap the server stops
    /// accepting until one closes.
    pub max_connections: usize,
    /// The longest request frame accepted, in bytes (default [`DEFAULT_MAX_FRAME`], 1 MiB). A
    /// longer one closes its connection.
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight_per_conn: 256,
            shutdown_timeout: Duration::from_secs(30),
            tcp_keepalive: Some(Duration::from_secs(60)),
        }
    }
}
