//! Text-to-speech: one-shot synthesis and streaming sessions.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::SpeechError;
use super::audio::{AudioFormat, AudioFrame};
use super::stt::Word;
use crate::future::{BoxFuture, BoxStream};

/// Options of one synthesis or streaming session.
///
/// `#[non_exhaustive]`: built with [`SynthesisOptions::new`] (or `default()`) and the
/// `with_*` methods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SynthesisOptions {
    /// Voice id, or the service's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Output format, or the service's default; one of [`TextToSpeech::formats`].
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
    /// Vendor options passed through as they are (ElevenLabs `voice_settings`, Cartesia
    /// `generation_config`, OpenAI `instructions`). Each client documents the keys it
    /// reads; unknown keys are ignored.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl SynthesisOptions {
    /// No options: the service's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the voice.
    #[must_use]
    pub fn with_voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }

    /// Sets the output format.
    #[must_use]
    pub fn with_format(mut self, format: AudioFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Sets the speaking rate.
    #[must_use]
    pub fn with_speed(mut self, speed: f32) -> Self {
        self.speed = Some(speed);
        self
    }

    /// Sets the language.
    #[must_use]
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets one vendor option.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// Synthesised audio of a one-shot [`TextToSpeech::synthesize`], streamed as it is
/// produced.
pub type AudioStream = BoxStream<'static, Result<AudioFrame, SpeechError>>;

/// One event of a streaming synthesis session.
///
/// Times are on the session's output clock: the first sample of its audio is zero.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TtsEvent {
    /// Audio. Its timestamp, when set, is its position on the session's output clock.
    Audio(AudioFrame),
    /// Timings of words in the audio (Cartesia word timestamps, ElevenLabs alignment
    /// grouped into words): what lets the runtime cut the saved answer at the word the user
    /// heard last when they barge in, and drive captions.
    Words(Vec<Word>),
    /// All text sent before the last [`TextSender::flush`] has been synthesised and its
    /// audio delivered.
    Flushed,
    /// All text has been synthesised after [`TextSender::finish`]; the stream ends next.
    Done,
}

/// The event stream of a [`TtsSession`].
pub type TtsEventStream = BoxStream<'static, Result<TtsEvent, SpeechError>>;

/// The sending half of a streaming synthesis session. Safe to use from several tasks.
pub trait TextSender: Send + Sync + fmt::Debug {
    /// Appends text. Chunks are joined verbatim, so they carry their own spaces; the
    /// service decides when it has enough text to speak naturally.
    fn send(&self, text: String) -> BoxFuture<'_, Result<(), SpeechError>>;

    /// Asks for everything sent so far to be spoken now, without ending the session;
    /// [`TtsEvent::Flushed`] follows its audio.
    fn flush(&self) -> BoxFuture<'_, Result<(), SpeechError>>;

    /// Stops the session (the user barged in): the service is told to stop, no more audio
    /// of this session is delivered, even if the vendor still sends some, and the event
    /// stream ends. Idempotent.
    fn cancel(&self) -> BoxFuture<'_, Result<(), SpeechError>>;

    /// Ends the text: the rest is spoken, then [`TtsEvent::Done`] arrives and the stream
    /// ends. Later sends fail with [`SpeechError::Closed`].
    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>>;
}

/// A streaming synthesis session: one context for one answer (a Cartesia context, an
/// ElevenLabs multi-stream context), fed text chunks as the model produces them so that
/// prosody carries across the whole answer.
///
/// An `Err` item on [`events`](Self::events) is terminal: the session is over and the
/// stream ends after it.
pub struct TtsSession {
    /// Sends text into the session.
    pub sender: Box<dyn TextSender>,
    /// The session's events; ends after [`TtsEvent::Done`], a cancel or an error.
    pub events: TtsEventStream,
}

impl fmt::Debug for TtsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtsSession")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

/// Speech synthesis. Object-safe: used as `Arc<dyn TextToSpeech>`.
pub trait TextToSpeech: Send + Sync + fmt::Debug {
    /// The instance name.
    fn id(&self) -> &str;

    /// The output formats the service can produce, preferred first, so that a caller can
    /// ask for what it sends on (8 kHz mu-law for telephony) instead of converting.
    fn formats(&self) -> Vec<AudioFormat> {
        vec![AudioFormat::PCM16_24K_MONO]
    }

    /// Starts synthesising `text`; audio frames arrive as the service produces them, so
    /// playback can start before synthesis ends. Dropping the stream cancels synthesis.
    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>>;

    /// The service's list price, when configured: what a session's
    /// [`SpeechUsage`](crate::SpeechUsage) costs. The default is unknown.
    fn price(&self) -> Option<crate::SpeechPrice> {
        None
    }

    /// Opens a streaming session for one answer. The default reports
    /// [`SpeechError::Unsupported`]; callers then synthesise sentence by sentence with
    /// [`synthesize`](Self::synthesize).
    fn open_stream<'a>(
        &'a self,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<TtsSession, SpeechError>> {
        let _ = options;
        Box::pin(async {
            Err(SpeechError::Unsupported {
                message: "streaming synthesis".to_owned(),
            })
        })
    }
}
