//! Audio for the PromptKit runtime: the DSP, voice activity detection and turn detection
//! that the voice modes stand on.
//!
//! - **DSP** (pure, no I/O): [`g711`] mu-law and A-law (matching Python's `audioop` byte
//!   for byte), [`resample`] (a streaming polyphase resampler for any pair of rates),
//!   [`rechunk`] (fixed-size frames from frames of any size), [`pcm`] (PCM16, f32, G.711
//!   and channel conversions), [`wav`] (read and write, on `hound`) and [`jitter`] (a
//!   bounded jitter buffer: drop oldest, silence on underrun, prefill, counters), and
//!   `denoise` (feature `denoise`: RNNoise noise suppression, output aligned with input).
//! - **Voice activity detection** behind the core
//!   [`VoiceActivityDetector`] seam, fresh per run from
//!   a [`VadFactory`]: [`EarshotVadConfig`] (a learned detector,
//!   pure Rust with its model compiled in; the default) and [`EnergyVadConfig`] (the Go
//!   original's adaptive energy detector).
//! - **Turn detection** behind the core [`TurnDetector`] seam:
//!   [`TurnConfig`] makes [`SilenceTurnDetector`]s (silence, minimum speech, maximum turn,
//!   the recogniser's endpointing), and [`TurnSegmenter`] runs a VAD and a detector over a
//!   stream and cuts out each turn's audio with its pre-roll.
//! - **Speech clients**, each behind its cargo feature and the core seams, on the shared
//!   [`client`] parts (keys that never print, timeouts, retries before the first result,
//!   fallback across vendors):
//!   - `deepgram`: live transcription over Deepgram's `/v1/listen` WebSocket
//!     (`Finalize`, `CloseStream`, keep-alives) and its batch endpoint;
//!   - `openai`: OpenAI batch transcription and streamed speech over HTTP, also for any
//!     OpenAI-compatible local Whisper or TTS server;
//!   - `cartesia` and `elevenlabs`: streaming synthesis, one vendor context per session and
//!     one shared WebSocket per client; late audio of a cancelled session never reaches
//!     another;
//!   - `espeak`: local synthesis by the `espeak-ng` program, voice with no key and no
//!     network.
//!
//! Everything is in audio time (the duration of the audio processed), never wall-clock
//! time: the same audio gives the same turns on any machine. The design is in the project's
//! `docs/decisions/0019-audio-dsp-vad-turns.md`.
//!
//! # Example: cutting turns out of a stream
//!
//! ```
//! use promptkit_audio::{EnergyVadConfig, SegmentEvent, TurnConfig, TurnSegmenter};
//! use promptkit_core::{AudioFormat, AudioFrame, TurnDetectorFactory, VadFactory};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let format = AudioFormat::PCM16_16K_MONO;
//! let mut segmenter = TurnSegmenter::new(
//!     format,
//!     EnergyVadConfig::new(16_000).fresh()?,
//!     TurnConfig::new().fresh()?,
//! )?;
//! // One second of silence, one second of a loud tone, two seconds of silence.
//! let tone: Vec<u8> = (0..16_000)
//!     .flat_map(|n| ((f32::sin(n as f32 * 0.1) * 8000.0) as i16).to_le_bytes())
//!     .collect();
//! let mut events = Vec::new();
//! for chunk in [vec![0_u8; 32_000], tone, vec![0_u8; 64_000]] {
//!     for frame in chunk.chunks(640) {
//!         segmenter.push(&AudioFrame::new(frame.to_vec(), format), &mut events)?;
//!     }
//! }
//! segmenter.finish(&mut events)?;
//! let SegmentEvent::Turn(turn) = &events[1] else { panic!("{events:?}") };
//! assert_eq!(turn.onset, Duration::from_secs(1));
//! assert_eq!(turn.start, Duration::from_millis(500), "the pre-roll");
//! # Ok(())
//! # }
//! ```
//!
//! # Example: a learned VAD on frames of another size
//!
//! ```
//! use promptkit_audio::{EarshotVadConfig, rechunk::Rechunker};
//! use promptkit_core::{AudioFormat, AudioFrame, VadFactory, VadState};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut vad = EarshotVadConfig::new().fresh()?;
//! // earshot takes 256-sample frames; the transport sends 20 ms (320 samples).
//! let mut rechunker = Rechunker::new(vad.format(), vad.frame_samples().unwrap_or(320))?;
//! let mut frames = Vec::new();
//! for _ in 0..50 {
//!     let frame = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
//!     rechunker.push(&frame, &mut frames)?;
//! }
//! assert_eq!(frames.len(), 62); // one second in 16 ms frames, the rest held back
//! for frame in &frames {
//!     assert_eq!(vad.process(frame)?.state, VadState::Quiet);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Example: resampling and G.711
//!
//! ```
//! use promptkit_audio::{g711, resample::Resampler};
//!
//! let mut resampler = Resampler::new(48_000, 8_000).unwrap();
//! let mut out = Vec::new();
//! resampler.process_i16(&[1000; 960], &mut out); // 20 ms at 48 kHz
//! resampler.finish_i16(&mut out);
//! assert_eq!(out.len(), 160); // 20 ms at 8 kHz
//!
//! assert_eq!(g711::encode_ulaw_sample(-1000), 0x4e);
//! assert_eq!(g711::decode_ulaw_sample(0x80), 32124);
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "cartesia")]
pub mod cartesia;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "deepgram")]
pub mod deepgram;
#[cfg(feature = "denoise")]
pub mod denoise;
#[cfg(feature = "elevenlabs")]
pub mod elevenlabs;
mod error;
#[cfg(feature = "espeak")]
pub mod espeak;
pub mod g711;
pub mod jitter;
#[cfg(feature = "openai")]
pub mod openai;
pub mod pcm;
pub mod rechunk;
pub mod resample;
mod segment;
#[cfg(any(feature = "openai", feature = "espeak"))]
mod synth;
#[cfg(any(feature = "cartesia", feature = "elevenlabs"))]
mod tts_ws;
mod turn;
mod vad;
pub mod wav;

pub use error::AudioError;
pub use segment::{DEFAULT_POST_ROLL, DEFAULT_PRE_ROLL, SegmentEvent, TurnSegmenter, UserTurn};
pub use turn::{SilenceTurnDetector, SttEndpointing, TurnConfig};
pub use vad::{EARSHOT_FRAME_SAMPLES, EarshotVad, EarshotVadConfig, EnergyVad, EnergyVadConfig};

pub use promptkit_core::{
    AudioFormat, AudioFrame, SpeechToText, TextToSpeech, TurnDetector, TurnDetectorFactory,
    VadFactory, VoiceActivityDetector,
};
