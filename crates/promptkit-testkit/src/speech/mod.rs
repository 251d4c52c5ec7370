//! Local servers speaking the speech vendors' protocols, for tests of the STT and TTS
//! clients, and the speech conformance suite.
//!
//! A [`SpeechServer`] listens on 127.0.0.1, over plain TCP or TLS with a certificate made
//! at start ([`SpeechServer::start_tls`]), and answers one vendor's protocol ([`Vendor`]).
//! What it says is scripted:
//!
//! - **Recognisers** (Deepgram live, OpenAI transcriptions) transcribe by script, in audio
//!   time: each [`Segment`] of the next [`Script`] is heard between its `start` and `end`
//!   on the session's audio clock (the duration of the audio received, from the byte count
//!   and the format the client declared). A partial with the first half of its words goes
//!   out once the audio reaches the segment's middle, its final once the audio reaches its
//!   end; `Finalize` flushes what was heard so far as finals, the end of the stream flushes
//!   the rest. A batch upload is answered with every segment whose start lies within it.
//! - **Synthesisers** (Cartesia, ElevenLabs, OpenAI speech) speak deterministically:
//!   [`MS_PER_CHAR`] milliseconds of a tone per character of text, at the format the client
//!   asked for, with word timings that follow ([`words_of`]), so a test can check durations
//!   and timings exactly.
//! - **Faults** ([`Fault`]) come with a script: a refused handshake or an HTTP error status,
//!   the vendor's own error message in the stream, a connection closed mid-stream, a slow
//!   first chunk, a stall, audio of a cancelled context sent late.
//!
//! Every connection and request is recorded ([`SpeechServer::requests`]) with its path,
//! query, headers and messages, so a test can check the client's wire form (and that no
//! key is in a URL).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub mod conformance;

/// Milliseconds of audio the synthesisers make per character of text.
pub const MS_PER_CHAR: u64 = 10;

/// The protocol a [`SpeechServer`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Vendor {
    /// OpenAI `/v1/audio/transcriptions` and `/v1/audio/speech` (also what
    /// OpenAI-compatible local servers speak).
    OpenAi,
    /// Deepgram live `/v1/listen` over WebSocket, and its batch `POST /v1/listen`.
    Deepgram,
    /// Cartesia `/tts/websocket`.
    Cartesia,
    /// ElevenLabs `/v1/text-to-speech/{voice}/multi-stream-input` (and `stream-input`).
    ElevenLabs,
}

/// One segment of scripted speech: its text, heard between `start` and `end` of the
/// session's audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The words.
    pub text: String,
    /// Where the segment begins on the session's audio clock.
    pub start: Duration,
    /// Where it ends.
    pub end: Duration,
    /// Whether the vendor's endpointing ends the utterance after it (Deepgram
    /// `speech_final`, followed by `UtteranceEnd` when the client asked for it).
    pub speech_final: bool,
}

impl Segment {
    /// A segment heard from `start_ms` to `end_ms`, ending the utterance.
    pub fn new(text: &str, start_ms: u64, end_ms: u64) -> Self {
        Self {
            text: text.to_owned(),
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(end_ms),
            speech_final: true,
        }
    }

    /// Sets whether the utterance ends after this segment.
    #[must_use]
    pub fn with_speech_final(mut self, speech_final: bool) -> Self {
        self.speech_final = speech_final;
        self
    }

    /// The segment's words with their times, spread evenly over it.
    pub fn words(&self) -> Vec<(String, Duration, Duration)> {
        let words: Vec<&str> = self.text.split_whitespace().collect();
        let span = self.end.saturating_sub(self.start);
        let count = u32::try_from(words.len().max(1)).unwrap_or(u32::MAX);
        let step = span / count;
        words
            .iter()
            .zip(0_u32..)
            .map(|(word, i)| {
                (
                    (*word).to_owned(),
                    self.start + step * i,
                    self.start + step * (i + 1),
                )
            })
            .collect()
    }
}

/// What goes wrong, for one connection or request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// The handshake or request is refused with `status` and the vendor's error body;
    /// `retry_after_secs` goes in a `Retry-After` header.
    Status {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// After the first result (a transcript, an audio chunk), the vendor's own error
    /// message in the stream, with [`VENDOR_ERROR`] as its text (an HTTP body that is cut
    /// short for the HTTP vendors).
    VendorError,
    /// After the first result, the connection is dropped without a close frame.
    CloseMidStream,
    /// The first result waits this long.
    SlowFirstChunk(Duration),
    /// After the first result, nothing more is sent; the connection stays open.
    Stall,
    /// Synthesisers: after a cancel, audio of the cancelled context still arrives (what a
    /// reused vendor socket does), followed by its `done`.
    LateAudioAfterCancel,
}

/// The vendor's message of a [`Fault::VendorError`].
pub const VENDOR_ERROR: &str = "The speech engine hit an internal error.";

/// What the next connection or request does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Script {
    /// What a recogniser hears (empty for synthesisers, which speak deterministically).
    pub segments: Vec<Segment>,
    /// What goes wrong, if anything.
    pub fault: Option<Fault>,
}

impl Script {
    /// A script of `segments` without a fault.
    pub fn transcript(segments: Vec<Segment>) -> Self {
        Self {
            segments,
            fault: None,
        }
    }

    /// A script with `fault` only.
    pub fn fault(fault: Fault) -> Self {
        Self {
            segments: Vec::new(),
            fault: Some(fault),
        }
    }

    /// Adds a fault.
    #[must_use]
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }
}

/// One message of a recorded connection.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedMessage {
    /// A text WebSocket message, or an HTTP request's JSON body.
    Text(String),
    /// A binary WebSocket message (or a multipart upload's file): its length.
    Binary(usize),
}

/// One connection or request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The method (`GET` for a WebSocket handshake).
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// What the client sent, in order.
    pub messages: Vec<RecordedMessage>,
    /// The connection has ended (a WebSocket closed or dropped by either side), for the
    /// servers that track it.
    pub closed: bool,
}

impl Recorded {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name` (the first, percent-decoding not applied).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The text messages parsed as JSON (those that parse).
    pub fn json_messages(&self) -> Vec<serde_json::Value> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                RecordedMessage::Text(text) => serde_json::from_str(text).ok(),
                RecordedMessage::Binary(_) => None,
            })
            .collect()
    }

    /// The bytes of binary messages.
    pub fn binary_bytes(&self) -> usize {
        self.messages
            .iter()
            .map(|m| match m {
                RecordedMessage::Binary(n) => *n,
                RecordedMessage::Text(_) => 0,
            })
            .sum()
    }
}

/// State shared by a server's handlers.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    scripts: Mutex<VecDeque<Script>>,
    log: Mutex<Vec<Recorded>>,
}

impl Shared {
    /// The next script (the default script, no segments and no fault, when none is queued).
    pub(crate) fn next_script(&self) -> Script {
        self.scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or_default()
    }

    /// Records a new connection or request; returns its index for [`Shared::message`].
    pub(crate) fn record(&self, parts: &axum::http::request::Parts) -> usize {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            messages: Vec::new(),
            closed: false,
        });
        log.len() - 1
    }

    /// Marks recorded connection `index` as ended.
    pub(crate) fn closed(&self, index: usize) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(recorded) = log.get_mut(index) {
            recorded.closed = true;
        }
    }

    /// Appends a message to recorded connection `index`.
    pub(crate) fn message(&self, index: usize, message: RecordedMessage) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(recorded) = log.get_mut(index) {
            recorded.messages.push(message);
        }
    }
}

/// A local server speaking one speech vendor's protocol.
pub struct SpeechServer {
    vendor: Vendor,
    addr: SocketAddr,
    certificate: Option<Vec<u8>>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for SpeechServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpeechServer")
            .field("vendor", &self.vendor)
            .field("addr", &self.addr)
            .field("tls", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for SpeechServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SpeechServer {
    /// Starts a plain-TCP server on 127.0.0.1.
    ///
    /// # Errors
    /// When it cannot listen.
    pub async fn start(vendor: Vendor) -> io::Result<Self> {
        Self::listen(vendor, None).await
    }

    /// Starts a TLS server on 127.0.0.1 with a self-signed certificate for `127.0.0.1`
    /// and `localhost`; [`certificate_der`](Self::certificate_der) is what a client must
    /// trust.
    ///
    /// # Errors
    /// When it cannot listen or make the certificate.
    pub async fn start_tls(vendor: Vendor) -> io::Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .map_err(io::Error::other)?;
        let der = certified.cert.der().to_vec();
        let key = rustls_key(certified.signing_key.serialize_der());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut server = Self::listen(vendor, Some(acceptor)).await?;
        server.certificate = Some(der);
        Ok(server)
    }

    async fn listen(vendor: Vendor, tls: Option<tokio_rustls::TlsAcceptor>) -> io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let router = routes(vendor, shared.clone());
        let task = tokio::spawn(accept_loop(listener, tls, router));
        Ok(Self {
            vendor,
            addr,
            certificate: None,
            shared,
            task,
        })
    }

    /// The vendor.
    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL for HTTP requests (`http://127.0.0.1:port` or `https://…`).
    pub fn http_url(&self) -> String {
        let scheme = if self.certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The base URL for WebSocket connections (`ws://127.0.0.1:port` or `wss://…`).
    pub fn ws_url(&self) -> String {
        let scheme = if self.certificate.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The TLS server's certificate, DER-encoded (`None` for a plain server).
    pub fn certificate_der(&self) -> Option<&[u8]> {
        self.certificate.as_deref()
    }

    /// Queues a script for the next connection or request.
    pub fn push(&self, script: Script) {
        self.shared
            .scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(script);
    }

    /// Every connection and request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn rustls_key(der: Vec<u8>) -> tokio_rustls::rustls::pki_types::PrivateKeyDer<'static> {
    tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(der.into())
}

fn routes(vendor: Vendor, shared: Arc<Shared>) -> Router {
    match vendor {
        Vendor::OpenAi => openai::routes(shared),
        Vendor::Deepgram => deepgram::routes(shared),
        Vendor::Cartesia => cartesia::routes(shared),
        Vendor::ElevenLabs => elevenlabs::routes(shared),
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                }
            }
        });
    }
}

/// `chars` characters of speech: [`MS_PER_CHAR`] ms each of a 440 Hz tone, PCM16 little
/// endian mono at `sample_rate`.
pub fn synth_pcm16(chars: usize, sample_rate: u32) -> Vec<u8> {
    let samples = usize::try_from(u64::from(sample_rate) * MS_PER_CHAR / 1000).unwrap_or(0) * chars;
    let step = std::f32::consts::TAU * 440.0 / sample_rate as f32;
    (0..samples)
        .flat_map(|n| {
            #[expect(clippy::cast_possible_truncation, reason = "an amplitude within i16")]
            let sample = ((n as f32 * step).sin() * 8000.0) as i16;
            sample.to_le_bytes()
        })
        .collect()
}

/// The words of `text` with their times in synthesised audio, when `text` starts
/// `offset_chars` characters into the session: each character is [`MS_PER_CHAR`] ms.
pub fn words_of(text: &str, offset_chars: usize) -> Vec<(String, Duration, Duration)> {
    let mut words = Vec::new();
    let mut start = None;
    let mut word = String::new();
    let at = |i: usize| Duration::from_millis(MS_PER_CHAR * (offset_chars + i) as u64);
    let mut count = 0;
    for (i, c) in text.chars().enumerate() {
        count = i + 1;
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push((std::mem::take(&mut word), at(s), at(i)));
            }
        } else {
            start.get_or_insert(i);
            word.push(c);
        }
    }
    if let Some(s) = start {
        words.push((word, at(s), at(count)));
    }
    words
}

/// The audio clock of a recogniser's session: how much audio the bytes received so far
/// hold, for the format the client declared.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AudioClock {
    bytes_per_second: u64,
    bytes: u64,
}

impl AudioClock {
    /// A clock for `sample_rate` Hz, `channels` channels of `bytes_per_sample` bytes.
    pub(crate) fn new(sample_rate: u32, channels: u16, bytes_per_sample: u16) -> Self {
        Self {
            bytes_per_second: (u64::from(sample_rate)
                * u64::from(channels)
                * u64::from(bytes_per_sample))
            .max(1),
            bytes: 0,
        }
    }

    /// Adds `len` received bytes; returns the new position.
    pub(crate) fn advance(&mut self, len: usize) -> Duration {
        self.bytes += len as u64;
        self.now()
    }

    /// The position.
    pub(crate) fn now(&self) -> Duration {
        Duration::from_micros(self.bytes * 1_000_000 / self.bytes_per_second)
    }
}

/// What a recogniser's script has produced so far, advanced by the audio clock: the shared
/// logic of the Deepgram and OpenAI servers.
#[derive(Debug)]
pub(crate) struct Transcriber {
    segments: Vec<Segment>,
    /// Segments whose partial went out.
    partial_sent: usize,
    /// Segments whose final went out.
    final_sent: usize,
}

/// One thing a [`Transcriber`] says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Heard {
    /// A partial of segment `index`: its first half of words.
    Partial(usize),
    /// The final of segment `index`; `flushed` when a finalize or the end of audio forced it.
    Final { index: usize, flushed: bool },
}

impl Transcriber {
    pub(crate) fn new(segments: Vec<Segment>) -> Self {
        Self {
            segments,
            partial_sent: 0,
            final_sent: 0,
        }
    }

    /// The segments.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// What the audio up to `now` makes the recogniser say.
    pub(crate) fn advance(&mut self, now: Duration) -> Vec<Heard> {
        let mut heard = Vec::new();
        while let Some(segment) = self.segments.get(self.final_sent) {
            let middle = segment.start + (segment.end.saturating_sub(segment.start)) / 2;
            if self.partial_sent == self.final_sent && now >= middle {
                self.partial_sent += 1;
                heard.push(Heard::Partial(self.final_sent));
            }
            if now >= segment.end {
                if self.partial_sent == self.final_sent {
                    self.partial_sent += 1;
                }
                heard.push(Heard::Final {
                    index: self.final_sent,
                    flushed: false,
                });
                self.final_sent += 1;
            } else {
                break;
            }
        }
        heard
    }

    /// A finalize at `now`: the finals of segments that began before `now` and have not
    /// been sent.
    pub(crate) fn flush(&mut self, now: Duration) -> Vec<Heard> {
        let mut heard = Vec::new();
        while let Some(segment) = self.segments.get(self.final_sent) {
            if segment.start >= now {
                break;
            }
            heard.push(Heard::Final {
                index: self.final_sent,
                flushed: true,
            });
            self.final_sent += 1;
            self.partial_sent = self.partial_sent.max(self.final_sent);
        }
        heard
    }
}

mod cartesia;
mod deepgram;
mod elevenlabs;
mod openai;
mod synth;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_the_characters() {
        let words = words_of("Hi there", 5);
        assert_eq!(
            words,
            vec![
                (
                    "Hi".to_owned(),
                    Duration::from_millis(50),
                    Duration::from_millis(70)
                ),
                (
                    "there".to_owned(),
                    Duration::from_millis(80),
                    Duration::from_millis(130)
                ),
            ]
        );
        assert_eq!(synth_pcm16(3, 16_000).len(), 3 * 160 * 2);
    }

    #[test]
    fn the_transcriber_follows_the_audio_clock() {
        let mut t = Transcriber::new(vec![
            Segment::new("hello there", 500, 1500),
            Segment::new("how are you", 2000, 3000),
        ]);
        assert!(t.advance(Duration::from_millis(900)).is_empty());
        assert_eq!(
            t.advance(Duration::from_millis(1000)),
            vec![Heard::Partial(0)]
        );
        assert_eq!(
            t.advance(Duration::from_millis(2600)),
            vec![
                Heard::Final {
                    index: 0,
                    flushed: false
                },
                Heard::Partial(1)
            ]
        );
        assert_eq!(
            t.flush(Duration::from_millis(2600)),
            vec![Heard::Final {
                index: 1,
                flushed: true
            }]
        );
        assert!(t.flush(Duration::from_secs(10)).is_empty());
        let mut clock = AudioClock::new(16_000, 1, 2);
        assert_eq!(clock.advance(32_000), Duration::from_secs(1));
    }
}
