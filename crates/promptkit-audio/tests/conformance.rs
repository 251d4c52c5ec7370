//! Every speech client against the speech conformance suite of the test kit, each against
//! a local server speaking its vendor's protocol, faults included.
#![cfg(feature = "client")]

use std::sync::Arc;

use promptkit_audio::client::{ApiKey, Connection, RetryPolicy, Timeouts};
use promptkit_testkit::speech::Vendor;
use promptkit_testkit::speech::conformance::{
    FIRST_BYTE_TIMEOUT, IDLE_TIMEOUT, KEY, SttTarget, TtsTarget, run_stt, run_tts,
};

/// What the suite asks of every target: its key, no retries, its timeouts.
fn connection(base_url: &str) -> Connection {
    Connection::new(base_url)
        .with_api_key(ApiKey::new(KEY))
        .with_retry(RetryPolicy::none())
        .with_timeouts(
            Timeouts::default()
                .with_idle(IDLE_TIMEOUT)
                .with_first_byte(FIRST_BYTE_TIMEOUT),
        )
}

#[cfg(feature = "deepgram")]
#[tokio::test]
async fn deepgram_passes_the_speech_conformance_suite() {
    use promptkit_audio::deepgram::{DeepgramConfig, DeepgramStt};
    let target = SttTarget::start(Vendor::Deepgram, true, |base| {
        Arc::new(DeepgramStt::new(DeepgramConfig::compatible(connection(base))).unwrap())
    })
    .await
    .unwrap();
    run_stt(&target).await.assert_passed();
}

#[cfg(feature = "openai")]
#[tokio::test]
async fn openai_transcription_passes_the_speech_conformance_suite() {
    use promptkit_audio::openai::{OpenAiStt, OpenAiSttConfig};
    let target = SttTarget::start(Vendor::OpenAi, false, |base| {
        Arc::new(OpenAiStt::new(OpenAiSttConfig::compatible(connection(base))).unwrap())
    })
    .await
    .unwrap();
    run_stt(&target).await.assert_passed();
}

#[cfg(feature = "openai")]
#[tokio::test]
async fn openai_speech_passes_the_speech_conformance_suite() {
    use promptkit_audio::openai::{OpenAiTts, OpenAiTtsConfig};
    let target = TtsTarget::start(Vendor::OpenAi, false, false, |base| {
        Arc::new(OpenAiTts::new(OpenAiTtsConfig::compatible(connection(base))).unwrap())
    })
    .await
    .unwrap();
    run_tts(&target).await.assert_passed();
}

#[cfg(feature = "cartesia")]
#[tokio::test]
async fn cartesia_passes_the_speech_conformance_suite() {
    use promptkit_audio::cartesia::{CartesiaConfig, CartesiaTts};
    let target = TtsTarget::start(Vendor::Cartesia, true, true, |base| {
        let config = CartesiaConfig::new(ApiKey::new(KEY)).with_connection(connection(base));
        Arc::new(CartesiaTts::new(config).unwrap())
    })
    .await
    .unwrap();
    run_tts(&target).await.assert_passed();
}

#[cfg(feature = "elevenlabs")]
#[tokio::test]
async fn elevenlabs_passes_the_speech_conformance_suite() {
    use promptkit_audio::elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
    let target = TtsTarget::start(Vendor::ElevenLabs, true, true, |base| {
        let config = ElevenLabsConfig::new(ApiKey::new(KEY)).with_connection(connection(base));
        Arc::new(ElevenLabsTts::new(config).unwrap())
    })
    .await
    .unwrap();
    run_tts(&target).await.assert_passed();
}
