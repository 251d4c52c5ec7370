//! The HTTP machinery shared by the vendor providers: client settings, retries with
//! backoff, the concurrency limit, and the SSE stream driver.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use promptkit_core::{BoxStream, EventStream, ProviderError, StreamEvent, TimeoutPhase};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sse::{SseDecoder, SseEvent};

/// How failed calls are retried.
///
/// Only errors for which [`ProviderError::is_retryable`] holds are retried (rate limits,
/// 5xx, transport failures, timeouts). The delay before retry `n` (0-based) is drawn
/// uniformly from `[0, min(max_delay, initial_delay * 2^n)]` ("full jitter"), unless the
/// vendor sent `Retry-After`, which is honoured as is. A retry whose delay would end after
/// `max_elapsed` (measured from the first attempt) is not made. Streams are retried only
/// until their first event has arrived; a non-streaming call also when its body breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (`1` disables retries).
    pub max_attempts: u32,
    /// Base of the exponential backoff.
    pub initial_delay: Duration,
    /// Cap of one computed backoff delay.
    pub max_delay: Duration,
    /// Time budget for all attempts and waits.
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    /// No retries.
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_elapsed: Duration::ZERO,
        }
    }

    /// The backoff delay before retry `retry` (0-based), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let ceiling = self
            .initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }
}

impl Default for RetryPolicy {
    /// 3 attempts, 500 ms initial delay, 8 s cap, 60 s budget.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

/// Transport settings of an HTTP provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Deadline for establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Deadline for a whole non-streaming call, and for the response headers of a stream.
    /// A stream's first event must then arrive within `idle_timeout`
    /// ([`TimeoutPhase::FirstChunk`]).
    pub request_timeout: Duration,
    /// Longest silence allowed between two chunks of a stream
    /// ([`TimeoutPhase::Idle`] when it passes).
    pub idle_timeout: Duration,
    /// Most calls in flight at once through this provider (`None`: unlimited). Further calls
    /// wait for a slot; a stream holds its slot until it ends or is dropped.
    pub max_concurrency: Option<usize>,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl Default for HttpConfig {
    /// 10 s connect, 60 s request, 30 s idle, unlimited concurrency, default retries.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            max_concurrency: None,
            retry: RetryPolicy::default(),
        }
    }
}

impl HttpConfig {
    /// Builds a `reqwest` client with these settings (rustls on aws-lc-rs, HTTP/2 where
    /// the server offers it, pooled connections).
    ///
    /// # Errors
    ///
    /// [`ProviderError::Config`] when the TLS stack cannot be initialised.
    pub fn build_client(&self) -> Result<reqwest::Client, ProviderError> {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| ProviderError::Config {
                message: format!("cannot build the HTTP client: {e}"),
            })
    }
}

/// A client plus its concurrency limit: what a provider instance holds.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub(crate) client: reqwest::Client,
    pub(crate) config: HttpConfig,
    limit: Option<Arc<Semaphore>>,
}

/// Maps an error response (status, headers, body) to a typed error.
pub(crate) type ErrorMapper = fn(u16, &reqwest::header::HeaderMap, &str) -> ProviderError;

enum Outcome {
    Open(Box<Opened>),
    Body(Bytes),
}

/// A stream whose first SSE event has arrived.
pub(crate) struct Opened {
    response: reqwest::Response,
    decoder: SseDecoder,
    events: Vec<SseEvent>,
    /// The timer of the opening, handed on to the stream as its idle timer: one timer
    /// registration per stream instead of three (send, first event, idle).
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// Most bytes of an error body kept.
const ERROR_BODY_LIMIT: usize = 1 << 20;

impl Transport {
    pub(crate) fn new(client: reqwest::Client, config: HttpConfig) -> Self {
        let limit = config
            .max_concurrency
            .map(|n| Arc::new(Semaphore::new(n.max(1))));
        Self {
            client,
            config,
            limit,
        }
    }

    /// A POST of the JSON `body` to `url` with `headers` (and `Accept: text/event-stream`
    /// for a stream; `headers` may override either). The address is a parsed `Url`: parsing
    /// one (host, IDNA, path) costs about as much as the rest of building the request.
    ///
    /// The request is assembled whole and handed to reqwest at once: its builder methods
    /// each move the request (a few hundred bytes, into memory that is cold at every call),
    /// and adding headers one by one re-inserts what one clone of `headers` copies.
    pub(crate) fn post(
        &self,
        url: reqwest::Url,
        headers: &reqwest::header::HeaderMap,
        body: &Bytes,
        streaming: bool,
    ) -> reqwest::RequestBuilder {
        use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
        let mut map = headers.clone();
        map.entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        if streaming {
            map.entry(ACCEPT)
                .or_insert(HeaderValue::from_static("text/event-stream"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // reqwest's own builder turns credentials in the address into basic auth.
            return self.client.post(url).headers(map).body(body.clone());
        }
        let mut request = reqwest::Request::new(reqwest::Method::POST, url);
        *request.headers_mut() = map;
        *request.body_mut() = Some(body.clone().into());
        reqwest::RequestBuilder::from_parts(self.client.clone(), request)
    }

    async fn permit(&self) -> Result<Option<OwnedSemaphorePermit>, ProviderError> {
        match &self.limit {
            None => Ok(None),
            Some(sem) => Arc::clone(sem)
                .acquire_owned()
                .await
                .map(Some)
                .map_err(|_| ProviderError::Cancelled),
        }
    }

    /// Opens an SSE stream: sends the request built by `build` and reads up to the first
    /// complete SSE event, retrying (per the policy) anything that fails before that event
    /// (connection, status, a body that ends or breaks first). The stream decodes its events
    /// with the handler `handler` makes, applies the idle timeout and holds the concurrency
    /// permit until it ends.
    pub(crate) async fn open_stream<H: SseHandler + Unpin>(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        map_error: ErrorMapper,
        // Made once the stream is open: a handler held across the opening would sit in this
        // future twice (as the argument and as the local it becomes).
        handler: impl FnOnce() -> H + Send,
    ) -> Result<EventStream, ProviderError> {
        match self.run(build, map_error, true).await? {
            (Outcome::Open(opened), permit) => Ok(sse_stream(
                *opened,
                handler(),
                self.config.idle_timeout,
                permit,
            )),
            (Outcome::Body(_), _) => Err(ProviderError::Decode {
                message: "internal: a stream was read to the end".to_owned(),
                raw: String::new(),
            }),
        }
    }

    /// Runs a non-streaming call: sends and reads the whole body, retrying failures of
    /// either (a connection that breaks mid-body is retried too).
    pub(crate) async fn fetch(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        map_error: ErrorMapper,
    ) -> Result<Bytes, ProviderError> {
        match self.run(build, map_error, false).await? {
            (Outcome::Body(body), _) => Ok(body),
            (Outcome::Open(_), _) => Err(ProviderError::Decode {
                message: "internal: a body was not read".to_owned(),
                raw: String::new(),
            }),
        }
    }

    async fn run(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        map_error: ErrorMapper,
        streaming: bool,
    ) -> Result<(Outcome, Option<OwnedSemaphorePermit>), ProviderError> {
        let policy = self.config.retry;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let permit = self.permit().await?;
            let error = match self.send_once(build, map_error, streaming).await {
                Ok(outcome) => return Ok((outcome, permit)),
                Err(e) => e,
            };
            drop(permit);
            if !error.is_retryable() || attempt >= policy.max_attempts.max(1) {
                return Err(error);
            }
            let delay = error
                .retry_after()
                .unwrap_or_else(|| policy.backoff(attempt - 1));
            if started.elapsed() + delay > policy.max_elapsed {
                tracing::debug!(error = %error, ?delay, "retry budget exhausted");
                return Err(error);
            }
            tracing::warn!(error = %error, attempt, ?delay, "retrying provider call");
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        map_error: ErrorMapper,
        streaming: bool,
    ) -> Result<Outcome, ProviderError> {
        let deadline = self.config.request_timeout;
        let request = build();
        if !streaming {
            // reqwest's own timeout covers the body as well as the headers: the call's one
            // timer.
            let response = request
                .timeout(deadline)
                .send()
                .await
                .map_err(|e| self.transport_error(e))?;
            let status = response.status();
            if !status.is_success() {
                let headers = response.headers().clone();
                // Boxed here and below: error bodies are rare, and their reads would otherwise
                // sit inline in every call's future.
                let body = Box::pin(read_limited(response, ERROR_BODY_LIMIT)).await;
                return Err(map_error(status.as_u16(), &headers, &body));
            }
            return response
                .bytes()
                .await
                .map(Outcome::Body)
                .map_err(|e| self.transport_error(e));
        }
        // One timer for the whole opening, re-armed per phase and then handed to the stream.
        let mut timer = Box::pin(tokio::time::sleep(deadline));
        let response = match before(&mut timer, request.send()).await {
            None => {
                return Err(ProviderError::Timeout {
                    phase: TimeoutPhase::FirstChunk,
                    after: deadline,
                });
            }
            Some(Err(e)) => return Err(self.transport_error(e)),
            Some(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            // Bounded by what is left of the request's deadline.
            let body = Box::pin(before(&mut timer, read_limited(response, ERROR_BODY_LIMIT)))
                .await
                .unwrap_or_default();
            return Err(map_error(status.as_u16(), &headers, &body));
        }
        self.first_event(response, timer)
            .await
            .map(|opened| Outcome::Open(Box::new(opened)))
    }

    /// Reads up to the first complete SSE event; each read must come within the idle timeout.
    async fn first_event(
        &self,
        mut response: reqwest::Response,
        mut timer: Pin<Box<tokio::time::Sleep>>,
    ) -> Result<Opened, ProviderError> {
        let idle = self.config.idle_timeout;
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        while events.is_empty() {
            timer.as_mut().reset(tokio::time::Instant::now() + idle);
            match before(&mut timer, response.chunk()).await {
                None => {
                    return Err(ProviderError::Timeout {
                        phase: TimeoutPhase::FirstChunk,
                        after: idle,
                    });
                }
                Some(Ok(Some(chunk))) => decoder.feed_into(&chunk, &mut events),
                Some(Ok(None)) => {
                    events.extend(decoder.finish());
                    if events.is_empty() {
                        return Err(ProviderError::Transport {
                            message: "the stream ended before its first event".to_owned(),
                            source: None,
                        });
                    }
                }
                Some(Err(e)) => {
                    return Err(ProviderError::Transport {
                        message: format!("the stream failed before its first event: {e}"),
                        source: Some(Box::new(e)),
                    });
                }
            }
        }
        Ok(Opened {
            response,
            decoder,
            events,
            timer,
        })
    }

    /// Maps a `reqwest` error to a typed error.
    pub(crate) fn transport_error(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            let (phase, after) = if e.is_connect() {
                (TimeoutPhase::Connect, self.config.connect_timeout)
            } else {
                (TimeoutPhase::Request, self.config.request_timeout)
            };
            return ProviderError::Timeout { phase, after };
        }
        ProviderError::Transport {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// `fut`'s output, or `None` when `timer` fires first.
async fn before<F: Future>(timer: &mut Pin<Box<tokio::time::Sleep>>, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Parses `Retry-After` (seconds or an HTTP date) and OpenAI's `retry-after-ms`.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, jiff::Timestamp::now())
}

/// Parses a `Retry-After` value relative to `now`.
pub(crate) fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let span = at.duration_since(now);
    Some(Duration::try_from(span).unwrap_or(Duration::ZERO))
}

/// How far one SSE event brought a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More events are to come.
    More,
    /// The protocol's last event (OpenAI's `[DONE]`, Anthropic's `message_stop`): nothing
    /// but the end of the body follows.
    End,
    /// The answer is complete, its usage and finish pushed, but the protocol still sends
    /// trailing events (OpenAI's `[DONE]` after the usage chunk, Anthropic's `message_stop`
    /// after `message_delta`). The stream ends here; the rest of the body is read apart from
    /// the consumer (see `Driver::drain_rest`).
    Answered,
}

/// Turns SSE events of one vendor into [`StreamEvent`]s.
pub(crate) trait SseHandler: Send + 'static {
    /// Handles one event, pushing what it produces, and says whether the stream is complete.
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError>;

    /// The body ended (`error` is the read error, if it ended by one). Pushes the closing
    /// events or fails with [`ProviderError::StreamTruncated`].
    fn on_end(
        &mut self,
        error: Option<&reqwest::Error>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), ProviderError>;
}

/// Decodes an SSE body fed in pieces through `handler`, outside a live response (recorded
/// streams, benchmarks). Returns a handler error at once; events after completion are ignored.
#[derive(Debug)]
pub(crate) struct BodyDecoder<H> {
    sse: SseDecoder,
    handler: H,
    scratch: Vec<SseEvent>,
    done: bool,
}

impl<H: SseHandler> BodyDecoder<H> {
    /// A decoder at the start of a body.
    pub(crate) fn new(handler: H) -> Self {
        Self {
            sse: SseDecoder::new(),
            handler,
            scratch: Vec::new(),
            done: false,
        }
    }

    /// Feeds body bytes; returns the events they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut out = VecDeque::new();
        self.sse.feed_into(bytes, &mut self.scratch);
        self.drain(&mut out)?;
        Ok(out.into())
    }

    /// Ends the body; returns the closing events.
    pub(crate) fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut out = VecDeque::new();
        self.scratch.extend(self.sse.finish());
        self.drain(&mut out)?;
        if !self.done {
            self.done = true;
            self.handler.on_end(None, &mut out)?;
        }
        Ok(out.into())
    }

    fn drain(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), ProviderError> {
        for event in self.scratch.drain(..) {
            if self.done {
                continue;
            }
            if self.handler.on_event(event, out)? != Progress::More {
                self.done = true;
            }
        }
        Ok(())
    }
}

/// The most of a finished answer's trailing body that is read to keep its connection.
const DRAIN_LIMIT: usize = 64 * 1024;

struct Driver<H> {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: SseDecoder,
    handler: H,
    queue: VecDeque<StreamEvent>,
    error: Option<ProviderError>,
    done: bool,
    idle: Duration,
    /// The idle timer. It is moved forward lazily: each chunk only records when it arrived,
    /// and the timer, when it fires, re-arms itself at `last_chunk + idle` if a chunk came
    /// since, so a stream costs one timer registration per idle period rather than per chunk.
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    last_chunk: tokio::time::Instant,
    scratch: Vec<SseEvent>,
    // Released when the stream ends or is dropped.
    permit: Option<OwnedSemaphorePermit>,
}

/// What waiting for the next body chunk gave.
enum Read {
    Chunk(Option<reqwest::Result<Bytes>>),
    Idle,
}

impl<H: SseHandler> Driver<H> {
    /// Handles the decoded events; `true` when one completed the answer before the protocol's
    /// end ([`Progress::Answered`]), so that the rest of the body is to be drained.
    fn handle_events(&mut self) -> bool {
        let mut answered = false;
        for event in self.scratch.drain(..) {
            if self.done {
                break;
            }
            match self.handler.on_event(event, &mut self.queue) {
                Ok(Progress::More) => {}
                Ok(Progress::End) => self.done = true,
                Ok(Progress::Answered) => {
                    self.done = true;
                    answered = true;
                }
                Err(e) => {
                    self.error = Some(e);
                    self.done = true;
                }
            }
        }
        answered
    }

    /// Hands what is left of the body, the protocol's trailing frames, to a task that reads
    /// it to its end, for at most the idle timeout and [`DRAIN_LIMIT`] bytes. A body dropped
    /// with more than its end unread closes its connection instead of returning it to the
    /// pool; waiting for those frames here would hold the finished answer back by a round
    /// trip through the runtime (under load, a turn of its whole run queue).
    fn drain_rest(&mut self) {
        // Outside a runtime (a stream polled by another executor) the body is dropped with
        // the stream, and its connection closed, as before.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut body = std::mem::replace(&mut self.body, Box::pin(futures_util::stream::empty()));
        let idle = self.idle;
        runtime.spawn(async move {
            let read = async {
                let mut left = DRAIN_LIMIT;
                while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut body).await {
                    match left.checked_sub(chunk.len()) {
                        Some(rest) => left = rest,
                        None => break,
                    }
                }
            };
            // Past the limit or the timeout, the body is dropped and its connection closed.
            let _ = tokio::time::timeout(idle, read).await;
        });
    }

    fn end(&mut self, read_error: Option<&reqwest::Error>) {
        if let Some(event) = self.decoder.finish() {
            self.scratch.push(event);
            // The body has ended: nothing is left to drain.
            self.handle_events();
        }
        if !self.done {
            self.done = true;
            if let Err(e) = self.handler.on_end(read_error, &mut self.queue) {
                self.error = Some(e);
            }
        }
    }
}

/// The driver is the stream itself (no `unfold` around an async block): a chunk is polled,
/// decoded and handed out without moving the decoder state into a new future per item.
impl<H: SseHandler + Unpin> Stream for Driver<H> {
    type Item = Result<StreamEvent, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.done {
                this.permit = None;
                return Poll::Ready(this.error.take().map(Err));
            }
            let read = match this.body.as_mut().poll_next(cx) {
                Poll::Ready(item) => Read::Chunk(item),
                Poll::Pending => {
                    let mut idle = false;
                    while this.idle_timer.as_mut().poll(cx).is_ready() {
                        let due = this.last_chunk + this.idle;
                        if tokio::time::Instant::now() >= due {
                            idle = true;
                            break;
                        }
                        this.idle_timer.as_mut().reset(due);
                    }
                    if !idle {
                        return Poll::Pending;
                    }
                    Read::Idle
                }
            };
            match read {
                Read::Idle => {
                    this.done = true;
                    this.error = Some(ProviderError::Timeout {
                        phase: TimeoutPhase::Idle,
                        after: this.idle,
                    });
                }
                Read::Chunk(Some(Ok(chunk))) => {
                    this.last_chunk = tokio::time::Instant::now();
                    this.decoder.feed_into(&chunk, &mut this.scratch);
                    if this.handle_events() {
                        this.drain_rest();
                    }
                }
                Read::Chunk(Some(Err(e))) => this.end(Some(&e)),
                Read::Chunk(None) => this.end(None),
            }
        }
    }
}

/// Drives an SSE response body through `handler`, applying the idle timeout and holding
/// `permit` until the stream ends.
fn sse_stream<H: SseHandler + Unpin>(
    opened: Opened,
    handler: H,
    idle: Duration,
    permit: Option<OwnedSemaphorePermit>,
) -> EventStream {
    let mut driver = Driver {
        body: Box::pin(opened.response.bytes_stream()),
        decoder: opened.decoder,
        handler,
        queue: VecDeque::new(),
        error: None,
        done: false,
        idle,
        idle_timer: opened.timer,
        last_chunk: tokio::time::Instant::now(),
        scratch: opened.events,
        permit,
    };
    if driver.handle_events() {
        driver.drain_rest();
    }
    Box::pin(driver)
}

/// Finishes a non-streamed answer the same way for every vendor: prices the usage (by the
/// requested model name first, then the model the vendor reports), records the GenAI span
/// attributes on the current span, stamps the latency and names the serving provider.
pub(crate) fn complete_response(
    provider: &dyn promptkit_core::Provider,
    mut message: promptkit_core::Message,
    requested_model: &str,
    served_model: Option<String>,
    started: Instant,
) -> promptkit_core::ProviderResponse {
    let span = tracing::Span::current();
    if let Some(usage) = &message.usage {
        // The configured name first (an override may price an Azure deployment by name), then
        // the dated model id the vendor reports.
        message.cost = provider.cost(requested_model, usage).or_else(|| {
            served_model
                .as_deref()
                .and_then(|served| provider.cost(served, usage))
        });
        if let Some(n) = usage.input_tokens {
            span.record("gen_ai.usage.input_tokens", n);
        }
        if let Some(n) = usage.output_tokens {
            span.record("gen_ai.usage.output_tokens", n);
        }
    }
    if let Some(reason) = &message.finish_reason {
        span.record("gen_ai.response.finish_reasons", reason.as_str());
    }
    if let Some(served) = &served_model {
        span.record("gen_ai.response.model", served.as_str());
    }
    let latency = started.elapsed();
    message.latency_ms = Some(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX));
    promptkit_core::ProviderResponse {
        message,
        model: served_model.or_else(|| Some(requested_model.to_owned())),
        served_by: Some(provider.id().to_owned()),
        latency,
    }
}

/// Serde helper: `null` reads as the default (servers send `"tool_calls": null`,
/// `"parts": null`).
#[cfg(any(feature = "openai", feature = "gemini"))]
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or_default())
}

/// Serde helper: an optional string borrowed from the input when it has no escapes (serde
/// itself only borrows a `Cow<str>` field, not an `Option` of one).
#[cfg(feature = "openai")]
pub(crate) fn borrowed_str<'de: 'a, 'a, D>(
    deserializer: D,
) -> Result<Option<std::borrow::Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
    Ok(<Option<Borrowed<'a>> as serde::Deserialize>::deserialize(deserializer)?.map(|b| b.0))
}

/// The arguments of `call` as the JSON object the Anthropic and Gemini APIs require.
/// Arguments that are not an object (text the model produced that did not parse, kept
/// verbatim) are sent as `{}`, with a warning.
#[cfg(any(feature = "anthropic", feature = "gemini"))]
pub(crate) fn object_arguments(call: &promptkit_core::ToolCall, index: usize) -> serde_json::Value {
    if call.arguments.is_object() {
        return call.arguments.clone();
    }
    tracing::warn!(
        message_index = index,
        call_id = %call.id,
        "tool call arguments are not a JSON object; sending {{}} instead"
    );
    serde_json::Value::Object(serde_json::Map::new())
}

/// The tool result a `tool` message at `index` must carry.
pub(crate) fn tool_result_of(
    message: &promptkit_core::Message,
    index: usize,
) -> Result<&promptkit_core::ToolResult, ProviderError> {
    message
        .tool_result
        .as_deref()
        .ok_or_else(|| ProviderError::BadRequest {
            status: 400,
            message: format!("message {index} has role tool but no tool result"),
        })
}

/// At most `max` bytes of `text`, cut at a character boundary (for error messages and logs).
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The `chat` span of one provider call, with the GenAI semantic-convention attributes the
/// call fills in as it learns them.
pub(crate) fn chat_span(system: &str, id: &str, model: &str, streaming: bool) -> tracing::Span {
    tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {model}"),
        gen_ai.system = system,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = model,
        promptkit.provider.id = id,
        streaming,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
    )
}

/// Serialises a request body.
pub(crate) fn encode_json(body: &impl serde::Serialize) -> Result<Bytes, ProviderError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ProviderError::Decode {
            message: format!("cannot encode the request: {e}"),
            raw: String::new(),
        })
}

/// The headers sent on every call of a provider: `fixed` ones, the API key under `key`'s
/// header name, then the caller's `custom` headers (which replace either). Authentication
/// headers are marked sensitive, so they never appear in debug output.
pub(crate) fn header_map(
    fixed: &[(&'static str, &'static str)],
    key: Option<(&'static str, String)>,
    custom: &[(String, String)],
) -> Result<reqwest::header::HeaderMap, ProviderError> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    const SENSITIVE: &[&str] = &["authorization", "api-key", "x-api-key", "x-goog-api-key"];
    let invalid = |what: &str| ProviderError::Config {
        message: format!("invalid {what}"),
    };
    let mut headers = HeaderMap::new();
    for &(name, value) in fixed {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if let Some((name, key)) = key {
        let mut value =
            HeaderValue::from_str(&key).map_err(|_| invalid("API key (not a header value)"))?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static(name), value);
    }
    for (name, value) in custom {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&format!("header name {name:?}")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| invalid(&format!("value of header {name}")))?;
        if SENSITIVE.contains(&name.as_str()) {
            value.set_sensitive(true);
        }
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Parses `url` for provider constructors, which keep it for every request.
pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, ProviderError> {
    reqwest::Url::parse(url).map_err(|e| ProviderError::Config {
        message: format!("invalid URL {url}: {e}"),
    })
}

/// Decodes one stream frame's JSON; an empty frame is `None`, and a malformed one is logged
/// on `span` and skipped (`None`), so one bad frame never ends a stream.
pub(crate) fn parse_frame<'a, T: serde::Deserialize<'a>>(
    data: &'a str,
    span: &tracing::Span,
) -> Option<T> {
    let data = data.trim();
    if data.is_empty() {
        return None;
    }
    match serde_json::from_str(data) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(
                parent: span,
                error = %e,
                frame = %truncate(data, 200),
                "skipping malformed stream frame"
            );
            None
        }
    }
}

/// Pushes the closing events of a stream (the usage, if any, then the finish reason) and
/// records them on the call's span.
pub(crate) fn push_close(
    span: &tracing::Span,
    usage: Option<promptkit_core::Usage>,
    reason: promptkit_core::FinishReason,
    model: Option<&str>,
    out: &mut VecDeque<StreamEvent>,
) {
    if let Some(usage) = usage {
        if let Some(n) = usage.input_tokens {
            span.record("gen_ai.usage.input_tokens", n);
        }
        if let Some(n) = usage.output_tokens {
            span.record("gen_ai.usage.output_tokens", n);
        }
        out.push_back(StreamEvent::Usage { usage });
    }
    span.record("gen_ai.response.finish_reasons", reason.as_str());
    if let Some(model) = model {
        span.record("gen_ai.response.model", model);
    }
    out.push_back(StreamEvent::Finish { reason });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
        };
        for retry in 0..40 {
            let cap = Duration::from_millis(100)
                .checked_mul(1 << retry.min(20))
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(1));
            for _ in 0..20 {
                assert!(policy.backoff(retry) <= cap);
            }
        }
    }
}
