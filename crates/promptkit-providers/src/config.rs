//! Providers built from configuration: the same JSON or YAML that names a type, a model, a
//! base URL and where the key comes from, so switching providers is a configuration change.
//!
//! ```
//! use promptkit_providers::config::ProviderSpec;
//!
//! let spec: ProviderSpec = serde_json::from_value(serde_json::json!({
//!     "type": "mock",
//!     "turns": [{"text": "Hello from the script"}]
//! }))?;
//! let provider = spec.build()?;
//! assert_eq!(provider.id(), "mock");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(any(feature = "mock", feature = "http"))]
use std::time::Duration;

use promptkit_core::{PricingTable, Provider, ProviderError, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One scripted turn of a `mock` provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockTurnSpec {
    /// The answer's text.
    #[serde(default)]
    pub text: String,
    /// Tool calls the answer asks for.
    #[serde(default)]
    pub tool_calls: Vec<MockCallSpec>,
    /// An HTTP-like error status to fail with instead (429, 500, 401, …).
    #[serde(default)]
    pub error_status: Option<u16>,
    /// Delay before answering, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Characters per streamed chunk.
    #[serde(default)]
    pub chunk_size: Option<usize>,
    /// Reported usage.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// A scripted tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockCallSpec {
    /// The call id (generated when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// The tool.
    pub name: String,
    /// The arguments.
    #[serde(default)]
    pub arguments: Value,
}

/// A provider described by configuration.
///
/// `type` is one of `openai`, `azure-openai`, `openai-compatible`, `anthropic`, `gemini`,
/// `mock` or `replay`; each needs the crate feature of the same name. Keys are never written
/// in the configuration: `api_key_env` names the environment variable that holds them
/// (defaults: `OPENAI_API_KEY`, `AZURE_OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, and for Gemini
/// `GEMINI_API_KEY`, then `GOOGLE_API_KEY`).
///
/// Its `Debug` shows header names but not their values, and the base URL without
/// credentials or query values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The provider type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The instance id (the type when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// The model (for `azure-openai`: the deployment, also used to look up prices).
    #[serde(default)]
    pub model: Option<String>,
    /// Base URL (required for `openai-compatible` and `azure-openai`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key. `openai-compatible` has no default:
    /// without this, no key is sent (never `OPENAI_API_KEY` to an arbitrary server).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Azure API version.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Extra headers sent on every call.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Prices that override the built-in table (per million tokens).
    #[serde(default)]
    pub pricing: Option<PricingTable>,
    /// Whole-request timeout in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Longest silence between stream chunks, in milliseconds.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Deadline from sending a stream request to its first event, in milliseconds.
    #[serde(default)]
    pub first_event_timeout_ms: Option<u64>,
    /// Longest a stream may last, in milliseconds.
    #[serde(default)]
    pub max_stream_duration_ms: Option<u64>,
    /// Most bytes of a non-streaming answer.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Most bytes of one line and of one event of a stream.
    #[serde(default)]
    pub max_event_bytes: Option<usize>,
    /// Most bytes of a stream's whole body.
    #[serde(default)]
    pub max_stream_bytes: Option<usize>,
    /// Most calls in flight.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Attempts per call, the first included.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// `mock`: the scripted turns.
    #[serde(default)]
    pub turns: Vec<MockTurnSpec>,
    /// `mock`: the answer once the script is used up.
    #[serde(default)]
    pub default_text: Option<String>,
    /// `replay`: the recording file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `replay`: match recordings by request instead of in order.
    #[serde(default)]
    pub match_requests: bool,
}

/// Applies the settings every HTTP vendor's config takes the same way: the id, the
/// transport, the base URL (for Azure and compatible servers the same URL their constructor
/// already took), extra headers, and the prices: merged into the built-in table
/// (`with_pricing_overrides`) or replacing it (`with_pricing`).
#[cfg(feature = "http")]
macro_rules! vendor_settings {
    ($spec:expr, $id:expr, $config:expr, with_pricing_overrides) => {{
        let spec = $spec;
        let config = vendor_settings!(@common spec, $id, $config);
        match &spec.pricing {
            Some(p) => config.with_pricing_overrides(p),
            None => config,
        }
    }};
    ($spec:expr, $id:expr, $config:expr, with_pricing) => {{
        let spec = $spec;
        let config = vendor_settings!(@common spec, $id, $config);
        match &spec.pricing {
            Some(p) => config.with_pricing(p.clone()),
            None => config,
        }
    }};
    (@common $spec:expr, $id:expr, $config:expr) => {{
        let spec = $spec;
        let config = $config;
        // The vendor's own transport defaults (a compatible server's longer timeouts) are
        // the base the spec's settings apply to.
        let http = spec.http(config.http().clone());
        let mut config = config.with_id($id).with_http(http);
        if let Some(url) = &spec.base_url {
            config = config.with_base_url(url);
        }
        for (k, v) in &spec.headers {
            config = config.with_header(k, v);
        }
        config
    }};
}

fn config_error(message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        message: message.into(),
    }
}

/// The provider types this build knows.
pub fn known_types() -> Vec<&'static str> {
    let mut types = Vec::new();
    if cfg!(feature = "openai") {
        types.extend(["openai", "azure-openai"]);
    }
    if cfg!(feature = "openai-compatible") {
        types.push("openai-compatible");
    }
    if cfg!(feature = "anthropic") {
        types.push("anthropic");
    }
    if cfg!(feature = "gemini") {
        types.push("gemini");
    }
    if cfg!(feature = "mock") {
        types.push("mock");
    }
    if cfg!(feature = "replay") {
        types.push("replay");
    }
    types
}

impl ProviderSpec {
    /// Parses a spec from JSON or YAML text; `origin`'s extension picks the format (`.json`
    /// is JSON, anything else YAML).
    ///
    /// # Errors
    /// [`ProviderError::Config`] naming the origin and the offending field.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ProviderError> {
        let is_json = origin.extension().and_then(|e| e.to_str()) == Some("json");
        let parsed = if is_json {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| config_error(format!("provider config {}: {e}", origin.display())))
    }

    /// Reads a spec file.
    ///
    /// # Errors
    /// [`ProviderError::Config`] naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ProviderError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("provider config {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Builds the provider, reading the key from the process environment.
    ///
    /// # Errors
    /// [`ProviderError::Config`] for an unknown type, a type not compiled in, a missing key or
    /// setting, or settings the provider rejects.
    pub fn build(&self) -> Result<Arc<dyn Provider>, ProviderError> {
        self.build_with_env(|var| std::env::var(var).ok())
    }

    /// [`build`](Self::build) reading variables through `env` (for secret managers and tests).
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn Provider>, ProviderError> {
        let id = self.id.clone().unwrap_or_else(|| self.kind.clone());
        // Only the vendors compiled in read the environment.
        let _ = (&env, &id);
        match self.kind.as_str() {
            #[cfg(feature = "openai")]
            "openai" | "azure-openai" => {
                use crate::openai::{OpenAiConfig, OpenAiProvider};
                let config = if self.kind == "openai" {
                    OpenAiConfig::openai(
                        self.model
                            .clone()
                            .unwrap_or_else(|| "gpt-4o-mini".to_owned()),
                        self.key(&id, &env, "OPENAI_API_KEY")?,
                    )
                } else {
                    let endpoint = self.base_url.clone().ok_or_else(|| {
                        config_error(format!("provider `{id}` (azure-openai) needs `base_url`"))
                    })?;
                    let deployment = self.require_model(&id, "the deployment")?;
                    let mut c = OpenAiConfig::azure(
                        endpoint,
                        deployment.clone(),
                        deployment,
                        self.key(&id, &env, "AZURE_OPENAI_API_KEY")?,
                    );
                    if let Some(v) = &self.api_version {
                        c = c.with_api_version(v);
                    }
                    c
                };
                let config = vendor_settings!(self, id, config, with_pricing_overrides);
                Ok(Arc::new(OpenAiProvider::new(config)?))
            }
            #[cfg(feature = "openai-compatible")]
            "openai-compatible" => {
                use crate::openai::{OpenAiConfig, OpenAiProvider};
                let base = self.base_url.clone().ok_or_else(|| {
                    config_error(format!(
                        "provider `{id}` (openai-compatible) needs `base_url`"
                    ))
                })?;
                let api_key = self.api_key_env.as_deref().and_then(&env);
                let config =
                    OpenAiConfig::compatible(base, self.require_model(&id, "the served model")?)
                        .with_api_key(api_key);
                // The compatible form has no built-in prices: configured ones are the table.
                let config = vendor_settings!(self, id, config, with_pricing);
                Ok(Arc::new(OpenAiProvider::new(config)?))
            }
            #[cfg(feature = "anthropic")]
            "anthropic" => {
                use crate::anthropic::{AnthropicConfig, AnthropicProvider};
                let config = AnthropicConfig::new(
                    self.model
                        .clone()
                        .unwrap_or_else(|| "claude-sonnet-4-5".to_owned()),
                    self.key(&id, &env, "ANTHROPIC_API_KEY")?,
                );
                let config = vendor_settings!(self, id, config, with_pricing_overrides);
                Ok(Arc::new(AnthropicProvider::new(config)?))
            }
            #[cfg(feature = "gemini")]
            "gemini" => {
                use crate::gemini::{GeminiConfig, GeminiProvider};
                // GEMINI_API_KEY first, GOOGLE_API_KEY as the fallback (as Google's SDKs do).
                let default_var = if self.api_key_env.is_none()
                    && env("GEMINI_API_KEY").is_none_or(|k| k.trim().is_empty())
                    && env("GOOGLE_API_KEY").is_some()
                {
                    "GOOGLE_API_KEY"
                } else {
                    "GEMINI_API_KEY"
                };
                let config = GeminiConfig::new(
                    self.model
                        .clone()
                        .unwrap_or_else(|| "gemini-2.5-flash".to_owned()),
                    self.key(&id, &env, default_var)?,
                );
                let config = vendor_settings!(self, id, config, with_pricing_overrides);
                Ok(Arc::new(GeminiProvider::new(config)?))
            }
            #[cfg(feature = "mock")]
            "mock" => {
                use crate::mock::{MockProvider, MockTurn};
                let mut provider =
                    MockProvider::new(id, self.model.clone().unwrap_or_else(|| "mock".to_owned()));
                if let Some(text) = &self.default_text {
                    provider = provider.with_default_text(text.clone());
                }
                for (n, t) in self.turns.iter().enumerate() {
                    let mut turn = match t.error_status {
                        Some(status) => MockTurn::error(ProviderError::from_status(
                            status,
                            "scripted error",
                            None,
                        )),
                        None => MockTurn::text(t.text.clone()),
                    };
                    for (i, c) in t.tool_calls.iter().enumerate() {
                        let call_id = c.id.clone().unwrap_or_else(|| format!("call_{n}_{i}"));
                        let args = if c.arguments.is_null() {
                            Value::Object(serde_json::Map::new())
                        } else {
                            c.arguments.clone()
                        };
                        turn = turn.with_tool_call(promptkit_core::ToolCall::new(
                            call_id,
                            c.name.clone(),
                            args,
                        ));
                    }
                    if t.delay_ms > 0 {
                        turn = turn.with_delay(Duration::from_millis(t.delay_ms));
                    }
                    if let Some(size) = t.chunk_size {
                        turn = turn.with_chunk_size(size);
                    }
                    if let Some(usage) = t.usage {
                        turn = turn.with_usage(usage);
                    }
                    provider = provider.with_turn(turn);
                }
                Ok(Arc::new(provider))
            }
            #[cfg(feature = "replay")]
            "replay" => {
                use crate::replay::{ReplayMode, ReplayProvider};
                let file = self.file.as_ref().ok_or_else(|| {
                    config_error(format!("provider `{id}` (replay) needs `file`"))
                })?;
                let mode = if self.match_requests {
                    ReplayMode::MatchRequest
                } else {
                    ReplayMode::Sequential
                };
                Ok(Arc::new(ReplayProvider::from_file(file, mode)?))
            }
            other => Err(config_error(format!(
                "unknown provider type `{other}` (this build knows: {})",
                known_types().join(", ")
            ))),
        }
    }

    #[cfg(any(feature = "openai", feature = "anthropic", feature = "gemini"))]
    fn key(
        &self,
        id: &str,
        env: &dyn Fn(&str) -> Option<String>,
        default_var: &str,
    ) -> Result<String, ProviderError> {
        let var = self.api_key_env.as_deref().unwrap_or(default_var);
        env(var).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            config_error(format!(
                "provider `{id}` ({}) needs an API key: set the environment variable `{var}`",
                self.kind
            ))
        })
    }

    #[cfg(feature = "openai")]
    fn require_model(&self, id: &str, what: &str) -> Result<String, ProviderError> {
        self.model.clone().ok_or_else(|| {
            config_error(format!(
                "provider `{id}` ({}) needs `model` ({what})",
                self.kind
            ))
        })
    }

    #[cfg(feature = "http")]
    fn http(&self, mut http: crate::http::HttpConfig) -> crate::http::HttpConfig {
        if let Some(ms) = self.timeout_ms {
            http.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.idle_timeout_ms {
            http.idle_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.first_event_timeout_ms {
            http.first_event_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.max_stream_duration_ms {
            http.max_stream_duration = Duration::from_millis(ms);
        }
        if let Some(n) = self.max_body_bytes {
            http.limits.max_body_bytes = n;
        }
        if let Some(n) = self.max_event_bytes {
            http.limits.max_line_bytes = n;
            http.limits.max_event_bytes = n;
        }
        if let Some(n) = self.max_stream_bytes {
            http.limits.max_stream_bytes = n;
        }
        if self.max_concurrency.is_some() {
            http.max_concurrency = self.max_concurrency;
        }
        if let Some(n) = self.max_attempts {
            http.retry.max_attempts = n.max(1);
        }
        http
    }
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("model", &self.model)
            .field("base_url", &self.base_url.as_deref().map(crate::redact_url))
            .field("api_key_env", &self.api_key_env)
            .field("api_version", &self.api_version)
            // Values may be tokens (`authorization: Bearer …` for Azure Entra ID).
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_ms", &self.timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("first_event_timeout_ms", &self.first_event_timeout_ms)
            .field("max_stream_duration_ms", &self.max_stream_duration_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_stream_bytes", &self.max_stream_bytes)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("turns", &self.turns.len())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}
