//! OpenAI speech over HTTP: batch transcription (`POST /audio/transcriptions`) and
//! synthesis (`POST /audio/speech`), for OpenAI itself and for any OpenAI-compatible server
//! (local Whisper and TTS servers take the same requests at their own base URL, often
//! without a key).
//!
//! - [`OpenAiStt`] implements [`SpeechToText::transcribe`]: the frames (PCM16, f32, mu-law
//!   or A-law, decoded to PCM16 first) go up as one WAV file; `whisper-1` is asked for
//!   `verbose_json` with word timestamps, other models for `json`. The transcript carries
//!   the audio's duration for cost. There is no live session
//!   ([`open_stream`](SpeechToText::open_stream) reports `Unsupported`).
//! - [`OpenAiTts`] implements [`TextToSpeech::synthesize`]: the speech comes back as raw
//!   24 kHz PCM16 (`response_format: "pcm"`) and is streamed as frames of 20 to 100 ms as
//!   the body arrives, resampled (and G.711-encoded) when another format is asked for.
//!   There is no streaming session: callers synthesise sentence by sentence.
//! - [`decode_transcription`] is the pure decoder of a transcription response.
//!
//! Retries happen only before the first result: the transcription's response, the first
//! byte of speech. Once audio has come back, a broken body is a terminal
//! [`SpeechError::Transport`] and nothing is requested again.
//!
//! # Example: transcribing
//!
//! ```no_run
//! use promptkit_audio::client::ApiKey;
//! use promptkit_audio::openai::{OpenAiStt, OpenAiSttConfig};
//! use promptkit_core::{AudioFormat, AudioFrame, SpeechToText, TranscriptionOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), promptkit_core::SpeechError> {
//! let key = ApiKey::from_env("OPENAI_API_KEY").expect("OPENAI_API_KEY");
//! let stt = OpenAiStt::new(OpenAiSttConfig::new(key).with_model("whisper-1"))?;
//! let audio = vec![AudioFrame::new(vec![0_u8; 32_000], AudioFormat::PCM16_16K_MONO)];
//! let transcript = stt
//!     .transcribe(&audio, &TranscriptionOptions::new().with_language("en"))
//!     .await?;
//! println!("{} ({:?} of audio)", transcript.text, transcript.audio_duration);
//! # Ok(())
//! # }
//! ```
//!
//! # Example: speaking, through a local OpenAI-compatible server without a key
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use promptkit_audio::client::Connection;
//! use promptkit_audio::openai::{OpenAiTts, OpenAiTtsConfig};
//! use promptkit_core::{AudioFormat, SynthesisOptions, TextToSpeech};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), promptkit_core::SpeechError> {
//! let config = OpenAiTtsConfig::compatible(Connection::new("http://127.0.0.1:8880/v1"))
//!     .with_model("kokoro")
//!     .with_voice("af_heart");
//! let tts = OpenAiTts::new(config)?;
//! let options = SynthesisOptions::new().with_format(AudioFormat::PCM16_16K_MONO);
//! let mut audio = tts.synthesize("Hello there.", &options).await?;
//! while let Some(frame) = audio.next().await {
//!     let frame = frame?;
//!     println!("{:?} of audio", frame.duration());
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use promptkit_core::{
    AudioEncoding, AudioFormat, AudioFrame, AudioStream, BoxFuture, BoxStream, SpeechError,
    SpeechPrice, SpeechToText, SynthesisOptions, TextToSpeech, Transcript, TranscriptionOptions,
    Word,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::client::{ApiKey, Connection, http, transport};
use crate::synth::PcmFramer;
use crate::{pcm, wav};

/// OpenAI's API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The transcription model used unless another is configured.
pub const DEFAULT_STT_MODEL: &str = "gpt-4o-mini-transcribe";
/// The speech model used unless another is configured.
pub const DEFAULT_TTS_MODEL: &str = "gpt-4o-mini-tts";
/// The voice used unless another is configured.
pub const DEFAULT_VOICE: &str = "alloy";
/// The longest text one speech request takes, in characters (OpenAI's limit).
pub const MAX_INPUT_CHARS: usize = 4096;
/// The largest upload one transcription request takes, in bytes (OpenAI's 25 MB limit).
pub const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;
/// The rate of the PCM OpenAI's speech endpoint returns.
pub const SPEECH_SAMPLE_RATE: u32 = 24_000;
/// The environment variable [`OpenAiSttConfig::from_env`] and
/// [`OpenAiTtsConfig::from_env`] read.
pub const API_KEY_ENV: &str = "OPENAI_API_KEY";

/// The most speech one request may return (an hour of 24 kHz PCM16; 4096 characters are
/// a few minutes).
const MAX_SPEECH_BYTES: usize = 3600 * 48_000;

// ---------------------------------------------------------------------------------------
// Transcription
// ---------------------------------------------------------------------------------------

/// Configuration of an [`OpenAiStt`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OpenAiSttConfig {
    /// Where the service is, its key, timeouts, retries and roots.
    pub connection: Connection,
    /// The model ([`DEFAULT_STT_MODEL`]); [`TranscriptionOptions::model`] overrides it.
    pub model: String,
    /// Whether to ask for `verbose_json` with word timestamps: `None` (the default) asks
    /// for it with `whisper-1` only (OpenAI's other models answer `json` only), `Some(true)`
    /// always (for local Whisper servers that serve other model names), `Some(false)` never.
    pub word_timestamps: Option<bool>,
    /// The list price, per minute of audio.
    pub price: Option<SpeechPrice>,
    /// The instance name ("openai").
    pub id: String,
}

impl OpenAiSttConfig {
    /// OpenAI itself, with `api_key`.
    pub fn new(api_key: ApiKey) -> Self {
        Self::compatible(Connection::new(DEFAULT_BASE_URL).with_api_key(api_key))
    }

    /// OpenAI with the key in [`API_KEY_ENV`]; `None` when it is unset.
    pub fn from_env() -> Option<Self> {
        ApiKey::from_env(API_KEY_ENV).map(Self::new)
    }

    /// An OpenAI-compatible server at `connection` (its base URL ends in `/v1`, like
    /// OpenAI's; the key is optional).
    pub fn compatible(connection: Connection) -> Self {
        Self {
            connection,
            model: DEFAULT_STT_MODEL.to_owned(),
            word_timestamps: None,
            price: None,
            id: "openai".to_owned(),
        }
    }

    /// Sets the connection.
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

    /// Sets whether word timestamps are asked for (see [`word_timestamps`](Self::word_timestamps)).
    #[must_use]
    pub fn with_word_timestamps(mut self, words: bool) -> Self {
        self.word_timestamps = Some(words);
        self
    }

    /// Sets the price (per minute of audio).
    #[must_use]
    pub fn with_price(mut self, price: SpeechPrice) -> Self {
        self.price = Some(price);
        self
    }

    /// Sets the instance name.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

/// OpenAI batch transcription, `POST {base}/audio/transcriptions`.
///
/// Options read: [`TranscriptionOptions::language`] (its primary subtag: `en-US` is sent as
/// `en`), [`prompt`](TranscriptionOptions::prompt), [`model`](TranscriptionOptions::model);
/// every [`extra`](TranscriptionOptions::extra) key is sent as a form field (`temperature`,
/// `chunking_strategy`, `include`; strings as they are, arrays as repeated `name[]` fields,
/// objects as JSON), except `file`, `model`, `response_format` and `stream`, which the
/// client owns, and fields the client already set.
///
/// The first-byte timeout runs from the start of the request, the upload included, to the
/// response's headers; the body must then come without a gap longer than the idle timeout.
/// A 429, a 5xx, a timeout or a transport error before the response is retried.
#[derive(Debug, Clone)]
pub struct OpenAiStt {
    config: OpenAiSttConfig,
    http: reqwest::Client,
}

impl OpenAiStt {
    /// A client for `config`.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] when an added root certificate is not usable.
    pub fn new(config: OpenAiSttConfig) -> Result<Self, SpeechError> {
        let http = http::client(&config.connection)?;
        Ok(Self { config, http })
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiSttConfig {
        &self.config
    }

    async fn run(
        &self,
        audio: &[AudioFrame],
        options: &TranscriptionOptions,
    ) -> Result<Transcript, SpeechError> {
        let upload = Upload::of(audio)?;
        let model = options
            .model
            .clone()
            .unwrap_or_else(|| self.config.model.clone());
        let verbose = self
            .config
            .word_timestamps
            .unwrap_or_else(|| model.starts_with("whisper"));
        let fields = form_fields(&model, verbose, options);
        let connection = &self.config.connection;
        let url = format!("{}/audio/transcriptions", connection.base());
        let first_byte = crate::client::batch_deadline(
            connection.timeouts.first_byte,
            upload.duration.unwrap_or_default(),
        );
        let response = connection
            .retry
            .run_if(crate::client::batch_retryable, || async {
                let mut form = reqwest::multipart::Form::new();
                for (name, value) in &fields {
                    form = form.text(name.clone(), value.clone());
                }
                let length = upload.bytes.len() as u64;
                let file = reqwest::multipart::Part::stream_with_length(
                    reqwest::Body::from(upload.bytes.clone()),
                    length,
                )
                .file_name(upload.file_name)
                .mime_str(upload.mime)
                .map_err(|e| http::request_error(connection, e))?;
                let mut request = self.http.post(&url).multipart(form.part("file", file));
                if let Some(key) = &connection.api_key {
                    request = request.bearer_auth(key.expose());
                }
                let deadline = crate::client::after(first_byte);
                let response = tokio::time::timeout_at(deadline, request.send())
                    .await
                    .map_err(|_| SpeechError::Timeout(first_byte))?
                    .map_err(|e| http::request_error(connection, e))?;
                if !response.status().is_success() {
                    return Err(http::error_within(connection, response, deadline).await);
                }
                Ok(response)
            })
            .await?;
        let body = http::read_body(connection, response, "the transcription response").await?;
        let text = std::str::from_utf8(&body).map_err(|_| SpeechError::Service {
            status: 0,
            message: "the transcription response is not UTF-8".to_owned(),
        })?;
        let mut transcript = decode_transcription(text).map_err(|error| match error {
            SpeechError::Service { status, message } => SpeechError::Service {
                status,
                message: crate::client::vendor_message(connection, &message),
            },
            other => other,
        })?;
        if transcript.audio_duration.is_none() {
            transcript.audio_duration = upload.duration;
        }
        Ok(transcript)
    }
}

impl SpeechToText for OpenAiStt {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn formats(&self) -> Vec<AudioFormat> {
        vec![
            AudioFormat::PCM16_16K_MONO,
            AudioFormat::PCM16_24K_MONO,
            AudioFormat::pcm16(8_000, 1),
            AudioFormat::MULAW_8K_MONO,
            AudioFormat::ALAW_8K_MONO,
        ]
    }

    fn transcribe<'a>(
        &'a self,
        audio: &'a [AudioFrame],
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(self.run(audio, options))
    }

    fn price(&self) -> Option<SpeechPrice> {
        self.config.price
    }
}

/// The file of a transcription request.
#[derive(Debug)]
struct Upload {
    bytes: Bytes,
    file_name: &'static str,
    mime: &'static str,
    /// The audio's duration, when known from the frames.
    duration: Option<Duration>,
}

impl Upload {
    /// The frames as one file: raw audio as a PCM16 WAV (G.711 and f32 decoded first), a
    /// WAV or MP3 file (split into frames) as it is.
    fn of(audio: &[AudioFrame]) -> Result<Self, SpeechError> {
        let Some(first) = audio.first() else {
            return Err(SpeechError::EmptyAudio);
        };
        let format = first.format;
        if let Some(other) = audio.iter().find(|f| f.format != format) {
            return Err(SpeechError::InvalidInput {
                message: format!(
                    "the frames of one utterance must share a format ({format:?}, then {:?})",
                    other.format
                ),
            });
        }
        let total: usize = audio.iter().map(|f| f.data.len()).sum();
        if total == 0 {
            return Err(SpeechError::EmptyAudio);
        }
        let upload = match format.encoding {
            AudioEncoding::Pcm16
            | AudioEncoding::F32
            | AudioEncoding::Mulaw
            | AudioEncoding::Alaw => {
                let mut data = Vec::with_capacity(total * 2);
                for frame in audio {
                    if format.encoding == AudioEncoding::Pcm16 {
                        pcm::check_whole(format, frame.data.len())?;
                        data.extend_from_slice(&frame.data);
                    } else {
                        data.extend_from_slice(&pcm::i16_bytes(&pcm::decode_to_i16(frame)?));
                    }
                }
                let pcm16 = AudioFormat::pcm16(format.sample_rate, format.channels);
                let duration = pcm16.duration_of(data.len());
                let file = wav::to_bytes(&AudioFrame::new(data, pcm16))?;
                Self {
                    bytes: Bytes::from(file),
                    file_name: "audio.wav",
                    mime: "audio/wav",
                    duration,
                }
            }
            AudioEncoding::Wav => {
                let bytes = concat(audio, total);
                let duration = hound::WavReader::new(Cursor::new(&bytes[..]))
                    .ok()
                    .and_then(|reader| {
                        let rate = reader.spec().sample_rate;
                        AudioFormat::pcm16(rate, 1).duration_of_samples(reader.duration() as usize)
                    });
                Self {
                    bytes,
                    file_name: "audio.wav",
                    mime: "audio/wav",
                    duration,
                }
            }
            AudioEncoding::Mp3 => Self {
                bytes: concat(audio, total),
                file_name: "audio.mp3",
                mime: "audio/mpeg",
                duration: None,
            },
            _ => return Err(SpeechError::UnsupportedFormat(format)),
        };
        if upload.bytes.len() > MAX_UPLOAD_BYTES {
            return Err(SpeechError::InvalidInput {
                message: format!(
                    "the audio is {} bytes as a file; one transcription takes at most {MAX_UPLOAD_BYTES}",
                    upload.bytes.len()
                ),
            });
        }
        Ok(upload)
    }
}

fn concat(audio: &[AudioFrame], total: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(total);
    for frame in audio {
        bytes.extend_from_slice(&frame.data);
    }
    Bytes::from(bytes)
}

/// The form fields of a transcription request, the file aside.
fn form_fields(
    model: &str,
    verbose: bool,
    options: &TranscriptionOptions,
) -> Vec<(String, String)> {
    let mut fields = vec![("model".to_owned(), model.to_owned())];
    if let Some(language) = &options.language {
        let primary = language.split(['-', '_']).next().unwrap_or(language);
        if !primary.is_empty() {
            fields.push(("language".to_owned(), primary.to_ascii_lowercase()));
        }
    }
    if let Some(prompt) = &options.prompt {
        fields.push(("prompt".to_owned(), prompt.clone()));
    }
    if verbose {
        fields.push(("response_format".to_owned(), "verbose_json".to_owned()));
        fields.push(("timestamp_granularities[]".to_owned(), "word".to_owned()));
    } else {
        fields.push(("response_format".to_owned(), "json".to_owned()));
    }
    let taken = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .any(|(n, _)| n.trim_end_matches("[]") == name.trim_end_matches("[]"))
    };
    for (name, value) in &options.extra {
        let base = name.trim_end_matches("[]");
        if matches!(base, "file" | "model" | "response_format" | "stream") || taken(&fields, name) {
            continue;
        }
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    fields.push((format!("{base}[]"), form_value(item)));
                }
            }
            other => fields.push((name.clone(), form_value(other))),
        }
    }
    fields
}

fn form_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A transcription response, as OpenAI and the Whisper-compatible servers send it (`json`
/// and `verbose_json`). Everything is optional: servers differ.
#[derive(Debug, Deserialize)]
struct WireTranscription {
    text: Option<String>,
    language: Option<String>,
    duration: Option<f64>,
    words: Option<Vec<WireWord>>,
    segments: Option<Vec<WireSegment>>,
    usage: Option<WireUsage>,
    logprobs: Option<Vec<WireLogprob>>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireWord {
    word: Option<String>,
    start: Option<f64>,
    end: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct WireSegment {
    start: Option<f64>,
    end: Option<f64>,
    avg_logprob: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(rename = "type")]
    kind: Option<String>,
    seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct WireLogprob {
    logprob: Option<f64>,
}

/// Decodes the body of a transcription response (`json` or `verbose_json`).
///
/// The text is trimmed; words keep their times (words whose times are not valid durations
/// are left out); the span runs from the first word or segment to the last; the confidence
/// is the geometric mean of the token probabilities (`logprobs`, or the segments'
/// `avg_logprob`), when reported; the audio duration comes from `duration` or a
/// `usage` of type `duration`. Pure: a fuzz target calls it.
///
/// # Errors
/// [`SpeechError::Service`] (status 0) when the body is not a transcription (not JSON, no
/// `text`) or is an `{"error": …}` object, whose message it carries.
pub fn decode_transcription(body: &str) -> Result<Transcript, SpeechError> {
    let malformed = |why: &str| SpeechError::Service {
        status: 0,
        message: format!("the transcription response is malformed: {why}"),
    };
    let wire: WireTranscription =
        serde_json::from_str(body).map_err(|e| malformed(&e.to_string()))?;
    if let Some(error) = wire.error.filter(|e| !e.is_null()) {
        let message = error
            .pointer("/message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(SpeechError::Service {
            status: 0,
            message: cut(&message),
        });
    }
    let text = wire.text.ok_or_else(|| malformed("no text"))?;
    let mut transcript = Transcript::new(text.trim());
    let words: Vec<Word> = wire
        .words
        .unwrap_or_default()
        .into_iter()
        .filter_map(|w| {
            let text = w.word?.trim().to_owned();
            let start = secs(w.start?)?;
            let end = secs(w.end?)?.max(start);
            (!text.is_empty()).then(|| Word::new(text, start, end))
        })
        .collect();
    let segments = wire.segments.unwrap_or_default();
    let spans = words.iter().map(|w| (Some(w.start), Some(w.end))).chain(
        segments
            .iter()
            .map(|s| (s.start.and_then(secs), s.end.and_then(secs))),
    );
    let (mut start, mut end) = (None::<Duration>, None::<Duration>);
    for (s, e) in spans {
        if let Some(s) = s {
            start = Some(start.map_or(s, |old| old.min(s)));
        }
        if let Some(e) = e {
            end = Some(end.map_or(e, |old| old.max(e)));
        }
    }
    if let (Some(start), Some(end)) = (start, end) {
        transcript = transcript.with_span(start, end.max(start));
    }
    transcript = transcript.with_words(words);
    let logprobs: Vec<f64> = match wire.logprobs {
        Some(tokens) if !tokens.is_empty() => tokens.iter().filter_map(|t| t.logprob).collect(),
        _ => segments.iter().filter_map(|s| s.avg_logprob).collect(),
    };
    if !logprobs.is_empty() {
        #[expect(clippy::cast_precision_loss, reason = "a token count")]
        let mean = logprobs.iter().sum::<f64>() / logprobs.len() as f64;
        let confidence = mean.exp();
        if confidence.is_finite() {
            #[expect(clippy::cast_possible_truncation, reason = "a probability")]
            let confidence = confidence.clamp(0.0, 1.0) as f32;
            transcript = transcript.with_confidence(confidence);
        }
    }
    if let Some(language) = wire.language.filter(|l| !l.trim().is_empty()) {
        transcript = transcript.with_language(language.trim());
    }
    let billed = wire.duration.and_then(secs).or_else(|| {
        wire.usage
            .filter(|u| u.kind.as_deref() == Some("duration"))
            .and_then(|u| u.seconds)
            .and_then(secs)
    });
    if let Some(duration) = billed {
        transcript = transcript.with_audio_duration(duration);
    }
    Ok(transcript)
}

/// Seconds as a duration, when they are one (finite, not negative, not absurd).
fn secs(value: f64) -> Option<Duration> {
    if !(0.0..=1e9).contains(&value) {
        return None;
    }
    Duration::try_from_secs_f64(value).ok()
}

/// A message cut to the shared bound.
/// A vendor message cut to 4 KiB (on a character boundary). The caller scrubs the key and
/// cuts to the final length after: cutting first could leave a key's prefix behind.
fn cut(message: &str) -> String {
    message[..crate::client::char_floor(message, 4096)].to_owned()
}

// ---------------------------------------------------------------------------------------
// Synthesis
// ---------------------------------------------------------------------------------------

/// Configuration of an [`OpenAiTts`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OpenAiTtsConfig {
    /// Where the service is, its key, timeouts, retries and roots.
    pub connection: Connection,
    /// The model ([`DEFAULT_TTS_MODEL`]); [`SynthesisOptions::model`] overrides it.
    pub model: String,
    /// The voice ([`DEFAULT_VOICE`]); [`SynthesisOptions::voice`] overrides it.
    pub voice: String,
    /// The speaking rate (0.25 to 4.0), unless the options set one; the service's default
    /// (1.0) when neither does.
    pub speed: Option<f32>,
    /// How to speak (tone, accent, pace), for the models that take instructions (not the
    /// `tts-1` ones); the `instructions` extra option overrides it.
    pub instructions: Option<String>,
    /// The list price, per million characters.
    pub price: Option<SpeechPrice>,
    /// The instance name ("openai").
    pub id: String,
}

impl OpenAiTtsConfig {
    /// OpenAI itself, with `api_key`.
    pub fn new(api_key: ApiKey) -> Self {
        Self::compatible(Connection::new(DEFAULT_BASE_URL).with_api_key(api_key))
    }

    /// OpenAI with the key in [`API_KEY_ENV`]; `None` when it is unset.
    pub fn from_env() -> Option<Self> {
        ApiKey::from_env(API_KEY_ENV).map(Self::new)
    }

    /// An OpenAI-compatible server at `connection` (its base URL ends in `/v1`, like
    /// OpenAI's; the key is optional). It must answer `response_format: "pcm"` with raw
    /// 24 kHz PCM16, as OpenAI does.
    pub fn compatible(connection: Connection) -> Self {
        Self {
            connection,
            model: DEFAULT_TTS_MODEL.to_owned(),
            voice: DEFAULT_VOICE.to_owned(),
            speed: None,
            instructions: None,
            price: None,
            id: "openai".to_owned(),
        }
    }

    /// Sets the connection.
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

    /// Sets the voice.
    #[must_use]
    pub fn with_voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = voice.into();
        self
    }

    /// Sets the speaking rate.
    #[must_use]
    pub fn with_speed(mut self, speed: f32) -> Self {
        self.speed = Some(speed);
        self
    }

    /// Sets the instructions.
    #[must_use]
    pub fn with_instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    /// Sets the price (per million characters).
    #[must_use]
    pub fn with_price(mut self, price: SpeechPrice) -> Self {
        self.price = Some(price);
        self
    }

    /// Sets the instance name.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

/// OpenAI speech, `POST {base}/audio/speech`, streamed.
///
/// The service makes 24 kHz PCM16; [`formats`](TextToSpeech::formats) lists it first, then
/// PCM16 at 16, 8 and 48 kHz and 8 kHz mu-law and A-law, which the client makes from it
/// with [`Resampler`](crate::resample::Resampler) and [`g711`](crate::g711) (any mono PCM16,
/// mu-law or A-law rate is accepted).
///
/// Options read: [`voice`](SynthesisOptions::voice), [`model`](SynthesisOptions::model),
/// [`speed`](SynthesisOptions::speed), [`format`](SynthesisOptions::format), and the extra
/// key `instructions` (a string); other keys are ignored.
///
/// The first-byte timeout runs from the start of the request to the first byte of audio,
/// and failures up to then are retried; after it, a gap longer than the idle timeout ends
/// the stream with [`SpeechError::Timeout`], and a broken body with
/// [`SpeechError::Transport`]. Dropping the stream closes the connection.
#[derive(Debug, Clone)]
pub struct OpenAiTts {
    config: OpenAiTtsConfig,
    http: reqwest::Client,
}

impl OpenAiTts {
    /// A client for `config`.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] when an added root certificate is not usable.
    pub fn new(config: OpenAiTtsConfig) -> Result<Self, SpeechError> {
        let http = http::client(&config.connection)?;
        Ok(Self { config, http })
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiTtsConfig {
        &self.config
    }

    /// The JSON body of a speech request.
    fn body(&self, text: &str, options: &SynthesisOptions) -> Result<Value, SpeechError> {
        let model = options.model.as_deref().unwrap_or(&self.config.model);
        let voice = options.voice.as_deref().unwrap_or(&self.config.voice);
        let mut body = Map::new();
        body.insert("model".to_owned(), json!(model));
        body.insert("input".to_owned(), json!(text));
        body.insert("voice".to_owned(), json!(voice));
        body.insert("response_format".to_owned(), json!("pcm"));
        if let Some(speed) = options.speed.or(self.config.speed) {
            if !(0.25..=4.0).contains(&speed) {
                return Err(SpeechError::InvalidInput {
                    message: format!("the speaking rate {speed} is not within 0.25 and 4.0"),
                });
            }
            body.insert("speed".to_owned(), json!(speed));
        }
        let instructions = options
            .extra
            .get("instructions")
            .and_then(Value::as_str)
            .or(self.config.instructions.as_deref());
        if let Some(instructions) = instructions
            && !model.starts_with("tts-1")
        {
            body.insert("instructions".to_owned(), json!(instructions));
        }
        Ok(Value::Object(body))
    }

    async fn start(
        &self,
        text: &str,
        options: &SynthesisOptions,
    ) -> Result<AudioStream, SpeechError> {
        if text.trim().is_empty() {
            return Err(SpeechError::InvalidInput {
                message: "there is no text to speak".to_owned(),
            });
        }
        let chars = text.chars().count();
        if chars > MAX_INPUT_CHARS {
            return Err(SpeechError::InvalidInput {
                message: format!(
                    "the text has {chars} characters; one speech request takes at most {MAX_INPUT_CHARS}"
                ),
            });
        }
        let format = options.format.unwrap_or(AudioFormat::PCM16_24K_MONO);
        let framer = PcmFramer::new(SPEECH_SAMPLE_RATE, format)?;
        let body = self.body(text, options)?;
        let connection = &self.config.connection;
        let url = format!("{}/audio/speech", connection.base());
        let first_byte = connection.timeouts.first_byte;
        let (chunks, first) = connection
            .retry
            .run(|| async {
                let mut request = self.http.post(&url).json(&body);
                if let Some(key) = &connection.api_key {
                    request = request.bearer_auth(key.expose());
                }
                let deadline = crate::client::after(first_byte);
                let response = tokio::time::timeout_at(deadline, request.send())
                    .await
                    .map_err(|_| SpeechError::Timeout(first_byte))?
                    .map_err(|e| http::request_error(connection, e))?;
                if !response.status().is_success() {
                    return Err(http::error_within(connection, response, deadline).await);
                }
                let mut chunks: BoxStream<'static, reqwest::Result<Bytes>> =
                    response.bytes_stream().boxed();
                loop {
                    match tokio::time::timeout_at(deadline, chunks.next()).await {
                        Err(_) => return Err(SpeechError::Timeout(first_byte)),
                        Ok(None) => return Ok((chunks, None)),
                        Ok(Some(Err(e))) => {
                            return Err(transport(
                                "the speech response broke off",
                                e.without_url(),
                            ));
                        }
                        Ok(Some(Ok(chunk))) if chunk.is_empty() => {}
                        Ok(Some(Ok(chunk))) => return Ok((chunks, Some(chunk))),
                    }
                }
            })
            .await?;
        let state = Speech {
            chunks,
            first,
            framer,
            ready: VecDeque::new(),
            done: false,
            idle: connection.timeouts.idle,
            received: 0,
        };
        Ok(futures_util::stream::unfold(state, Speech::next).boxed())
    }
}

impl TextToSpeech for OpenAiTts {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn formats(&self) -> Vec<AudioFormat> {
        crate::synth::framed_formats(AudioFormat::PCM16_24K_MONO)
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>> {
        Box::pin(self.start(text, options))
    }

    fn price(&self) -> Option<SpeechPrice> {
        self.config.price
    }
}

/// The state of a speech body being turned into frames.
struct Speech {
    chunks: BoxStream<'static, reqwest::Result<Bytes>>,
    /// The first chunk, read before the stream was handed out.
    first: Option<Bytes>,
    framer: PcmFramer,
    ready: VecDeque<AudioFrame>,
    done: bool,
    idle: Duration,
    received: usize,
}

impl Speech {
    async fn next(mut self) -> Option<(Result<AudioFrame, SpeechError>, Self)> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some((Ok(frame), self));
            }
            if self.done {
                return None;
            }
            let chunk = match self.first.take() {
                Some(chunk) => Ok(Some(chunk)),
                None => match tokio::time::timeout(self.idle, self.chunks.next()).await {
                    Err(_) => Err(SpeechError::Timeout(self.idle)),
                    Ok(None) => Ok(None),
                    Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
                    Ok(Some(Err(e))) => {
                        Err(transport("the speech response broke off", e.without_url()))
                    }
                },
            };
            let mut frames = Vec::new();
            let step = match chunk {
                Ok(Some(chunk)) => {
                    self.received += chunk.len();
                    if self.received > MAX_SPEECH_BYTES {
                        Err(SpeechError::Service {
                            status: 0,
                            message: format!(
                                "the speech response is longer than {MAX_SPEECH_BYTES} bytes"
                            ),
                        })
                    } else {
                        self.framer.push(&chunk, &mut frames)
                    }
                }
                Ok(None) => {
                    self.done = true;
                    self.framer.finish(&mut frames)
                }
                Err(error) => Err(error),
            };
            if let Err(error) = step {
                self.done = true;
                self.ready.clear();
                return Some((Err(error), self));
            }
            self.ready.extend(frames);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_json_keeps_words_span_language_and_duration() {
        let body = r#"{"task":"transcribe","language":"english","duration":2.5,
            "text":" Hello there. ",
            "words":[{"word":"Hello","start":0.5,"end":0.9},{"word":"there.","start":1.0,"end":1.4},
                     {"word":"bad","start":-1,"end":2}],
            "segments":[{"id":0,"start":0.4,"end":1.5,"text":"Hello there.","avg_logprob":-0.1}]}"#;
        let t = decode_transcription(body).unwrap();
        assert_eq!(t.text, "Hello there.");
        assert_eq!(t.words.len(), 2);
        assert_eq!(t.words[1].start, Duration::from_millis(1000));
        assert_eq!(t.start, Some(Duration::from_millis(400)));
        assert_eq!(t.end, Some(Duration::from_millis(1500)));
        assert_eq!(t.language.as_deref(), Some("english"));
        assert_eq!(t.audio_duration, Some(Duration::from_millis(2500)));
        assert!(t.confidence.unwrap() > 0.9);
    }

    #[test]
    fn json_with_usage_and_errors() {
        let t = decode_transcription(r#"{"text":"hi","usage":{"type":"duration","seconds":3}}"#)
            .unwrap();
        assert_eq!(t.audio_duration, Some(Duration::from_secs(3)));
        let t = decode_transcription(r#"{"text":"hi","usage":{"type":"tokens","input_tokens":3}}"#)
            .unwrap();
        assert_eq!(t.audio_duration, None);
        let e = decode_transcription(r#"{"error":{"message":"nope","type":"x"}}"#).unwrap_err();
        assert!(matches!(e, SpeechError::Service { status: 0, ref message } if message == "nope"));
        assert!(decode_transcription("[]").is_err());
        assert!(decode_transcription(r#"{"words":null}"#).is_err());
    }

    #[test]
    fn form_fields_follow_the_model_and_options() {
        let options = TranscriptionOptions::new()
            .with_language("en-US")
            .with_prompt("PromptKit")
            .with_extra("temperature", 0.2)
            .with_extra("include", json!(["logprobs"]))
            .with_extra("model", "ignored")
            .with_extra("language", "ignored");
        let fields = form_fields("whisper-1", true, &options);
        let get = |n: &str| {
            fields
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("model"), ["whisper-1"]);
        assert_eq!(get("language"), ["en"]);
        assert_eq!(get("response_format"), ["verbose_json"]);
        assert_eq!(get("timestamp_granularities[]"), ["word"]);
        assert_eq!(get("temperature"), ["0.2"]);
        assert_eq!(get("include[]"), ["logprobs"]);
        let fields = form_fields(
            "gpt-4o-mini-transcribe",
            false,
            &TranscriptionOptions::new(),
        );
        assert_eq!(
            fields,
            vec![
                ("model".to_owned(), "gpt-4o-mini-transcribe".to_owned()),
                ("response_format".to_owned(), "json".to_owned())
            ]
        );
    }

    #[test]
    fn configs_never_print_the_key() {
        let config = OpenAiSttConfig::new(ApiKey::new("sk-very-secret"));
        assert!(!format!("{config:?}").contains("very-secret"));
        let config = OpenAiTtsConfig::new(ApiKey::new("sk-very-secret"));
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
