//! The HTTP machinery shared by the vendor providers: client settings, the bounds of every
//! response (body, stream line and event, stream size and duration, malformed frames),
//! retries with backoff, the concurrency limit, and the SSE stream driver.
//!
//! Every bound fails with a typed error at the limit, before more is read or kept:
//! [`ProviderError::ResponseTooLarge`] for sizes, [`ProviderError::Timeout`] for deadlines,
//! [`ProviderError::Decode`] for a run of malformed frames. The defaults
//! ([`HttpConfig::default`], [`IoLimits::default`]) are far above what a vendor sends, so
//! they only stop a broken or hostile upstream.

mod stream;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use promptkit_core::{EventStream, ProviderError, ResponsePart, StreamEvent, TimeoutPhase};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sse::{SseDecoder, SseLimits};
pub(crate) use crate::{error_chain, redact_url};
pub(crate) use stream::{BodyDecoder, Frame, Progress, SseHandler, parse_frame};
use stream::{Opened, sse_stream};

/// How failed calls are retried.
///
/// Only errors for which [`ProviderError::is_retryable`] holds are retried (rate limits,
/// overload, 5xx, transport failures, timeouts). The delay before retry `n` (0-based) is
/// drawn uniformly from `[0, min(max_delay, initial_delay * 2^n)]` ("full jitter"), unless
/// the vendor sent `Retry-After` (or `retry-after-ms`, or Gemini's `retryDelay`), which is
/// honoured as is, up to [`RetryPolicy::MAX_RETRY_AFTER`]. A retry whose delay would end after
/// `max_elapsed` (measured from the first attempt) is not made. Streams are retried only
/// until their first event has arrived; a non-streaming call also when its body breaks.
/// Inside a [`FallbackProvider`](crate::fallback::FallbackProvider) the fallback's attempt
/// budget applies on top.
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
    /// The longest delay a vendor's `Retry-After`, `retry-after-ms` or `retryDelay` is read
    /// as: larger values (and `inf`) are clamped to it, so no value can overflow a
    /// [`Duration`] or stall a caller for longer. Such a wait is never made by the retry loop
    /// (it is past any sensible `max_elapsed`); it is kept in
    /// [`ProviderError::retry_after`] for the caller.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

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

/// Size bounds of the responses an HTTP provider reads.
///
/// Each is a check on a length before bytes are kept, so memory stays within the bound
/// whatever the upstream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLimits {
    /// Most bytes of a non-streaming answer's body (a larger `Content-Length` fails before
    /// anything is read).
    pub max_body_bytes: usize,
    /// Most bytes of one line of a stream.
    pub max_line_bytes: usize,
    /// Most bytes of one event of a stream (its `data:` lines joined).
    pub max_event_bytes: usize,
    /// Most bytes of a stream's whole body: bounds what one answer accumulates.
    pub max_stream_bytes: usize,
    /// A stream fails at this many malformed frames in a row (at least 1).
    pub max_malformed_frames: u32,
}

impl IoLimits {
    /// The SSE decoder limits.
    pub fn sse(&self) -> SseLimits {
        SseLimits {
            max_line_bytes: self.max_line_bytes,
            max_event_bytes: self.max_event_bytes,
        }
    }
}

impl Default for IoLimits {
    /// 32 MiB bodies, 16 MiB lines and events, 64 MiB streams, 64 malformed frames in a row.
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_line_bytes: SseLimits::DEFAULT.max_line_bytes,
            max_event_bytes: SseLimits::DEFAULT.max_event_bytes,
            max_stream_bytes: 64 << 20,
            max_malformed_frames: 64,
        }
    }
}

/// Transport settings of an HTTP provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Deadline for establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Deadline for a whole non-streaming call (headers and body).
    pub request_timeout: Duration,
    /// Deadline from sending a streaming request to its first event, headers included
    /// ([`TimeoutPhase::FirstChunk`]). Fixed when the request is sent: SSE comments, pings and
    /// empty keep-alive chunks do not extend it.
    pub first_event_timeout: Duration,
    /// Longest silence allowed between two chunks of a stream
    /// ([`TimeoutPhase::Idle`] when it passes).
    pub idle_timeout: Duration,
    /// Longest a stream may last, from sending the request to its last event
    /// ([`TimeoutPhase::Stream`] when it passes): ends a stream that never finishes.
    pub max_stream_duration: Duration,
    /// Most calls in flight at once through this provider (`None`: unlimited). Further calls
    /// wait for a slot; a stream holds its slot until it ends or is dropped.
    pub max_concurrency: Option<usize>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Size bounds of responses.
    pub limits: IoLimits,
}

impl Default for HttpConfig {
    /// 10 s connect, 60 s request, 60 s to the first event, 30 s idle, 30 min per stream,
    /// unlimited concurrency, default retries and limits.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            first_event_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            max_stream_duration: Duration::from_secs(30 * 60),
            max_concurrency: None,
            retry: RetryPolicy::default(),
            limits: IoLimits::default(),
        }
    }
}

impl HttpConfig {
    /// Builds a `reqwest` client with these settings (rustls on aws-lc-rs, HTTP/2 where
    /// the server offers it, pooled connections). Redirects are not followed: a provider's
    /// requests carry its key, and a base URL that redirects elsewhere must not receive it
    /// (a redirect answer fails with [`ProviderError::Config`]).
    ///
    /// # Errors
    ///
    /// [`ProviderError::Config`] when the TLS stack cannot be initialised.
    pub fn build_client(&self) -> Result<reqwest::Client, ProviderError> {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Config {
                message: format!("cannot build the HTTP client: {}", error_chain(&e)),
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
            // reqwest's own builder turns credentials in the address into basic auth (and
            // takes them out of the address).
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
    /// (connection, status, a body that ends or breaks first, the first-event deadline). The
    /// stream decodes its events with the handler `handler` makes, applies the stream limits
    /// and holds the concurrency permit until it ends.
    pub(crate) async fn open_stream<H: SseHandler + Unpin>(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        map_error: ErrorMapper,
        // Made once the stream is open: a handler held across the opening would sit in this
        // future twice (as the argument and as the local it becomes).
        handler: impl FnOnce() -> H + Send,
    ) -> Result<EventStream, ProviderError> {
        let call = Call {
            build,
            map_error,
            streaming: true,
            unframed: H::UNFRAMED,
        };
        match self.run(&call).await? {
            (Outcome::Open(opened), permit) => {
                Ok(sse_stream(*opened, handler(), &self.config, permit))
            }
            (Outcome::Body(_), _) => Err(ProviderError::Decode {
                message: "internal: a stream was read to the end".to_owned(),
                raw: String::new(),
            }),
        }
    }

    /// Runs a non-streaming call: sends and reads the whole body (up to
    /// [`IoLimits::max_body_bytes`]), retrying failures of either (a connection that breaks
    /// mid-body is retried too).
    pub(crate) async fn fetch(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
        map_error: ErrorMapper,
    ) -> Result<Bytes, ProviderError> {
        let call = Call {
            build,
            map_error,
            streaming: false,
            unframed: false,
        };
        match self.run(&call).await? {
            (Outcome::Body(body), _) => Ok(body),
            (Outcome::Open(_), _) => Err(ProviderError::Decode {
                message: "internal: a body was not read".to_owned(),
                raw: String::new(),
            }),
        }
    }

    async fn run(
        &self,
        call: &Call<'_>,
    ) -> Result<(Outcome, Option<OwnedSemaphorePermit>), ProviderError> {
        let policy = self.config.retry;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let permit = self.permit().await?;
            let error = match self.send_once(call).await {
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
            if started.elapsed().saturating_add(delay) > policy.max_elapsed {
                tracing::debug!(error = %error_chain(&error), ?delay, "retry budget exhausted");
                return Err(error);
            }
            // Inside a fallback, its budget decides too: it may rather try another candidate.
            if !crate::budget::may_retry() {
                tracing::debug!(error = %error_chain(&error), "the fallback's attempt budget ends retries");
                return Err(error);
            }
            tracing::warn!(error = %error_chain(&error), attempt, ?delay, "retrying provider call");
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<Outcome, ProviderError> {
        let request = (call.build)();
        if !call.streaming {
            // reqwest's own timeout covers the body as well as the headers: the call's one
            // timer.
            let response = request
                .timeout(self.config.request_timeout)
                .send()
                .await
                .map_err(|e| self.transport_error(e))?;
            let status = response.status();
            if !status.is_success() {
                // Boxed here and below: error answers are rare, and their reads would
                // otherwise sit inline in every call's future.
                return Err(Box::pin(error_answer(response, call.map_error)).await);
            }
            return Box::pin(read_body(response, self.config.limits.max_body_bytes))
                .await
                .map(Outcome::Body)
                .map_err(|e| e.into_provider_error(self));
        }
        // One timer for the whole opening, armed once at the first-event deadline (so nothing
        // the upstream sends extends it) and then handed to the stream.
        let deadline = self.config.first_event_timeout;
        let sent = tokio::time::Instant::now();
        let mut timer = Box::pin(tokio::time::sleep(deadline));
        let first_chunk = ProviderError::Timeout {
            phase: TimeoutPhase::FirstChunk,
            after: deadline,
        };
        let response = match before(&mut timer, request.send()).await {
            None => return Err(first_chunk),
            Some(Err(e)) => return Err(self.transport_error(e)),
            Some(Ok(response)) => response,
        };
        if !response.status().is_success() {
            // Bounded by what is left of the deadline.
            return Err(
                Box::pin(before(&mut timer, error_answer(response, call.map_error)))
                    .await
                    .unwrap_or(first_chunk),
            );
        }
        let decoder =
            SseDecoder::with_limits(self.config.limits.sse()).collecting_unframed(call.unframed);
        let opened = Opened {
            response,
            decoder,
            events: Vec::new(),
            timer,
            sent,
            received: 0,
        };
        self.first_event(opened)
            .await
            .map(|opened| Outcome::Open(Box::new(opened)))
    }

    /// Reads up to the first complete SSE event (or unframed text) before the first-event
    /// deadline, within the stream's size limits.
    async fn first_event(&self, mut opened: Opened) -> Result<Opened, ProviderError> {
        let max_bytes = self.config.limits.max_stream_bytes;
        while opened.events.is_empty() {
            let read = before(&mut opened.timer, opened.response.chunk()).await;
            match read {
                None => {
                    return Err(ProviderError::Timeout {
                        phase: TimeoutPhase::FirstChunk,
                        after: self.config.first_event_timeout,
                    });
                }
                Some(Ok(Some(chunk))) => {
                    opened.received = opened.received.saturating_add(chunk.len());
                    if opened.received > max_bytes {
                        return Err(ProviderError::ResponseTooLarge {
                            part: ResponsePart::Stream,
                            limit: u64::try_from(max_bytes).unwrap_or(u64::MAX),
                        });
                    }
                    opened.decoder.feed_into(&chunk, &mut opened.events)?;
                    // Text outside any event (a bare JSON error) goes to the handler too.
                    if opened.decoder.has_unframed() {
                        break;
                    }
                }
                Some(Ok(None)) => {
                    opened.events.extend(opened.decoder.finish()?);
                    if opened.events.is_empty() && !opened.decoder.has_unframed() {
                        return Err(ProviderError::Transport {
                            message: "the stream ended before its first event".to_owned(),
                            source: None,
                        });
                    }
                    break;
                }
                Some(Err(e)) => {
                    return Err(ProviderError::Transport {
                        message: "the stream failed before its first event".to_owned(),
                        source: Some(Box::new(e.without_url())),
                    });
                }
            }
        }
        Ok(opened)
    }

    /// Maps a `reqwest` error to a typed error. The error is kept without its URL: the
    /// address may hold credentials (`https://user:secret@host`) or a key in its query.
    pub(crate) fn transport_error(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            let (phase, after) = if e.is_connect() {
                (TimeoutPhase::Connect, self.config.connect_timeout)
            } else {
                (TimeoutPhase::Request, self.config.request_timeout)
            };
            return ProviderError::Timeout { phase, after };
        }
        let message = if e.is_connect() {
            "cannot connect to the provider"
        } else if e.is_body() || e.is_decode() {
            "the response body failed"
        } else if e.is_request() {
            "cannot send the request"
        } else {
            "the request failed"
        };
        ProviderError::Transport {
            message: message.to_owned(),
            source: Some(Box::new(e.without_url())),
        }
    }
}

/// One call's parts, as the retry loop passes them to each attempt.
struct Call<'a> {
    build: &'a (dyn Fn() -> reqwest::RequestBuilder + Sync),
    map_error: ErrorMapper,
    streaming: bool,
    /// Whether the vendor's streams carry unframed text (see [`SseHandler::UNFRAMED`]).
    unframed: bool,
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

/// The typed error of an answer that is not a success: a redirect (never followed: it would
/// take the key elsewhere) or the vendor's error body, up to [`ERROR_BODY_LIMIT`] bytes.
async fn error_answer(response: reqwest::Response, map_error: ErrorMapper) -> ProviderError {
    let status = response.status();
    if status.is_redirection() {
        return ProviderError::Config {
            message: format!(
                "the provider answered with a redirect (status {}); redirects are not followed, \
                 so that the key is never sent elsewhere: configure the final address as the \
                 base URL",
                status.as_u16()
            ),
        };
    }
    let headers = response.headers().clone();
    let body = read_limited(response, ERROR_BODY_LIMIT).await;
    map_error(status.as_u16(), &headers, &body)
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

/// Why a body could not be read.
enum BodyError {
    Read(reqwest::Error),
    TooLarge(usize),
}

impl BodyError {
    fn into_provider_error(self, transport: &Transport) -> ProviderError {
        match self {
            Self::Read(e) => transport.transport_error(e),
            Self::TooLarge(limit) => ProviderError::ResponseTooLarge {
                part: ResponsePart::Body,
                limit: u64::try_from(limit).unwrap_or(u64::MAX),
            },
        }
    }
}

/// Reads a whole body of at most `limit` bytes. A declared length over the limit fails
/// before anything is read; otherwise the check comes before each chunk is kept. A body of
/// one chunk (the common case) is returned without a copy.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    let declared = response.content_length();
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(BodyError::TooLarge(limit));
    }
    let Some(first) = response.chunk().await.map_err(BodyError::Read)? else {
        return Ok(Bytes::new());
    };
    if first.len() > limit {
        return Err(BodyError::TooLarge(limit));
    }
    let Some(second) = response.chunk().await.map_err(BodyError::Read)? else {
        return Ok(first);
    };
    let expected = declared
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(first.len() + second.len());
    let mut body = BytesMut::with_capacity(expected.min(limit));
    let mut next = Some(second);
    body.extend_from_slice(&first);
    while let Some(chunk) = next {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
        next = response.chunk().await.map_err(BodyError::Read)?;
    }
    Ok(body.freeze())
}

/// `secs` seconds as a delay to wait: `None` for NaN and negative values, clamped to
/// [`RetryPolicy::MAX_RETRY_AFTER`] (so `1e20`, `1e400` and `inf` never overflow).
pub(crate) fn delay_from_secs(secs: f64) -> Option<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    let max = RetryPolicy::MAX_RETRY_AFTER;
    Some(Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max)))
}

/// Parses `Retry-After` (seconds or an HTTP date) and OpenAI's `retry-after-ms`, clamped to
/// [`RetryPolicy::MAX_RETRY_AFTER`]. Values that do not parse are ignored.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(delay) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|ms| delay_from_secs(ms / 1000.0))
    {
        return Some(delay);
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, jiff::Timestamp::now())
}

/// Parses a `Retry-After` value relative to `now`, clamped to
/// [`RetryPolicy::MAX_RETRY_AFTER`]; a date in the past is no wait.
pub(crate) fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return delay_from_secs(secs);
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let span = at.duration_since(now);
    Some(
        Duration::try_from(span)
            .unwrap_or(Duration::ZERO)
            .min(RetryPolicy::MAX_RETRY_AFTER),
    )
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
        message: format!("invalid URL {}: {e}", redact_url(url)),
    })
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

    /// Values a hostile or broken upstream sends: none panics (`Duration::from_secs_f64`
    /// did on the huge ones), huge ones are clamped, nonsense is ignored.
    #[test]
    fn huge_and_nonsense_retry_delays_are_clamped_or_ignored() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let max = RetryPolicy::MAX_RETRY_AFTER;
        for huge in [
            "1e20",
            "1e400",
            "inf",
            "+inf",
            "infinity",
            "18446744073709551616",
        ] {
            assert_eq!(parse_retry_after(huge, now), Some(max), "{huge}");
        }
        for nonsense in [
            "NaN",
            "nan",
            "-inf",
            "-0.5",
            "",
            "1e20s",
            "0x10",
            "Fri, 99 Foo",
        ] {
            assert_eq!(parse_retry_after(nonsense, now), None, "{nonsense}");
        }
        assert_eq!(
            parse_retry_after("31 Dec 9000 23:59:59 GMT", now),
            Some(max)
        );
        let mut headers = reqwest::header::HeaderMap::new();
        for (ms, want) in [
            ("1e30", Some(max)),
            ("NaN", None),
            ("-5", None),
            ("1500", Some(Duration::from_millis(1500))),
        ] {
            headers.insert("retry-after-ms", ms.parse().unwrap());
            assert_eq!(retry_after(&headers), want, "{ms}");
        }
    }

    proptest::proptest! {
        #[test]
        fn retry_after_never_panics_and_stays_within_the_clamp(
            // Any text, and numbers of every size and form (`1e400`, `-0.5`, `+inf`).
            value in ".{0,40}|[-+]?([0-9]{0,25}(\\.[0-9]{0,5})?([eE][-+]?[0-9]{1,3})?|inf|nan)"
        ) {
            let now = jiff::Timestamp::now();
            if let Some(delay) = parse_retry_after(&value, now) {
                proptest::prop_assert!(delay <= RetryPolicy::MAX_RETRY_AFTER);
            }
            let mut headers = reqwest::header::HeaderMap::new();
            if let Ok(header) = reqwest::header::HeaderValue::from_str(&value) {
                headers.insert("retry-after-ms", header.clone());
                headers.insert(reqwest::header::RETRY_AFTER, header);
            }
            if let Some(delay) = retry_after(&headers) {
                proptest::prop_assert!(delay <= RetryPolicy::MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn numeric_retry_after_is_clamped(secs in proptest::num::f64::ANY) {
            let delay = parse_retry_after(&secs.to_string(), jiff::Timestamp::now());
            match delay {
                Some(delay) => proptest::prop_assert!(delay <= RetryPolicy::MAX_RETRY_AFTER),
                None => proptest::prop_assert!(secs.is_nan() || secs < 0.0),
            }
        }
    }

    #[test]
    fn urls_lose_their_credentials_and_query_values() {
        assert_eq!(
            redact_url("http://u:secret@127.0.0.1:1/v1"),
            "http://<redacted>@127.0.0.1:1/v1"
        );
        assert_eq!(
            redact_url("https://gw.example/v1/chat?key=secret&api-version=2024-12-01"),
            "https://gw.example/v1/chat?key=<redacted>&api-version=2024-12-01"
        );
        assert_eq!(redact_url("https://a@b/c@d"), "https://<redacted>@b/c@d");
        assert_eq!(redact_url("not a url"), "not a url");
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
