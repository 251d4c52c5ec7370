//! The Chat Completions wire format: request building and lenient response types.

use std::borrow::Cow;

use promptkit_core::{
    ContentPart, FinishReason, Media, MediaSource, Message, ProviderError, ProviderRequest,
    ReasoningEffort, ResponseFormat, Role, ToolCall, ToolChoice, Usage, encode_base64,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::http::{borrowed_str, null_as_default, tool_result_of, truncate};

/// How the request body is shaped for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Send `model` (Azure takes the deployment from the URL instead).
    pub(crate) send_model: bool,
    /// Use `max_completion_tokens` (OpenAI) rather than `max_tokens` (older servers).
    pub(crate) max_completion_tokens: bool,
}

/// The JSON body of a call. It borrows from the request: message texts, tool calls, tool
/// schemas, stop sequences and pass-through values are written as they are, not copied into a
/// `serde_json::Value` tree first (this runs for every round of every turn).
#[derive(Debug, Serialize)]
pub(crate) struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    messages: Vec<MessageJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    /// Pass-through keys the fields above do not set.
    #[serde(flatten)]
    extra: Extra<'a>,
}

/// Pass-through entries, written as more keys of the body.
#[derive(Debug, Default)]
struct Extra<'a>(Vec<(&'a str, &'a Value)>);

impl Serialize for Extra<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().copied())
    }
}

impl Body<'_> {
    /// Whether the body sets `key` itself (pass-through values never replace it).
    fn sets(&self, key: &str) -> bool {
        match key {
            "model" => self.model.is_some(),
            "messages" => true,
            "tools" => !self.tools.is_empty(),
            "tool_choice" => self.tool_choice.is_some(),
            "parallel_tool_calls" => self.parallel_tool_calls.is_some(),
            "temperature" => self.temperature.is_some(),
            "top_p" => self.top_p.is_some(),
            "max_tokens" => self.max_tokens.is_some(),
            "max_completion_tokens" => self.max_completion_tokens.is_some(),
            "seed" => self.seed.is_some(),
            "stop" => !self.stop.is_empty(),
            "response_format" => self.response_format.is_some(),
            "reasoning_effort" => self.reasoning_effort.is_some(),
            "stream" => self.stream.is_some(),
            "stream_options" => self.stream_options.is_some(),
            _ => false,
        }
    }
}

/// `stream_options` of a streamed call.
#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// One entry of `messages`, borrowing from the request.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum MessageJson<'a> {
    /// A system or user message of text, or an assistant message (whose `content` is `null`
    /// when it only calls tools).
    Text {
        role: &'static str,
        content: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<CallJson<'a>>,
    },
    /// A tool result.
    Tool {
        role: &'static str,
        tool_call_id: &'a str,
        content: Cow<'a, str>,
    },
    /// A system or user message with media: an array of content parts.
    Parts {
        role: &'static str,
        content: Vec<Value>,
    },
}

/// One entry of an assistant message's `tool_calls`.
#[derive(Debug, Serialize)]
pub(crate) struct CallJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CallFunctionJson<'a>,
}

#[derive(Debug, Serialize)]
struct CallFunctionJson<'a> {
    name: &'a str,
    arguments: Cow<'a, str>,
}

/// One entry of `tools`.
#[derive(Debug, Serialize)]
struct ToolJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionJson<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    parameters: &'a Value,
}

/// Builds the body of a call.
pub(crate) fn body<'a>(
    request: &'a ProviderRequest,
    model: &'a str,
    shape: Shape,
    stream: bool,
) -> Result<Body<'a>, ProviderError> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(MessageJson::Text {
            role: "system",
            content: Some(Cow::Borrowed(system)),
            tool_calls: Vec::new(),
        });
    }
    for (index, message) in request.messages.iter().enumerate() {
        messages.push(message_json(message, index)?);
    }
    let offers_tools = !request.tools.is_empty();
    let tools = request
        .tools
        .iter()
        .map(|t| ToolJson {
            kind: "function",
            function: FunctionJson {
                name: &t.name,
                description: &t.description,
                parameters: &t.input_schema,
            },
        })
        .collect();
    let tool_choice = match &request.tool_choice {
        _ if !offers_tools => None,
        ToolChoice::Auto => None,
        ToolChoice::None => Some("none".into()),
        ToolChoice::Required => Some("required".into()),
        ToolChoice::Tool(name) => Some(json!({"type": "function", "function": {"name": name}})),
    };
    let response_format = match &request.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "json_object"})),
        Some(ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        }) => Some(json!({"type": "json_schema", "json_schema": {
            "name": name, "schema": schema, "strict": strict}})),
    };
    let reasoning_effort = request
        .reasoning
        .and_then(|r| r.effort)
        .map(|effort| match effort {
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        });
    let mut body = Body {
        model: shape.send_model.then_some(model),
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: request.parallel_tool_calls.filter(|_| offers_tools),
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens: request.max_tokens.filter(|_| !shape.max_completion_tokens),
        max_completion_tokens: request.max_tokens.filter(|_| shape.max_completion_tokens),
        seed: request.seed,
        stop: &request.stop,
        response_format,
        reasoning_effort,
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        extra: Extra::default(),
    };
    // Pass-through last: keys set above win.
    let extra = request
        .extra
        .iter()
        .filter(|(key, _)| !body.sets(key))
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    body.extra = Extra(extra);
    Ok(body)
}

/// The body as a JSON value, for tests that look into it.
#[cfg(test)]
pub(crate) fn build_body(
    request: &ProviderRequest,
    model: &str,
    shape: Shape,
    stream: bool,
) -> Result<Value, ProviderError> {
    let body = body(request, model, shape, stream)?;
    Ok(serde_json::to_value(&body).expect("a body serialises"))
}

fn message_json(message: &Message, index: usize) -> Result<MessageJson<'_>, ProviderError> {
    match message.role {
        Role::Tool => {
            let result = tool_result_of(message, index)?;
            Ok(MessageJson::Tool {
                role: "tool",
                tool_call_id: &result.call_id,
                content: result.text_content_borrowed(),
            })
        }
        Role::Assistant => {
            let text = message.text_borrowed();
            let content = if text.is_empty() && !message.tool_calls.is_empty() {
                None
            } else {
                Some(text)
            };
            Ok(MessageJson::Text {
                role: "assistant",
                content,
                tool_calls: message.tool_calls.iter().map(call_json).collect(),
            })
        }
        Role::System | Role::User => {
            let role = message.role.as_str();
            if !message.has_media() {
                return Ok(MessageJson::Text {
                    role,
                    content: Some(message.text_borrowed()),
                    tool_calls: Vec::new(),
                });
            }
            let mut parts = Vec::new();
            for part in &message.content {
                match part {
                    ContentPart::Text { text, .. } if text.is_empty() => {}
                    ContentPart::Text { text, .. } => {
                        parts.push(json!({"type": "text", "text": text}));
                    }
                    ContentPart::Image(media) => parts.push(image_json(media, index)?),
                    ContentPart::Audio(media) => parts.push(audio_json(media, index)?),
                    ContentPart::Reasoning(_) => {}
                    other => {
                        return Err(unsupported(format!(
                            "message {index}: {} content is not supported by Chat Completions",
                            other.kind().as_str()
                        )));
                    }
                }
            }
            Ok(MessageJson::Parts {
                role,
                content: parts,
            })
        }
    }
}

fn call_json(call: &ToolCall) -> CallJson<'_> {
    CallJson {
        id: &call.id,
        kind: "function",
        function: CallFunctionJson {
            name: &call.name,
            arguments: call.arguments_json_borrowed(),
        },
    }
}

fn unsupported(message: String) -> ProviderError {
    ProviderError::Unsupported { message }
}

fn image_json(media: &Media, index: usize) -> Result<Value, ProviderError> {
    let url = match &media.source {
        MediaSource::Url(url) => url.clone(),
        MediaSource::Data(bytes) => {
            let mime = media.mime_type.as_deref().unwrap_or("image/png");
            format!("data:{mime};base64,{}", encode_base64(bytes))
        }
        _ => return Err(unresolved(index)),
    };
    let mut image = Map::new();
    image.insert("url".into(), url.into());
    if let Some(detail) = media.detail {
        image.insert("detail".into(), json!(detail));
    }
    Ok(json!({"type": "image_url", "image_url": image}))
}

fn audio_json(media: &Media, index: usize) -> Result<Value, ProviderError> {
    let format = match media.mime_type.as_deref() {
        Some("audio/wav" | "audio/x-wav" | "audio/wave") => "wav",
        Some("audio/mpeg" | "audio/mp3") => "mp3",
        other => {
            return Err(unsupported(format!(
                "message {index}: audio must be wav or mp3, got {}",
                other.unwrap_or("an unknown type")
            )));
        }
    };
    let data = match &media.source {
        MediaSource::Data(bytes) => encode_base64(bytes),
        MediaSource::Url(url) => match url.split_once(";base64,") {
            Some((prefix, data)) if prefix.starts_with("data:") => data.to_owned(),
            _ => {
                return Err(unsupported(format!(
                    "message {index}: audio must be inline bytes or a data: URL"
                )));
            }
        },
        _ => return Err(unresolved(index)),
    };
    Ok(json!({"type": "input_audio", "input_audio": {"data": data, "format": format}}))
}

fn unresolved(index: usize) -> ProviderError {
    unsupported(format!(
        "message {index}: file and storage media must be resolved to bytes or a URL before \
         the call (use a media loader)"
    ))
}

// ---- Responses (lenient: every field optional, unknown fields ignored) ----

/// A non-streaming response.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChatResponse {
    pub(crate) model: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) choices: Vec<Choice>,
    pub(crate) usage: Option<WireUsage>,
    pub(crate) error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Choice {
    pub(crate) message: Option<ChoiceMessage>,
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChoiceMessage {
    pub(crate) content: Option<Value>,
    pub(crate) reasoning_content: Option<String>,
    pub(crate) refusal: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) tool_calls: Vec<WireToolCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WireToolCall {
    pub(crate) index: Option<u32>,
    pub(crate) id: Option<String>,
    pub(crate) function: Option<WireFunction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WireFunction {
    pub(crate) name: Option<String>,
    // Some compatible servers send an object instead of a JSON string.
    pub(crate) arguments: Option<Value>,
}

impl WireFunction {
    pub(crate) fn arguments_text(&self) -> String {
        match &self.arguments {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }
}

/// A streamed chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChatChunk<'a> {
    // Borrowed from the frame: every chunk repeats the model and only the first is kept.
    #[serde(borrow, deserialize_with = "borrowed_str")]
    pub(crate) model: Option<Cow<'a, str>>,
    #[serde(deserialize_with = "null_as_default", borrow)]
    pub(crate) choices: Vec<ChunkChoice<'a>>,
    pub(crate) usage: Option<WireUsage>,
    pub(crate) error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ChunkChoice<'a> {
    pub(crate) index: Option<u32>,
    pub(crate) delta: Option<Delta>,
    #[serde(borrow, deserialize_with = "borrowed_str")]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Delta {
    pub(crate) content: Option<String>,
    pub(crate) reasoning_content: Option<String>,
    // Some servers (vLLM, OpenRouter) call it `reasoning`.
    pub(crate) reasoning: Option<String>,
    pub(crate) refusal: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) tool_calls: Vec<WireToolCall>,
}

/// `usage` of a response or the final chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WireUsage {
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) prompt_tokens_details: Option<PromptDetails>,
    pub(crate) completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PromptDetails {
    pub(crate) cached_tokens: Option<u64>,
    pub(crate) audio_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CompletionDetails {
    pub(crate) reasoning_tokens: Option<u64>,
    pub(crate) audio_tokens: Option<u64>,
}

impl WireUsage {
    /// Normalised usage (OpenAI's prompt count already includes cached tokens, and its
    /// completion count includes reasoning tokens), or `None` when nothing was reported.
    pub(crate) fn to_usage(&self) -> Option<Usage> {
        let prompt = self.prompt_tokens_details.as_ref();
        let completion = self.completion_tokens_details.as_ref();
        let usage = Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: prompt.and_then(|p| p.cached_tokens),
            cache_write_input_tokens: None,
            reasoning_tokens: completion.and_then(|c| c.reasoning_tokens),
            audio_input_tokens: prompt.and_then(|p| p.audio_tokens),
            audio_output_tokens: completion.and_then(|c| c.audio_tokens),
        };
        (!usage.is_empty()).then_some(usage)
    }
}

/// The vendor error object, `{"error":{"message","type","code"}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WireError {
    pub(crate) message: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) code: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    error: Option<WireErrorOrString>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireErrorOrString {
    Object(WireError),
    Text(String),
}

impl WireError {
    fn code_str(&self) -> Option<&str> {
        self.code.as_ref().and_then(Value::as_str)
    }

    /// The typed error for this vendor error at HTTP `status`, or, for an error object
    /// inside a stream or a 200 body (`None`), at the status its type stands for.
    pub(crate) fn to_error(
        &self,
        status: Option<u16>,
        retry_after: Option<std::time::Duration>,
    ) -> ProviderError {
        let code = self.code_str().unwrap_or("");
        let kind = self.kind.as_deref().unwrap_or("");
        let is = |names: &[&str]| names.contains(&code) || names.contains(&kind);
        let status = status.unwrap_or_else(|| {
            if is(&["rate_limit_exceeded", "requests", "tokens"]) {
                429
            } else if is(&["overloaded", "service_unavailable"]) {
                503
            } else {
                500
            }
        });
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| format!("HTTP status {status}"));
        if is(&["context_length_exceeded"]) {
            return ProviderError::ContextTooLong { message };
        }
        if is(&["content_filter", "content_policy_violation"]) {
            return ProviderError::ContentFiltered { message };
        }
        if is(&[
            "insufficient_quota",
            "billing_hard_limit_reached",
            "billing_not_active",
        ]) {
            // A 429 that waiting will not fix.
            return ProviderError::QuotaExhausted { message };
        }
        ProviderError::from_status(status, message, retry_after)
    }
}

/// Maps an error response body to a typed error.
pub(crate) fn error_from_body(
    status: u16,
    body: &str,
    retry_after: Option<std::time::Duration>,
) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let error = match parsed.error {
        Some(WireErrorOrString::Object(e)) => e,
        Some(WireErrorOrString::Text(message)) => WireError {
            message: Some(message),
            ..WireError::default()
        },
        None => WireError {
            message: parsed.message.or_else(|| {
                let trimmed = body.trim();
                (!trimmed.is_empty()).then(|| truncate(trimmed, 500))
            }),
            ..WireError::default()
        },
    };
    error.to_error(Some(status), retry_after)
}

/// Text of a non-streaming `message.content`: a string, or an array of parts.
pub(crate) fn content_text(content: Option<&Value>) -> (String, Option<String>) {
    match content {
        Some(Value::String(s)) => (s.clone(), None),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            let mut thinking = String::new();
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("text");
                let body = part
                    .get("text")
                    .or_else(|| part.get("thinking"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if kind == "thinking" || kind == "reasoning" {
                    thinking.push_str(body);
                } else {
                    text.push_str(body);
                }
            }
            (text, (!thinking.is_empty()).then_some(thinking))
        }
        _ => (String::new(), None),
    }
}

/// Maps a raw finish reason; empty strings count as absent.
pub(crate) fn finish_reason(raw: Option<&str>) -> Option<FinishReason> {
    raw.filter(|r| !r.is_empty()).map(FinishReason::from_openai)
}
