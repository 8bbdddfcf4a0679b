//! The pool in front of a real MariaDB (or MySQL) server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bank;
pub mod conn;
pub mod error;
pub mod manager;
pub mod statement;

pub use conn::{ConnState, MysqlConn, Rows};
pub use error::{Error, Target};
pub use manager::{ManagerCounts, MysqlManager};
