//! Audio formats, the golden forms of the speech types, and the defaults of the speech
//! seams.

use std::time::Duration;

use serde_json::json;

use super::golden;
use crate::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn audio_formats_count_samples_bytes_and_time() {
    let format = AudioFormat::PCM16_16K_MONO;
    assert_eq!(format.bytes_per_second(), Some(32_000));
    assert_eq!(format.samples_in(641), Some(320));
    assert_eq!(format.bytes_for_samples(256), Some(512));
    assert_eq!(format.duration_of_samples(256), Some(ms(16)));
    let stereo = AudioFormat::new(48_000, 2, AudioEncoding::F32);
    assert_eq!(stereo.bytes_per_sample_frame(), Some(8));
    assert_eq!(stereo.samples_in(960 * 8), Some(960));
    assert_eq!(AudioFormat::MULAW_8K_MONO.bytes_per_second(), Some(8_000));
    assert_eq!(AudioFormat::ALAW_8K_MONO.encoding.mime_type(), "audio/PCMA");

    let mp3 = AudioFormat {
        encoding: AudioEncoding::Mp3,
        ..format
    };
    assert_eq!(mp3.duration_of(1000), None);
    assert_eq!(mp3.samples_in(1000), None);
    assert_eq!(AudioFormat::pcm16(0, 1).duration_of_samples(10), None);
    assert_eq!(AudioFormat::pcm16(16_000, 0).samples_in(10), None);

    golden(
        &AudioFormat::PCM16_24K_MONO,
        &json!({"sample_rate": 24000, "channels": 1, "encoding": "pcm16"}),
    );
    golden(
        &AudioFormat::MULAW_8K_MONO,
        &json!({"sample_rate": 8000, "channels": 1, "encoding": "mulaw"}),
    );
    assert_eq!(AudioEncoding::Mulaw.bytes_per_sample(), Some(1));
    assert_eq!(AudioEncoding::Wav.mime_type(), "audio/wav");
}

#[test]
fn audio_frames_know_their_length_and_stay_small() {
    let frame = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
    assert_eq!(frame.duration(), Some(ms(20)));
    assert_eq!(frame.samples(), Some(320));
    assert_eq!(frame.timestamp, None);
    let placed = frame.with_timestamp(ms(1500));
    assert_eq!(placed.timestamp, Some(ms(1500)));
    // The pipeline carries frames inline in a 64-byte payload.
    assert!(size_of::<AudioFrame>() <= 56, "{}", size_of::<AudioFrame>());
}

#[test]
fn vad_and_turn_types_serialise_in_milliseconds() {
    golden(&VadState::Speaking, &json!("speaking"));
    golden(
        &VadEvent::SpeechStarted { at: ms(320) },
        &json!({"type": "speech_started", "at_ms": 320}),
    );
    golden(
        &VadEvent::SpeechEnded { at: ms(1500) },
        &json!({"type": "speech_ended", "at_ms": 1500}),
    );
    assert_eq!(VadEvent::SpeechEnded { at: ms(7) }.at(), ms(7));
    assert!(VadState::Stopping.is_speech());
    assert!(!VadState::Starting.is_speech());
    golden(
        &TurnEvent::Started { onset: ms(320) },
        &json!({"type": "started", "onset_ms": 320}),
    );
    golden(
        &TurnEvent::Ended(TurnEnd::new(ms(320), ms(1480), TurnEndReason::Silence)),
        &json!({"type": "ended", "onset_ms": 320, "end_ms": 1480, "reason": "silence"}),
    );
    golden(&TurnEndReason::SttEndpoint, &json!("stt_endpoint"));
    golden(&TurnEndReason::MaxDuration, &json!("max_duration"));
    let decision = VadDecision::new(VadState::Speaking, 0.9)
        .with_event(VadEvent::SpeechStarted { at: ms(100) });
    assert_eq!(decision.event.map(|e| e.at()), Some(ms(100)));
}

#[test]
fn transcription_options_keep_vendor_options() {
    let options = TranscriptionOptions::new()
        .with_language("en-US")
        .with_model("nova-3")
        .with_prompt("PromptKit")
        .with_extra("endpointing", 300)
        .with_extra("keyterm", json!(["promptkit"]));
    golden(
        &options,
        &json!({
            "language": "en-US",
            "model": "nova-3",
            "prompt": "PromptKit",
            "extra": {"endpointing": 300, "keyterm": ["promptkit"]}
        }),
    );
    golden(&TranscriptionOptions::default(), &json!({}));
}

#[test]
fn transcripts_carry_times_words_confidence_and_language() {
    let transcript = Transcript::new("Hello, world.")
        .with_span(ms(500), ms(1250))
        .with_words(vec![
            Word::new("Hello,", ms(500), ms(800)).with_confidence(0.5),
            Word::new("world.", ms(850), ms(1250))
                .with_confidence(0.75)
                .with_speaker(1),
        ])
        .with_confidence(0.625)
        .with_language("en")
        .with_audio_duration(ms(1250));
    golden(
        &transcript,
        &json!({
            "text": "Hello, world.",
            "start_ms": 500,
            "end_ms": 1250,
            "words": [
                {"text": "Hello,", "start_ms": 500, "end_ms": 800, "confidence": 0.5},
                {"text": "world.", "start_ms": 850, "end_ms": 1250, "confidence": 0.75, "speaker": 1}
            ],
            "confidence": 0.625,
            "language": "en",
            "audio_duration_ms": 1250
        }),
    );
    golden(&Transcript::new("hi"), &json!({"text": "hi"}));
}

#[test]
fn stt_events_keep_deepgrams_distinctions() {
    golden(
        &SttEvent::Partial {
            transcript: Transcript::new("hel"),
        },
        &json!({"type": "partial", "transcript": {"text": "hel"}}),
    );
    golden(
        &SttEvent::Final {
            transcript: Transcript::new("hello"),
            speech_final: true,
            from_finalize: false,
        },
        &json!({"type": "final", "transcript": {"text": "hello"}, "speech_final": true}),
    );
    golden(
        &SttEvent::Final {
            transcript: Transcript::new("hello"),
            speech_final: false,
            from_finalize: true,
        },
        &json!({"type": "final", "transcript": {"text": "hello"}, "from_finalize": true}),
    );
    golden(
        &SttEvent::SpeechStarted { at: ms(40) },
        &json!({"type": "speech_started", "at_ms": 40}),
    );
    golden(
        &SttEvent::UtteranceEnd { at: ms(2010) },
        &json!({"type": "utterance_end", "at_ms": 2010}),
    );
    golden(
        &SttEvent::Metadata(
            SttMetadata::new()
                .with_request_id("req-1")
                .with_model("nova-3")
                .with_audio_duration(ms(61_000)),
        ),
        &json!({"type": "metadata", "request_id": "req-1", "model": "nova-3", "audio_duration_ms": 61000}),
    );
}

#[test]
fn synthesis_options_keep_vendor_options() {
    let options = SynthesisOptions::new()
        .with_voice("alloy")
        .with_format(AudioFormat::MULAW_8K_MONO)
        .with_speed(1.25)
        .with_language("en")
        .with_model("sonic-3")
        .with_extra("generation_config", json!({"emotion": "calm"}));
    golden(
        &options,
        &json!({
            "voice": "alloy",
            "format": {"sample_rate": 8000, "channels": 1, "encoding": "mulaw"},
            "speed": 1.25,
            "language": "en",
            "model": "sonic-3",
            "extra": {"generation_config": {"emotion": "calm"}}
        }),
    );
    golden(&SynthesisOptions::default(), &json!({}));
}

#[test]
fn speech_errors_classify_and_print_once() {
    assert!(
        SpeechError::Service {
            status: 503,
            message: String::new()
        }
        .is_retryable()
    );
    assert!(
        !SpeechError::Service {
            status: 400,
            message: String::new()
        }
        .is_retryable()
    );
    assert!(!SpeechError::EmptyAudio.is_retryable());
    let invalid = SpeechError::InvalidInput {
        message: "frame of 320 samples, expected 256".into(),
    };
    assert!(!invalid.is_retryable());
    assert_eq!(
        invalid.to_string(),
        "invalid input: frame of 320 samples, expected 256"
    );
}

/// A level detector: speech when any sample's magnitude reaches a threshold, confirmed
/// after two frames.
#[derive(Debug, Default)]
struct Level {
    clock: Duration,
    run: u32,
    onset: Duration,
    state: Option<VadState>,
}

impl VoiceActivityDetector for Level {
    fn format(&self) -> AudioFormat {
        AudioFormat::PCM16_16K_MONO
    }

    fn frame_samples(&self) -> Option<usize> {
        Some(160)
    }

    fn process(&mut self, frame: &AudioFrame) -> Result<VadDecision, SpeechError> {
        if frame.format != self.format() {
            return Err(SpeechError::UnsupportedFormat(frame.format));
        }
        if frame.samples() != self.frame_samples() {
            return Err(SpeechError::InvalidInput {
                message: format!("frame of {:?} samples, expected 160", frame.samples()),
            });
        }
        let loud = frame
            .data
            .chunks_exact(2)
            .any(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() >= 1000);
        let start = self.clock;
        self.clock += frame.duration().unwrap_or_default();
        let mut decision = VadDecision::new(VadState::Quiet, if loud { 1.0 } else { 0.0 });
        if loud {
            if self.run == 0 {
                self.onset = start;
            }
            self.run += 1;
            decision.state = VadState::Starting;
            if self.run == 2 {
                decision = decision.with_event(VadEvent::SpeechStarted { at: self.onset });
            }
            if self.run >= 2 {
                decision.state = VadState::Speaking;
            }
        } else {
            self.run = 0;
        }
        self.state = Some(decision.state);
        Ok(decision)
    }

    fn reset(&mut self) {
        self.run = 0;
        self.state = None;
    }
}

#[derive(Debug)]
struct LevelFactory;

impl VadFactory for LevelFactory {
    fn name(&self) -> &str {
        "level"
    }

    fn fresh(&self) -> Result<Box<dyn VoiceActivityDetector>, SpeechError> {
        Ok(Box::new(Level::default()))
    }
}

fn frame(loud: bool) -> AudioFrame {
    let sample: i16 = if loud { 2000 } else { 0 };
    let data: Vec<u8> = std::iter::repeat_n(sample.to_le_bytes(), 160)
        .flatten()
        .collect();
    AudioFrame::new(data, AudioFormat::PCM16_16K_MONO)
}

#[test]
fn detectors_from_a_factory_are_independent_and_keep_their_clock_across_reset() {
    let factory: std::sync::Arc<dyn VadFactory> = std::sync::Arc::new(LevelFactory);
    let mut first = factory.fresh().unwrap();
    let mut second = factory.fresh().unwrap();
    assert_eq!(factory.name(), "level");
    assert_eq!(first.frame_samples(), Some(160));

    first.process(&frame(false)).unwrap();
    assert_eq!(first.process(&frame(true)).unwrap().event, None);
    let started = first.process(&frame(true)).unwrap();
    assert_eq!(started.state, VadState::Speaking);
    assert_eq!(started.event, Some(VadEvent::SpeechStarted { at: ms(10) }));

    // The second detector has heard nothing of the first one's audio.
    assert_eq!(
        second.process(&frame(true)).unwrap().state,
        VadState::Starting
    );

    // After a reset, speech is detected anew on the same clock.
    first.reset();
    first.process(&frame(true)).unwrap();
    let again = first.process(&frame(true)).unwrap();
    assert_eq!(again.event, Some(VadEvent::SpeechStarted { at: ms(30) }));

    let wrong = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
    assert!(matches!(
        first.process(&wrong),
        Err(SpeechError::InvalidInput { .. })
    ));
    let mulaw = AudioFrame::new(vec![0_u8; 160], AudioFormat::MULAW_8K_MONO);
    assert!(matches!(
        first.process(&mulaw),
        Err(SpeechError::UnsupportedFormat(f)) if f == AudioFormat::MULAW_8K_MONO
    ));
}

/// Ends a turn on the recogniser's `speech_final`, or at the end of the audio.
#[derive(Debug, Default)]
struct EndpointOnly {
    clock: Duration,
    onset: Option<Duration>,
}

impl TurnDetector for EndpointOnly {
    fn observe(&mut self, signal: TurnSignal<'_>) -> Result<Option<TurnEvent>, SpeechError> {
        Ok(match signal {
            TurnSignal::Audio(frame) => {
                self.clock += frame.duration().unwrap_or_default();
                None
            }
            TurnSignal::Vad(VadDecision {
                event: Some(VadEvent::SpeechStarted { at }),
                ..
            }) => {
                self.onset = Some(at);
                Some(TurnEvent::Started { onset: at })
            }
            TurnSignal::Stt(SttEvent::Final {
                speech_final: true,
                transcript,
                ..
            }) => self.onset.take().map(|onset| {
                let end = transcript.end.unwrap_or(self.clock);
                TurnEvent::Ended(TurnEnd::new(onset, end, TurnEndReason::SttEndpoint))
            }),
            TurnSignal::EndOfAudio => self.onset.take().map(|onset| {
                TurnEvent::Ended(TurnEnd::new(onset, self.clock, TurnEndReason::EndOfAudio))
            }),
            _ => None,
        })
    }

    fn reset(&mut self) {
        self.onset = None;
    }
}

#[test]
fn a_turn_detector_takes_vad_and_stt_signals() {
    let mut vad = LevelFactory.fresh().unwrap();
    let mut turns: Box<dyn TurnDetector> = Box::new(EndpointOnly::default());
    let mut events = Vec::new();
    for loud in [false, true, true, true, false] {
        let frame = frame(loud);
        events.extend(turns.observe(TurnSignal::Audio(&frame)).unwrap());
        let decision = vad.process(&frame).unwrap();
        events.extend(turns.observe(TurnSignal::Vad(decision)).unwrap());
    }
    let last = SttEvent::Final {
        transcript: Transcript::new("hi").with_span(ms(10), ms(40)),
        speech_final: true,
        from_finalize: false,
    };
    events.extend(turns.observe(TurnSignal::Stt(&last)).unwrap());
    events.extend(turns.observe(TurnSignal::EndOfAudio).unwrap());
    assert_eq!(
        events,
        vec![
            TurnEvent::Started { onset: ms(10) },
            TurnEvent::Ended(TurnEnd::new(ms(10), ms(40), TurnEndReason::SttEndpoint)),
        ]
    );
}

#[derive(Debug)]
struct BatchOnly;

impl SpeechToText for BatchOnly {
    fn id(&self) -> &str {
        "batch"
    }

    fn transcribe<'a>(
        &'a self,
        audio: &'a [AudioFrame],
        _options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(async move {
            let total: Duration = audio.iter().filter_map(AudioFrame::duration).sum();
            if total.is_zero() {
                return Err(SpeechError::EmptyAudio);
            }
            Ok(Transcript::new("hello").with_audio_duration(total))
        })
    }
}

impl TextToSpeech for BatchOnly {
    fn id(&self) -> &str {
        "batch"
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>> {
        let format = options.format.unwrap_or(AudioFormat::PCM16_24K_MONO);
        let frame = AudioFrame::new(vec![0_u8; text.len() * 2], format);
        Box::pin(async move {
            let stream: AudioStream = Box::pin(tokio_stream::iter([Ok(frame)]));
            Ok(stream)
        })
    }
}

#[derive(Debug)]
struct NoFinalize;

impl AudioSender for NoFinalize {
    fn send(&self, _frame: AudioFrame) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async { Ok(()) })
    }

    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async { Err(SpeechError::Closed) })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn streaming_is_optional_and_reported_as_unsupported() {
    use tokio_stream::StreamExt;

    let stt: std::sync::Arc<dyn SpeechToText> = std::sync::Arc::new(BatchOnly);
    assert_eq!(stt.formats(), vec![AudioFormat::PCM16_16K_MONO]);
    let options = TranscriptionOptions::new();
    let transcript = stt.transcribe(&[frame(true)], &options).await.unwrap();
    assert_eq!(transcript.audio_duration, Some(ms(10)));
    assert!(matches!(
        stt.transcribe(&[], &options).await,
        Err(SpeechError::EmptyAudio)
    ));
    let err = stt
        .open_stream(AudioFormat::PCM16_16K_MONO, &options)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unsupported: streaming transcription");

    let session = SttSession {
        sender: Box::new(NoFinalize),
        events: Box::pin(tokio_stream::empty()),
    };
    session.send(frame(false)).await.unwrap();
    assert!(matches!(
        session.finalize().await,
        Err(SpeechError::Unsupported { .. })
    ));
    assert!(matches!(session.finish().await, Err(SpeechError::Closed)));

    let tts: std::sync::Arc<dyn TextToSpeech> = std::sync::Arc::new(BatchOnly);
    assert_eq!(tts.formats(), vec![AudioFormat::PCM16_24K_MONO]);
    let options = SynthesisOptions::new().with_format(AudioFormat::MULAW_8K_MONO);
    let mut audio = tts.synthesize("hi", &options).await.unwrap();
    let first = audio.next().await.unwrap().unwrap();
    assert_eq!(first.format, AudioFormat::MULAW_8K_MONO);
    assert_eq!(first.data.len(), 4);
    let err = tts.open_stream(&options).await.unwrap_err();
    assert_eq!(err.to_string(), "unsupported: streaming synthesis");
}

#[test]
fn speech_price_applies_per_minute_and_per_character() {
    use crate::{SpeechPrice, SpeechUsage};
    let stt = SpeechPrice::per_minute(0.006);
    let ninety_seconds = SpeechUsage::audio(Duration::from_secs(90));
    assert!((stt.cost(&ninety_seconds) - 0.009).abs() < 1e-12);
    assert!(stt.cost(&SpeechUsage::characters(1_000)).abs() < f64::EPSILON);

    let tts = SpeechPrice::per_million_characters(15.0);
    assert!((tts.cost(&SpeechUsage::characters(2_000)) - 0.03).abs() < 1e-12);
    let json = serde_json::to_value(SpeechUsage::audio(Duration::from_millis(1500))).unwrap();
    assert_eq!(json, serde_json::json!({"audio_ms": 1500, "characters": 0}));
}
