//! The legacy HTTP+SSE transport (MCP 2024-11-05), built on rmcp's generic [`Transport`].
//!
//! rmcp no longer ships a client for it, but many deployed servers still speak only this
//! transport. The client opens a `GET` event stream; the server's first event, `endpoint`,
//! names the URL the client POSTs its JSON-RPC messages to; the server's messages arrive as
//! `message` events on the stream. The endpoint must have the same origin as the stream, so
//! that headers (credentials) are never sent elsewhere. When the stream ends, the transport
//! ends, and the server is reconnected on next use.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Url;
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// The largest event accepted (the same bound rmcp puts on a stdio line).
pub(crate) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// Messages buffered between the event stream and the service loop.
const INBOUND_CAPACITY: usize = 64;

/// A failure of the SSE transport.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SseError {
    message: String,
    #[source]
    source: Option<reqwest::Error>,
}

impl SseError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    fn http(context: &str, e: reqwest::Error) -> Self {
        // URLs may carry secrets (expanded `${VAR}`s); keep them out of the error.
        let e = e.without_url();
        Self {
            message: format!("{context}: {e}"),
            source: Some(e),
        }
    }
}

/// The client side of a legacy SSE connection.
#[derive(Debug)]
pub(crate) struct SseTransport {
    inbound: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    endpoint: Url,
    client: reqwest::Client,
    headers: HeaderMap,
    post_timeout: Duration,
    reader: AbortHandle,
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the event stream at `url` and waits for the `endpoint` event.
pub(crate) async fn connect(
    client: reqwest::Client,
    url: &str,
    headers: HeaderMap,
    post_timeout: Duration,
) -> Result<SseTransport, SseError> {
    let url = Url::parse(url).map_err(|e| SseError::new(format!("invalid URL: {e}")))?;
    let response = client
        .get(url.clone())
        .headers(headers.clone())
        .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
        .send()
        .await
        .map_err(|e| SseError::http("opening the event stream failed", e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(SseError::new(format!(
            "opening the event stream failed with HTTP {status}"
        )));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !content_type.starts_with("text/event-stream") {
        return Err(SseError::new(format!(
            "the server answered with `{content_type}`, not an event stream"
        )));
    }
    let (endpoint_tx, endpoint_rx) = oneshot::channel();
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_CAPACITY);
    let reader = tokio::spawn(read_events(response, endpoint_tx, inbound_tx)).abort_handle();
    let endpoint = match endpoint_rx.await {
        Ok(Ok(endpoint)) => endpoint,
        Ok(Err(e)) => {
            reader.abort();
            return Err(e);
        }
        Err(_) => {
            reader.abort();
            return Err(SseError::new(
                "the event stream ended before the `endpoint` event",
            ));
        }
    };
    let endpoint = url
        .join(endpoint.trim())
        .map_err(|e| SseError::new(format!("invalid `endpoint` event: {e}")))?;
    if endpoint.origin() != url.origin() {
        reader.abort();
        return Err(SseError::new(format!(
            "the `endpoint` event names another origin ({}); refusing to send requests there",
            endpoint.origin().ascii_serialization()
        )));
    }
    Ok(SseTransport {
        inbound,
        endpoint,
        client,
        headers,
        post_timeout,
        reader,
    })
}

/// Reads the event stream: the first `endpoint` event goes to `endpoint`, `message` events
/// to `inbound`.
async fn read_events(
    response: reqwest::Response,
    endpoint: oneshot::Sender<Result<String, SseError>>,
    inbound: mpsc::Sender<RxJsonRpcMessage<RoleClient>>,
) {
    let mut endpoint = Some(endpoint);
    let mut decoder = Decoder::default();
    let mut events = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::debug!(error = %e.without_url(), "MCP event stream failed");
                break;
            }
        };
        if let Err(e) = decoder.push(&chunk, &mut events) {
            tracing::warn!(error = %e, "MCP event stream is malformed; closing it");
            if let Some(tx) = endpoint.take() {
                let _ = tx.send(Err(e));
            }
            return;
        }
        for event in events.drain(..) {
            match event.name.as_str() {
                "endpoint" => match endpoint.take() {
                    Some(tx) => {
                        let _ = tx.send(Ok(event.data));
                    }
                    None => tracing::debug!("ignoring a repeated `endpoint` event"),
                },
                "message" => match serde_json::from_str(&event.data) {
                    Ok(message) => {
                        if inbound.send(message).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "ignoring an event that is not a JSON-RPC message");
                    }
                },
                other => tracing::debug!(event = other, "ignoring an unknown event"),
            }
        }
    }
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let request = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(self.post_timeout);
        async move {
            let body = serde_json::to_vec(&item)
                .map_err(|e| SseError::new(format!("cannot encode a message: {e}")))?;
            let response = request
                .body(body)
                .send()
                .await
                .map_err(|e| SseError::http("posting a message failed", e))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(512).collect();
                Err(SseError::new(format!(
                    "posting a message failed with HTTP {status}: {text}"
                )))
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.inbound.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        self.inbound.close();
        Ok(())
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    name: String,
    data: String,
}

/// An incremental decoder of `text/event-stream` (the WHATWG event-stream format).
#[derive(Debug, Default)]
struct Decoder {
    line: Vec<u8>,
    /// The previous chunk ended with `\r`; a leading `\n` belongs to that line break.
    skip_lf: bool,
    name: String,
    data: String,
    has_data: bool,
}

impl Decoder {
    /// Feeds `chunk`, appending completed events to `out`.
    fn push(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        for &byte in chunk {
            if std::mem::take(&mut self.skip_lf) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' => self.end_line(out)?,
                b'\r' => {
                    self.end_line(out)?;
                    self.skip_lf = true;
                }
                _ => {
                    self.line.push(byte);
                    if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                        return Err(SseError::new(format!(
                            "an event exceeds {MAX_EVENT_BYTES} bytes"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<Event>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                let name = std::mem::take(&mut self.name);
                out.push(Event {
                    name: if name.is_empty() {
                        "message".to_owned()
                    } else {
                        name
                    },
                    data,
                });
            }
            self.name.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        let line = String::from_utf8_lossy(&line);
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(SseError::new(format!(
                        "an event exceeds {MAX_EVENT_BYTES} bytes"
                    )));
                }
            }
            // `id` and `retry` matter only for reconnecting, which this transport does not do.
            _ => {}
        }
        Ok(())
    }
}

/// Decodes an event stream delivered in `chunks`, for fuzzing the decoder from outside the
/// crate: the `(event name, data)` pairs, or the error that ended the stream.
///
/// # Errors
/// An event over the size limit.
pub fn decode_events_for_fuzzing<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<(String, String)>, String> {
    let mut decoder = Decoder::default();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder
            .push(chunk, &mut events)
            .map_err(|e| e.to_string())?;
    }
    Ok(events.into_iter().map(|e| (e.name, e.data)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> Vec<Event> {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out).unwrap();
        }
        out
    }

    fn event(name: &str, data: &str) -> Event {
        Event {
            name: name.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn decodes_events_across_chunks_and_line_endings() {
        let events = decode(&[
            b"event: endpoint\r",
            b"\ndata: /message?sessionId=1\r\n\r\n",
            b": keep-alive comment\n\n",
            b"data: {\"a\":\n",
            b"data: 1}\n\nevent:message\ndata:x\r\r",
            b"data: no blank line yet",
        ]);
        assert_eq!(
            events,
            vec![
                event("endpoint", "/message?sessionId=1"),
                event("message", "{\"a\":\n1}"),
                event("message", "x"),
            ]
        );
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert!(decode(&[b"event: ping\n\n", b"id: 7\n\n"]).is_empty());
    }

    #[test]
    fn oversized_events_are_an_error() {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert!(decoder.push(b"data: ", &mut out).is_ok());
        assert!(decoder.push(&big, &mut out).is_err());
    }
}
