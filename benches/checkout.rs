//! placeholder, replaced by the benchmark issue
fn main() {}
