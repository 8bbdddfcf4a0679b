//! `pool::dynamic`: a pool over a `Box<dyn DynManager>` (or an `Arc`) chosen at run time,
//! with every manager method, the defaulted ones included, crossing both adapters.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use pool::balance::{BalanceError, Balanced, Routed};
use pool::dynamic::{ArcManager, BoxManager, DynManager, async_trait};
use pool::{Manager, Pool, PoolError};
use support::{Mock, MockConn, MockError, Plan};

/// The managers a configuration may name.
type Chosen = BoxManager<MockConn, MockError>;

/// A name no manager answers to.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("no manager is named {0:?}")]
struct UnknownManager(String);

/// How many times each method of the decorated manager was called.
#[derive(Debug, Default)]
struct Calls {
    connect: AtomicUsize,
    check: AtomicUsize,
    is_broken: AtomicUsize,
    is_broken_shared: AtomicUsize,
    close: AtomicUsize,
}

/// A decorator: counts each call, then hands it to the manager it wraps (any manager, boxed).
struct Counted {
    inner: Chosen,
    calls: Arc<Calls>,
}

#[async_trait]
impl DynManager for Counted {
    type Connection = MockConn;
    type Error = MockError;

    async fn connect(&self) -> Result<MockConn, MockError> {
        self.calls.connect.fetch_add(1, SeqCst);
        DynManager::connect(&*self.inner).await
    }

    async fn check(&self, conn: &mut MockConn) -> Result<(), MockError> {
        self.calls.check.fetch_add(1, SeqCst);
        DynManager::check(&*self.inner, conn).await
    }

    fn is_broken(&self, conn: &mut MockConn) -> bool {
        self.calls.is_broken.fetch_add(1, SeqCst);
        DynManager::is_broken(&*self.inner, conn)
    }

    fn is_broken_shared(&self, conn: &MockConn) -> bool {
        self.calls.is_broken_shared.fetch_add(1, SeqCst);
        DynManager::is_broken_shared(&*self.inner, conn)
    }

    async fn close(&self, conn: MockConn) {
        self.calls.close.fetch_add(1, SeqCst);
        DynManager::close(&*self.inner, conn).await
    }
}

/// Picks the manager a configuration names: the mock itself, or the mock behind the counting
/// decorator.
fn choose(name: &str, mock: &Mock, calls: &Arc<Calls>) -> Result<Chosen, UnknownManager> {
    match name {
        "plain" => Ok(BoxManager::new(mock.clone())),
        "counted" => Ok(BoxManager::new(Counted {
            inner: BoxManager::new(mock.clone()),
            calls: Arc::clone(calls),
        })),
        other => Err(UnknownManager(other.to_owned())),
    }
}

fn pool_of<M: Manager>(manager: M) -> Pool<M> {
    Pool::builder(manager)
        .max_size(2)
        .max_streams(4)
        .check_interval(Duration::ZERO) // every checkout of an idle connection checks it
        .wait_timeout(Duration::from_secs(5))
        .build()
        .expect("valid settings")
}

#[test]
fn an_unknown_manager_name_is_a_typed_error() {
    let (mock, calls) = (Mock::new(), Arc::new(Calls::default()));
    let Err(error) = choose("postgres", &mock, &calls) else {
        panic!("no manager is named postgres");
    };
    assert_eq!(error, UnknownManager("postgres".to_owned()));
    assert_eq!(error.to_string(), "no manager is named \"postgres\"");
}

/// The decorator chosen by name drives a pool through get, return, check, lease and the
/// broken path, and every call it saw reached the mock it wraps.
#[tokio::test(start_paused = true)]
async fn a_decorator_chosen_at_run_time_sees_every_call_of_the_pool() {
    let (mock, calls) = (Mock::new(), Arc::new(Calls::default()));
    let pool = pool_of(choose("counted", &mock, &calls).expect("a known manager"));

    let conn = pool.get().await.expect("a connection");
    assert_eq!(conn.id, 0);
    drop(conn);
    let conn = pool.get().await.expect("the idle connection, checked");
    assert_eq!(conn.id, 0);
    drop(conn);
    let (a, b) = (
        pool.lease().await.expect("a"),
        pool.lease().await.expect("b"),
    );
    assert_eq!(
        (a.id, b.id),
        (0, 0),
        "both leases share the idle connection"
    );
    drop((a, b));

    // The broken path: reported broken on return, closed through the manager, not reused.
    let conn = pool.get().await.expect("a connection");
    mock.set_broken(conn.id);
    drop(conn);
    assert_eq!(pool.status().counters.broken, 1);
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);
    assert_eq!(pool.get().await.expect("a fresh connection").id, 1);

    let seen = |n: &AtomicUsize| n.load(SeqCst);
    assert_eq!(seen(&calls.connect), mock.connects());
    assert_eq!(seen(&calls.connect), 2);
    assert_eq!(seen(&calls.check), mock.checks());
    assert!(seen(&calls.check) >= 2, "{calls:?}");
    assert_eq!(seen(&calls.is_broken), mock.is_broken_calls());
    assert!(seen(&calls.is_broken) >= 2, "{calls:?}");
    assert_eq!(seen(&calls.is_broken_shared), mock.is_broken_shared_calls());
    assert!(seen(&calls.is_broken_shared) >= 2, "{calls:?}");
    assert_eq!(seen(&calls.close), 1);
}

/// The mock chosen plain: its own `is_broken`, `is_broken_shared` and `close` (all three
/// defaulted in the trait) still run behind the box.
#[tokio::test(start_paused = true)]
async fn the_defaulted_methods_of_a_boxed_manager_still_run() {
    let (mock, calls) = (Mock::new(), Arc::new(Calls::default()));
    let pool = pool_of(choose("plain", &mock, &calls).expect("a known manager"));
    defaulted_methods_run(&pool, &mock).await;
    assert_eq!(
        calls.connect.load(SeqCst),
        0,
        "the plain manager has no decorator"
    );
}

/// The same through an `ArcManager`.
#[tokio::test(start_paused = true)]
async fn the_defaulted_methods_of_a_shared_manager_still_run() {
    let mock = Mock::new();
    let manager: ArcManager<MockConn, MockError> = ArcManager::new(mock.clone());
    defaulted_methods_run(&pool_of(manager), &mock).await;
}

/// `is_broken` discards a connection on return and `close` closes it; `is_broken_shared`
/// keeps new leases off a connection found dead under a lease.
async fn defaulted_methods_run<M: Manager<Connection = MockConn>>(pool: &Pool<M>, mock: &Mock) {
    let conn = pool.get().await.expect("a connection");
    mock.set_broken(conn.id);
    drop(conn);
    assert_eq!(pool.status().size, 0, "discarded on return");
    mock.until_closes(1).await;
    assert_eq!(mock.closes_of(0), 1);

    let a = pool.lease().await.expect("a lease");
    assert_eq!(a.id, 1);
    mock.set_shared_broken(1);
    let b = pool.lease().await.expect("a lease");
    assert_eq!(b.id, 2, "no new lease on the dead connection");
    drop((a, b));
    mock.until_closes(2).await;
    assert_eq!(mock.closes_of(1), 1);
}

/// Errors keep their type through the box: a refused connect is the manager's own error.
#[tokio::test(start_paused = true)]
async fn a_boxed_managers_error_reaches_the_caller_typed() {
    let (mock, calls) = (Mock::new(), Arc::new(Calls::default()));
    mock.set_connect(Plan::fail("connection refused"));
    let manager = choose("counted", &mock, &calls).expect("a known manager");
    let pool = Pool::builder(manager)
        .fail_fast(true)
        .build()
        .expect("valid settings");
    match pool.get().await {
        Err(PoolError::Connect(error)) => {
            assert_eq!(error, MockError("connection refused".to_owned()));
        }
        other => panic!("expected the connect error, got {other:?}"),
    }
    assert_eq!(calls.connect.load(SeqCst), 1);
}

/// A manager written as for deadpool's and bb8's older versions: `#[async_trait]`, only the
/// two required methods.
struct Numbers {
    connects: AtomicUsize,
}

#[async_trait]
impl DynManager for Numbers {
    type Connection = usize;
    type Error = Infallible;

    async fn connect(&self) -> Result<usize, Infallible> {
        Ok(self.connects.fetch_add(1, SeqCst))
    }

    async fn check(&self, _conn: &mut usize) -> Result<(), Infallible> {
        Ok(())
    }
}

/// One `ArcManager` shared by two pools; the trait's defaults (never broken, close = drop)
/// apply to a manager that does not override them.
#[tokio::test(start_paused = true)]
async fn an_async_trait_manager_shared_by_two_pools() {
    let manager: ArcManager<usize, Infallible> = ArcManager::new(Numbers {
        connects: AtomicUsize::new(0),
    });
    let first = Pool::builder(manager.clone()).build().expect("valid");
    let second = Pool::builder(manager).build().expect("valid");
    let (a, b) = (
        first.get().await.expect("a"),
        second.get().await.expect("b"),
    );
    assert_eq!((*a, *b), (0, 1), "one manager made both");
    drop((a, b));
    assert_eq!(first.status().idle, 1, "never broken by default: kept");
    first.close().await;
    second.close().await;
    assert_eq!(first.status().counters.closed, 1);
    assert_eq!(second.status().counters.closed, 1);
}

/// A pool over a chosen manager is used from spawned tasks: its `get` and `lease` futures
/// are `Send` (a pool over a bare `Box<dyn DynManager>` fails to compile here, see
/// `BoxManager`).
#[tokio::test(start_paused = true)]
async fn a_pool_over_a_chosen_manager_works_in_spawned_tasks() {
    let (mock, calls) = (Mock::new(), Arc::new(Calls::default()));
    let pool = pool_of(choose("counted", &mock, &calls).expect("a known manager"));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                drop(pool.get().await.expect("a connection"));
                pool.lease().await.expect("a lease").id
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("the task ran");
    }
    assert_eq!(calls.connect.load(SeqCst), mock.connects());
    assert!(mock.connects() >= 1);
}

/// A manager that watches leases (`Balanced`, counting leases per endpoint) still sees each
/// lease start and end behind the adapters, as every other method crosses them.
#[tokio::test(start_paused = true)]
async fn a_balanced_manager_behind_the_adapters_counts_its_leases() {
    let mock = Mock::new();
    let balanced = Balanced::from_endpoints([("a", mock.clone())]).expect("one endpoint");
    let balanced = Arc::new(balanced);
    type Held = dyn DynManager<Connection = Routed<Mock>, Error = BalanceError<MockError>>;
    let pool = pool_of(ArcManager::from(Arc::clone(&balanced) as Arc<Held>));
    let leases = |balanced: &Balanced<Mock>| balanced.endpoints()[0].leases;
    let (a, b) = (
        pool.lease().await.expect("a"),
        pool.lease().await.expect("b"),
    );
    assert_eq!(leases(&balanced), 2);
    drop(a);
    assert_eq!(leases(&balanced), 1);
    drop(b);
    assert_eq!(leases(&balanced), 0);
}
