//! The stream codec on arbitrary bytes cut at arbitrary points: the frames and the error are
//! the same whether the stream arrives at once, a byte at a time or in random pieces; the
//! codec never panics and never waits for more input holding `max_frame` bytes or more; and
//! each frame is what the oracle decodes from the bytes it was cut from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transport_json::{DEFAULT_MAX_FRAME, Message, Resp};
use transport_json_fuzz::{Oracle, Rng, Wire, oracle, random_chunks, run_codec};

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_bytes(data, 0);
    // Small limits make `FrameTooLong` reachable with the fuzzer's short inputs.
    let max = [DEFAULT_MAX_FRAME, 1 + rng.below(64), 16 + rng.below(512)][rng.below(3)];
    check::<Message>(data, max, &mut rng);
    check::<Resp>(data, max, &mut rng);
});

fn check<T: Wire>(data: &[u8], max: usize, rng: &mut Rng) {
    let whole = run_codec::<T>(&[data], max);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(
        run_codec::<T>(&bytes, max),
        whole,
        "a byte at a time, max {max}"
    );
    for _ in 0..2 {
        let chunks = random_chunks(data, rng);
        assert_eq!(
            run_codec::<T>(&chunks, max),
            whole,
            "in pieces {chunks:?}, max {max}"
        );
    }
    // Each frame is what the oracle reads from the bytes the codec consumed for it.
    let mut from = 0;
    for (item, end) in whole.0 {
        let frame = &data[from..end];
        let expected: Oracle<T> = oracle(frame);
        assert_eq!(
            expected,
            Oracle::Value(item, frame.len()),
            "frame {:?}",
            String::from_utf8_lossy(frame)
        );
        from = end;
    }
}
