//! A model-checked pool. A state-machine property test drives one pool
//! through random sequences of `get`, `try_get`, `lease`, `try_lease`, drops, `mark_broken`,
//! `detach`, `retain`, `resize`, `close`, failed and hanging connects, connections that
//! break or fail their checks, cancelled callers and time advances (paused tokio time), and
//! after every step checks the pool against a small reference model.
//!
//! The model is the ledger of what the test knows for sure: the guards and leases it holds,
//! what each caller got, and what the mock manager saw (connects made, failed, cut off by
//! the connect timeout, hanging; closes per connection; checks failed). From it the model
//! predicts exactly what the pool promises exactly, and bounds what the pool's docs leave to
//! its choice (which idle connection, which connection a lease lands on):
//! - exact: `size`, `idle`, `in_use`, `leases`, `connecting`, `max_size`, and the counters
//!   `created`, `closed`, `connect_failures`, `timeouts`, `check_failures`;
//! - bounds: `waiting` (every pending caller is in line or waits for a connect of its own),
//!   slots within `max_size` (or what a shrink left, which only falls), at most `max_streams`
//!   leases per connection, no idle connection beside a waiter or above `max_size`;
//! - nothing handed out is broken, closed, detached or past its lifetime; no connection is
//!   closed twice or while in use; `retain` visits exactly the idle connections;
//! - fairness: with every pending caller in line, no caller is served while one of its kind
//!   (get or lease) that came before it still waits; after a failed connect or a resize the
//!   order among the callers waiting then is left open (a failed connect's slot goes to the
//!   oldest caller in line while its own caller pauses, which then waits at the place it
//!   came at, behind that caller; a shrink may send a caller back);
//! - liveness: no caller waits past its wait and connect timeouts;
//! - at the end, with everything given back, the pool still opens `max_size` connections at
//!   once (no slot leaked), and after `close` every connection made was closed exactly once.
//!
//! Each case builds a current-thread runtime with paused time; after each step the runtime
//! runs until every task has settled (a bounded number of yields, no sleeps; the clock moves
//! only by the steps' own advances). CI runs 256 cases of up to 40 steps with a fixed seed;
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` change both. A shrunk failure becomes a plain
//! test in `model/regressions.rs`.

mod model {
    pub mod mock;
    pub mod regressions;
    pub mod world;
}

use std::time::Duration;

use model::mock::Plan;
use model::world::{Settings, Step, World, runtime};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

/// The reference state the runner keeps: the settings of the case (the rest of the model
/// is the ledger in [`World`], which needs the pool's answers to keep).
struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Settings;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Settings> {
        (
            1..=3usize,
            1..=3usize,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(max_size, max_streams, fail_fast, lifetime, idle_timeout)| Settings {
                    max_size,
                    max_streams,
                    fail_fast,
                    lifetime,
                    idle_timeout,
                },
            )
            .boxed()
    }

    fn transitions(_: &Settings) -> BoxedStrategy<Step> {
        let index = 0..8usize;
        prop_oneof![
            6 => Just(Step::Get),
            2 => Just(Step::TryGet),
            6 => Just(Step::Lease),
            2 => Just(Step::TryLease),
            4 => index.clone().prop_map(Step::DropGet),
            1 => index.clone().prop_map(Step::MarkGet),
            1 => index.clone().prop_map(Step::DetachGet),
            5 => index.clone().prop_map(Step::DropLease),
            1 => index.clone().prop_map(Step::MarkLease),
            1 => index.clone().prop_map(Step::Kill),
            1 => index.clone().prop_map(Step::FailChecks),
            1 => Just(Step::Script(Plan::Fail)),
            2 => Just(Step::Script(Plan::Hang)),
            2 => (index.clone(), any::<bool>()).prop_map(|(i, ok)| Step::Release(i, ok)),
            2 => index.prop_map(Step::Abort),
            1 => (0..2u64).prop_map(Step::Retain),
            1 => (0..=4usize).prop_map(Step::Resize),
            4 => prop_oneof![
                Just(Duration::from_millis(100)),
                Just(Duration::from_millis(700)),
                Just(Duration::from_secs(2)),
            ]
            .prop_map(Step::Advance),
            1 => Just(Step::Close),
        ]
        .boxed()
    }

    fn apply(settings: Settings, _: &Step) -> Settings {
        settings
    }
}

/// The pool under test, in the runtime that drives it.
struct Sut {
    runtime: tokio::runtime::Runtime,
    world: World,
}

impl StateMachineTest for Reference {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(settings: &Settings) -> Sut {
        let runtime = runtime();
        let world = runtime.block_on(async { World::new(*settings) });
        Sut { runtime, world }
    }

    fn apply(mut sut: Sut, _: &Settings, step: Step) -> Sut {
        let Sut { runtime, world } = &mut sut;
        runtime.block_on(world.apply(&step));
        sut
    }

    fn teardown(sut: Sut, _: Settings) {
        let Sut { runtime, world } = sut;
        runtime.block_on(world.finish());
    }
}

/// 256 cases with a fixed seed unless `PROPTEST_CASES` / `PROPTEST_RNG_SEED` say otherwise;
/// shrunk failures are kept as plain tests, not files.
fn config() -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x9_3);
    }
    config.failure_persistence = None;
    config
}

prop_state_machine! {
    #![proptest_config(config())]

    /// The pool agrees with the model after every step of every generated sequence.
    #[test]
    fn pool_agrees_with_the_model(sequential 1..40 => Reference);
}

/// Runs one scripted sequence through the same model (for regression tests).
pub fn replay(settings: Settings, steps: &[Step]) {
    let runtime = runtime();
    runtime.block_on(async {
        let mut world = World::new(settings);
        for step in steps {
            world.apply(step).await;
        }
        world.finish().await;
    });
}
