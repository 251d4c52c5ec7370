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
    BoxFuture, Capabilities, EventStream, PricingTable, Provider, ProviderError, ProviderRequest,
    ProviderResponse, StreamAccumulator, StreamEvent,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tracing::Instrument as _;

pub use pricing::anthropic_pricing;
pub use stream::MessagesStreamDecoder;

use crate::http::{HttpConfig, Transport, retry_after, sse_stream};
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
            .field("url", &self.url())
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

    /// Sets the instance id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the API key (`None` sends no `x-api-key`, for gateways that authenticate
    /// otherwise).
    #[must_use]
    pub fn with_api_key(mut self, api_key: Option<String>) -> Self {
        self.api_key = api_key.filter(|k| !k.is_empty());
        self
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

    /// Sets the transport settings (timeouts, retries, concurrency).
    #[must_use]
    pub fn with_http(mut self, http: HttpConfig) -> Self {
        self.http = http;
        self
    }

    /// Sets the `max_tokens` sent when a request sets none.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens.max(1);
        self
    }

    /// Entries of `overrides` replace the prices of the same models; other models keep the
    /// built-in prices.
    #[must_use]
    pub fn with_pricing_overrides(mut self, overrides: &PricingTable) -> Self {
        self.pricing = self.pricing.merged(overrides);
        self
    }

    /// Replaces the whole price table (an empty table: cost is always unknown).
    #[must_use]
    pub fn with_pricing(mut self, pricing: PricingTable) -> Self {
        self.pricing = pricing;
        self
    }

    /// Sets what the model can do.
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The Messages URL calls go to.
    pub fn url(&self) -> String {
        format!("{}/v1/messages", self.base_url)
    }

    /// The transport settings.
    pub fn http(&self) -> &HttpConfig {
        &self.http
    }

    /// The `max_tokens` sent when a request sets none.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }
}

struct Inner {
    config: AnthropicConfig,
    url: String,
    // Authentication, version and custom headers, validated once.
    headers: HeaderMap,
    transport: Transport,
}

fn build_headers(config: &AnthropicConfig) -> Result<HeaderMap, ProviderError> {
    let invalid = |what: &str| ProviderError::Config {
        message: format!("invalid {what}"),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(ANTHROPIC_VERSION),
    );
    if let Some(key) = &config.api_key {
        let mut value =
            HeaderValue::from_str(key).map_err(|_| invalid("API key (not a header value)"))?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-api-key"), value);
    }
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&format!("header name {name:?}")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| invalid(&format!("value of header {name}")))?;
        if matches!(name.as_str(), "x-api-key" | "authorization") {
            value.set_sensitive(true);
        }
        headers.insert(name, value);
    }
    Ok(headers)
}

/// An Anthropic Messages API provider.
///
/// Cheap to clone: clones share one connection pool and one concurrency limit.
#[derive(Clone)]
pub struct AnthropicProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AnthropicProvider")
            .field(&self.inner.config)
            .finish()
    }
}

impl AnthropicProvider {
    /// A provider with its own connection pool.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Config`] when the HTTP client cannot be built, the URL or a header
    /// is invalid.
    pub fn new(config: AnthropicConfig) -> Result<Self, ProviderError> {
        let client = config.http.build_client()?;
        Self::with_client(config, client)
    }

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
        let url = config.url();
        reqwest::Url::parse(&url).map_err(|e| ProviderError::Config {
            message: format!("invalid URL {url}: {e}"),
        })?;
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

    /// The configuration.
    pub fn config(&self) -> &AnthropicConfig {
        &self.inner.config
    }

    fn span(&self, model: &str, streaming: bool) -> tracing::Span {
        tracing::info_span!(
            "chat",
            otel.name = %format_args!("chat {model}"),
            gen_ai.system = "anthropic",
            gen_ai.operation.name = "chat",
            gen_ai.request.model = model,
            promptkit.provider.id = self.inner.config.id.as_str(),
            streaming,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
        )
    }

    fn request_builder(&self, body: &Bytes, streaming: bool) -> reqwest::RequestBuilder {
        let mut builder = self
            .inner
            .transport
            .client
            .post(&self.inner.url)
            .header(CONTENT_TYPE, "application/json");
        if streaming {
            builder = builder.header(ACCEPT, "text/event-stream");
        }
        builder
            .headers(self.inner.headers.clone())
            .body(body.clone())
    }

    fn encode(
        &self,
        request: &ProviderRequest,
        model: &str,
        stream: bool,
    ) -> Result<Bytes, ProviderError> {
        let body = build_body(request, model, self.inner.config.max_tokens, stream)?;
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|e| ProviderError::Decode {
                message: format!("cannot encode the request: {e}"),
                raw: String::new(),
            })
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
                raw: wire::truncate(&String::from_utf8_lossy(&bytes), 2000),
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
        let transport = &self.inner.transport;
        let build = || self.request_builder(&body, true);
        let (opened, permit) = transport.open(&build, map_error).await?;
        Ok(sse_stream(
            opened,
            EventDecoder::new(span),
            transport.config.idle_timeout,
            permit,
        ))
    }
}

fn map_error(status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
    error_from_body(status, body, retry_after(headers))
}

impl Provider for AnthropicProvider {
    fn id(&self) -> &str {
        &self.inner.config.id
    }

    fn model(&self) -> &str {
        &self.inner.config.model
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.config.capabilities
    }

    fn pricing(&self) -> Option<&PricingTable> {
        Some(&self.inner.config.pricing)
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        let model = request.model.as_deref().unwrap_or(&self.inner.config.model);
        let span = self.span(model, false);
        Box::pin(self.run_predict(request, model).instrument(span))
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        let model = request.model.as_deref().unwrap_or(&self.inner.config.model);
        let span = self.span(model, true);
        Box::pin(
            self.open_stream(request, model, span.clone())
                .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests;
