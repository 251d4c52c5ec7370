//! Conversation messages and their content parts.
//!
//! The serialised form of every type here is persisted by state stores and event logs; it is
//! described in `docs/decisions/0002-core-vocabulary.md` and pinned by the golden tests of
//! this module. Fields that are empty or absent are omitted, and unknown fields are ignored
//! on read, so newer writers stay readable by older readers.

use std::borrow::Cow;
use std::path::PathBuf;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::finish::FinishReason;
use crate::time::Timestamp;
use crate::usage::{Cost, Usage};

/// Who produced a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions for the model. Providers that take a separate system prompt lift these out.
    System,
    /// The person (or program) talking to the model.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering an assistant's [`ToolCall`].
    Tool,
}

impl Role {
    /// The lowercase wire name (`"system"`, `"user"`, `"assistant"`, `"tool"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// Provider-opaque data that must survive a round trip through storage and back to the
/// provider that produced it: Gemini thought signatures, Anthropic thinking signatures,
/// OpenAI reasoning item ids.
///
/// Keys are namespaced by vendor (`"gemini.thought_signature"`, `"anthropic.signature"`,
/// `"openai.item_id"`); values are arbitrary JSON and are never interpreted outside the
/// provider that wrote them. Serialised as a JSON object; omitted when empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderData(Map<String, Value>);

impl ProviderData {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The string stored under `key`, if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// Stores `value` under `key`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(key.into(), value.into())
    }

    /// Builder form of [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Iterates over the entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }
}

/// Where the bytes of a media part come from.
///
/// Serialised as a one-key object: `{"url": "https://…"}`, `{"data": "<base64>"}`,
/// `{"file": "/path"}` or `{"storage": "<reference>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MediaSource {
    /// A URL the provider (or a media loader) fetches. `data:` URLs are allowed.
    Url(String),
    /// Inline bytes, serialised as standard base64.
    Data(#[serde(with = "base64_bytes")] Bytes),
    /// A local file, read when the request is built.
    File(PathBuf),
    /// A reference into a media store (for example an object key), resolved by the
    /// application's media store; keeps large media out of conversation state.
    Storage(String),
}

/// A media attachment: an image, audio clip, video or document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    /// Where the bytes are.
    pub source: MediaSource,
    /// The IANA media type (`image/png`, `audio/wav`, `application/pdf`). Optional for
    /// URLs, where the provider or loader may infer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Image resolution hint for vision models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
    /// A file name shown to the model for documents (some vendors require one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Provider-opaque data to round-trip (for example an uploaded file id).
    #[serde(default, skip_serializing_if = "ProviderData::is_empty")]
    pub provider_data: ProviderData,
}

impl Media {
    /// Media from a URL.
    pub fn url(url: impl Into<String>) -> Self {
        Self::from_source(MediaSource::Url(url.into()))
    }

    /// Media from inline bytes with their media type.
    pub fn bytes(data: impl Into<Bytes>, mime_type: impl Into<String>) -> Self {
        Self::from_source(MediaSource::Data(data.into())).with_mime_type(mime_type)
    }

    /// Media from a local file. The media type is guessed from the extension when known.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mime = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(mime_from_extension);
        let mut media = Self::from_source(MediaSource::File(path));
        media.mime_type = mime.map(str::to_owned);
        media
    }

    /// Media held in a media store under `reference`.
    pub fn storage(reference: impl Into<String>, mime_type: impl Into<String>) -> Self {
        Self::from_source(MediaSource::Storage(reference.into())).with_mime_type(mime_type)
    }

    fn from_source(source: MediaSource) -> Self {
        Self {
            source,
            mime_type: None,
            detail: None,
            name: None,
            provider_data: ProviderData::new(),
        }
    }

    /// Sets the media type.
    #[must_use]
    pub fn with_mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.mime_type = Some(mime_type.into());
        self
    }

    /// Sets the image detail hint.
    #[must_use]
    pub fn with_detail(mut self, detail: ImageDetail) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Sets the file name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Guesses a media type from a file extension (case-insensitive), for the formats the
/// vendors accept. Returns `None` for unknown extensions.
pub fn mime_from_extension(ext: &str) -> Option<&'static str> {
    let ext = ext.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        "m4a" => "audio/mp4",
        "weba" => "audio/webm",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "ogv" => "video/ogg",
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "doc" => "application/msword",
        "md" | "markdown" => "text/markdown",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "xml" => "application/xml",
        "html" | "htm" => "text/html",
        _ => return None,
    })
}

/// Resolution hint for images sent to vision models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    /// Let the provider decide.
    Auto,
    /// Low resolution, fewer tokens.
    Low,
    /// High resolution.
    High,
}

/// Model reasoning ("thinking") attached to an assistant message.
///
/// Kept as a content part so its position relative to text and tool calls is preserved:
/// Anthropic requires thinking blocks to be replayed, in order and with their signature,
/// when a turn with tool use continues. Excluded from [`Message::text`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reasoning {
    /// The readable reasoning text, when the provider exposes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Whether the provider redacted this block (its content is only in `provider_data`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    /// Signatures or encrypted content to send back verbatim on later turns.
    #[serde(default, skip_serializing_if = "ProviderData::is_empty")]
    pub provider_data: ProviderData,
}

/// One piece of a message's content.
///
/// Serialised with a `type` tag: `{"type":"text","text":"hi"}`,
/// `{"type":"image","source":{"url":"…"},"mime_type":"image/png"}`,
/// `{"type":"reasoning","text":"…","provider_data":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContentPart {
    /// Plain text.
    Text {
        /// The text.
        text: String,
        /// Provider-opaque data attached to this text (for example a Gemini thought
        /// signature on a text part).
        #[serde(default, skip_serializing_if = "ProviderData::is_empty")]
        provider_data: ProviderData,
    },
    /// An image.
    Image(Media),
    /// An audio clip.
    Audio(Media),
    /// A video.
    Video(Media),
    /// A document (PDF, text, office formats).
    Document(Media),
    /// Model reasoning, see [`Reasoning`].
    Reasoning(Reasoning),
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            provider_data: ProviderData::new(),
        }
    }

    /// The text of a text part.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The media of an image, audio, video or document part.
    pub fn media(&self) -> Option<&Media> {
        match self {
            Self::Image(m) | Self::Audio(m) | Self::Video(m) | Self::Document(m) => Some(m),
            Self::Text { .. } | Self::Reasoning(_) => None,
        }
    }

    /// The kind of this part, for capability checks and error messages.
    pub fn kind(&self) -> ContentKind {
        match self {
            Self::Text { .. } => ContentKind::Text,
            Self::Image(_) => ContentKind::Image,
            Self::Audio(_) => ContentKind::Audio,
            Self::Video(_) => ContentKind::Video,
            Self::Document(_) => ContentKind::Document,
            Self::Reasoning(_) => ContentKind::Reasoning,
        }
    }
}

impl From<&str> for ContentPart {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

impl From<String> for ContentPart {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

/// The kind of a [`ContentPart`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    /// Text.
    Text,
    /// Image.
    Image,
    /// Audio.
    Audio,
    /// Video.
    Video,
    /// Document.
    Document,
    /// Reasoning.
    Reasoning,
}

impl ContentKind {
    /// The lowercase name, as used in the serialised `type` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Document => "document",
            Self::Reasoning => "reasoning",
        }
    }
}

/// A request from the model to run a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id; the [`ToolResult`] answering it carries the same id.
    pub id: String,
    /// The tool's name as offered to the model.
    pub name: String,
    /// The arguments. Normally a JSON object. When a model produced text that is not valid
    /// JSON (for example arguments cut off by the token limit) the raw text is kept as a
    /// JSON string, so that validation reports it to the model instead of running the tool
    /// with made-up arguments; see [`ToolCall::from_raw_arguments`].
    #[serde(default = "empty_object")]
    pub arguments: Value,
    /// Provider-opaque data to round-trip (for example `gemini.thought_signature`).
    #[serde(default, skip_serializing_if = "ProviderData::is_empty")]
    pub provider_data: ProviderData,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl ToolCall {
    /// A call with already-parsed arguments.
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
            provider_data: ProviderData::new(),
        }
    }

    /// A call whose arguments arrive as JSON text (as OpenAI-style APIs send them).
    ///
    /// Empty or whitespace-only text becomes `{}`; text that does not parse is kept verbatim
    /// as a JSON string (see [`ToolCall::arguments`]).
    pub fn from_raw_arguments(id: impl Into<String>, name: impl Into<String>, raw: &str) -> Self {
        Self::new(id, name, parse_arguments(raw))
    }

    /// Whether the arguments are a JSON object (the only shape tools accept).
    pub fn has_object_arguments(&self) -> bool {
        self.arguments.is_object()
    }

    /// The arguments as JSON text, as OpenAI-style APIs expect them. A string argument value
    /// (unparseable text kept verbatim) is returned as that text.
    pub fn arguments_json(&self) -> String {
        self.arguments_json_borrowed().into_owned()
    }

    /// [`arguments_json`](Self::arguments_json), borrowed when the arguments are kept as text
    /// (for request encoders that write it straight into a body).
    pub fn arguments_json_borrowed(&self) -> Cow<'_, str> {
        match &self.arguments {
            Value::String(raw) => Cow::Borrowed(raw),
            other => Cow::Owned(json_text(other)),
        }
    }
}

/// `value` as compact JSON text, as its `Display` writes it but straight into the string
/// (`Display` goes through the formatter for every token).
fn json_text(value: &Value) -> String {
    // Serialising a `Value` into memory cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Parses tool-call argument text: empty text is `{}`, invalid JSON is kept as a JSON string.
pub fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return empty_object();
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// Why a tool call failed, when a [`ToolResult`] reports an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolErrorKind {
    /// The model named a tool that does not exist.
    UnknownTool,
    /// The tool exists but is not allowed in this turn.
    NotAllowed,
    /// The arguments did not match the tool's schema.
    InvalidArguments,
    /// The tool ran and failed (or reported an error itself).
    Execution,
    /// The tool did not finish in time.
    Timeout,
    /// A hook, guardrail or a person denied the call.
    Denied,
    /// The call was rate limited.
    RateLimited,
    /// The call never completed: its turn was interrupted or cut off (a barge-in, a
    /// cancelled request, a budget or loop limit), so it has this result instead of none.
    Interrupted,
}

/// The outcome of a tool call, sent back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The id of the [`ToolCall`] this answers.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// The result as content parts (text, and images or documents where the tool returns
    /// them). For errors, a text part explaining the failure to the model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentPart>,
    /// Structured output (for tools with an output schema, and MCP structured content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<Value>,
    /// Whether this result reports a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    /// What kind of failure, when `is_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ToolErrorKind>,
}

impl ToolResult {
    /// A successful text result.
    pub fn text(
        call_id: impl Into<String>,
        name: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            call_id: call_id.into(),
            name: name.into(),
            content: vec![ContentPart::text(text)],
            structured: None,
            is_error: false,
            error_kind: None,
        }
    }

    /// A failed result whose message is shown to the model.
    pub fn error(
        call_id: impl Into<String>,
        name: impl Into<String>,
        kind: ToolErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            call_id: call_id.into(),
            name: name.into(),
            content: vec![ContentPart::text(message)],
            structured: None,
            is_error: true,
            error_kind: Some(kind),
        }
    }

    /// The text parts joined by newlines; when there are none, the structured output as JSON.
    pub fn text_content(&self) -> String {
        self.text_content_borrowed().into_owned()
    }

    /// [`text_content`](Self::text_content), borrowed when the result is a single text part.
    pub fn text_content_borrowed(&self) -> Cow<'_, str> {
        let text = join_text(&self.content, "\n");
        if text.is_empty()
            && let Some(structured) = &self.structured
        {
            return Cow::Owned(json_text(structured));
        }
        text
    }
}

/// The text parts of `parts` joined by `separator`, borrowed when there is only one.
fn join_text<'a>(parts: &'a [ContentPart], separator: &str) -> Cow<'a, str> {
    let mut texts = parts.iter().filter_map(ContentPart::as_text);
    let Some(first) = texts.next() else {
        return Cow::Borrowed("");
    };
    let Some(second) = texts.next() else {
        return Cow::Borrowed(first);
    };
    let mut out = String::new();
    for text in [first, second].into_iter().chain(texts) {
        if !out.is_empty() {
            out.push_str(separator);
        }
        out.push_str(text);
    }
    Cow::Owned(out)
}

/// One message of a conversation.
///
/// A user, system or assistant message carries `content`; an assistant message may also
/// carry `tool_calls`; a tool message carries exactly one `tool_result`. Usage, cost, finish
/// reason and latency are recorded on assistant messages produced by a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// A stable id, unique within its conversation. State stores use it to make appends
    /// idempotent: appending a message whose id is already stored is a no-op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who produced the message.
    pub role: Role,
    /// The content parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<ContentPart>,
    /// Tool calls requested by the model (assistant messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The result this message carries (tool messages). Boxed: only tool messages have one,
    /// and inline it would make every message a quarter larger (messages are moved through
    /// channels and kept in histories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result: Option<Box<ToolResult>>,
    /// Token usage of the call that produced this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Cost of the call that produced this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// When the message was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// How long the provider call took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Application metadata (validation results, source tags, ...). Must be JSON.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

impl Message {
    /// An empty message with the given role.
    pub fn new(role: Role) -> Self {
        Self {
            id: None,
            role,
            content: Vec::new(),
            tool_calls: Vec::new(),
            tool_result: None,
            usage: None,
            cost: None,
            finish_reason: None,
            created_at: None,
            latency_ms: None,
            metadata: Map::new(),
        }
    }

    /// A system message with one text part.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System).with_part(ContentPart::text(text))
    }

    /// A user message with one text part.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User).with_part(ContentPart::text(text))
    }

    /// An assistant message with one text part.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant).with_part(ContentPart::text(text))
    }

    /// A tool message carrying `result`.
    pub fn tool(result: ToolResult) -> Self {
        let mut message = Self::new(Role::Tool);
        message.tool_result = Some(Box::new(result));
        message
    }

    /// Adds a content part.
    #[must_use]
    pub fn with_part(mut self, part: impl Into<ContentPart>) -> Self {
        self.content.push(part.into());
        self
    }

    /// Adds a tool call.
    #[must_use]
    pub fn with_tool_call(mut self, call: ToolCall) -> Self {
        self.tool_calls.push(call);
        self
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the creation time.
    #[must_use]
    pub fn with_created_at(mut self, at: Timestamp) -> Self {
        self.created_at = Some(at);
        self
    }

    /// The text of the message: text parts joined without separator (reasoning excluded);
    /// for a tool message, the result's text.
    pub fn text(&self) -> String {
        self.text_borrowed().into_owned()
    }

    /// [`text`](Self::text), borrowed when it is a single text part (for request encoders
    /// that write it straight into a body).
    pub fn text_borrowed(&self) -> Cow<'_, str> {
        if let Some(result) = &self.tool_result {
            return result.text_content_borrowed();
        }
        join_text(&self.content, "")
    }

    /// Whether any part is an image, audio clip, video or document.
    pub fn has_media(&self) -> bool {
        self.content.iter().any(|p| p.media().is_some())
    }

    /// The reasoning parts of the message.
    pub fn reasoning(&self) -> impl Iterator<Item = &Reasoning> {
        self.content.iter().filter_map(|p| match p {
            ContentPart::Reasoning(r) => Some(r),
            _ => None,
        })
    }

    /// A copy without reasoning parts, for contexts that must not carry them.
    #[must_use]
    pub fn without_reasoning(&self) -> Self {
        let mut copy = self.clone();
        copy.content
            .retain(|p| !matches!(p, ContentPart::Reasoning(_)));
        copy
    }
}

impl From<&str> for Message {
    /// A user message with one text part.
    fn from(text: &str) -> Self {
        Self::user(text)
    }
}

impl From<String> for Message {
    /// A user message with one text part.
    fn from(text: String) -> Self {
        Self::user(text)
    }
}

/// Serde adapter: [`Bytes`] as a standard base64 string.
mod base64_bytes {
    use super::{Bytes, Deserialize, Deserializer, Serializer};
    use base64::Engine as _;

    pub(super) fn serialize<S: Serializer>(
        bytes: &Bytes,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(|e| serde::de::Error::custom(format!("media data is not valid base64: {e}")))
    }
}

/// Encodes bytes as standard base64 (the form inline media takes on the wire).
pub fn encode_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
