//! Speech-to-text: batch transcription and live sessions.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::SpeechError;
use super::audio::{AudioFormat, AudioFrame};
use crate::future::{BoxFuture, BoxStream};

/// Options of one transcription or live session.
///
/// `#[non_exhaustive]`: built with [`TranscriptionOptions::new`] (or `default()`) and the
/// `with_*` methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// Vendor options passed through as they are, for settings the runtime does not model
    /// (Deepgram `endpointing`, `utterance_end_ms`, `keyterm`, `diarize`; OpenAI
    /// `temperature`). Each client documents the keys it reads; unknown keys are ignored.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl TranscriptionOptions {
    /// No options: the service's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the spoken language.
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

    /// Sets the vocabulary or context hint.
    #[must_use]
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// Sets one vendor option.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// One recognised word.
///
/// Times are on the session's audio clock (the audio sent since it opened), serialised as
/// whole milliseconds. `#[non_exhaustive]`: built with [`Word::new`] and the `with_*`
/// methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Word {
    /// The word as it should be shown (punctuated where the vendor punctuates).
    pub text: String,
    /// Where it starts.
    #[serde(rename = "start_ms", with = "crate::time::duration_ms")]
    pub start: Duration,
    /// Where it ends.
    #[serde(rename = "end_ms", with = "crate::time::duration_ms")]
    pub end: Duration,
    /// The recogniser's confidence (0 to 1), when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// The speaker, when the vendor diarises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<u32>,
}

impl Word {
    /// A word spoken from `start` to `end`.
    pub fn new(text: impl Into<String>, start: Duration, end: Duration) -> Self {
        Self {
            text: text.into(),
            start,
            end,
            confidence: None,
            speaker: None,
        }
    }

    /// Sets the confidence.
    #[must_use]
    pub fn with_confidence(mut self, confidence: f32) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// Sets the speaker.
    #[must_use]
    pub fn with_speaker(mut self, speaker: u32) -> Self {
        self.speaker = Some(speaker);
        self
    }
}

/// Recognised text with what the vendor reported about it.
///
/// Whether it is final is said by the [`SttEvent`] that carries it; a batch
/// [`SpeechToText::transcribe`] result is final. Times are on the session's audio clock,
/// serialised as whole milliseconds. `#[non_exhaustive]`: built with [`Transcript::new`]
/// and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transcript {
    /// The recognised text.
    pub text: String,
    /// Where the transcribed audio starts, when reported.
    #[serde(
        rename = "start_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::duration_ms::option"
    )]
    pub start: Option<Duration>,
    /// Where it ends, when reported.
    #[serde(
        rename = "end_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::duration_ms::option"
    )]
    pub end: Option<Duration>,
    /// The words, when the vendor reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
    /// The recogniser's confidence (0 to 1), when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// Detected language, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Duration of the audio billed for it, when reported (used for cost).
    #[serde(
        rename = "audio_duration_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::duration_ms::option"
    )]
    pub audio_duration: Option<Duration>,
}

impl Transcript {
    /// Text with nothing else reported.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            start: None,
            end: None,
            words: Vec::new(),
            confidence: None,
            language: None,
            audio_duration: None,
        }
    }

    /// Sets where the transcribed audio starts and ends.
    #[must_use]
    pub fn with_span(mut self, start: Duration, end: Duration) -> Self {
        self.start = Some(start);
        self.end = Some(end);
        self
    }

    /// Sets the words.
    #[must_use]
    pub fn with_words(mut self, words: Vec<Word>) -> Self {
        self.words = words;
        self
    }

    /// Sets the confidence.
    #[must_use]
    pub fn with_confidence(mut self, confidence: f32) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// Sets the detected language.
    #[must_use]
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets the billed audio duration.
    #[must_use]
    pub fn with_audio_duration(mut self, duration: Duration) -> Self {
        self.audio_duration = Some(duration);
        self
    }
}

/// What the vendor said about a live session as a whole.
///
/// `#[non_exhaustive]`: built with [`SttMetadata::new`] and the `with_*` methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SttMetadata {
    /// The vendor's request id (for support tickets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The model that served the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Duration of the audio processed (used for cost).
    #[serde(
        rename = "audio_duration_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::duration_ms::option"
    )]
    pub audio_duration: Option<Duration>,
}

impl SttMetadata {
    /// Nothing reported.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the request id.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the processed audio duration.
    #[must_use]
    pub fn with_audio_duration(mut self, duration: Duration) -> Self {
        self.audio_duration = Some(duration);
        self
    }
}

/// One event of a live transcription session.
///
/// Deepgram's live protocol maps one to one: `Results` with `is_final: false` is
/// [`Partial`](Self::Partial), with `is_final: true` [`Final`](Self::Final) (its
/// `speech_final` and `from_finalize` flags kept), `SpeechStarted` and `UtteranceEnd` their
/// namesakes, `Metadata` [`Metadata`](Self::Metadata). A vendor without some of these never
/// sends them. Times are on the session's audio clock, serialised as whole milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SttEvent {
    /// Interim text of the current segment; a later partial or final replaces it.
    Partial {
        /// The text so far.
        transcript: Transcript,
    },
    /// Final text of a segment: it will not change. A turn's text is the concatenation of
    /// its finals.
    Final {
        /// The segment.
        transcript: Transcript,
        /// The vendor's endpointing detected the end of speech after this segment: the
        /// user paused (Deepgram `speech_final`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        speech_final: bool,
        /// The segment was flushed by [`AudioSender::finalize`] (Deepgram
        /// `from_finalize`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        from_finalize: bool,
    },
    /// The vendor heard speech begin.
    SpeechStarted {
        /// Where.
        #[serde(rename = "at_ms", with = "crate::time::duration_ms")]
        at: Duration,
    },
    /// The vendor found a gap after the last word long enough to end the utterance
    /// (Deepgram `UtteranceEnd`, which works in noise where `speech_final` may not fire).
    UtteranceEnd {
        /// The end of the last word.
        #[serde(rename = "at_ms", with = "crate::time::duration_ms")]
        at: Duration,
    },
    /// What the vendor reported about the session.
    Metadata(SttMetadata),
}

/// A live transcription session (for streaming recognisers).
///
/// Feed frames with [`send`](Self::send); at the end of each user turn call
/// [`finalize`](Self::finalize), which flushes the pending text as finals and keeps the
/// session open for the next turn; at the end of the audio call [`finish`](Self::finish),
/// after which the remaining finals arrive and [`events`](Self::events) ends.
///
/// An `Err` item on [`events`](Self::events) is terminal: the session is over and the
/// stream ends after it. [`SpeechError::is_retryable`] says whether opening a new session
/// may work.
pub struct SttSession {
    /// Sends audio into the session.
    pub sender: Box<dyn AudioSender>,
    /// The session's events; ends when the session closes.
    pub events: TranscriptStream,
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

    /// Flushes the pending text as finals; the session stays open.
    ///
    /// # Errors
    /// As [`AudioSender::finalize`].
    pub async fn finalize(&self) -> Result<(), SpeechError> {
        self.sender.finalize().await
    }

    /// Signals the end of the audio; the last finals follow and the session closes.
    ///
    /// # Errors
    /// As [`AudioSender::finish`].
    pub async fn finish(&self) -> Result<(), SpeechError> {
        self.sender.finish().await
    }
}

/// The event stream of an [`SttSession`].
pub type TranscriptStream = BoxStream<'static, Result<SttEvent, SpeechError>>;

/// The sending half of a live transcription session. Safe to use from several tasks.
pub trait AudioSender: Send + Sync + fmt::Debug {
    /// Sends one frame, in the format the session was opened with.
    fn send(&self, frame: AudioFrame) -> BoxFuture<'_, Result<(), SpeechError>>;

    /// Asks the vendor to finalise what it heard so far now (Deepgram `Finalize`), without
    /// closing the session: used when the runtime's own turn detection ends a turn. The
    /// finals that follow have `from_finalize` set when the vendor says so. The default
    /// reports [`SpeechError::Unsupported`].
    fn finalize(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async {
            Err(SpeechError::Unsupported {
                message: "finalizing a live transcription".to_owned(),
            })
        })
    }

    /// Signals the end of the audio (Deepgram `CloseStream`): the vendor sends its last
    /// results and closes the session. Later sends fail with [`SpeechError::Closed`].
    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>>;
}

/// Speech recognition. Object-safe: used as `Arc<dyn SpeechToText>`.
pub trait SpeechToText: Send + Sync + fmt::Debug {
    /// The instance name.
    fn id(&self) -> &str;

    /// The input formats the service takes, preferred first, so the caller can resample
    /// (or not) before sending.
    fn formats(&self) -> Vec<AudioFormat> {
        vec![AudioFormat::PCM16_16K_MONO]
    }

    /// Transcribes a complete utterance (frames of one format, in order). Services without
    /// streaming implement only this.
    fn transcribe<'a>(
        &'a self,
        audio: &'a [AudioFrame],
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<Transcript, SpeechError>>;

    /// The service's list price, when configured: what a session's
    /// [`SpeechUsage`](crate::SpeechUsage) costs. The default is unknown.
    fn price(&self) -> Option<crate::SpeechPrice> {
        None
    }

    /// Opens a live session taking audio in `format`. The default reports
    /// [`SpeechError::Unsupported`].
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
