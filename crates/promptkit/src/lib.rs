#![doc = include_str!("lib.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[doc(inline)]
pub use promptkit_core::{
    AppendOutcome, AudioEncoding, AudioFormat, AudioFrame, AudioSender, AudioStream, BoxError,
    BoxFuture, BoxStream, Capabilities, ContentKind, ContentPart, Conversation, ConversationInfo,
    Cost, Eagerness, ErrorChain, EventStream, ExpectedVersion, FinishReason, ImageDetail,
    ImageFrame, ItemRef, ListOptions, Media, MediaSource, Message, Modality, ModelPricing,
    OutputTextKind, Page, PricingTable, Provider, ProviderData, ProviderError, ProviderRequest,
    ProviderResponse, RealtimeConfig, RealtimeError, RealtimeEvent, RealtimeEvents, RealtimeInput,
    RealtimeProvider, RealtimeSender, RealtimeSession, Reasoning, ReasoningConfig, ReasoningEffort,
    ResponseDone, ResponseFormat, ResponsePart, Role, SemanticVad, ServerVad, SortOrder,
    SpeechError, SpeechToText, StateError, StateStore, StreamAccumulator, StreamEvent, SttEvent,
    SttMetadata, SttSession, Summary, SynthesisOptions, TextSender, TextToSpeech, TimeoutPhase,
    Timestamp, TimestampError, ToolCall, ToolChoice, ToolContext, ToolDef, ToolError,
    ToolErrorKind, ToolExecutor, ToolResult, ToolSet, Transcript, TranscriptStream,
    TranscriptionOptions, TtsEvent, TtsEventStream, TtsSession, TurnDetection, TurnDetector,
    TurnDetectorFactory, TurnEnd, TurnEndReason, TurnEvent, TurnSignal, Usage, VadDecision,
    VadEvent, VadFactory, VadState, VoiceActivityDetector, Word, empty_object_schema,
    encode_base64, mime_from_extension, name_matches, parse_arguments,
};

#[cfg(feature = "pipeline")]
#[cfg_attr(docsrs, doc(cfg(feature = "pipeline")))]
pub mod agent;

mod combined;
pub use combined::CombinedTools;

/// The stage engine: pipelines of concurrent streaming stages, events and built-in stages.
#[cfg(feature = "pipeline")]
#[cfg_attr(docsrs, doc(cfg(feature = "pipeline")))]
#[doc(inline)]
pub use promptkit_pipeline as pipeline;

/// LLM providers.
#[cfg(feature = "providers")]
#[cfg_attr(docsrs, doc(cfg(feature = "providers")))]
#[doc(inline)]
pub use promptkit_providers as providers;

/// Tool registry, descriptors and executors.
#[cfg(feature = "tools")]
#[cfg_attr(docsrs, doc(cfg(feature = "tools")))]
#[doc(inline)]
pub use promptkit_tools as tools;

/// MCP servers as tool sources.
#[cfg(feature = "mcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
#[doc(inline)]
pub use promptkit_mcp as mcp;

/// Conversation state stores.
#[cfg(feature = "state")]
#[cfg_attr(docsrs, doc(cfg(feature = "state")))]
#[doc(inline)]
pub use promptkit_state as state;

/// VAD, turn detection, codecs, STT and TTS.
#[cfg(feature = "audio")]
#[cfg_attr(docsrs, doc(cfg(feature = "audio")))]
#[doc(inline)]
pub use promptkit_audio as audio;
