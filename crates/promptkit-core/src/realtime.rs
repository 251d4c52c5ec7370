//! The realtime (duplex audio) provider seam, for models such as OpenAI Realtime and
//! Gemini Live that take and produce audio over one long-lived connection.
//!
//! A [`RealtimeProvider`] opens a [`RealtimeSession`]: a sending half
//! ([`RealtimeSender`]) and a stream of [`RealtimeEvent`]s. The two halves are used from
//! different tasks: audio goes up while audio, transcripts and tool calls come down.
//!
//! The forward-compatibility policy of these types is in the project's
//! `docs/decisions/0018-speech-and-realtime-seams.md`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::finish::FinishReason;
use crate::future::{BoxError, BoxFuture, BoxStream};
use crate::message::{ToolCall, ToolResult};
use crate::speech::{AudioFormat, AudioFrame};
use crate::tool::ToolDef;
use crate::usage::{Cost, PricingTable, Usage};

/// How the server's voice activity detection is tuned. Every setting is optional: `None`
/// keeps the vendor's default.
///
/// `#[non_exhaustive]`: built with [`ServerVad::new`] (or `default()`) and the `with_*`
/// methods. Durations serialise as whole milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerVad {
    /// Activation threshold, 0 to 1 (OpenAI `threshold`); higher needs louder speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Audio kept before detected speech (OpenAI `prefix_padding_ms`, Gemini
    /// `prefixPaddingMs`).
    #[serde(
        rename = "prefix_padding_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::duration_ms::option"
    )]
    pub prefix_padding: Option<Duration>,
    /// Silence that ends the user's turn (OpenAI `silence_duration_ms`, Gemini
    /// `silenceDurationMs`).
    #[serde(
        rename = "silence_duration_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::duration_ms::option"
    )]
    pub silence_duration: Option<Duration>,
    /// Whether the user's speech interrupts a response in progress (OpenAI
    /// `interrupt_response`, Gemini `activityHandling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_response: Option<bool>,
    /// Whether the end of the user's turn starts a response (OpenAI `create_response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_response: Option<bool>,
}

impl ServerVad {
    /// The vendor's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the activation threshold.
    #[must_use]
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.threshold = Some(threshold);
        self
    }

    /// Sets the audio kept before detected speech.
    #[must_use]
    pub fn with_prefix_padding(mut self, padding: Duration) -> Self {
        self.prefix_padding = Some(padding);
        self
    }

    /// Sets the silence that ends a turn.
    #[must_use]
    pub fn with_silence_duration(mut self, silence: Duration) -> Self {
        self.silence_duration = Some(silence);
        self
    }

    /// Sets whether speech interrupts a response in progress.
    #[must_use]
    pub fn with_interrupt_response(mut self, interrupt: bool) -> Self {
        self.interrupt_response = Some(interrupt);
        self
    }

    /// Sets whether the end of a turn starts a response.
    #[must_use]
    pub fn with_create_response(mut self, create: bool) -> Self {
        self.create_response = Some(create);
        self
    }
}

/// How eagerly a semantic turn detector ends the user's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Eagerness {
    /// Waits longest: lets the user think.
    Low,
    /// Between the two.
    Medium,
    /// Answers soonest.
    High,
    /// The vendor decides.
    Auto,
}

/// Settings of the server's semantic turn detection (OpenAI `semantic_vad`).
///
/// `#[non_exhaustive]`: built with [`SemanticVad::new`] (or `default()`) and the `with_*`
/// methods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SemanticVad {
    /// How eagerly to end turns; `None` keeps the vendor's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eagerness: Option<Eagerness>,
    /// As [`ServerVad::interrupt_response`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_response: Option<bool>,
    /// As [`ServerVad::create_response`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_response: Option<bool>,
}

impl SemanticVad {
    /// The vendor's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the eagerness.
    #[must_use]
    pub fn with_eagerness(mut self, eagerness: Eagerness) -> Self {
        self.eagerness = Some(eagerness);
        self
    }

    /// Sets whether speech interrupts a response in progress.
    #[must_use]
    pub fn with_interrupt_response(mut self, interrupt: bool) -> Self {
        self.interrupt_response = Some(interrupt);
        self
    }

    /// Sets whether the end of a turn starts a response.
    #[must_use]
    pub fn with_create_response(mut self, create: bool) -> Self {
        self.create_response = Some(create);
        self
    }
}

/// Who detects the user's turns in a realtime session.
///
/// Serialised with a `type` tag: `{"type": "server", "silence_duration_ms": 500}`,
/// `{"type": "semantic", "eagerness": "low"}`, `{"type": "manual"}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TurnDetection {
    /// The server's voice activity detection ends turns (the default; OpenAI `server_vad`,
    /// Gemini automatic activity detection).
    Server(ServerVad),
    /// The server's semantic model ends turns (OpenAI `semantic_vad`). A provider without
    /// one reports [`RealtimeError::Unsupported`] from `connect`.
    Semantic(SemanticVad),
    /// The client detects turns: it sends [`RealtimeInput::ActivityStart`] and
    /// [`RealtimeInput::ActivityEnd`] around the user's speech, or
    /// [`RealtimeInput::EndOfTurn`] (OpenAI `turn_detection: null`, Gemini
    /// `automaticActivityDetection.disabled`).
    Manual,
}

impl Default for TurnDetection {
    fn default() -> Self {
        Self::Server(ServerVad::default())
    }
}

/// A kind of output a realtime model produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Modality {
    /// Text.
    Text,
    /// Audio (with its transcript when [`RealtimeConfig::transcribe_output`] is set).
    Audio,
}

/// Configuration of a realtime session.
///
/// `#[non_exhaustive]`: built with [`RealtimeConfig::new`] (or `default()`) and the
/// `with_*` methods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RealtimeConfig {
    /// Model override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// Voice for audio output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Format of audio sent to the model; the provider's preferred format when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<AudioFormat>,
    /// Format of audio received from the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<AudioFormat>,
    /// What the model answers with; empty means the provider's default (audio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_modalities: Vec<Modality>,
    /// Turn detection.
    #[serde(default)]
    pub turn_detection: TurnDetection,
    /// Ask for transcripts of the user's audio.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transcribe_input: bool,
    /// Ask for transcripts of the model's audio (OpenAI sends them always; Gemini on
    /// request). The runtime saves the spoken answer from them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transcribe_output: bool,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Output token limit per response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Resume an earlier session with the handle of its last
    /// [`RealtimeEvent::SessionResumption`] that was `resumable` (Gemini). A provider
    /// without resumption reports [`RealtimeError::Unsupported`] from `connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_handle: Option<String>,
    /// Vendor options passed through as they are (OpenAI `noise_reduction`, `truncation`;
    /// Gemini `contextWindowCompression`, `proactivity`, start and end sensitivities).
    /// Each provider documents the keys it reads; unknown keys are ignored.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl RealtimeConfig {
    /// The provider's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the system instructions.
    #[must_use]
    pub fn with_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    /// Sets the tools.
    #[must_use]
    pub fn with_tools(mut self, tools: Vec<ToolDef>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the voice.
    #[must_use]
    pub fn with_voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }

    /// Sets the input audio format.
    #[must_use]
    pub fn with_input_format(mut self, format: AudioFormat) -> Self {
        self.input_format = Some(format);
        self
    }

    /// Sets the output audio format.
    #[must_use]
    pub fn with_output_format(mut self, format: AudioFormat) -> Self {
        self.output_format = Some(format);
        self
    }

    /// Sets the output modalities.
    #[must_use]
    pub fn with_output_modalities(mut self, modalities: Vec<Modality>) -> Self {
        self.output_modalities = modalities;
        self
    }

    /// Sets the turn detection.
    #[must_use]
    pub fn with_turn_detection(mut self, turn_detection: TurnDetection) -> Self {
        self.turn_detection = turn_detection;
        self
    }

    /// Sets whether the user's audio is transcribed.
    #[must_use]
    pub fn with_input_transcription(mut self, on: bool) -> Self {
        self.transcribe_input = on;
        self
    }

    /// Sets whether the model's audio is transcribed.
    #[must_use]
    pub fn with_output_transcription(mut self, on: bool) -> Self {
        self.transcribe_output = on;
        self
    }

    /// Sets the temperature.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the output token limit.
    #[must_use]
    pub fn with_max_output_tokens(mut self, limit: u32) -> Self {
        self.max_output_tokens = Some(limit);
        self
    }

    /// Sets the resumption handle.
    #[must_use]
    pub fn with_resume_handle(mut self, handle: impl Into<String>) -> Self {
        self.resume_handle = Some(handle.into());
        self
    }

    /// Sets one vendor option.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// An image sent to a realtime model (a camera or screen frame, for Gemini Live).
///
/// `#[non_exhaustive]`: built with [`ImageFrame::new`] and
/// [`with_timestamp`](ImageFrame::with_timestamp).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ImageFrame {
    /// The encoded image.
    pub data: Bytes,
    /// Its media type (`image/jpeg`, `image/png`).
    pub mime_type: String,
    /// Position on the session's clock, when known.
    pub timestamp: Option<Duration>,
}

impl ImageFrame {
    /// An image without a timestamp.
    pub fn new(data: impl Into<Bytes>, mime_type: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            mime_type: mime_type.into(),
            timestamp: None,
        }
    }

    /// The same image positioned at `timestamp`.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: Duration) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Something sent to a realtime model.
///
/// A provider that cannot express an input returns [`RealtimeError::Unsupported`] from
/// [`RealtimeSender::send`]; the session stays usable.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RealtimeInput {
    /// User audio, in the session's input format.
    Audio(AudioFrame),
    /// An image (Gemini `realtimeInput.video`, OpenAI `input_image`).
    Image(ImageFrame),
    /// User text; `end_turn` asks the model to respond.
    Text {
        /// The text.
        text: String,
        /// Whether this completes the user's turn.
        end_turn: bool,
    },
    /// Context for the model that is not a user turn (for example retrieved facts).
    SystemContext(String),
    /// Results of tool calls the model asked for, each naming its call by
    /// [`ToolResult::call_id`]. With `respond` the model answers them now (OpenAI
    /// `response.create`); without, they are recorded silently (Gemini `SILENT`
    /// scheduling), as for calls that finished after the user interrupted.
    ToolResults {
        /// The results.
        results: Vec<ToolResult>,
        /// Whether the model should respond to them now.
        respond: bool,
    },
    /// The user started speaking (manual turn detection: the client's own VAD; Gemini
    /// `activityStart`).
    ActivityStart,
    /// The user stopped speaking and the turn is over (manual turn detection; Gemini
    /// `activityEnd`, OpenAI `input_audio_buffer.commit` then `response.create`).
    ActivityEnd,
    /// The user's input is complete without activity signals (a text turn, the end of a
    /// recorded file; Gemini `audioStreamEnd`, OpenAI commit then `response.create`).
    EndOfTurn,
    /// Stop the response in progress (the user barged in; OpenAI `response.cancel`).
    CancelResponse,
    /// Tell the model how much of an answer the user heard, so it does not believe it said
    /// the rest (OpenAI `conversation.item.truncate`). Send it only when some audio played:
    /// OpenAI rejects a truncation at zero.
    Truncate {
        /// The item whose audio was cut ([`ItemRef::item_id`] of its audio).
        item_id: String,
        /// The content part ([`ItemRef::content_index`]).
        content_index: u32,
        /// How much of its audio was played.
        played: Duration,
    },
    /// Drop user audio the server has buffered and not yet committed (OpenAI
    /// `input_audio_buffer.clear`).
    ClearInputAudio,
    /// Change the session's configuration mid-call (OpenAI `session.update`); a provider
    /// sends what it can change and reports [`RealtimeError::Unsupported`] when it cannot
    /// change settings on an open session (Gemini: reconnect with a resumption handle).
    UpdateSession(Box<RealtimeConfig>),
}

/// Where a piece of output belongs: the response, the conversation item and the content
/// part. Vendors without ids (Gemini) leave them `None`; their providers should number
/// responses themselves (`"r1"`, `"r2"`) so that the events of one response can be told
/// apart.
///
/// `#[non_exhaustive]`: built with [`ItemRef::new`] (or `default()`) and the `with_*`
/// methods. The ids are shared strings, so tagging every audio frame costs a reference
/// count, not an allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ItemRef {
    /// The response.
    pub response_id: Option<Arc<str>>,
    /// The conversation item (what [`RealtimeInput::Truncate`] names).
    pub item_id: Option<Arc<str>>,
    /// The content part within the item.
    pub content_index: u32,
}

impl ItemRef {
    /// No ids.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the response id.
    #[must_use]
    pub fn with_response(mut self, id: impl Into<Arc<str>>) -> Self {
        self.response_id = Some(id.into());
        self
    }

    /// Sets the item id.
    #[must_use]
    pub fn with_item(mut self, id: impl Into<Arc<str>>) -> Self {
        self.item_id = Some(id.into());
        self
    }

    /// Sets the content index.
    #[must_use]
    pub fn with_content_index(mut self, index: u32) -> Self {
        self.content_index = index;
        self
    }
}

/// Whether output text is the transcript of the model's audio or text it produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutputTextKind {
    /// A transcript of the model's audio (OpenAI `output_audio_transcript`, Gemini
    /// `outputTranscription`).
    Transcript,
    /// Text output (the text modality).
    Text,
}

/// The end of a response.
///
/// `#[non_exhaustive]`: built with [`ResponseDone::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResponseDone {
    /// The response, when the vendor identifies it.
    pub response_id: Option<Arc<str>>,
    /// Why it stopped: [`FinishReason::Cancelled`] after an interruption or a cancel.
    pub reason: FinishReason,
    /// Its usage, if reported (audio tokens included, for cost).
    pub usage: Option<Usage>,
}

impl ResponseDone {
    /// A response that stopped for `reason`.
    pub fn new(reason: FinishReason) -> Self {
        Self {
            response_id: None,
            reason,
            usage: None,
        }
    }

    /// Sets the response id.
    #[must_use]
    pub fn with_response_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.response_id = Some(id.into());
        self
    }

    /// Sets the usage.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }
}

/// Something received from a realtime model.
///
/// The events of one response come in this order: [`ResponseStarted`](Self::ResponseStarted),
/// then any number of [`Audio`](Self::Audio), [`OutputText`](Self::OutputText) and
/// [`ToolCalls`](Self::ToolCalls), then, if the user cut it off,
/// [`Interrupted`](Self::Interrupted), then [`ResponseDone`](Self::ResponseDone). Input
/// transcripts arrive on their own schedule, possibly after the response has started.
/// Times are on the session's input clock (the user audio sent since it opened).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RealtimeEvent {
    /// The session is ready to take input.
    Ready {
        /// The provider's session id, if any.
        session_id: Option<String>,
    },
    /// The server applied a [`RealtimeInput::UpdateSession`].
    SessionUpdated,
    /// The server heard the user start speaking; play-out should stop (barge-in).
    SpeechStarted {
        /// Where, when the vendor says.
        at: Option<Duration>,
        /// The user item the speech will become, when the vendor says.
        item_id: Option<Arc<str>>,
    },
    /// The server heard the user stop.
    SpeechStopped {
        /// Where, when the vendor says.
        at: Option<Duration>,
        /// The user item, when the vendor says.
        item_id: Option<Arc<str>>,
    },
    /// A transcript of the user's audio: deltas (`is_final` false), then one final event
    /// whose `text` is the whole transcript of the item.
    InputTranscript {
        /// The user item, when the vendor says.
        item_id: Option<Arc<str>>,
        /// The delta, or the whole transcript when final.
        text: String,
        /// Whether this is the whole transcript.
        is_final: bool,
    },
    /// The model started a response.
    ResponseStarted {
        /// The response, when the vendor identifies it.
        response_id: Option<Arc<str>>,
    },
    /// Model audio, in the session's output format.
    Audio {
        /// The audio.
        frame: AudioFrame,
        /// Where it belongs (what [`RealtimeInput::Truncate`] names).
        item: ItemRef,
    },
    /// Output text: deltas (`is_final` false), then one final event whose `text` is the
    /// whole text of the content part.
    OutputText {
        /// Where it belongs.
        item: ItemRef,
        /// Transcript of audio, or text output.
        kind: OutputTextKind,
        /// The delta, or the whole text when final.
        text: String,
        /// Whether this is the whole text.
        is_final: bool,
    },
    /// The model asks for tool calls; answer each with [`RealtimeInput::ToolResults`].
    ToolCalls(Vec<ToolCall>),
    /// The server cancelled tool calls it asked for (the user interrupted; Gemini
    /// `toolCallCancellation`): drop their results, by [`ToolCall::id`].
    ToolCallsCancelled(Vec<String>),
    /// The model's response was cut off by the user; drop its buffered audio.
    Interrupted {
        /// The response, when the vendor identifies it.
        response_id: Option<Arc<str>>,
    },
    /// The model finished a response.
    ResponseDone(ResponseDone),
    /// A handle to resume this session later with [`RealtimeConfig::resume_handle`]
    /// (Gemini `sessionResumptionUpdate`). Keep the last one that is `resumable`: during a
    /// generation or a tool call the server cannot resume and says so.
    SessionResumption {
        /// The handle.
        handle: String,
        /// Whether resuming from it works.
        resumable: bool,
    },
    /// The server is about to close the session (a session duration limit): reconnect,
    /// with the last resumable handle where there is one.
    GoingAway {
        /// Time left, if the server said.
        time_left: Option<Duration>,
    },
    /// The server rejected one client event and the session goes on (OpenAI `error` for a
    /// `response.cancel` with no response in progress, for example).
    Warning {
        /// The vendor's error code, when it has one.
        code: Option<String>,
        /// The vendor's message.
        message: String,
    },
}

/// The sending half of a realtime session. Safe to use from several tasks.
pub trait RealtimeSender: Send + Sync + fmt::Debug {
    /// Sends one input.
    ///
    /// # Errors
    /// [`RealtimeError::Unsupported`] when the provider cannot express the input (the
    /// session stays usable); [`RealtimeError::Closed`] after the session closed; the
    /// connection's errors otherwise.
    fn send(&self, input: RealtimeInput) -> BoxFuture<'_, Result<(), RealtimeError>>;

    /// Closes the session. Idempotent; later sends fail with [`RealtimeError::Closed`].
    fn close(&self) -> BoxFuture<'_, Result<(), RealtimeError>>;
}

/// The events of a realtime session; ends when the session closes.
pub type RealtimeEvents = BoxStream<'static, Result<RealtimeEvent, RealtimeError>>;

/// An open realtime session.
///
/// An `Err` item on [`events`](Self::events) is terminal: the session is over and the
/// stream ends after it (errors the session survives arrive as
/// [`RealtimeEvent::Warning`]). [`RealtimeError::is_retryable`] says whether reconnecting
/// may work.
pub struct RealtimeSession {
    /// Sends input.
    pub sender: Box<dyn RealtimeSender>,
    /// Receives events.
    pub events: RealtimeEvents,
}

impl fmt::Debug for RealtimeSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeSession")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

/// A model reachable over a duplex session. Object-safe: used as `Arc<dyn RealtimeProvider>`.
pub trait RealtimeProvider: Send + Sync + fmt::Debug {
    /// The instance name.
    fn id(&self) -> &str;

    /// The configured model.
    fn model(&self) -> &str;

    /// The audio formats the model takes and produces, preferred first.
    fn audio_formats(&self) -> Vec<AudioFormat> {
        vec![AudioFormat::PCM16_24K_MONO]
    }

    /// Prices for the models this provider serves (audio token rates included); `None`
    /// when unknown.
    fn pricing(&self) -> Option<&PricingTable> {
        None
    }

    /// The cost of `usage` on `model`, or `None` when the model is not priced.
    fn cost(&self, model: &str, usage: &Usage) -> Option<Cost> {
        self.pricing().and_then(|t| t.cost(model, usage))
    }

    /// Opens a session.
    fn connect<'a>(
        &'a self,
        config: &'a RealtimeConfig,
    ) -> BoxFuture<'a, Result<RealtimeSession, RealtimeError>>;
}

/// Why a realtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RealtimeError {
    /// The credentials were rejected.
    #[error("authentication failed: {message}")]
    Auth {
        /// The vendor's message.
        message: String,
    },
    /// Too many sessions or requests.
    #[error("rate limited: {message}")]
    RateLimited {
        /// How long to wait, if the vendor said.
        retry_after: Option<Duration>,
        /// The vendor's message.
        message: String,
    },
    /// The connection could not be made or broke.
    #[error("connection error: {message}")]
    Connection {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The vendor sent an error that ends the session, or a message we could not decode.
    #[error("protocol error: {message}")]
    Protocol {
        /// What happened.
        message: String,
    },
    /// The configuration or input is not supported (format, model, option).
    #[error("unsupported: {message}")]
    Unsupported {
        /// What is unsupported.
        message: String,
    },
    /// A deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The session is closed.
    #[error("session closed")]
    Closed,
}

impl RealtimeError {
    /// Whether connecting again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Connection { .. } | Self::Timeout(_)
        )
    }
}
