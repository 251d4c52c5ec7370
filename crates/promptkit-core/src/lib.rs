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
//!   [`StreamEvent`] and [`StreamAccumulator`]), [`ToolSet`] and [`ToolExecutor`],
//!   [`StateStore`]. Each has its own typed error. All are object-safe and used as
//!   `Arc<dyn …>` (or `Box<dyn …>` for the per-stream detectors).
//! - **Speech seams**, all on [`AudioFrame`]s in audio time:
//!   - [`VoiceActivityDetector`] (made fresh per stream by a [`VadFactory`], declaring its
//!     input [`AudioFormat`] and frame size) and [`TurnDetector`] (from a
//!     [`TurnDetectorFactory`]), which turns [`TurnSignal`]s (audio, VAD decisions, STT
//!     events, a semantic model's probability) into [`TurnEvent`]s;
//!   - [`SpeechToText`]: batch [`Transcript`]s, or a live [`SttSession`] whose
//!     [`AudioSender`] can `finalize` a turn without closing, and whose stream yields
//!     [`SttEvent`]s (partials, finals with `speech_final`, speech started, utterance end)
//!     with [`Word`] timings;
//!   - [`TextToSpeech`]: one-shot synthesis, or a [`TtsSession`] per answer fed text
//!     chunks through a [`TextSender`] (send, flush, cancel, finish) and yielding
//!     [`TtsEvent`]s (audio, word timings, flushed, done); [`TextToSpeech::formats`] lists
//!     what the service can produce.
//! - **Realtime seam**: [`RealtimeProvider`] opens a [`RealtimeSession`], a
//!   [`RealtimeSender`] of [`RealtimeInput`]s (audio, images, text, tool results,
//!   activity start and end, truncation, session updates) and a stream of
//!   [`RealtimeEvent`]s tagged with response and item ids ([`ItemRef`]), with session
//!   resumption; [`RealtimeConfig`] carries turn detection ([`TurnDetection`]), output
//!   modalities and vendor options, and the provider prices usage like a [`Provider`].
//!
//! **Forward compatibility.** The structs that callers and implementors build (options,
//! configurations, frames, transcripts, event payloads) are `#[non_exhaustive]`: they are
//! made with a constructor and `with_*` methods, so a field added later breaks no one. Every
//! enum that will grow is `#[non_exhaustive]` too. The policy and its exceptions are in
//! `docs/decisions/0018-speech-and-realtime-seams.md`.
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
//! # Example: a voice activity detector
//!
//! Detectors keep state for one audio stream, so a stage shared by many runs holds a
//! [`VadFactory`] and takes a fresh detector per run. This one calls a 10 ms frame speech
//! when its loudest sample reaches a level:
//!
//! ```
//! use promptkit_core::{
//!     AudioFormat, AudioFrame, SpeechError, VadDecision, VadEvent, VadFactory, VadState,
//!     VoiceActivityDetector,
//! };
//! use std::time::Duration;
//!
//! #[derive(Debug, Default)]
//! struct Peak {
//!     clock: Duration,
//!     speaking: bool,
//! }
//!
//! impl VoiceActivityDetector for Peak {
//!     fn format(&self) -> AudioFormat { AudioFormat::PCM16_16K_MONO }
//!     fn frame_samples(&self) -> Option<usize> { Some(160) }
//!
//!     fn process(&mut self, frame: &AudioFrame) -> Result<VadDecision, SpeechError> {
//!         if frame.format != self.format() {
//!             return Err(SpeechError::UnsupportedFormat(frame.format));
//!         }
//!         if frame.samples() != self.frame_samples() {
//!             return Err(SpeechError::InvalidInput { message: "expected 160 samples".into() });
//!         }
//!         let peak = frame
//!             .data
//!             .chunks_exact(2)
//!             .map(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs())
//!             .max()
//!             .unwrap_or(0);
//!         let (start, end) = (self.clock, self.clock + Duration::from_millis(10));
//!         self.clock = end;
//!         let loud = peak >= 1000;
//!         let state = if loud { VadState::Speaking } else { VadState::Quiet };
//!         let decision = VadDecision::new(state, if loud { 1.0 } else { 0.0 });
//!         Ok(match (loud, self.speaking) {
//!             (true, false) => decision.with_event(VadEvent::SpeechStarted { at: start }),
//!             (false, true) => decision.with_event(VadEvent::SpeechEnded { at: start }),
//!             _ => decision,
//!         })
//!         .inspect(|_| self.speaking = loud)
//!     }
//!
//!     fn reset(&mut self) { self.speaking = false; }
//! }
//!
//! #[derive(Debug)]
//! struct PeakFactory;
//!
//! impl VadFactory for PeakFactory {
//!     fn name(&self) -> &str { "peak" }
//!     fn fresh(&self) -> Result<Box<dyn VoiceActivityDetector>, SpeechError> {
//!         Ok(Box::new(Peak::default()))
//!     }
//! }
//!
//! # fn main() -> Result<(), SpeechError> {
//! let factory: std::sync::Arc<dyn VadFactory> = std::sync::Arc::new(PeakFactory);
//! let mut vad = factory.fresh()?;
//! let quiet = AudioFrame::new(vec![0_u8; 320], AudioFormat::PCM16_16K_MONO);
//! let loud = AudioFrame::new([0xd0_u8, 0x07].repeat(160), AudioFormat::PCM16_16K_MONO);
//! assert_eq!(vad.process(&quiet)?.event, None);
//! let decision = vad.process(&loud)?;
//! assert_eq!(decision.event, Some(VadEvent::SpeechStarted { at: Duration::from_millis(10) }));
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
    Eagerness, ImageFrame, ItemRef, Modality, OutputTextKind, RealtimeConfig, RealtimeError,
    RealtimeEvent, RealtimeEvents, RealtimeInput, RealtimeProvider, RealtimeSender,
    RealtimeSession, ResponseDone, SemanticVad, ServerVad, TurnDetection,
};
pub use speech::{
    AudioEncoding, AudioFormat, AudioFrame, AudioSender, AudioStream, SpeechError, SpeechPrice,
    SpeechToText, SpeechUsage, SttEvent, SttMetadata, SttSession, SynthesisOptions, TextSender,
    TextToSpeech, Transcript, TranscriptStream, TranscriptionOptions, TtsEvent, TtsEventStream,
    TtsSession, TurnDetector, TurnDetectorFactory, TurnEnd, TurnEndReason, TurnEvent, TurnSignal,
    VadDecision, VadEvent, VadFactory, VadState, VoiceActivityDetector, Word,
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
