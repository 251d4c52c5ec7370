//! The WebSocket side of the clients: connecting over rustls on aws-lc-rs, with the key in a
//! header and bounded messages, and reading with an idle timeout.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::SplitStream;
use promptkit_core::SpeechError;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Connection, TlsRoots, parse_retry_after, status_error, transport, vendor_message};

/// A connected socket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The reading half of a [`Socket`].
pub(crate) type Reader = SplitStream<Socket>;

/// The largest message accepted from a vendor (4 MiB: a few seconds of base64 audio).
const MAX_MESSAGE: usize = 4 << 20;

/// Makes connections for one client: the rustls configuration is built once.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector trusting `connection`'s roots.
    pub(crate) fn new(connection: &Connection) -> Result<Self, SpeechError> {
        Ok(Self {
            tls: tls_config(&connection.tls)?,
        })
    }

    /// Opens `url` (built by the client from [`ws_base`], never holding the key) with
    /// `headers`, within the connect timeout. A refused handshake maps its HTTP status to
    /// the error classes: 401/403 auth, 429 rate limited (with `Retry-After`), others a
    /// service error.
    pub(crate) async fn connect(
        &self,
        connection: &Connection,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Socket, SpeechError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| SpeechError::InvalidInput {
                message: format!("bad WebSocket URL {}: {e}", connection.scrub(url)),
            })?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| SpeechError::InvalidInput {
                message: format!("the {name} header has characters a header cannot carry"),
            })?;
            request
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
            .read_buffer_size(16 << 10)
            .write_buffer_size(0);
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            Some(tokio_tungstenite::Connector::Rustls(self.tls.clone())),
        );
        match tokio::time::timeout(connection.timeouts.connect, connect).await {
            Err(_) => Err(SpeechError::Timeout(connection.timeouts.connect)),
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(error)) => Err(handshake_error(connection, error)),
        }
    }
}

fn handshake_error(connection: &Connection, error: tungstenite::Error) -> SpeechError {
    match error {
        tungstenite::Error::Http(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let message = if body.trim().is_empty() {
                format!(
                    "the WebSocket handshake was refused with {}",
                    response.status()
                )
            } else {
                vendor_message(connection, &body)
            };
            status_error(response.status().as_u16(), retry_after, message)
        }
        other => transport("could not open the WebSocket", other),
    }
}

/// The base URL as a WebSocket URL: `http` becomes `ws` and `https` becomes `wss`.
pub(crate) fn ws_base(connection: &Connection) -> Result<String, SpeechError> {
    let base = connection.base();
    let url = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("wss://") || base.starts_with("ws://") {
        base.to_owned()
    } else {
        return Err(SpeechError::InvalidInput {
            message: format!(
                "the base URL {} is not ws://, wss://, http:// or https://",
                connection.scrub(base)
            ),
        });
    };
    Ok(url)
}

/// What a vendor sent.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A text message (the vendors' JSON events).
    Text(String),
    /// A binary message, with its length: the vendors here send JSON only, so the clients
    /// skip these.
    Binary(usize),
    /// The vendor closed the socket, with its close code and reason (1005 when it gave
    /// none), or the connection ended without a close frame (code 1006).
    Closed {
        /// The close code.
        code: u16,
        /// The vendor's reason.
        reason: String,
    },
}

/// The next text or binary message; pings are answered by tungstenite as it reads. With
/// `idle`, waiting longer than it is a [`SpeechError::Timeout`].
pub(crate) async fn next(
    reader: &mut Reader,
    idle: Option<Duration>,
) -> Result<Incoming, SpeechError> {
    loop {
        let item = match idle {
            Some(idle) => tokio::time::timeout(idle, reader.next())
                .await
                .map_err(|_| SpeechError::Timeout(idle))?,
            None => reader.next().await,
        };
        match item {
            None
            | Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) =>
            {
                return Ok(Incoming::Closed {
                    code: 1006,
                    reason: String::new(),
                });
            }
            Some(Ok(Message::Text(text))) => return Ok(Incoming::Text(text.as_str().to_owned())),
            Some(Ok(Message::Binary(data))) => return Ok(Incoming::Binary(data.len())),
            Some(Ok(Message::Close(frame))) => {
                return Ok(frame.map_or(
                    Incoming::Closed {
                        code: 1005,
                        reason: String::new(),
                    },
                    |frame| Incoming::Closed {
                        code: frame.code.into(),
                        reason: frame.reason.as_str().to_owned(),
                    },
                ));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Err(error)) => return Err(transport("the WebSocket connection broke", error)),
        }
    }
}

/// A text message.
pub(crate) fn text(json: String) -> Message {
    Message::Text(json.into())
}

/// A binary message.
pub(crate) fn binary(data: Bytes) -> Message {
    Message::Binary(data)
}

/// A write error.
pub(crate) fn send_error(error: tungstenite::Error) -> SpeechError {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            SpeechError::Closed
        }
        other => transport("could not write to the WebSocket", other),
    }
}

/// The rustls configuration for `roots`: the system's roots (loaded once per process) and
/// the added ones, on the aws-lc-rs provider the rest of the workspace uses.
pub(crate) fn tls_config(roots: &TlsRoots) -> Result<Arc<rustls::ClientConfig>, SpeechError> {
    static SYSTEM: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if roots.extra().is_empty()
        && let Some(config) = SYSTEM.get()
    {
        return Ok(config.clone());
    }
    let mut store = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for certificate in native.certs {
        // A system certificate rustls cannot parse is skipped, as every client does.
        let _ = store.add(certificate);
    }
    for der in roots.extra() {
        store
            .add(rustls_pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| SpeechError::InvalidInput {
                message: format!("an added root certificate is not usable: {e}"),
            })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| transport("could not set up TLS", e))?
        .with_root_certificates(store)
        .with_no_client_auth();
    let config = Arc::new(config);
    if roots.extra().is_empty() {
        let _ = SYSTEM.set(config.clone());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_become_websocket_urls() {
        let url = |base: &str| ws_base(&Connection::new(base));
        assert_eq!(
            url("https://api.deepgram.com/").unwrap(),
            "wss://api.deepgram.com"
        );
        assert_eq!(url("http://127.0.0.1:9/x").unwrap(), "ws://127.0.0.1:9/x");
        assert_eq!(url("wss://h").unwrap(), "wss://h");
        assert!(matches!(
            url("ftp://h"),
            Err(SpeechError::InvalidInput { .. })
        ));
    }
}
