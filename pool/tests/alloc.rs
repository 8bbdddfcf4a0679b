//! A checkout and return on the fast path (an idle connection used within the
//! check interval) makes no heap allocation; neither does a lease and its
//! end on the lease fast path (a connection with room, no check due).
//!
//! The other half of the lease fast path's promise, one lock taken per lease and one per end,
//! is counted by the unit test `lease::tests::the_lease_fast_path_takes_the_lock_once` inside
//! the crate, where the lock is visible (a counter compiled only into the crate's own tests).
//!
//! A counting global allocator wraps the system one. Only allocations made on the measuring
//! thread while it has counting switched on are counted, into that thread's own counter, so
//! the test harness, other tests and other threads cannot disturb the count.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pool::Pool;
use support::Mock;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

/// Counts, on this thread, the allocations `f` makes on it.
fn allocations_in<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get) - before, out)
}

// SAFETY: `unsafe` is needed here only because `GlobalAlloc` is an unsafe trait (a test file is
// its own crate, so the library's `#![forbid(unsafe_code)]` is untouched). Every call is
// forwarded unchanged to `System`, which upholds the trait's contract; the counting touches
// only const-initialised thread-local `Cell`s without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn counting_allocator_sees_allocations() {
    let (count, v) = allocations_in(|| std::hint::black_box(vec![1u8; 64]));
    assert!(count >= 1, "the counter must see a Vec's allocation");
    drop(v);
}

#[test]
fn get_and_drop_on_the_fast_path_does_not_allocate() {
    // A current-thread runtime on this thread: the checkouts run here, nowhere else.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mock = Mock::new();
        let pool = Pool::builder(mock.clone())
            .max_size(4)
            .build()
            .expect("valid settings");
        // Warm-up: the connection is made, the maintenance task started, the lazily grown
        // parts of the runtime and the pool grown.
        for _ in 0..10 {
            drop(pool.get().await.expect("a connection"));
        }
        assert_eq!(mock.connects(), 1);

        let before = ALLOCATIONS.with(Cell::get);
        COUNTING.with(|c| c.set(true));
        for _ in 0..1000 {
            let conn = pool.get().await.expect("the idle connection");
            std::hint::black_box(conn.id);
            drop(conn);
        }
        COUNTING.with(|c| c.set(false));
        let count = ALLOCATIONS.with(Cell::get) - before;

        assert_eq!(count, 0, "{count} allocations in 1000 fast-path checkouts");
        assert_eq!(mock.checks(), 0, "the fast path: no check");
        assert_eq!(mock.connects(), 1);
        pool.close().await;
    });
}

#[test]
fn counting_across_an_await_sees_allocations() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let (count, v) = runtime.block_on(allocations_in_async(async {
        std::hint::black_box(vec![1u8; 64])
    }));
    assert!(count >= 1, "the counter must see a Vec's allocation");
    drop(v);
}

/// A lease on a connection with no lease (0 -> 1 -> 0: `is_broken` at both ends) and a lease
/// beside another (1 -> 2 -> 1), each taken and ended 1000 times: no allocation.
#[test]
fn lease_and_drop_on_the_fast_path_does_not_allocate() {
    // A current-thread runtime on this thread: the leases run here, nowhere else.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mock = Mock::new();
        let pool = Pool::builder(mock.clone())
            .max_size(4)
            .max_streams(16)
            .build()
            .expect("valid settings");
        // Warm-up: the connection is made and put in shared form, the
        // maintenance task started, the lazily grown parts of the runtime and pool grown.
        for _ in 0..10 {
            let first = pool.lease().await.expect("a lease");
            drop(pool.lease().await.expect("a second lease"));
            drop(first);
        }
        assert_eq!(mock.connects(), 1);

        let (alone, ()) = allocations_in_async(async {
            for _ in 0..1000 {
                let lease = pool.lease().await.expect("the idle shared connection");
                std::hint::black_box(lease.id);
                drop(lease);
            }
        })
        .await;
        let held = pool.lease().await.expect("a lease");
        let (beside, ()) = allocations_in_async(async {
            for _ in 0..1000 {
                let lease = pool.lease().await.expect("room beside the held lease");
                std::hint::black_box(lease.id);
                drop(lease);
            }
        })
        .await;
        drop(held);

        assert_eq!(
            alone, 0,
            "{alone} allocations in 1000 leases of an idle connection"
        );
        assert_eq!(
            beside, 0,
            "{beside} allocations in 1000 leases beside another"
        );
        assert_eq!(mock.checks(), 0, "the fast path: no check");
        assert_eq!(mock.connects(), 1);
        assert_eq!(pool.status().leases, 0);
        pool.close().await;
    });
}

/// Counts, on this thread, the allocations `f` makes on it while it runs.
async fn allocations_in_async<T>(f: impl std::future::Future<Output = T>) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let out = f.await;
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get) - before, out)
}
