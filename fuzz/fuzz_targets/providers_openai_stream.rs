//! The OpenAI Chat Completions stream decoder (SSE framing, chunk and in-stream error decoding) on arbitrary
//! bytes, fed in two parts: events or a typed error, never a panic (review test 57).
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptkit_providers::openai::ChatStreamDecoder;

fuzz_target!(|data: &[u8]| {
    let [cut, bytes @ ..] = data else { return };
    let cut = usize::from(*cut) % (bytes.len() + 1);
    let mut decoder = ChatStreamDecoder::new();
    if decoder.feed(&bytes[..cut]).is_ok() && decoder.feed(&bytes[cut..]).is_ok() {
        let _ = decoder.finish();
    }
});
