//! A mock OpenAI-compatible upstream on 127.0.0.1.
//!
//! Two modes share one server:
//!
//! - **Benchmark mode** (the default, described in the project's `benchmarks.md`):
//!   `POST …/chat/completions` answers like a small model with the timings of a [`Profile`].
//!   If any message has role `tool`, a normal completion; else, when `stream` is false, a
//!   request for the tool `lookup_order` with `{"order_id":"12345"}`; else, when the request
//!   offers tools, the same tool call streamed (one chunk after the first-chunk delay, then a
//!   `tool_calls` finish chunk), as a streaming client of a real model receives it; else a
//!   stream of `chunk-1 ` … `chunk-N `, a stop chunk, a usage chunk when
//!   `stream_options.include_usage` is set, and `data: [DONE]`. `POST /tool` returns
//!   `{"order_id":"12345","status":"shipped","eta":"2026-04-10"}` after the profile's tool
//!   delay. `POST …/v1/messages` answers the same way in the Anthropic Messages format
//!   (`tool_result` blocks play the part of `tool` messages; a stream is `message_start`,
//!   one text block of `chunk-1 ` … `chunk-N `, `message_delta` with `end_turn` and the
//!   usage, `message_stop`, each with its `event:` line). `POST …/models/{model}:generateContent`
//!   and `…:streamGenerateContent?alt=sse` answer the same way in the Gemini format
//!   (`functionResponse` parts play the part of `tool` messages; a stream is one SSE chunk
//!   per `chunk-N `, the last with `finishReason: STOP` and the usage).
//! - **Scripted mode**: [`MockUpstream::push`] queues canned responses ([`Scripted`]): a
//!   status, headers and body, or an SSE script with delays, malformed frames and an abrupt
//!   disconnect. Each call to a path other than `/tool` takes the next queued response
//!   (so scripts serve any vendor's path, `/v1/messages` included); when the queue is empty
//!   the benchmark behaviour applies. [`chunks`] builds OpenAI stream chunks, [`anthropic`]
//!   Anthropic Messages events (framed with `event:` lines by [`SseStep::Event`]), [`gemini`]
//!   Gemini `GenerateContentResponse` chunks (framed as plain `data:` lines by
//!   [`SseStep::Json`]).
//!
//! Every request is recorded ([`MockUpstream::requests`]) unless recording is switched off
//! ([`MockUpstream::record_requests`]), as the benchmark binary does: a load run sends
//! millions of requests that no one reads back.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Timings of the benchmark mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Content chunks per stream.
    pub chunks: usize,
    /// Delay before the first chunk (and before a non-streamed answer).
    pub first_chunk_delay: Duration,
    /// Delay between chunks.
    pub chunk_interval: Duration,
    /// Delay of the `/tool` endpoint.
    pub tool_delay: Duration,
}

impl Profile {
    /// 10 chunks, 10 ms first, 10 ms between, tool 10 ms.
    pub const FAST: Self = Self {
        chunks: 10,
        first_chunk_delay: Duration::from_millis(10),
        chunk_interval: Duration::from_millis(10),
        tool_delay: Duration::from_millis(10),
    };

    /// 30 chunks, 200 ms first, 30 ms between, tool 500 ms.
    pub const REALISTIC: Self = Self {
        chunks: 30,
        first_chunk_delay: Duration::from_millis(200),
        chunk_interval: Duration::from_millis(30),
        tool_delay: Duration::from_millis(500),
    };

    /// 3 chunks and no delays, for unit tests.
    pub const INSTANT: Self = Self {
        chunks: 3,
        first_chunk_delay: Duration::ZERO,
        chunk_interval: Duration::ZERO,
        tool_delay: Duration::ZERO,
    };

    /// The profile called `name` (`fast`, `realistic` or `instant`).
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "fast" => Some(Self::FAST),
            "realistic" => Some(Self::REALISTIC),
            "instant" => Some(Self::INSTANT),
            _ => None,
        }
    }
}

/// One step of a scripted SSE body.
#[derive(Debug, Clone, PartialEq)]
pub enum SseStep {
    /// `data: <json>` and a blank line.
    Json(Value),
    /// `data: <text>` and a blank line (for malformed frames).
    Data(String),
    /// `event: <name>`, `data: <json>` and a blank line (the Anthropic framing).
    Event(String, Value),
    /// Bytes sent verbatim.
    Raw(String),
    /// `data: [DONE]` and a blank line.
    Done,
    /// A pause.
    Delay(Duration),
    /// `text` sent verbatim `times` times (`None`: until the client goes away), with `every`
    /// between two sends: floods, endless streams and huge bodies, generated as they are
    /// sent (never held whole).
    Repeat {
        /// The bytes of one send.
        text: String,
        /// How many sends.
        times: Option<u64>,
        /// The pause between two sends.
        every: Duration,
    },
    /// Abort the connection without finishing the body. The server waits 20 ms first, so
    /// the bytes before it reach the client instead of being dropped with the connection.
    Disconnect,
}

/// A canned response of the scripted mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Scripted {
    /// The HTTP status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: ScriptedBody,
}

/// The body of a [`Scripted`] response.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptedBody {
    /// A JSON body.
    Json(Value),
    /// A text body.
    Text(String),
    /// An SSE body (`text/event-stream`).
    Sse(Vec<SseStep>),
}

impl Scripted {
    /// A JSON response.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: ScriptedBody::Json(body),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: ScriptedBody::Text(body.into()),
        }
    }

    /// A 200 SSE response.
    pub fn sse(steps: Vec<SseStep>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: ScriptedBody::Sse(steps),
        }
    }

    /// An OpenAI-style error: `{"error":{"message","type","code"}}`.
    pub fn openai_error(status: u16, kind: &str, code: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({"error": {"message": message, "type": kind, "code": code}}),
        )
    }

    /// An Anthropic-style error: `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    }

    /// A Gemini-style error: `{"error":{"code","message","status"}}`, with `details` when
    /// given (for example a `google.rpc.RetryInfo`).
    pub fn gemini_error(code: u16, status: &str, message: &str, details: Vec<Value>) -> Self {
        let mut error = json!({"code": code, "message": message, "status": status});
        if !details.is_empty() {
            error["details"] = Value::Array(details);
        }
        Self::json(code, json!({"error": error}))
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Builders of OpenAI Chat Completions stream chunks for scripts.
pub mod chunks {
    use serde_json::{Value, json};

    fn chunk(choices: Value) -> Value {
        let mut value = json!({"id": "chatcmpl-test", "object": "chat.completion.chunk",
            "created": 0, "model": "mock-model"});
        value["choices"] = choices;
        value
    }

    /// A chunk with text content.
    pub fn text(content: &str) -> Value {
        chunk(json!([{"index": 0, "delta": {"content": content}, "finish_reason": null}]))
    }

    /// A chunk starting tool call `index` with its id, name and first argument text.
    pub fn tool_start(index: u32, id: &str, name: &str, arguments: &str) -> Value {
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": index, "id": id,
            "type": "function", "function": {"name": name, "arguments": arguments}}]},
            "finish_reason": null}]),
        )
    }

    /// A chunk with more argument text for tool call `index`.
    pub fn tool_args(index: u32, arguments: &str) -> Value {
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": index,
            "function": {"arguments": arguments}}]}, "finish_reason": null}]),
        )
    }

    /// A chunk with an empty delta and a finish reason.
    pub fn finish(reason: &str) -> Value {
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": reason}]))
    }

    /// A usage-only chunk (`choices: []`), as sent with `include_usage`.
    pub fn usage(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> Value {
        let mut value = chunk(json!([]));
        value["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}});
        value
    }
}

/// Builders of Anthropic Messages stream events and responses for scripts.
///
/// Each event builder returns the event's JSON; [`anthropic::step`] frames it with its
/// `event:` line, as the real API does.
///
/// ```
/// use promptkit_testkit::upstream::{Scripted, anthropic};
///
/// let mut steps = vec![anthropic::step(anthropic::message_start(12, 0, 0))];
/// steps.extend(anthropic::text_block(0, &["Hel", "lo"]));
/// steps.push(anthropic::step(anthropic::message_delta("end_turn", 2)));
/// steps.push(anthropic::step(anthropic::message_stop()));
/// let _ = Scripted::sse(steps);
/// ```
pub mod anthropic {
    use serde_json::{Value, json};

    use super::SseStep;

    /// Frames an event as `event: <its type>` plus `data: <json>`.
    pub fn step(event: Value) -> SseStep {
        let name = event["type"].as_str().unwrap_or("message").to_owned();
        SseStep::Event(name, event)
    }

    /// `message_start` with the input counts (Anthropic reports cache reads and writes
    /// apart from `input_tokens`).
    pub fn message_start(input: u64, cache_read: u64, cache_write: u64) -> Value {
        json!({"type": "message_start", "message": {"id": "msg_test", "type": "message",
            "role": "assistant", "model": "mock-claude", "content": [], "stop_reason": null,
            "usage": {"input_tokens": input, "cache_read_input_tokens": cache_read,
                      "cache_creation_input_tokens": cache_write, "output_tokens": 1}}})
    }

    /// `content_block_start` of a text block.
    pub fn text_start(index: u32) -> Value {
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}})
    }

    /// A `text_delta`.
    pub fn text_delta(index: u32, text: &str) -> Value {
        json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}})
    }

    /// `content_block_start` of a thinking block.
    pub fn thinking_start(index: u32) -> Value {
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "thinking", "thinking": ""}})
    }

    /// A `thinking_delta`.
    pub fn thinking_delta(index: u32, thinking: &str) -> Value {
        json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "thinking_delta", "thinking": thinking}})
    }

    /// A `signature_delta`.
    pub fn signature_delta(index: u32, signature: &str) -> Value {
        json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "signature_delta", "signature": signature}})
    }

    /// `content_block_start` of a redacted thinking block.
    pub fn redacted_thinking(index: u32, data: &str) -> Value {
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "redacted_thinking", "data": data}})
    }

    /// `content_block_start` of a `tool_use` block.
    pub fn tool_use_start(index: u32, id: &str, name: &str) -> Value {
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})
    }

    /// An `input_json_delta`.
    pub fn input_json_delta(index: u32, partial_json: &str) -> Value {
        json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial_json}})
    }

    /// `content_block_stop`.
    pub fn block_stop(index: u32) -> Value {
        json!({"type": "content_block_stop", "index": index})
    }

    /// `message_delta` with the stop reason and output count.
    pub fn message_delta(stop_reason: &str, output_tokens: u64) -> Value {
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}})
    }

    /// `message_stop`.
    pub fn message_stop() -> Value {
        json!({"type": "message_stop"})
    }

    /// `ping`.
    pub fn ping() -> Value {
        json!({"type": "ping"})
    }

    /// An `error` event.
    pub fn error(kind: &str, message: &str) -> Value {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    }

    /// A whole text block: start, one delta per piece, stop.
    pub fn text_block(index: u32, pieces: &[&str]) -> Vec<SseStep> {
        let mut steps = vec![step(text_start(index))];
        steps.extend(pieces.iter().map(|p| step(text_delta(index, p))));
        steps.push(step(block_stop(index)));
        steps
    }

    /// A whole thinking block with its signature.
    pub fn thinking_block(index: u32, thinking: &str, signature: &str) -> Vec<SseStep> {
        vec![
            step(thinking_start(index)),
            step(thinking_delta(index, thinking)),
            step(signature_delta(index, signature)),
            step(block_stop(index)),
        ]
    }

    /// A whole `tool_use` block, its input split into the given pieces.
    pub fn tool_use_block(index: u32, id: &str, name: &str, pieces: &[&str]) -> Vec<SseStep> {
        let mut steps = vec![step(tool_use_start(index, id, name))];
        steps.extend(pieces.iter().map(|p| step(input_json_delta(index, p))));
        steps.push(step(block_stop(index)));
        steps
    }

    /// A non-streaming Messages response.
    pub fn message(content: Value, stop_reason: &str, input: u64, output: u64) -> Value {
        let mut message = json!({"id": "msg_test", "type": "message", "role": "assistant",
            "model": "mock-claude", "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output,
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}});
        message["content"] = content;
        message
    }
}

/// Builders of Gemini `GenerateContentResponse` chunks and responses for scripts.
///
/// A stream (`streamGenerateContent?alt=sse`) is a series of chunks, each one
/// `SseStep::Json`; the last carries the finish reason and the usage. A non-streaming
/// answer is one [`gemini::response`].
///
/// ```
/// use promptkit_testkit::upstream::{Scripted, SseStep, gemini};
/// use serde_json::json;
///
/// let _ = Scripted::sse(vec![
///     SseStep::Json(gemini::chunk(vec![gemini::text("Hel")])),
///     SseStep::Json(gemini::last_chunk(
///         vec![gemini::function_call("lookup", json!({"id": 1}))],
///         "STOP",
///         gemini::usage(12, 3, 0, 0),
///     )),
/// ]);
/// ```
pub mod gemini {
    use serde_json::{Value, json};

    /// A text part.
    pub fn text(text: &str) -> Value {
        json!({"text": text})
    }

    /// A thought (reasoning summary) part, with its signature when given.
    pub fn thought(text: &str, signature: Option<&str>) -> Value {
        let mut part = json!({"text": text, "thought": true});
        if let Some(signature) = signature {
            part["thoughtSignature"] = signature.into();
        }
        part
    }

    /// A `functionCall` part.
    pub fn function_call(name: &str, args: Value) -> Value {
        let mut call = json!({"name": name});
        call["args"] = args;
        json!({"functionCall": call})
    }

    /// `part` with a `thoughtSignature`.
    pub fn signed(mut part: Value, signature: &str) -> Value {
        part["thoughtSignature"] = signature.into();
        part
    }

    /// `usageMetadata`: `prompt` includes `cached`; `candidates` excludes `thoughts`.
    pub fn usage(prompt: u64, candidates: u64, cached: u64, thoughts: u64) -> Value {
        let mut usage = json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thoughts});
        if cached > 0 {
            usage["cachedContentTokenCount"] = cached.into();
        }
        if thoughts > 0 {
            usage["thoughtsTokenCount"] = thoughts.into();
        }
        usage
    }

    fn candidate(parts: Vec<Value>, finish: Option<&str>) -> Value {
        let mut candidate = json!({"content": {"role": "model"}, "index": 0});
        candidate["content"]["parts"] = Value::Array(parts);
        if let Some(finish) = finish {
            candidate["finishReason"] = finish.into();
        }
        candidate
    }

    /// A stream chunk with these parts and no finish reason.
    pub fn chunk(parts: Vec<Value>) -> Value {
        json!({"candidates": [candidate(parts, None)], "modelVersion": "mock-gemini",
            "responseId": "resp-test"})
    }

    /// The last stream chunk: parts (may be empty), the finish reason and the usage.
    pub fn last_chunk(parts: Vec<Value>, finish: &str, usage: Value) -> Value {
        let mut chunk = json!({"candidates": [candidate(parts, Some(finish))],
            "modelVersion": "mock-gemini", "responseId": "resp-test"});
        chunk["usageMetadata"] = usage;
        chunk
    }

    /// A non-streaming response.
    pub fn response(parts: Vec<Value>, finish: &str, usage: Value) -> Value {
        last_chunk(parts, finish, usage)
    }

    /// A response whose prompt was blocked (`promptFeedback.blockReason`, no candidates).
    pub fn blocked(reason: &str) -> Value {
        json!({"promptFeedback": {"blockReason": reason, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": "mock-gemini"})
    }

    /// A `google.rpc.RetryInfo` error detail asking to wait `seconds`.
    pub fn retry_info(seconds: u64) -> Value {
        json!({"@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{seconds}s")})
    }
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    profile: Profile,
    script: Mutex<VecDeque<Scripted>>,
    /// Whether requests are kept for [`MockUpstream::requests`].
    recording: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running mock upstream. Stops when dropped or on [`MockUpstream::shutdown`].
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockUpstream {
    /// Starts a server on 127.0.0.1 with a random port.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn start(profile: Profile) -> io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), profile).await
    }

    /// Starts a server on `addr`.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn bind(addr: SocketAddr, profile: Profile) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            profile,
            script: Mutex::default(),
            recording: AtomicBool::new(true),
            requests: Mutex::default(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Streams are many small writes: send each at once rather than wait for ACKs.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:{port}/v1`, the base URL to configure an OpenAI provider with.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:{port}/v1beta`, the base URL to configure a Gemini provider with.
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// `http://127.0.0.1:{port}`, for Azure-style endpoints.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a canned response.
    pub fn push(&self, response: Scripted) {
        lock(&self.shared.script).push_back(response);
    }

    /// Switches the recording of requests on (the default) or off.
    ///
    /// A recorded request keeps its headers and parsed body until the server is dropped; a
    /// long load run should switch recording off, or the server's memory grows with every
    /// request and the copying competes with the system under test for the CPU.
    pub fn record_requests(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// The requests received while recording was on.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Canned responses not served yet.
    pub fn pending(&self) -> usize {
        lock(&self.shared.script).len()
    }

    /// Stops the server and waits for it (open streams are finished first).
    ///
    /// # Errors
    ///
    /// When the server failed.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Serves until the process is interrupted (for the binary).
    ///
    /// # Errors
    ///
    /// When the server failed.
    pub async fn run_until_ctrl_c(self) -> io::Result<()> {
        tokio::signal::ctrl_c().await?;
        self.shutdown().await
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if shared.recording.load(Ordering::Relaxed) {
        lock(&shared.requests).push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: json_body.clone(),
        });
    }
    let profile = shared.profile;
    if uri.path() == "/tool" {
        tokio::time::sleep(profile.tool_delay).await;
        return json_response(
            200,
            &json!({"order_id": "12345", "status": "shipped", "eta": "2026-04-10"}),
        );
    }
    let scripted = lock(&shared.script).pop_front();
    if let Some(scripted) = scripted {
        return scripted_response(scripted);
    }
    if method == Method::POST && uri.path().ends_with("/v1/messages") {
        return anthropic_benchmark_response(&json_body, profile).await;
    }
    if method == Method::POST
        && let Some((_, action)) = uri.path().rsplit_once(':')
        && uri.path().contains("/models/")
    {
        let sse = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
        match action {
            "generateContent" => {
                return gemini_benchmark_response(&json_body, false, profile).await;
            }
            "streamGenerateContent" if sse => {
                return gemini_benchmark_response(&json_body, true, profile).await;
            }
            "streamGenerateContent" => {
                return json_response(
                    400,
                    &json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                        "message": "the mock upstream streams only with alt=sse"}}),
                );
            }
            _ => {}
        }
    }
    if method != Method::POST || !uri.path().ends_with("/chat/completions") {
        return json_response(
            404,
            &json!({"error": {"message": format!("no route for {method} {}", uri.path()),
                "type": "invalid_request_error", "code": "not_found"}}),
        );
    }
    benchmark_response(&json_body, profile).await
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// An SSE response sending each frame after its delay.
fn timed_sse(frames: Vec<(Duration, Bytes)>) -> Response {
    let stream = futures_util::stream::unfold(frames.into_iter(), |mut frames| async move {
        let (delay, bytes) = frames.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, Infallible>(bytes), frames))
    });
    sse_response(Body::from_stream(stream))
}

fn scripted_response(scripted: Scripted) -> Response {
    let mut response = match scripted.body {
        ScriptedBody::Json(value) => json_response(scripted.status, &value),
        ScriptedBody::Text(text) => {
            let mut r = Response::new(Body::from(text));
            *r.status_mut() = StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::OK);
            r
        }
        ScriptedBody::Sse(steps) => {
            let mut r = sse_response(sse_body(steps));
            *r.status_mut() = StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::OK);
            r
        }
    };
    for (name, value) in scripted.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A repeat in progress: the bytes, the sends left (`None`: endless), the pause.
type Repeating = (Bytes, Option<u64>, Duration);

fn sse_body(steps: Vec<SseStep>) -> Body {
    let state: (VecDeque<SseStep>, Option<Repeating>) = (VecDeque::from(steps), None);
    let stream = futures_util::stream::unfold(state, |(mut steps, mut repeating)| async move {
        loop {
            if let Some((bytes, left, every)) = repeating.take() {
                if left == Some(0) {
                    continue;
                }
                if !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
                let next = (bytes.clone(), left.map(|n| n - 1), every);
                return Some((Ok(bytes), (steps, Some(next))));
            }
            let step = steps.pop_front()?;
            let bytes = match step {
                SseStep::Json(value) => format!("data: {value}\n\n"),
                SseStep::Data(text) => format!("data: {text}\n\n"),
                SseStep::Event(name, value) => format!("event: {name}\ndata: {value}\n\n"),
                SseStep::Raw(text) => text,
                SseStep::Done => "data: [DONE]\n\n".to_owned(),
                SseStep::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    continue;
                }
                SseStep::Repeat { text, times, every } => {
                    if times == Some(0) {
                        continue;
                    }
                    let bytes = Bytes::from(text);
                    let next = (bytes.clone(), times.map(|n| n - 1), every);
                    return Some((Ok(bytes), (steps, Some(next))));
                }
                SseStep::Disconnect => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    steps.clear();
                    return Some((
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "scripted disconnect",
                        )),
                        (steps, None),
                    ));
                }
            };
            return Some((Ok(Bytes::from(bytes)), (steps, None)));
        }
    });
    Body::from_stream(stream)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn prompt_tokens(request: &Value) -> u64 {
    let chars: usize = request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

async fn benchmark_response(request: &Value, profile: Profile) -> Response {
    let model = request["model"].as_str().unwrap_or("mock-model").to_owned();
    let has_tool_result = request["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    let stream = request["stream"].as_bool().unwrap_or(false);
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let prompt = prompt_tokens(request);
    let completion = u64::try_from(profile.chunks).unwrap_or(u64::MAX) * 2;
    let created = now_secs();
    let id = format!("chatcmpl-mock-{created}");

    if !stream {
        tokio::time::sleep(profile.first_chunk_delay).await;
        let message = if has_tool_result {
            let text: String = (1..=profile.chunks)
                .map(|i| format!("chunk-{i} "))
                .collect();
            (json!({"role": "assistant", "content": text}), "stop")
        } else {
            (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_lookup_order_1", "type": "function",
                    "function": {"name": "lookup_order",
                                 "arguments": "{\"order_id\":\"12345\"}"}}]}),
                "tool_calls",
            )
        };
        return json_response(
            200,
            &json!({"id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message.0, "finish_reason": message.1}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}),
        );
    }

    let chunk = |delta: Value, finish: Option<&str>| -> Bytes {
        let value = json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        Bytes::from(format!("data: {value}\n\n"))
    };
    let offers_tools = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let mut frames: Vec<(Duration, Bytes)> = Vec::with_capacity(profile.chunks + 3);
    if offers_tools && !has_tool_result {
        let call = json!({"role": "assistant", "content": null, "tool_calls": [{
            "index": 0, "id": "call_lookup_order_1", "type": "function",
            "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"12345\"}"}}]});
        frames.push((profile.first_chunk_delay, chunk(call, None)));
        frames.push((Duration::ZERO, chunk(json!({}), Some("tool_calls"))));
    }
    let text_chunks = if frames.is_empty() { profile.chunks } else { 0 };
    for i in 1..=text_chunks {
        let delay = if i == 1 {
            profile.first_chunk_delay
        } else {
            profile.chunk_interval
        };
        let delta = if i == 1 {
            json!({"role": "assistant", "content": format!("chunk-{i} ")})
        } else {
            json!({"content": format!("chunk-{i} ")})
        };
        frames.push((delay, chunk(delta, None)));
    }
    if text_chunks > 0 {
        frames.push((profile.chunk_interval, chunk(json!({}), Some("stop"))));
    }
    if include_usage {
        let value = json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}});
        frames.push((Duration::ZERO, Bytes::from(format!("data: {value}\n\n"))));
    }
    frames.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    timed_sse(frames)
}

async fn anthropic_benchmark_response(request: &Value, profile: Profile) -> Response {
    let model = request["model"]
        .as_str()
        .unwrap_or("mock-claude")
        .to_owned();
    let has_tool_result = request["messages"].as_array().is_some_and(|messages| {
        messages.iter().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let stream = request["stream"].as_bool().unwrap_or(false);
    let input = u64::try_from(request.to_string().len().div_ceil(4)).unwrap_or(u64::MAX);
    let output = u64::try_from(profile.chunks).unwrap_or(u64::MAX) * 2;
    let text: String = (1..=profile.chunks)
        .map(|i| format!("chunk-{i} "))
        .collect();
    let usage = json!({"input_tokens": input, "output_tokens": output,
        "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0});

    if !stream {
        tokio::time::sleep(profile.first_chunk_delay).await;
        let (content, stop) = if has_tool_result {
            (json!([{"type": "text", "text": text}]), "end_turn")
        } else {
            (
                json!([{"type": "tool_use", "id": "toolu_lookup_order_1", "name": "lookup_order",
                    "input": {"order_id": "12345"}}]),
                "tool_use",
            )
        };
        return json_response(
            200,
            &json!({"id": format!("msg_mock_{}", now_secs()), "type": "message",
                "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": null, "usage": usage}),
        );
    }

    let frame = |event: &Value| -> Bytes {
        let name = event["type"].as_str().unwrap_or("message");
        Bytes::from(format!("event: {name}\ndata: {event}\n\n"))
    };
    let mut frames: Vec<(Duration, Bytes)> = Vec::with_capacity(profile.chunks + 6);
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    frames.push((
        profile.first_chunk_delay,
        frame(
            &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "usage": start_usage}}),
        ),
    ));
    frames.push((
        Duration::ZERO,
        frame(&json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})),
    ));
    for i in 1..=profile.chunks {
        let delay = if i == 1 {
            Duration::ZERO
        } else {
            profile.chunk_interval
        };
        frames.push((
            delay,
            frame(&json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": format!("chunk-{i} ")}})),
        ));
    }
    frames.push((
        profile.chunk_interval,
        frame(&json!({"type": "content_block_stop", "index": 0})),
    ));
    frames.push((
        Duration::ZERO,
        frame(&json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": output}})),
    ));
    frames.push((Duration::ZERO, frame(&json!({"type": "message_stop"}))));
    timed_sse(frames)
}

async fn gemini_benchmark_response(request: &Value, stream: bool, profile: Profile) -> Response {
    let has_tool_result = request["contents"].as_array().is_some_and(|contents| {
        contents.iter().any(|c| {
            c["parts"]
                .as_array()
                .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()))
        })
    });
    let prompt = u64::try_from(request.to_string().len().div_ceil(4)).unwrap_or(u64::MAX);
    let output = u64::try_from(profile.chunks).unwrap_or(u64::MAX) * 2;
    let envelope = |candidate: Value, usage: Value| -> Value {
        json!({"candidates": [candidate], "usageMetadata": usage,
            "modelVersion": "mock-gemini", "responseId": format!("resp-mock-{}", now_secs())})
    };
    let usage = |candidates: u64| {
        json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates})
    };

    if !stream {
        tokio::time::sleep(profile.first_chunk_delay).await;
        let parts = if has_tool_result {
            let text: String = (1..=profile.chunks)
                .map(|i| format!("chunk-{i} "))
                .collect();
            json!([{"text": text}])
        } else {
            json!([{"functionCall": {"name": "lookup_order", "args": {"order_id": "12345"}}}])
        };
        return json_response(
            200,
            &envelope(
                json!({"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                    "index": 0}),
                usage(output),
            ),
        );
    }

    let mut frames: Vec<(Duration, Bytes)> = Vec::with_capacity(profile.chunks);
    for i in 1..=profile.chunks {
        let delay = if i == 1 {
            profile.first_chunk_delay
        } else {
            profile.chunk_interval
        };
        let mut candidate = json!({"content": {"role": "model",
            "parts": [{"text": format!("chunk-{i} ")}]}, "index": 0});
        if i == profile.chunks {
            candidate["finishReason"] = json!("STOP");
        }
        let so_far = u64::try_from(i).unwrap_or(u64::MAX) * 2;
        frames.push((
            delay,
            Bytes::from(format!(
                "data: {}\r\n\r\n",
                envelope(candidate, usage(so_far))
            )),
        ));
    }
    timed_sse(frames)
}
