//! One transfer between two accounts, retried on lock conflicts; a way to drop it at a
//! random point ([`cut_after`]); and the small random source that picks both.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use pool::{Pool, PoolError};

use crate::{Error, MysqlConn, MysqlManager};

/// How often a transfer runs again after a deadlock or lock wait timeout.
pub const MAX_RETRIES: u32 = 10;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The pool gave no connection.
    #[error("no connection from the pool")]
    Checkout(#[source] PoolError<Error>),
    /// A statement failed (after the retries, for lock conflicts).
    #[error("the transfer failed")]
    Mysql(#[from] Error),
    /// An account the transfer reads is not in the table.
    #[error("account {0} does not exist")]
    NoSuchAccount(u32),
}

/// A transfer that committed.
#[derive(Debug, Clone, Copy)]
pub struct Transferred {
    /// Runs again after lock conflicts.
    pub retries: u32,
}

/// Moves up to `amount` from account `from` to account `to` (never below zero) in one
/// transaction on one connection of `pool`: `START TRANSACTION`, both rows read `FOR
/// UPDATE` in id order (so two transfers never wait for each other in a circle), both
/// written, `COMMIT`. A deadlock or lock wait timeout rolls back and runs it again, up to
/// [`MAX_RETRIES`] times.
///
/// # Errors
/// [`TransferError`]; after a failed transfer nothing of it is committed.
///
/// # Cancel safety
/// Dropped at any point, nothing of the transfer is committed unless its `COMMIT` reached
/// the server: the connection goes back to the pool cut mid-command (discarded, its
/// statement killed) or with an open transaction (rolled back by the pool's reset).
pub async fn transfer(
    pool: &Pool<MysqlManager>,
    from: u32,
    to: u32,
    amount: i64,
) -> Result<Transferred, TransferError> {
    let mut conn = pool.get().await.map_err(TransferError::Checkout)?;
    let mut retries = 0;
    loop {
        match move_money(&mut conn, from, to, amount).await {
            Ok(()) => return Ok(Transferred { retries }),
            Err(TransferError::Mysql(error))
                if error.is_lock_conflict() && retries < MAX_RETRIES =>
            {
                retries += 1;
                conn.rollback().await?;
            }
            Err(error) => {
                if !conn.is_broken() {
                    let _ = conn.rollback().await;
                }
                return Err(error);
            }
        }
    }
}

/// The statements of one transfer.
async fn move_money(
    conn: &mut MysqlConn,
    from: u32,
    to: u32,
    amount: i64,
) -> Result<(), TransferError> {
    conn.begin().await?;
    let (first, second) = (from.min(to), from.max(to));
    let mut balances = [0i64; 2];
    for (balance, id) in balances.iter_mut().zip([first, second]) {
        *balance = conn
            .exec_first(
                "SELECT balance FROM accounts WHERE id = ? FOR UPDATE",
                (id,),
            )
            .await?
            .ok_or(TransferError::NoSuchAccount(id))?;
    }
    // Stands for the work an application does between its statements: a transfer dropped
    // here leaves an open transaction and no command in flight.
    tokio::task::yield_now().await;
    let (from_balance, to_balance) = if from == first {
        (balances[0], balances[1])
    } else {
        (balances[1], balances[0])
    };
    let moved = amount.min(from_balance);
    let update = "UPDATE accounts SET balance = ? WHERE id = ?";
    conn.exec_drop(update, (from_balance - moved, from)).await?;
    conn.exec_drop(update, (to_balance + moved, to)).await?;
    conn.commit().await?;
    Ok(())
}

/// Runs `future` until it returns, or until it has waited (returned `Pending`) `waits`
/// times: then it is dropped where it stands, at its `waits`-th await point, and `None`
/// comes back. Every await point of a transfer is a chance: in line for a connection, in a
/// statement's round trip, or between statements.
///
/// # Cancel safety
/// Dropping this future drops `future` where it stands, as a cut does.
pub async fn cut_after<F: Future>(future: F, waits: u32) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut left = waits;
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if left <= 1 => Poll::Ready(None),
        Poll::Pending => {
            left -= 1;
            Poll::Pending
        }
    })
    .await
}

/// xorshift64*: small, fast and good enough to pick accounts and cuts; not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is mapped away).
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that seeds 1, 2, 3 give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)).max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::{Rng, cut_after};

    #[tokio::test]
    async fn a_future_is_cut_at_its_nth_wait_and_not_before() {
        let three_waits = async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            7
        };
        assert_eq!(cut_after(three_waits, 4).await, Some(7));
        let three_waits = async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            7
        };
        assert_eq!(cut_after(three_waits, 3).await, None);
    }

    #[test]
    fn chances_come_out_near_their_rate() {
        let mut rng = Rng::new(42);
        let hits = (0..100_000).filter(|_| rng.chance(0.2)).count();
        assert!((19_000..21_000).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| rng.below(5) < 5));
    }
}
