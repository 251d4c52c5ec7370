//! OpenAI Chat Completions, Azure OpenAI and OpenAI-compatible servers.
//!
//! [`OpenAiProvider`] speaks `POST /chat/completions`, streaming (SSE with
//! `stream_options.include_usage`) and not. Three endpoint forms are configured through
//! [`OpenAiConfig`]:
//!
//! - [`OpenAiConfig::openai`]: `https://api.openai.com/v1` (or another base URL) with
//!   `Authorization: Bearer`;
//! - [`OpenAiConfig::azure`]: the deployment URL
//!   `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…` with the
//!   `api-key` header;
//! - `OpenAiConfig::compatible` (feature `openai-compatible`): any base URL (Ollama, vLLM,
//!   LM Studio), optional key, `max_tokens` instead of `max_completion_tokens`, no built-in
//!   prices.
//!
//! Decoding is lenient for every form: unknown finish reasons are kept verbatim, and
//! missing fields, `content: null` and absent usage never fail a response.

mod pricing;
mod stream;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use promptkit_core::{
    Capabilities, ContentPart, EventStream, Message, PricingTable, ProviderError, ProviderRequest,
    ProviderResponse, Reasoning, Role, ToolCall,
};
use reqwest::header::HeaderMap;

pub use pricing::openai_pricing;
pub use stream::ChatStreamDecoder;

use crate::http::{
    HttpConfig, Transport, encode_json, header_map, parse_url, retry_after, truncate,
};
use crate::vendor::{config_builders, http_provider};
use stream::ChunkDecoder;
use wire::{ChatResponse, Shape, body, content_text, error_from_body, finish_reason};

/// The public OpenAI API base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// The Azure OpenAI API version used when none is configured.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-12-01-preview";

#[derive(Clone, PartialEq, Eq)]
enum Endpoint {
    OpenAi {
        base_url: String,
    },
    Azure {
        endpoint: String,
        deployment: String,
        api_version: String,
    },
}

/// Configuration of an [`OpenAiProvider`].
///
/// ```
/// use promptkit_providers::openai::OpenAiConfig;
///
/// let config = OpenAiConfig::openai("gpt-4o-mini", "sk-test")
///     .with_id("primary")
///     .with_base_url("http://127.0.0.1:8080/v1");
/// assert_eq!(config.url(), "http://127.0.0.1:8080/v1/chat/completions");
/// ```
#[derive(Clone)]
pub struct OpenAiConfig {
    id: String,
    model: String,
    api_key: Option<String>,
    endpoint: Endpoint,
    headers: Vec<(String, String)>,
    http: HttpConfig,
    pricing: PricingTable,
    capabilities: Capabilities,
    shape_max_completion_tokens: bool,
    system: &'static str,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
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
            .finish_non_exhaustive()
    }
}

impl OpenAiConfig {
    /// The OpenAI API with `model` and `api_key`, the built-in price table, id `"openai"`.
    pub fn openai(model: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            id: "openai".to_owned(),
            model: model.into(),
            api_key: Some(api_key.into()),
            endpoint: Endpoint::OpenAi {
                base_url: OPENAI_BASE_URL.to_owned(),
            },
            headers: Vec::new(),
            http: HttpConfig::default(),
            pricing: openai_pricing(),
            capabilities: Capabilities::all(),
            shape_max_completion_tokens: true,
            system: "openai",
        }
    }

    /// An Azure OpenAI deployment: `{endpoint}/openai/deployments/{deployment}/chat/completions
    /// ?api-version={api_version}`, authenticated with the `api-key` header. Priced with the
    /// built-in table under `model` (the model the deployment serves).
    pub fn azure(
        endpoint: impl Into<String>,
        deployment: impl Into<String>,
        model: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Self {
        Self {
            id: "azure-openai".to_owned(),
            endpoint: Endpoint::Azure {
                endpoint: endpoint.into().trim_end_matches('/').to_owned(),
                deployment: deployment.into(),
                api_version: AZURE_DEFAULT_API_VERSION.to_owned(),
            },
            system: "azure.openai",
            ..Self::openai(model, api_key)
        }
    }

    /// An OpenAI-compatible server (Ollama, vLLM, LM Studio) at `base_url` (the part before
    /// `/chat/completions`, for example `http://localhost:11434/v1`). No key, no prices;
    /// `max_tokens` is sent instead of `max_completion_tokens`; a 120 s request timeout and
    /// first-event deadline.
    #[cfg(feature = "openai-compatible")]
    pub fn compatible(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        let mut config = Self::openai(model, String::new());
        config.id = "openai-compatible".to_owned();
        config.api_key = None;
        config.pricing = PricingTable::new();
        config.shape_max_completion_tokens = false;
        config.system = "openai_compatible";
        // A local server may load the model before it answers.
        config.http.request_timeout = std::time::Duration::from_secs(120);
        config.http.first_event_timeout = std::time::Duration::from_secs(120);
        config.with_base_url(base_url)
    }

    /// Sets the base URL (OpenAI and compatible forms) or the resource endpoint (Azure).
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into().trim_end_matches('/').to_owned();
        match &mut self.endpoint {
            Endpoint::OpenAi { base_url } => *base_url = url,
            Endpoint::Azure { endpoint, .. } => *endpoint = url,
        }
        self
    }

    /// Sets the Azure API version (ignored by the other forms).
    #[must_use]
    pub fn with_api_version(mut self, version: impl Into<String>) -> Self {
        if let Endpoint::Azure { api_version, .. } = &mut self.endpoint {
            *api_version = version.into();
        }
        self
    }

    /// Adds a header sent on every call (for example `OpenAI-Organization`). A header named
    /// `authorization` (or `api-key` for Azure) replaces the configured key, for example to
    /// send an Entra ID bearer token to Azure. Names and values are validated when the
    /// provider is built.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The chat completions URL calls go to.
    pub fn url(&self) -> String {
        match &self.endpoint {
            Endpoint::OpenAi { base_url } => format!("{base_url}/chat/completions"),
            Endpoint::Azure {
                endpoint,
                deployment,
                api_version,
            } => format!(
                "{endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}"
            ),
        }
    }
}

struct Inner {
    config: OpenAiConfig,
    url: reqwest::Url,
    // Authentication and custom headers, validated once.
    headers: HeaderMap,
    transport: Transport,
}

fn build_headers(config: &OpenAiConfig) -> Result<HeaderMap, ProviderError> {
    let key = config.api_key.clone().map(|key| match config.endpoint {
        Endpoint::Azure { .. } => ("api-key", key),
        Endpoint::OpenAi { .. } => ("authorization", format!("Bearer {key}")),
    });
    header_map(&[], key, &config.headers)
}

/// An OpenAI Chat Completions provider (also Azure OpenAI and compatible servers).
///
/// Cheap to clone: clones share one connection pool and one concurrency limit.
#[derive(Clone)]
pub struct OpenAiProvider {
    inner: Arc<Inner>,
}

impl OpenAiProvider {
    /// A provider that uses `client` (share one client between providers to share its
    /// connection pool). The client's own timeouts apply in addition to the configured ones.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Config`] when the URL is invalid.
    pub fn with_client(
        config: OpenAiConfig,
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

    fn shape(&self) -> Shape {
        let config = &self.inner.config;
        Shape {
            send_model: !matches!(config.endpoint, Endpoint::Azure { .. }),
            max_completion_tokens: config.shape_max_completion_tokens,
        }
    }

    fn system(&self) -> &str {
        self.inner.config.system
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
        encode_json(&body(request, model, self.shape(), stream)?)
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
        let parsed: ChatResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode {
                message: format!("invalid chat completion: {e}"),
                raw: truncate(&String::from_utf8_lossy(&bytes), 2000),
            })?;
        if let Some(error) = parsed.error {
            return Err(error.to_error(None, None));
        }
        let mut message = Message::new(Role::Assistant);
        let choice = parsed.choices.into_iter().next();
        if let Some(choice) = choice {
            let wire_message = choice.message.unwrap_or_default();
            let (text, thinking) = content_text(wire_message.content.as_ref());
            if let Some(reasoning) = wire_message.reasoning_content.or(thinking)
                && !reasoning.is_empty()
            {
                message.content.push(ContentPart::Reasoning(Reasoning {
                    text: Some(reasoning),
                    ..Reasoning::default()
                }));
            }
            let text = if text.is_empty() {
                wire_message.refusal.unwrap_or_default()
            } else {
                text
            };
            if !text.is_empty() {
                message.content.push(ContentPart::text(text));
            }
            message.tool_calls = wire_message
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let function = call.function.as_ref();
                    ToolCall::from_raw_arguments(
                        call.id.clone().unwrap_or_else(|| format!("call_{i}")),
                        function.and_then(|f| f.name.clone()).unwrap_or_default(),
                        &function
                            .map(wire::WireFunction::arguments_text)
                            .unwrap_or_default(),
                    )
                })
                .collect();
            message.finish_reason = finish_reason(choice.finish_reason.as_deref());
        }
        message.usage = parsed.usage.and_then(|u| u.to_usage());
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
            .open_stream(&build, map_error, || ChunkDecoder::new(span))
            .await
    }
}

fn map_error(status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
    error_from_body(status, body, retry_after(headers))
}

config_builders!(OpenAiConfig);
http_provider!(OpenAiProvider(OpenAiConfig));

#[cfg(test)]
mod tests;
