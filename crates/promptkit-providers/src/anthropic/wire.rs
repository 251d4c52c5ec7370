//! The Messages API wire format: request building, lenient response types, error mapping.

use promptkit_core::{
    ContentPart, Media, MediaSource, Message, ProviderData, ProviderError, ProviderRequest,
    Reasoning, ResponseFormat, Role, StreamAccumulator, StreamEvent, ToolChoice, ToolResult, Usage,
    encode_base64,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{object_arguments, tool_result_of, truncate};

/// `provider_data` key of a thinking block's signature.
pub(crate) const SIGNATURE_KEY: &str = "anthropic.signature";
/// `provider_data` key of a redacted thinking block's encrypted data.
pub(crate) const REDACTED_KEY: &str = "anthropic.redacted_data";

/// Builds the JSON body of a call.
pub(crate) fn build_body(
    request: &ProviderRequest,
    model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    body.insert("model".into(), model.into());

    // The system prompt, plus the text of any system messages left in the conversation.
    let mut system: Vec<String> = request.system.iter().cloned().collect();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let (role, blocks) = match message.role {
            Role::System => {
                system.push(message.text());
                continue;
            }
            Role::User => ("user", user_blocks(message, index)?),
            Role::Tool => {
                let result = tool_result_of(message, index)?;
                ("user", vec![tool_result_block(result, index)?])
            }
            Role::Assistant => ("assistant", assistant_blocks(message, index)),
        };
        if blocks.is_empty() {
            continue;
        }
        // The API wants alternating roles: consecutive tool results (and a user message
        // following them) are merged into one user message, results first.
        match messages.last_mut() {
            Some((last_role, last)) if *last_role == role => last.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    }
    system.retain(|s| !s.is_empty());
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    body.insert(
        "messages".into(),
        messages
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    );

    let mut max_tokens = request.max_tokens.unwrap_or(default_max_tokens);
    if let Some(budget) = request.reasoning.and_then(|r| r.budget_tokens) {
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
        // The API requires max_tokens > budget_tokens.
        if max_tokens <= budget {
            max_tokens = budget.saturating_add(1024);
        }
    }
    body.insert("max_tokens".into(), max_tokens.into());

    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let mut tool = Map::new();
                tool.insert("name".into(), t.name.clone().into());
                if !t.description.is_empty() {
                    tool.insert("description".into(), t.description.clone().into());
                }
                tool.insert("input_schema".into(), t.input_schema.clone());
                Value::Object(tool)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut choice = match &request.tool_choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        let disable_parallel = request.parallel_tool_calls == Some(false)
            && !matches!(request.tool_choice, ToolChoice::None);
        if disable_parallel {
            choice["disable_parallel_tool_use"] = true.into();
        }
        // `auto` is the default: sent only when it carries the parallel flag.
        if !matches!(request.tool_choice, ToolChoice::Auto) || disable_parallel {
            body.insert("tool_choice".into(), choice);
        }
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            return Err(ProviderError::Unsupported {
                message: "Anthropic has no JSON object mode; use a JSON schema response format"
                    .to_owned(),
            });
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert(
                "output_config".into(),
                json!({"format": {"type": "json_schema", "schema": schema}}),
            );
        }
    }
    if stream {
        body.insert("stream".into(), true.into());
    }
    // Pass-through last: keys set above win.
    for (key, value) in &request.extra {
        body.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Ok(Value::Object(body))
}

fn user_blocks(message: &Message, index: usize) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    for part in &message.content {
        if let Some(block) = content_block(part, index)? {
            blocks.push(block);
        }
    }
    Ok(blocks)
}

/// A text, image or document block; `None` for parts with nothing to send.
fn content_block(part: &ContentPart, index: usize) -> Result<Option<Value>, ProviderError> {
    Ok(match part {
        ContentPart::Text { text, .. } if text.is_empty() => None,
        ContentPart::Text { text, .. } => Some(json!({"type": "text", "text": text})),
        ContentPart::Image(media) => Some(json!({"type": "image",
            "source": media_source(media, "image/png", index)?})),
        ContentPart::Document(media) => Some(json!({"type": "document",
            "source": document_source(media, index)?})),
        // Reasoning in a user message cannot be sent; it is dropped.
        ContentPart::Reasoning(_) => None,
        other => {
            return Err(ProviderError::Unsupported {
                message: format!(
                    "message {index}: {} content is not supported by the Anthropic Messages API",
                    other.kind().as_str()
                ),
            });
        }
    })
}

/// A PDF (bytes or URL), or a plain-text document sent as a `text` source.
fn document_source(media: &Media, index: usize) -> Result<Value, ProviderError> {
    if let (MediaSource::Data(bytes), Some(mime)) = (&media.source, media.mime_type.as_deref())
        && mime.starts_with("text/")
    {
        return Ok(json!({"type": "text", "media_type": "text/plain",
            "data": String::from_utf8_lossy(bytes)}));
    }
    media_source(media, "application/pdf", index)
}

fn media_source(media: &Media, default_mime: &str, index: usize) -> Result<Value, ProviderError> {
    match &media.source {
        MediaSource::Url(url) => Ok(json!({"type": "url", "url": url})),
        MediaSource::Data(bytes) => Ok(json!({"type": "base64",
            "media_type": media.mime_type.as_deref().unwrap_or(default_mime),
            "data": encode_base64(bytes)})),
        _ => Err(ProviderError::Unsupported {
            message: format!(
                "message {index}: file and storage media must be resolved to bytes or a URL \
                 before the call (use a media loader)"
            ),
        }),
    }
}

fn tool_result_block(result: &ToolResult, index: usize) -> Result<Value, ProviderError> {
    let mut block = Map::new();
    block.insert("type".into(), "tool_result".into());
    block.insert("tool_use_id".into(), result.call_id.clone().into());
    let has_media = result
        .content
        .iter()
        .any(|p| matches!(p, ContentPart::Image(_) | ContentPart::Document(_)));
    if has_media {
        let mut blocks = Vec::new();
        for part in &result.content {
            if let Some(b) = content_block(part, index)? {
                blocks.push(b);
            }
        }
        block.insert("content".into(), Value::Array(blocks));
    } else {
        block.insert("content".into(), result.text_content().into());
    }
    if result.is_error {
        block.insert("is_error".into(), true.into());
    }
    Ok(Value::Object(block))
}

/// Thinking blocks (with their signatures, in order), text, then `tool_use` blocks.
fn assistant_blocks(message: &Message, index: usize) -> Vec<Value> {
    let mut blocks = Vec::new();
    for part in &message.content {
        match part {
            ContentPart::Text { text, .. } if !text.is_empty() => {
                blocks.push(json!({"type": "text", "text": text}));
            }
            ContentPart::Reasoning(reasoning) => {
                if let Some(block) = reasoning_block(reasoning) {
                    blocks.push(block);
                }
            }
            // Media in an assistant turn is not accepted by the API; empty text is dropped.
            _ => {}
        }
    }
    for call in &message.tool_calls {
        blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
            "input": object_arguments(call, index)}));
    }
    blocks
}

/// A replayable thinking block. Reasoning without an Anthropic signature (another vendor's,
/// or a summary) cannot be sent back and is dropped.
fn reasoning_block(reasoning: &Reasoning) -> Option<Value> {
    if let Some(data) = reasoning.provider_data.get_str(REDACTED_KEY) {
        return Some(json!({"type": "redacted_thinking", "data": data}));
    }
    let signature = reasoning.provider_data.get_str(SIGNATURE_KEY)?;
    Some(json!({"type": "thinking",
        "thinking": reasoning.text.as_deref().unwrap_or(""),
        "signature": signature}))
}

// ---- Responses (lenient: every field optional, unknown fields ignored) ----

/// A non-streaming response (or the `message` of `message_start`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MessagesResponse {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) content: Option<Vec<Block>>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) usage: Option<WireUsage>,
    pub(crate) error: Option<WireError>,
}

/// A content block.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Block {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) text: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) input: Option<Value>,
    pub(crate) thinking: Option<String>,
    pub(crate) signature: Option<String>,
    pub(crate) data: Option<String>,
}

/// `usage` of a response, `message_start` or `message_delta`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default)]
pub(crate) struct WireUsage {
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
    pub(crate) cache_read_input_tokens: Option<u64>,
    pub(crate) cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Fields reported in `later` replace ours.
    pub(crate) fn overlay(&mut self, later: Self) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    /// Normalised usage: Anthropic's `input_tokens` excludes cache reads and writes, ours
    /// includes them. `None` when nothing was reported.
    pub(crate) fn to_usage(self) -> Option<Usage> {
        let parts = [
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        ];
        let input = parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, &b| a.saturating_add(b))
        });
        let usage = Usage {
            input_tokens: input,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cache_read_input_tokens,
            cache_write_input_tokens: self.cache_creation_input_tokens,
            ..Usage::default()
        };
        (!usage.is_empty()).then_some(usage)
    }
}

/// The vendor error object, `{"type":…,"message":…}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WireError {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    error: Option<WireError>,
    message: Option<String>,
}

impl WireError {
    /// The typed error for this vendor error. `status` is the HTTP status, or `None` for an
    /// error event inside a stream (the status is then derived from the error type).
    pub(crate) fn to_error(
        &self,
        status: Option<u16>,
        retry_after: Option<std::time::Duration>,
    ) -> ProviderError {
        let kind = self.kind.as_deref().unwrap_or("");
        let status = status.unwrap_or(match kind {
            "invalid_request_error" => 400,
            "authentication_error" => 401,
            "billing_error" => 402,
            "permission_error" => 403,
            "not_found_error" => 404,
            "request_too_large" => 413,
            "rate_limit_error" => 429,
            "timeout_error" => 504,
            "overloaded_error" => 529,
            _ => 500,
        });
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| format!("{kind} (HTTP status {status})"));
        let lower = message.to_ascii_lowercase();
        match kind {
            "authentication_error" | "permission_error" => ProviderError::Auth { message },
            "rate_limit_error" => ProviderError::RateLimited {
                retry_after,
                message,
            },
            "overloaded_error" => ProviderError::Overloaded {
                status: if status >= 500 { status } else { 529 },
                retry_after,
                message,
            },
            // "Your credit balance is too low to access the Anthropic API" comes as an
            // invalid request (400); the billing type as 402.
            "billing_error" => ProviderError::QuotaExhausted { message },
            "invalid_request_error" if lower.contains("credit balance") => {
                ProviderError::QuotaExhausted { message }
            }
            "invalid_request_error" if lower.contains("prompt is too long") => {
                ProviderError::ContextTooLong { message }
            }
            "invalid_request_error" => ProviderError::BadRequest {
                status: if (400..500).contains(&status) {
                    status
                } else {
                    400
                },
                message,
            },
            "api_error" => ProviderError::Server {
                status: if status >= 500 { status } else { 500 },
                message,
            },
            _ => ProviderError::from_status(status, message, retry_after),
        }
    }
}

/// Maps an error response body to a typed error.
pub(crate) fn error_from_body(
    status: u16,
    body: &str,
    retry_after: Option<std::time::Duration>,
) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let error = parsed.error.unwrap_or_else(|| WireError {
        kind: None,
        message: parsed.message.or_else(|| {
            let trimmed = body.trim();
            (!trimmed.is_empty()).then(|| truncate(trimmed, 500))
        }),
    });
    error.to_error(Some(status), retry_after)
}

/// Folds the content blocks of a non-streaming response into `acc` through the same events
/// a stream produces, so both paths build the same message (tool-use-only answers included).
pub(crate) fn push_blocks(blocks: Vec<Block>, acc: &mut StreamAccumulator) {
    let mut calls = 0u32;
    for block in blocks {
        match block.kind.as_str() {
            "text" => {
                if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                    acc.push(&StreamEvent::TextDelta { text });
                }
            }
            "thinking" => {
                if let Some(text) = block.thinking.filter(|t| !t.is_empty()) {
                    acc.push(&StreamEvent::ReasoningDelta { text });
                }
                let mut data = ProviderData::new();
                if let Some(signature) = block.signature.filter(|s| !s.is_empty()) {
                    data.insert(SIGNATURE_KEY, signature);
                }
                // Closes the block even without a signature, so the next one stays separate.
                acc.push(&StreamEvent::ReasoningData {
                    provider_data: data,
                    redacted: false,
                });
            }
            "redacted_thinking" => {
                acc.push(&StreamEvent::ReasoningData {
                    provider_data: ProviderData::new()
                        .with(REDACTED_KEY, block.data.unwrap_or_default()),
                    redacted: true,
                });
            }
            "tool_use" => {
                let index = calls;
                calls += 1;
                acc.push(&StreamEvent::ToolCallStart {
                    index,
                    id: block.id.unwrap_or_else(|| format!("toolu_{index}")),
                    name: block.name.unwrap_or_default(),
                    provider_data: ProviderData::new(),
                });
                let arguments = match block.input {
                    None | Some(Value::Null) => String::new(),
                    Some(input) => input.to_string(),
                };
                if !arguments.is_empty() {
                    acc.push(&StreamEvent::ToolCallDelta { index, arguments });
                }
            }
            // Server tools, citations and future block types carry nothing we map yet.
            _ => {}
        }
    }
}
