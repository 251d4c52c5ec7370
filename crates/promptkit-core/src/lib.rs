//! The vocabulary and the seams of the PromptKit runtime.
//!
//! This crate defines the types every other promptkit crate speaks, and the traits where
//! they plug into each other. It performs no I/O and depends on no async runtime or HTTP
//! stack, so it stays small and changes rarely.
//!
//! - **Conversation types**: [`Message`], [`Role`], [`ContentPart`] (text, image, audio,
//!   video, document, reasoning) with [`Media`] from a URL, bytes, a file or a storage
//!   reference; [`ToolCall`], [`ToolResult`]; [`ProviderData`] for provider-opaque data
//!   (thought signatures, reasoning ids) that must round-trip.
//! - **Accounting**: [`Usage`] (every count optional: "not reported" is not zero), [`Cost`],
//!   [`ModelPricing`] and [`PricingTable`]; [`FinishReason`] normalised across vendors.
//! - **Seams**: [`Provider`] (with [`ProviderRequest`], [`ProviderResponse`],
//!   [`StreamEvent`] and [`StreamAccumulator`]), [`RealtimeProvider`] and
//!   [`RealtimeSession`], [`ToolSet`] and [`ToolExecutor`], [`StateStore`],
//!   [`SpeechToText`], [`TextToSpeech`] and [`VoiceActivityDetector`] with [`AudioFrame`].
//!   Each has its own typed error. All are object-safe and used as `Arc<dyn …>`.
//!
//! **Who should depend on this crate:** authors of providers, tools, stores and speech
//! services who implement a seam. Applications use the `promptkit` facade, which re-exports
//! everything here at its root.
//!
//! The serialised form of the persisted types ([`Message`] and everything in it,
//! [`Conversation`], [`Usage`], [`Cost`]) is stable: state stores write it to disk and
//! databases. It is documented on each type and in the project's
//! `docs/decisions/0002-core-vocabulary.md`, and pinned by golden tests.
//!
//! # Example: a provider
//!
//! A provider is anything that turns a [`ProviderRequest`] into a [`ProviderResponse`] and
//! a stream of [`StreamEvent`]s. This one echoes the last user message:
//!
//! ```
//! use promptkit_core::{
//!     BoxFuture, EventStream, FinishReason, Message, Provider, ProviderError, ProviderRequest,
//!     ProviderResponse, Role, StreamEvent, Usage,
//! };
//! use std::time::Duration;
//!
//! #[derive(Debug)]
//! struct Echo;
//!
//! impl Provider for Echo {
//!     fn id(&self) -> &str { "echo" }
//!     fn model(&self) -> &str { "echo-1" }
//!
//!     fn predict<'a>(
//!         &'a self,
//!         request: &'a ProviderRequest,
//!     ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
//!         Box::pin(async move {
//!             let last = request
//!                 .messages
//!                 .iter()
//!                 .rev()
//!                 .find(|m| m.role == Role::User)
//!                 .ok_or_else(|| ProviderError::BadRequest {
//!                     status: 400,
//!                     message: "no user message".into(),
//!                 })?;
//!             let mut message = Message::assistant(last.text());
//!             message.usage = Some(Usage::new(3, 3));
//!             message.finish_reason = Some(FinishReason::Stop);
//!             Ok(ProviderResponse {
//!                 message,
//!                 model: Some("echo-1".into()),
//!                 served_by: Some("echo".into()),
//!                 latency: Duration::ZERO,
//!             })
//!         })
//!     }
//!
//!     fn stream<'a>(
//!         &'a self,
//!         request: &'a ProviderRequest,
//!     ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
//!         Box::pin(async move {
//!             let response = self.predict(request).await?;
//!             let events = vec![
//!                 Ok(StreamEvent::TextDelta { text: response.text() }),
//!                 Ok(StreamEvent::Finish { reason: FinishReason::Stop }),
//!             ];
//!             let stream: EventStream = Box::pin(tokio_stream::iter(events));
//!             Ok(stream)
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ProviderError> {
//! let provider: std::sync::Arc<dyn Provider> = std::sync::Arc::new(Echo);
//! let request = ProviderRequest::new(vec![Message::user("hello")]).with_system("Be brief.");
//! let response = provider.predict(&request).await?;
//! assert_eq!(response.text(), "hello");
//! assert_eq!(response.usage().and_then(|u| u.total_tokens()), Some(6));
//! # Ok(())
//! # }
//! ```
//!
//! # Supported Rust versions
//!
//! The workspace is built and tested with Rust 1.95, its declared `rust-version`.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod error;
mod finish;
mod future;
mod message;
mod provider;
mod realtime;
mod speech;
mod state;
mod time;
mod tool;
mod usage;

pub use error::ErrorChain;
pub use finish::FinishReason;
pub use future::{BoxError, BoxFuture, BoxStream};
pub use message::{
    ContentKind, ContentPart, ImageDetail, Media, MediaSource, Message, ProviderData, Reasoning,
    Role, ToolCall, ToolErrorKind, ToolResult, encode_base64, mime_from_extension, parse_arguments,
};
pub use provider::{
    Capabilities, EventStream, Provider, ProviderError, ProviderRequest, ProviderResponse,
    ReasoningConfig, ReasoningEffort, ResponseFormat, ResponsePart, StreamAccumulator, StreamEvent,
    TimeoutPhase,
};
pub use realtime::{
    RealtimeConfig, RealtimeError, RealtimeEvent, RealtimeEvents, RealtimeInput, RealtimeProvider,
    RealtimeSender, RealtimeSession, TurnDetection,
};
pub use speech::{
    AudioEncoding, AudioFormat, AudioFrame, AudioSender, AudioStream, SpeechError, SpeechToText,
    SttSession, SynthesisOptions, TextToSpeech, Transcript, TranscriptStream, TranscriptionOptions,
    VadEvent, VadState, VoiceActivityDetector,
};
pub use state::{
    AppendOutcome, Conversation, ConversationInfo, ExpectedVersion, ListOptions, Page, SortOrder,
    StateError, StateStore, Summary,
};
pub use time::{Timestamp, TimestampError};
pub use tool::{
    ToolChoice, ToolContext, ToolDef, ToolError, ToolExecutor, ToolSet, empty_object_schema,
    name_matches,
};
pub use usage::{Cost, ModelPricing, PricingTable, Usage};

#[cfg(test)]
mod tests;
