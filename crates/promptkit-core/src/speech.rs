//! Audio frames and the speech seams: voice activity detection, speech-to-text and
//! text-to-speech.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::future::{BoxError, BoxFuture, BoxStream};

/// How audio samples are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AudioEncoding {
    /// Signed 16-bit little-endian PCM (the runtime's working format).
    Pcm16,
    /// 32-bit little-endian float PCM.
    F32,
    /// G.711 mu-law, 8 bits per sample.
    Mulaw,
    /// G.711 A-law, 8 bits per sample.
    Alaw,
    /// Opus packets.
    Opus,
    /// MP3 frames.
    Mp3,
    /// AAC frames.
    Aac,
    /// A WAV file (header and PCM).
    Wav,
}

impl AudioEncoding {
    /// Bytes per sample per channel for raw encodings; `None` for compressed formats.
    pub fn bytes_per_sample(self) -> Option<usize> {
        match self {
            Self::Pcm16 => Some(2),
            Self::F32 => Some(4),
            Self::Mulaw | Self::Alaw => Some(1),
            Self::Opus | Self::Mp3 | Self::Aac | Self::Wav => None,
        }
    }

    /// The media type of this encoding.
    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Pcm16 => "audio/L16",
            Self::F32 => "audio/x-f32le",
            Self::Mulaw => "audio/PCMU",
            Self::Alaw => "audio/PCMA",
            Self::Opus => "audio/opus",
            Self::Mp3 => "audio/mpeg",
            Self::Aac => "audio/aac",
            Self::Wav => "audio/wav",
        }
    }
}

/// The shape of an audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AudioFormat {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Sample encoding.
    pub encoding: AudioEncoding,
}

impl AudioFormat {
    /// 16 kHz mono PCM16: what speech recognisers and VAD models expect.
    pub const PCM16_16K_MONO: Self = Self::pcm16(16_000, 1);
    /// 24 kHz mono PCM16: what realtime models and most TTS voices produce.
    pub const PCM16_24K_MONO: Self = Self::pcm16(24_000, 1);

    /// PCM16 at `sample_rate` with `channels`.
    pub const fn pcm16(sample_rate: u32, channels: u16) -> Self {
        Self {
            sample_rate,
            channels,
            encoding: AudioEncoding::Pcm16,
        }
    }

    /// Bytes per second for raw encodings.
    pub fn bytes_per_second(&self) -> Option<usize> {
        self.encoding.bytes_per_sample().map(|b| {
            b * usize::try_from(self.sample_rate).unwrap_or(usize::MAX) * usize::from(self.channels)
        })
    }

    /// Playback duration of `len` bytes of raw audio; `None` for compressed encodings or
    /// an empty format.
    pub fn duration_of(&self, len: usize) -> Option<Duration> {
        let per_second = self.bytes_per_second().filter(|b| *b > 0)?;
        let nanos = u128::try_from(len).ok()? * 1_000_000_000 / u128::try_from(per_second).ok()?;
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

/// A chunk of audio.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    /// The encoded samples (interleaved for multi-channel raw audio).
    pub data: Bytes,
    /// Their format.
    pub format: AudioFormat,
    /// Position of the frame's start on the stream's clock, when known.
    pub timestamp: Option<Duration>,
}

impl AudioFrame {
    /// A frame without a timestamp.
    pub fn new(data: impl Into<Bytes>, format: AudioFormat) -> Self {
        Self {
            data: data.into(),
            format,
            timestamp: None,
        }
    }

    /// Playback duration, for raw encodings.
    pub fn duration(&self) -> Option<Duration> {
        self.format.duration_of(self.data.len())
    }
}

/// What a voice activity detector saw in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VadState {
    /// No speech.
    Quiet,
    /// Speech may be starting (not yet long enough to count).
    Starting,
    /// Speech.
    Speaking,
    /// Speech may be ending (silence not yet long enough to count).
    Stopping,
}

/// A transition reported by a voice activity detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VadEvent {
    /// Speech started (confirmed after the start window).
    SpeechStarted {
        /// Stream time of the confirmation (serialised as milliseconds).
        #[serde(with = "crate::time::duration_ms")]
        at: Duration,
    },
    /// Speech ended (confirmed after the stop window): the end of a user turn candidate.
    SpeechEnded {
        /// Stream time of the confirmation (serialised as milliseconds).
        #[serde(with = "crate::time::duration_ms")]
        at: Duration,
    },
}

/// Detects speech in audio. Runs on the audio path frame by frame, so it is synchronous and
/// must be cheap; it keeps state between frames.
pub trait VoiceActivityDetector: Send + fmt::Debug {
    /// Processes one frame; returns the state after it and a transition if one happened.
    ///
    /// # Errors
    /// [`SpeechError::UnsupportedFormat`] when the frame's format is not one the detector
    /// handles.
    fn process(&mut self, frame: &AudioFrame) -> Result<(VadState, Option<VadEvent>), SpeechError>;

    /// The probability (0 to 1) that the last processed frame contained speech.
    fn speech_probability(&self) -> f32;

    /// Forgets all state, as at the start of a stream.
    fn reset(&mut self);
}

/// Options of one transcription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptionOptions {
    /// Spoken language (BCP 47), or `None` to detect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Model override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Vocabulary or context hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// A transcription result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The recognised text.
    pub text: String,
    /// Whether this text is final (streaming recognisers send interim results first).
    pub is_final: bool,
    /// Detected language, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Duration of the audio transcribed, when reported (used for cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_duration_ms: Option<u64>,
}

/// A live transcription session (for streaming recognisers).
///
/// Feed frames with [`SttSession::send`], call [`SttSession::finish`] at the end of the
/// audio, and read [`Transcript`]s from [`SttSession::transcripts`].
pub struct SttSession {
    /// Sends audio into the session.
    pub sender: Box<dyn AudioSender>,
    /// Interim and final transcripts; ends when the session closes.
    pub transcripts: TranscriptStream,
}

impl fmt::Debug for SttSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SttSession")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl SttSession {
    /// Sends a frame.
    ///
    /// # Errors
    /// As [`AudioSender::send`].
    pub async fn send(&self, frame: AudioFrame) -> Result<(), SpeechError> {
        self.sender.send(frame).await
    }

    /// Signals the end of the audio; final transcripts follow.
    ///
    /// # Errors
    /// As [`AudioSender::finish`].
    pub async fn finish(&self) -> Result<(), SpeechError> {
        self.sender.finish().await
    }
}

/// The transcript stream of an [`SttSession`].
pub type TranscriptStream = BoxStream<'static, Result<Transcript, SpeechError>>;

/// The sending half of a streaming audio session.
pub trait AudioSender: Send + Sync + fmt::Debug {
    /// Sends one frame.
    fn send(&self, frame: AudioFrame) -> BoxFuture<'_, Result<(), SpeechError>>;
    /// Signals the end of the audio.
    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>>;
}

/// Speech recognition. Object-safe: used as `Arc<dyn SpeechToText>`.
pub trait SpeechToText: Send + Sync + fmt::Debug {
    /// The instance name.
    fn id(&self) -> &str;

    /// Transcribes a complete utterance (frames of one format, in order).
    fn transcribe<'a>(
        &'a self,
        audio: &'a [AudioFrame],
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<Transcript, SpeechError>>;

    /// Opens a streaming session. The default reports [`SpeechError::Unsupported`].
    fn open_stream<'a>(
        &'a self,
        format: AudioFormat,
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<SttSession, SpeechError>> {
        let _ = (format, options);
        Box::pin(async {
            Err(SpeechError::Unsupported {
                message: "streaming transcription".to_owned(),
            })
        })
    }
}

/// Options of one synthesis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SynthesisOptions {
    /// Voice id, or the service's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Output format, or the service's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// Speaking rate (1.0 = normal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
    /// Language (BCP 47).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Model override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Synthesised audio, streamed as it is produced.
pub type AudioStream = BoxStream<'static, Result<AudioFrame, SpeechError>>;

/// Speech synthesis. Object-safe: used as `Arc<dyn TextToSpeech>`.
pub trait TextToSpeech: Send + Sync + fmt::Debug {
    /// The instance name.
    fn id(&self) -> &str;

    /// Starts synthesising `text`; audio frames arrive as the service produces them, so
    /// playback can start before synthesis ends. Dropping the stream cancels synthesis.
    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>>;
}

/// Why a speech operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeechError {
    /// No audio (or only silence too short to transcribe).
    #[error("no audio to process")]
    EmptyAudio,
    /// The audio format is not one this component handles.
    #[error("unsupported audio format: {0:?}")]
    UnsupportedFormat(AudioFormat),
    /// The operation is not supported by this service.
    #[error("unsupported: {message}")]
    Unsupported {
        /// What is unsupported.
        message: String,
    },
    /// The credentials were rejected.
    #[error("authentication failed: {message}")]
    Auth {
        /// The vendor's message.
        message: String,
    },
    /// Too many requests.
    #[error("rate limited: {message}")]
    RateLimited {
        /// How long to wait, if the vendor said.
        retry_after: Option<Duration>,
        /// The vendor's message.
        message: String,
    },
    /// The service rejected the request.
    #[error("speech service error (status {status}): {message}")]
    Service {
        /// The HTTP status (or 0 for protocol-level errors).
        status: u16,
        /// The vendor's message.
        message: String,
    },
    /// The request did not reach the service or the connection broke.
    #[error("transport error: {message}")]
    Transport {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The session is closed.
    #[error("session closed")]
    Closed,
}

impl SpeechError {
    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport { .. } | Self::Timeout(_) => true,
            Self::Service { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
