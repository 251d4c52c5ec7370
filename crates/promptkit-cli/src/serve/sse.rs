//! Streamed answers: `chat.completion.chunk` frames as server-sent events, with keep-alive
//! comments while a turn produces nothing (a long tool round).

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{self, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::stream::Stream;
use promptkit::agent::{AgentError, Reply};
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use super::TurnGuard;
use super::error::ApiError;
use super::turn::{self, TurnStream};

/// How long a streamed response waits for its first frame before sending its headers anyway.
///
/// Holding the headers until the answer starts puts them in the same write as the first
/// chunk (one system call and one wake-up of the client fewer per response), and lets a turn
/// that fails before its first token answer with a real HTTP status instead of an error event
/// in a `200` stream. A turn that takes longer to start (a slow tool round) gets its headers
/// at this point, for clients and proxies that time out waiting for them.
const HEADER_HOLD: Duration = Duration::from_secs(1);

/// The comment sent when a stream has been silent for the keep-alive interval.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// State of one SSE response. Dropping it (the client went away) drops the turn, which
/// cancels it, and its guard, which frees the concurrency slot and the session.
pub(crate) struct SseState {
    turn: Option<TurnStream>,
    /// What every chunk of this response opens with, up to its `choices`:
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,`.
    head: Vec<u8>,
    include_usage: bool,
    first: bool,
    /// Logs and error messages name the request by this.
    request_id: String,
    _guard: TurnGuard,
}

impl SseState {
    /// `id` is the completion id (ASCII letters, digits and `-`) and `model_json` the model
    /// name as a JSON string: both go into the frames as they are.
    pub(crate) fn new(
        turn: TurnStream,
        id: &str,
        created: i64,
        model_json: &str,
        include_usage: bool,
        request_id: String,
        guard: TurnGuard,
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
            turn: Some(turn),
            head,
            include_usage,
            first: true,
            request_id,
            _guard: guard,
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
                    Some(turn::finish_reason(&reply)),
                );
                if self.include_usage {
                    out.extend_from_slice(&self.head);
                    out.extend_from_slice(b"\"choices\":[],\"usage\":");
                    write_json(&mut out, &turn::usage_json(&reply.usage));
                    out.extend_from_slice(b"}\n\n");
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(out)
            }
            Err(e) => {
                let error = turn::turn_error(&e, &self.request_id);
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
pub(crate) struct SseFrames {
    state: SseState,
    /// The turn's output has ended: its result is awaited next, in place.
    ending: bool,
    keep_alive: Duration,
    /// When the last bytes of the stream went out (or it started).
    last_sent: Instant,
    /// Armed while the turn is silent.
    timer: Option<Pin<Box<Sleep>>>,
}

/// What a response sends next.
enum Step {
    /// A content chunk, ready to write.
    Content(Bytes),
    /// The turn's result: the closing frames, or its error.
    End(Result<Reply, AgentError>),
}

impl SseFrames {
    /// The frames of `state`, with a keep-alive comment after each `keep_alive` of silence.
    pub(crate) fn new(state: SseState, keep_alive: Duration) -> Self {
        Self {
            state,
            ending: false,
            keep_alive,
            last_sent: Instant::now(),
            timer: None,
        }
    }

    /// The next step, `None` once the end has been taken. State lives in `self`, so a caller
    /// that stops waiting loses nothing.
    fn poll_step(&mut self, cx: &mut task::Context<'_>) -> Poll<Option<Step>> {
        loop {
            let Some(turn) = self.state.turn.as_mut() else {
                return Poll::Ready(None);
            };
            if self.ending {
                let result = ready!(turn.poll_finish(cx));
                self.state.turn = None;
                return Poll::Ready(Some(Step::End(result)));
            }
            match ready!(turn.poll_text(cx)) {
                Some(text) => return Poll::Ready(Some(Step::Content(self.state.content(&text)))),
                None => self.ending = true,
            }
        }
    }

    /// Waits, for up to [`HEADER_HOLD`], for the first frame of the response.
    ///
    /// # Errors
    /// The turn's error, when it fails before its first frame.
    pub(crate) async fn first(&mut self) -> Result<Option<Bytes>, ApiError> {
        let step = tokio::time::timeout(HEADER_HOLD, std::future::poll_fn(|cx| self.poll_step(cx)));
        let frame = match step.await {
            // Still waiting: the headers go now, the frame follows in the stream.
            Err(_) | Ok(None) => None,
            Ok(Some(Step::Content(frame))) => Some(frame),
            // The turn ended before any text: an error becomes the response's status.
            Ok(Some(Step::End(Err(e)))) => {
                return Err(turn::turn_error(&e, &self.state.request_id));
            }
            Ok(Some(Step::End(Ok(reply)))) => Some(self.state.closing(Ok(reply))),
        };
        self.last_sent = Instant::now();
        Ok(frame)
    }

    /// Whether the stream has been silent for the keep-alive interval.
    ///
    /// Frames do not move the timer (that would be a timer update per token): when it fires
    /// before `last_sent` plus the interval, frames went out meanwhile, and it is set again
    /// for then.
    fn poll_keep_alive(&mut self, cx: &mut task::Context<'_>) -> bool {
        let due = self.last_sent + self.keep_alive;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if timer.deadline() >= due {
                return true;
            }
            timer.as_mut().reset(due);
        }
    }
}

impl Stream for SseFrames {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let bytes = match this.poll_step(cx) {
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Step::Content(frame))) => frame,
            Poll::Ready(Some(Step::End(result))) => this.state.closing(result),
            Poll::Pending if this.poll_keep_alive(cx) => Bytes::from_static(KEEP_ALIVE),
            Poll::Pending => return Poll::Pending,
        };
        this.last_sent = Instant::now();
        Poll::Ready(Some(Ok(bytes)))
    }
}
