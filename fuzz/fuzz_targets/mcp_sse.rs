//! The legacy-SSE decoder of `promptkit-mcp` on arbitrary bytes: no panic, and where the
//! stream is split never changes the events (review test 56).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick two cuts; the rest is the stream.
    let [a, b, bytes @ ..] = data else { return };
    let first = usize::from(*a) % (bytes.len() + 1);
    let second = first + usize::from(*b) % (bytes.len() - first + 1);
    let whole = promptkit_mcp::decode_events_for_fuzzing([bytes]);
    let split = promptkit_mcp::decode_events_for_fuzzing([
        &bytes[..first],
        &bytes[first..second],
        &bytes[second..],
    ]);
    assert_eq!(whole, split);
});
