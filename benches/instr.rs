//! Instruction counts per checkout: runs N checkouts of one mode on a current-thread tokio
//! runtime, for `valgrind --tool=callgrind` to count. A wall-clock bench on a shared 2-core
//! machine swings by tens of percent; an instruction count does not, so two versions of the
//! pool are compared here by what they execute (not by cache misses or contention, which only
//! the checkout bench sees).
//!
//! Usage: `instr <mode> <n> [max_size]`, built by `cargo build --release -p benches --example
//! instr`. `max_size` (default 4) is our pool's, for `get`, `lease` and `lease2`: 64 against 4
//! shows what a wide pool costs each lease.
//! `scripts/instr` runs every mode under callgrind at n = 1000 and n = 11000 and prints
//! (I(11000) - I(1000)) / 10000, which cancels the runtime's start, the pool's build and its
//! first connect, leaving one checkout and its drop. Modes, with the managers and settings of
//! `benches/checkout.rs` (a `u64` connection whose check returns at once, defaults but these):
//! - `get16`, `deadpool16`: 16 tasks on the one thread, each holding its connection across a
//!   `yield_now`, so most callers wait in line (the contended checkout, without threads).
//!   `deadpool16t`: the same with deadpool's wait timeout at 30 s (our pool's default), so
//!   that its waiters arm a timer as ours do. `bb8_16`: the same over bb8 (whose waiters
//!   always arm one, at its 30 s default).
//! - `get`: our pool, `max_size` 4, `get().await` then drop.
//! - `lease`: our pool, `max_size` 4, `max_streams` 16, `lease().await` then drop, the lease
//!   alone on its connection (so it is the connection's first lease and its end the last).
//! - `lease2`: the same pool, a lease taken and dropped while another lease is held on the
//!   same connection all along (a lease beside others).
//! - `floor`: a tokio `Semaphore` of 4 permits plus a `std::sync::Mutex<Vec<u64>>`.
//! - `deadpool`: deadpool 0.13 `managed::Pool`, `max_size` 4, `recycle` returns `Ok`.
//! - `bb8`: bb8 0.9, `max_size` 4, `is_valid` returns `Ok` (checked on every checkout, its
//!   default).

#![forbid(unsafe_code)]

mod support;

use std::hint::black_box;
use std::sync::Mutex;

use support::peers::{Bb8, Dead, Ours};
use tokio::sync::Semaphore;

const MODES: &str =
    "get, lease, lease2, floor, deadpool, bb8, get16, deadpool16, deadpool16t, bb8_16";

/// `n` times: a checkout, then its guard dropped at once.
async fn repeat<G>(n: u64, checkout: impl AsyncFn() -> G) {
    for _ in 0..n {
        let guard = checkout().await;
        black_box(&guard);
        drop(guard);
    }
}

/// `n` rounds split over 16 tasks on the one thread, each round `round` (a checkout held
/// across one yield, so most callers wait in line).
async fn contended(n: u64, round: impl AsyncFn() + Clone + 'static) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let round = round.clone();
        tasks.spawn_local(async move {
            for _ in 0..n / 16 {
                round().await;
            }
        });
    }
    tasks.join_all().await;
}

fn ours(max_size: usize, max_streams: usize) -> pool::Pool<Ours> {
    pool::Pool::builder(Ours)
        .max_size(max_size)
        .max_streams(max_streams)
        .build()
        .expect("valid settings")
}

async fn run(mode: &str, n: u64, max_size: usize) {
    match mode {
        "get" => {
            let pool = ours(max_size, 1);
            repeat(n, async || pool.get().await.expect("a connection")).await;
            pool.close().await;
        }
        "get16" => {
            let pool = ours(max_size, 1);
            contended(n, async move || {
                let conn = pool.get().await.expect("a connection");
                tokio::task::yield_now().await;
                drop(conn);
            })
            .await;
        }
        "deadpool16" | "deadpool16t" => {
            let mut builder = deadpool::managed::Pool::builder(Dead).max_size(4);
            if mode == "deadpool16t" {
                builder = builder
                    .wait_timeout(Some(std::time::Duration::from_secs(30)))
                    .runtime(deadpool::Runtime::Tokio1);
            }
            let pool: deadpool::managed::Pool<Dead> = builder.build().expect("valid settings");
            contended(n, async move || {
                let conn = pool.get().await.expect("a connection");
                tokio::task::yield_now().await;
                drop(conn);
            })
            .await;
        }
        "lease" | "lease2" => {
            let pool = ours(max_size, 16);
            let held = if mode == "lease2" {
                Some(pool.lease().await.expect("a lease"))
            } else {
                None
            };
            repeat(n, async || pool.lease().await.expect("a lease")).await;
            assert_eq!(pool.status().size, 1, "every lease on one connection");
            drop(held);
            pool.close().await;
        }
        "floor" => {
            let permits = Semaphore::new(4);
            let conns = Mutex::new(vec![7u64; 4]);
            repeat(n, async || {
                let permit = permits.acquire().await.expect("never closed");
                let conn = conns.lock().expect("not poisoned").pop().expect("a conn");
                black_box(conn);
                // The connection goes back before the permit, as in the checkout bench.
                conns.lock().expect("not poisoned").push(conn);
                drop(permit);
            })
            .await;
        }
        "deadpool" => {
            let pool: deadpool::managed::Pool<Dead> = deadpool::managed::Pool::builder(Dead)
                .max_size(4)
                .build()
                .expect("valid settings");
            repeat(n, async || pool.get().await.expect("a connection")).await;
            pool.close();
        }
        "bb8" | "bb8_16" => {
            let pool = bb8::Pool::builder()
                .max_size(4)
                .build(Bb8)
                .await
                .expect("valid settings");
            if mode == "bb8" {
                repeat(n, async || pool.get().await.expect("a connection")).await;
            } else {
                contended(n, async move || {
                    let conn = pool.get().await.expect("a connection");
                    tokio::task::yield_now().await;
                    drop(conn);
                })
                .await;
            }
        }
        other => {
            eprintln!("instr: unknown mode {other:?}; modes: {MODES}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.get(1).map(|n| n.parse::<u64>());
    let max_size = args.get(2).map_or(Ok(4), |m| m.parse::<usize>());
    let (Some(mode), Some(Ok(n)), Ok(max_size)) = (args.first(), n, max_size) else {
        eprintln!("usage: instr <mode> <n> [max_size]; modes: {MODES}");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    tokio::task::LocalSet::new().block_on(&runtime, run(mode, n, max_size));
}
