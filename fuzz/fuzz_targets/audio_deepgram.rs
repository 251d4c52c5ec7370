//! The Deepgram client's decoder of live messages on arbitrary text: no panic, and an
//! event or an error for every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptkit_audio::deepgram;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = deepgram::decode(text);
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = deepgram::decode_batch(&json);
    }
    // Close codes with any reason.
    if let [a, b, rest @ ..] = data {
        let code = u16::from_be_bytes([*a, *b]);
        let _ = deepgram::close_error(code, &String::from_utf8_lossy(rest), a & 1 == 1);
    }
});
