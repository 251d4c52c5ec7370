//! `promptkit serve`: an OpenAI-compatible HTTP server in front of the agent.
//!
//! `POST /v1/chat/completions` (streaming as OpenAI-style SSE, or one JSON answer),
//! `GET /v1/models`, `GET /health`. Without a session header the request's messages are the
//! whole conversation (as with OpenAI); with `x-session-id` the server keeps the conversation
//! in its state store and takes only the request's last message. Tools configured on the
//! server run inside the turn: the client sees the final answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{self, Poll, ready};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::{self, Stream};
use promptkit::agent::{Agent, AgentError, AgentEvent, Reply, ReplyStream};
use promptkit::pipeline::{PipelineError, RunData};
use promptkit::{ContentPart, Media, Message, ProviderError, Role, ToolResult, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Request headers that name the session (the first present wins).
const SESSION_HEADERS: [&str; 2] = ["x-session-id", "x-promptkit-session"];

/// How `serve` runs.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    /// Where to listen (port 0 picks a free port; the bound address is printed).
    pub(crate) addr: SocketAddr,
    /// Turns running at once; more requests wait for a slot.
    pub(crate) max_concurrency: usize,
    /// How long a request waits for a slot before `503`.
    pub(crate) queue_timeout: Duration,
    /// How long in-flight requests may finish after a shutdown signal.
    pub(crate) shutdown_grace: Duration,
}

/// The two agents the server answers with.
#[derive(Debug)]
pub(crate) struct Agents {
    /// For requests that carry their whole conversation.
    pub(crate) stateless: Agent,
    /// For requests with a session header: history from and saves to the state store.
    pub(crate) stateful: Agent,
}

#[derive(Debug)]
struct App {
    agents: Agents,
    model: String,
    /// `model` as a JSON string, for the chunks written as text.
    model_json: String,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    started: u64,
    ids: AtomicU64,
}

impl App {
    /// `chatcmpl-` and two hex numbers: the server's start time and a counter (8 digits or
    /// more). Written by hand: `format!` costs more than the rest of a response's fixed text.
    fn completion_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(9 + 16 + 16);
        id.push_str("chatcmpl-");
        push_hex(&mut id, self.started, 1);
        push_hex(&mut id, n, 8);
        id
    }
}

/// Appends `n` in lower-case hex, padded with zeros to at least `width` digits.
fn push_hex(out: &mut String, mut n: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [b'0'; 16];
    let mut start = digits.len();
    while n > 0 {
        start -= 1;
        digits[start] = DIGITS[usize::try_from(n & 0xf).unwrap_or_default()];
        n >>= 4;
    }
    start = start.min(digits.len().saturating_sub(width.max(1)));
    out.extend(digits[start..].iter().map(|&b| char::from(b)));
}

/// Runs the server until SIGINT or SIGTERM, then lets in-flight requests finish for the grace
/// period.
pub(crate) async fn serve(agents: Agents, options: ServeOptions) -> Result<()> {
    let model = agents.stateless.provider().model().to_owned();
    let started = u64::try_from(promptkit::Timestamp::now().as_unix_millis() / 1000).unwrap_or(0);
    let app = Arc::new(App {
        agents,
        model_json: Value::from(model.as_str()).to_string(),
        model,
        slots: Arc::new(Semaphore::new(options.max_concurrency.max(1))),
        queue_timeout: options.queue_timeout,
        started,
        ids: AtomicU64::new(0),
    });
    let router = router(app);
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("binding {}", options.addr))?;
    let bound = listener.local_addr()?;
    eprintln!("promptkit serve: listening on http://{bound}");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // SSE is many small writes: send each at once rather than wait for ACKs (Nagle).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        eprintln!("promptkit serve: shutting down, waiting for in-flight requests");
        let _ = stop_tx.send(true);
    });
    let grace = options.shutdown_grace;
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        () = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => eprintln!("promptkit serve: grace period over, cancelling in-flight requests"),
    }
    eprintln!("promptkit serve: stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .with_state(app)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "available_slots": app.slots.available_permits()}),
    )
}

async fn models(State(app): State<Arc<App>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{
            "id": app.model, "object": "model", "created": app.started, "owned_by": "promptkit"
        }]}),
    )
}

/// The parts of an OpenAI chat-completions request the server uses.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// A request the server refuses, as an OpenAI-style error.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": Value::Null}})
    }

    /// The status and error type for a failed turn.
    fn from_turn(error: &AgentError) -> Self {
        let (status, kind) = match provider_error(&error.error) {
            Some(ProviderError::RateLimited { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
            }
            Some(ProviderError::ContextTooLong { .. } | ProviderError::BadRequest { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            Some(ProviderError::Timeout { .. }) => (StatusCode::GATEWAY_TIMEOUT, "upstream_error"),
            Some(_) => (StatusCode::BAD_GATEWAY, "upstream_error"),
            None => match &error.error {
                PipelineError::ExecutionTimeout(_) | PipelineError::IdleTimeout(_) => {
                    (StatusCode::GATEWAY_TIMEOUT, "timeout_error")
                }
                PipelineError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            },
        };
        Self {
            status,
            kind,
            message: promptkit::ErrorChain(error).to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

/// The provider error at the root of a failed turn, if a model call caused it.
fn provider_error(error: &PipelineError) -> Option<&ProviderError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(p) = e.downcast_ref::<ProviderError>() {
            return Some(p);
        }
        source = e.source();
    }
    None
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The text of an OpenAI `content` (a string or an array of parts) as content parts.
fn content_parts(content: Option<&Value>, index: usize) -> Result<Vec<ContentPart>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![ContentPart::text(s.clone())]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("text") => part["text"].as_str().map(ContentPart::text).ok_or_else(|| {
                    ApiError::invalid(format!("messages[{index}]: a text part needs `text`"))
                }),
                Some("image_url") => part["image_url"]["url"]
                    .as_str()
                    .map(|url| ContentPart::Image(Media::url(url)))
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "messages[{index}]: an image_url part needs `image_url.url`"
                        ))
                    }),
                other => Err(ApiError::invalid(format!(
                    "messages[{index}]: unsupported content part type {}",
                    other.map_or_else(|| "(none)".to_owned(), |t| format!("`{t}`"))
                ))),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(format!(
            "messages[{index}].content must be a string or an array of parts"
        ))),
    }
}

fn text_of(parts: &[ContentPart]) -> String {
    parts.iter().filter_map(ContentPart::as_text).collect()
}

/// A request's conversation: system prompt, earlier messages and the new message.
#[derive(Debug)]
struct Conversation {
    system: Option<String>,
    history: Vec<Message>,
    message: Message,
}

fn conversation(messages: Vec<WireMessage>) -> Result<Conversation, ApiError> {
    let mut system: Option<String> = None;
    let mut history = Vec::with_capacity(messages.len());
    for (index, m) in messages.into_iter().enumerate() {
        let parts = content_parts(m.content.as_ref(), index)?;
        let message = match m.role.as_str() {
            "system" | "developer" => {
                let text = text_of(&parts);
                match &mut system {
                    Some(s) => {
                        s.push_str("\n\n");
                        s.push_str(&text);
                    }
                    None => system = Some(text),
                }
                continue;
            }
            "user" => Message {
                content: parts,
                ..Message::new(Role::User)
            },
            "assistant" => {
                let mut message = Message {
                    content: parts,
                    ..Message::new(Role::Assistant)
                };
                for call in m.tool_calls {
                    message = message.with_tool_call(promptkit::ToolCall::from_raw_arguments(
                        call.id,
                        call.function.name,
                        &call.function.arguments,
                    ));
                }
                message
            }
            "tool" => {
                let Some(id) = m.tool_call_id else {
                    return Err(ApiError::invalid(format!(
                        "messages[{index}]: a tool message needs `tool_call_id`"
                    )));
                };
                Message::tool(ToolResult::text(
                    id,
                    m.name.unwrap_or_default(),
                    text_of(&parts),
                ))
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{index}]: unknown role `{other}`"
                )));
            }
        };
        history.push(message);
    }
    let message = match history.pop() {
        Some(m) if m.role == Role::User => m,
        Some(m) => {
            return Err(ApiError::invalid(format!(
                "the last message must be from the user, not `{}`",
                m.role.as_str()
            )));
        }
        None => return Err(ApiError::invalid("`messages` holds no user message")),
    };
    Ok(Conversation {
        system,
        history,
        message,
    })
}

fn session_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    for name in SESSION_HEADERS {
        if let Some(value) = headers.get(name) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::invalid(format!("header `{name}` is not text")))?
                .trim();
            if value.is_empty() {
                return Err(ApiError::invalid(format!("header `{name}` is empty")));
            }
            return Ok(Some(value.to_owned()));
        }
    }
    Ok(None)
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ChatRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    let session = session_header(&headers)?;
    let conversation = conversation(request.messages)?;
    let permit = tokio::time::timeout(app.queue_timeout, Arc::clone(&app.slots).acquire_owned())
        .await
        .map_err(|_| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "overloaded",
            message: format!(
                "every slot is busy; waited {:?} (raise --max-concurrency)",
                app.queue_timeout
            ),
        })?
        .map_err(|_| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable",
            message: "the server is shutting down".to_owned(),
        })?;

    let mut turn = match &session {
        Some(id) => RunData::for_session(id.clone()),
        None => RunData::default(),
    };
    turn.user_id = request.user;
    turn.system_prompt = conversation.system;
    let (agent, history) = match &session {
        // The store holds the conversation; the client's copy of it is not replayed.
        Some(_) => (&app.agents.stateful, Vec::new()),
        None => (&app.agents.stateless, conversation.history),
    };
    // The response is built from text events and the finished reply.
    let reply = agent
        .stream_with_history(turn, history, conversation.message)
        .map_err(|e| ApiError::from_turn(&e))?;

    let id = app.completion_id();
    let created = promptkit::Timestamp::now().as_unix_millis() / 1000;
    let mut response = if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let state = SseState::new(reply, &id, created, &app.model_json, include_usage, permit);
        let mut frames = SseFrames {
            state,
            ending: None,
        };
        let first = frames.first().await?;
        let frames = stream::iter(first.map(Ok)).chain(frames);
        let mut response = Response::new(Body::from_stream(frames));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        let result = reply.finish().await;
        drop(permit);
        match result {
            Ok(reply) => json_response(
                StatusCode::OK,
                &completion(&id, created, &app.model, &reply),
            ),
            Err(e) => return Err(ApiError::from_turn(&e)),
        }
    };
    if let Some(session) = session
        && let Ok(value) = HeaderValue::from_str(&session)
    {
        response.headers_mut().insert("x-session-id", value);
    }
    Ok(response)
}

fn finish_reason(reply: &Reply) -> &str {
    if !reply.pending.is_empty() {
        return "tool_calls";
    }
    match reply.message().and_then(|m| m.finish_reason.as_ref()) {
        Some(promptkit::FinishReason::MaxTokens) => "length",
        Some(promptkit::FinishReason::ContentFilter | promptkit::FinishReason::Refusal) => {
            "content_filter"
        }
        _ => "stop",
    }
}

fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.input_tokens.unwrap_or(0);
    let completion = usage.output_tokens.unwrap_or(0);
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion})
}

fn completion(id: &str, created: i64, model: &str, reply: &Reply) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": reply.text()},
                     "finish_reason": finish_reason(reply)}],
        "usage": usage_json(&reply.usage),
    })
}

/// State of one SSE response. Dropping it (the client went away) drops the reply stream,
/// which cancels the turn, and frees the concurrency slot.
struct SseState {
    reply: Option<ReplyStream>,
    /// What every chunk of this response opens with, up to its `choices`:
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,`.
    head: Vec<u8>,
    include_usage: bool,
    first: bool,
    _permit: OwnedSemaphorePermit,
}

/// How long a streamed response waits for its first frame before sending its headers anyway.
///
/// Holding the headers until the answer starts puts them in the same write as the first
/// chunk (one system call and one wake-up of the client fewer per response), and lets a turn
/// that fails before its first token answer with a real HTTP status instead of an error event
/// in a `200` stream. A turn that takes longer to start (a slow tool round) gets its headers
/// at this point, for clients and proxies that time out waiting for them.
const HEADER_HOLD: Duration = Duration::from_secs(1);

impl SseState {
    /// `id` is the completion id (ASCII letters, digits and `-`) and `model_json` the model
    /// name as a JSON string: both go into the frames as they are.
    fn new(
        reply: ReplyStream,
        id: &str,
        created: i64,
        model_json: &str,
        include_usage: bool,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let mut head = Vec::with_capacity(96 + id.len() + model_json.len());
        head.extend_from_slice(b"data: {\"id\":\"");
        head.extend_from_slice(id.as_bytes());
        head.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
        write_json(&mut head, &created);
        head.extend_from_slice(b",\"model\":");
        head.extend_from_slice(model_json.as_bytes());
        head.push(b',');
        Self {
            reply: Some(reply),
            head,
            include_usage,
            first: true,
            _permit: permit,
        }
    }

    /// Appends one `chat.completion.chunk` frame to `out`; `delta` writes its delta object.
    /// The fixed parts are copied as text: this runs once per streamed piece of text.
    fn frame(&self, out: &mut Vec<u8>, delta: impl FnOnce(&mut Vec<u8>), finish: Option<&str>) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":");
        delta(out);
        out.extend_from_slice(b",\"finish_reason\":");
        match finish {
            Some(reason) => {
                out.push(b'"');
                out.extend_from_slice(reason.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }

    /// A content chunk: `{"content": text}`, with the role on the first.
    fn content(&mut self, text: &str) -> Bytes {
        let opening: &[u8] = if std::mem::take(&mut self.first) {
            b"{\"role\":\"assistant\",\"content\":"
        } else {
            b"{\"content\":"
        };
        let mut out = Vec::with_capacity(self.head.len() + text.len() + 96);
        self.frame(
            &mut out,
            |out| {
                out.extend_from_slice(opening);
                write_json(out, text);
                out.push(b'}');
            },
            None,
        );
        Bytes::from(out)
    }

    /// The closing frames: finish chunk, usage chunk when asked, `[DONE]`; or an error event.
    fn closing(&self, result: Result<Reply, AgentError>) -> Bytes {
        match result {
            Ok(reply) => {
                let mut out = Vec::with_capacity(2 * self.head.len() + 160);
                if self.first {
                    // An answer without text still opens with the role.
                    self.frame(
                        &mut out,
                        |out| out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}"),
                        None,
                    );
                }
                self.frame(
                    &mut out,
                    |out| out.extend_from_slice(b"{}"),
                    Some(finish_reason(&reply)),
                );
                if self.include_usage {
                    out.extend_from_slice(&self.head);
                    out.extend_from_slice(b"\"choices\":[],\"usage\":");
                    write_json(&mut out, &usage_json(&reply.usage));
                    out.extend_from_slice(b"}\n\n");
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
            Err(e) => {
                let error = ApiError::from_turn(&e);
                Bytes::from(format!("data: {}\n\n", error.body()))
            }
        }
    }
}

/// Appends `value` as JSON, written straight into `out` (`Value`'s `Display` and
/// `to_string` go through the formatter for every token).
fn write_json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    // Writing into memory cannot fail, and strings, integers and `Value`s always serialise.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The frames of an SSE response: a hand-written stream, so that the response state stays
/// where it is instead of moving into a new future for every frame.
struct SseFrames {
    state: SseState,
    /// The turn's output has ended: its result, awaited next.
    ending: Option<promptkit::BoxFuture<'static, Result<Reply, AgentError>>>,
}

/// What a response sends next.
enum Step {
    /// A content chunk, ready to write.
    Content(Bytes),
    /// The turn's result: the closing frames, or its error.
    End(Result<Reply, AgentError>),
}

impl SseFrames {
    /// The next step, `None` once the end has been taken. State lives in `self`, so a caller
    /// that stops waiting loses nothing.
    fn poll_step(&mut self, cx: &mut task::Context<'_>) -> Poll<Option<Step>> {
        loop {
            if let Some(ending) = self.ending.as_mut() {
                let result = ready!(ending.as_mut().poll(cx));
                self.ending = None;
                return Poll::Ready(Some(Step::End(result)));
            }
            let Some(reply) = self.state.reply.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(reply).poll_next(cx)) {
                Some(AgentEvent::Text(text)) if !text.is_empty() => {
                    return Poll::Ready(Some(Step::Content(self.state.content(&text))));
                }
                Some(_) => {}
                None => {
                    if let Some(reply) = self.state.reply.take() {
                        self.ending = Some(Box::pin(reply.finish()));
                    }
                }
            }
        }
    }

    /// Waits, for up to [`HEADER_HOLD`], for the first frame of the response.
    ///
    /// # Errors
    /// The turn's error, when it fails before its first frame.
    async fn first(&mut self) -> Result<Option<Bytes>, ApiError> {
        match tokio::time::timeout(HEADER_HOLD, std::future::poll_fn(|cx| self.poll_step(cx))).await
        {
            // Still waiting: the headers go now, the frame follows in the stream.
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(Step::Content(frame))) => Ok(Some(frame)),
            // The turn ended before any text: an error becomes the response's status.
            Ok(Some(Step::End(Err(e)))) => Err(ApiError::from_turn(&e)),
            Ok(Some(Step::End(Ok(reply)))) => Ok(Some(self.state.closing(Ok(reply)))),
        }
    }
}

impl Stream for SseFrames {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Poll::Ready(ready!(this.poll_step(cx)).map(|step| {
            Ok(match step {
                Step::Content(frame) => frame,
                Step::End(result) => this.state.closing(result),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::push_hex;

    #[test]
    fn hex_is_padded_to_the_width_and_never_cut() {
        let hex = |n, width| {
            let mut s = String::new();
            push_hex(&mut s, n, width);
            s
        };
        assert_eq!(hex(0, 1), "0");
        assert_eq!(hex(0, 8), "00000000");
        assert_eq!(hex(0x1a, 8), "0000001a");
        assert_eq!(hex(0x6_5f3e_1c2d, 1), format!("{:x}", 0x6_5f3e_1c2d_u64));
        assert_eq!(hex(u64::MAX, 8), "ffffffffffffffff");
        assert_eq!(hex(0x1_2345_6789, 8), "123456789");
    }
}
