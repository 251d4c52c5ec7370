//! Cartesia's streaming synthesis WebSocket, `GET /tts/websocket?cartesia_version=...`.
//!
//! - The key must be in `X-API-Key` (401 with Cartesia's JSON error otherwise), and
//!   `cartesia_version` in the query (400 otherwise).
//! - Many contexts share a connection. Each generation request (`transcript`,
//!   `context_id`, `output_format`, `continue`, `flush`) is spoken at once: its audio as
//!   `chunk` messages of at most 100 ms (base64 in `data`), then, with `add_timestamps`, a
//!   `timestamps` message whose `word_timestamps` are in seconds on the context's clock
//!   (the characters spoken in the context before count). `flush: true` is answered by
//!   `flush_done` with an incrementing `flush_id`, `continue: false` by `done`, after which
//!   the context is gone; `cancel: true` ends a context silently.
//! - Encodings `pcm_s16le`, `pcm_mulaw` and `pcm_alaw` at the requested `sample_rate`.
//! - Faults: [`Fault::Status`] refuses the handshake; after the connection's first chunk,
//!   [`Fault::VendorError`] sends an `error` for that chunk's context (status 500,
//!   [`VENDOR_ERROR`](super::VENDOR_ERROR)), [`Fault::CloseMidStream`] drops the TCP
//!   connection, [`Fault::Stall`] sends nothing more; [`Fault::SlowFirstChunk`] delays the
//!   first chunk; [`Fault::LateAudioAfterCancel`] answers a cancel with one more chunk of
//!   the cancelled context and its `done`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, Request, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

use super::synth::{Encoding, chunks};
use super::{Fault, RecordedMessage, Shared, VENDOR_ERROR, words_of};

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/tts/websocket", get(handshake))
        .with_state(shared)
}

fn error_response(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let status =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    let body = json!({
        "error": message,
        "message": message,
        "status_code": status.as_u16(),
    });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after
        && let Ok(value) = secs.to_string().parse()
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

async fn handshake(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let index = shared.record(&parts);
    if parts.headers.get("x-api-key").is_none() {
        return error_response(401, "Invalid API key", None);
    }
    let versioned = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.starts_with("cartesia_version=") && pair.len() > 17);
    if !versioned {
        return error_response(400, "cartesia_version is required", None);
    }
    let script = shared.next_script();
    if let Some(Fault::Status {
        status,
        retry_after_secs,
    }) = script.fault
    {
        return error_response(status, "The request was refused.", retry_after_secs);
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &shared).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade.on_upgrade(move |socket| async move {
        let mut connection = Connection {
            socket,
            fault: script.fault,
            first_sent: false,
            stalled: false,
            dead: HashSet::new(),
            contexts: HashMap::new(),
        };
        loop {
            let Some(Ok(message)) = connection.socket.recv().await else {
                break;
            };
            let text = match message {
                Message::Text(text) => text.as_str().to_owned(),
                Message::Binary(data) => {
                    shared.message(index, RecordedMessage::Binary(data.len()));
                    continue;
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            shared.message(index, RecordedMessage::Text(text.clone()));
            if connection.handle(&text).await.is_err() {
                break;
            }
        }
        shared.closed(index);
    })
}

/// One context's progress.
struct Context {
    /// Characters spoken so far.
    chars: usize,
    flushes: u64,
}

struct Connection {
    socket: WebSocket,
    fault: Option<Fault>,
    first_sent: bool,
    stalled: bool,
    /// Contexts that got the vendor error: nothing more is said about them.
    dead: HashSet<String>,
    contexts: HashMap<String, Context>,
}

/// The connection is to be dropped.
struct Drop;

impl Connection {
    async fn send(&mut self, context: &str, message: Value) -> Result<(), Drop> {
        if self.stalled || self.dead.contains(context) {
            return Ok(());
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .map_err(|_| Drop)
    }

    /// Sends an audio chunk: the first of the connection is where the faults strike.
    async fn chunk(&mut self, context: &str, audio: &[u8]) -> Result<(), Drop> {
        if self.stalled || self.dead.contains(context) {
            return Ok(());
        }
        if !self.first_sent
            && let Some(Fault::SlowFirstChunk(delay)) = &self.fault
        {
            tokio::time::sleep(*delay).await;
        }
        let data = base64::engine::general_purpose::STANDARD.encode(audio);
        self.send(
            context,
            json!({
                "type": "chunk", "data": data, "done": false, "status_code": 206,
                "step_time": 12.5, "context_id": context,
            }),
        )
        .await?;
        if self.first_sent {
            return Ok(());
        }
        self.first_sent = true;
        match &self.fault {
            Some(Fault::VendorError) => {
                self.send(
                    context,
                    json!({
                        "type": "error", "context_id": context, "status_code": 500,
                        "done": true, "title": "Internal Server Error",
                        "message": VENDOR_ERROR, "error_code": "internal_error",
                    }),
                )
                .await?;
                self.dead.insert(context.to_owned());
            }
            Some(Fault::CloseMidStream) => return Err(Drop),
            Some(Fault::Stall) => self.stalled = true,
            _ => {}
        }
        Ok(())
    }

    async fn handle(&mut self, text: &str) -> Result<(), Drop> {
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return self
                .send(
                    "",
                    json!({"type": "error", "status_code": 400, "done": true,
                           "title": "Invalid request", "message": "not JSON"}),
                )
                .await;
        };
        let context = request
            .get("context_id")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        if request.get("cancel").and_then(Value::as_bool) == Some(true) {
            let known = self.contexts.remove(&context).is_some();
            if known && self.fault == Some(Fault::LateAudioAfterCancel) {
                // What a reused socket does: audio already generated still arrives.
                let (_, audio) = chunks(5, 16_000, Encoding::Pcm16).remove(0);
                self.chunk(&context, &audio).await?;
                self.send(
                    &context,
                    json!({"type": "done", "done": true, "status_code": 206, "context_id": context}),
                )
                .await?;
            }
            return Ok(());
        }
        let format = request.get("output_format").cloned().unwrap_or_default();
        let encoding = match format.get("encoding").and_then(Value::as_str) {
            Some("pcm_s16le") => Encoding::Pcm16,
            Some("pcm_mulaw") => Encoding::Mulaw,
            Some("pcm_alaw") => Encoding::Alaw,
            _ => {
                return self
                    .send(
                        &context,
                        json!({"type": "error", "context_id": context, "status_code": 400,
                               "done": true, "title": "Invalid output format",
                               "message": "unsupported encoding"}),
                    )
                    .await;
            }
        };
        let rate = format
            .get("sample_rate")
            .and_then(Value::as_u64)
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| (8_000..=48_000).contains(r))
            .unwrap_or(24_000);
        let transcript = request
            .get("transcript")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let timestamps = request.get("add_timestamps").and_then(Value::as_bool) == Some(true);
        let before = self
            .contexts
            .entry(context.clone())
            .or_insert(Context {
                chars: 0,
                flushes: 0,
            })
            .chars;
        let count = transcript.chars().count();
        if count > 0 {
            for (_, audio) in chunks(count, rate, encoding) {
                self.chunk(&context, &audio).await?;
            }
            if timestamps {
                let words = words_of(&transcript, before);
                let secs = |d: std::time::Duration| d.as_secs_f64();
                self.send(
                    &context,
                    json!({
                        "type": "timestamps", "context_id": context, "status_code": 206,
                        "done": false,
                        "word_timestamps": {
                            "words": words.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
                            "start": words.iter().map(|w| secs(w.1)).collect::<Vec<_>>(),
                            "end": words.iter().map(|w| secs(w.2)).collect::<Vec<_>>(),
                        },
                    }),
                )
                .await?;
            }
        }
        let Some(state) = self.contexts.get_mut(&context) else {
            return Ok(());
        };
        state.chars += count;
        if request.get("flush").and_then(Value::as_bool) == Some(true) {
            state.flushes += 1;
            let flush_id = state.flushes;
            self.send(
                &context,
                json!({"type": "flush_done", "context_id": context, "flush_done": true,
                       "flush_id": flush_id, "done": false, "status_code": 206}),
            )
            .await?;
        }
        if request.get("continue").and_then(Value::as_bool) != Some(true) {
            self.contexts.remove(&context);
            self.send(
                &context,
                json!({"type": "done", "done": true, "status_code": 206, "context_id": context}),
            )
            .await?;
        }
        Ok(())
    }
}
