//! Google Gemini through the Gemini API (`generateContent`).
//!
//! [`GeminiProvider`] speaks `POST {base}/models/{model}:generateContent` and, streaming,
//! `…:streamGenerateContent?alt=sse`, with the key in the `x-goog-api-key` header (never in
//! the URL, so it cannot leak into logs). The key is never read from the environment here:
//! the caller passes it (for example from `GEMINI_API_KEY`; the [`config`](crate::config)
//! module does that).
//!
//! Mapping, in short:
//!
//! - the system prompt (and any system messages) becomes `systemInstruction`; assistant
//!   turns become `model` turns;
//! - tool calls become `functionCall` parts and tool results `functionResponse` parts,
//!   grouped into one user turn and ordered like the calls they answer. Gemini has no call
//!   ids: the provider generates one per call (`call_{random}_{n}`, unique per answer), and
//!   pairs results with calls by position and name; a result's name comes from the result
//!   or, when empty, from its call. Ids Gemini does send are kept and sent back;
//! - tool schemas go through [`sanitize_schema`] (Gemini's schema subset), or are sent as
//!   `parametersJsonSchema` with [`SchemaMode::JsonSchema`]; a tool without properties is
//!   declared without parameters; a tool whose schema cannot be sanitised (a `$ref` that
//!   does not resolve or recurses, or one that expands past [`MAX_NODES`]) is left out of
//!   the request with a warning, so one bad tool never fails every turn;
//! - `tool_choice`: auto (the default, not sent), none → `NONE`, required → `ANY`, a named
//!   tool → `ANY` with `allowedFunctionNames`. Gemini has no switch for parallel calls, so
//!   `parallel_tool_calls` is not sent;
//! - media: bytes and `data:` URLs as `inlineData`, other URLs (`https://`, `gs://`, File
//!   API URIs) as `fileData` with the media type given or guessed from the extension;
//!   images, audio, video and documents alike;
//! - JSON object output sets `responseMimeType: application/json`; a JSON schema adds the
//!   sanitised `responseSchema` (or `responseJsonSchema`);
//! - temperature, `top_p`, max tokens, seed and stop sequences go into `generationConfig`,
//!   a reasoning budget into `thinkingConfig.thinkingBudget` (or an effort into
//!   `thinkingLevel`), `include_summary` into `includeThoughts`;
//! - thought parts stream as reasoning; thought signatures are kept on the call or the
//!   reasoning part they came with and sent back verbatim on later turns (Gemini 3 rejects
//!   function-calling turns without them);
//! - `STOP` on an answer with function calls is reported as
//!   [`FinishReason::ToolCalls`](promptkit_core::FinishReason::ToolCalls); a blocked
//!   prompt (`promptFeedback.blockReason`) or an answer blocked before any output
//!   (`SAFETY`, `PROHIBITED_CONTENT`, …) is [`ProviderError::ContentFiltered`].
//!
//! Usage is normalised: `input_tokens` is `promptTokenCount` (cached tokens included),
//! `output_tokens` adds `thoughtsTokenCount` to `candidatesTokenCount`, and
//! `reasoning_tokens` is the thoughts count.

mod pricing;
mod schema;
mod stream;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use promptkit_core::{
    Capabilities, EventStream, PricingTable, ProviderError, ProviderRequest, ProviderResponse,
    StreamAccumulator,
};
use reqwest::header::HeaderMap;

pub use pricing::gemini_pricing;
pub use schema::{MAX_DEPTH, MAX_NODES, SchemaError, sanitize_schema};
pub use stream::GeminiStreamDecoder;

use crate::http::{
    HttpConfig, Transport, encode_json, header_map, parse_url, retry_after, truncate,
};
use crate::vendor::{config_builders, http_provider};
use stream::ChunkDecoder;
use wire::{GenerateResponse, build_body, error_from_body};

/// The public Gemini API base URL (calls go to `{base}/models/{model}:generateContent`).
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// How JSON schemas (tool parameters, response schemas) are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemaMode {
    /// Rewritten into Gemini's OpenAPI-style subset by [`sanitize_schema`] and sent as
    /// `parameters` / `responseSchema`. Works with every model.
    #[default]
    Sanitized,
    /// Sent as JSON Schema in `parametersJsonSchema` / `responseJsonSchema` (references,
    /// `additionalProperties` and the like kept), which newer models (2.5 and later) take.
    JsonSchema,
}

/// Configuration of a [`GeminiProvider`].
///
/// ```
/// use promptkit_providers::gemini::GeminiConfig;
///
/// let config = GeminiConfig::new("gemini-2.5-flash", "test-key")
///     .with_base_url("http://127.0.0.1:8080/v1beta");
/// assert_eq!(
///     config.url("gemini-2.5-flash", true),
///     "http://127.0.0.1:8080/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
/// );
/// ```
#[derive(Clone)]
pub struct GeminiConfig {
    id: String,
    model: String,
    api_key: Option<String>,
    base_url: String,
    headers: Vec<(String, String)>,
    http: HttpConfig,
    pricing: PricingTable,
    capabilities: Capabilities,
    schema_mode: SchemaMode,
}

impl fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &crate::http::redact_url(&self.base_url))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("http", &self.http)
            .field("priced_models", &self.pricing.len())
            .field("schema_mode", &self.schema_mode)
            .finish_non_exhaustive()
    }
}

impl GeminiConfig {
    /// The Gemini API with `model` and `api_key`, the built-in price table, id `"gemini"`.
    pub fn new(model: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            id: "gemini".to_owned(),
            model: model.into(),
            api_key: Some(api_key.into()).filter(|k| !k.is_empty()),
            base_url: GEMINI_BASE_URL.to_owned(),
            headers: Vec::new(),
            http: HttpConfig::default(),
            pricing: gemini_pricing(),
            capabilities: Capabilities::all(),
            schema_mode: SchemaMode::default(),
        }
    }

    /// Sets the base URL: the part before `/models/…`, for example
    /// `https://generativelanguage.googleapis.com/v1beta`.
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Adds a header sent on every call. A header named `x-goog-api-key` replaces the
    /// configured key. Names and values are validated when the provider is built.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets how JSON schemas are sent (default [`SchemaMode::Sanitized`]).
    #[must_use]
    pub fn with_schema_mode(mut self, mode: SchemaMode) -> Self {
        self.schema_mode = mode;
        self
    }

    /// The URL of a call to `model` (a `models/` prefix is accepted).
    pub fn url(&self, model: &str, streaming: bool) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        if streaming {
            format!(
                "{}/models/{model}:streamGenerateContent?alt=sse",
                self.base_url
            )
        } else {
            format!("{}/models/{model}:generateContent", self.base_url)
        }
    }
}

struct Inner {
    config: GeminiConfig,
    // Authentication and custom headers, validated once.
    headers: HeaderMap,
    transport: Transport,
}

/// A Gemini API provider.
///
/// Cheap to clone: clones share one connection pool and one concurrency limit.
#[derive(Clone)]
pub struct GeminiProvider {
    inner: Arc<Inner>,
}

impl GeminiProvider {
    /// A provider that uses `client` (share one client between providers to share its
    /// connection pool). The client's own timeouts apply in addition to the configured ones.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Config`] when the URL or a header is invalid.
    pub fn with_client(
        config: GeminiConfig,
        client: reqwest::Client,
    ) -> Result<Self, ProviderError> {
        parse_url(&config.url(&config.model, false))?;
        let headers = header_map(
            &[],
            config.api_key.clone().map(|key| ("x-goog-api-key", key)),
            &config.headers,
        )?;
        let transport = Transport::new(client, config.http.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                headers,
                transport,
            }),
        })
    }

    fn system(&self) -> &str {
        "gemini"
    }

    fn call(
        &self,
        request: &ProviderRequest,
        model: &str,
        streaming: bool,
    ) -> Result<(reqwest::Url, Bytes), ProviderError> {
        // Parsed once per call (the model is part of the path); retries reuse it.
        let url = parse_url(&self.inner.config.url(model, streaming))?;
        let body = encode_json(&build_body(request, self.inner.config.schema_mode)?)?;
        Ok((url, body))
    }

    async fn run_predict(
        &self,
        request: &ProviderRequest,
        model: &str,
    ) -> Result<ProviderResponse, ProviderError> {
        let started = Instant::now();
        let (url, body) = self.call(request, model, false)?;
        let inner = &self.inner;
        let build = || {
            inner
                .transport
                .post(url.clone(), &inner.headers, &body, false)
        };
        let bytes = inner.transport.fetch(&build, map_error).await?;
        let raw = || truncate(&String::from_utf8_lossy(&bytes), 2000);
        let parsed: GenerateResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode {
                message: format!("invalid generateContent response: {e}"),
                raw: raw(),
            })?;
        if parsed.candidates.is_empty()
            && parsed.error.is_none()
            && parsed
                .prompt_feedback
                .as_ref()
                .is_none_or(|f| f.block_reason.is_none())
        {
            return Err(ProviderError::Decode {
                message: "the response has no candidates and no block reason".to_owned(),
                raw: raw(),
            });
        }
        // The same events a stream produces, folded the same way.
        let mut decoder = ChunkDecoder::new(tracing::Span::current());
        let mut events = std::collections::VecDeque::new();
        decoder.apply(parsed, &mut events)?;
        decoder.close(&mut events)?;
        let served = decoder.model.take();
        let mut acc = StreamAccumulator::new();
        for event in &events {
            acc.push(event);
        }
        Ok(crate::http::complete_response(
            self,
            acc.finish(),
            model,
            served,
            started,
        ))
    }

    async fn open_stream(
        &self,
        request: &ProviderRequest,
        model: &str,
        span: tracing::Span,
    ) -> Result<EventStream, ProviderError> {
        let (url, body) = self.call(request, model, true)?;
        let inner = &self.inner;
        let build = || {
            inner
                .transport
                .post(url.clone(), &inner.headers, &body, true)
        };
        inner
            .transport
            .open_stream(&build, map_error, || ChunkDecoder::new(span))
            .await
    }
}

fn map_error(status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
    error_from_body(status, body, retry_after(headers))
}

config_builders!(GeminiConfig);
http_provider!(GeminiProvider(GeminiConfig));

#[cfg(test)]
mod tests;
