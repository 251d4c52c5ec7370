//! The realtime (duplex audio) provider seam, for models such as OpenAI Realtime and
//! Gemini Live that take and produce audio over one long-lived connection.
//!
//! A [`RealtimeProvider`] opens a [`RealtimeSession`]: a sending half
//! ([`RealtimeSender`]) and a stream of [`RealtimeEvent`]s. The two halves are used from
//! different tasks: audio goes up while audio, transcripts and tool calls come down.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::finish::FinishReason;
use crate::future::{BoxError, BoxFuture, BoxStream};
use crate::message::{ToolCall, ToolResult};
use crate::speech::{AudioFormat, AudioFrame};
use crate::tool::ToolDef;
use crate::usage::Usage;

/// How the server detects the end of a user turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnDetection {
    /// The server's voice activity detection ends turns (the default).
    #[default]
    Server,
    /// The client ends turns with [`RealtimeInput::EndOfTurn`].
    Manual,
}

/// Configuration of a realtime session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Turn detection.
    #[serde(default)]
    pub turn_detection: TurnDetection,
    /// Ask for transcripts of the user's audio.
    #[serde(default)]
    pub transcribe_input: bool,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// Something sent to a realtime model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RealtimeInput {
    /// User audio.
    Audio(AudioFrame),
    /// User text; `end_turn` asks the model to respond.
    Text {
        /// The text.
        text: String,
        /// Whether this completes the user's turn.
        end_turn: bool,
    },
    /// Context for the model that is not a user turn (for example retrieved facts).
    SystemContext(String),
    /// Results of tool calls the model asked for.
    ToolResults(Vec<ToolResult>),
    /// The user's turn is over (manual turn detection, or end of input audio).
    EndOfTurn,
    /// Stop the response in progress (the user barged in).
    CancelResponse,
}

/// Something received from a realtime model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RealtimeEvent {
    /// The session is ready to take input.
    Ready {
        /// The provider's session id, if any.
        session_id: Option<String>,
    },
    /// The server detected the user starting to speak; play-out should stop (barge-in).
    SpeechStarted,
    /// The server detected the user stopping.
    SpeechStopped,
    /// A transcript of the user's audio.
    InputTranscript {
        /// The text (a delta when `is_final` is false).
        text: String,
        /// Whether this is the complete transcript of the turn.
        is_final: bool,
    },
    /// Model audio.
    Audio(AudioFrame),
    /// A transcript of the model's audio, or its text output.
    OutputText {
        /// The text delta.
        text: String,
    },
    /// The model asks for tool calls; answer with [`RealtimeInput::ToolResults`].
    ToolCalls(Vec<ToolCall>),
    /// The model's response was cut off by an interruption; drop buffered audio.
    Interrupted,
    /// The model finished its response.
    TurnComplete {
        /// Why it stopped.
        reason: FinishReason,
        /// Usage of the response, if reported.
        usage: Option<Usage>,
    },
    /// The server is about to close the session (for example a session duration limit).
    GoingAway {
        /// Time left, if the server said.
        time_left: Option<Duration>,
    },
}

/// The sending half of a realtime session. Safe to use from several tasks.
pub trait RealtimeSender: Send + Sync + fmt::Debug {
    /// Sends one input.
    fn send(&self, input: RealtimeInput) -> BoxFuture<'_, Result<(), RealtimeError>>;

    /// Closes the session. Idempotent; later sends fail with [`RealtimeError::Closed`].
    fn close(&self) -> BoxFuture<'_, Result<(), RealtimeError>>;
}

/// The events of a realtime session; ends when the session closes.
pub type RealtimeEvents = BoxStream<'static, Result<RealtimeEvent, RealtimeError>>;

/// An open realtime session.
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
    /// The connection could not be made or broke.
    #[error("connection error: {message}")]
    Connection {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The vendor sent an error event or a message we could not decode.
    #[error("protocol error: {message}")]
    Protocol {
        /// What happened.
        message: String,
    },
    /// The configuration is not supported (format, model, option).
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
