//! [`Rows`]: the result of [`MysqlConn::query_iter`], read one row at a time; rows left
//! unread stay on the connection until a reset reads them off.

use mysql_async::{QueryResult, Row, TextProtocol};

use crate::conn::MysqlConn;
use crate::error::Error;

/// The rows of a [`MysqlConn::query_iter`], read one at a time.
///
/// Dropped before the last row, it leaves the rest on the connection
/// ([`ConnState::unread_result`](crate::ConnState::unread_result)); a reset reads them off.
pub struct Rows<'c> {
    conn: &'c mut MysqlConn,
}

impl std::fmt::Debug for Rows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").field("conn", &self.conn).finish()
    }
}

impl<'c> Rows<'c> {
    /// The rows pending on `conn`, whose state already says so.
    pub(crate) fn new(conn: &'c mut MysqlConn) -> Rows<'c> {
        Rows { conn }
    }

    /// The next row, or `None` once every result of the statement is read.
    ///
    /// # Errors
    /// As [`MysqlConn::query_drop`].
    ///
    /// # Cancel safety
    /// As [`MysqlConn::query_drop`]: a future dropped mid-row cuts the connection.
    pub async fn next(&mut self) -> Result<Option<Row>, Error> {
        if !self.conn.state_mut().unread_result {
            return Ok(None);
        }
        self.conn.state_mut().cut = true;
        // `QueryResult` is a view of the result pending on the connection; `next` is the
        // row-at-a-time reader its `collect` and `stream` are built on.
        let mut result = QueryResult::<'_, '_, TextProtocol>::new(self.conn.inner_mut());
        let row = result.next().await;
        let done = result.is_empty();
        let row = self.conn.finish(row)?;
        if row.is_none() && done {
            self.conn.state_mut().unread_result = false;
        }
        Ok(row)
    }
}
