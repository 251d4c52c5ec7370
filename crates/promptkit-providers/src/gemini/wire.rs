//! The `generateContent` wire format: request building, lenient response types, error
//! mapping.

use std::time::Duration;

use promptkit_core::{
    ContentPart, Media, MediaSource, Message, ProviderError, ProviderRequest, ReasoningEffort,
    ResponseFormat, Role, ToolCall, ToolChoice, ToolResult, Usage, encode_base64,
    mime_from_extension,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::SchemaMode;
use super::schema::sanitize_schema;
use crate::http::{delay_from_secs, null_as_default, object_arguments, tool_result_of, truncate};

/// `provider_data` key of a thought signature (on a tool call or a reasoning part).
pub(crate) const SIGNATURE_KEY: &str = "gemini.thought_signature";
/// `provider_data` key of a function call id Gemini sent (it usually sends none).
pub(crate) const CALL_ID_KEY: &str = "gemini.call_id";

/// Builds the JSON body of a call (the model is in the URL, not the body).
pub(crate) fn build_body(
    request: &ProviderRequest,
    mode: SchemaMode,
) -> Result<Value, ProviderError> {
    let mut body = Map::new();
    let mut system: Vec<String> = request.system.iter().cloned().collect();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Results of the calls of the last model turn, waiting to be sent as one user turn.
    let mut results: Vec<&ToolResult> = Vec::new();
    let mut last_calls: &[ToolCall] = &[];
    for (index, message) in request.messages.iter().enumerate() {
        let (role, parts) = match message.role {
            Role::System => {
                system.push(message.text());
                continue;
            }
            Role::Tool => {
                let result = tool_result_of(message, index)?;
                results.push(result);
                continue;
            }
            Role::User => {
                let mut parts = function_responses(&mut results, last_calls, index)?;
                for part in &message.content {
                    if let Some(part) = user_part(part, index)? {
                        parts.push(part);
                    }
                }
                ("user", parts)
            }
            Role::Assistant => {
                let pending = function_responses(&mut results, last_calls, index)?;
                push_content(&mut contents, "user", pending);
                last_calls = &message.tool_calls;
                ("model", model_parts(message, index))
            }
        };
        push_content(&mut contents, role, parts);
    }
    let pending = function_responses(&mut results, last_calls, request.messages.len())?;
    push_content(&mut contents, "user", pending);
    body.insert(
        "contents".into(),
        contents
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect(),
    );
    system.retain(|s| !s.is_empty());
    if !system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }

    if !request.tools.is_empty() {
        let mut declarations = Vec::with_capacity(request.tools.len());
        for tool in &request.tools {
            let mut declaration = Map::new();
            declaration.insert("name".into(), tool.name.clone().into());
            if !tool.description.is_empty() {
                declaration.insert("description".into(), tool.description.clone().into());
            }
            match tool_parameters(&tool.input_schema, mode) {
                Ok(Some((key, parameters))) => {
                    declaration.insert(key.into(), parameters);
                }
                Ok(None) => {}
                Err(e) => {
                    // Only this tool is affected: the model cannot call it this turn.
                    tracing::warn!(
                        tool = %tool.name,
                        error = %e,
                        "leaving out a tool whose schema Gemini cannot take"
                    );
                    continue;
                }
            }
            declarations.push(Value::Object(declaration));
        }
        insert_tools(&mut body, declarations, &request.tool_choice);
    }

    let generation = generation_config(request, mode)?;
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    // Pass-through last (`safetySettings`, `cachedContent`, …): keys set above win.
    for (key, value) in &request.extra {
        body.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Ok(Value::Object(body))
}

/// Declares the tools and the tool choice; nothing when no tool is left to declare.
fn insert_tools(body: &mut Map<String, Value>, declarations: Vec<Value>, choice: &ToolChoice) {
    if declarations.is_empty() {
        return;
    }
    let mut tools = Map::new();
    tools.insert("functionDeclarations".into(), Value::Array(declarations));
    body.insert("tools".into(), Value::Array(vec![Value::Object(tools)]));
    let config = match choice {
        ToolChoice::Auto => None,
        ToolChoice::None => Some(json!({"mode": "NONE"})),
        ToolChoice::Required => Some(json!({"mode": "ANY"})),
        ToolChoice::Tool(name) => Some(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
    };
    if let Some(config) = config {
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
}

/// Appends a turn, merging it into the previous one when the role is the same (a user
/// message right after tool results joins their turn).
fn push_content(
    contents: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    parts: Vec<Value>,
) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => contents.push((role, parts)),
    }
}

fn schema_error(what: &str, error: &super::SchemaError) -> ProviderError {
    ProviderError::Unsupported {
        message: format!("{what}: {error}"),
    }
}

/// The `parameters` (or, natively, `parametersJsonSchema`) of a tool; `None` for a tool
/// without arguments (Gemini rejects an object schema with no properties).
fn tool_parameters(
    schema: &Value,
    mode: SchemaMode,
) -> Result<Option<(&'static str, Value)>, super::SchemaError> {
    let no_properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    let no_composition = ["anyOf", "oneOf", "allOf", "$ref"]
        .iter()
        .all(|k| schema.get(*k).is_none());
    if no_properties && no_composition {
        return Ok(None);
    }
    Ok(Some(match mode {
        SchemaMode::Sanitized => ("parameters", sanitize_schema(schema)?),
        SchemaMode::JsonSchema => ("parametersJsonSchema", native_schema(schema)),
    }))
}

/// A JSON Schema for the native `…JsonSchema` fields: sent as given, minus the
/// meta-keywords the API has no use for.
fn native_schema(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        for key in ["$schema", "$id", "$comment"] {
            map.remove(key);
        }
    }
    schema
}

fn generation_config(
    request: &ProviderRequest,
    mode: SchemaMode,
) -> Result<Map<String, Value>, ProviderError> {
    let mut config = Map::new();
    if let Some(t) = request.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        config.insert("topP".into(), json!(p));
    }
    if let Some(max) = request.max_tokens {
        config.insert("maxOutputTokens".into(), max.into());
    }
    if let Some(seed) = request.seed {
        config.insert("seed".into(), seed.into());
    }
    if !request.stop.is_empty() {
        config.insert("stopSequences".into(), json!(request.stop));
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { name, schema, .. }) => {
            config.insert("responseMimeType".into(), "application/json".into());
            match mode {
                SchemaMode::Sanitized => {
                    let sanitized = sanitize_schema(schema)
                        .map_err(|e| schema_error(&format!("response schema `{name}`"), &e))?;
                    config.insert("responseSchema".into(), sanitized);
                }
                SchemaMode::JsonSchema => {
                    config.insert("responseJsonSchema".into(), native_schema(schema));
                }
            }
        }
    }
    if let Some(reasoning) = request.reasoning {
        let mut thinking = Map::new();
        if let Some(budget) = reasoning.budget_tokens {
            thinking.insert("thinkingBudget".into(), budget.into());
        } else if let Some(effort) = reasoning.effort {
            // Gemini 3 takes a level; a budget and a level together are rejected.
            let level = match effort {
                ReasoningEffort::Minimal => "minimal",
                ReasoningEffort::Low => "low",
                ReasoningEffort::Medium => "medium",
                ReasoningEffort::High => "high",
            };
            thinking.insert("thinkingLevel".into(), level.into());
        }
        if reasoning.include_summary {
            thinking.insert("includeThoughts".into(), true.into());
        }
        if !thinking.is_empty() {
            config.insert("thinkingConfig".into(), Value::Object(thinking));
        }
    }
    Ok(config)
}

/// A user part: text, or media as `inlineData` (bytes, `data:` URLs) or `fileData` (other
/// URLs); `None` for parts with nothing to send.
fn user_part(part: &ContentPart, index: usize) -> Result<Option<Value>, ProviderError> {
    Ok(match part {
        ContentPart::Text { text, .. } if text.is_empty() => None,
        ContentPart::Text { text, .. } => Some(json!({"text": text})),
        ContentPart::Image(media) => Some(media_part(media, "image/png", index)?),
        ContentPart::Audio(media) => Some(media_part(media, "audio/wav", index)?),
        ContentPart::Video(media) => Some(media_part(media, "video/mp4", index)?),
        ContentPart::Document(media) => Some(media_part(media, "application/pdf", index)?),
        // Reasoning in a user message cannot be sent; later content kinds neither.
        _ => None,
    })
}

fn media_part(media: &Media, default_mime: &str, index: usize) -> Result<Value, ProviderError> {
    match &media.source {
        MediaSource::Data(bytes) => Ok(json!({"inlineData": {
            "mimeType": media.mime_type.as_deref().unwrap_or(default_mime),
            "data": encode_base64(bytes)}})),
        MediaSource::Url(url) => {
            if let Some(rest) = url.strip_prefix("data:")
                && let Some((mime, data)) = rest.split_once(";base64,")
            {
                let mime = media
                    .mime_type
                    .as_deref()
                    .or(Some(mime).filter(|m| !m.is_empty()))
                    .unwrap_or(default_mime);
                return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
            }
            // Gemini requires a media type with `fileData`; guess it from the extension.
            let guessed = url
                .split(['?', '#'])
                .next()
                .and_then(|path| path.rsplit_once('.'))
                .and_then(|(_, ext)| mime_from_extension(ext));
            let mime = media
                .mime_type
                .as_deref()
                .or(guessed)
                .unwrap_or(default_mime);
            Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}))
        }
        _ => Err(ProviderError::Unsupported {
            message: format!(
                "message {index}: file and storage media must be resolved to bytes or a URL \
                 before the call (use a media loader)"
            ),
        }),
    }
}

/// A model turn: text and signed reasoning in order, then one `functionCall` per call.
/// Thought signatures go back on the part they came with: a reasoning part that holds only
/// a signature (Gemini put it on a text part, or on a part of its own) is attached to the
/// part before it, or else to the next one.
fn model_parts(message: &Message, index: usize) -> Vec<Value> {
    fn push(parts: &mut Vec<Value>, mut part: Value, pending: &mut Option<&str>) {
        if part.get("thoughtSignature").is_none()
            && let Some(signature) = pending.take()
        {
            part["thoughtSignature"] = signature.into();
        }
        parts.push(part);
    }
    let mut parts: Vec<Value> = Vec::new();
    let mut pending_signature: Option<&str> = None;
    for part in &message.content {
        match part {
            ContentPart::Text {
                text,
                provider_data,
            } => {
                let signature = provider_data.get_str(SIGNATURE_KEY);
                if text.is_empty() && signature.is_none() {
                    continue;
                }
                let mut value = json!({"text": text});
                if let Some(signature) = signature {
                    value["thoughtSignature"] = signature.into();
                }
                push(&mut parts, value, &mut pending_signature);
            }
            ContentPart::Reasoning(reasoning) => {
                let Some(signature) = reasoning.provider_data.get_str(SIGNATURE_KEY) else {
                    // Thought summaries without a signature are not needed on later turns.
                    continue;
                };
                match reasoning.text.as_deref().filter(|t| !t.is_empty()) {
                    Some(text) => push(
                        &mut parts,
                        json!({"text": text, "thought": true, "thoughtSignature": signature}),
                        &mut pending_signature,
                    ),
                    None => match parts.last_mut() {
                        Some(last) if last.get("thoughtSignature").is_none() => {
                            last["thoughtSignature"] = signature.into();
                        }
                        _ => pending_signature = Some(signature),
                    },
                }
            }
            // Media in a model turn is not replayed.
            _ => {}
        }
    }
    for call in &message.tool_calls {
        let mut function = Map::new();
        if let Some(id) = call.provider_data.get_str(CALL_ID_KEY) {
            function.insert("id".into(), id.into());
        }
        function.insert("name".into(), call.name.clone().into());
        function.insert("args".into(), object_arguments(call, index));
        let mut value = json!({"functionCall": function});
        if let Some(signature) = call.provider_data.get_str(SIGNATURE_KEY) {
            value["thoughtSignature"] = signature.into();
        }
        push(&mut parts, value, &mut pending_signature);
    }
    if let Some(signature) = pending_signature {
        // Nothing followed the signature: it goes back on the last part.
        if let Some(last) = parts.last_mut() {
            last["thoughtSignature"] = signature.into();
        }
    }
    parts
}

/// Turns the pending tool results into `functionResponse` parts, in the order of the calls
/// of the model turn they answer (Gemini pairs calls and responses by name and position,
/// not by id), followed by any media the results carry.
fn function_responses(
    results: &mut Vec<&ToolResult>,
    calls: &[ToolCall],
    index: usize,
) -> Result<Vec<Value>, ProviderError> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let position = |r: &ToolResult| {
        calls
            .iter()
            .position(|c| c.id == r.call_id)
            .unwrap_or(usize::MAX)
    };
    // Stable: results answering no known call keep their order, after the others.
    results.sort_by_key(|r| position(r));
    let mut parts = Vec::with_capacity(results.len());
    let mut media = Vec::new();
    for result in results.drain(..) {
        let call = calls.iter().find(|c| c.id == result.call_id);
        let name = if result.name.is_empty() {
            call.map(|c| c.name.clone()).unwrap_or_default()
        } else {
            result.name.clone()
        };
        if name.is_empty() {
            return Err(ProviderError::BadRequest {
                status: 400,
                message: format!(
                    "the tool result for call {:?} (before message {index}) names no tool, \
                     which Gemini requires",
                    result.call_id
                ),
            });
        }
        let mut response = Map::new();
        if let Some(id) = call.and_then(|c| c.provider_data.get_str(CALL_ID_KEY)) {
            response.insert("id".into(), id.into());
        }
        response.insert("name".into(), name.into());
        response.insert("response".into(), response_object(result));
        parts.push(json!({"functionResponse": response}));
        for part in &result.content {
            if part.media().is_some()
                && let Some(part) = user_part(part, index)?
            {
                media.push(part);
            }
        }
    }
    parts.extend(media);
    Ok(parts)
}

/// The `response` object of a result: a JSON object result as it is, anything else under
/// `output`, a failure under `error` (the keys Gemini documents).
fn response_object(result: &ToolResult) -> Value {
    let text = result.text_content();
    if result.is_error {
        return json!({"error": text});
    }
    if let Some(structured @ Value::Object(_)) = &result.structured {
        return structured.clone();
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({"output": other}),
        Err(_) => json!({"output": text}),
    }
}

// ---- Responses (lenient: every field optional, unknown fields ignored) ----

/// A `GenerateContentResponse`: a whole answer, or one chunk of a stream.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct GenerateResponse {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) prompt_feedback: Option<PromptFeedback>,
    pub(crate) usage_metadata: Option<WireUsage>,
    pub(crate) model_version: Option<String>,
    pub(crate) error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Candidate {
    pub(crate) content: Option<Content>,
    pub(crate) finish_reason: Option<String>,
    pub(crate) finish_message: Option<String>,
    pub(crate) index: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Content {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Part {
    pub(crate) text: Option<String>,
    pub(crate) thought: Option<bool>,
    pub(crate) thought_signature: Option<String>,
    pub(crate) function_call: Option<FunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct FunctionCall {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    pub(crate) block_reason: Option<String>,
    pub(crate) block_reason_message: Option<String>,
}

/// `usageMetadata`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct WireUsage {
    pub(crate) prompt_token_count: Option<u64>,
    pub(crate) candidates_token_count: Option<u64>,
    pub(crate) cached_content_token_count: Option<u64>,
    pub(crate) thoughts_token_count: Option<u64>,
    pub(crate) tool_use_prompt_token_count: Option<u64>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) prompt_tokens_details: Vec<ModalityCount>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) candidates_tokens_details: Vec<ModalityCount>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ModalityCount {
    pub(crate) modality: Option<String>,
    pub(crate) token_count: Option<u64>,
}

fn audio_count(details: &[ModalityCount]) -> Option<u64> {
    details
        .iter()
        .filter(|d| d.modality.as_deref() == Some("AUDIO"))
        .filter_map(|d| d.token_count)
        .reduce(u64::saturating_add)
}

impl WireUsage {
    /// Normalised usage: Gemini's prompt count already includes cached tokens, but its
    /// candidates count excludes thoughts, which ours includes. `None` when nothing was
    /// reported.
    pub(crate) fn to_usage(&self) -> Option<Usage> {
        let input = match (self.prompt_token_count, self.tool_use_prompt_token_count) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        let output = match (self.candidates_token_count, self.thoughts_token_count) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        let usage = Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: self.cached_content_token_count,
            cache_write_input_tokens: None,
            reasoning_tokens: self.thoughts_token_count,
            audio_input_tokens: audio_count(&self.prompt_tokens_details),
            audio_output_tokens: audio_count(&self.candidates_tokens_details),
        };
        (!usage.is_empty()).then_some(usage)
    }
}

/// The vendor error object, `{"code","message","status","details"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WireError {
    pub(crate) code: Option<u16>,
    pub(crate) message: Option<String>,
    pub(crate) status: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) details: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    error: Option<WireError>,
}

impl WireError {
    /// The `retryDelay` of a `google.rpc.RetryInfo` detail (`"17s"`, `"0.5s"`), clamped to
    /// [`RetryPolicy::MAX_RETRY_AFTER`](crate::http::RetryPolicy::MAX_RETRY_AFTER).
    pub(crate) fn retry_delay(&self) -> Option<Duration> {
        self.details
            .iter()
            .filter(|d| {
                d.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
            })
            .filter_map(|d| d.get("retryDelay").and_then(Value::as_str))
            .find_map(parse_retry_delay)
    }

    /// Whether a `RESOURCE_EXHAUSTED` answer is a used-up quota rather than a rate limit:
    /// a violated per-day quota (`GenerateRequestsPerDayPerProjectPerModel`), or a quota
    /// whose limit is 0 (a model the project's tier does not include). Waiting a minute
    /// fixes neither.
    fn quota_exhausted(&self, message: &str) -> bool {
        let per_day = |text: &str| {
            let lower = text.to_ascii_lowercase();
            lower.contains("perday") || lower.contains("per_day")
        };
        let violated_daily = self
            .details
            .iter()
            .filter(|d| {
                d.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("google.rpc.QuotaFailure"))
            })
            .filter_map(|d| d.get("violations").and_then(Value::as_array))
            .flatten()
            .any(|v| {
                ["quotaId", "quotaMetric"]
                    .iter()
                    .filter_map(|k| v.get(*k).and_then(Value::as_str))
                    .any(per_day)
            });
        violated_daily || message.contains("limit: 0,") || message.ends_with("limit: 0")
    }

    /// The `reason` of a `google.rpc.ErrorInfo` detail (`"API_KEY_INVALID"`).
    fn reason(&self) -> Option<&str> {
        self.details
            .iter()
            .find_map(|d| d.get("reason").and_then(Value::as_str))
    }

    /// The typed error for this vendor error. `status` is the HTTP status, or `None` for an
    /// error inside a stream (then the error's own `code`).
    pub(crate) fn to_error(
        &self,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> ProviderError {
        let code = status.or(self.code).unwrap_or(500);
        let kind = self.status.as_deref().unwrap_or("");
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| format!("{kind} (HTTP status {code})"));
        let lower = message.to_ascii_lowercase();
        if matches!(
            self.reason(),
            Some("API_KEY_INVALID" | "API_KEY_SERVICE_BLOCKED")
        ) || lower.contains("api key not valid")
            || matches!(kind, "UNAUTHENTICATED" | "PERMISSION_DENIED")
        {
            return ProviderError::Auth { message };
        }
        if kind == "RESOURCE_EXHAUSTED" || code == 429 {
            if self.quota_exhausted(&message) {
                return ProviderError::QuotaExhausted { message };
            }
            return ProviderError::RateLimited {
                retry_after: retry_after.or_else(|| self.retry_delay()),
                message,
            };
        }
        if kind == "UNAVAILABLE" || code == 503 {
            return ProviderError::Overloaded {
                status: 503,
                retry_after: retry_after.or_else(|| self.retry_delay()),
                message,
            };
        }
        // "The input token count (1200000) exceeds the maximum number of tokens allowed
        // (1048576)."
        if lower.contains("exceeds the maximum number of tokens")
            || (lower.contains("token count") && lower.contains("exceed"))
        {
            return ProviderError::ContextTooLong { message };
        }
        match kind {
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" | "OUT_OF_RANGE" => {
                ProviderError::BadRequest {
                    status: if (400..500).contains(&code) {
                        code
                    } else {
                        400
                    },
                    message,
                }
            }
            "INTERNAL" | "UNKNOWN" | "DEADLINE_EXCEEDED" => ProviderError::Server {
                status: if code >= 500 { code } else { 500 },
                message,
            },
            _ => ProviderError::from_status(code, message, retry_after),
        }
    }
}

/// A `retryDelay` (`"17s"`, `"0.5s"`), clamped; `None` when it does not parse.
pub(crate) fn parse_retry_delay(delay: &str) -> Option<Duration> {
    let secs: f64 = delay.trim().strip_suffix('s')?.trim().parse().ok()?;
    delay_from_secs(secs)
}

/// The error object of an error body: `{"error":{…}}`, or that object in a one-element
/// array as the non-SSE stream sends it.
fn parse_error_body(body: &str) -> Option<WireError> {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .or_else(|| {
            serde_json::from_str::<Vec<ErrorBody>>(body)
                .ok()
                .and_then(|v| v.into_iter().next())
        })
        .and_then(|parsed| parsed.error)
}

/// Maps an error response body to a typed error.
pub(crate) fn error_from_body(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
) -> ProviderError {
    let error = parse_error_body(body).unwrap_or_else(|| WireError {
        message: {
            let trimmed = body.trim();
            (!trimmed.is_empty()).then(|| truncate(trimmed, 500))
        },
        ..WireError::default()
    });
    error.to_error(Some(status), retry_after)
}

/// The typed error of a whole Gemini error object written, unframed, into an event stream
/// (the stream's HTTP status is 200: the error's own `code` and `status` classify it).
/// `None` while `text` is not (yet) such an object.
pub(crate) fn error_in_text(text: &str) -> Option<ProviderError> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return None;
    }
    parse_error_body(trimmed).map(|error| error.to_error(None, None))
}
