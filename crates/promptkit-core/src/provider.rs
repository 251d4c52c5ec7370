//! The LLM provider seam: requests, responses, stream events and errors.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::finish::FinishReason;
use crate::future::{BoxError, BoxFuture, BoxStream};
use crate::message::{
    ContentPart, Message, ProviderData, Reasoning, Role, ToolCall, parse_arguments,
};
use crate::tool::{ToolChoice, ToolDef};
use crate::usage::{Cost, PricingTable, Usage};

/// What a model should produce.
///
/// Serialised as `{"type":"text"}`, `{"type":"json_object"}` or
/// `{"type":"json_schema","name":…,"schema":…,"strict":true}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// A name for the schema (some vendors require one).
        name: String,
        /// The JSON Schema.
        schema: Value,
        /// Ask the vendor to enforce the schema strictly, where supported.
        #[serde(default)]
        strict: bool,
    },
}

/// How much a reasoning model should think.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasoningConfig {
    /// Effort level for vendors that take one (OpenAI `reasoning_effort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<ReasoningEffort>,
    /// Token budget for vendors that take one (Anthropic `budget_tokens`, Gemini
    /// `thinkingBudget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u32>,
    /// Ask for readable reasoning summaries where the vendor offers them.
    #[serde(default)]
    pub include_summary: bool,
}

/// Reasoning effort levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    /// Minimal reasoning.
    Minimal,
    /// Low effort.
    Low,
    /// Medium effort.
    Medium,
    /// High effort.
    High,
}

/// One call to a model.
///
/// Sampling parameters are `Option`: `None` means "the provider's default", so a caller
/// can ask for `temperature: Some(0.0)` and get exactly that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderRequest {
    /// The system prompt, sent the way the vendor expects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The conversation so far, oldest first.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Tools the model may call, in the order they are sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// Whether and which tools the model must call.
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Whether the model may ask for several tool calls at once (vendor default if `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Model override for this call; the provider's configured model when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Maximum output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling seed, where supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Reasoning settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<ReasoningConfig>,
    /// Vendor-specific request fields, merged into the request body by providers that
    /// support pass-through (keys the provider sets itself win).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl ProviderRequest {
    /// A request with these messages and defaults for everything else.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sets the tools.
    #[must_use]
    pub fn with_tools(mut self, tools: Vec<ToolDef>) -> Self {
        self.tools = tools;
        self
    }

    /// Moves the text of every system message into [`ProviderRequest::system`] (after any
    /// existing system prompt, joined by a blank line) and removes those messages.
    /// Idempotent.
    pub fn lift_system_messages(&mut self) {
        let mut parts: Vec<String> = self.system.take().into_iter().collect();
        self.messages.retain(|m| {
            if m.role == Role::System {
                parts.push(m.text());
                false
            } else {
                true
            }
        });
        parts.retain(|p| !p.is_empty());
        self.system = (!parts.is_empty()).then(|| parts.join("\n\n"));
    }
}

/// A complete model answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderResponse {
    /// The assistant message: content, tool calls, usage, cost and finish reason.
    pub message: Message,
    /// The model that served the call, as the vendor reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider instance that served the call (a fallback provider names the candidate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// Wall time of the call.
    #[serde(default, with = "crate::time::duration_ms")]
    pub latency: Duration,
}

impl ProviderResponse {
    /// The answer's text (reasoning excluded).
    pub fn text(&self) -> String {
        self.message.text()
    }

    /// The tool calls the model asked for.
    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.message.tool_calls
    }

    /// Token usage, if reported.
    pub fn usage(&self) -> Option<&Usage> {
        self.message.usage.as_ref()
    }

    /// Cost, if the model is priced.
    pub fn cost(&self) -> Option<&Cost> {
        self.message.cost.as_ref()
    }

    /// Why generation stopped, if reported.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.message.finish_reason.as_ref()
    }
}

/// One event of a streamed answer.
///
/// A well-formed stream is: any number of deltas (text, reasoning, tool calls) in the order
/// the vendor produced them, then at most one [`StreamEvent::Usage`], then exactly one
/// [`StreamEvent::Finish`]. A stream that ends without `Finish` was cut off; providers
/// report that as [`ProviderError::StreamTruncated`]. [`StreamAccumulator`] folds a stream
/// into a [`ProviderResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamEvent {
    /// New answer text.
    TextDelta {
        /// The text to append.
        text: String,
    },
    /// New reasoning text.
    ReasoningDelta {
        /// The text to append to the current reasoning block.
        text: String,
    },
    /// Opaque reasoning data (a signature or encrypted block) closing the current reasoning
    /// block; a redacted block arrives as this event alone.
    ReasoningData {
        /// The data to round-trip.
        provider_data: ProviderData,
        /// Whether the block is redacted.
        #[serde(default)]
        redacted: bool,
    },
    /// A tool call begins. `index` identifies it among the calls of this answer.
    ToolCallStart {
        /// Position of the call in this answer.
        index: u32,
        /// The call id.
        id: String,
        /// The tool name.
        name: String,
        /// Provider-opaque data of the call (for example a Gemini thought signature).
        #[serde(default, skip_serializing_if = "ProviderData::is_empty")]
        provider_data: ProviderData,
    },
    /// More argument text for the call with this `index`.
    ToolCallDelta {
        /// Position of the call in this answer.
        index: u32,
        /// JSON text to append to the call's arguments.
        arguments: String,
    },
    /// Token usage of the whole call (may arrive in a usage-only final chunk).
    Usage {
        /// The counts.
        usage: Usage,
    },
    /// The stream restarted after a retry; discard everything accumulated so far.
    Reset,
    /// The answer is complete.
    Finish {
        /// Why generation stopped.
        reason: FinishReason,
    },
}

/// Folds [`StreamEvent`]s into a complete answer.
///
/// ```
/// use promptkit_core::{FinishReason, StreamAccumulator, StreamEvent};
///
/// let mut acc = StreamAccumulator::new();
/// acc.push(&StreamEvent::TextDelta { text: "Hel".into() });
/// acc.push(&StreamEvent::TextDelta { text: "lo".into() });
/// acc.push(&StreamEvent::Finish { reason: FinishReason::Stop });
/// let message = acc.finish();
/// assert_eq!(message.text(), "Hello");
/// assert_eq!(message.finish_reason, Some(FinishReason::Stop));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StreamAccumulator {
    parts: Vec<ContentPart>,
    calls: Vec<PendingCall>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    // Whether the last part is an open reasoning block that more deltas extend.
    reasoning_open: bool,
}

#[derive(Debug, Clone)]
struct PendingCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
    provider_data: ProviderData,
}

impl StreamAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event.
    pub fn push(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::TextDelta { text } => {
                self.reasoning_open = false;
                if let Some(ContentPart::Text { text: last, .. }) = self.parts.last_mut() {
                    last.push_str(text);
                } else {
                    self.parts.push(ContentPart::text(text.clone()));
                }
            }
            StreamEvent::ReasoningDelta { text } => {
                if self.reasoning_open
                    && let Some(ContentPart::Reasoning(r)) = self.parts.last_mut()
                {
                    r.text.get_or_insert_with(String::new).push_str(text);
                    return;
                }
                self.parts.push(ContentPart::Reasoning(Reasoning {
                    text: Some(text.clone()),
                    ..Reasoning::default()
                }));
                self.reasoning_open = true;
            }
            StreamEvent::ReasoningData {
                provider_data,
                redacted,
            } => {
                if self.reasoning_open
                    && let Some(ContentPart::Reasoning(r)) = self.parts.last_mut()
                {
                    for (k, v) in provider_data.iter() {
                        r.provider_data.insert(k.clone(), v.clone());
                    }
                    r.redacted |= *redacted;
                    self.reasoning_open = false;
                    return;
                }
                self.parts.push(ContentPart::Reasoning(Reasoning {
                    text: None,
                    redacted: *redacted,
                    provider_data: provider_data.clone(),
                }));
                self.reasoning_open = false;
            }
            StreamEvent::ToolCallStart {
                index,
                id,
                name,
                provider_data,
            } => {
                self.reasoning_open = false;
                if let Some(call) = self.calls.iter_mut().find(|c| c.index == *index) {
                    // Some vendors repeat the start; keep what we have and fill gaps.
                    if call.id.is_empty() {
                        call.id.clone_from(id);
                    }
                    if call.name.is_empty() {
                        call.name.clone_from(name);
                    }
                } else {
                    self.calls.push(PendingCall {
                        index: *index,
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                        provider_data: provider_data.clone(),
                    });
                }
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = self.calls.iter_mut().find(|c| c.index == *index) {
                    call.arguments.push_str(arguments);
                } else {
                    self.calls.push(PendingCall {
                        index: *index,
                        id: String::new(),
                        name: String::new(),
                        arguments: arguments.clone(),
                        provider_data: ProviderData::new(),
                    });
                }
            }
            StreamEvent::Usage { usage } => {
                self.usage = Some(self.usage.map_or(*usage, |u| merge_usage(u, *usage)));
            }
            StreamEvent::Reset => *self = Self::default(),
            StreamEvent::Finish { reason } => self.finish = Some(reason.clone()),
        }
    }

    /// The text accumulated so far.
    pub fn text(&self) -> String {
        self.parts.iter().filter_map(ContentPart::as_text).collect()
    }

    /// Whether a [`StreamEvent::Finish`] was seen.
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// The assistant message built from the events (tool calls in index order, arguments
    /// parsed with [`parse_arguments`]).
    pub fn finish(self) -> Message {
        let mut calls = self.calls;
        calls.sort_by_key(|c| c.index);
        let mut message = Message::new(Role::Assistant);
        message.content = self.parts;
        message.tool_calls = calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                arguments: parse_arguments(&c.arguments),
                provider_data: c.provider_data,
            })
            .collect();
        message.usage = self.usage;
        message.finish_reason = self.finish;
        message
    }
}

// A later usage event refines an earlier one (Anthropic sends input counts at the start and
// output counts at the end): reported fields replace, unreported ones are kept.
fn merge_usage(old: Usage, new: Usage) -> Usage {
    Usage {
        input_tokens: new.input_tokens.or(old.input_tokens),
        output_tokens: new.output_tokens.or(old.output_tokens),
        cached_input_tokens: new.cached_input_tokens.or(old.cached_input_tokens),
        cache_write_input_tokens: new
            .cache_write_input_tokens
            .or(old.cache_write_input_tokens),
        reasoning_tokens: new.reasoning_tokens.or(old.reasoning_tokens),
        audio_input_tokens: new.audio_input_tokens.or(old.audio_input_tokens),
        audio_output_tokens: new.audio_output_tokens.or(old.audio_output_tokens),
    }
}

/// What a provider (model) can do. Used to reject requests early with a clear error and to
/// pick candidates in a fallback chain.
///
/// Build one from [`Capabilities::text`] or [`Capabilities::all`] with struct update
/// syntax: `Capabilities { images: true, tools: true, ..Capabilities::text() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    /// Streams answers.
    pub streaming: bool,
    /// Calls tools.
    pub tools: bool,
    /// Asks for several tool calls in one answer.
    pub parallel_tool_calls: bool,
    /// Takes images.
    pub images: bool,
    /// Takes audio.
    pub audio: bool,
    /// Takes video.
    pub video: bool,
    /// Takes documents (PDF and others).
    pub documents: bool,
    /// JSON object output.
    pub json_mode: bool,
    /// JSON Schema output.
    pub json_schema: bool,
    /// Exposes reasoning.
    pub reasoning: bool,
}

impl Capabilities {
    /// Text in, text out, streaming; nothing else.
    pub const fn text() -> Self {
        Self {
            streaming: true,
            tools: false,
            parallel_tool_calls: false,
            images: false,
            audio: false,
            video: false,
            documents: false,
            json_mode: false,
            json_schema: false,
            reasoning: false,
        }
    }

    /// Everything.
    pub const fn all() -> Self {
        Self {
            streaming: true,
            tools: true,
            parallel_tool_calls: true,
            images: true,
            audio: true,
            video: true,
            documents: true,
            json_mode: true,
            json_schema: true,
            reasoning: true,
        }
    }

    /// Whether the model takes this kind of content.
    pub fn accepts(&self, kind: crate::message::ContentKind) -> bool {
        use crate::message::ContentKind;
        match kind {
            ContentKind::Text | ContentKind::Reasoning => true,
            ContentKind::Image => self.images,
            ContentKind::Audio => self.audio,
            ContentKind::Video => self.video,
            ContentKind::Document => self.documents,
        }
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::text()
    }
}

/// A stream of answer events, as returned by [`Provider::stream`].
pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// An LLM behind a common interface. Object-safe: used as `Arc<dyn Provider>`.
///
/// Implementations are cheap to share (`&self` methods, internally pooled connections)
/// and safe to call concurrently.
pub trait Provider: Send + Sync + fmt::Debug {
    /// The instance name (unique among configured providers, used in logs, events and
    /// fallback reports).
    fn id(&self) -> &str;

    /// The configured model.
    fn model(&self) -> &str;

    /// What the model can do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Prices for the models this provider serves; empty when unknown.
    fn pricing(&self) -> Option<&PricingTable> {
        None
    }

    /// The cost of `usage` on `model`, or `None` when the model is not priced.
    fn cost(&self, model: &str, usage: &Usage) -> Option<Cost> {
        self.pricing().and_then(|t| t.cost(model, usage))
    }

    /// Runs `request` to completion.
    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>>;

    /// Starts a streamed answer. Errors before the first event (connection, HTTP status)
    /// are returned from the future; errors after it arrive as stream items.
    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>>;
}

/// Why a provider call failed. Vendor error bodies map to these cases.
///
/// Each variant is one class of failure a caller reacts to differently: retry later
/// ([`is_retryable`](Self::is_retryable)), move to another provider (quota, credentials),
/// or give up (a bad request). A wrapper shows its cause either in its message or through
/// [`source`](std::error::Error::source), never both, so a formatted chain names each cause
/// once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The credentials were rejected (HTTP 401/403).
    #[error("authentication failed: {message}")]
    Auth {
        /// The vendor's message.
        message: String,
    },
    /// Too many requests for now (HTTP 429): waiting fixes it. Retryable.
    #[error("rate limited: {message}")]
    RateLimited {
        /// How long the vendor asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// The vendor's message.
        message: String,
    },
    /// The account's quota, credit or billing limit is used up (OpenAI `insufficient_quota`,
    /// a Gemini per-day quota, an Anthropic credit balance that is too low). Waiting minutes
    /// does not fix it, so it is not retryable; a fallback moves to the next provider.
    #[error("quota exhausted: {message}")]
    QuotaExhausted {
        /// The vendor's message.
        message: String,
    },
    /// The vendor is overloaded or unavailable for now (HTTP 503, Anthropic 529 and
    /// `overloaded_error`, Gemini `UNAVAILABLE`): a server-side condition, distinct from this
    /// caller's rate limit. Retryable.
    #[error("overloaded (status {status}): {message}")]
    Overloaded {
        /// The HTTP status (or the status the vendor's error type stands for).
        status: u16,
        /// How long the vendor asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// The vendor's message.
        message: String,
    },
    /// The conversation does not fit in the model's context window.
    #[error("context too long: {message}")]
    ContextTooLong {
        /// The vendor's message.
        message: String,
    },
    /// The vendor's safety system blocked the request or answer.
    #[error("content filtered: {message}")]
    ContentFiltered {
        /// The vendor's message.
        message: String,
    },
    /// The request was invalid (HTTP 400/404/422); retrying will not help.
    #[error("bad request (status {status}): {message}")]
    BadRequest {
        /// The HTTP status.
        status: u16,
        /// The vendor's message.
        message: String,
    },
    /// The vendor failed (HTTP 5xx other than 503). Retryable.
    #[error("server error (status {status}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The vendor's message.
        message: String,
    },
    /// The request did not reach the vendor or the connection broke. `message` says what
    /// failed in this crate's words; the underlying error, if any, is the
    /// [`source`](std::error::Error::source) and is not repeated in the message. Retryable.
    #[error("transport error: {message}")]
    Transport {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A deadline passed: connecting, the whole request, the first event of a stream, the
    /// idle gap between chunks, or the whole stream. Retryable (a provider retries a stream
    /// only before its first event).
    #[error("timed out ({phase}) after {after:?}")]
    Timeout {
        /// Which deadline.
        phase: TimeoutPhase,
        /// The deadline that passed.
        after: Duration,
    },
    /// A response was larger than a configured limit: a non-streaming body, one line or event
    /// of a stream, or a stream's whole body. The read stops at the limit, so memory stays
    /// bounded. Not retryable (the same request would likely grow as large again).
    #[error("response too large: {part} exceeds {limit} bytes")]
    ResponseTooLarge {
        /// Which part of the response.
        part: ResponsePart,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A response body or stream frame could not be decoded (including a stream that sent
    /// too many malformed frames in a row).
    #[error("could not decode response: {message}")]
    Decode {
        /// What was wrong.
        message: String,
        /// The offending payload (truncated by the provider if large).
        raw: String,
    },
    /// The stream ended before the answer was complete. Retryable.
    #[error("stream ended before the answer was complete: {message}")]
    StreamTruncated {
        /// What was missing.
        message: String,
    },
    /// The request asks for something this provider or model does not do.
    #[error("unsupported: {message}")]
    Unsupported {
        /// What is unsupported.
        message: String,
    },
    /// The provider is misconfigured (missing key, invalid base URL, a base URL that
    /// redirects).
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The call was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
    /// Every candidate of a fallback chain failed (or the chain's attempt budget ran out);
    /// the errors in the order tried. The message names the last one; the others are in
    /// `attempts`.
    #[error("all {} providers failed; last: {}", .attempts.len(), last_message(.attempts))]
    AllFailed {
        /// `(provider id, error)` per attempt.
        attempts: Vec<(String, ProviderError)>,
    },
}

/// The part of a response a [`ProviderError::ResponseTooLarge`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponsePart {
    /// The body of a non-streaming answer.
    Body,
    /// One line of a Server-Sent Events stream.
    StreamLine,
    /// One event of a Server-Sent Events stream.
    StreamEvent,
    /// The whole body of a stream (what the answer accumulates).
    Stream,
}

impl fmt::Display for ResponsePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Body => "the body",
            Self::StreamLine => "a stream line",
            Self::StreamEvent => "a stream event",
            Self::Stream => "the stream",
        })
    }
}

fn last_message(attempts: &[(String, ProviderError)]) -> String {
    attempts
        .last()
        .map_or_else(|| "none tried".to_owned(), |(id, e)| format!("{id}: {e}"))
}

/// Which deadline a [`ProviderError::Timeout`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Establishing the connection.
    Connect,
    /// The whole request.
    Request,
    /// Waiting for the first event of a stream (keep-alive comments and pings do not count).
    FirstChunk,
    /// The gap between two chunks of a stream.
    Idle,
    /// The whole stream, from the request to its last event.
    Stream,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Request => "request",
            Self::FirstChunk => "first chunk",
            Self::Idle => "idle between chunks",
            Self::Stream => "whole stream",
        })
    }
}

impl ProviderError {
    /// Whether retrying the same request may succeed: rate limits, overload, server
    /// errors, transport failures, timeouts and truncated streams. A used-up quota, a
    /// rejected key or a bad request are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Overloaded { .. }
                | Self::Server { .. }
                | Self::Transport { .. }
                | Self::Timeout { .. }
                | Self::StreamTruncated { .. }
        )
    }

    /// How long the vendor asked to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Overloaded { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Maps an HTTP error status and the vendor's message to an error, for providers that
    /// have no more specific mapping: 401/403 authentication, 408 a timeout, 413 context too
    /// long, 429 a rate limit, 503 and 529 overload, other 4xx a bad request, anything else
    /// (statuses below 400 included) a server error.
    pub fn from_status(
        status: u16,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let message = message.into();
        match status {
            401 | 403 => Self::Auth { message },
            408 => Self::Timeout {
                phase: TimeoutPhase::Request,
                after: Duration::ZERO,
            },
            413 => Self::ContextTooLong { message },
            429 => Self::RateLimited {
                retry_after,
                message,
            },
            503 | 529 => Self::Overloaded {
                status,
                retry_after,
                message,
            },
            400..=499 => Self::BadRequest { status, message },
            _ => Self::Server { status, message },
        }
    }
}
