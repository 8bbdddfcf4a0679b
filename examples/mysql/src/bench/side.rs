//! [`Side`]: the two pools measured side by side over the same server, and one operation on
//! each: a checkout, `SET @x = 1` when the operation is dirtied, a point select by primary
//! key (a prepared statement), and the return.

use mysql_async::prelude::Queryable;
use mysql_async::{PoolConstraints, PoolOpts};
use pool::{Pool, PoolError};

use crate::error::Target;
use crate::{Error, MysqlManager};

/// The point select each operation runs, with a random id.
pub const SELECT: &str = "SELECT balance FROM bench_rows WHERE id = ?";

/// The statement that dirties a checkout: a user variable, which only a session reset clears.
pub const DIRTY: &str = "SET @x = 1";

/// One of the two pools under measurement.
#[derive(Clone)]
pub enum Side {
    /// Our [`Pool`] over [`MysqlManager`]: a `get` per operation; the manager resets a
    /// connection on return only when it is dirty.
    Ours(Pool<MysqlManager>),
    /// `mysql_async`'s own pool, its options at their defaults but the constraints: it
    /// resets every connection on return (`COM_RESET_CONNECTION`).
    Theirs(mysql_async::Pool, std::sync::Arc<Target>),
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Our pool gave no connection.
    #[error("our pool gave no connection")]
    Checkout(#[source] PoolError<Error>),
    /// A statement, or mysql_async's checkout, failed.
    #[error(transparent)]
    Mysql(#[from] Error),
    /// The row was not there.
    #[error("row {0} is missing")]
    NoRow(u32),
    /// The operation took longer than this: something hangs.
    #[error("an operation took longer than {0:?}")]
    Hung(std::time::Duration),
}

impl Side {
    /// Our pool of `size` over `manager`, with the pool's defaults otherwise.
    ///
    /// # Errors
    /// The pool's settings were refused.
    pub fn ours(manager: MysqlManager, size: usize) -> Result<Side, pool::BuildError> {
        Ok(Side::Ours(Pool::builder(manager).max_size(size).build()?))
    }

    /// mysql_async's pool over the same options as `manager` (TCP, no Unix socket), with
    /// `PoolConstraints` min and max `size` and its other options at their defaults.
    pub fn theirs(manager: &MysqlManager, size: usize) -> Side {
        let constraints = PoolConstraints::new(size, size).expect("min <= max");
        let opts = mysql_async::OptsBuilder::from_opts(manager.opts().clone())
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        let target = Target::of(manager.opts());
        Side::Theirs(mysql_async::Pool::new(opts), std::sync::Arc::new(target))
    }

    /// Its name in the report.
    pub fn name(&self) -> &'static str {
        match self {
            Side::Ours(_) => "ours",
            Side::Theirs(..) => "mysql_async",
        }
    }

    /// Resets run on returned connections so far: our pool's `Counters::resets`, or
    /// mysql_async's `resetting_connection` metric.
    pub fn resets(&self) -> u64 {
        match self {
            Side::Ours(pool) => pool.status().counters.resets,
            Side::Theirs(pool, _) => {
                pool.metrics()
                    .resetting_connection
                    .load(std::sync::atomic::Ordering::Relaxed) as u64
            }
        }
    }

    /// Pings sent on checkout so far (ours: a connection silent for over 1 s; mysql_async
    /// looks at the socket instead, without a round trip).
    pub fn pings(&self) -> u64 {
        match self {
            Side::Ours(pool) => pool.manager().counts().pings,
            Side::Theirs(..) => 0,
        }
    }

    /// One operation: checkout, `SET @x = 1` if `dirty`, the point select of `id`, return.
    ///
    /// # Errors
    /// [`OpError`]: no connection, or a statement failed.
    ///
    /// # Cancel safety
    /// As the pools' checkouts and queries: dropped, the connection is returned cut and
    /// discarded (ours) or cleaned by mysql_async's recycler.
    pub async fn op(&self, id: u32, dirty: bool) -> Result<(), OpError> {
        let balance: Option<i64> = match self {
            Side::Ours(pool) => {
                let mut conn = pool.get().await.map_err(OpError::Checkout)?;
                if dirty {
                    conn.query_drop(DIRTY).await?;
                }
                conn.exec_first(SELECT, (id,)).await?
            }
            Side::Theirs(pool, target) => {
                let classify = |error| Error::classify(error, target);
                let mut conn = pool.get_conn().await.map_err(classify)?;
                if dirty {
                    conn.query_drop(DIRTY).await.map_err(classify)?;
                }
                conn.exec_first(SELECT, (id,)).await.map_err(classify)?
            }
        };
        balance.map(drop).ok_or(OpError::NoRow(id))
    }

    /// Closes the pool and its connections.
    ///
    /// # Cancel safety
    /// Cancel safe: the connections close in the background.
    pub async fn close(self) {
        match self {
            Side::Ours(pool) => pool.close().await,
            Side::Theirs(pool, _) => {
                let _ = pool.disconnect().await;
            }
        }
    }
}
