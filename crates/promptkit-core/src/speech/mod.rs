//! Audio frames and the speech seams: voice activity and turn detection, speech-to-text
//! and text-to-speech.
//!
//! The forward-compatibility policy of these types is in the project's
//! `docs/decisions/0018-speech-and-realtime-seams.md`: the structs callers and implementors
//! build are `#[non_exhaustive]` with constructors and `with_*` methods, and every enum
//! that will grow is `#[non_exhaustive]`.

use std::time::Duration;

use crate::future::BoxError;

mod audio;
mod price;
mod stt;
mod tts;
mod vad;

pub use audio::{AudioEncoding, AudioFormat, AudioFrame};
pub use price::{SpeechPrice, SpeechUsage};
pub use stt::{
    AudioSender, SpeechToText, SttEvent, SttMetadata, SttSession, Transcript, TranscriptStream,
    TranscriptionOptions, Word,
};
pub use tts::{
    AudioStream, SynthesisOptions, TextSender, TextToSpeech, TtsEvent, TtsEventStream, TtsSession,
};
pub use vad::{
    TurnDetector, TurnDetectorFactory, TurnEnd, TurnEndReason, TurnEvent, TurnSignal, VadDecision,
    VadEvent, VadFactory, VadState, VoiceActivityDetector,
};

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
    /// The caller's input is not acceptable (a frame of the wrong length, empty text).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What was wrong.
        message: String,
    },
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
