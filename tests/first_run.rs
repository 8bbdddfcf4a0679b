//! The README's first command stays fast: `cargo run --release --example demo` builds every
//! dependency and dev-dependency of the root package, so these tests read that set with
//! `cargo tree` and hold it to what the examples and `tests/` use.
//!
//! The benches (criterion, deadpool, bb8) and the Redis and MariaDB examples (redis,
//! mysql_async) are packages of their own for this reason: as dev-dependencies of the root package they took the demo's first
//! build from 45 crates (about 45 s on 2 cores) to 125 (2 min 26 s). A test-only dependency
//! belongs to the package whose tests use it, or to a package of its own.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::process::Command;

/// The most crates the demo's first build may compile: the 59 it compiles today (45 at the
/// split, then the demo's own HDR histogram and progress bar, `tower` for
/// examples/tower.rs and `async-trait` for `pool::dynamic`: 44 s of CPU in all), and room
/// for a few small ones.
const MAX_CRATES: usize = 64;

/// The crates only the benches and the Redis and MariaDB examples need.
const NOT_FOR_THE_DEMO: [&str; 5] = ["criterion", "deadpool", "bb8", "redis", "mysql_async"];

/// The crates of the root package's optional features (`tls`: rustls and ring, and rcgen for
/// its tests; `prometheus`: the exporter and its HTTP server), off by default.
const NOT_WITHOUT_A_FEATURE: [&str; 6] = [
    "rustls",
    "ring",
    "tokio-rustls",
    "rcgen",
    "metrics-exporter-prometheus",
    "hyper",
];

/// The names of every package an example of the root package builds: the root package and
/// its normal, build and dev dependencies, transitively, for this machine's target.
fn demo_dependencies() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--package", "mux-pool"])
        .args(["--edges", "normal,build,dev"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run `cargo tree`: {error}"));
    assert!(
        output.status.success(),
        "`cargo tree` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_builds_none_of_the_bench_or_redis_dependencies() {
    let crates = demo_dependencies();
    assert!(crates.contains("tokio"), "no tokio in {crates:?}");
    let heavy: Vec<&str> = NOT_FOR_THE_DEMO
        .into_iter()
        .filter(|name| crates.contains(*name))
        .collect();
    assert!(
        heavy.is_empty(),
        "`cargo run --example demo` now builds {heavy:?}: they are dependencies of the root \
         package; keep them in `benches/`, `examples/redis/` or `examples/mysql/`"
    );
}

#[test]
fn the_demo_builds_at_most_fifty_crates() {
    let crates = demo_dependencies();
    assert!(
        crates.len() <= MAX_CRATES,
        "`cargo run --example demo` now builds {} crates, more than the {MAX_CRATES} this test \
         allows (the README quotes the first build's time): give test-only dependencies to the \
         package whose tests use them. The crates: {crates:?}",
        crates.len()
    );
}

#[test]
fn the_demo_builds_no_crate_of_an_optional_feature() {
    let crates = demo_dependencies();
    let optional: Vec<&str> = NOT_WITHOUT_A_FEATURE
        .into_iter()
        .filter(|name| crates.contains(*name))
        .collect();
    assert!(
        optional.is_empty(),
        "`cargo run --example demo` now builds {optional:?}: a root package's feature is on by \
         default, or a dev-dependency turns one on, or a test-only crate is a dev-dependency of \
         the root package (make it one of the package whose tests use it)"
    );
}
