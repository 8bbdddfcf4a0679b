//! [`Error`]: what failed talking to MariaDB or MySQL, one variant per cause a caller acts on.

use std::io;

use mysql_async::ServerError;

/// Server error codes this crate tells apart (MariaDB and MySQL share them).
mod code {
    /// `ER_CON_COUNT_ERROR`: too many connections.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// `ER_DBACCESS_DENIED_ERROR`: the user may not use that database.
    pub const DB_ACCESS_DENIED: u16 = 1044;
    /// `ER_ACCESS_DENIED_ERROR`: wrong user or password.
    pub const ACCESS_DENIED: u16 = 1045;
    /// `ER_BAD_DB_ERROR`: unknown database.
    pub const UNKNOWN_DATABASE: u16 = 1049;
    /// `ER_SERVER_SHUTDOWN`.
    pub const SERVER_SHUTDOWN: u16 = 1053;
    /// `ER_LOCK_WAIT_TIMEOUT`: the statement (not the transaction) was rolled back.
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// `ER_LOCK_DEADLOCK`: the whole transaction was rolled back.
    pub const DEADLOCK: u16 = 1213;
    /// MariaDB's `ER_CONNECTION_KILLED`.
    pub const CONNECTION_KILLED: u16 = 1927;
}

/// Where a connection goes and as whom, for the text of errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// The user name from the URL.
    pub user: String,
    /// The database from the URL, if any.
    pub database: Option<String>,
}

impl Target {
    /// The target of connections made with `opts`.
    pub fn of(opts: &mysql_async::Opts) -> Target {
        Target {
            addr: format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()),
            user: opts.user().unwrap_or("").to_owned(),
            database: opts.db_name().map(str::to_owned),
        }
    }
}

/// What failed talking to the server. Each variant names its cause and carries the
/// underlying error as its [`source`](std::error::Error::source);
/// [`is_retryable`](Error::is_retryable) says whether trying again may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a valid `mysql://` URL (wrong scheme, bad port, unknown parameter).
    #[error("invalid MySQL URL")]
    Url(#[source] mysql_async::UrlError),
    /// Nothing listens at the address (TCP connection refused).
    #[error("connection to {addr} refused")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The refused connect.
        #[source]
        source: io::Error,
    },
    /// The network timed out (the operating system's connect or keepalive timeout).
    #[error("timed out talking to {addr}")]
    TimedOut {
        /// `host:port`.
        addr: String,
        /// The timed-out operation.
        #[source]
        source: io::Error,
    },
    /// The connection was reset, closed or killed under a command, or the server shut down.
    #[error("connection to {addr} lost")]
    ConnectionLost {
        /// `host:port`.
        addr: String,
        /// What `mysql_async` saw.
        #[source]
        source: mysql_async::Error,
    },
    /// Another I/O error on the connection.
    #[error("I/O error talking to {addr}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The server refused the user name or password (or the user's access to the database).
    #[error("access denied for user {user:?}")]
    AccessDenied {
        /// The user name from the URL.
        user: String,
        /// The server's answer.
        #[source]
        source: ServerError,
    },
    /// The database named in the URL does not exist.
    #[error("unknown database {database:?}")]
    UnknownDatabase {
        /// The database from the URL.
        database: String,
        /// The server's answer.
        #[source]
        source: ServerError,
    },
    /// The server has no room for another connection (`max_connections`).
    #[error("the server has too many connections")]
    TooManyConnections(#[source] ServerError),
    /// A deadlock: the server rolled the whole transaction back; run it again.
    #[error("deadlock: the transaction was rolled back")]
    Deadlock(#[source] ServerError),
    /// A lock wait timed out (`innodb_lock_wait_timeout`): the statement was rolled back,
    /// the transaction is still open.
    #[error("lock wait timed out")]
    LockWaitTimeout(#[source] ServerError),
    /// Any other error the server answered a statement with (syntax, constraint, ...). The
    /// connection stays usable.
    #[error("the server refused the statement")]
    Server(#[source] ServerError),
    /// A client-side error of `mysql_async` (protocol, packet too large, bad parameters).
    #[error("MySQL client error")]
    Driver(#[source] mysql_async::Error),
    /// One of the manager's init statements failed on a new or reset connection.
    #[error("init statement {statement:?} failed")]
    Init {
        /// The statement.
        statement: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
    /// The connection cannot be used: a dropped future cut a command on it mid-way (the
    /// protocol state is unknown), or a command failed on it with a connection error.
    #[error("the connection is unusable: {0}")]
    Unusable(&'static str),
    /// The connection was handed out with an open transaction, an unread result or a changed
    /// session: it came back without a reset.
    #[error("the connection came back dirty and was not reset")]
    NotReset,
    /// [`begin`](crate::MysqlConn::begin) on a connection whose transaction is still open,
    /// which the server would commit silently (an implicit commit).
    #[error("a transaction is already open on this connection")]
    TransactionOpen,
}

impl Error {
    /// Whether trying again (a new connection, or the same transaction run again) may
    /// succeed: true for a refused, lost or timed-out connection, a server that is full, a
    /// deadlock or lock wait timeout, and a connection that is unusable or dirty (another
    /// connection will do). False for what only a change of configuration or statement
    /// fixes: a bad URL, wrong credentials, a missing database, a statement the server
    /// refused, a client error, a transaction begun twice. An init statement's error is as
    /// retryable as its cause.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Refused { .. }
            | Error::TimedOut { .. }
            | Error::ConnectionLost { .. }
            | Error::Io { .. }
            | Error::TooManyConnections(_)
            | Error::Deadlock(_)
            | Error::LockWaitTimeout(_)
            | Error::Unusable(_)
            | Error::NotReset => true,
            Error::Url(_)
            | Error::AccessDenied { .. }
            | Error::UnknownDatabase { .. }
            | Error::Server(_)
            | Error::Driver(_)
            | Error::TransactionOpen => false,
            Error::Init { source, .. } => source.is_retryable(),
        }
    }

    /// Whether the server rolled back, or refused, the transaction's work because of a lock
    /// conflict ([`Deadlock`](Error::Deadlock), [`LockWaitTimeout`](Error::LockWaitTimeout)):
    /// roll back and run the transaction again.
    pub fn is_lock_conflict(&self) -> bool {
        matches!(self, Error::Deadlock(_) | Error::LockWaitTimeout(_))
    }

    /// Names the cause of a `mysql_async` error on a connection to `target`.
    pub fn classify(error: mysql_async::Error, target: &Target) -> Error {
        use mysql_async::{DriverError, IoError};
        let addr = || target.addr.clone();
        match error {
            mysql_async::Error::Url(source) => Error::Url(source),
            mysql_async::Error::Server(source) => match source.code {
                code::ACCESS_DENIED | code::DB_ACCESS_DENIED => Error::AccessDenied {
                    user: target.user.clone(),
                    source,
                },
                code::UNKNOWN_DATABASE => Error::UnknownDatabase {
                    database: target.database.clone().unwrap_or_default(),
                    source,
                },
                code::TOO_MANY_CONNECTIONS => Error::TooManyConnections(source),
                code::DEADLOCK => Error::Deadlock(source),
                code::LOCK_WAIT_TIMEOUT => Error::LockWaitTimeout(source),
                code::SERVER_SHUTDOWN | code::CONNECTION_KILLED => Error::ConnectionLost {
                    addr: addr(),
                    source: mysql_async::Error::Server(source),
                },
                _ => Error::Server(source),
            },
            mysql_async::Error::Io(IoError::Io(source)) => match source.kind() {
                io::ErrorKind::ConnectionRefused => Error::Refused {
                    addr: addr(),
                    source,
                },
                io::ErrorKind::TimedOut => Error::TimedOut {
                    addr: addr(),
                    source,
                },
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::NotConnected => Error::ConnectionLost {
                    addr: addr(),
                    source: mysql_async::Error::Io(IoError::Io(source)),
                },
                _ => Error::Io {
                    addr: addr(),
                    source,
                },
            },
            error @ mysql_async::Error::Driver(DriverError::ConnectionClosed) => {
                Error::ConnectionLost {
                    addr: addr(),
                    source: error,
                }
            }
            other => Error::Driver(other),
        }
    }
}
