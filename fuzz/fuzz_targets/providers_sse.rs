//! The providers' SSE decoder on arbitrary bytes: no panic, and where the body is split never
//! changes the events or the error (review test 56).
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptkit_providers::sse::{SseDecoder, SseError, SseEvent};

/// Feeds `parts` in order, then ends the stream.
fn decode(parts: &[&[u8]]) -> Result<Vec<SseEvent>, SseError> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for part in parts {
        decoder.feed_into(part, &mut events)?;
    }
    events.extend(decoder.finish()?);
    Ok(events)
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick two cuts; the rest is the body.
    let [a, b, bytes @ ..] = data else { return };
    let first = usize::from(*a) % (bytes.len() + 1);
    let second = first + usize::from(*b) % (bytes.len() - first + 1);
    let whole = decode(&[bytes]);
    let split = decode(&[&bytes[..first], &bytes[first..second], &bytes[second..]]);
    assert_eq!(whole, split);
});
