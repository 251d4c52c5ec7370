//! The OpenAI speech clients against the test kit's OpenAI server: transcription (json,
//! verbose_json with words, G.711 input), streamed speech (durations, whole samples,
//! formats), the wire form, every fault class, retries before the first byte, and TLS.

use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_audio::client::{ApiKey, Connection, RetryPolicy, Timeouts, TlsRoots};
use promptkit_audio::openai::{
    MAX_INPUT_CHARS, OpenAiStt, OpenAiSttConfig, OpenAiTts, OpenAiTtsConfig, decode_transcription,
};
use promptkit_core::{
    AudioEncoding, AudioFormat, AudioFrame, SpeechError, SpeechPrice, SpeechToText,
    SynthesisOptions, TextToSpeech, TranscriptionOptions,
};
use promptkit_testkit::speech::{
    Fault, MS_PER_CHAR, Recorded, Script, Segment, SpeechServer, Vendor,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const KEY: &str = "sk-test-key-0123456789";

/// The error of a synthesis that must fail to start.
fn refused(result: Result<promptkit_core::AudioStream, SpeechError>) -> SpeechError {
    match result {
        Err(error) => error,
        Ok(_) => panic!("the synthesis started"),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn connection(base: &str) -> Connection {
    Connection::new(format!("{base}/v1"))
        .with_api_key(ApiKey::new(KEY))
        .with_timeouts(
            Timeouts::default()
                .with_connect(Duration::from_secs(2))
                .with_first_byte(ms(400))
                .with_idle(ms(400)),
        )
        .with_retry(RetryPolicy::none())
}

fn stt(server: &SpeechServer) -> OpenAiStt {
    OpenAiStt::new(OpenAiSttConfig::compatible(connection(&server.http_url()))).unwrap()
}

fn tts(server: &SpeechServer) -> OpenAiTts {
    OpenAiTts::new(OpenAiTtsConfig::compatible(connection(&server.http_url()))).unwrap()
}

/// `secs` of a quiet tone at 16 kHz in 20 ms frames.
fn pcm_frames(secs: u32) -> Vec<AudioFrame> {
    let samples: Vec<u8> = (0..16_000 * secs)
        .flat_map(|n| ((n % 40) as i16 * 50 - 1000).to_le_bytes())
        .collect();
    samples
        .chunks(640)
        .map(|c| AudioFrame::new(c.to_vec(), AudioFormat::PCM16_16K_MONO))
        .collect()
}

fn script() -> Script {
    Script::transcript(vec![
        Segment::new("hello there", 200, 900),
        Segment::new("how are you", 1200, 1800),
        Segment::new("never heard", 2500, 2900),
    ])
}

/// Samples per channel in `frames` (24 kHz: 240 per character of speech).
fn samples(frames: &[AudioFrame]) -> usize {
    frames.iter().filter_map(AudioFrame::samples).sum()
}

/// The multipart fields the server recorded.
fn fields(recorded: &Recorded) -> Value {
    recorded.json_messages().into_iter().next().unwrap()
}

async fn collect(
    stream: promptkit_core::AudioStream,
) -> (Vec<AudioFrame>, Option<SpeechError>, usize) {
    let mut frames = Vec::new();
    let mut error = None;
    let mut after_error = 0;
    let mut stream = stream;
    while let Some(item) = stream.next().await {
        match item {
            Ok(frame) if error.is_none() => frames.push(frame),
            Ok(_) => after_error += 1,
            Err(e) => {
                if error.is_some() {
                    after_error += 1;
                }
                error.get_or_insert(e);
            }
        }
    }
    (frames, error, after_error)
}

#[tokio::test]
async fn transcribes_json_with_the_default_model_and_the_local_duration() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    server.push(script());
    let stt = stt(&server);
    let transcript = stt
        .transcribe(&pcm_frames(2), &TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, "hello there how are you");
    assert!(transcript.words.is_empty());
    // gpt-4o models report tokens, not seconds: the duration is the audio's own.
    assert_eq!(transcript.audio_duration, Some(Duration::from_secs(2)));
    let request = &server.requests()[0];
    let fields = fields(request);
    assert_eq!(fields["model"], "gpt-4o-mini-transcribe");
    assert_eq!(fields["response_format"], "json");
    assert!(fields.get("timestamp_granularities[]").is_none());
    assert_eq!(
        request.binary_bytes(),
        44 + 64_000,
        "a PCM16 WAV of the frames"
    );
    let cost = SpeechPrice::per_minute(0.003).cost(&promptkit_core::SpeechUsage::audio(
        transcript.audio_duration.unwrap(),
    ));
    assert!((cost - 0.0001).abs() < 1e-9);
}

#[tokio::test]
async fn transcribes_verbose_json_with_words_for_whisper() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    server.push(script());
    let stt = OpenAiStt::new(
        OpenAiSttConfig::compatible(connection(&server.http_url()))
            .with_model("whisper-1")
            .with_price(SpeechPrice::per_minute(0.006)),
    )
    .unwrap();
    let options = TranscriptionOptions::new()
        .with_language("en-GB")
        .with_prompt("greetings")
        .with_extra("temperature", 0);
    let transcript = stt.transcribe(&pcm_frames(2), &options).await.unwrap();
    assert_eq!(transcript.text, "hello there how are you");
    let words: Vec<(&str, Duration, Duration)> = transcript
        .words
        .iter()
        .map(|w| (w.text.as_str(), w.start, w.end))
        .collect();
    assert_eq!(
        words,
        vec![
            ("hello", ms(200), ms(550)),
            ("there", ms(550), ms(900)),
            ("how", ms(1200), ms(1400)),
            ("are", ms(1400), ms(1600)),
            ("you", ms(1600), ms(1800)),
        ]
    );
    assert_eq!(transcript.audio_duration, Some(Duration::from_secs(2)));
    assert_eq!(transcript.start, Some(ms(200)));
    assert_eq!(transcript.end, Some(ms(1800)));
    assert_eq!(transcript.language.as_deref(), Some("english"));
    assert_eq!(stt.price(), Some(SpeechPrice::per_minute(0.006)));
    let fields = fields(&server.requests()[0]);
    assert_eq!(fields["model"], "whisper-1");
    assert_eq!(fields["response_format"], "verbose_json");
    assert_eq!(fields["timestamp_granularities[]"], "word");
    assert_eq!(fields["language"], "en");
    assert_eq!(fields["prompt"], "greetings");
    assert_eq!(fields["temperature"], "0");
}

#[tokio::test]
async fn mulaw_input_is_decoded_into_a_pcm16_wav() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    server.push(Script::transcript(vec![Segment::new(
        "on the phone",
        100,
        600,
    )]));
    let stt = stt(&server);
    let frames: Vec<AudioFrame> = (0..50)
        .map(|_| AudioFrame::new(vec![0xff_u8; 160], AudioFormat::MULAW_8K_MONO))
        .collect();
    let transcript = stt
        .transcribe(&frames, &TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, "on the phone");
    assert_eq!(transcript.audio_duration, Some(Duration::from_secs(1)));
    let request = &server.requests()[0];
    assert_eq!(
        request.binary_bytes(),
        44 + 16_000,
        "8 kHz PCM16, one second"
    );
    let file = &fields(request)["file"];
    assert_eq!(file["filename"], "audio.wav");
    assert_eq!(file["content_type"], "audio/wav");
}

#[tokio::test]
async fn a_wav_file_is_uploaded_as_it_is() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    server.push(script());
    let pcm: Vec<u8> = pcm_frames(2).iter().flat_map(|f| f.data.to_vec()).collect();
    let file =
        promptkit_audio::wav::to_bytes(&AudioFrame::new(pcm, AudioFormat::PCM16_16K_MONO)).unwrap();
    let wav = AudioFormat::new(16_000, 1, AudioEncoding::Wav);
    let frames: Vec<AudioFrame> = file
        .chunks(1000)
        .map(|c| AudioFrame::new(c.to_vec(), wav))
        .collect();
    let transcript = stt(&server)
        .transcribe(&frames, &TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, "hello there how are you");
    assert_eq!(transcript.audio_duration, Some(Duration::from_secs(2)));
    assert_eq!(server.requests()[0].binary_bytes(), file.len());
}

#[tokio::test]
async fn empty_or_mixed_audio_is_refused_before_any_request() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let stt = stt(&server);
    let options = TranscriptionOptions::new();
    assert!(matches!(
        stt.transcribe(&[], &options).await,
        Err(SpeechError::EmptyAudio)
    ));
    let mixed = vec![
        AudioFrame::new(vec![0; 320], AudioFormat::PCM16_16K_MONO),
        AudioFrame::new(vec![0; 160], AudioFormat::MULAW_8K_MONO),
    ];
    assert!(matches!(
        stt.transcribe(&mixed, &options).await,
        Err(SpeechError::InvalidInput { .. })
    ));
    let opus = vec![AudioFrame::new(
        vec![1; 40],
        AudioFormat::new(48_000, 1, AudioEncoding::Opus),
    )];
    assert!(matches!(
        stt.transcribe(&opus, &options).await,
        Err(SpeechError::UnsupportedFormat(_))
    ));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn speech_lasts_ten_ms_per_character_in_whole_samples() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let tts = tts(&server);
    let text = "Hello there, this is a sentence of speech to stream back.";
    let chars = text.chars().count() as u64;
    let (frames, error, _) = collect(
        tts.synthesize(text, &SynthesisOptions::new())
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    let format = AudioFormat::PCM16_24K_MONO;
    let mut samples_before = 0;
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.format, format);
        assert_eq!(frame.data.len() % 2, 0, "whole samples");
        assert_eq!(
            frame.timestamp,
            format.duration_of_samples(samples_before),
            "frames follow each other"
        );
        let d = frame.duration().unwrap();
        assert!(d <= ms(100), "{d:?}");
        if i + 1 < frames.len() {
            assert!(d >= ms(20), "{d:?}");
        }
        samples_before += frame.samples().unwrap();
    }
    assert_eq!(
        format.duration_of_samples(samples_before),
        Some(ms(chars * MS_PER_CHAR))
    );
    assert!(frames.len() > 1, "streamed, not one blob");
}

#[tokio::test]
async fn speech_is_resampled_and_encoded_to_the_format_asked_for() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let tts = tts(&server);
    assert_eq!(tts.formats()[0], AudioFormat::PCM16_24K_MONO);
    let text = "Twenty characters!!";
    let chars = text.chars().count();
    for (format, bytes_per_char) in [
        (AudioFormat::PCM16_16K_MONO, 320),
        (AudioFormat::MULAW_8K_MONO, 80),
        (AudioFormat::ALAW_8K_MONO, 80),
    ] {
        assert!(tts.formats().contains(&format));
        let options = SynthesisOptions::new().with_format(format);
        let (frames, error, _) = collect(tts.synthesize(text, &options).await.unwrap()).await;
        assert!(error.is_none(), "{error:?}");
        assert!(frames.iter().all(|f| f.format == format));
        let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        assert_eq!(bytes, chars * bytes_per_char, "{format:?}");
    }
    let stereo = SynthesisOptions::new().with_format(AudioFormat::pcm16(24_000, 2));
    assert!(matches!(
        tts.synthesize(text, &stereo).await,
        Err(SpeechError::UnsupportedFormat(_))
    ));
}

#[tokio::test]
async fn the_wire_form_puts_the_key_in_the_bearer_header_only() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let tts = OpenAiTts::new(
        OpenAiTtsConfig::compatible(connection(&server.http_url()))
            .with_voice("nova")
            .with_instructions("Speak warmly."),
    )
    .unwrap();
    let options = SynthesisOptions::new().with_speed(1.25);
    let _ = collect(tts.synthesize("Hi there.", &options).await.unwrap()).await;
    let tts1 = OpenAiTts::new(
        OpenAiTtsConfig::compatible(connection(&server.http_url()))
            .with_model("tts-1")
            .with_instructions("ignored by tts-1"),
    )
    .unwrap();
    let _ = collect(
        tts1.synthesize("Hi.", &SynthesisOptions::new().with_voice("echo"))
            .await
            .unwrap(),
    )
    .await;
    server.push(script());
    let _ = stt(&server)
        .transcribe(&pcm_frames(1), &TranscriptionOptions::new())
        .await
        .unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.header("authorization"),
            Some(&*format!("Bearer {KEY}"))
        );
        assert!(!request.path.contains(KEY) && !request.query.contains(KEY));
        assert!(request.query.is_empty());
    }
    assert_eq!(requests[0].path, "/v1/audio/speech");
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(
        requests[0].json_messages()[0],
        json!({
            "model": "gpt-4o-mini-tts", "input": "Hi there.", "voice": "nova",
            "response_format": "pcm", "speed": 1.25, "instructions": "Speak warmly.",
        })
    );
    assert_eq!(
        requests[1].json_messages()[0],
        json!({"model": "tts-1", "input": "Hi.", "voice": "echo", "response_format": "pcm"})
    );
    assert_eq!(requests[2].path, "/v1/audio/transcriptions");
    assert!(
        requests[2]
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
}

#[tokio::test]
async fn no_key_is_sent_when_none_is_configured() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let keyless =
        Connection::new(format!("{}/v1", server.http_url())).with_retry(RetryPolicy::none());
    let tts = OpenAiTts::new(OpenAiTtsConfig::compatible(keyless.clone())).unwrap();
    let stt = OpenAiStt::new(OpenAiSttConfig::compatible(keyless)).unwrap();
    let error = refused(tts.synthesize("Hello.", &SynthesisOptions::new()).await);
    assert!(matches!(error, SpeechError::Auth { .. }), "{error:?}");
    let error = stt
        .transcribe(&pcm_frames(1), &TranscriptionOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(error, SpeechError::Auth { ref message } if message.contains("API key")));
    for request in server.requests() {
        assert_eq!(request.header("authorization"), None);
    }
}

#[tokio::test]
async fn refused_requests_map_to_the_error_classes() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let tts = tts(&server);
    let stt = stt(&server);
    let refuse = |status, retry_after_secs| {
        Script::fault(Fault::Status {
            status,
            retry_after_secs,
        })
    };
    for (status, retry_after) in [
        (401, None),
        (403, None),
        (429, Some(1)),
        (500, None),
        (400, None),
    ] {
        server.push(refuse(status, retry_after));
        let tts_error = refused(tts.synthesize("Hello.", &SynthesisOptions::new()).await);
        server.push(refuse(status, retry_after));
        let stt_error = stt
            .transcribe(&pcm_frames(1), &TranscriptionOptions::new())
            .await
            .unwrap_err();
        for error in [tts_error, stt_error] {
            assert!(!error.to_string().contains(KEY));
            match (status, error) {
                (401 | 403, SpeechError::Auth { message }) => assert!(!message.is_empty()),
                (
                    429,
                    SpeechError::RateLimited {
                        retry_after,
                        message,
                    },
                ) => {
                    assert_eq!(retry_after, Some(Duration::from_secs(1)));
                    assert!(message.contains("Rate limit"), "{message}");
                }
                (
                    500,
                    SpeechError::Service {
                        status: 500,
                        message,
                    },
                ) => {
                    assert!(message.contains("The server had an error"), "{message}");
                }
                (400, SpeechError::Service { status: 400, .. }) => {}
                (status, error) => panic!("{status}: {error:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_speech_body_cut_mid_stream_ends_in_a_terminal_transport_error() {
    let text = "A sentence long enough for several chunks of audio to be sent back.";
    for fault in [Fault::VendorError, Fault::CloseMidStream] {
        let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
        let tts = tts(&server);
        server.push(Script::fault(fault.clone()));
        let (frames, error, after) = collect(
            tts.synthesize(text, &SynthesisOptions::new())
                .await
                .unwrap(),
        )
        .await;
        assert!(
            matches!(error, Some(SpeechError::Transport { .. })),
            "{fault:?}: {error:?}"
        );
        assert!(!frames.is_empty(), "the first chunk's audio arrived");
        assert!(samples(&frames) <= 2_400, "at most the first 100 ms");
        assert_eq!(after, 0, "nothing after the error");
        // Nothing was retried once audio had come back.
        assert_eq!(server.requests().len(), 1);
        // The broken connection is not reused: the next request works.
        let (frames, error, _) = collect(
            tts.synthesize("Again.", &SynthesisOptions::new())
                .await
                .unwrap(),
        )
        .await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(samples(&frames), 6 * 240);
    }
}

#[tokio::test]
async fn a_stalled_speech_body_times_out_on_the_idle_timeout() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let tts = tts(&server);
    server.push(Script::fault(Fault::Stall));
    let (frames, error, after) = collect(
        tts.synthesize(
            "A sentence long enough for a few chunks.",
            &SynthesisOptions::new(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert!(!frames.is_empty());
    assert!(
        matches!(error, Some(SpeechError::Timeout(d)) if d == ms(400)),
        "{error:?}"
    );
    assert_eq!(after, 0);
}

#[tokio::test]
async fn a_slow_first_chunk_times_out_on_the_first_byte_timeout() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let tts = tts(&server);
    let stt = stt(&server);
    // A first chunk slower than usual but within the timeout is fine.
    server.push(Script::fault(Fault::SlowFirstChunk(ms(50))));
    let (frames, error, _) = collect(
        tts.synthesize("Hello.", &SynthesisOptions::new())
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(samples(&frames), 6 * 240);
    server.push(Script::fault(Fault::SlowFirstChunk(Duration::from_secs(5))));
    let error = refused(tts.synthesize("Hello.", &SynthesisOptions::new()).await);
    assert!(
        matches!(error, SpeechError::Timeout(d) if d == ms(400)),
        "{error:?}"
    );
    server.push(script().with_fault(Fault::SlowFirstChunk(Duration::from_secs(5))));
    let error = stt
        .transcribe(&pcm_frames(1), &TranscriptionOptions::new())
        .await
        .unwrap_err();
    // A transcription's deadline is the first-byte timeout plus its audio (1 s here).
    assert!(
        matches!(error, SpeechError::Timeout(d) if d == ms(400) + Duration::from_secs(1)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_transcription_body_cut_or_stalled_is_an_error() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let stt = stt(&server);
    for fault in [Fault::VendorError, Fault::CloseMidStream] {
        server.push(script().with_fault(fault.clone()));
        let error = stt
            .transcribe(&pcm_frames(2), &TranscriptionOptions::new())
            .await
            .unwrap_err();
        assert!(
            matches!(error, SpeechError::Transport { .. }),
            "{fault:?}: {error:?}"
        );
    }
    server.push(script().with_fault(Fault::Stall));
    let error = stt
        .transcribe(&pcm_frames(2), &TranscriptionOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SpeechError::Timeout(d) if d == ms(400)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_before_the_first_byte_is_retried() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let retrying = connection(&server.http_url())
        .with_retry(RetryPolicy::default().with_backoff(ms(10), ms(50)));
    let tts = OpenAiTts::new(OpenAiTtsConfig::compatible(retrying.clone())).unwrap();
    let stt = OpenAiStt::new(OpenAiSttConfig::compatible(retrying)).unwrap();
    let limited = Script::fault(Fault::Status {
        status: 429,
        retry_after_secs: Some(0),
    });
    server.push(limited.clone());
    let (frames, error, _) = collect(
        tts.synthesize("Hello again.", &SynthesisOptions::new())
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none());
    assert_eq!(samples(&frames), 12 * 240, "the audio once, not twice");
    assert_eq!(server.requests().len(), 2);

    server.push(limited);
    server.push(script());
    let transcript = stt
        .transcribe(&pcm_frames(2), &TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, "hello there how are you");
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn text_too_long_or_empty_is_invalid_input() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let tts = tts(&server);
    let long = "a".repeat(MAX_INPUT_CHARS + 1);
    let error = refused(tts.synthesize(&long, &SynthesisOptions::new()).await);
    assert!(
        matches!(error, SpeechError::InvalidInput { .. }),
        "{error:?}"
    );
    let error = refused(tts.synthesize("  ", &SynthesisOptions::new()).await);
    assert!(
        matches!(error, SpeechError::InvalidInput { .. }),
        "{error:?}"
    );
    let fast = SynthesisOptions::new().with_speed(9.0);
    assert!(matches!(
        tts.synthesize("Hi.", &fast).await,
        Err(SpeechError::InvalidInput { .. })
    ));
    assert!(server.requests().is_empty());
    // Exactly the limit is fine (multi-byte characters count as one).
    let (frames, error, _) = collect(
        tts.synthesize(&"é".repeat(MAX_INPUT_CHARS), &SynthesisOptions::new())
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(samples(&frames), MAX_INPUT_CHARS * 240);
}

#[tokio::test]
async fn speech_and_transcription_work_over_https() {
    let server = SpeechServer::start_tls(Vendor::OpenAi).await.unwrap();
    assert!(server.http_url().starts_with("https://"));
    let roots = TlsRoots::system().with_root_der(server.certificate_der().unwrap().to_vec());
    let trusted = connection(&server.http_url()).with_tls(roots);
    let tts = OpenAiTts::new(OpenAiTtsConfig::compatible(trusted.clone())).unwrap();
    let (frames, error, _) = collect(
        tts.synthesize("Secure hello.", &SynthesisOptions::new())
            .await
            .unwrap(),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(samples(&frames), 13 * 240);
    server.push(script());
    let stt = OpenAiStt::new(OpenAiSttConfig::compatible(trusted)).unwrap();
    let transcript = stt
        .transcribe(&pcm_frames(1), &TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, "hello there");

    // Without the test certificate among the roots, the handshake fails.
    let untrusted = connection(&server.http_url());
    let tts = OpenAiTts::new(OpenAiTtsConfig::compatible(untrusted)).unwrap();
    let error = refused(tts.synthesize("Hello.", &SynthesisOptions::new()).await);
    assert!(matches!(error, SpeechError::Transport { .. }), "{error:?}");
}

#[test]
fn the_defaults_are_openai_s_own() {
    let stt = OpenAiSttConfig::new(ApiKey::new("sk-x"));
    assert_eq!(stt.connection.base_url, "https://api.openai.com/v1");
    assert_eq!(stt.model, "gpt-4o-mini-transcribe");
    let tts = OpenAiTtsConfig::new(ApiKey::new("sk-x"));
    assert_eq!(
        (tts.model.as_str(), tts.voice.as_str()),
        ("gpt-4o-mini-tts", "alloy")
    );
    let tts = OpenAiTts::new(tts.with_price(SpeechPrice::per_million_characters(15.0))).unwrap();
    assert_eq!(tts.price(), Some(SpeechPrice::per_million_characters(15.0)));
    assert_eq!(tts.id(), "openai");
}

proptest! {
    #[test]
    fn the_decoder_never_panics_on_any_text(text in ".{0,400}") {
        let _ = decode_transcription(&text);
    }

    #[test]
    fn the_decoder_never_panics_on_odd_transcriptions(
        text in ".{0,40}",
        start in proptest::num::f64::ANY,
        end in proptest::num::f64::ANY,
        duration in proptest::num::f64::ANY,
        logprob in proptest::num::f64::ANY,
    ) {
        let num = |x: f64| if x.is_finite() { json!(x) } else { json!(null) };
        let body = json!({
            "text": text, "duration": num(duration), "language": text,
            "words": [{"word": text, "start": num(start), "end": num(end)}, {"word": null}],
            "segments": [{"start": num(end), "end": num(start), "avg_logprob": num(logprob)}],
            "logprobs": [{"logprob": num(logprob)}],
            "usage": {"type": "duration", "seconds": num(duration)},
        });
        let transcript = decode_transcription(&body.to_string()).unwrap();
        if let (Some(s), Some(e)) = (transcript.start, transcript.end) {
            prop_assert!(s <= e);
        }
        for word in &transcript.words {
            prop_assert!(word.start <= word.end);
        }
        if let Some(c) = transcript.confidence {
            prop_assert!((0.0..=1.0).contains(&c));
        }
    }
}

/// A transcription that timed out waiting for its answer is not sent again: the vendor may
/// have transcribed, and billed, it already. A 503 before it is retried.
#[tokio::test]
async fn a_transcription_that_timed_out_is_not_sent_again() {
    let server = SpeechServer::start(Vendor::OpenAi).await.unwrap();
    let retrying = connection(&server.http_url())
        .with_retry(RetryPolicy::default().with_backoff(ms(1), ms(1)));
    let stt = OpenAiStt::new(OpenAiSttConfig::compatible(retrying)).unwrap();
    server.push(script().with_fault(Fault::SlowFirstChunk(Duration::from_secs(5))));
    let error = stt
        .transcribe(&pcm_frames(1), &TranscriptionOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(error, SpeechError::Timeout(_)), "{error:?}");
    assert_eq!(server.requests().len(), 1, "sent once");

    server.push(Script::fault(Fault::Status {
        status: 503,
        retry_after_secs: None,
    }));
    server.push(script());
    let transcript = stt
        .transcribe(&pcm_frames(1), &TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, "hello there");
    assert_eq!(server.requests().len(), 3, "the 503 was retried once");
}
