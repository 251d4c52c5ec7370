//! Stream elements: what flows between stages.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use promptkit_core::{
    AudioFrame, ContentPart, FinishReason, Message, ProviderError, RealtimeError, SpeechError,
    StateError, ToolCall, ToolError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One unit flowing through a pipeline: a payload or a control signal, plus small typed
/// metadata.
#[derive(Debug, Clone)]
pub struct Element {
    /// What the element carries.
    pub payload: Payload,
    /// Typed per-element metadata.
    pub meta: ElementMeta,
}

/// The content (or control signal) of an [`Element`].
///
/// Payloads larger than an audio frame are boxed, so that an element stays small: every
/// element is moved through a channel slot at each hop, and each channel allocates its slots
/// 32 at a time.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Payload {
    /// A text fragment, for example a streamed model delta.
    Text(String),
    /// An audio chunk or a whole utterance.
    Audio(AudioFrame),
    /// A video frame or segment.
    Video(Box<VideoFrame>),
    /// An image.
    Image(Box<ImageFrame>),
    /// A complete conversation message.
    Message(Box<Message>),
    /// A tool call.
    ToolCall(Box<ToolCall>),
    /// A content part (for example a reasoning delta).
    Part(Box<ContentPart>),
    /// A control signal.
    Control(Control),
}

/// Control signals.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Control {
    /// The start of a live run ([`Pipeline::start`](crate::Pipeline::start)): sent to its root
    /// stages before any input, so that stages that prepare the run (the prompt stages) do so
    /// at once, and a stage that must connect before the first input (a realtime session) can.
    /// Stages forward it; the run's output does not yield it.
    Start,
    /// The end of one conversational turn's input; the stream stays open.
    EndOfTurn,
    /// No more input in this stream.
    EndOfStream,
    /// The user barged in: the answer in progress and everything queued for it are cancelled.
    ///
    /// The cancellation itself travels out of band, through the run's interrupt epoch
    /// ([`RunContext::interrupt`](crate::RunContext::interrupt)); this element is the ordered
    /// marker of it, for stages that record or save.
    Interrupt(Interrupt),
    /// A recoverable error, flowing downstream as data. Fatal errors end the run instead.
    Error(ElementError),
}

/// What an interrupt cancels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Interrupt {
    /// The run's interrupt epoch this interrupt started (the first is 1; 0 for a marker that
    /// did not go through the run).
    pub epoch: u64,
    /// The turn whose answer it cancels, when known.
    pub turn_id: Option<u64>,
    /// How much of that answer's audio the user had heard, when known.
    pub played: Option<Duration>,
}

impl Interrupt {
    /// An interrupt of the answer to `turn_id`.
    pub fn of_turn(turn_id: u64) -> Self {
        Self {
            turn_id: Some(turn_id),
            ..Self::default()
        }
    }

    /// Sets how much of the answer was heard.
    #[must_use]
    pub fn with_played(mut self, played: Duration) -> Self {
        self.played = Some(played);
        self
    }
}

/// What went wrong, in classes a transport can act on without parsing messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A deadline passed (a model, STT or tool did not answer in time).
    Timeout,
    /// A service asked us to slow down.
    RateLimited,
    /// Credentials were rejected or a quota is exhausted.
    Auth,
    /// The input was not acceptable (a malformed request, an unsupported format, an over-long
    /// context).
    BadInput,
    /// A service answered with an error of its own.
    Vendor,
    /// A service could not be reached, or the connection broke.
    Unavailable,
    /// A cost or round budget ran out.
    Budget,
    /// A hook, guardrail or policy refused.
    Denied,
    /// The work was cancelled.
    Cancelled,
    /// Anything else.
    #[default]
    Other,
}

/// Which seam an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// A model provider ([`ProviderError`]).
    Provider,
    /// Speech recognition or synthesis ([`SpeechError`]).
    Speech,
    /// A realtime session ([`RealtimeError`]).
    Realtime,
    /// A tool ([`ToolError`]).
    Tool,
    /// A state store ([`StateError`]).
    State,
    /// The pipeline or a stage itself.
    Pipeline,
}

/// A recoverable error carried by an element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ElementError {
    /// The stage that reported it.
    pub stage: String,
    /// What went wrong.
    pub message: String,
    /// Its kind.
    #[serde(default)]
    pub kind: ErrorKind,
    /// The seam it came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ErrorClass>,
    /// Whether trying again may succeed.
    #[serde(default)]
    pub retryable: bool,
}

impl ElementError {
    /// An error reported by `stage`, of kind [`ErrorKind::Other`].
    pub fn new(stage: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            stage: stage.into(),
            message: message.into(),
            kind: ErrorKind::Other,
            class: None,
            retryable: false,
        }
    }

    /// Sets the kind.
    #[must_use]
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the class and whether a retry may help.
    #[must_use]
    pub fn with_class(mut self, class: ErrorClass, retryable: bool) -> Self {
        self.class = Some(class);
        self.retryable = retryable;
        self
    }

    /// The error `error` reported by `stage`: its message (with its causes) and its
    /// classification.
    pub fn from_error(stage: impl Into<String>, error: &(dyn std::error::Error + 'static)) -> Self {
        let (kind, class, retryable) = classify(error);
        Self {
            stage: stage.into(),
            message: promptkit_core::ErrorChain(error).to_string(),
            kind,
            class,
            retryable,
        }
    }
}

impl fmt::Display for ElementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage `{}`: {}", self.stage, self.message)
    }
}

/// The kind, class and retryability of the first seam error found in `error`'s chain.
fn classify(error: &(dyn std::error::Error + 'static)) -> (ErrorKind, Option<ErrorClass>, bool) {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<ProviderError>() {
            return (
                provider_kind(e),
                Some(ErrorClass::Provider),
                e.is_retryable(),
            );
        }
        if let Some(e) = e.downcast_ref::<SpeechError>() {
            return (speech_kind(e), Some(ErrorClass::Speech), e.is_retryable());
        }
        if let Some(e) = e.downcast_ref::<RealtimeError>() {
            let kind = match e {
                RealtimeError::Auth { .. } => ErrorKind::Auth,
                RealtimeError::Connection { .. } | RealtimeError::Closed => ErrorKind::Unavailable,
                RealtimeError::Unsupported { .. } => ErrorKind::BadInput,
                RealtimeError::Timeout(_) => ErrorKind::Timeout,
                _ => ErrorKind::Vendor,
            };
            let retryable = matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout);
            return (kind, Some(ErrorClass::Realtime), retryable);
        }
        if let Some(e) = e.downcast_ref::<ToolError>() {
            let kind = match e {
                ToolError::Timeout { .. } => ErrorKind::Timeout,
                ToolError::RateLimited { .. } => ErrorKind::RateLimited,
                ToolError::NotAllowed { .. } | ToolError::Denied { .. } => ErrorKind::Denied,
                ToolError::InvalidArguments { .. } | ToolError::UnknownTool { .. } => {
                    ErrorKind::BadInput
                }
                ToolError::SourceUnavailable { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Other,
            };
            let retryable = matches!(kind, ErrorKind::Timeout | ErrorKind::RateLimited);
            return (kind, Some(ErrorClass::Tool), retryable);
        }
        if let Some(e) = e.downcast_ref::<StateError>() {
            let kind = match e {
                StateError::Timeout(_) => ErrorKind::Timeout,
                StateError::InvalidId { .. } => ErrorKind::BadInput,
                StateError::Backend { .. } | StateError::Closed => ErrorKind::Unavailable,
                _ => ErrorKind::Other,
            };
            let retryable = matches!(kind, ErrorKind::Timeout | ErrorKind::Unavailable);
            return (kind, Some(ErrorClass::State), retryable);
        }
        next = e.source();
    }
    (ErrorKind::Other, None, false)
}

fn provider_kind(error: &ProviderError) -> ErrorKind {
    match error {
        ProviderError::Auth { .. } => ErrorKind::Auth,
        ProviderError::RateLimited { .. } => ErrorKind::RateLimited,
        ProviderError::ContextTooLong { .. } | ProviderError::BadRequest { .. } => {
            ErrorKind::BadInput
        }
        ProviderError::ContentFiltered { .. } => ErrorKind::Denied,
        ProviderError::Timeout { .. } => ErrorKind::Timeout,
        ProviderError::Transport { .. } => ErrorKind::Unavailable,
        ProviderError::Cancelled => ErrorKind::Cancelled,
        _ => ErrorKind::Vendor,
    }
}

fn speech_kind(error: &SpeechError) -> ErrorKind {
    match error {
        SpeechError::EmptyAudio
        | SpeechError::UnsupportedFormat(_)
        | SpeechError::Unsupported { .. } => ErrorKind::BadInput,
        SpeechError::Auth { .. } => ErrorKind::Auth,
        SpeechError::RateLimited { .. } => ErrorKind::RateLimited,
        SpeechError::Timeout(_) => ErrorKind::Timeout,
        SpeechError::Transport { .. } | SpeechError::Closed => ErrorKind::Unavailable,
        _ => ErrorKind::Vendor,
    }
}

/// A video frame or encoded segment.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrame {
    /// Encoded bytes.
    pub data: Bytes,
    /// Media type (`video/h264`, `image/jpeg` for frames as images, ...).
    pub mime_type: String,
    /// Width in pixels, when known.
    pub width: Option<u32>,
    /// Height in pixels, when known.
    pub height: Option<u32>,
    /// Whether this is a key frame.
    pub key_frame: bool,
    /// Frame number in its stream.
    pub frame_number: u64,
}

/// An image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFrame {
    /// Encoded bytes.
    pub data: Bytes,
    /// Media type (`image/png`, ...).
    pub mime_type: String,
    /// Width in pixels, when known.
    pub width: Option<u32>,
    /// Height in pixels, when known.
    pub height: Option<u32>,
}

/// Typed per-element metadata. Per-run data (system prompt, variables, allowed tools) is not
/// here: it lives once per run in the [`RunContext`](crate::RunContext).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ElementMeta {
    /// The stage that produced the element (set by stages that care; `None` for input).
    pub source: Option<Arc<str>>,
    /// The element is conversation history loaded from a store, not new input.
    pub from_history: bool,
    /// For elements that passed a fan-in: the index of the input edge they came through.
    pub merge_input: Option<u32>,
    /// The element is a streaming delta of a message that follows complete.
    pub streaming_delta: bool,
    /// The conversational turn the element belongs to: a user's utterance and the answer to
    /// it share the id ([`RunContext::begin_turn`](crate::RunContext::begin_turn)).
    pub turn_id: Option<u64>,
    /// For output an interrupt cancels (an answer's deltas and audio): the run's interrupt
    /// epoch when the answer started. Once the run's epoch has moved past it the element is
    /// stale, and stage inputs and the run's output drop it on receipt (media and deltas
    /// only; see [`Element::is_droppable`]). `None` for input and everything else.
    pub epoch: Option<u64>,
    /// Why generation stopped, on the last element of a model response.
    pub finish_reason: Option<FinishReason>,
    /// Free-form attributes (base metadata and application data). Shared, so cloning an
    /// element does not copy them.
    pub attributes: Option<Arc<Map<String, Value>>>,
}

impl ElementMeta {
    /// The attribute stored under `key`.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes.as_ref().and_then(|a| a.get(key))
    }

    /// Stores an attribute (copying the shared map only if it is shared).
    pub fn set_attribute(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let map = self.attributes.get_or_insert_with(Default::default);
        Arc::make_mut(map).insert(key.into(), value.into());
    }

    /// Merges `base` under the element's own attributes: keys the element has win.
    pub fn merge_base(&mut self, base: &Arc<Map<String, Value>>) {
        match &mut self.attributes {
            None => self.attributes = Some(Arc::clone(base)),
            Some(own) if Arc::ptr_eq(own, base) => {}
            Some(own) => {
                if base.keys().all(|k| own.contains_key(k)) {
                    return;
                }
                let own = Arc::make_mut(own);
                for (k, v) in base.iter() {
                    if !own.contains_key(k) {
                        own.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
}

impl Element {
    /// An element with this payload and default metadata.
    pub fn new(payload: Payload) -> Self {
        Self {
            payload,
            meta: ElementMeta::default(),
        }
    }

    /// A text element.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Payload::Text(text.into()))
    }

    /// A message element.
    pub fn message(message: Message) -> Self {
        Self::new(Payload::Message(Box::new(message)))
    }

    /// An audio element.
    pub fn audio(frame: AudioFrame) -> Self {
        Self::new(Payload::Audio(frame))
    }

    /// A tool-call element.
    pub fn tool_call(call: ToolCall) -> Self {
        Self::new(Payload::ToolCall(Box::new(call)))
    }

    /// A content-part element.
    pub fn part(part: ContentPart) -> Self {
        Self::new(Payload::Part(Box::new(part)))
    }

    /// A video element.
    pub fn video(frame: VideoFrame) -> Self {
        Self::new(Payload::Video(Box::new(frame)))
    }

    /// An image element.
    pub fn image(frame: ImageFrame) -> Self {
        Self::new(Payload::Image(Box::new(frame)))
    }

    /// A control element.
    pub fn control(control: Control) -> Self {
        Self::new(Payload::Control(control))
    }

    /// An end-of-turn element.
    pub fn end_of_turn() -> Self {
        Self::control(Control::EndOfTurn)
    }

    /// An end-of-stream element.
    pub fn end_of_stream() -> Self {
        Self::control(Control::EndOfStream)
    }

    /// An interrupt marker (see [`Control::Interrupt`]).
    pub fn interrupt(interrupt: Interrupt) -> Self {
        Self::control(Control::Interrupt(interrupt))
    }

    /// A recoverable-error element reported by `stage`, of kind [`ErrorKind::Other`].
    pub fn error(stage: impl Into<String>, message: impl Into<String>) -> Self {
        Self::control(Control::Error(ElementError::new(stage, message)))
    }

    /// A recoverable-error element for `error`, classified ([`ElementError::from_error`]).
    pub fn error_from(stage: impl Into<String>, error: &(dyn std::error::Error + 'static)) -> Self {
        Self::control(Control::Error(ElementError::from_error(stage, error)))
    }

    /// Sets the source stage.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.meta.source = Some(source.into());
        self
    }

    /// Sets the turn.
    #[must_use]
    pub fn with_turn(mut self, turn_id: Option<u64>) -> Self {
        self.meta.turn_id = turn_id;
        self
    }

    /// Sets the interrupt epoch (see [`ElementMeta::epoch`]).
    #[must_use]
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.meta.epoch = Some(epoch);
        self
    }

    /// Marks the element as history.
    #[must_use]
    pub fn as_history(mut self) -> Self {
        self.meta.from_history = true;
        self
    }

    /// Sets an attribute.
    #[must_use]
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.meta.set_attribute(key, value);
        self
    }

    /// Whether an interrupt may drop this element when it is stale: media and deltas (text,
    /// audio, video, images, content parts). Messages and control signals are never dropped.
    pub fn is_droppable(&self) -> bool {
        !matches!(
            self.payload,
            Payload::Message(_) | Payload::ToolCall(_) | Payload::Control(_)
        )
    }

    /// Whether the element is stale in a run whose interrupt epoch is `epoch`: it is
    /// droppable and belongs to an answer that started before the last interrupt.
    pub fn is_stale(&self, epoch: u64) -> bool {
        self.meta.epoch.is_some_and(|e| e < epoch) && self.is_droppable()
    }

    /// The text, for text elements.
    pub fn as_text(&self) -> Option<&str> {
        match &self.payload {
            Payload::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The message, for message elements.
    pub fn as_message(&self) -> Option<&Message> {
        match &self.payload {
            Payload::Message(m) => Some(m),
            _ => None,
        }
    }

    /// The audio frame, for audio elements.
    pub fn as_audio(&self) -> Option<&AudioFrame> {
        match &self.payload {
            Payload::Audio(a) => Some(a),
            _ => None,
        }
    }

    /// The control signal, for control elements.
    pub fn as_control(&self) -> Option<&Control> {
        match &self.payload {
            Payload::Control(c) => Some(c),
            _ => None,
        }
    }

    /// Whether this is a control element.
    pub fn is_control(&self) -> bool {
        matches!(self.payload, Payload::Control(_))
    }

    /// Whether this is an end-of-stream element.
    pub fn is_end_of_stream(&self) -> bool {
        matches!(self.payload, Payload::Control(Control::EndOfStream))
    }

    /// The error, for error elements.
    pub fn as_error(&self) -> Option<&ElementError> {
        match &self.payload {
            Payload::Control(Control::Error(e)) => Some(e),
            _ => None,
        }
    }

    /// A short name of the payload kind, for logs and metrics.
    pub fn kind_name(&self) -> &'static str {
        match &self.payload {
            Payload::Text(_) => "text",
            Payload::Audio(_) => "audio",
            Payload::Video(_) => "video",
            Payload::Image(_) => "image",
            Payload::Message(_) => "message",
            Payload::ToolCall(_) => "tool_call",
            Payload::Part(_) => "part",
            Payload::Control(Control::Start) => "start",
            Payload::Control(Control::EndOfTurn) => "end_of_turn",
            Payload::Control(Control::EndOfStream) => "end_of_stream",
            Payload::Control(Control::Interrupt(_)) => "interrupt",
            Payload::Control(Control::Error(_)) => "error",
        }
    }
}

impl From<Message> for Element {
    fn from(message: Message) -> Self {
        Self::message(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base_metadata_never_overrides_the_element() {
        let base = Arc::new(
            json!({"tenant": "acme", "region": "eu"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let mut plain = Element::text("a");
        plain.meta.merge_base(&base);
        assert_eq!(plain.meta.attribute("tenant"), Some(&json!("acme")));
        assert!(
            Arc::ptr_eq(plain.meta.attributes.as_ref().unwrap(), &base),
            "shared, not copied"
        );

        let mut own = Element::text("b").with_attribute("region", "us");
        own.meta.merge_base(&base);
        assert_eq!(
            own.meta.attribute("region"),
            Some(&json!("us")),
            "element wins"
        );
        assert_eq!(own.meta.attribute("tenant"), Some(&json!("acme")));
    }

    #[test]
    fn elements_stay_small() {
        // Each channel allocates 32 slots at once and every hop moves an element: a payload
        // stored inline that grows this (a new variant, a larger core type) costs every run.
        assert!(
            size_of::<Element>() <= 168,
            "Element is {} bytes",
            size_of::<Element>()
        );
        assert!(size_of::<Payload>() <= 64);
    }

    #[test]
    fn only_stale_media_and_deltas_are_droppable() {
        let audio = Element::audio(AudioFrame::new(
            vec![0; 2],
            promptkit_core::AudioFormat::PCM16_16K_MONO,
        ));
        assert!(
            !audio.is_stale(5),
            "input carries no epoch and is never stale"
        );
        let answer_audio = audio.with_epoch(1);
        assert!(!answer_audio.is_stale(1), "current epoch");
        assert!(answer_audio.is_stale(2), "an interrupt has passed it");
        assert!(Element::text("delta").with_epoch(0).is_stale(1));
        let message = Element::message(Message::assistant("kept")).with_epoch(0);
        assert!(!message.is_stale(9), "messages are the record");
        let marker = Element::interrupt(Interrupt::of_turn(3)).with_epoch(0);
        assert!(!marker.is_stale(9), "control signals always arrive");
    }

    #[test]
    fn errors_are_classified_from_their_chain() {
        let timeout = SpeechError::Timeout(Duration::from_secs(3));
        let e = ElementError::from_error("stt", &timeout);
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(e.class, Some(ErrorClass::Speech));
        assert!(e.retryable);
        assert_eq!(e.message, "timed out after 3s");

        let limited = ProviderError::RateLimited {
            retry_after: None,
            message: "slow down".into(),
        };
        let e = ElementError::from_error("provider", &limited);
        assert_eq!(
            (e.kind, e.class),
            (ErrorKind::RateLimited, Some(ErrorClass::Provider))
        );

        let plain = std::io::Error::other("disk full");
        let e = ElementError::from_error("save", &plain);
        assert_eq!(
            (e.kind, e.class, e.retryable),
            (ErrorKind::Other, None, false)
        );
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"stage": "save", "message": "disk full", "kind": "other", "retryable": false})
        );
    }

    #[test]
    fn kinds_and_accessors() {
        let e = Element::error("s", "boom");
        assert_eq!(e.kind_name(), "error");
        assert_eq!(e.as_error().unwrap().to_string(), "stage `s`: boom");
        assert!(e.is_control());
        assert!(Element::end_of_stream().is_end_of_stream());
        let m = Element::from(Message::user("hi"));
        assert_eq!(m.as_message().unwrap().text(), "hi");
        assert_eq!(Element::text("t").as_text(), Some("t"));
    }
}
