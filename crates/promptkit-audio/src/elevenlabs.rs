//! ElevenLabs streaming synthesis over its multi-context WebSocket
//! (`/v1/text-to-speech/{voice_id}/multi-stream-input`).
//!
//! [`ElevenLabsTts`] implements [`TextToSpeech`]. Each session of
//! [`open_stream`](TextToSpeech::open_stream) is one ElevenLabs context: it opens with
//! ElevenLabs' `{"text": " "}` message (carrying the voice settings), text chunks go out as
//! `{"text": ..., "context_id": ...}`, a flush as `flush: true`, the end of the text as a
//! flush and `close_context: true` (answered by `isFinal`, which becomes
//! [`TtsEvent::Done`](promptkit_core::TtsEvent::Done)), and a cancel as `close_context: true`
//! alone. All sessions with the same voice, model, format and language share one socket
//! (those settings are in its URL), opened when the first session starts (with the
//! connection's retries) and again after it closed; audio of a context that was cancelled
//! or has finished is dropped, so it never reaches another session.
//!
//! **Words.** ElevenLabs sends the timing of every character with its audio, relative to
//! that chunk (`alignment`, or `normalizedAlignment` when only that is sent); the client
//! places it on the session's output clock and groups the characters into words at
//! whitespace, so a word split across chunks comes out whole.
//!
//! **Flushes.** ElevenLabs does not acknowledge a flush. The client counts the non-space
//! characters sent before each flush, and sends
//! [`TtsEvent::Flushed`](promptkit_core::TtsEvent::Flushed) once the alignment of the audio
//! received has covered as many (then everything flushed has been spoken). A flush after no
//! new text is answered at once; flushes still pending when the context ends are answered
//! before `Done`, and so are flushes the alignment never covers (a vendor may drop or
//! rewrite characters) once the context has been quiet for the idle timeout after audio,
//! instead of a timeout error.
//!
//! **Keep-alive.** Every [`keep_alive`](ElevenLabsConfig::keep_alive) interval the socket is
//! pinged and every open context gets ElevenLabs' keep-alive (`{"text": ""}`), so a
//! session waiting for the model's next sentence is not closed by the inactivity timeout
//! (`inactivity_timeout`, 180 s, is also asked for).
//!
//! **Retries** (the connection's [`RetryPolicy`](crate::client::RetryPolicy)): a refused or
//! failed handshake is retried; a session that has had no audio yet and fails in a way
//! worth retrying (the socket dropped, the first-byte timeout, a vendor 5xx or rate limit)
//! is opened again in a new context, on a new socket when the old one is gone, and what
//! it sent is sent again. Once audio came, nothing is retried: the listener would hear it
//! twice.
//!
//! One-shot [`synthesize`](TextToSpeech::synthesize) runs over a session too.
//!
//! The key goes in the `xi-api-key` header only. Keys of [`SynthesisOptions::extra`] (and
//! [`ElevenLabsConfig::with_extra`]) that are read: `voice_settings` (an object; a speed is
//! added as `voice_settings.speed`), `generation_config` and
//! `pronunciation_dictionary_locators` go in the context's first message;
//! `apply_text_normalization`, `enable_ssml_parsing`, `enable_logging` and `seed` go in the
//! socket's query. Others are ignored.
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use promptkit_audio::client::ApiKey;
//! use promptkit_audio::elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
//! use promptkit_core::{AudioFormat, SynthesisOptions, TextToSpeech, TtsEvent};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tts = ElevenLabsTts::new(ElevenLabsConfig::new(ApiKey::new("xi-...")))?;
//! let options = SynthesisOptions::new().with_format(AudioFormat::MULAW_8K_MONO);
//! let mut session = tts.open_stream(&options).await?;
//! session.sender.send("Thanks for calling. ".to_owned()).await?;
//! session.sender.finish().await?;
//! while let Some(event) = session.events.next().await {
//!     if let TtsEvent::Words(words) = event? {
//!         println!("{words:?}");
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
    TextToSpeech, TtsSession,
};
use serde_json::{Map, Value, json};

use crate::client::ws::ws_base;
use crate::client::{ApiKey, Connection};
pub use crate::tts_ws::{Alignment, ServerEvent, ServerMessage, VendorError};
use crate::tts_ws::{ContextSpec, ContextWire, FlushMode, Mux, audio_of};

/// ElevenLabs' API.
pub const DEFAULT_BASE_URL: &str = "wss://api.elevenlabs.io";
/// The default model.
pub const DEFAULT_MODEL: &str = "eleven_flash_v2_5";
/// The default voice (a stock voice).
pub const DEFAULT_VOICE: &str = "EXAVITQu4vr4xnSDxMaL";

/// Extra keys that go in a context's first message.
const CONTEXT_KEYS: [&str; 3] = [
    "voice_settings",
    "generation_config",
    "pronunciation_dictionary_locators",
];
/// Extra keys that go in the socket's query.
const QUERY_KEYS: [&str; 4] = [
    "apply_text_normalization",
    "enable_ssml_parsing",
    "enable_logging",
    "seed",
];

/// Configuration of an [`ElevenLabsTts`]. `Debug` never shows the key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ElevenLabsConfig {
    /// Where the service is, its key, timeouts, retries and roots.
    pub connection: Connection,
    /// The instance name (`elevenlabs`).
    pub id: String,
    /// The model (`model_id`).
    pub model: String,
    /// The voice id.
    pub voice: String,
    /// The language (`language_code`), or the model's default.
    pub language: Option<String>,
    /// The output format when the options name none (24 kHz PCM16).
    pub format: AudioFormat,
    /// The speaking rate, when set (`voice_settings.speed`, 0.7 to 1.2).
    pub speed: Option<f32>,
    /// ElevenLabs' `auto_mode` (true: it decides when it has enough text, no chunk
    /// schedule).
    pub auto_mode: bool,
    /// ElevenLabs' `inactivity_timeout` (180 s, its maximum).
    pub inactivity_timeout: Duration,
    /// Vendor fields (see the [module docs](self) for the keys read).
    pub extra: Map<String, Value>,
    /// The list price.
    pub price: Option<SpeechPrice>,
    /// How often the socket is pinged and open contexts are kept alive (15 s).
    pub keep_alive: Duration,
    /// How long a socket stays open with no session on it, for the next session to reuse
    /// (60 s). Dropping the client closes its sockets once their sessions are gone.
    pub idle_close: Duration,
}

impl ElevenLabsConfig {
    /// ElevenLabs' API with `api_key`.
    pub fn new(api_key: ApiKey) -> Self {
        Self {
            connection: Connection::new(DEFAULT_BASE_URL).with_api_key(api_key),
            id: "elevenlabs".to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            voice: DEFAULT_VOICE.to_owned(),
            language: None,
            format: AudioFormat::PCM16_24K_MONO,
            speed: None,
            auto_mode: true,
            inactivity_timeout: Duration::from_secs(180),
            extra: Map::new(),
            price: None,
            keep_alive: Duration::from_secs(15),
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

    /// Sets the language.
    #[must_use]
    pub fn with_language(mut self, language: Option<String>) -> Self {
        self.language = language;
        self
    }

    /// Sets the default output format (one of [`ElevenLabsTts::formats`]).
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

    /// Sets `auto_mode`.
    #[must_use]
    pub fn with_auto_mode(mut self, auto_mode: bool) -> Self {
        self.auto_mode = auto_mode;
        self
    }

    /// Sets the inactivity timeout asked for (whole seconds).
    #[must_use]
    pub fn with_inactivity_timeout(mut self, timeout: Duration) -> Self {
        self.inactivity_timeout = timeout;
        self
    }

    /// Sets a vendor field.
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

/// ElevenLabs streaming synthesis: see the [module docs](self).
#[derive(Debug)]
pub struct ElevenLabsTts {
    config: ElevenLabsConfig,
    base: String,
    mux: Mux,
}

impl ElevenLabsTts {
    /// A client. No connection is made until the first session.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] for a base URL that is not `ws(s)://` or `http(s)://`,
    /// or an unusable root certificate.
    pub fn new(config: ElevenLabsConfig) -> Result<Self, SpeechError> {
        let base = ws_base(&config.connection)?;
        let mux = Mux::new(
            config.connection.clone(),
            (config.keep_alive, config.idle_close),
            decode,
            read_close,
        )?;
        Ok(Self { config, base, mux })
    }

    /// The configuration.
    pub fn config(&self) -> &ElevenLabsConfig {
        &self.config
    }

    fn context(&self, options: &SynthesisOptions) -> Result<ContextSpec, SpeechError> {
        let format = options.format.unwrap_or(self.config.format);
        let output = output_format(format).ok_or(SpeechError::UnsupportedFormat(format))?;
        let mut extra = self.config.extra.clone();
        for (key, value) in &options.extra {
            extra.insert(key.clone(), value.clone());
        }
        let voice = options.voice.as_deref().unwrap_or(&self.config.voice);
        let model = options.model.as_deref().unwrap_or(&self.config.model);
        let mut query = vec![
            ("model_id", model.to_owned()),
            ("output_format", output),
            (
                "inactivity_timeout",
                self.config.inactivity_timeout.as_secs().to_string(),
            ),
            ("auto_mode", self.config.auto_mode.to_string()),
            ("sync_alignment", "true".to_owned()),
        ];
        if let Some(language) = options.language.as_ref().or(self.config.language.as_ref()) {
            query.push(("language_code", language.clone()));
        }
        for key in QUERY_KEYS {
            match extra.get(key) {
                Some(Value::String(value)) => query.push((key, value.clone())),
                Some(value @ (Value::Bool(_) | Value::Number(_))) => {
                    query.push((key, value.to_string()));
                }
                _ => {}
            }
        }
        let query = query
            .iter()
            .map(|(key, value)| format!("{key}={}", encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!(
            "{}/v1/text-to-speech/{}/multi-stream-input?{query}",
            self.base,
            encode(voice)
        );

        let mut first = Map::new();
        first.insert("text".to_owned(), json!(" "));
        for key in CONTEXT_KEYS {
            if let Some(value) = extra.get(key) {
                first.insert(key.to_owned(), value.clone());
            }
        }
        if let Some(speed) = options.speed.or(self.config.speed) {
            let settings = first
                .entry("voice_settings")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(settings) = settings {
                settings.insert("speed".to_owned(), json!(speed));
            }
        }
        let mut headers = Vec::new();
        if let Some(key) = &self.mux.connection().api_key {
            headers.push(("xi-api-key", key.expose().to_owned()));
        }
        Ok(ContextSpec {
            url,
            headers,
            format,
            flush_mode: FlushMode::Alignment,
            wire: Arc::new(move |context_id: &str| {
                let mut first = first.clone();
                first.insert("context_id".to_owned(), json!(context_id));
                Box::new(ElevenLabsWire {
                    context_id: context_id.to_owned(),
                    first: Value::Object(first).to_string(),
                }) as Box<dyn ContextWire>
            }),
        })
    }
}

/// ElevenLabs' name of an output format.
fn output_format(format: AudioFormat) -> Option<String> {
    if format.channels != 1 {
        return None;
    }
    match (format.encoding, format.sample_rate) {
        (AudioEncoding::Pcm16, rate @ (8_000 | 16_000 | 22_050 | 24_000 | 44_100)) => {
            Some(format!("pcm_{rate}"))
        }
        (AudioEncoding::Mulaw, 8_000) => Some("ulaw_8000".to_owned()),
        (AudioEncoding::Alaw, 8_000) => Some("alaw_8000".to_owned()),
        _ => None,
    }
}

impl TextToSpeech for ElevenLabsTts {
    fn id(&self) -> &str {
        &self.config.id
    }

    /// PCM16 at 24, 16, 22.05, 44.1 and 8 kHz (`pcm_*`), then 8 kHz mu-law (`ulaw_8000`)
    /// and A-law (`alaw_8000`); all mono.
    fn formats(&self) -> Vec<AudioFormat> {
        [24_000, 16_000, 22_050, 44_100, 8_000]
            .iter()
            .map(|rate| AudioFormat::pcm16(*rate, 1))
            .chain([AudioFormat::MULAW_8K_MONO, AudioFormat::ALAW_8K_MONO])
            .collect()
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

/// The messages of one ElevenLabs context.
#[derive(Debug)]
struct ElevenLabsWire {
    context_id: String,
    /// The context's first message.
    first: String,
}

impl ContextWire for ElevenLabsWire {
    fn open(&self) -> Option<String> {
        Some(self.first.clone())
    }

    fn text(&self, text: &str) -> String {
        json!({"text": text, "context_id": self.context_id}).to_string()
    }

    fn flush(&self) -> Vec<String> {
        vec![json!({"context_id": self.context_id, "flush": true}).to_string()]
    }

    fn finish(&self) -> Vec<String> {
        vec![
            json!({"context_id": self.context_id, "flush": true}).to_string(),
            json!({"context_id": self.context_id, "close_context": true}).to_string(),
        ]
    }

    fn cancel(&self) -> String {
        json!({"context_id": self.context_id, "close_context": true}).to_string()
    }

    fn keep_alive(&self) -> Option<String> {
        Some(json!({"text": "", "context_id": self.context_id}).to_string())
    }
}

/// Percent-encodes a path segment or query value.
fn encode(value: &str) -> String {
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

/// Decodes one ElevenLabs multi-stream server message: audio (base64 `audio`, with its
/// `alignment` or else `normalizedAlignment`), `isFinal: true` (the context is over; after
/// the audio when one message has both), and errors (`error` and `message`, classified by
/// ElevenLabs' error code: a bad key 401, a rate or concurrency limit 429, an exhausted
/// quota 402, an invalid request 400). The context is `contextId` (or `context_id`).
/// Messages that say none of these decode to nothing.
///
/// # Errors
/// [`SpeechError::Service`] with status 0 for a message that is not a JSON object or
/// carries audio that is not base64.
pub fn decode(text: &str) -> Result<Vec<ServerMessage>, SpeechError> {
    let value: Value = serde_json::from_str(text).map_err(|e| unreadable(&e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(unreadable("not a JSON object"));
    };
    let context_id = object
        .get("contextId")
        .or_else(|| object.get("context_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let message = |event| ServerMessage {
        context_id: context_id.clone(),
        event,
    };
    if let Some(error) = vendor_error(&object) {
        return Ok(vec![message(ServerEvent::Error(error))]);
    }
    let mut out = Vec::new();
    if let Some(audio) = object.get("audio").and_then(Value::as_str) {
        let data = base64::engine::general_purpose::STANDARD
            .decode(audio)
            .map_err(|e| unreadable(&format!("audio that is not base64: {e}")))?;
        let alignment = ["alignment", "normalizedAlignment"]
            .iter()
            .find_map(|key| object.get(*key).and_then(alignment));
        if !data.is_empty() || alignment.is_some() {
            out.push(message(ServerEvent::Audio {
                data: Bytes::from(data),
                alignment,
            }));
        }
    }
    if object.get("isFinal").and_then(Value::as_bool) == Some(true) {
        out.push(message(ServerEvent::Done));
    }
    Ok(out)
}

fn alignment(value: &Value) -> Option<Alignment> {
    let chars = value.get("chars")?.as_array()?;
    let times = |key: &str| -> Vec<u64> {
        value
            .get(key)
            .and_then(Value::as_array)
            .map(|list| list.iter().map(millis).collect())
            .unwrap_or_default()
    };
    let starts = times("charStartTimesMs");
    let durations = times("charDurationsMs");
    let len = chars.len().min(starts.len());
    let chars: Vec<String> = chars
        .iter()
        .take(len)
        .map(|c| c.as_str().unwrap_or_default().to_owned())
        .collect();
    let mut durations = durations;
    durations.resize(len, 0);
    Some(Alignment {
        chars,
        starts_ms: starts.into_iter().take(len).collect(),
        durations_ms: durations,
    })
}

/// Milliseconds from a JSON number; anything else, negative or absurd is 0.
fn millis(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| {
            value
                .as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e12)
                .map(|v| {
                    #[expect(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "checked to be a non-negative number below 1e12"
                    )]
                    let ms = v.round() as u64;
                    ms
                })
        })
        .unwrap_or(0)
        .min(1 << 40)
}

fn vendor_error(object: &Map<String, Value>) -> Option<VendorError> {
    let error = object.get("error")?;
    if error.is_null() || error == &Value::Bool(false) {
        return None;
    }
    let (code, nested) = match error {
        Value::String(code) => (Some(code.clone()), None),
        Value::Object(inner) => (
            inner
                .get("status")
                .or_else(|| inner.get("code"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            inner.get("message").and_then(Value::as_str),
        ),
        _ => (None, None),
    };
    let message = object
        .get("message")
        .and_then(Value::as_str)
        .or(nested)
        .filter(|m| !m.trim().is_empty())
        .map_or_else(
            || {
                code.clone()
                    .unwrap_or_else(|| "ElevenLabs reported an error".to_owned())
            },
            str::to_owned,
        );
    let numeric = object
        .get("code")
        .or_else(|| object.get("status"))
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (400..600).contains(s));
    let status = classify(code.as_deref().unwrap_or(&message))
        .or(numeric)
        .unwrap_or(0);
    Some(VendorError {
        status,
        code,
        message,
    })
}

/// The status an ElevenLabs error code or text stands for.
fn classify(code: &str) -> Option<u16> {
    let code = code.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| code.contains(w));
    if has(&[
        "api_key",
        "api key",
        "unauthori",
        "authenticat",
        "permission",
    ]) {
        Some(401)
    } else if has(&["quota", "credits", "payment"]) {
        Some(402)
    } else if has(&[
        "rate_limit",
        "rate limit",
        "too_many",
        "too many",
        "concurren",
        "busy",
    ]) {
        Some(429)
    } else if has(&[
        "invalid",
        "bad_request",
        "validation",
        "not allowed",
        "unsupported",
    ]) {
        Some(400)
    } else if has(&["timeout", "timed out"]) {
        Some(408)
    } else {
        None
    }
}

/// ElevenLabs closes the socket with 1008 (policy) or 1011 (internal) and a reason for
/// errors such as an exhausted quota or a bad key.
fn read_close(code: u16, reason: &str) -> Option<VendorError> {
    if !matches!(code, 1008 | 1011) || reason.trim().is_empty() {
        return None;
    }
    let fallback = if code == 1011 { 500 } else { 0 };
    Some(VendorError {
        status: classify(reason).unwrap_or(fallback),
        code: None,
        message: reason.to_owned(),
    })
}

fn unreadable(why: &str) -> SpeechError {
    SpeechError::Service {
        status: 0,
        message: format!("an unreadable ElevenLabs message: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoder_reads_audio_alignment_final_and_errors() {
        let messages = decode(
            r#"{"audio":"AAEC","isFinal":true,"contextId":"c1",
                "alignment":{"chars":["H","i"],"charStartTimesMs":[0,10],"charDurationsMs":[10,10]},
                "normalizedAlignment":null}"#,
        )
        .unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].context_id.as_deref(), Some("c1"));
        let ServerEvent::Audio { data, alignment } = &messages[0].event else {
            panic!("{messages:?}")
        };
        assert_eq!(data.as_ref(), [0, 1, 2]);
        let alignment = alignment.as_ref().unwrap();
        assert_eq!(alignment.chars, ["H", "i"]);
        assert_eq!(alignment.starts_ms, [0, 10]);
        assert_eq!(messages[1].event, ServerEvent::Done);

        let error = decode(
            r#"{"message":"You exceeded your quota","error":"quota_exceeded","contextId":"c"}"#,
        )
        .unwrap();
        let ServerEvent::Error(error) = &error[0].event else {
            panic!()
        };
        assert_eq!(error.status, 402);
        assert!(matches!(
            error.clone().into_error(&Connection::new("")),
            SpeechError::Service { status: 402, .. }
        ));
        let auth = decode(r#"{"error":"invalid_api_key","message":"bad key"}"#).unwrap();
        let ServerEvent::Error(auth) = &auth[0].event else {
            panic!()
        };
        assert!(matches!(
            auth.clone().into_error(&Connection::new("")),
            SpeechError::Auth { .. }
        ));
        assert!(
            decode(r#"{"isFinal":null,"audio":null}"#)
                .unwrap()
                .is_empty()
        );
        assert!(decode("3").is_err());
        assert_eq!(
            read_close(1008, "too_many_concurrent_requests")
                .unwrap()
                .status,
            429
        );
        assert!(read_close(1000, "bye").is_none());
    }

    proptest::proptest! {
        #[test]
        fn the_decoder_never_panics(text in ".*") {
            let _ = decode(&text);
        }

        #[test]
        fn the_decoder_never_panics_on_json_like_input(
            body in "[-0-9a-zA-Z\":,.\\[\\]{} ]{0,80}",
        ) {
            let _ = decode(&format!(r#"{{"audio":"","alignment":{{"chars":[{body}],"charStartTimesMs":[{body}],"charDurationsMs":[-1e308]}}}}"#));
            let _ = decode(&format!(r#"{{"error":{body},"code":{body}}}"#));
            let _ = read_close(1008, &body);
        }
    }
}
