//! ElevenLabs' multi-stream server messages (audio with alignment, isFinal, errors): the
//! decoder never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = promptkit_audio::elevenlabs::decode(text);
    }
});
