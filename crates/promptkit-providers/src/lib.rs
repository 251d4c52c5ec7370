//! LLM providers for the PromptKit runtime.
//!
//! Implementations of [`promptkit_core::Provider`], each vendor behind a cargo feature:
//!
//! | feature | module | what |
//! |---|---|---|
//! | `mock` (default) | [`mock`] | a scripted in-memory provider for tests |
//! | `openai` | `openai` | OpenAI Chat Completions and Azure OpenAI |
//! | `openai-compatible` | `openai` | Ollama, vLLM and any OpenAI-compatible base URL |
//! | `anthropic` | `anthropic` | Anthropic Claude (Messages API) |
//! | `gemini` | `gemini` | Google Gemini (`generateContent`, `streamGenerateContent`) |
//! | `config` (default) | [`config`] | providers (and mock scripts) built from JSON or YAML |
//! | `fallback` (default) | [`fallback`] | ordered failover across providers, with cooldowns |
//! | `replay` (default) | [`replay`] | record any provider's calls to JSON Lines, replay them offline |
//!
//! Every HTTP vendor uses the same shared pieces: the incremental [`sse`] decoder (always built) and
//! the HTTP machinery (`http`: client settings, retries with full-jitter backoff honouring
//! `Retry-After`, the per-provider concurrency limit, connect/request/idle timeouts).
//!
//! # Streaming contract
//!
//! Every provider's [`Provider::stream`] yields deltas in vendor order, then at most one
//! [`StreamEvent::Usage`], then exactly one [`StreamEvent::Finish`]; a stream cut off before
//! its finish reason fails with [`ProviderError::StreamTruncated`]. The `stream` future
//! resolves once the first event has arrived; failures before that (connection, HTTP status,
//! a body that ends or stalls first) are retried per the provider's retry policy and, when
//! retries give up, returned by the future itself. Failures after it arrive as stream items
//! and are never retried by the provider.
//!
//! # Example
//!
//! ```
//! use futures_util::StreamExt as _;
//! use promptkit_providers::mock::{MockProvider, MockTurn};
//! use promptkit_providers::{Message, Provider, ProviderRequest, StreamAccumulator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), promptkit_providers::ProviderError> {
//! let provider = MockProvider::new("mock", "mock-1")
//!     .with_turn(MockTurn::text("Hello there, world!").with_chunk_size(5));
//! let request = ProviderRequest::new(vec![Message::user("hi")]);
//!
//! let mut stream = provider.stream(&request).await?;
//! let mut acc = StreamAccumulator::new();
//! while let Some(event) = stream.next().await {
//!     acc.push(&event?);
//! }
//! assert_eq!(acc.finish().text(), "Hello there, world!");
//! assert_eq!(provider.requests().len(), 1);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "anthropic")]
pub mod anthropic;
#[cfg(any(feature = "http", feature = "fallback"))]
mod budget;
#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "fallback")]
pub mod fallback;
#[cfg(feature = "gemini")]
pub mod gemini;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "openai")]
pub mod openai;
#[cfg(feature = "replay")]
pub mod replay;
pub mod sse;
#[cfg(feature = "http")]
mod vendor;

pub use promptkit_core::{
    Message, Provider, ProviderError, ProviderRequest, ProviderResponse, StreamAccumulator,
    StreamEvent, ToolChoice,
};

/// Formats an error and its sources, each once, separated by `: ` (for logs and for
/// messages that end a chain, such as [`ProviderError::StreamTruncated`]).
#[cfg_attr(
    not(any(feature = "http", feature = "fallback")),
    allow(dead_code, reason = "used by the HTTP vendors and the fallback")
)]
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    use std::fmt::Write as _;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// `url` as it may appear in errors and debug output: the user name, password and query
/// values removed (they may hold credentials or a gateway key).
#[cfg_attr(
    not(any(feature = "http", feature = "config")),
    allow(dead_code, reason = "used by the HTTP vendors and the configuration")
)]
pub(crate) fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
                None => before_query.to_owned(),
            }
        }
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        // Only the API version (Azure) is known to be harmless.
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key != "api-version" => format!("{key}=<redacted>"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}
