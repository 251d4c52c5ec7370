//! The HTTP side of the clients: reqwest on rustls, no redirects, bounded error bodies, and
//! statuses mapped to the error classes.

use futures_util::StreamExt as _;
use promptkit_core::SpeechError;
use tokio::time::Instant;

use super::{Connection, parse_retry_after, status_error, transport, vendor_message};

/// The most of an error body read (64 KiB).
const MAX_ERROR_BODY: usize = 64 << 10;

/// An HTTP client for `connection`: its connect timeout and roots, and no redirects (a
/// redirect would carry the key to another host).
pub(crate) fn client(connection: &Connection) -> Result<reqwest::Client, SpeechError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connection.timeouts.connect)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true);
    for der in connection.tls.extra() {
        let certificate =
            reqwest::Certificate::from_der(der).map_err(|e| SpeechError::InvalidInput {
                message: format!("an added root certificate is not usable: {e}"),
            })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| transport("could not build the HTTP client", e))
}

/// The error for a response whose status is not a success: the status class, the vendor's
/// message (at most 64 KiB read, scrubbed of the key, cut short), and `Retry-After`.
pub(crate) async fn error_for(connection: &Connection, response: reqwest::Response) -> SpeechError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = MAX_ERROR_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    // Vendors wrap the message in JSON: `{"error": {"message": …}}` (OpenAI),
    // `{"err_msg": …}` (Deepgram), `{"detail": {"message": …}}` (ElevenLabs).
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| {
            [
                "/error/message",
                "/error",
                "/err_msg",
                "/message",
                "/detail/message",
                "/detail",
            ]
            .iter()
            .find_map(|pointer| json.pointer(pointer)?.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| text.into_owned());
    let message = if message.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        vendor_message(connection, &message)
    };
    status_error(status, retry_after, message)
}

/// The error for a request that failed in transport.
pub(crate) fn request_error(connection: &Connection, error: reqwest::Error) -> SpeechError {
    if error.is_timeout() {
        let limit = if error.is_connect() {
            connection.timeouts.connect
        } else {
            connection.timeouts.first_byte
        };
        return SpeechError::Timeout(limit);
    }
    // reqwest puts the URL in its message; ours never holds the key, but strip it anyway.
    let error = error.without_url();
    transport("the speech request failed", error)
}

/// The most of a success body read (8 MiB: a transcription's JSON, with its words, is far
/// smaller).
pub(crate) const MAX_RESPONSE_BODY: usize = 8 << 20;

/// [`error_for`] before `deadline`: a vendor whose error body stalls still gets its status.
pub(crate) async fn error_within(
    connection: &Connection,
    response: reqwest::Response,
    deadline: Instant,
) -> SpeechError {
    let status = response.status().as_u16();
    tokio::time::timeout_at(deadline, error_for(connection, response))
        .await
        .unwrap_or_else(|_| status_error(status, None, format!("HTTP {status}")))
}

/// A response body (`what` names it in errors): at most [`MAX_RESPONSE_BODY`] bytes, with
/// no gap between chunks longer than the idle timeout.
pub(crate) async fn read_body(
    connection: &Connection,
    response: reqwest::Response,
    what: &str,
) -> Result<Vec<u8>, SpeechError> {
    let idle = connection.timeouts.idle;
    let mut chunks = response.bytes_stream();
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(idle, chunks.next()).await {
            Err(_) => return Err(SpeechError::Timeout(idle)),
            Ok(None) => return Ok(body),
            Ok(Some(Err(e))) => {
                return Err(transport(format!("{what} broke off"), e.without_url()));
            }
            Ok(Some(Ok(chunk))) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                    return Err(SpeechError::Service {
                        status: 0,
                        message: format!("{what} is larger than {MAX_RESPONSE_BODY} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}
