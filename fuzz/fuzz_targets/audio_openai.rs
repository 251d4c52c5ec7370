//! The OpenAI transcription response decoder (`json` and `verbose_json`) on arbitrary
//! bytes: a transcript or a typed error, never a panic; a transcript's span and words are
//! ordered and its confidence is a probability.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptkit_audio::openai::decode_transcription;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(transcript) = decode_transcription(text) {
        if let (Some(start), Some(end)) = (transcript.start, transcript.end) {
            assert!(start <= end);
        }
        for word in &transcript.words {
            assert!(word.start <= word.end);
        }
        if let Some(confidence) = transcript.confidence {
            assert!((0.0..=1.0).contains(&confidence));
        }
    }
});
