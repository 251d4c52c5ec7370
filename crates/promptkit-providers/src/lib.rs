//! LLM providers for the PromptKit runtime.
//!
//! This crate will hold the implementations of [`promptkit_core::Provider`]: OpenAI Chat
//! Completions (and Azure OpenAI), Anthropic Messages, Google Gemini, OpenAI-compatible
//! servers (Ollama, vLLM), a scripted mock, a replay provider and a fallback provider, each
//! vendor behind a cargo feature. Until they land, the crate re-exports the seam it
//! implements.
//!
//! # Example
//!
//! ```
//! use promptkit_providers::{Message, ProviderRequest, ToolChoice};
//!
//! let mut request = ProviderRequest::new(vec![Message::user("What is 2 + 2?")]);
//! request.temperature = Some(0.0);
//! request.tool_choice = ToolChoice::None;
//! assert_eq!(request.messages.len(), 1);
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub use promptkit_core::{
    Message, Provider, ProviderError, ProviderRequest, ProviderResponse, StreamEvent, ToolChoice,
};
