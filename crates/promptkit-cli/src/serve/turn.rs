//! The server's contact with the agent API, in one place: building the agents for a turn's
//! output-token limit, starting a turn, reading its text, waiting for its end, and turning its
//! reply or error into what the client gets.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::StatusCode;
use futures_util::Stream as _;
use promptkit::agent::{Agent, AgentError, AgentEvent, Reply, ReplyStream};
use promptkit::pipeline::provider::TurnError;
use promptkit::pipeline::{BuildError, PipelineError, RunData};
use promptkit::{BoxFuture, FinishReason, Message, ProviderError, StateError, Usage};
use serde_json::{Value, json};

use super::error::ApiError;

/// The two agents the server answers with.
#[derive(Debug)]
pub(crate) struct Agents {
    /// For requests that carry their whole conversation.
    pub(crate) stateless: Agent,
    /// For requests with a session header: history from and saves to the state store.
    pub(crate) stateful: Agent,
}

/// Builds the agents whose model calls ask for at most the given number of output tokens.
pub(crate) type AgentFactory = Box<dyn Fn(u32) -> Result<Agents, BuildError> + Send + Sync>;

/// Agents by output-token limit. A turn's limit is part of the provider stage's settings, so
/// each limit a client asks for has agents of its own: the server's maximum (what most
/// requests get) is built at the start, others on first use, and a few of those are kept.
pub(crate) struct AgentCache {
    factory: AgentFactory,
    default_tokens: u32,
    default: Arc<Agents>,
    /// Most recently used last.
    others: Mutex<Vec<(u32, Arc<Agents>)>>,
}

impl std::fmt::Debug for AgentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCache")
            .field("default_tokens", &self.default_tokens)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

/// Limits other than the maximum whose agents are kept.
const CACHED_LIMITS: usize = 16;

impl AgentCache {
    /// The cache, with the agents of `default_tokens` built now.
    ///
    /// # Errors
    /// When the agents cannot be built.
    pub(crate) fn new(factory: AgentFactory, default_tokens: u32) -> Result<Self, BuildError> {
        let default = Arc::new(factory(default_tokens)?);
        Ok(Self {
            factory,
            default_tokens,
            default,
            others: Mutex::default(),
        })
    }

    /// The agents for `max_tokens`.
    fn get(&self, max_tokens: u32) -> Result<Arc<Agents>, BuildError> {
        if max_tokens == self.default_tokens {
            return Ok(Arc::clone(&self.default));
        }
        let mut others = self
            .others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = others.iter().position(|(n, _)| *n == max_tokens) {
            let entry = others.remove(at);
            let agents = Arc::clone(&entry.1);
            others.push(entry);
            return Ok(agents);
        }
        let agents = Arc::new((self.factory)(max_tokens)?);
        if others.len() >= CACHED_LIMITS {
            others.remove(0);
        }
        others.push((max_tokens, Arc::clone(&agents)));
        Ok(agents)
    }

    /// The stateless agent, for the model listing.
    pub(crate) fn model(&self) -> &str {
        self.default.stateless.provider().model()
    }
}

/// What a turn runs with.
#[derive(Debug)]
pub(crate) struct TurnSpec {
    /// The store id of the session; `None` for a request that carries its conversation.
    pub(crate) session: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) system: Option<String>,
    /// Earlier messages sent by the client (stateless requests only).
    pub(crate) history: Vec<Message>,
    pub(crate) message: Message,
    pub(crate) max_tokens: u32,
}

/// Starts a turn.
///
/// # Errors
/// The error to answer with when the turn cannot start; `request_id` marks its log line.
pub(crate) fn start(
    agents: &AgentCache,
    spec: TurnSpec,
    request_id: &str,
) -> Result<TurnStream, ApiError> {
    let agents = agents.get(spec.max_tokens).map_err(|e| {
        tracing::error!(%request_id, error = %chain(&e), "building the agents failed");
        ApiError::server(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "the server failed",
            request_id,
        )
    })?;
    let mut turn = match spec.session {
        Some(id) => RunData::for_session(id),
        None => RunData::default(),
    };
    turn.user_id = spec.user;
    turn.system_prompt = spec.system;
    let agent = if turn.session_id.is_some() {
        &agents.stateful
    } else {
        &agents.stateless
    };
    // The response is built from text events and the finished reply.
    let reply = agent
        .stream_with_history(turn, spec.history, spec.message)
        .map_err(|e| turn_error(&e, request_id))?;
    Ok(TurnStream {
        reply: Some(reply),
        ending: None,
    })
}

/// A running turn. Dropping it cancels the turn.
///
/// Its end is awaited through [`ReplyStream::finish`], boxed once per turn, rather than a
/// poll method of the stream, so this is the agent API's one use here.
pub(crate) struct TurnStream {
    /// `None` once its output has ended and its end is awaited.
    reply: Option<ReplyStream>,
    ending: Option<BoxFuture<'static, Result<Reply, AgentError>>>,
}

impl std::fmt::Debug for TurnStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnStream")
            .field("reply", &self.reply)
            .field("ending", &self.ending.is_some())
            .finish()
    }
}

impl TurnStream {
    /// The next piece of text, `None` once the turn's output has ended.
    pub(crate) fn poll_text(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let Some(reply) = self.reply.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match std::task::ready!(Pin::new(&mut *reply).poll_next(cx)) {
                Some(AgentEvent::Text(text)) if !text.is_empty() => {
                    return Poll::Ready(Some(text));
                }
                Some(_) => {}
                None => return Poll::Ready(None),
            }
        }
    }

    /// The turn's end, after [`poll_text`](Self::poll_text) returned `None`; polled once more
    /// after it is ready, it stays pending.
    pub(crate) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reply, AgentError>> {
        if let Some(reply) = self.reply.take() {
            self.ending = Some(Box::pin(reply.finish()));
        }
        let Some(ending) = self.ending.as_mut() else {
            return Poll::Pending;
        };
        let result = std::task::ready!(ending.as_mut().poll(cx));
        self.ending = None;
        Poll::Ready(result)
    }

    /// Waits for the turn's end, text included.
    pub(crate) async fn finish(mut self) -> Result<Reply, AgentError> {
        std::future::poll_fn(|cx| self.poll_finish(cx)).await
    }
}

/// The error a client gets for a failed turn, logged with its details under `request_id`.
/// The client's message is generic: upstream error text and URLs stay in the log.
pub(crate) fn turn_error(error: &AgentError, request_id: &str) -> ApiError {
    let (status, kind, code, message) = class(&error.error);
    tracing::warn!(%request_id, status = status.as_u16(), error = %chain(error), "turn failed");
    ApiError::server(status, kind, code, message, request_id)
}

/// The status, type, code and generic message of a failed turn.
fn class(error: &PipelineError) -> (StatusCode, &'static str, &'static str, &'static str) {
    match cause::<TurnError>(error) {
        // The client's conversation (or what its tools returned) made the turn too costly:
        // sent again, it costs as much again.
        Some(TurnError::CostBudget { .. }) => {
            return (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "turn_budget_exceeded",
                "the turn cost more than this server allows one turn to cost",
            );
        }
        Some(TurnError::MaxRounds(_)) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "max_rounds",
                "the model kept calling tools past the server's round limit",
            );
        }
        Some(TurnError::ToolLoop { .. }) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "tool_loop",
                "the model kept repeating the same tool call",
            );
        }
        _ => {}
    }
    if let Some(StateError::Conflict { .. }) = cause::<StateError>(error) {
        // Another writer appended to the session during the turn (its lease was lost to
        // another replica): nothing of this turn was written after that writer's messages.
        return (
            StatusCode::CONFLICT,
            "invalid_request_error",
            "session_conflict",
            "the session changed during this turn; nothing after the change was saved, retry",
        );
    }
    match cause::<ProviderError>(error) {
        Some(ProviderError::RateLimited { .. }) => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "upstream_rate_limited",
            "the model provider is limiting requests; retry later",
        ),
        Some(ProviderError::ContextTooLong { .. }) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
            "the conversation is too long for the model",
        ),
        Some(ProviderError::BadRequest { .. }) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "upstream_bad_request",
            "the model provider rejected the request",
        ),
        Some(ProviderError::Timeout { .. }) => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_error",
            "upstream_timeout",
            "the model provider did not answer in time",
        ),
        Some(_) => (
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "upstream_error",
            "the model provider failed",
        ),
        None => match error {
            PipelineError::ExecutionTimeout(_) | PipelineError::IdleTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                "turn_timeout",
                "the turn took too long",
            ),
            PipelineError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "unavailable",
                "the server is shutting down",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                "the turn failed",
            ),
        },
    }
}

/// The first error of type `E` in the chain of a failed turn: the [`ProviderError`] when a
/// model call caused it, the [`TurnError`] when the tool loop stopped it.
fn cause<E: std::error::Error + 'static>(error: &PipelineError) -> Option<&E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// An error and its causes, each once: a cause already shown in its wrapper's text is not
/// repeated.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// The OpenAI `finish_reason` of a reply.
pub(crate) fn finish_reason(reply: &Reply) -> &'static str {
    if !reply.pending.is_empty() {
        return "tool_calls";
    }
    match reply.message().and_then(|m| m.finish_reason.as_ref()) {
        Some(FinishReason::MaxTokens) => "length",
        Some(FinishReason::ContentFilter | FinishReason::Refusal) => "content_filter",
        _ => "stop",
    }
}

/// The OpenAI `usage` object; totals saturate rather than overflow.
pub(crate) fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.input_tokens.unwrap_or(0);
    let completion = usage.output_tokens.unwrap_or(0);
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt.saturating_add(completion)})
}

/// A whole `chat.completion` answer.
pub(crate) fn completion(id: &str, created: i64, model: &str, reply: &Reply) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": reply.text()},
                     "finish_reason": finish_reason(reply)}],
        "usage": usage_json(&reply.usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_totals_saturate() {
        let usage = Usage {
            input_tokens: Some(u64::MAX),
            output_tokens: Some(5),
            ..Usage::default()
        };
        assert_eq!(usage_json(&usage)["total_tokens"], u64::MAX);
    }

    #[test]
    fn a_cause_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Shows(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Hides(#[source] std::io::Error);
        let io = || std::io::Error::other("inner");
        assert_eq!(chain(&Shows(io())), "outer: inner");
        assert_eq!(chain(&Hides(io())), "outer: inner");
    }
}
