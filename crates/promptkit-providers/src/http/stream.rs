//! The SSE stream driver every HTTP vendor shares: a response body in, the vendor handler's
//! [`StreamEvent`]s out, within the stream limits of [`HttpConfig`](super::HttpConfig).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use promptkit_core::{
    BoxStream, EventStream, ProviderError, ResponsePart, StreamEvent, TimeoutPhase,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{HttpConfig, truncate};
use crate::sse::{SseDecoder, SseEvent};

/// How far one SSE event brought a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The event carried part of the answer (or the vendor's start of it); more is to come.
    More,
    /// The event carried nothing: a ping, an empty keep-alive chunk. It does not count as
    /// the stream's first event.
    KeepAlive,
    /// The event did not decode; it is skipped, and counted by the driver.
    Malformed(Box<MalformedFrame>),
    /// The protocol's last event (OpenAI's `[DONE]`, Anthropic's `message_stop`): nothing
    /// but the end of the body follows.
    End,
    /// The answer is complete, its usage and finish pushed, but the protocol still sends
    /// trailing events (OpenAI's `[DONE]` after the usage chunk, Anthropic's `message_stop`
    /// after `message_delta`). The stream ends here; the rest of the body is read apart from
    /// the consumer (see `Driver::drain_rest`).
    Answered,
}

/// A frame that did not decode: the decoder's complaint and the first bytes of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MalformedFrame {
    /// The JSON error (position and kind, never the input).
    pub(crate) error: String,
    /// At most [`SNIPPET`] bytes of the frame, for the log and the final error.
    pub(crate) snippet: String,
}

/// Most bytes of a malformed frame kept for logs and errors.
const SNIPPET: usize = 64;

/// One stream frame's JSON, decoded.
#[derive(Debug)]
pub(crate) enum Frame<T> {
    /// The frame held only whitespace.
    Empty,
    /// The decoded frame.
    Parsed(T),
    /// The frame is not valid JSON of the expected shape.
    Malformed(Box<MalformedFrame>),
}

/// Decodes one stream frame's JSON.
pub(crate) fn parse_frame<'a, T: serde::Deserialize<'a>>(data: &'a str) -> Frame<T> {
    let data = data.trim();
    if data.is_empty() {
        return Frame::Empty;
    }
    match serde_json::from_str(data) {
        Ok(value) => Frame::Parsed(value),
        Err(e) => Frame::Malformed(Box::new(MalformedFrame {
            error: e.to_string(),
            snippet: truncate(data, SNIPPET),
        })),
    }
}

/// Turns SSE events of one vendor into [`StreamEvent`]s.
pub(crate) trait SseHandler: Send + 'static {
    /// Whether the vendor writes bare JSON (not SSE framed) into its event streams, which
    /// the decoder then hands to [`on_unframed`](Self::on_unframed).
    const UNFRAMED: bool = false;

    /// The span of the call, which the driver logs on.
    fn span(&self) -> &tracing::Span;

    /// Handles one event, pushing what it produces, and says how far the stream got.
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError>;

    /// Handles complete lines that are no SSE field (only with [`UNFRAMED`](Self::UNFRAMED)).
    fn on_unframed(
        &mut self,
        _text: &str,
        _out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        Ok(Progress::KeepAlive)
    }

    /// The body ended (`error` is the read error, if it ended by one). Pushes the closing
    /// events or fails with [`ProviderError::StreamTruncated`].
    fn on_end(
        &mut self,
        error: Option<&reqwest::Error>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), ProviderError>;
}

/// Counts malformed frames: a stream fails at the `max`-th in a row, and only the first of a
/// stream is logged at warn (at most one such line a second in the process), never whole.
#[derive(Debug)]
pub(crate) struct FrameGuard {
    max: u32,
    in_a_row: u32,
    total: u64,
}

/// Milliseconds since `LOG_EPOCH` of the last malformed-frame warning in the process.
static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
static LOG_EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

/// Whether a malformed-frame warning may be logged now (one a second in the process).
fn may_warn() -> bool {
    let epoch = *LOG_EPOCH.get_or_init(std::time::Instant::now);
    // Offset by one second, so the first warning is always allowed.
    let now = u64::try_from(epoch.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1000);
    let last = LAST_WARNING.load(Ordering::Relaxed);
    now.saturating_sub(last) >= 1000
        && LAST_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

impl FrameGuard {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            in_a_row: 0,
            total: 0,
        }
    }

    /// Applies what one event did to the count.
    pub(crate) fn check(
        &mut self,
        progress: Progress,
        span: &tracing::Span,
    ) -> Result<Progress, ProviderError> {
        match progress {
            Progress::Malformed(frame) => {
                self.malformed(&frame, span)?;
                Ok(Progress::Malformed(frame))
            }
            Progress::KeepAlive => Ok(Progress::KeepAlive),
            other => {
                self.in_a_row = 0;
                Ok(other)
            }
        }
    }

    fn malformed(
        &mut self,
        frame: &MalformedFrame,
        span: &tracing::Span,
    ) -> Result<(), ProviderError> {
        self.in_a_row += 1;
        self.total += 1;
        // `?` escapes the snippet: a frame cannot forge log lines or terminal sequences.
        if self.total == 1 && may_warn() {
            tracing::warn!(
                parent: span,
                error = %frame.error,
                frame = ?frame.snippet,
                "skipping malformed stream frame"
            );
        } else {
            tracing::debug!(
                parent: span,
                error = %frame.error,
                frame = ?frame.snippet,
                skipped = self.total,
                "skipping malformed stream frame"
            );
        }
        if self.in_a_row >= self.max {
            return Err(ProviderError::Decode {
                message: format!("{} malformed stream frames in a row", self.in_a_row),
                raw: frame.snippet.clone(),
            });
        }
        Ok(())
    }
}

/// Decodes an SSE body fed in pieces through `handler`, outside a live response (recorded
/// streams, benchmarks, fuzzing), with the same limits as a live stream: the default
/// [`HttpConfig`] ones unless given. Returns a handler error at once; events after completion
/// are ignored.
#[derive(Debug)]
pub(crate) struct BodyDecoder<H> {
    sse: SseDecoder,
    handler: H,
    scratch: Vec<SseEvent>,
    guard: FrameGuard,
    done: bool,
}

impl<H: SseHandler> BodyDecoder<H> {
    /// A decoder at the start of a body.
    pub(crate) fn new(handler: H) -> Self {
        Self::with_config(handler, &HttpConfig::default())
    }

    /// A decoder with the stream limits of `config`.
    pub(crate) fn with_config(handler: H, config: &HttpConfig) -> Self {
        Self {
            sse: SseDecoder::with_limits(config.limits.sse()).collecting_unframed(H::UNFRAMED),
            handler,
            scratch: Vec::new(),
            guard: FrameGuard::new(config.limits.max_malformed_frames),
            done: false,
        }
    }

    /// Feeds body bytes; returns the events they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut out = VecDeque::new();
        let decoded = self.sse.feed_into(bytes, &mut self.scratch);
        self.drain(&mut out)?;
        decoded?;
        Ok(out.into())
    }

    /// Ends the body; returns the closing events.
    pub(crate) fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut out = VecDeque::new();
        self.scratch.extend(self.sse.finish()?);
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
            let progress = self.handler.on_event(event, out)?;
            match self.guard.check(progress, self.handler.span())? {
                Progress::End | Progress::Answered => self.done = true,
                _ => {}
            }
        }
        if H::UNFRAMED
            && !self.done
            && let Some(text) = self.sse.take_unframed()
        {
            let progress = self.handler.on_unframed(&text, out)?;
            self.guard.check(progress, self.handler.span())?;
        }
        Ok(())
    }
}

/// A stream whose first SSE event (or first unframed text) has arrived.
pub(crate) struct Opened {
    pub(super) response: reqwest::Response,
    pub(super) decoder: SseDecoder,
    pub(super) events: Vec<SseEvent>,
    /// The timer of the opening, handed on to the stream as its idle timer: one timer
    /// registration per stream instead of three (send, first event, idle).
    pub(super) timer: Pin<Box<tokio::time::Sleep>>,
    /// When the request was sent: the first-event and whole-stream deadlines count from it.
    pub(super) sent: Instant,
    /// Body bytes read so far.
    pub(super) received: usize,
}

/// The most of a finished answer's trailing body that is read to keep its connection.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The limits a live stream is held to.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    idle: Duration,
    first_event: Duration,
    stream: Duration,
    first_deadline: Instant,
    stream_deadline: Instant,
    max_bytes: usize,
}

struct Driver<H> {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    decoder: SseDecoder,
    handler: H,
    queue: VecDeque<StreamEvent>,
    error: Option<ProviderError>,
    done: bool,
    bounds: Bounds,
    /// The stream's one timer. It is moved forward lazily: each chunk only records when it
    /// arrived, and the timer, when it fires, re-arms itself at the nearest deadline (the
    /// idle gap after the last chunk, the first event, the whole stream), so a stream costs
    /// one timer registration per idle period rather than per chunk.
    timer: Pin<Box<tokio::time::Sleep>>,
    last_chunk: Instant,
    /// Whether an event that is not a keep-alive has arrived.
    started: bool,
    received: usize,
    guard: FrameGuard,
    scratch: Vec<SseEvent>,
    // Released when the stream ends or is dropped.
    permit: Option<OwnedSemaphorePermit>,
}

/// What waiting for the next body chunk gave.
enum Read {
    Chunk(Option<reqwest::Result<Bytes>>),
    Expired(ProviderError),
}

impl<H: SseHandler> Driver<H> {
    /// The nearest deadline.
    fn due(&self) -> Instant {
        let mut due = self.last_chunk + self.bounds.idle;
        if !self.started {
            due = due.min(self.bounds.first_deadline);
        }
        due.min(self.bounds.stream_deadline)
    }

    /// The error of a deadline passed at `now`, if one has.
    fn expired(&self, now: Instant) -> Option<ProviderError> {
        let bounds = &self.bounds;
        let (phase, after) = if now >= bounds.stream_deadline {
            (TimeoutPhase::Stream, bounds.stream)
        } else if !self.started && now >= bounds.first_deadline {
            (TimeoutPhase::FirstChunk, bounds.first_event)
        } else if now >= self.last_chunk + bounds.idle {
            (TimeoutPhase::Idle, bounds.idle)
        } else {
            return None;
        };
        Some(ProviderError::Timeout { phase, after })
    }

    /// Ends the stream with `error` (after the events already queued) and closes the body.
    fn fail(&mut self, error: ProviderError) {
        self.done = true;
        self.error = Some(error);
        self.scratch.clear();
        // Dropping the body closes its connection: a runaway stream stops costing anything.
        self.body = Box::pin(futures_util::stream::empty());
    }

    /// Handles the decoded events; `true` when one completed the answer before the protocol's
    /// end ([`Progress::Answered`]), so that the rest of the body is to be drained.
    fn handle_events(&mut self) -> bool {
        let mut answered = false;
        let mut scratch = std::mem::take(&mut self.scratch);
        for event in scratch.drain(..) {
            if self.done {
                break;
            }
            let progress = self
                .handler
                .on_event(event, &mut self.queue)
                .and_then(|p| self.guard.check(p, self.handler.span()));
            answered |= self.apply(progress);
        }
        self.scratch = scratch;
        if H::UNFRAMED
            && !self.done
            && let Some(text) = self.decoder.take_unframed()
        {
            let progress = self
                .handler
                .on_unframed(&text, &mut self.queue)
                .and_then(|p| self.guard.check(p, self.handler.span()));
            answered |= self.apply(progress);
        }
        answered
    }

    /// Applies one handler result; `true` for [`Progress::Answered`].
    fn apply(&mut self, progress: Result<Progress, ProviderError>) -> bool {
        match progress {
            Ok(Progress::More) => self.started = true,
            Ok(Progress::KeepAlive | Progress::Malformed(_)) => {}
            Ok(Progress::End) => self.done = true,
            Ok(Progress::Answered) => {
                self.done = true;
                return true;
            }
            Err(e) => self.fail(e),
        }
        false
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
        let idle = self.bounds.idle;
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

    /// A chunk arrived: counts it against the limits, then decodes it.
    fn on_chunk(&mut self, chunk: &Bytes) {
        let now = Instant::now();
        self.last_chunk = now;
        self.received = self.received.saturating_add(chunk.len());
        if self.received > self.bounds.max_bytes {
            let limit = u64::try_from(self.bounds.max_bytes).unwrap_or(u64::MAX);
            return self.fail(ProviderError::ResponseTooLarge {
                part: ResponsePart::Stream,
                limit,
            });
        }
        // Keep-alives that arrive faster than any timer fires still meet the deadlines.
        if (now >= self.bounds.stream_deadline || !self.started)
            && let Some(error) = self.expired(now)
        {
            return self.fail(error);
        }
        let decoded = self.decoder.feed_into(chunk, &mut self.scratch);
        if self.handle_events() {
            self.drain_rest();
        }
        if let Err(e) = decoded
            && !self.done
        {
            self.fail(e.into());
        }
    }

    fn end(&mut self, read_error: Option<&reqwest::Error>) {
        match self.decoder.finish() {
            Ok(Some(event)) => {
                self.scratch.push(event);
                // The body has ended: nothing is left to drain.
                self.handle_events();
            }
            Ok(None) => {
                if H::UNFRAMED {
                    self.handle_events();
                }
            }
            Err(e) => return self.fail(e.into()),
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
                    let mut expired = None;
                    while this.timer.as_mut().poll(cx).is_ready() {
                        if let Some(error) = this.expired(Instant::now()) {
                            expired = Some(error);
                            break;
                        }
                        let due = this.due();
                        this.timer.as_mut().reset(due);
                    }
                    match expired {
                        Some(error) => Read::Expired(error),
                        None => return Poll::Pending,
                    }
                }
            };
            match read {
                Read::Expired(error) => this.fail(error),
                Read::Chunk(Some(Ok(chunk))) => this.on_chunk(&chunk),
                Read::Chunk(Some(Err(e))) => this.end(Some(&e.without_url())),
                Read::Chunk(None) => this.end(None),
            }
        }
    }
}

/// Drives an SSE response body through `handler` within the limits of `config`, holding
/// `permit` until the stream ends.
pub(super) fn sse_stream<H: SseHandler + Unpin>(
    opened: Opened,
    handler: H,
    config: &HttpConfig,
    permit: Option<OwnedSemaphorePermit>,
) -> EventStream {
    let sent = opened.sent;
    let bounds = Bounds {
        idle: config.idle_timeout,
        first_event: config.first_event_timeout,
        stream: config.max_stream_duration,
        first_deadline: sent + config.first_event_timeout,
        stream_deadline: sent + config.max_stream_duration,
        max_bytes: config.limits.max_stream_bytes,
    };
    let mut driver = Driver {
        body: Box::pin(opened.response.bytes_stream()),
        decoder: opened.decoder,
        handler,
        queue: VecDeque::new(),
        error: None,
        done: false,
        bounds,
        timer: opened.timer,
        last_chunk: Instant::now(),
        started: false,
        received: opened.received,
        guard: FrameGuard::new(config.limits.max_malformed_frames),
        scratch: opened.events,
        permit,
    };
    // The opening's timer is at the first-event deadline; from here the idle gap counts too.
    let due = driver.due();
    driver.timer.as_mut().reset(due);
    if driver.handle_events() {
        driver.drain_rest();
    }
    Box::pin(driver)
}
