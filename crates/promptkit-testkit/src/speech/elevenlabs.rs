//! ElevenLabs' multi-context synthesis WebSocket,
//! `GET /v1/text-to-speech/{voice_id}/multi-stream-input?model_id=...&output_format=...`.
//!
//! - The key must be in `xi-api-key` (401 with ElevenLabs' `{"detail": ...}` body
//!   otherwise). `output_format` is `pcm_8000` ... `pcm_44100`, `ulaw_8000` or `alaw_8000`
//!   (`pcm_16000` when absent; others are refused with 400).
//! - Many contexts share a connection (`context_id` in every client message, `contextId`
//!   in every server message). A context's first message, `{"text": " "}`, opens it and is
//!   not spoken; every later text is spoken at once: audio messages of at most 100 ms
//!   (base64 `audio`) with `alignment` and `normalizedAlignment` (the chunk's characters,
//!   their start times and durations in ms relative to the chunk). `{"text": ""}` keeps a
//!   context alive, `flush: true` is accepted (the text is already spoken; ElevenLabs sends
//!   no acknowledgement), `close_context: true` is answered by `{"isFinal": true}`, and
//!   `close_socket: true` ends every context and closes the socket.
//! - `GET /v1/text-to-speech/{voice_id}/stream-input` is the single-context form: no
//!   context ids, and `{"text": ""}` ends the input, answered by `{"isFinal": true}` and a
//!   close.
//! - Faults: [`Fault::Status`] refuses the handshake; after the connection's first audio,
//!   [`Fault::VendorError`] sends `{"error": "internal_error", "message":
//!   VENDOR_ERROR, "code": 500}` for that context, [`Fault::CloseMidStream`] drops the TCP
//!   connection, [`Fault::Stall`] sends nothing more; [`Fault::SlowFirstChunk`] delays the
//!   first audio; [`Fault::LateAudioAfterCancel`] answers a `close_context` of a context
//!   with text sent since its last flush (a cancel: a finishing client flushes first) with
//!   one more audio message of it and its `isFinal`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, Request, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

use super::synth::{Encoding, chunks};
use super::{Fault, MS_PER_CHAR, RecordedMessage, Shared, VENDOR_ERROR};

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/v1/text-to-speech/{voice_id}/multi-stream-input",
            get(|state, request| handshake(state, request, false)),
        )
        .route(
            "/v1/text-to-speech/{voice_id}/stream-input",
            get(|state, request| handshake(state, request, true)),
        )
        .with_state(shared)
}

fn error_response(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> Response {
    let status =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    let body = json!({"detail": {"status": code, "message": message}});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after
        && let Ok(value) = secs.to_string().parse()
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn format_of(query: &str) -> Option<(u32, Encoding)> {
    let format = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "output_format")
        .map_or("pcm_16000", |(_, value)| value);
    match format {
        "ulaw_8000" => Some((8_000, Encoding::Mulaw)),
        "alaw_8000" => Some((8_000, Encoding::Alaw)),
        other => {
            let rate: u32 = other.strip_prefix("pcm_")?.parse().ok()?;
            [8_000, 16_000, 22_050, 24_000, 44_100]
                .contains(&rate)
                .then_some((rate, Encoding::Pcm16))
        }
    }
}

async fn handshake(State(shared): State<Arc<Shared>>, request: Request, single: bool) -> Response {
    let (mut parts, _body) = request.into_parts();
    let index = shared.record(&parts);
    if parts.headers.get("xi-api-key").is_none() {
        return error_response(401, "invalid_api_key", "Invalid API key", None);
    }
    let Some((rate, encoding)) = format_of(parts.uri.query().unwrap_or_default()) else {
        return error_response(
            400,
            "invalid_output_format",
            "This server speaks PCM and G.711 only.",
            None,
        );
    };
    let script = shared.next_script();
    if let Some(Fault::Status {
        status,
        retry_after_secs,
    }) = script.fault
    {
        let code = match status {
            401 | 403 => "invalid_api_key",
            429 => "too_many_concurrent_requests",
            _ => "internal_error",
        };
        return error_response(status, code, "The request was refused.", retry_after_secs);
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &shared).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade.on_upgrade(move |socket| async move {
        let mut connection = Connection {
            socket,
            single,
            rate,
            encoding,
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
#[derive(Default)]
struct Context {
    /// Whether its opening `" "` came.
    opened: bool,
    /// Whether text came since the last flush.
    unflushed: bool,
}

struct Connection {
    socket: WebSocket,
    /// `stream-input`: one context, no context ids, `{"text": ""}` ends it and the socket.
    single: bool,
    rate: u32,
    encoding: Encoding,
    fault: Option<Fault>,
    first_sent: bool,
    stalled: bool,
    dead: HashSet<String>,
    contexts: HashMap<String, Context>,
}

/// The connection is to be dropped (or was closed).
struct End;

impl Connection {
    async fn send(&mut self, context: &str, mut message: Value) -> Result<(), End> {
        if self.stalled || self.dead.contains(context) {
            return Ok(());
        }
        if self.single
            && let Some(object) = message.as_object_mut()
        {
            object.remove("contextId");
        }
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .map_err(|_| End)
    }

    /// One audio message with the alignment of the characters it speaks.
    async fn audio(&mut self, context: &str, chars: &[char], audio: &[u8]) -> Result<(), End> {
        if self.stalled || self.dead.contains(context) {
            return Ok(());
        }
        if !self.first_sent
            && let Some(Fault::SlowFirstChunk(delay)) = &self.fault
        {
            tokio::time::sleep(*delay).await;
        }
        let alignment = json!({
            "chars": chars.iter().map(char::to_string).collect::<Vec<_>>(),
            "charStartTimesMs": (0..chars.len() as u64).map(|i| i * MS_PER_CHAR).collect::<Vec<_>>(),
            "charDurationsMs": vec![MS_PER_CHAR; chars.len()],
        });
        let data = base64::engine::general_purpose::STANDARD.encode(audio);
        self.send(
            context,
            json!({
                "audio": data, "isFinal": null, "contextId": context,
                "alignment": alignment, "normalizedAlignment": alignment,
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
                    json!({"error": "internal_error", "message": VENDOR_ERROR, "code": 500,
                           "contextId": context}),
                )
                .await?;
                self.dead.insert(context.to_owned());
            }
            Some(Fault::CloseMidStream) => return Err(End),
            Some(Fault::Stall) => self.stalled = true,
            _ => {}
        }
        Ok(())
    }

    async fn speak(&mut self, context: &str, text: &str) -> Result<(), End> {
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        for (count, audio) in chunks(chars.len(), self.rate, self.encoding) {
            let spoken = chars[at..at + count].to_vec();
            at += count;
            self.audio(context, &spoken, &audio).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, text: &str) -> Result<(), End> {
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return self
                .send(
                    "",
                    json!({"error": "invalid_request", "message": "Invalid JSON"}),
                )
                .await;
        };
        if request.get("close_socket").and_then(Value::as_bool) == Some(true) {
            let contexts: Vec<String> = self.contexts.drain().map(|(id, _)| id).collect();
            for context in contexts {
                self.send(&context, json!({"isFinal": true, "contextId": context}))
                    .await?;
            }
            let _ = self
                .socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
            return Err(End);
        }
        let context = if self.single {
            "default"
        } else {
            request
                .get("context_id")
                .and_then(Value::as_str)
                .unwrap_or("default")
        }
        .to_owned();
        if request.get("close_context").and_then(Value::as_bool) == Some(true) {
            let Some(state) = self.contexts.remove(&context) else {
                return Ok(());
            };
            if state.unflushed && self.fault == Some(Fault::LateAudioAfterCancel) {
                // What a reused socket does: audio already generated still arrives.
                let late: Vec<char> = "late".chars().collect();
                let (_, audio) = chunks(late.len(), self.rate, self.encoding).remove(0);
                self.audio(&context, &late, &audio).await?;
            }
            return self
                .send(&context, json!({"isFinal": true, "contextId": context}))
                .await;
        }
        let text = request
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let state = self.contexts.entry(context.clone()).or_default();
        let opening = !state.opened;
        state.opened = true;
        let speak = !(text.is_empty() || opening && text == " ");
        if speak {
            state.unflushed = true;
        }
        if request.get("flush").and_then(Value::as_bool) == Some(true) {
            state.unflushed = false;
        }
        if speak {
            self.speak(&context, &text).await?;
        }
        if self.single && text.is_empty() && !opening {
            // The end of the input: the single context is over, and so is the socket.
            self.send(&context, json!({"isFinal": true})).await?;
            let _ = self
                .socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "".into(),
                })))
                .await;
            return Err(End);
        }
        Ok(())
    }
}
