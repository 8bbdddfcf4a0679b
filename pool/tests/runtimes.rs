//! A pool works from any runtime: one after another (a static pool shared by
//! several `#[tokio::test]`s), several at once, multi-thread and current-thread. Wait timeouts
//! never depend on a background task that died with the runtime that started it, or that
//! lives in a runtime nobody drives.

mod support;

use std::time::Duration;

use pool::{Pool, PoolError, TimeoutKind};
use support::Mock;
use tokio::runtime::{Builder, Runtime};

const WAIT: Duration = Duration::from_millis(200);

fn paused_current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Built and used in a first runtime, which is then dropped.
fn pool_from_a_dead_runtime(mock: &Mock, min_idle: usize) -> Pool<Mock> {
    let first = paused_current_thread();
    let pool = first.block_on(async {
        let pool = Pool::builder(mock.clone())
            .max_size(2)
            .min_idle(min_idle)
            .wait_timeout(WAIT)
            .idle_timeout(Some(Duration::from_secs(2)))
            .build()
            .expect("valid settings");
        drop(pool.get().await.expect("a connection"));
        pool
    });
    drop(first);
    pool
}

/// Fills the pool, then asks for one more: the wait must end at `wait_timeout`.
async fn assert_wait_times_out(pool: &Pool<Mock>) {
    let held = [
        pool.get().await.expect("first"),
        pool.get().await.expect("second"),
    ];
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), pool.get()).await;
    let error = outcome
        .expect("the wait must time out, not hang")
        .expect_err("the pool is full");
    assert!(
        matches!(error, PoolError::Timeout(TimeoutKind::Wait { .. })),
        "{error:?}"
    );
    assert!(started.elapsed() >= WAIT, "{:?}", started.elapsed());
    assert!(pool.status().counters.timeouts >= 1);
    assert_eq!(pool.status().waiting, 0);
    drop(held);
}

#[test]
fn wait_timeout_fires_after_the_first_runtime_is_gone() {
    let mock = Mock::new();
    let pool = pool_from_a_dead_runtime(&mock, 0);
    paused_current_thread().block_on(async {
        let before = pool.status().counters.timeouts;
        assert_wait_times_out(&pool).await;
        assert_eq!(pool.status().counters.timeouts, before + 1);
    });
    multi_thread().block_on(assert_wait_times_out(&pool));
}

/// The background task comes back in the later runtime: `min_idle` refills and idle
/// connections past `idle_timeout` are reaped there.
#[test]
fn maintenance_restarts_in_a_later_runtime() {
    let mock = Mock::new();
    let pool = pool_from_a_dead_runtime(&mock, 1);
    paused_current_thread().block_on(async {
        // Take the warm connection: min_idle wants another one made in this runtime.
        let held = pool.get().await.expect("a connection");
        mock.until("min_idle refilled in the new runtime", || {
            pool.status().idle == 1
        })
        .await;
        drop(held);
        assert_eq!(pool.status().idle, 2);
        // Past the idle timeout, the reaper closes the one above min_idle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        mock.until("the stale connection is reaped", || pool.status().idle == 1)
            .await;
    });
}

/// Two multi-thread runtimes use one pool at once; one of them shuts down mid-way, and the
/// other goes on being served and timed out.
#[test]
fn several_runtimes_at_once() {
    let mock = Mock::new();
    let pool = Pool::builder(mock.clone())
        .max_size(2)
        .wait_timeout(Duration::from_millis(50))
        .build()
        .expect("valid settings");
    let users: Vec<_> = (0..2)
        .map(|n| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                multi_thread().block_on(async {
                    let mut served = 0;
                    let mut timed_out = 0;
                    for _ in 0..(200 * (n + 1)) {
                        match pool.get().await {
                            Ok(conn) => {
                                served += 1;
                                tokio::task::yield_now().await;
                                drop(conn);
                            }
                            Err(PoolError::Timeout(TimeoutKind::Wait { .. })) => timed_out += 1,
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                    }
                    (served, timed_out)
                })
            })
        })
        .collect();
    let mut total = 0;
    for user in users {
        let (served, timed_out) = user.join().expect("runtime thread");
        total += served + timed_out;
        assert!(served > 0);
    }
    assert_eq!(total, 600);
    // Both runtimes are gone now; a third still gets timeouts.
    multi_thread().block_on(async {
        let pool = pool.clone();
        let held = [pool.get().await.expect("a"), pool.get().await.expect("b")];
        let outcome = tokio::time::timeout(Duration::from_secs(10), pool.get()).await;
        assert!(matches!(
            outcome.expect("no hang"),
            Err(PoolError::Timeout(TimeoutKind::Wait { .. }))
        ));
        drop(held);
    });
}

/// A pool whose background task runs in `runtime` and has made its first round there (its
/// `min_idle` connection is made), which is then left undriven: nothing of it runs until
/// another `block_on`.
fn pool_timed_by(runtime: &Runtime, mock: &Mock, max_size: usize) -> Pool<Mock> {
    runtime.block_on(async {
        let pool = Pool::builder(mock.clone())
            .max_size(max_size)
            .min_idle(1)
            .wait_timeout(WAIT)
            .build()
            .expect("valid settings");
        drop(pool.get().await.expect("a connection"));
        mock.until("the background task's first round", || {
            pool.status().idle == 1
        })
        .await;
        pool
    })
}

/// The background task, which times out the callers in line, lives in a runtime that is alive
/// but not driven: a caller in another runtime times itself out all the same.
#[test]
fn a_wait_times_out_while_the_background_tasks_runtime_sits_idle() {
    let mock = Mock::new();
    let idle = current_thread();
    let pool = pool_timed_by(&idle, &mock, 2);
    multi_thread().block_on(assert_wait_times_out(&pool));
    current_thread().block_on(assert_wait_times_out(&pool));
    drop(idle);
}

/// A caller joins the line in the background task's runtime (the line's timer times it), then
/// that runtime shuts down with the task, and the caller is polled on in another runtime: it
/// times itself out there.
#[test]
fn a_wait_outlives_the_runtime_of_its_timer() {
    use std::future::Future;
    use std::task::Poll;

    let mock = Mock::new();
    let first = current_thread();
    let pool = pool_timed_by(&first, &mock, 1);
    let held = first.block_on(pool.get()).expect("the only connection");
    let mut waiting = Box::pin(pool.get());
    let arrived = std::time::Instant::now();
    first.block_on(std::future::poll_fn(|cx| {
        assert!(waiting.as_mut().poll(cx).is_pending(), "the pool is full");
        Poll::Ready(())
    }));
    assert_eq!(
        pool.status().waiting,
        1,
        "in line, timed by the first runtime's task"
    );
    drop(first);
    let outcome = multi_thread().block_on(async {
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait must time out, not hang")
    });
    let error = outcome.expect_err("the pool is full");
    assert!(
        matches!(error, PoolError::Timeout(TimeoutKind::Wait { .. })),
        "{error:?}"
    );
    assert!(arrived.elapsed() >= WAIT, "{:?}", arrived.elapsed());
    assert_eq!(pool.status().waiting, 0);
    drop(held);
}
