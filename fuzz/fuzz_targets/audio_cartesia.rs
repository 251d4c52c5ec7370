//! Cartesia's server messages (audio chunks, word timestamps, flush_done, done, errors):
//! the decoder never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = promptkit_audio::cartesia::decode(text);
    }
});
