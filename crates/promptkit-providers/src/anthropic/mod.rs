//! Anthropic Claude through the Messages API.
//!
//! [`AnthropicProvider`] speaks `POST {base}/v1/messages` with the `x-api-key` and
//! `anthropic-version: 2023-06-01` headers, streaming (SSE) and not. The API key is never
//! read from the environment: the caller passes it (for example from `ANTHROPIC_API_KEY`).
//!
//! Mapping, in short:
//!
//! - the system prompt (and any system messages) becomes the top-level `system`;
//! - consecutive tool results are grouped into one user message of `tool_result` blocks
//!   (roles must alternate);
//! - assistant reasoning carrying `anthropic.signature` (or `anthropic.redacted_data`) in its
//!   `provider_data` is replayed as `thinking` (or `redacted_thinking`) blocks, in order,
//!   before the `tool_use` blocks, as extended thinking with tools requires;
//! - `max_tokens` defaults to [`DEFAULT_MAX_TOKENS`] (the API requires it) and is raised
//!   above a reasoning budget;
//! - a reasoning budget becomes `thinking: {type: enabled, budget_tokens}` (an effort level
//!   alone is not mapped); temperature and `top_p` are sent as given, although the API
//!   rejects most values of them together with thinking;
//! - images and PDFs are sent as URL or base64 sources, `text/*` documents as text sources;
//!   audio and video are [`ProviderError::Unsupported`];
//! - a JSON schema response format is sent as `output_config.format`; a plain JSON object
//!   format is [`ProviderError::Unsupported`]. `seed` is not sent (the API has none).
//!
//! Usage is normalised: `input_tokens` includes cache reads and writes, which Anthropic
//! reports separately.

mod pricing;
mod stream;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use promptkit_core::{
    Capabilities, EventStream, PricingTable, ProviderError, ProviderRequest, ProviderResponse,
    StreamAccumulator, StreamEvent,
};
use reqwest::header::HeaderMap;

pub use pricing::anthropic_pricing;
pub use stream::MessagesStreamDecoder;

use crate::http::{
    HttpConfig, Transport, encode_json, header_map, parse_url, retry_after, truncate,
};
use crate::vendor::{config_builders, http_provider};
use stream::EventDecoder;
use wire::{MessagesResponse, build_body, error_from_body, push_blocks};

/// The public Anthropic API base URL (calls go to `{base}/v1/messages`).
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The `anthropic-version` header sent on every call.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` sent when the request sets none (the API requires a value).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Configuration of an [`AnthropicProvider`].
///
/// ```
/// use promptkit_providers::anthropic::AnthropicConfig;
///
/// let config = AnthropicConfig::new("claude-sonnet-4-5", "sk-ant-test")
///     .with_base_url("http://127.0.0.1:8080")
///     .with_max_tokens(1024);
/// assert_eq!(config.url(), "http://127.0.0.1:8080/v1/messages");
/// ```
#[derive(Clone)]
pub struct AnthropicConfig {
    id: String,
    model: String,
    api_key: Option<String>,
    base_url: String,
    headers: Vec<(String, String)>,
    http: HttpConfig,
    pricing: PricingTable,
    capabilities: Capabilities,
    max_tokens: u32,
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("url", &crate::http::redact_url(&self.url()))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("http", &self.http)
            .field("priced_models", &self.pricing.len())
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl AnthropicConfig {
    /// The Anthropic API with `model` and `api_key`, the built-in price table, id
    /// `"anthropic"`, `max_tokens` [`DEFAULT_MAX_TOKENS`].
    pub fn new(model: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            id: "anthropic".to_owned(),
            model: model.into(),
            api_key: Some(api_key.into()).filter(|k| !k.is_empty()),
            base_url: ANTHROPIC_BASE_URL.to_owned(),
            headers: Vec::new(),
            http: HttpConfig::default(),
            pricing: anthropic_pricing(),
            capabilities: Capabilities {
                audio: false,
                video: false,
                json_mode: false,
                ..Capabilities::all()
            },
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }

    /// Sets the base URL: the part before `/v1/messages`, for example
    /// `https://api.anthropic.com`.
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Adds a header sent on every call (for example `anthropic-beta`). A header named
    /// `x-api-key` or `anthropic-version` replaces the configured one. Names and values are
    /// validated when the provider is built.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the `max_tokens` sent when a request sets none.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens.max(1);
        self
    }

    /// The Messages URL calls go to.
    pub fn url(&self) -> String {
        format!("{}/v1/messages", self.base_url)
    }

    /// The `max_tokens` sent when a request sets none.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }
}

struct Inner {
    config: AnthropicConfig,
    url: reqwest::Url,
    // Authentication, version and custom headers, validated once.
    headers: HeaderMap,
    transport: Transport,
}

fn build_headers(config: &AnthropicConfig) -> Result<HeaderMap, ProviderError> {
    header_map(
        &[("anthropic-version", ANTHROPIC_VERSION)],
        config.api_key.clone().map(|key| ("x-api-key", key)),
        &config.headers,
    )
}

/// An Anthropic Messages API provider.
///
/// Cheap to clone: clones share one connection pool and one concurrency limit.
#[derive(Clone)]
pub struct AnthropicProvider {
    inner: Arc<Inner>,
}

impl AnthropicProvider {
    /// A provider that uses `client` (share one client between providers to share its
    /// connection pool). The client's own timeouts apply in addition to the configured ones.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Config`] when the URL or a header is invalid.
    pub fn with_client(
        config: AnthropicConfig,
        client: reqwest::Client,
    ) -> Result<Self, ProviderError> {
        // Parsed once: every request reuses it.
        let url = parse_url(&config.url())?;
        let headers = build_headers(&config)?;
        let transport = Transport::new(client, config.http.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                url,
                headers,
                transport,
            }),
        })
    }

    fn system(&self) -> &str {
        "anthropic"
    }

    fn request_builder(&self, body: &Bytes, streaming: bool) -> reqwest::RequestBuilder {
        let inner = &self.inner;
        inner
            .transport
            .post(inner.url.clone(), &inner.headers, body, streaming)
    }

    fn encode(
        &self,
        request: &ProviderRequest,
        model: &str,
        stream: bool,
    ) -> Result<Bytes, ProviderError> {
        encode_json(&build_body(
            request,
            model,
            self.inner.config.max_tokens,
            stream,
        )?)
    }

    async fn run_predict(
        &self,
        request: &ProviderRequest,
        model: &str,
    ) -> Result<ProviderResponse, ProviderError> {
        let started = Instant::now();
        let body = self.encode(request, model, false)?;
        let transport = &self.inner.transport;
        let build = || self.request_builder(&body, false);
        let bytes = transport.fetch(&build, map_error).await?;
        let parsed: MessagesResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode {
                message: format!("invalid Messages response: {e}"),
                raw: truncate(&String::from_utf8_lossy(&bytes), 2000),
            })?;
        if let Some(error) = parsed.error {
            return Err(error.to_error(None, None));
        }
        if parsed.kind.as_deref() == Some("error") {
            return Err(ProviderError::Server {
                status: 500,
                message: "the response is an error without details".to_owned(),
            });
        }
        // The same events a stream produces, folded the same way: a tool-use-only answer
        // is a normal answer (the Go original failed on it).
        let mut acc = StreamAccumulator::new();
        push_blocks(parsed.content.unwrap_or_default(), &mut acc);
        if let Some(usage) = parsed.usage.and_then(wire::WireUsage::to_usage) {
            acc.push(&StreamEvent::Usage { usage });
        }
        if let Some(reason) = parsed.stop_reason.as_deref().filter(|r| !r.is_empty()) {
            acc.push(&StreamEvent::Finish {
                reason: promptkit_core::FinishReason::from_anthropic(reason),
            });
        }
        let message = acc.finish();
        Ok(crate::http::complete_response(
            self,
            message,
            model,
            parsed.model,
            started,
        ))
    }

    async fn open_stream(
        &self,
        request: &ProviderRequest,
        model: &str,
        span: tracing::Span,
    ) -> Result<EventStream, ProviderError> {
        let body = self.encode(request, model, true)?;
        let build = || self.request_builder(&body, true);
        self.inner
            .transport
            .open_stream(&build, map_error, || EventDecoder::new(span))
            .await
    }
}

fn map_error(status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
    error_from_body(status, body, retry_after(headers))
}

config_builders!(AnthropicConfig);
http_provider!(AnthropicProvider(AnthropicConfig));

#[cfg(test)]
mod tests;
