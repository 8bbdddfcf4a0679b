//! The builder refuses settings a pool could not honour.

mod support;

use pool::{BuildError, Pool};
use support::Mock;

#[test]
fn max_size_zero_is_refused() {
    let built = Pool::builder(Mock::new()).max_size(0).build();
    assert_eq!(built.err(), Some(BuildError::ZeroMaxSize));
}

#[test]
fn min_idle_above_max_size_is_refused() {
    let built = Pool::builder(Mock::new()).max_size(4).min_idle(5).build();
    assert_eq!(
        built.err(),
        Some(BuildError::MinIdleAboveMax {
            min_idle: 5,
            max_size: 4
        })
    );
}

#[test]
fn min_idle_equal_to_max_size_is_accepted() {
    let pool = Pool::builder(Mock::new())
        .max_size(4)
        .min_idle(4)
        .build()
        .expect("min_idle == max_size is valid");
    assert_eq!(pool.status().max_size, 4);
}
