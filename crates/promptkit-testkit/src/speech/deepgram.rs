//! Deepgram's speech-to-text protocol: live `GET /v1/listen` (a WebSocket) and batch
//! `POST /v1/listen`.
//!
//! Live: the key must come as `Authorization: Token …` (else 401 with Deepgram's
//! `{"err_code":"INVALID_AUTH",…}` body). The query's `encoding` (`linear16`, `mulaw`,
//! `alaw`), `sample_rate`, `channels`, `interim_results`, `utterance_end_ms` and
//! `vad_events` are read as Deepgram reads them (defaults `linear16`, 16000, 1, false,
//! off, false). Binary messages are audio and advance the session's audio clock; the script
//! is heard on it:
//!
//! - `SpeechStarted {timestamp}` when the audio reaches a segment's start (with
//!   `vad_events=true`);
//! - a partial `Results` (`is_final: false`) with the first half of the words at the
//!   segment's middle (with `interim_results=true`);
//! - the final `Results` (`is_final: true`, `speech_final` from the segment) at its end,
//!   followed by `UtteranceEnd {last_word_end}` after a `speech_final` segment when
//!   `utterance_end_ms` was given;
//! - an empty interim `Results` for each second of audio in which nothing is said (as
//!   Deepgram sends them; clients must not turn them into events).
//!
//! `{"type":"Finalize"}` flushes what was heard as finals with `from_finalize: true` (an
//! empty one when there is nothing); `{"type":"CloseStream"}` (or an empty binary message,
//! the old form) flushes the rest, sends `Metadata` with the audio's duration, and closes
//! with 1000; `{"type":"KeepAlive"}` does nothing.
//!
//! Faults: `Status` refuses the handshake with that status and Deepgram's error body;
//! `VendorError` sends Deepgram's error message after the first transcript and closes with
//! 1011; `CloseMidStream` drops the connection after the first transcript; `SlowFirstChunk`
//! delays the first message; `Stall` sends nothing after the first transcript.
//!
//! Batch: the body is a WAV file (its header gives the format) or raw audio described by
//! the query; the answer holds every segment whose start lies within the audio.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::{AudioClock, Fault, Heard, RecordedMessage, Script, Segment, Shared, Transcriber};

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/listen", get(live).post(batch))
        .with_state(shared)
}

/// The model the server says served a session.
const MODEL_UUID: &str = "1abfe86b-e047-4eed-858a-35e5625b41ee";

fn request_id(index: usize) -> String {
    format!("00000000-0000-4000-8000-{index:012x}")
}

fn error_response(status: StatusCode, code: &str, message: &str, index: usize) -> Response {
    let body = json!({
        "err_code": code,
        "err_msg": message,
        "request_id": request_id(index),
    });
    let mut response = (status, axum::Json(body.clone())).into_response();
    // Deepgram repeats a refused upgrade's error in `dg-error`, with `dg-request-id`.
    for (name, value) in [
        ("dg-request-id", request_id(index)),
        ("dg-error", body.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The refusal for a missing key or a `Status` fault; `None` to go on.
fn refusal(
    parts: &axum::http::request::Parts,
    script: Option<&Script>,
    index: usize,
) -> Option<Response> {
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Token "))
        .is_some_and(|key| !key.trim().is_empty());
    if !authorized {
        return Some(error_response(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTH",
            "Invalid credentials.",
            index,
        ));
    }
    if let Some(Fault::Status {
        status,
        retry_after_secs,
    }) = script.and_then(|s| s.fault.as_ref())
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (code, message) = match status.as_u16() {
            401 => ("INVALID_AUTH", "Invalid credentials."),
            403 => (
                "INSUFFICIENT_PERMISSIONS",
                "Project does not have access to the requested model.",
            ),
            429 => (
                "TOO_MANY_REQUESTS",
                "Too many requests. Please try again later",
            ),
            400..=499 => ("Bad Request", "The request was not understood."),
            _ => ("INTERNAL_SERVER_ERROR", "The server hit an internal error."),
        };
        let mut response = error_response(status, code, message, index);
        if let Some(Ok(value)) =
            retry_after_secs.map(|secs| HeaderValue::from_str(&secs.to_string()))
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Some(response);
    }
    None
}

/// The query parameter `name`.
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The session's settings, from the query.
#[derive(Debug, Clone, Copy)]
struct Settings {
    sample_rate: u32,
    channels: u16,
    bytes_per_sample: u16,
    interim_results: bool,
    utterance_end: bool,
    vad_events: bool,
}

impl Settings {
    fn from_query(query: &str) -> Option<Self> {
        let bytes_per_sample = match param(query, "encoding").unwrap_or("linear16") {
            "linear16" => 2,
            "mulaw" | "alaw" => 1,
            _ => return None,
        };
        let sample_rate = param(query, "sample_rate").map_or(Some(16_000), |v| v.parse().ok())?;
        let channels = param(query, "channels").map_or(Some(1), |v| v.parse().ok())?;
        if sample_rate == 0 || channels == 0 {
            return None;
        }
        Some(Self {
            sample_rate,
            channels,
            bytes_per_sample,
            interim_results: param(query, "interim_results") == Some("true"),
            utterance_end: param(query, "utterance_end_ms").is_some_and(|v| v != "false"),
            vad_events: param(query, "vad_events") == Some("true"),
        })
    }
}

async fn live(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let index = shared.record(&parts);
    if let Some(response) = refusal(&parts, None, index) {
        return response;
    }
    let script = shared.next_script();
    if let Some(response) = refusal(&parts, Some(&script), index) {
        return response;
    }
    let Some(settings) = Settings::from_query(parts.uri.query().unwrap_or_default()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Invalid encoding, sample_rate or channels.",
            index,
        );
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade.on_upgrade(move |socket| async move {
        let mut session = LiveSession::new(shared, index, settings, script);
        session.run(socket).await;
    })
}

/// What a live session does next.
enum Step {
    Continue,
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// Drop the connection without a close frame.
    Drop,
}

struct LiveSession {
    shared: Arc<Shared>,
    index: usize,
    settings: Settings,
    fault: Option<Fault>,
    clock: AudioClock,
    transcriber: Transcriber,
    /// Segments whose `SpeechStarted` went out.
    started: usize,
    /// Whole seconds of audio accounted for by results, empty or not.
    seconds_reported: u64,
    /// A message went out (for `SlowFirstChunk`).
    sent_any: bool,
    /// A transcript went out (for the faults that follow the first result).
    sent_transcript: bool,
    /// `Stall`: nothing more goes out.
    stalled: bool,
}

impl LiveSession {
    fn new(shared: Arc<Shared>, index: usize, settings: Settings, script: Script) -> Self {
        Self {
            shared,
            index,
            settings,
            fault: script.fault,
            clock: AudioClock::new(
                settings.sample_rate,
                settings.channels,
                settings.bytes_per_sample,
            ),
            transcriber: Transcriber::new(script.segments),
            started: 0,
            seconds_reported: 0,
            sent_any: false,
            sent_transcript: false,
            stalled: false,
        }
    }

    async fn run(&mut self, mut socket: WebSocket) {
        loop {
            let Some(Ok(message)) = socket.recv().await else {
                break;
            };
            let step = match message {
                Message::Binary(data) => {
                    self.shared
                        .message(self.index, RecordedMessage::Binary(data.len()));
                    if data.is_empty() {
                        self.close_stream(&mut socket).await
                    } else {
                        self.audio(&mut socket, data.len()).await
                    }
                }
                Message::Text(text) => {
                    self.shared
                        .message(self.index, RecordedMessage::Text(text.as_str().to_owned()));
                    let kind = serde_json::from_str::<Value>(text.as_str())
                        .ok()
                        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
                    match kind.as_deref() {
                        Some("Finalize") => self.finalize(&mut socket).await,
                        Some("CloseStream") => self.close_stream(&mut socket).await,
                        _ => Step::Continue,
                    }
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => Step::Continue,
            };
            match step {
                Step::Continue => {}
                Step::Drop => break,
                Step::Close(code, reason) => {
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    // Read until the client answers the close.
                    while let Some(Ok(message)) = socket.recv().await {
                        if matches!(message, Message::Close(_)) {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        self.shared.closed(self.index);
    }

    /// Sends `message`, applying the script's fault; `Some` ends the session.
    async fn send(&mut self, socket: &mut WebSocket, message: &Value) -> Option<Step> {
        if self.stalled {
            return None;
        }
        if !self.sent_any {
            self.sent_any = true;
            if let Some(Fault::SlowFirstChunk(delay)) = self.fault {
                tokio::time::sleep(delay).await;
            }
        }
        if socket
            .send(Message::Text(message.to_string().into()))
            .await
            .is_err()
        {
            return Some(Step::Drop);
        }
        let transcript = message
            .pointer("/channel/alternatives/0/transcript")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        if transcript && !self.sent_transcript {
            self.sent_transcript = true;
            match self.fault {
                Some(Fault::VendorError) => {
                    let error = json!({
                        "type": "Error",
                        "description": super::VENDOR_ERROR,
                        "message": "NET-0000",
                        "variant": "internal",
                    });
                    let _ = socket.send(Message::Text(error.to_string().into())).await;
                    return Some(Step::Close(1011, "NET-0000"));
                }
                Some(Fault::CloseMidStream) => return Some(Step::Drop),
                Some(Fault::Stall) => self.stalled = true,
                _ => {}
            }
        }
        None
    }

    /// Sends every message; the first step that ends the session wins.
    async fn send_all(&mut self, socket: &mut WebSocket, messages: Vec<Value>) -> Step {
        for message in &messages {
            if let Some(step) = self.send(socket, message).await {
                return step;
            }
        }
        Step::Continue
    }

    async fn audio(&mut self, socket: &mut WebSocket, len: usize) -> Step {
        let now = self.clock.advance(len);
        let mut out = Vec::new();
        while let Some(segment) = self.transcriber.segments().get(self.started) {
            if segment.start > now {
                break;
            }
            if self.settings.vad_events {
                out.push(json!({
                    "type": "SpeechStarted",
                    "channel": [0],
                    "timestamp": secs(segment.start),
                }));
            }
            self.started += 1;
        }
        let heard = self.transcriber.advance(now);
        let said = !heard.is_empty();
        for item in heard {
            out.extend(self.results(&item, false));
        }
        let speaking = self
            .transcriber
            .segments()
            .iter()
            .any(|s| s.start <= now && now < s.end);
        let whole = now.as_secs();
        if said || speaking {
            self.seconds_reported = whole;
        } else {
            while self.seconds_reported < whole {
                let start = Duration::from_secs(self.seconds_reported);
                self.seconds_reported += 1;
                out.push(self.result_json("", &[], start, Duration::from_secs(1), false, false));
            }
        }
        self.send_all(socket, out).await
    }

    async fn finalize(&mut self, socket: &mut WebSocket) -> Step {
        let now = self.clock.now();
        let heard = self.transcriber.flush(now);
        let mut out = Vec::new();
        for item in &heard {
            out.extend(self.results(item, true));
        }
        if heard.is_empty() {
            let mut empty = self.result_json("", &[], now, Duration::ZERO, true, false);
            empty["from_finalize"] = json!(true);
            out.push(empty);
        }
        self.send_all(socket, out).await
    }

    async fn close_stream(&mut self, socket: &mut WebSocket) -> Step {
        let now = self.clock.now();
        let heard = self.transcriber.flush(now);
        let mut out = Vec::new();
        for item in &heard {
            out.extend(self.results(item, false));
        }
        out.push(json!({
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": request_id(self.index),
            "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
            "created": "2026-01-01T00:00:00.000Z",
            "duration": secs(now),
            "channels": self.settings.channels,
            "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: {"name": "general-nova-3", "version": "2025-01-01", "arch": "nova-3"}},
        }));
        match self.send_all(socket, out).await {
            Step::Continue if self.stalled => Step::Continue,
            Step::Continue => Step::Close(1000, ""),
            other => other,
        }
    }

    /// The messages for one thing heard: a partial (when asked for) or a final, with the
    /// utterance end after a `speech_final` final. `finalize`: flushed by `Finalize`.
    fn results(&self, heard: &Heard, finalize: bool) -> Vec<Value> {
        let mut out = Vec::new();
        match *heard {
            Heard::Partial(index) => {
                if !self.settings.interim_results {
                    return out;
                }
                let Some(segment) = self.transcriber.segments().get(index) else {
                    return out;
                };
                let words = segment.words();
                let half = &words[..words.len().div_ceil(2)];
                let text = join(half);
                let middle = segment.start + segment.end.saturating_sub(segment.start) / 2;
                out.push(self.result_json(
                    &text,
                    half,
                    segment.start,
                    middle.saturating_sub(segment.start),
                    false,
                    false,
                ));
            }
            Heard::Final { index, flushed } => {
                let Some(segment) = self.transcriber.segments().get(index) else {
                    return out;
                };
                let words = segment.words();
                let speech_final = segment.speech_final && !flushed;
                let mut result = self.result_json(
                    &segment.text,
                    &words,
                    segment.start,
                    segment.end.saturating_sub(segment.start),
                    true,
                    speech_final,
                );
                if finalize {
                    result["from_finalize"] = json!(true);
                }
                out.push(result);
                if speech_final && self.settings.utterance_end {
                    out.push(utterance_end(segment));
                }
            }
        }
        out
    }

    fn result_json(
        &self,
        text: &str,
        words: &[(String, Duration, Duration)],
        start: Duration,
        duration: Duration,
        is_final: bool,
        speech_final: bool,
    ) -> Value {
        json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": secs(duration),
            "start": secs(start),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {"alternatives": [alternative(text, words)]},
            "metadata": {
                "request_id": request_id(self.index),
                "model_info": {"name": "general-nova-3", "version": "2025-01-01", "arch": "nova-3"},
                "model_uuid": MODEL_UUID,
            },
        })
    }
}

fn utterance_end(segment: &Segment) -> Value {
    json!({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": secs(segment.end)})
}

fn join(words: &[(String, Duration, Duration)]) -> String {
    words
        .iter()
        .map(|(w, _, _)| w.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One alternative in Deepgram's form: `word` lower case without punctuation,
/// `punctuated_word` as scripted.
fn alternative(text: &str, words: &[(String, Duration, Duration)]) -> Value {
    let words: Vec<Value> = words
        .iter()
        .map(|(word, start, end)| {
            let bare: String = word
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect();
            json!({
                "word": bare,
                "start": secs(*start),
                "end": secs(*end),
                "confidence": 0.98,
                "punctuated_word": word,
            })
        })
        .collect();
    let confidence = if words.is_empty() { 0.0 } else { 0.98 };
    json!({"transcript": text, "confidence": confidence, "words": words})
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

async fn batch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let index = shared.record(&parts);
    let Ok(bytes) = axum::body::to_bytes(body, 256 << 20).await else {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Bad Request",
            "The body is too large.",
            index,
        );
    };
    shared.message(index, RecordedMessage::Binary(bytes.len()));
    if let Some(response) = refusal(&parts, None, index) {
        return response;
    }
    let script = shared.next_script();
    if let Some(response) = refusal(&parts, Some(&script), index) {
        return response;
    }
    let query = parts.uri.query().unwrap_or_default();
    let Some(duration) = batch_duration(&bytes, query) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Bad Request: failed to process audio: corrupt or unsupported data",
            index,
        );
    };
    if let Some(Fault::SlowFirstChunk(delay)) = script.fault {
        tokio::time::sleep(delay).await;
    }
    let heard: Vec<&Segment> = script
        .segments
        .iter()
        .filter(|s| s.start < duration)
        .collect();
    let text = heard
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<(String, Duration, Duration)> =
        heard.iter().flat_map(|segment| segment.words()).collect();
    let answer = json!({
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": request_id(index),
            "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
            "created": "2026-01-01T00:00:00.000Z",
            "duration": secs(duration),
            "channels": 1,
            "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: {"name": "general-nova-3", "version": "2025-01-01", "arch": "nova-3"}},
        },
        "results": {"channels": [{"alternatives": [alternative(&text, &words)]}]},
    })
    .to_string();
    match script.fault {
        Some(Fault::VendorError | Fault::CloseMidStream) => {
            // The body is cut short after its first chunk and the connection closed.
            let half = Bytes::from(answer.into_bytes()).slice(..CUT);
            let chunks = futures_util::stream::iter([
                Ok(half),
                Err(std::io::Error::other(super::VENDOR_ERROR)),
            ]);
            json_response(Body::from_stream(chunks))
        }
        Some(Fault::Stall) => {
            let first = Bytes::from(answer.into_bytes()).slice(..CUT);
            let chunks = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::pending());
            json_response(Body::from_stream(chunks))
        }
        _ => json_response(Body::from(answer)),
    }
}

/// Where a cut body ends: well inside the JSON.
const CUT: usize = 16;

fn json_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The duration of a batch body: from its WAV header, or from the query's `encoding`,
/// `sample_rate` and `channels` for raw audio.
fn batch_duration(bytes: &[u8], query: &str) -> Option<Duration> {
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WAVE") {
        return wav_duration(bytes);
    }
    let settings = Settings::from_query(query)?;
    let per_second = u64::from(settings.sample_rate)
        * u64::from(settings.channels)
        * u64::from(settings.bytes_per_sample);
    Some(Duration::from_micros(
        bytes.len() as u64 * 1_000_000 / per_second.max(1),
    ))
}

fn wav_duration(bytes: &[u8]) -> Option<Duration> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let mut at = 12;
    let mut per_second = None;
    while at + 8 <= bytes.len() {
        let id = bytes.get(at..at + 4)?;
        let len = usize::try_from(u32_at(at + 4)?).ok()?;
        let body = at + 8;
        if id == b"fmt " {
            let channels = u64::from(u16_at(body + 2)?);
            let rate = u64::from(u32_at(body + 4)?);
            let bits = u64::from(u16_at(body + 14)?);
            per_second = Some(rate * channels * bits.div_ceil(8));
        } else if id == b"data" {
            let available = len.min(bytes.len().saturating_sub(body)) as u64;
            let per_second = per_second.filter(|p| *p > 0)?;
            return Some(Duration::from_micros(available * 1_000_000 / per_second));
        }
        at = body + len + (len & 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_durations_come_from_the_query_and_the_wav_header() {
        let settings = Settings::from_query("encoding=mulaw&sample_rate=8000&interim_results=true")
            .expect("settings");
        assert_eq!((settings.sample_rate, settings.bytes_per_sample), (8000, 1));
        assert!(settings.interim_results && !settings.vad_events && !settings.utterance_end);
        assert!(Settings::from_query("encoding=opus").is_none());
        assert!(Settings::from_query("sample_rate=0").is_none());

        // A 44-byte header for 16 kHz mono PCM16 and half a second of samples.
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend_from_slice(&16_u32.to_le_bytes());
        wav.extend_from_slice(&1_u16.to_le_bytes());
        wav.extend_from_slice(&1_u16.to_le_bytes());
        wav.extend_from_slice(&16_000_u32.to_le_bytes());
        wav.extend_from_slice(&32_000_u32.to_le_bytes());
        wav.extend_from_slice(&2_u16.to_le_bytes());
        wav.extend_from_slice(&16_u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&16_000_u32.to_le_bytes());
        wav.extend_from_slice(&[0; 16_000]);
        assert_eq!(batch_duration(&wav, ""), Some(Duration::from_millis(500)));
        assert_eq!(
            batch_duration(&[0; 8000], "encoding=alaw&sample_rate=8000"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(batch_duration(b"RIFF\0\0\0\0WAVE", ""), None);
    }
}
