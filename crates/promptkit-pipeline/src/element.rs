//! Stream elements: what flows between stages.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use promptkit_core::{AudioFrame, ContentPart, FinishReason, Message, ToolCall};
use serde_json::{Map, Value};

/// One unit flowing through a pipeline: a payload or a control signal, plus small typed
/// metadata, a priority and a creation time.
#[derive(Debug, Clone)]
pub struct Element {
    /// What the element carries.
    pub payload: Payload,
    /// Typed per-element metadata.
    pub meta: ElementMeta,
    /// Scheduling hint for stages that queue elements (for example audio play-out).
    pub priority: Priority,
    /// When the element was created.
    pub created_at: Instant,
}

/// The content (or control signal) of an [`Element`].
///
/// Payloads larger than an audio frame are boxed, so that an element stays small: every
/// element is moved through a channel slot at each hop, and each channel allocates its slots
/// 32 at a time (an element is 168 bytes; with these payloads inline it was 232).
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
    /// The end of one conversational turn's input; the stream stays open.
    EndOfTurn,
    /// No more input in this stream.
    EndOfStream,
    /// The user barged in: cancel in-flight generation and drop buffered output.
    Interrupt,
    /// A recoverable error, flowing downstream as data. Fatal errors end the run instead.
    Error(ElementError),
}

/// A recoverable error carried by an element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElementError {
    /// The stage that reported it.
    pub stage: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ElementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage `{}`: {}", self.stage, self.message)
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

/// Scheduling priority of an element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Logs, metrics.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Real-time audio and video.
    High,
    /// Control signals and errors.
    Critical,
}

/// Typed per-element metadata. Per-turn data (system prompt, variables, allowed tools) is not
/// here: it lives once per run in the [`TurnContext`](crate::TurnContext).
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
    /// The conversational turn the element belongs to.
    pub turn_id: Option<u64>,
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
    /// An element with this payload, default metadata and the payload's default priority.
    pub fn new(payload: Payload) -> Self {
        let priority = match &payload {
            Payload::Audio(_) | Payload::Video(_) => Priority::High,
            Payload::Control(_) => Priority::Critical,
            _ => Priority::Normal,
        };
        Self {
            payload,
            meta: ElementMeta::default(),
            priority,
            created_at: Instant::now(),
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

    /// An interrupt element.
    pub fn interrupt() -> Self {
        Self::control(Control::Interrupt)
    }

    /// A recoverable-error element reported by `stage`.
    pub fn error(stage: impl Into<String>, message: impl Into<String>) -> Self {
        Self::control(Control::Error(ElementError {
            stage: stage.into(),
            message: message.into(),
        }))
    }

    /// Sets the source stage.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.meta.source = Some(source.into());
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
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
            Payload::Control(Control::EndOfTurn) => "end_of_turn",
            Payload::Control(Control::EndOfStream) => "end_of_stream",
            Payload::Control(Control::Interrupt) => "interrupt",
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
    fn default_priorities_follow_the_payload() {
        assert_eq!(Element::text("x").priority, Priority::Normal);
        assert_eq!(
            Element::audio(AudioFrame::new(
                vec![0; 2],
                promptkit_core::AudioFormat::PCM16_16K_MONO
            ))
            .priority,
            Priority::High
        );
        assert_eq!(Element::end_of_stream().priority, Priority::Critical);
        assert!(Priority::Critical > Priority::High);
    }

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
