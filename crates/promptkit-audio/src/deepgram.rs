//! Deepgram speech-to-text: live transcription over WebSocket (`/v1/listen`) and batch
//! transcription over HTTP (`POST /v1/listen`).
//!
//! [`DeepgramStt`] implements [`SpeechToText`]. A live session
//! ([`SpeechToText::open_stream`]) opens `wss://api.deepgram.com/v1/listen` with the
//! settings of its [`DeepgramConfig`] in the query and the key in an
//! `Authorization: Token …` header (never in the URL), and maps Deepgram's messages one to
//! one onto [`SttEvent`]s:
//!
//! | Deepgram | event |
//! |---|---|
//! | `Results`, `is_final: false` | [`SttEvent::Partial`] |
//! | `Results`, `is_final: true` | [`SttEvent::Final`] with `speech_final` and `from_finalize` |
//! | `SpeechStarted` (with `vad_events`) | [`SttEvent::SpeechStarted`] |
//! | `UtteranceEnd` (with `utterance_end_ms`) | [`SttEvent::UtteranceEnd`] at `last_word_end` |
//! | `Metadata` (after `CloseStream`) | [`SttEvent::Metadata`]: request id, model, audio duration |
//! | `Error`, a close code other than 1000 | a terminal `Err` |
//!
//! Results with an empty transcript (Deepgram sends one about every second of silence) are
//! dropped. Times are on the session's audio clock, as Deepgram reports them.
//!
//! The sender takes frames in the format the session was opened with (anything else is
//! [`SpeechError::InvalidInput`]) and is usable from several tasks;
//! [`AudioSender::finalize`] sends `Finalize` (the pending text arrives as finals with
//! `from_finalize`, and the session stays open), [`AudioSender::finish`] sends
//! `CloseStream` (the last finals and the `Metadata` follow, then the stream ends).
//! While no audio is sent, a `KeepAlive` goes out every
//! [`keep_alive`](DeepgramConfig::keep_alive) so Deepgram does not close the socket
//! (`NET-0001` after 10 s). Dropping the sender without `finish` ends the audio as `finish`
//! does; dropping the event stream closes the socket.
//!
//! Errors: a refused handshake or HTTP status maps as everywhere (401/403
//! [`SpeechError::Auth`], 429 [`SpeechError::RateLimited`], others
//! [`SpeechError::Service`]); Deepgram's in-stream `Error` message is a `Service` error
//! with status 0 and Deepgram's text; close code 1008 or 1002 (`DATA-0000`, audio Deepgram
//! cannot decode) is [`SpeechError::InvalidInput`], 1011 (`NET-0000`, `NET-0001`) and 1013 are
//! `Service` errors with status 500 and 503 (retryable), a 4xxx close code carrying an
//! HTTP status (4401, 4429, …) maps like that status, and a connection dropped without a
//! close frame is [`SpeechError::Transport`]. While audio has been sent and nothing came
//! back for [`Timeouts::idle`](crate::client::Timeouts) (or, before the first message,
//! `first_byte`), the session ends with [`SpeechError::Timeout`]. Opening the socket is
//! retried by the connection's [`RetryPolicy`](crate::client::RetryPolicy); nothing is
//! retried once it is open.
//!
//! Keys of [`TranscriptionOptions::extra`] are sent as query parameters as they are
//! (strings, numbers and booleans; an array repeats the parameter; `null` drops a
//! parameter the configuration would send), so any Deepgram option (`diarize`,
//! `filler_words`, `redact`, `tag`, `numerals`, …) can be used; a key the configuration
//! also sets replaces it. `TranscriptionOptions::prompt` is not used (Deepgram has no
//! prompt; use [`keyterms`](DeepgramConfig::keyterms)).
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use promptkit_audio::client::ApiKey;
//! use promptkit_audio::deepgram::{DeepgramConfig, DeepgramStt};
//! use promptkit_core::{AudioFormat, AudioFrame, SpeechToText, SttEvent, TranscriptionOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ApiKey::from_env("DEEPGRAM_API_KEY").ok_or("no key")?;
//! let stt = DeepgramStt::new(DeepgramConfig::new(key).with_keyterms(["PromptKit"]))?;
//! let options = TranscriptionOptions::new().with_language("en-US");
//! let mut session = stt.open_stream(AudioFormat::PCM16_16K_MONO, &options).await?;
//! for _ in 0..50 {
//!     // 20 ms frames from the microphone.
//!     session.send(AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO)).await?;
//! }
//! session.finish().await?;
//! while let Some(event) = session.events.next().await {
//!     if let SttEvent::Final { transcript, .. } = event? {
//!         println!("{}", transcript.text);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use promptkit_core::{
    AudioEncoding, AudioFormat, AudioFrame, AudioSender, BoxFuture, SpeechError, SpeechPrice,
    SpeechToText, SttEvent, SttMetadata, SttSession, Transcript, TranscriptionOptions, Word,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::ws::{self, Incoming, Socket};
use crate::client::{ApiKey, Connection, http, vendor_message};

/// Deepgram's API.
pub const DEFAULT_BASE_URL: &str = "https://api.deepgram.com";

/// The model used unless configured otherwise.
pub const DEFAULT_MODEL: &str = "nova-3";

/// How a [`DeepgramStt`] talks to Deepgram.
///
/// `#[non_exhaustive]`: built with [`DeepgramConfig::new`] (Deepgram's API) or
/// [`DeepgramConfig::compatible`] and the `with_*` methods. Its `Debug` does not show
/// the key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeepgramConfig {
    /// Where Deepgram is, its key, timeouts, retries and TLS roots.
    pub connection: Connection,
    /// The model (`nova-3`); [`TranscriptionOptions::model`] overrides it.
    pub model: String,
    /// The spoken language (`language=`); [`TranscriptionOptions::language`] overrides
    /// it. `None` leaves Deepgram's default.
    pub language: Option<String>,
    /// Live sessions send partials (`interim_results`, true).
    pub interim_results: bool,
    /// Silence that ends an utterance for `speech_final` (`endpointing`, 300 ms; Deepgram's
    /// own default is 10 ms, too short for conversation). `None` sends `endpointing=false`.
    pub endpointing: Option<Duration>,
    /// The word gap that sends `UtteranceEnd` (`utterance_end_ms`, 1000 ms). Deepgram
    /// accepts it only with interim results, so it is not sent without them. `None`: no
    /// utterance ends.
    pub utterance_end: Option<Duration>,
    /// Live sessions send `SpeechStarted` (`vad_events`, true).
    pub vad_events: bool,
    /// Formatting of numbers, dates and the like (`smart_format`, true).
    pub smart_format: bool,
    /// Punctuation and capitals (`punctuate`, true).
    pub punctuate: bool,
    /// Words and phrases to recognise better (Nova-3 `keyterm`, one parameter each).
    pub keyterms: Vec<String>,
    /// How often a `KeepAlive` goes out while no audio is sent (4 s; Deepgram closes an
    /// idle socket after 10 s).
    pub keep_alive: Duration,
    /// The list price, per minute of audio; `None` (unknown) by default.
    pub price: Option<SpeechPrice>,
}

impl DeepgramConfig {
    /// Deepgram's API with `api_key`.
    pub fn new(api_key: ApiKey) -> Self {
        Self::compatible(Connection::new(DEFAULT_BASE_URL).with_api_key(api_key))
    }

    /// A Deepgram-compatible service at `connection` (a self-hosted Deepgram, a test
    /// server), with the default settings.
    pub fn compatible(connection: Connection) -> Self {
        Self {
            connection,
            model: DEFAULT_MODEL.to_owned(),
            language: None,
            interim_results: true,
            endpointing: Some(Duration::from_millis(300)),
            utterance_end: Some(Duration::from_millis(1000)),
            vad_events: true,
            smart_format: true,
            punctuate: true,
            keyterms: Vec::new(),
            keep_alive: Duration::from_secs(4),
            price: None,
        }
    }

    /// Sets where the service is and how to reach it (its key included).
    #[must_use]
    pub fn with_connection(mut self, connection: Connection) -> Self {
        self.connection = connection;
        self
    }

    /// Sets the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Sets the language.
    #[must_use]
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets whether live sessions send partials.
    #[must_use]
    pub fn with_interim_results(mut self, on: bool) -> Self {
        self.interim_results = on;
        self
    }

    /// Sets the endpointing silence (`None`: off).
    #[must_use]
    pub fn with_endpointing(mut self, silence: Option<Duration>) -> Self {
        self.endpointing = silence;
        self
    }

    /// Sets the utterance-end gap (`None`: off).
    #[must_use]
    pub fn with_utterance_end(mut self, gap: Option<Duration>) -> Self {
        self.utterance_end = gap;
        self
    }

    /// Sets whether live sessions send `SpeechStarted`.
    #[must_use]
    pub fn with_vad_events(mut self, on: bool) -> Self {
        self.vad_events = on;
        self
    }

    /// Sets smart formatting.
    #[must_use]
    pub fn with_smart_format(mut self, on: bool) -> Self {
        self.smart_format = on;
        self
    }

    /// Sets punctuation.
    #[must_use]
    pub fn with_punctuate(mut self, on: bool) -> Self {
        self.punctuate = on;
        self
    }

    /// Sets the key terms.
    #[must_use]
    pub fn with_keyterms<I, S>(mut self, terms: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keyterms = terms.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the keep-alive interval.
    #[must_use]
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Sets the list price.
    #[must_use]
    pub fn with_price(mut self, price: SpeechPrice) -> Self {
        self.price = Some(price);
        self
    }

    /// The query of a live session for `format` (without `?`).
    fn live_query(
        &self,
        format: AudioFormat,
        options: &TranscriptionOptions,
    ) -> Result<String, SpeechError> {
        let encoding = match format.encoding {
            AudioEncoding::Pcm16 => "linear16",
            AudioEncoding::Mulaw => "mulaw",
            AudioEncoding::Alaw => "alaw",
            _ => return Err(SpeechError::UnsupportedFormat(format)),
        };
        if format.sample_rate == 0 || format.channels == 0 {
            return Err(SpeechError::UnsupportedFormat(format));
        }
        let mut params = self.common_params(options);
        params.push(("encoding".to_owned(), encoding.to_owned()));
        params.push(("sample_rate".to_owned(), format.sample_rate.to_string()));
        params.push(("channels".to_owned(), format.channels.to_string()));
        params.push((
            "interim_results".to_owned(),
            self.interim_results.to_string(),
        ));
        params.push((
            "endpointing".to_owned(),
            self.endpointing
                .map_or_else(|| "false".to_owned(), |d| d.as_millis().to_string()),
        ));
        if let (Some(gap), true) = (self.utterance_end, self.interim_results) {
            params.push(("utterance_end_ms".to_owned(), gap.as_millis().to_string()));
        }
        params.push(("vad_events".to_owned(), self.vad_events.to_string()));
        Ok(encode_query(&with_extra(params, options)))
    }

    /// The query of a batch request.
    fn batch_query(&self, format: AudioFormat, options: &TranscriptionOptions) -> String {
        let mut params = self.common_params(options);
        let raw = match format.encoding {
            AudioEncoding::Mulaw => Some("mulaw"),
            AudioEncoding::Alaw => Some("alaw"),
            _ => None,
        };
        if let Some(encoding) = raw {
            params.push(("encoding".to_owned(), encoding.to_owned()));
            params.push(("sample_rate".to_owned(), format.sample_rate.to_string()));
            params.push(("channels".to_owned(), format.channels.to_string()));
        }
        encode_query(&with_extra(params, options))
    }

    fn common_params(&self, options: &TranscriptionOptions) -> Vec<(String, String)> {
        let mut params = vec![(
            "model".to_owned(),
            options.model.clone().unwrap_or_else(|| self.model.clone()),
        )];
        if let Some(language) = options.language.as_ref().or(self.language.as_ref()) {
            params.push(("language".to_owned(), language.clone()));
        }
        params.push(("smart_format".to_owned(), self.smart_format.to_string()));
        params.push(("punctuate".to_owned(), self.punctuate.to_string()));
        for term in &self.keyterms {
            params.push(("keyterm".to_owned(), term.clone()));
        }
        params
    }
}

/// `params` with the options' extra keys: each replaces the parameters of its name.
fn with_extra(
    mut params: Vec<(String, String)>,
    options: &TranscriptionOptions,
) -> Vec<(String, String)> {
    for (key, value) in &options.extra {
        params.retain(|(name, _)| name != key);
        let values = match value {
            Value::Array(items) => items.iter().filter_map(param_value).collect(),
            other => param_value(other).into_iter().collect::<Vec<_>>(),
        };
        params.extend(values.into_iter().map(|v| (key.clone(), v)));
    }
    params
}

fn param_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        // Booleans and numbers as JSON writes them (`true`, `500`).
        other => Some(other.to_string()),
    }
}

fn encode_query(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
    out
}

/// Deepgram speech-to-text, live and batch.
#[derive(Debug, Clone)]
pub struct DeepgramStt {
    config: Arc<DeepgramConfig>,
    connector: ws::Connector,
    http: reqwest::Client,
}

impl DeepgramStt {
    /// A client for `config`.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] when an added root certificate is not usable, or
    /// [`SpeechError::Transport`] when TLS or HTTP cannot be set up.
    pub fn new(config: DeepgramConfig) -> Result<Self, SpeechError> {
        let connector = ws::Connector::new(&config.connection)?;
        let http = http::client(&config.connection)?;
        Ok(Self {
            config: Arc::new(config),
            connector,
            http,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DeepgramConfig {
        &self.config
    }

    fn auth_headers(&self) -> Vec<(&'static str, String)> {
        self.config
            .connection
            .api_key
            .as_ref()
            .map(|key| ("authorization", format!("Token {}", key.expose())))
            .into_iter()
            .collect()
    }

    async fn open(
        &self,
        format: AudioFormat,
        options: &TranscriptionOptions,
    ) -> Result<SttSession, SpeechError> {
        let connection = &self.config.connection;
        let url = format!(
            "{}/v1/listen?{}",
            ws::ws_base(connection)?,
            self.config.live_query(format, options)?
        );
        let headers = self.auth_headers();
        let socket = connection
            .retry
            .run(|| self.connector.connect(connection, &url, &headers))
            .await?;
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, events) = mpsc::channel(256);
        let task = Session {
            connection: connection.clone(),
            keep_alive: self.config.keep_alive.max(Duration::from_millis(10)),
            events: event_tx,
        };
        tokio::spawn(task.run(socket, command_rx));
        let events = futures_util::stream::unfold(events, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(SttSession {
            sender: Box::new(DeepgramSender {
                format,
                commands,
                finished: AtomicBool::new(false),
            }),
            events: Box::pin(events),
        })
    }

    async fn batch(
        &self,
        audio: &[AudioFrame],
        options: &TranscriptionOptions,
    ) -> Result<Transcript, SpeechError> {
        let connection = &self.config.connection;
        let (format, body, content_type) = batch_body(audio)?;
        let url = format!(
            "{}/v1/listen?{}",
            crate::client::http_base(connection.base()),
            self.config.batch_query(format, options)
        );
        let body = Bytes::from(body);
        let audio_length = audio
            .iter()
            .filter_map(AudioFrame::duration)
            .fold(Duration::ZERO, Duration::saturating_add);
        let first_byte =
            crate::client::batch_deadline(connection.timeouts.first_byte, audio_length);
        let response = connection
            .retry
            .run_if(crate::client::batch_retryable, || {
                let mut request = self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, &content_type)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .body(body.clone());
                for (name, value) in self.auth_headers() {
                    request = request.header(name, value);
                }
                async move {
                    let deadline = crate::client::after(first_byte);
                    let response = tokio::time::timeout_at(deadline, request.send())
                        .await
                        .map_err(|_| SpeechError::Timeout(first_byte))?
                        .map_err(|e| http::request_error(connection, e))?;
                    if response.status().is_success() {
                        Ok(response)
                    } else {
                        Err(http::error_within(connection, response, deadline).await)
                    }
                }
            })
            .await?;
        let text = http::read_body(connection, response, "Deepgram's response").await?;
        let json: Value = serde_json::from_slice(&text).map_err(|e| SpeechError::Service {
            status: 0,
            message: format!("Deepgram's response is not the JSON expected: {e}"),
        })?;
        decode_batch(&json)
    }
}

/// The body of a batch request for `audio`: its format, the bytes and their content type.
/// PCM16 and f32 travel as a WAV file, G.711 raw (its format in the query), WAV and
/// compressed audio as they are.
fn batch_body(audio: &[AudioFrame]) -> Result<(AudioFormat, Vec<u8>, String), SpeechError> {
    let Some(first) = audio.first() else {
        return Err(SpeechError::EmptyAudio);
    };
    let format = first.format;
    if let Some(other) = audio.iter().find(|f| f.format != format) {
        return Err(SpeechError::InvalidInput {
            message: format!(
                "frames of one transcription must share a format: {:?} then {:?}",
                format, other.format
            ),
        });
    }
    let mut data = Vec::with_capacity(audio.iter().map(|f| f.data.len()).sum());
    for frame in audio {
        data.extend_from_slice(&frame.data);
    }
    if data.is_empty() {
        return Err(SpeechError::EmptyAudio);
    }
    match format.encoding {
        AudioEncoding::Pcm16 | AudioEncoding::F32 => {
            let wav = crate::wav::to_bytes(&AudioFrame::new(data, format)).map_err(|e| {
                SpeechError::InvalidInput {
                    message: format!("the audio cannot be written as WAV: {e}"),
                }
            })?;
            Ok((format, wav, "audio/wav".to_owned()))
        }
        AudioEncoding::Mulaw | AudioEncoding::Alaw => {
            Ok((format, data, "application/octet-stream".to_owned()))
        }
        other => Ok((format, data, other.mime_type().to_owned())),
    }
}

impl SpeechToText for DeepgramStt {
    fn id(&self) -> &str {
        "deepgram"
    }

    /// PCM16 at 16 kHz mono first; 8 kHz mu-law and A-law; PCM16 at 8, 24 and 48 kHz.
    /// Deepgram takes PCM16 at any rate and channel count.
    fn formats(&self) -> Vec<AudioFormat> {
        vec![
            AudioFormat::PCM16_16K_MONO,
            AudioFormat::MULAW_8K_MONO,
            AudioFormat::ALAW_8K_MONO,
            AudioFormat::pcm16(8_000, 1),
            AudioFormat::PCM16_24K_MONO,
            AudioFormat::pcm16(48_000, 1),
        ]
    }

    fn transcribe<'a>(
        &'a self,
        audio: &'a [AudioFrame],
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(self.batch(audio, options))
    }

    fn price(&self) -> Option<SpeechPrice> {
        self.config.price
    }

    fn open_stream<'a>(
        &'a self,
        format: AudioFormat,
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<SttSession, SpeechError>> {
        Box::pin(self.open(format, options))
    }
}

/// What the sender asks of the session's task.
#[derive(Debug)]
enum Command {
    /// Audio and its duration.
    Audio(Bytes, Duration),
    Finalize,
    Finish,
}

/// The sending half of a live session.
struct DeepgramSender {
    format: AudioFormat,
    commands: mpsc::Sender<Command>,
    finished: AtomicBool,
}

impl fmt::Debug for DeepgramSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeepgramSender")
            .field("format", &self.format)
            .field("finished", &self.finished.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DeepgramSender {
    async fn command(&self, command: Command) -> Result<(), SpeechError> {
        if self.finished.load(Ordering::Acquire) {
            return Err(SpeechError::Closed);
        }
        self.commands
            .send(command)
            .await
            .map_err(|_| SpeechError::Closed)
    }
}

impl AudioSender for DeepgramSender {
    fn send(&self, frame: AudioFrame) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async move {
            if frame.format != self.format {
                return Err(SpeechError::InvalidInput {
                    message: format!(
                        "the session takes {:?}, not {:?}",
                        self.format, frame.format
                    ),
                });
            }
            if frame.data.is_empty() {
                // An empty binary message is Deepgram's old end-of-stream signal.
                return if self.finished.load(Ordering::Acquire) {
                    Err(SpeechError::Closed)
                } else {
                    Ok(())
                };
            }
            let duration = frame.duration().unwrap_or_default();
            self.command(Command::Audio(frame.data, duration)).await
        })
    }

    fn finalize(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(self.command(Command::Finalize))
    }

    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async move {
            if self.finished.swap(true, Ordering::AcqRel) {
                return Err(SpeechError::Closed);
            }
            self.commands
                .send(Command::Finish)
                .await
                .map_err(|_| SpeechError::Closed)
        })
    }
}

/// How far Deepgram's results may lag behind the audio sent before a message is owed even
/// though one just came: Deepgram reports on the audio about every second.
const BEHIND: Duration = Duration::from_secs(2);

/// The task that owns a live session's socket.
struct Session {
    connection: Connection,
    keep_alive: Duration,
    events: mpsc::Sender<Result<SttEvent, SpeechError>>,
}

/// Why the task's loop stopped.
enum End {
    /// The session is over (the stream ended or failed): close the socket politely.
    Done,
    /// The consumer dropped the events: close the socket.
    Dropped,
}

impl Session {
    async fn run(self, socket: Socket, mut commands: mpsc::Receiver<Command>) {
        let (mut writer, mut reader) = socket.split();
        let _ = self.drive(&mut writer, &mut reader, &mut commands).await;
        // A clean close, bounded: a peer that never answers does not keep the task.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.close()).await;
    }

    async fn drive(
        &self,
        writer: &mut SplitSink<Socket, Message>,
        reader: &mut ws::Reader,
        commands: &mut mpsc::Receiver<Command>,
    ) -> End {
        let timeouts = self.connection.timeouts;
        let mut commands_open = true;
        let mut finishing = false;
        let mut heard_any = false;
        // The audio sent, and the end of the audio Deepgram's results have covered.
        let mut sent = Duration::ZERO;
        let mut answered = Duration::ZERO;
        // Since when a message is owed: from the first audio after a message, or from a
        // message after which Deepgram is still far behind the audio sent, or from
        // `CloseStream`.
        let mut owed_since: Option<Instant> = None;
        let mut keep_alive_at = crate::client::after(self.keep_alive);
        loop {
            let wait = if heard_any {
                timeouts.idle
            } else {
                timeouts.first_byte
            };
            let deadline = owed_since.and_then(|since| since.checked_add(wait));
            let outgoing = tokio::select! {
                () = self.events.closed() => return End::Dropped,
                command = commands.recv(), if commands_open => command,
                incoming = ws::next(reader, None) => {
                    match incoming {
                        Err(error) => return self.fail(error).await,
                        Ok(incoming) => {
                            heard_any = true;
                            if let Some(end) = self.incoming(incoming, finishing, &mut answered).await {
                                return end;
                            }
                            owed_since = (finishing || sent > answered.saturating_add(BEHIND))
                                .then(Instant::now);
                        }
                    }
                    continue;
                }
                () = sleep_until(deadline) => {
                    return self.fail(SpeechError::Timeout(wait)).await;
                }
                () = tokio::time::sleep_until(keep_alive_at), if !finishing => {
                    keep_alive_at = crate::client::after(self.keep_alive);
                    let keep_alive = ws::text(r#"{"type":"KeepAlive"}"#.to_owned());
                    if let Err(end) = self.write(writer, keep_alive, timeouts.idle).await {
                        return end;
                    }
                    continue;
                }
            };
            let message = match outgoing {
                Some(Command::Audio(data, duration)) => {
                    sent = sent.saturating_add(duration);
                    ws::binary(data)
                }
                Some(Command::Finalize) => ws::text(r#"{"type":"Finalize"}"#.to_owned()),
                Some(Command::Finish) | None => {
                    // Dropping the sender ends the audio as `finish` does.
                    commands_open = false;
                    if finishing {
                        continue;
                    }
                    finishing = true;
                    ws::text(r#"{"type":"CloseStream"}"#.to_owned())
                }
            };
            keep_alive_at = crate::client::after(self.keep_alive);
            owed_since.get_or_insert_with(Instant::now);
            if let Err(end) = self.write(writer, message, timeouts.idle).await {
                return end;
            }
        }
    }

    /// Writes `message` within `limit`: a socket whose send buffer stays full (a network
    /// that dropped without a reset) is a [`SpeechError::Timeout`], and a consumer that
    /// goes away while the write waits ends the session at once.
    async fn write(
        &self,
        writer: &mut SplitSink<Socket, Message>,
        message: Message,
        limit: Duration,
    ) -> Result<(), End> {
        tokio::select! {
            () = self.events.closed() => Err(End::Dropped),
            sent = tokio::time::timeout(limit, writer.send(message)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(self.fail(ws::send_error(error)).await),
                Err(_) => Err(self.fail(SpeechError::Timeout(limit)).await),
            },
        }
    }

    /// Handles one message; `Some` when the session is over.
    async fn incoming(
        &self,
        incoming: Incoming,
        finishing: bool,
        answered: &mut Duration,
    ) -> Option<End> {
        match incoming {
            Incoming::Binary(bytes) => {
                tracing::debug!(bytes, "ignored a binary message from Deepgram");
                None
            }
            Incoming::Text(text) => match decode_message(&text) {
                Ok((event, covered)) => {
                    *answered = (*answered).max(covered);
                    match event {
                        None => None,
                        Some(event) => self.emit(Ok(event)).await,
                    }
                }
                Err(error) => Some(self.fail(self.scrub(error)).await),
            },
            Incoming::Closed { code, reason } => match close_error(code, &reason, finishing) {
                None => Some(End::Done),
                Some(error) => Some(self.fail(self.scrub(error)).await),
            },
        }
    }

    async fn emit(&self, item: Result<SttEvent, SpeechError>) -> Option<End> {
        match self.events.send(item).await {
            Ok(()) => None,
            Err(_) => Some(End::Dropped),
        }
    }

    async fn fail(&self, error: SpeechError) -> End {
        let _ = self.events.send(Err(error)).await;
        End::Done
    }

    /// The error with the key scrubbed from its message.
    fn scrub(&self, error: SpeechError) -> SpeechError {
        match error {
            SpeechError::Service { status, message } => SpeechError::Service {
                status,
                message: vendor_message(&self.connection, &message),
            },
            SpeechError::InvalidInput { message } => SpeechError::InvalidInput {
                message: vendor_message(&self.connection, &message),
            },
            SpeechError::Auth { message } => SpeechError::Auth {
                message: vendor_message(&self.connection, &message),
            },
            SpeechError::RateLimited {
                retry_after,
                message,
            } => SpeechError::RateLimited {
                retry_after,
                message: vendor_message(&self.connection, &message),
            },
            other => other,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The error for Deepgram closing the socket with `code` and `reason`; `None` for a normal
/// end (1000, or a close without a code after `CloseStream`).
pub fn close_error(code: u16, reason: &str, finishing: bool) -> Option<SpeechError> {
    let what = if reason.trim().is_empty() {
        format!("Deepgram closed the stream with {code}")
    } else {
        format!("Deepgram closed the stream with {code}: {}", reason.trim())
    };
    match code {
        1000 => None,
        1005 if finishing => None,
        1005 | 1006 => Some(SpeechError::Transport {
            message: format!("{what} (the connection dropped)"),
            source: None,
        }),
        // DATA-0000: the audio cannot be decoded (1008 now, 1002 in older documentation).
        1002 | 1008 => Some(SpeechError::InvalidInput { message: what }),
        1011 => Some(SpeechError::Service {
            status: 500,
            message: what,
        }),
        1001 | 1012 | 1013 => Some(SpeechError::Service {
            status: 503,
            message: what,
        }),
        4400..=4599 => Some(crate::client::status_error(code - 4000, None, what)),
        _ => Some(SpeechError::Service {
            status: 0,
            message: what,
        }),
    }
}

/// Decodes one of Deepgram's live messages.
///
/// `Ok(None)` for messages that carry no event: a `Results` with an empty transcript, an
/// unknown type. `Err` for Deepgram's `Error` message (a [`SpeechError::Service`] with
/// status 0 and Deepgram's text) and for text that is not a JSON object. Pure and total:
/// it never panics, whatever the text.
///
/// # Errors
/// As above.
pub fn decode(text: &str) -> Result<Option<SttEvent>, SpeechError> {
    decode_message(text).map(|(event, _)| event)
}

/// [`decode`], and the end of the audio a `Results` message covers (zero for others).
fn decode_message(text: &str) -> Result<(Option<SttEvent>, Duration), SpeechError> {
    let json: Value = serde_json::from_str(text).map_err(|e| SpeechError::Service {
        status: 0,
        message: format!("Deepgram sent a message that is not JSON: {e}"),
    })?;
    let Some(object) = json.as_object() else {
        return Err(SpeechError::Service {
            status: 0,
            message: "Deepgram sent a message that is not a JSON object".to_owned(),
        });
    };
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
    if matches!(kind, "Error" | "error") || object.contains_key("err_msg") {
        return Err(SpeechError::Service {
            status: 0,
            message: error_text(&json),
        });
    }
    if kind == "Results" {
        let covered = seconds(json.get("start")).saturating_add(seconds(json.get("duration")));
        return Ok((decode_results(&json), covered));
    }
    let event = match kind {
        "SpeechStarted" => Some(SttEvent::SpeechStarted {
            at: seconds(json.get("timestamp")),
        }),
        "UtteranceEnd" => Some(SttEvent::UtteranceEnd {
            at: seconds(json.get("last_word_end")),
        }),
        "Metadata" => Some(SttEvent::Metadata(decode_metadata(&json))),
        _ => None,
    };
    Ok((event, Duration::ZERO))
}

/// The text of an error message: Deepgram's `description` and `message`, or `err_code`
/// and `err_msg`.
fn error_text(json: &Value) -> String {
    let parts: Vec<&str> = ["description", "message", "err_msg", "variant", "err_code"]
        .iter()
        .filter_map(|key| json.get(*key).and_then(Value::as_str))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        "Deepgram reported an error without a message".to_owned()
    } else {
        format!("Deepgram: {}", parts.join(" / "))
    }
}

fn decode_results(json: &Value) -> Option<SttEvent> {
    let alternative = json.pointer("/channel/alternatives/0")?;
    let text = alternative.get("transcript").and_then(Value::as_str)?;
    if text.trim().is_empty() {
        return None;
    }
    let start = seconds(json.get("start"));
    let end = start.saturating_add(seconds(json.get("duration")));
    let transcript = transcript_of(alternative, text).with_span(start, end);
    let flag = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(false);
    Some(if flag("is_final") {
        SttEvent::Final {
            transcript,
            speech_final: flag("speech_final"),
            from_finalize: flag("from_finalize"),
        }
    } else {
        SttEvent::Partial { transcript }
    })
}

/// The transcript of one alternative: its words, confidence and language.
fn transcript_of(alternative: &Value, text: &str) -> Transcript {
    let words: Vec<Word> = alternative
        .get("words")
        .and_then(Value::as_array)
        .map(|words| words.iter().filter_map(decode_word).collect())
        .unwrap_or_default();
    let mut transcript = Transcript::new(text.trim()).with_words(words);
    if let Some(confidence) = alternative.get("confidence").and_then(Value::as_f64) {
        transcript = transcript.with_confidence(unit(confidence));
    }
    if let Some(language) = alternative
        .pointer("/languages/0")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
    {
        transcript = transcript.with_language(language);
    }
    transcript
}

fn decode_word(word: &Value) -> Option<Word> {
    let text = word
        .get("punctuated_word")
        .and_then(Value::as_str)
        .filter(|w| !w.is_empty())
        .or_else(|| word.get("word").and_then(Value::as_str))?;
    let mut out = Word::new(text, seconds(word.get("start")), seconds(word.get("end")));
    if let Some(confidence) = word.get("confidence").and_then(Value::as_f64) {
        out = out.with_confidence(unit(confidence));
    }
    if let Some(speaker) = word
        .get("speaker")
        .and_then(Value::as_u64)
        .and_then(|s| u32::try_from(s).ok())
    {
        out = out.with_speaker(speaker);
    }
    Some(out)
}

fn decode_metadata(json: &Value) -> SttMetadata {
    let mut metadata = SttMetadata::new();
    if let Some(id) = json.get("request_id").and_then(Value::as_str) {
        metadata = metadata.with_request_id(id);
    }
    let model = json
        .pointer("/models/0")
        .and_then(Value::as_str)
        .and_then(|uuid| json.get("model_info")?.get(uuid))
        .and_then(|info| {
            info.get("name")
                .or_else(|| info.get("arch"))
                .and_then(Value::as_str)
        });
    if let Some(model) = model {
        metadata = metadata.with_model(model);
    }
    if json.get("duration").and_then(Value::as_f64).is_some() {
        metadata = metadata.with_audio_duration(seconds(json.get("duration")));
    }
    metadata
}

/// Decodes a batch response: `results.channels[0].alternatives[0]` with its words, and
/// `metadata.duration` as the billed audio.
///
/// # Errors
/// [`SpeechError::Service`] (status 0) when the response has no transcript.
pub fn decode_batch(json: &Value) -> Result<Transcript, SpeechError> {
    let channel = json.pointer("/results/channels/0");
    let alternative = channel.and_then(|c| c.pointer("/alternatives/0"));
    let Some((alternative, text)) = alternative.and_then(|a| {
        a.get("transcript")
            .and_then(Value::as_str)
            .map(|text| (a, text))
    }) else {
        return Err(SpeechError::Service {
            status: 0,
            message: "Deepgram's response has no transcript".to_owned(),
        });
    };
    let mut transcript = transcript_of(alternative, text);
    if transcript.language.is_none()
        && let Some(language) = channel
            .and_then(|c| c.get("detected_language"))
            .and_then(Value::as_str)
    {
        transcript = transcript.with_language(language);
    }
    if let (Some(first), Some(last)) = (transcript.words.first(), transcript.words.last()) {
        let span = (first.start, last.end);
        transcript = transcript.with_span(span.0, span.1);
    }
    if json
        .pointer("/metadata/duration")
        .and_then(Value::as_f64)
        .is_some()
    {
        transcript = transcript.with_audio_duration(seconds(json.pointer("/metadata/duration")));
    }
    Ok(transcript)
}

/// Seconds as a duration: zero for a missing, negative or non-finite value, saturating
/// for a huge one.
fn seconds(value: Option<&Value>) -> Duration {
    let Some(secs) = value.and_then(Value::as_f64) else {
        return Duration::ZERO;
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Duration::ZERO;
    }
    // A time beyond a day of audio is not a time in this session.
    Duration::try_from_secs_f64(secs.min(86_400.0)).unwrap_or_default()
}

/// A confidence within 0 to 1.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a confidence within 0 to 1"
)]
fn unit(value: f64) -> f32 {
    if value.is_finite() {
        value.clamp(0.0, 1.0) as f32
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_partials_and_finals() {
        let final_ = r#"{"type":"Results","channel_index":[0,1],"duration":1.5,"start":0.5,
            "is_final":true,"speech_final":true,"from_finalize":false,
            "channel":{"alternatives":[{"transcript":"Hello there.","confidence":0.9,
            "words":[{"word":"hello","start":0.5,"end":1.0,"confidence":0.8,"punctuated_word":"Hello","speaker":1},
                     {"word":"there","start":1.0,"end":2.0,"confidence":0.95,"punctuated_word":"there."}]}]}}"#;
        let Some(SttEvent::Final {
            transcript,
            speech_final: true,
            from_finalize: false,
        }) = decode(final_).unwrap()
        else {
            panic!()
        };
        assert_eq!(transcript.text, "Hello there.");
        assert_eq!(transcript.start, Some(Duration::from_millis(500)));
        assert_eq!(transcript.end, Some(Duration::from_secs(2)));
        assert_eq!(transcript.words[0].text, "Hello");
        assert_eq!(transcript.words[0].speaker, Some(1));
        assert_eq!(transcript.words[1].end, Duration::from_secs(2));

        let empty = r#"{"type":"Results","is_final":true,"channel":{"alternatives":[{"transcript":"","words":[]}]}}"#;
        assert_eq!(decode(empty).unwrap(), None);
        let partial = r#"{"type":"Results","is_final":false,"channel":{"alternatives":[{"transcript":"hel"}]}}"#;
        assert!(matches!(
            decode(partial).unwrap(),
            Some(SttEvent::Partial { .. })
        ));
    }

    #[test]
    fn other_messages_and_errors() {
        assert_eq!(
            decode(r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.01}"#).unwrap(),
            Some(SttEvent::UtteranceEnd {
                at: Duration::from_millis(2010)
            })
        );
        assert_eq!(
            decode(r#"{"type":"SpeechStarted","channel":[0],"timestamp":-3}"#).unwrap(),
            Some(SttEvent::SpeechStarted { at: Duration::ZERO })
        );
        let metadata = r#"{"type":"Metadata","request_id":"r1","duration":3.25,"models":["u"],
            "model_info":{"u":{"name":"general-nova-3","version":"1","arch":"nova-3"}}}"#;
        assert_eq!(
            decode(metadata).unwrap(),
            Some(SttEvent::Metadata(
                SttMetadata::new()
                    .with_request_id("r1")
                    .with_model("general-nova-3")
                    .with_audio_duration(Duration::from_millis(3250))
            ))
        );
        let error = decode(r#"{"type":"Error","description":"boom","message":"x","variant":"y"}"#);
        assert!(
            matches!(error, Err(SpeechError::Service { status: 0, ref message }) if message.contains("boom"))
        );
        assert!(decode("not json").is_err());
        assert_eq!(decode(r#"{"type":"Whatever"}"#).unwrap(), None);
    }

    #[test]
    fn close_codes_map_to_error_classes() {
        assert!(close_error(1000, "", false).is_none());
        for code in [1002, 1008] {
            assert!(matches!(
                close_error(code, "DATA-0000", false),
                Some(SpeechError::InvalidInput { message }) if message.contains("DATA-0000")
            ));
        }
        let net = close_error(1011, "NET-0001", false).unwrap();
        assert!(net.is_retryable() && net.to_string().contains("NET-0001"));
        assert!(matches!(
            close_error(4401, "", false),
            Some(SpeechError::Auth { .. })
        ));
        assert!(matches!(
            close_error(1006, "", true),
            Some(SpeechError::Transport { .. })
        ));
    }

    #[test]
    fn queries_carry_settings_and_extras() {
        let config =
            DeepgramConfig::compatible(Connection::new("http://x")).with_keyterms(["a b", "c&d"]);
        let options = TranscriptionOptions::new()
            .with_extra("diarize", true)
            .with_extra("endpointing", 500)
            .with_extra("tag", serde_json::json!(["x", "y"]))
            .with_extra("vad_events", Value::Null);
        let query = config
            .live_query(AudioFormat::MULAW_8K_MONO, &options)
            .unwrap();
        assert!(query.starts_with("model=nova-3&smart_format=true&punctuate=true"));
        assert!(query.contains("keyterm=a%20b&keyterm=c%26d"));
        assert!(query.contains("encoding=mulaw&sample_rate=8000&channels=1"));
        assert!(query.contains("endpointing=500") && !query.contains("endpointing=300"));
        assert!(query.contains("tag=x&tag=y") && query.contains("diarize=true"));
        assert!(!query.contains("vad_events"));
        assert!(matches!(
            config.live_query(AudioFormat::new(16_000, 1, AudioEncoding::F32), &options),
            Err(SpeechError::UnsupportedFormat(_))
        ));
    }
}
