//! A scripted in-memory provider for tests.
//!
//! [`MockProvider`] answers each call with the next [`MockTurn`] of its script: text, tool
//! calls, usage, an error, and optional delays. Streams cut the text into chunks. Every
//! request received is recorded and can be inspected with [`MockProvider::requests`]. When
//! the script is exhausted, the provider answers with [`MockProvider::with_default_text`]'s
//! text (by default `"mock response"`).
//!
//! ```
//! use promptkit_providers::mock::{MockProvider, MockTurn};
//! use promptkit_providers::{Message, Provider, ProviderError, ProviderRequest};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ProviderError> {
//! let provider = MockProvider::new("mock", "mock-1")
//!     .with_turn(MockTurn::tool_call("call_1", "lookup_order", json!({"order_id": "1"})))
//!     .with_turn(MockTurn::text("It shipped."));
//! let request = ProviderRequest::new(vec![Message::user("where is my order?")]);
//! let first = provider.predict(&request).await?;
//! assert_eq!(first.tool_calls()[0].name, "lookup_order");
//! let second = provider.predict(&request).await?;
//! assert_eq!(second.text(), "It shipped.");
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use promptkit_core::{
    BoxFuture, Capabilities, EventStream, FinishReason, Message, PricingTable, Provider,
    ProviderError, ProviderRequest, ProviderResponse, StreamAccumulator, StreamEvent, ToolCall,
    Usage,
};
use serde_json::Value;

/// One scripted answer.
#[derive(Debug)]
pub struct MockTurn {
    text: String,
    reasoning: Option<String>,
    tool_calls: Vec<ToolCall>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    error: Option<ProviderError>,
    stream_error: Option<ProviderError>,
    delay: Duration,
    chunk_delay: Duration,
    chunk_size: usize,
}

impl Default for MockTurn {
    fn default() -> Self {
        Self {
            text: String::new(),
            reasoning: None,
            tool_calls: Vec::new(),
            usage: None,
            finish: None,
            error: None,
            stream_error: None,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            chunk_size: 20,
        }
    }
}

impl MockTurn {
    /// An answer with this text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// An answer asking for one tool call.
    pub fn tool_call(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self::default().with_tool_call(ToolCall::new(id, name, arguments))
    }

    /// A call that fails with `error` (returned by `predict`, or by `stream` before any
    /// event).
    pub fn error(error: ProviderError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }

    /// Adds a tool call.
    #[must_use]
    pub fn with_tool_call(mut self, call: ToolCall) -> Self {
        self.tool_calls.push(call);
        self
    }

    /// Adds reasoning text, streamed before the answer.
    #[must_use]
    pub fn with_reasoning(mut self, text: impl Into<String>) -> Self {
        self.reasoning = Some(text.into());
        self
    }

    /// Sets the reported usage (by default about one token per four characters).
    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Sets the finish reason (by default `tool_calls` when there are calls, else `stop`).
    #[must_use]
    pub fn with_finish_reason(mut self, reason: FinishReason) -> Self {
        self.finish = Some(reason);
        self
    }

    /// Waits this long before answering (before the first event of a stream).
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits this long between stream chunks.
    #[must_use]
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Streams the text in chunks of this many characters (default 20, at least 1).
    #[must_use]
    pub fn with_chunk_size(mut self, chars: usize) -> Self {
        self.chunk_size = chars.max(1);
        self
    }

    /// Streams the deltas, then fails with `error` instead of finishing.
    #[must_use]
    pub fn with_stream_error(mut self, error: ProviderError) -> Self {
        self.stream_error = Some(error);
        self
    }

    fn events(&self, request: &ProviderRequest) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        if let Some(reasoning) = &self.reasoning {
            events.push(StreamEvent::ReasoningDelta {
                text: reasoning.clone(),
            });
        }
        let chars: Vec<char> = self.text.chars().collect();
        for chunk in chars.chunks(self.chunk_size) {
            events.push(StreamEvent::TextDelta {
                text: chunk.iter().collect(),
            });
        }
        for (index, call) in (0u32..).zip(&self.tool_calls) {
            events.push(StreamEvent::ToolCallStart {
                index,
                id: call.id.clone(),
                name: call.name.clone(),
                provider_data: call.provider_data.clone(),
            });
            events.push(StreamEvent::ToolCallDelta {
                index,
                arguments: call.arguments_json(),
            });
        }
        events.push(StreamEvent::Usage {
            usage: self
                .usage
                .unwrap_or_else(|| estimate_usage(request, &self.text)),
        });
        let reason = self
            .finish
            .clone()
            .unwrap_or(if self.tool_calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            });
        events.push(StreamEvent::Finish { reason });
        events
    }
}

fn estimate_usage(request: &ProviderRequest, answer: &str) -> Usage {
    let prompt: usize = request.system.as_deref().map_or(0, str::len)
        + request
            .messages
            .iter()
            .map(|m| m.text().len())
            .sum::<usize>();
    let tokens = |chars: usize| u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX);
    Usage::new(tokens(prompt).max(1), tokens(answer.len()))
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<MockTurn>,
    requests: Vec<ProviderRequest>,
}

/// A provider that answers from a script; see the [module docs](self).
///
/// Clones share the script and the record of requests.
#[derive(Clone)]
pub struct MockProvider {
    id: String,
    model: String,
    default_text: String,
    capabilities: Capabilities,
    pricing: Option<PricingTable>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockProvider")
            .field("id", &self.id)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl MockProvider {
    /// A mock with an empty script.
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            default_text: "mock response".to_owned(),
            capabilities: Capabilities::all(),
            pricing: None,
            state: Arc::default(),
        }
    }

    /// Appends a turn to the script.
    #[must_use]
    pub fn with_turn(self, turn: MockTurn) -> Self {
        self.push_turn(turn);
        self
    }

    /// Appends a turn to the script (usable on a shared instance).
    pub fn push_turn(&self, turn: MockTurn) {
        self.lock().script.push_back(turn);
    }

    /// Sets the text answered once the script is exhausted.
    #[must_use]
    pub fn with_default_text(mut self, text: impl Into<String>) -> Self {
        self.default_text = text.into();
        self
    }

    /// Sets the advertised capabilities (default: everything).
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets a price table, so responses carry a cost.
    #[must_use]
    pub fn with_pricing(mut self, pricing: PricingTable) -> Self {
        self.pricing = Some(pricing);
        self
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<ProviderRequest> {
        self.lock().requests.clone()
    }

    /// Turns left in the script.
    pub fn remaining_turns(&self) -> usize {
        self.lock().script.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the script half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_turn(&self, request: &ProviderRequest) -> MockTurn {
        let mut state = self.lock();
        state.requests.push(request.clone());
        state
            .script
            .pop_front()
            .unwrap_or_else(|| MockTurn::text(self.default_text.clone()))
    }
}

impl Provider for MockProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn pricing(&self) -> Option<&PricingTable> {
        self.pricing.as_ref()
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let mut turn = self.next_turn(request);
            if !turn.delay.is_zero() {
                tokio::time::sleep(turn.delay).await;
            }
            if let Some(error) = turn.error.take().or_else(|| turn.stream_error.take()) {
                return Err(error);
            }
            let mut acc = StreamAccumulator::new();
            for event in turn.events(request) {
                acc.push(&event);
            }
            let mut message: Message = acc.finish();
            let model = request.model.clone().unwrap_or_else(|| self.model.clone());
            message.cost = message.usage.and_then(|u| self.cost(&model, &u));
            message.latency_ms = Some(u64::try_from(turn.delay.as_millis()).unwrap_or(u64::MAX));
            Ok(ProviderResponse {
                message,
                model: Some(model),
                served_by: Some(self.id.clone()),
                latency: turn.delay,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let mut turn = self.next_turn(request);
            if !turn.delay.is_zero() {
                tokio::time::sleep(turn.delay).await;
            }
            if let Some(error) = turn.error.take() {
                return Err(error);
            }
            let mut events: VecDeque<Result<StreamEvent, ProviderError>> =
                turn.events(request).into_iter().map(Ok).collect();
            if let Some(error) = turn.stream_error.take() {
                // Cut before usage and finish.
                events.truncate(events.len().saturating_sub(2));
                events.push_back(Err(error));
            }
            let chunk_delay = turn.chunk_delay;
            let stream = futures_util::stream::unfold(
                (events, true),
                move |(mut events, first)| async move {
                    let item = events.pop_front()?;
                    if !first && !chunk_delay.is_zero() {
                        tokio::time::sleep(chunk_delay).await;
                    }
                    Some((item, (events, false)))
                },
            );
            let stream: EventStream = Box::pin(stream);
            Ok(stream)
        })
    }
}
