//! Cartesia streaming synthesis over its WebSocket (`/tts/websocket`).
//!
//! [`CartesiaTts`] implements [`TextToSpeech`]. Each session of
//! [`open_stream`](TextToSpeech::open_stream) is one Cartesia context: its text chunks go
//! out as generation requests with `continue: true` (joined verbatim by Cartesia), a flush
//! as an empty transcript with `flush: true` (answered by `flush_done`, which becomes
//! [`TtsEvent::Flushed`](promptkit_core::TtsEvent::Flushed)), the end of the text as
//! `continue: false` (answered by `done`), and a cancel as `cancel: true`. All sessions of
//! one client share one socket, opened when the first session starts (with the
//! connection's retries) and again after it closed; audio of a context that was cancelled
//! or has finished is dropped, so it never reaches another session. Word timestamps
//! (`add_timestamps`) become [`TtsEvent::Words`](promptkit_core::TtsEvent::Words) on the
//! session's output clock.
//!
//! **Retries** (the connection's [`RetryPolicy`](crate::client::RetryPolicy)): a refused or
//! failed handshake is retried; a session that has had no audio yet and fails in a way
//! worth retrying (the socket dropped, the first-byte timeout, a vendor 5xx or rate limit)
//! is opened again in a new context, on a new socket when the old one is gone, and what
//! it sent is sent again. Once audio came, nothing is retried: the listener would hear it
//! twice.
//!
//! One-shot [`synthesize`](TextToSpeech::synthesize) runs over a session too (send, finish,
//! keep the audio), so it shares the socket.
//!
//! The key goes in the `X-API-Key` header only. Options in
//! [`SynthesisOptions::extra`] (and [`CartesiaConfig::with_extra`]) are copied into every
//! generation request as top-level fields (`max_buffer_delay_ms`, `pronunciation_dict_id`,
//! `generation_config`, ...); a speed goes in `generation_config.speed`.
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use promptkit_audio::cartesia::{CartesiaConfig, CartesiaTts};
//! use promptkit_audio::client::ApiKey;
//! use promptkit_core::{SynthesisOptions, TextToSpeech, TtsEvent};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tts = CartesiaTts::new(CartesiaConfig::new(ApiKey::new("sk_car_...")))?;
//! let mut session = tts.open_stream(&SynthesisOptions::new()).await?;
//! session.sender.send("Hello there, ".to_owned()).await?;
//! session.sender.send("how are you?".to_owned()).await?;
//! session.sender.finish().await?;
//! while let Some(event) = session.events.next().await {
//!     match event? {
//!         TtsEvent::Audio(frame) => println!("{:?} at {:?}", frame.duration(), frame.timestamp),
//!         TtsEvent::Words(words) => println!("{words:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use promptkit_core::{
    AudioEncoding, AudioFormat, AudioStream, BoxFuture, SpeechError, SpeechPrice, SynthesisOptions,
    TextToSpeech, TtsSession, Word,
};
use serde_json::{Map, Value, json};

use crate::client::ws::ws_base;
use crate::client::{ApiKey, Connection};
pub use crate::tts_ws::{Alignment, ServerEvent, ServerMessage, VendorError};
use crate::tts_ws::{ContextSpec, ContextWire, FlushMode, Mux, audio_of, seconds};

/// Cartesia's API.
pub const DEFAULT_BASE_URL: &str = "wss://api.cartesia.ai";
/// The API version sent (`cartesia_version`).
pub const DEFAULT_VERSION: &str = "2025-04-16";
/// The default model.
pub const DEFAULT_MODEL: &str = "sonic-3";
/// The default voice (a stock English voice).
pub const DEFAULT_VOICE: &str = "f786b574-daa5-4673-aa0c-cbe3e8534c02";

/// The PCM16 rates offered, preferred first.
const PCM_RATES: [u32; 6] = [24_000, 16_000, 8_000, 22_050, 44_100, 48_000];

/// Configuration of a [`CartesiaTts`]. `Debug` never shows the key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CartesiaConfig {
    /// Where the service is, its key, timeouts, retries and roots.
    pub connection: Connection,
    /// The instance name (`cartesia`).
    pub id: String,
    /// The model (`model_id`).
    pub model: String,
    /// The voice id.
    pub voice: String,
    /// The language (`en`).
    pub language: Option<String>,
    /// The output format when the options name none (24 kHz PCM16).
    pub format: AudioFormat,
    /// The speaking rate, when set (`generation_config.speed`).
    pub speed: Option<f32>,
    /// The API version (`cartesia_version`).
    pub version: String,
    /// Fields copied into every generation request.
    pub extra: Map<String, Value>,
    /// The list price.
    pub price: Option<SpeechPrice>,
    /// How often the idle socket is pinged (30 s).
    pub keep_alive: Duration,
    /// How long a socket stays open with no session on it, for the next session to reuse
    /// (60 s). Dropping the client closes its sockets once their sessions are gone.
    pub idle_close: Duration,
}

impl CartesiaConfig {
    /// Cartesia's API with `api_key`.
    pub fn new(api_key: ApiKey) -> Self {
        Self::with_connection_only(Connection::new(DEFAULT_BASE_URL).with_api_key(api_key))
    }

    fn with_connection_only(connection: Connection) -> Self {
        Self {
            connection,
            id: "cartesia".to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            voice: DEFAULT_VOICE.to_owned(),
            language: Some("en".to_owned()),
            format: AudioFormat::PCM16_24K_MONO,
            speed: None,
            version: DEFAULT_VERSION.to_owned(),
            extra: Map::new(),
            price: None,
            keep_alive: Duration::from_secs(30),
            idle_close: Duration::from_secs(60),
        }
    }

    /// Replaces the connection (a local server, other timeouts or retries).
    #[must_use]
    pub fn with_connection(mut self, connection: Connection) -> Self {
        self.connection = connection;
        self
    }

    /// Sets the instance name.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Sets the voice.
    #[must_use]
    pub fn with_voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = voice.into();
        self
    }

    /// Sets the language (`None`: Cartesia's default).
    #[must_use]
    pub fn with_language(mut self, language: Option<String>) -> Self {
        self.language = language;
        self
    }

    /// Sets the default output format (one of [`CartesiaTts::formats`]).
    #[must_use]
    pub fn with_format(mut self, format: AudioFormat) -> Self {
        self.format = format;
        self
    }

    /// Sets the speaking rate.
    #[must_use]
    pub fn with_speed(mut self, speed: f32) -> Self {
        self.speed = Some(speed);
        self
    }

    /// Sets the API version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Adds a field to every generation request.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// Sets the list price.
    #[must_use]
    pub fn with_price(mut self, price: SpeechPrice) -> Self {
        self.price = Some(price);
        self
    }

    /// Sets how long an unused socket stays open (zero: it closes when its last session
    /// ends).
    #[must_use]
    pub fn with_idle_close(mut self, idle: Duration) -> Self {
        self.idle_close = idle;
        self
    }

    /// Sets the keep-alive interval.
    #[must_use]
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }
}

/// Cartesia streaming synthesis: see the [module docs](self).
#[derive(Debug)]
pub struct CartesiaTts {
    config: CartesiaConfig,
    url: String,
    mux: Mux,
}

impl CartesiaTts {
    /// A client. No connection is made until the first session.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] for a base URL that is not `ws(s)://` or `http(s)://`,
    /// or an unusable root certificate.
    pub fn new(config: CartesiaConfig) -> Result<Self, SpeechError> {
        let base = ws_base(&config.connection)?;
        let url = format!(
            "{base}/tts/websocket?cartesia_version={}",
            encode_query(&config.version)
        );
        let mux = Mux::new(
            config.connection.clone(),
            (config.keep_alive, config.idle_close),
            |text| decode(text).map(|message| message.into_iter().collect()),
            |_, _| None,
        )?;
        Ok(Self { config, url, mux })
    }

    /// The configuration.
    pub fn config(&self) -> &CartesiaConfig {
        &self.config
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("cartesia-version", self.config.version.clone())];
        if let Some(key) = &self.mux.connection().api_key {
            headers.push(("x-api-key", key.expose().to_owned()));
        }
        headers
    }

    fn context(&self, options: &SynthesisOptions) -> Result<ContextSpec, SpeechError> {
        let format = options.format.unwrap_or(self.config.format);
        let encoding = match format.encoding {
            AudioEncoding::Pcm16 => "pcm_s16le",
            AudioEncoding::Mulaw => "pcm_mulaw",
            AudioEncoding::Alaw => "pcm_alaw",
            _ => return Err(SpeechError::UnsupportedFormat(format)),
        };
        if !self.formats().contains(&format) {
            return Err(SpeechError::UnsupportedFormat(format));
        }
        let mut base = self.config.extra.clone();
        for (key, value) in &options.extra {
            base.insert(key.clone(), value.clone());
        }
        base.insert(
            "model_id".to_owned(),
            json!(options.model.as_deref().unwrap_or(&self.config.model)),
        );
        base.insert(
            "voice".to_owned(),
            json!({"mode": "id", "id": options.voice.as_deref().unwrap_or(&self.config.voice)}),
        );
        if let Some(language) = options.language.as_ref().or(self.config.language.as_ref()) {
            base.insert("language".to_owned(), json!(language));
        }
        base.insert(
            "output_format".to_owned(),
            json!({"container": "raw", "encoding": encoding, "sample_rate": format.sample_rate}),
        );
        base.insert("add_timestamps".to_owned(), json!(true));
        if let Some(speed) = options.speed.or(self.config.speed) {
            let config = base
                .entry("generation_config")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(config) = config {
                config.insert("speed".to_owned(), json!(speed));
            }
        }
        Ok(ContextSpec {
            url: self.url.clone(),
            headers: self.headers(),
            format,
            flush_mode: FlushMode::Vendor,
            wire: Arc::new(move |context_id: &str| {
                let mut base = base.clone();
                base.insert("context_id".to_owned(), json!(context_id));
                Box::new(CartesiaWire {
                    context_id: context_id.to_owned(),
                    base,
                }) as Box<dyn ContextWire>
            }),
        })
    }
}

impl TextToSpeech for CartesiaTts {
    fn id(&self) -> &str {
        &self.config.id
    }

    /// PCM16 at 24, 16, 8, 22.05, 44.1 and 48 kHz, then 8 kHz mu-law and A-law; all mono.
    fn formats(&self) -> Vec<AudioFormat> {
        let mut formats: Vec<AudioFormat> = PCM_RATES
            .iter()
            .map(|rate| AudioFormat::pcm16(*rate, 1))
            .collect();
        formats.push(AudioFormat::MULAW_8K_MONO);
        formats.push(AudioFormat::ALAW_8K_MONO);
        formats
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>> {
        Box::pin(async move {
            if text.trim().is_empty() {
                return Err(SpeechError::InvalidInput {
                    message: "no text to synthesise".to_owned(),
                });
            }
            let session = self.open_stream(options).await?;
            session.sender.send(text.to_owned()).await?;
            session.sender.finish().await?;
            Ok(audio_of(session))
        })
    }

    fn price(&self) -> Option<SpeechPrice> {
        self.config.price
    }

    fn open_stream<'a>(
        &'a self,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<TtsSession, SpeechError>> {
        Box::pin(async move {
            let spec = self.context(options)?;
            self.mux.open(spec).await
        })
    }
}

/// The messages of one Cartesia context.
#[derive(Debug)]
struct CartesiaWire {
    context_id: String,
    /// The fields every generation request of the context repeats.
    base: Map<String, Value>,
}

impl CartesiaWire {
    fn request(&self, transcript: &str, more: bool, flush: bool) -> String {
        let mut message = self.base.clone();
        message.insert("transcript".to_owned(), json!(transcript));
        message.insert("continue".to_owned(), json!(more));
        if flush {
            message.insert("flush".to_owned(), json!(true));
        }
        Value::Object(message).to_string()
    }
}

impl ContextWire for CartesiaWire {
    fn open(&self) -> Option<String> {
        None
    }

    fn text(&self, text: &str) -> String {
        self.request(text, true, false)
    }

    fn flush(&self) -> Vec<String> {
        vec![self.request("", true, true)]
    }

    fn finish(&self) -> Vec<String> {
        vec![self.request("", false, false)]
    }

    fn cancel(&self) -> String {
        json!({"context_id": self.context_id, "cancel": true}).to_string()
    }

    fn keep_alive(&self) -> Option<String> {
        None
    }
}

/// Percent-encodes a query value.
fn encode_query(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes one Cartesia server message: `chunk` (audio), `timestamps` (word timestamps, in
/// seconds on the context's clock), `flush_done`, `done` and `error`. Other types and
/// messages without audio or word timings are `Ok(None)`.
///
/// # Errors
/// [`SpeechError::Service`] with status 0 for a message that is not a JSON object or
/// carries audio that is not base64.
pub fn decode(text: &str) -> Result<Option<ServerMessage>, SpeechError> {
    let value: Value = serde_json::from_str(text).map_err(|e| unreadable(&e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(unreadable("not a JSON object"));
    };
    let context_id = object
        .get("context_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
    let event = match kind {
        "chunk" => {
            let data = object.get("data").and_then(Value::as_str).unwrap_or("");
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| unreadable(&format!("audio that is not base64: {e}")))?;
            ServerEvent::Audio {
                data: Bytes::from(data),
                alignment: None,
            }
        }
        "timestamps" => {
            let Some(timestamps) = object.get("word_timestamps") else {
                return Ok(None);
            };
            let list = |key: &str| {
                timestamps
                    .get(key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let (words, starts, ends) = (list("words"), list("start"), list("end"));
            let words: Vec<Word> = words
                .iter()
                .zip(starts.iter().zip(ends.iter()))
                .filter_map(|(word, (start, end))| {
                    let start = seconds(start.as_f64()?)?;
                    let end = seconds(end.as_f64()?)?.max(start);
                    Some(Word::new(word.as_str()?, start, end))
                })
                .collect();
            ServerEvent::Words(words)
        }
        "flush_done" => ServerEvent::FlushDone {
            flush_id: object.get("flush_id").and_then(Value::as_u64),
        },
        "done" => ServerEvent::Done,
        "error" => ServerEvent::Error(vendor_error(&object)),
        _ => return Ok(None),
    };
    Ok(Some(ServerMessage { context_id, event }))
}

fn vendor_error(object: &Map<String, Value>) -> VendorError {
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let message = [text("title"), text("message"), text("error")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    let status = object
        .get("status_code")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (400..600).contains(s))
        .unwrap_or(0);
    VendorError {
        status,
        code: text("error_code").map(str::to_owned),
        message: if message.is_empty() {
            "Cartesia reported an error".to_owned()
        } else {
            message
        },
    }
}

fn unreadable(why: &str) -> SpeechError {
    SpeechError::Service {
        status: 0,
        message: format!("an unreadable Cartesia message: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoder_reads_every_message() {
        let chunk = decode(r#"{"type":"chunk","data":"AAE=","done":false,"context_id":"c1"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(chunk.context_id.as_deref(), Some("c1"));
        assert_eq!(
            chunk.event,
            ServerEvent::Audio {
                data: Bytes::from_static(&[0, 1]),
                alignment: None
            }
        );
        let words = decode(
            r#"{"type":"timestamps","context_id":"c1","word_timestamps":{"words":["Hi","there"],"start":[0.0,0.03],"end":[0.02,0.08]}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            words.event,
            ServerEvent::Words(vec![
                Word::new("Hi", Duration::ZERO, Duration::from_millis(20)),
                Word::new(
                    "there",
                    Duration::from_millis(30),
                    Duration::from_millis(80)
                ),
            ])
        );
        let error = decode(
            r#"{"type":"error","context_id":"c1","status_code":429,"title":"Too many","message":"slow down","done":true}"#,
        )
        .unwrap()
        .unwrap();
        let ServerEvent::Error(error) = error.event else {
            panic!("{error:?}")
        };
        assert_eq!(error.status, 429);
        assert_eq!(error.message, "Too many: slow down");
        assert!(matches!(
            error.into_error(&Connection::new("")),
            SpeechError::RateLimited { .. }
        ));
        assert_eq!(
            decode(r#"{"type":"flush_done","flush_id":2,"context_id":"c"}"#)
                .unwrap()
                .unwrap()
                .event,
            ServerEvent::FlushDone { flush_id: Some(2) }
        );
        assert!(
            decode(r#"{"type":"phoneme_timestamps"}"#)
                .unwrap()
                .is_none()
        );
        assert!(decode("[1]").is_err());
        assert!(decode(r#"{"type":"chunk","data":"!!"}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_decoder_never_panics(text in ".*") {
            let _ = decode(&text);
        }

        #[test]
        fn the_decoder_never_panics_on_json_like_input(
            kind in "(chunk|timestamps|error|done|flush_done)",
            body in "[-0-9a-z\":,.\\[\\]{} ]{0,80}",
        ) {
            let _ = decode(&format!(r#"{{"type":"{kind}",{body}}}"#));
            let _ = decode(&format!(
                r#"{{"type":"timestamps","word_timestamps":{{"words":[{body}],"start":[{body}],"end":[1e308]}}}}"#
            ));
        }
    }
}
