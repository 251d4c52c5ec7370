//! The speech conformance suite: the same scenarios against every STT and TTS client, each
//! against a [`SpeechServer`] speaking its vendor's protocol.
//!
//! An [`SttTarget`] or [`TtsTarget`] pairs a client with its server. [`run_stt`] and
//! [`run_tts`] play every scenario and return a [`Report`]:
//!
//! - **Recognisers**: a live session with partials, finals (text, times, words) and the
//!   vendor's endpointing; a finalize that flushes a turn and keeps the session open; a
//!   batch transcription; the wire form (the key in a header, never in a URL); and every
//!   error class: authentication, rate limiting with its `Retry-After`, a server error, the
//!   vendor's in-stream error, a connection dropped mid-stream, a stall past the idle
//!   timeout, a slow first result that is still within the timeout.
//! - **Synthesisers**: one-shot synthesis (exactly [`MS_PER_CHAR`] ms of audio per
//!   character, whole samples, the format asked for); for streaming clients a streamed
//!   answer in chunks with word timings, a flush, a cancel while the vendor still sends
//!   late audio of the cancelled context and another session on the same client goes on,
//!   and two sessions at once; the wire form; and every error class, with a first audio
//!   that comes too late.
//!
//! What a target must set up for the checks to hold: the key [`KEY`], no retries, an idle
//! timeout of [`IDLE_TIMEOUT`] and a first-byte timeout of [`FIRST_BYTE_TIMEOUT`].

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    AudioEncoding, AudioFormat, AudioFrame, SpeechError, SpeechToText, SttEvent, SynthesisOptions,
    TextToSpeech, TranscriptionOptions, TtsEvent, TtsSession,
};

use super::{Fault, MS_PER_CHAR, Script, Segment, SpeechServer, VENDOR_ERROR, Vendor, words_of};

/// The key targets must configure.
pub const KEY: &str = "conformance-key-7f3a9c";

/// The idle timeout targets must configure.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(300);

/// The first-byte timeout targets must configure.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_millis(800);

/// How long a scenario may take before it counts as hung.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(10);

/// A slow first result that is still within [`FIRST_BYTE_TIMEOUT`].
const SLOW: Duration = Duration::from_millis(200);

/// A first result too slow for [`FIRST_BYTE_TIMEOUT`] (and for a batch recogniser's,
/// which adds the 2 s of audio the suite sends).
const TOO_SLOW: Duration = Duration::from_secs(5);

/// An error class a scenario expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// 401: [`SpeechError::Auth`].
    Auth,
    /// 429 with `Retry-After: 7`: [`SpeechError::RateLimited`] with that delay.
    RateLimited,
    /// 500: [`SpeechError::Service`] with status 500, retryable.
    Server,
    /// The vendor's in-stream error: an error whose message has [`VENDOR_ERROR`].
    VendorError,
    /// A connection dropped mid-stream: a retryable [`SpeechError::Transport`].
    CloseMidStream,
    /// Nothing after the first result: [`SpeechError::Timeout`] of [`IDLE_TIMEOUT`].
    Stall,
    /// The first result comes late but within the first-byte timeout: success.
    SlowFirstResult,
    /// The first result comes after the first-byte timeout: [`SpeechError::Timeout`] of
    /// [`FIRST_BYTE_TIMEOUT`] (synthesisers) or more (batch recognisers, whose deadline
    /// grows with the audio).
    TooSlowFirstResult,
}

impl Failure {
    fn fault(self) -> Fault {
        match self {
            Self::Auth => Fault::Status {
                status: 401,
                retry_after_secs: None,
            },
            Self::RateLimited => Fault::Status {
                status: 429,
                retry_after_secs: Some(7),
            },
            Self::Server => Fault::Status {
                status: 500,
                retry_after_secs: None,
            },
            Self::VendorError => Fault::VendorError,
            Self::CloseMidStream => Fault::CloseMidStream,
            Self::Stall => Fault::Stall,
            Self::SlowFirstResult => Fault::SlowFirstChunk(SLOW),
            Self::TooSlowFirstResult => Fault::SlowFirstChunk(TOO_SLOW),
        }
    }

    /// Checks that `error` is of this class.
    fn check(self, error: &SpeechError) -> Result<(), String> {
        let ok = match self {
            Self::Auth => matches!(error, SpeechError::Auth { .. }),
            Self::RateLimited => matches!(
                error,
                SpeechError::RateLimited { retry_after: Some(wait), .. } if *wait == Duration::from_secs(7)
            ),
            Self::Server => {
                matches!(error, SpeechError::Service { status: 500, .. }) && error.is_retryable()
            }
            Self::VendorError => error.to_string().contains(VENDOR_ERROR),
            Self::CloseMidStream => {
                matches!(error, SpeechError::Transport { .. }) && error.is_retryable()
            }
            Self::Stall => matches!(error, SpeechError::Timeout(t) if *t == IDLE_TIMEOUT),
            // A batch recogniser may add the audio's length to its deadline.
            Self::TooSlowFirstResult => {
                matches!(error, SpeechError::Timeout(t) if *t >= FIRST_BYTE_TIMEOUT)
            }
            Self::SlowFirstResult => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self:?}, got {error:?}"))
        }
    }
}

/// A scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// A live transcription: partials, finals with times and words, endpointing.
    LiveTranscript,
    /// A finalize flushes the turn and the session goes on.
    Finalize,
    /// A batch transcription.
    Batch,
    /// One-shot synthesis.
    OneShot,
    /// A streamed answer with word timings.
    StreamedAnswer,
    /// A flush in the middle of an answer.
    Flush,
    /// A cancel while late audio arrives, with a second session going on.
    CancelWithLateAudio,
    /// Two sessions at once on one client.
    ConcurrentSessions,
    /// The key in a header, never in a URL.
    WireForm,
    /// An error class (streamed for streaming clients, else batch/one-shot).
    Error(Failure),
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(failure) => write!(f, "error {failure:?}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Whether `vendor` has an error message inside a stream: OpenAI's speech endpoints answer
/// with raw audio or one JSON document, so [`Failure::VendorError`] does not apply to them.
fn has_in_stream_errors(vendor: Vendor) -> bool {
    vendor != Vendor::OpenAi
}

/// The error scenarios of `vendor`, in order.
fn failures(vendor: Vendor) -> impl Iterator<Item = Scenario> {
    FAILURES
        .into_iter()
        .filter(move |f| *f != Failure::VendorError || has_in_stream_errors(vendor))
        .map(Scenario::Error)
}

/// The error scenarios, in order.
const FAILURES: [Failure; 7] = [
    Failure::Auth,
    Failure::RateLimited,
    Failure::Server,
    Failure::VendorError,
    Failure::CloseMidStream,
    Failure::Stall,
    Failure::SlowFirstResult,
];

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Each scenario with its outcome (`Err` says what failed).
    pub results: Vec<(Scenario, Result<(), String>)>,
}

impl Report {
    /// The scenarios that failed.
    pub fn failures(&self) -> Vec<&(Scenario, Result<(), String>)> {
        self.results.iter().filter(|(_, r)| r.is_err()).collect()
    }

    /// Panics, listing every failure, unless all scenarios passed.
    pub fn assert_passed(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{}: {} of {} speech conformance scenarios failed:\n{}",
            self.target,
            failures.len(),
            self.results.len(),
            failures
                .iter()
                .map(|(s, r)| format!("  {s}: {}", r.as_ref().err().map_or("", String::as_str)))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The base URL a client of `server` is configured with: the server's URL, with `/v1`
/// for OpenAI (whose base URLs include the version).
pub fn base_url(server: &SpeechServer) -> String {
    match server.vendor() {
        Vendor::OpenAi => format!("{}/v1", server.http_url()),
        _ => server.http_url(),
    }
}

// ---------------------------------------------------------------------------------------
// Recognisers
// ---------------------------------------------------------------------------------------

/// A recogniser against its vendor's server.
pub struct SttTarget {
    name: String,
    server: Arc<SpeechServer>,
    stt: Arc<dyn SpeechToText>,
    build: SttBuilder,
    streaming: bool,
}

impl fmt::Debug for SttTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SttTarget")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl SttTarget {
    /// Starts `vendor`'s server and builds the client with `build`, which receives the
    /// [`base_url`] to configure; `streaming` says whether it has live sessions.
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start(
        vendor: Vendor,
        streaming: bool,
        build: impl Fn(&str) -> Arc<dyn SpeechToText> + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let server = Arc::new(SpeechServer::start(vendor).await?);
        let stt = build(&base_url(&server));
        Ok(Self {
            name: format!("{vendor:?} ({})", stt.id()),
            server,
            stt,
            build: Arc::new(build),
            streaming,
        })
    }

    /// The server.
    pub fn server(&self) -> &SpeechServer {
        &self.server
    }
}

/// What builds a recogniser from a base URL.
type SttBuilder = Arc<dyn Fn(&str) -> Arc<dyn SpeechToText> + Send + Sync>;

impl SttTarget {
    fn fresh(&self) -> Self {
        Self {
            name: self.name.clone(),
            server: Arc::clone(&self.server),
            stt: (self.build)(&base_url(&self.server)),
            build: Arc::clone(&self.build),
            streaming: self.streaming,
        }
    }
}

/// Plays every recogniser scenario against `target`, each with a fresh client.
pub async fn run_stt(target: &SttTarget) -> Report {
    let mut scenarios = Vec::new();
    if target.streaming {
        scenarios.extend([Scenario::LiveTranscript, Scenario::Finalize]);
    }
    scenarios.push(Scenario::Batch);
    scenarios.push(Scenario::WireForm);
    scenarios.extend(failures(target.server.vendor()));
    if !target.streaming {
        scenarios.push(Scenario::Error(Failure::TooSlowFirstResult));
    }
    let mut results = Vec::new();
    for scenario in scenarios {
        // A fresh client per scenario: a client that keeps one socket for all its sessions
        // would otherwise never open the connection a scripted fault refuses.
        let fresh = target.fresh();
        let outcome = within_deadline(stt_scenario(&fresh, scenario)).await;
        results.push((scenario, outcome));
    }
    Report {
        target: target.name.clone(),
        results,
    }
}

async fn within_deadline(scenario: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(SCENARIO_DEADLINE, scenario)
        .await
        .unwrap_or_else(|_| Err(format!("hung for {SCENARIO_DEADLINE:?}")))
}

/// `duration` of 16 kHz PCM16 audio in 20 ms frames (a quiet tone: the servers script by
/// time, not by content).
fn audio(duration: Duration) -> Vec<AudioFrame> {
    let frames = duration.as_millis() / 20;
    let frame: Vec<u8> = (0..320_i16)
        .flat_map(|n| (n % 64 - 32).to_le_bytes())
        .collect();
    (0..frames)
        .map(|_| AudioFrame::new(frame.clone(), AudioFormat::PCM16_16K_MONO))
        .collect()
}

fn ms(duration: Duration) -> u128 {
    duration.as_millis()
}

/// Whether `a` and `b` are within 20 ms (vendors give times in seconds as floats).
fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= Duration::from_millis(20)
}

async fn stt_scenario(target: &SttTarget, scenario: Scenario) -> Result<(), String> {
    match scenario {
        Scenario::LiveTranscript => live_transcript(target).await,
        Scenario::Finalize => finalize(target).await,
        Scenario::Batch => {
            target.server.push(Script::transcript(vec![Segment::new(
                "batch words here",
                500,
                2000,
            )]));
            let transcript = target
                .stt
                .transcribe(&audio(Duration::from_secs(3)), &TranscriptionOptions::new())
                .await
                .map_err(|e| format!("transcribe: {e:?}"))?;
            if transcript.text.trim() != "batch words here" {
                return Err(format!("transcribed {:?}", transcript.text));
            }
            Ok(())
        }
        Scenario::WireForm => wire_form(&target.server),
        Scenario::Error(failure) => stt_failure(target, failure).await,
        other => Err(format!("{other} is not a recogniser scenario")),
    }
}

/// Sends `frames`, then `finish`es, and collects the events until the stream ends.
async fn live(
    target: &SttTarget,
    frames: &[AudioFrame],
) -> Result<Vec<Result<SttEvent, SpeechError>>, SpeechError> {
    let session = target
        .stt
        .open_stream(AudioFormat::PCM16_16K_MONO, &TranscriptionOptions::new())
        .await?;
    let sender = session.sender;
    let frames = frames.to_vec();
    let feeder = tokio::spawn(async move {
        for frame in frames {
            if sender.send(frame).await.is_err() {
                return sender;
            }
        }
        let _ = sender.finish().await;
        sender
    });
    let events: Vec<_> = session.events.collect().await;
    // Keep the sender alive until the events end: dropping it may close the session.
    drop(feeder.await);
    Ok(events)
}

async fn live_transcript(target: &SttTarget) -> Result<(), String> {
    target.server.push(Script::transcript(vec![
        Segment::new("hello there", 500, 1500),
        Segment::new("how are you", 2000, 3000),
    ]));
    let events = live(target, &audio(Duration::from_secs(4)))
        .await
        .map_err(|e| format!("open: {e:?}"))?;
    let mut partial_before_final = false;
    let mut finals = Vec::new();
    for event in &events {
        match event {
            Ok(SttEvent::Partial { transcript }) if finals.is_empty() => {
                partial_before_final |= !transcript.text.is_empty();
            }
            Ok(SttEvent::Final {
                transcript,
                speech_final,
                ..
            }) => finals.push((transcript.clone(), *speech_final)),
            Err(e) => return Err(format!("error event {e:?} in {events:?}")),
            _ => {}
        }
    }
    if !partial_before_final {
        return Err(format!("no partial before the first final: {events:?}"));
    }
    let texts: Vec<&str> = finals.iter().map(|(t, _)| t.text.trim()).collect();
    if texts != ["hello there", "how are you"] {
        return Err(format!("finals {texts:?}"));
    }
    let (first, speech_final) = &finals[0];
    if !speech_final {
        return Err("the first final did not carry speech_final".to_owned());
    }
    let span = first.start.zip(first.end);
    if !span.is_some_and(|(start, end)| {
        close(start, Duration::from_millis(500)) && close(end, Duration::from_millis(1500))
    }) {
        return Err(format!(
            "the first final spans {:?}..{:?}, expected 500..1500 ms",
            first.start, first.end
        ));
    }
    let words: Vec<(&str, u128, u128)> = first
        .words
        .iter()
        .map(|w| (w.text.as_str(), ms(w.start), ms(w.end)))
        .collect();
    let want = [("hello", 500, 1000), ("there", 1000, 1500)];
    if words.len() != 2
        || words
            .iter()
            .zip(want)
            .any(|((t, s, e), (wt, ws, we))| *t != wt || s.abs_diff(ws) > 20 || e.abs_diff(we) > 20)
    {
        return Err(format!("words {words:?}, expected {want:?}"));
    }
    Ok(())
}

async fn finalize(target: &SttTarget) -> Result<(), String> {
    target.server.push(Script::transcript(vec![
        Segment::new("first turn", 300, 1600).with_speech_final(false),
        Segment::new("second turn", 2000, 2800),
    ]));
    let session = target
        .stt
        .open_stream(AudioFormat::PCM16_16K_MONO, &TranscriptionOptions::new())
        .await
        .map_err(|e| format!("open: {e:?}"))?;
    let mut events = session.events;
    for frame in audio(Duration::from_secs(1)) {
        session
            .sender
            .send(frame)
            .await
            .map_err(|e| format!("send: {e:?}"))?;
    }
    session
        .sender
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e:?}"))?;
    let flushed = loop {
        match events.next().await {
            Some(Ok(SttEvent::Final {
                transcript,
                from_finalize,
                ..
            })) => break (transcript.text, from_finalize),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("error after finalize: {e:?}")),
            None => return Err("the session ended after a finalize".to_owned()),
        }
    };
    if flushed.0.trim() != "first turn" || !flushed.1 {
        return Err(format!(
            "after finalize: {flushed:?}, expected \"first turn\" from_finalize"
        ));
    }
    for frame in audio(Duration::from_secs(2)) {
        session
            .sender
            .send(frame)
            .await
            .map_err(|e| format!("send after finalize: {e:?}"))?;
    }
    session
        .sender
        .finish()
        .await
        .map_err(|e| format!("finish: {e:?}"))?;
    let rest: Vec<_> = events.collect().await;
    let second = rest.iter().any(|e| {
        matches!(e, Ok(SttEvent::Final { transcript, .. }) if transcript.text.trim() == "second turn")
    });
    if !second || rest.iter().any(Result::is_err) {
        return Err(format!("the second turn: {rest:?}"));
    }
    Ok(())
}

async fn stt_failure(target: &SttTarget, failure: Failure) -> Result<(), String> {
    let script = Script::transcript(vec![
        Segment::new("one two", 200, 700),
        Segment::new("three four", 1000, 1500),
    ])
    .with_fault(failure.fault());
    target.server.push(script);
    let outcome: Result<String, SpeechError> = if target.streaming {
        match live(target, &audio(Duration::from_secs(2))).await {
            Err(error) => Err(error),
            Ok(events) => {
                let (errors, text): (Vec<_>, Vec<_>) = events.into_iter().partition(Result::is_err);
                match errors.into_iter().next() {
                    Some(Err(error)) => Err(error),
                    _ => Ok(text
                        .into_iter()
                        .filter_map(|e| match e {
                            Ok(SttEvent::Final { transcript, .. }) => Some(transcript.text),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(" ")),
                }
            }
        }
    } else {
        target
            .stt
            .transcribe(&audio(Duration::from_secs(2)), &TranscriptionOptions::new())
            .await
            .map(|t| t.text)
    };
    match (failure, outcome) {
        (Failure::SlowFirstResult, Ok(text))
            if text.split_whitespace().eq(["one", "two", "three", "four"]) =>
        {
            Ok(())
        }
        (Failure::SlowFirstResult, other) => Err(format!("a slow first result: {other:?}")),
        (_, Ok(text)) => Err(format!("expected {failure:?}, got the transcript {text:?}")),
        (_, Err(error)) => failure.check(&error),
    }
}

fn wire_form(server: &SpeechServer) -> Result<(), String> {
    let requests = server.requests();
    if requests.is_empty() {
        return Err("the server received nothing".to_owned());
    }
    for request in &requests {
        if request.path.contains(KEY) || request.query.contains(KEY) {
            return Err(format!(
                "the key is in the URL {}?{}",
                request.path, request.query
            ));
        }
        if !request.headers.iter().any(|(_, v)| v.contains(KEY)) {
            return Err(format!("no header carried the key to {}", request.path));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Synthesisers
// ---------------------------------------------------------------------------------------

/// A synthesiser against its vendor's server.
pub struct TtsTarget {
    name: String,
    server: Arc<SpeechServer>,
    tts: Arc<dyn TextToSpeech>,
    build: TtsBuilder,
    streaming: bool,
    multiplexes: bool,
}

impl fmt::Debug for TtsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtsTarget")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl TtsTarget {
    /// Starts `vendor`'s server and builds the client with `build`, which receives the
    /// [`base_url`]; `streaming` says whether it has sessions, `multiplexes` whether its
    /// sessions share one connection.
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start(
        vendor: Vendor,
        streaming: bool,
        multiplexes: bool,
        build: impl Fn(&str) -> Arc<dyn TextToSpeech> + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let server = Arc::new(SpeechServer::start(vendor).await?);
        let tts = build(&base_url(&server));
        Ok(Self {
            name: format!("{vendor:?} ({})", tts.id()),
            server,
            tts,
            build: Arc::new(build),
            streaming,
            multiplexes,
        })
    }

    /// The server.
    pub fn server(&self) -> &SpeechServer {
        &self.server
    }
}

/// What builds a synthesiser from a base URL.
type TtsBuilder = Arc<dyn Fn(&str) -> Arc<dyn TextToSpeech> + Send + Sync>;

impl TtsTarget {
    fn fresh(&self) -> Self {
        Self {
            name: self.name.clone(),
            server: Arc::clone(&self.server),
            tts: (self.build)(&base_url(&self.server)),
            build: Arc::clone(&self.build),
            streaming: self.streaming,
            multiplexes: self.multiplexes,
        }
    }
}

/// Plays every synthesiser scenario against `target`, each with a fresh client.
pub async fn run_tts(target: &TtsTarget) -> Report {
    let mut scenarios = vec![Scenario::OneShot];
    if target.streaming {
        scenarios.extend([
            Scenario::StreamedAnswer,
            Scenario::Flush,
            Scenario::CancelWithLateAudio,
            Scenario::ConcurrentSessions,
        ]);
    }
    scenarios.push(Scenario::WireForm);
    scenarios.extend(failures(target.server.vendor()));
    scenarios.push(Scenario::Error(Failure::TooSlowFirstResult));
    let mut results = Vec::new();
    for scenario in scenarios {
        // A fresh client per scenario: a client that keeps one socket for all its sessions
        // would otherwise never open the connection a scripted fault refuses.
        let fresh = target.fresh();
        let outcome = within_deadline(tts_scenario(&fresh, scenario)).await;
        results.push((scenario, outcome));
    }
    Report {
        target: target.name.clone(),
        results,
    }
}

/// The format the suite asks for: the client's first PCM16 format.
fn tts_format(tts: &dyn TextToSpeech) -> AudioFormat {
    tts.formats()
        .into_iter()
        .find(|f| f.encoding == AudioEncoding::Pcm16)
        .unwrap_or(AudioFormat::PCM16_24K_MONO)
}

/// The audio of `frames` in samples, checking each frame is whole and in `format`.
fn samples(frames: &[AudioFrame], format: AudioFormat) -> Result<usize, String> {
    let mut total = 0;
    for frame in frames {
        if frame.format != format {
            return Err(format!(
                "a frame in {:?}, asked for {format:?}",
                frame.format
            ));
        }
        total += frame
            .samples()
            .ok_or_else(|| format!("a frame of {} bytes is not whole samples", frame.data.len()))?;
    }
    Ok(total)
}

/// Samples of `chars` characters of synthesised speech.
fn expected_samples(chars: usize, format: AudioFormat) -> usize {
    chars * usize::try_from(u64::from(format.sample_rate) * MS_PER_CHAR / 1000).unwrap_or(0)
}

/// Everything a session said.
#[derive(Debug, Default)]
struct Heard {
    audio: Vec<AudioFrame>,
    words: Vec<(String, Duration, Duration)>,
    flushed_after_samples: Vec<usize>,
    done: bool,
    error: Option<SpeechError>,
}

async fn drain(mut events: promptkit_core::TtsEventStream, format: AudioFormat) -> Heard {
    let mut heard = Heard::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(TtsEvent::Audio(frame)) => heard.audio.push(frame),
            Ok(TtsEvent::Words(words)) => heard
                .words
                .extend(words.into_iter().map(|w| (w.text, w.start, w.end))),
            Ok(TtsEvent::Flushed) => {
                let so_far = samples(&heard.audio, format).unwrap_or(0);
                heard.flushed_after_samples.push(so_far);
            }
            Ok(TtsEvent::Done) => heard.done = true,
            Ok(_) => {}
            Err(error) => {
                heard.error = Some(error);
                break;
            }
        }
    }
    heard
}

async fn open(target: &TtsTarget, format: AudioFormat) -> Result<TtsSession, String> {
    target
        .tts
        .open_stream(&SynthesisOptions::new().with_format(format))
        .await
        .map_err(|e| format!("open: {e:?}"))
}

async fn tts_scenario(target: &TtsTarget, scenario: Scenario) -> Result<(), String> {
    let format = tts_format(target.tts.as_ref());
    match scenario {
        Scenario::OneShot => {
            let text = "Hello there, world.";
            let frames = one_shot(target, text, format)
                .await
                .map_err(|e| format!("synthesize: {e:?}"))?;
            let got = samples(&frames, format)?;
            let want = expected_samples(text.chars().count(), format);
            if got == want {
                Ok(())
            } else {
                Err(format!("{got} samples, expected {want}"))
            }
        }
        Scenario::StreamedAnswer => {
            let chunks = ["Hello ", "there. ", "How are you?"];
            let session = open(target, format).await?;
            for chunk in chunks {
                session
                    .sender
                    .send(chunk.to_owned())
                    .await
                    .map_err(|e| format!("send: {e:?}"))?;
            }
            session
                .sender
                .finish()
                .await
                .map_err(|e| format!("finish: {e:?}"))?;
            let heard = drain(session.events, format).await;
            check_answer(&heard, &chunks.concat(), format, true)
        }
        Scenario::Flush => {
            let session = open(target, format).await?;
            session
                .sender
                .send("One. ".to_owned())
                .await
                .map_err(|e| format!("send: {e:?}"))?;
            session
                .sender
                .flush()
                .await
                .map_err(|e| format!("flush: {e:?}"))?;
            let mut events = session.events;
            let mut before_flush = Vec::new();
            loop {
                match events.next().await {
                    Some(Ok(TtsEvent::Audio(frame))) => before_flush.push(frame),
                    Some(Ok(TtsEvent::Flushed)) => break,
                    Some(Ok(_)) => {}
                    other => return Err(format!("waiting for Flushed: {other:?}")),
                }
            }
            let flushed = samples(&before_flush, format)?;
            if flushed != expected_samples(5, format) {
                return Err(format!(
                    "{flushed} samples before Flushed, expected those of \"One. \""
                ));
            }
            session
                .sender
                .send("Two.".to_owned())
                .await
                .map_err(|e| format!("send: {e:?}"))?;
            session
                .sender
                .finish()
                .await
                .map_err(|e| format!("finish: {e:?}"))?;
            let rest = drain(events, format).await;
            let after = samples(&rest.audio, format)?;
            if after != expected_samples(4, format) || !rest.done || rest.error.is_some() {
                return Err(format!("after the flush: {after} samples, {rest:?}"));
            }
            Ok(())
        }
        Scenario::CancelWithLateAudio => cancel_with_late_audio(target, format).await,
        Scenario::ConcurrentSessions => {
            let before = target.server.requests().len();
            let a = open(target, format).await?;
            let b = open(target, format).await?;
            let texts = ["The first answer.", "And the second one, a bit longer."];
            a.sender
                .send(texts[0].to_owned())
                .await
                .map_err(|e| format!("send a: {e:?}"))?;
            b.sender
                .send(texts[1].to_owned())
                .await
                .map_err(|e| format!("send b: {e:?}"))?;
            a.sender
                .finish()
                .await
                .map_err(|e| format!("finish a: {e:?}"))?;
            b.sender
                .finish()
                .await
                .map_err(|e| format!("finish b: {e:?}"))?;
            let (heard_a, heard_b) = tokio::join!(drain(a.events, format), drain(b.events, format));
            check_answer(&heard_a, texts[0], format, false)?;
            check_answer(&heard_b, texts[1], format, false)?;
            let connections = target.server.requests().len() - before;
            if target.multiplexes && connections > 1 {
                return Err(format!(
                    "{connections} connections for two sessions of one client"
                ));
            }
            Ok(())
        }
        Scenario::WireForm => wire_form(&target.server),
        Scenario::Error(failure) => tts_failure(target, failure, format).await,
        other => Err(format!("{other} is not a synthesiser scenario")),
    }
}

async fn one_shot(
    target: &TtsTarget,
    text: &str,
    format: AudioFormat,
) -> Result<Vec<AudioFrame>, SpeechError> {
    let mut stream = target
        .tts
        .synthesize(text, &SynthesisOptions::new().with_format(format))
        .await?;
    let mut frames = Vec::new();
    while let Some(frame) = stream.next().await {
        frames.push(frame?);
    }
    Ok(frames)
}

fn check_answer(heard: &Heard, text: &str, format: AudioFormat, words: bool) -> Result<(), String> {
    if let Some(error) = &heard.error {
        return Err(format!("error {error:?}"));
    }
    if !heard.done {
        return Err("no Done before the stream ended".to_owned());
    }
    let got = samples(&heard.audio, format)?;
    let want = expected_samples(text.chars().count(), format);
    if got != want {
        return Err(format!("{got} samples for {text:?}, expected {want}"));
    }
    if words {
        let want = words_of(text, 0);
        let same = heard.words.len() == want.len()
            && heard
                .words
                .iter()
                .zip(&want)
                .all(|((t, s, e), (wt, ws, we))| {
                    t.trim_matches(|c: char| !c.is_alphanumeric())
                        == wt.trim_matches(|c: char| !c.is_alphanumeric())
                        && close(*s, *ws)
                        && close(*e, *we)
                });
        if !same {
            return Err(format!("words {:?}, expected {want:?}", heard.words));
        }
    }
    Ok(())
}

async fn cancel_with_late_audio(target: &TtsTarget, format: AudioFormat) -> Result<(), String> {
    target
        .server
        .push(Script::fault(Fault::LateAudioAfterCancel));
    let cancelled = open(target, format).await?;
    let other = open(target, format).await?;
    cancelled
        .sender
        .send("This answer is long enough to be interrupted part way. ".to_owned())
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    cancelled
        .sender
        .flush()
        .await
        .map_err(|e| format!("flush: {e:?}"))?;
    let mut events = cancelled.events;
    match events.next().await {
        Some(Ok(TtsEvent::Audio(_) | TtsEvent::Words(_))) => {}
        other => return Err(format!("waiting for the first audio: {other:?}")),
    }
    cancelled
        .sender
        .cancel()
        .await
        .map_err(|e| format!("cancel: {e:?}"))?;
    cancelled
        .sender
        .cancel()
        .await
        .map_err(|e| format!("a second cancel: {e:?}"))?;
    if let Some(event) = events.next().await {
        return Err(format!("after cancel the stream gave {event:?}"));
    }
    let text = "The next answer goes on.";
    other
        .sender
        .send(text.to_owned())
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    other
        .sender
        .finish()
        .await
        .map_err(|e| format!("finish: {e:?}"))?;
    let heard = drain(other.events, format).await;
    check_answer(&heard, text, format, false).map_err(|e| format!("the other session: {e}"))
}

async fn tts_failure(
    target: &TtsTarget,
    failure: Failure,
    format: AudioFormat,
) -> Result<(), String> {
    target.server.push(Script::fault(failure.fault()));
    let text = "Some words to speak, and then some more words.";
    let outcome: Result<usize, SpeechError> = if target.streaming {
        match target
            .tts
            .open_stream(&SynthesisOptions::new().with_format(format))
            .await
        {
            Err(error) => Err(error),
            Ok(session) => {
                let sent = async {
                    session.sender.send(text.to_owned()).await?;
                    session.sender.finish().await
                }
                .await;
                let heard = drain(session.events, format).await;
                match (sent, heard.error) {
                    (_, Some(error)) | (Err(error), None) => Err(error),
                    (Ok(()), None) => Ok(samples(&heard.audio, format).unwrap_or(0)),
                }
            }
        }
    } else {
        one_shot(target, text, format)
            .await
            .map(|frames| samples(&frames, format).unwrap_or(0))
    };
    let want = expected_samples(text.chars().count(), format);
    match (failure, outcome) {
        (Failure::SlowFirstResult, Ok(got)) if got == want => Ok(()),
        (Failure::SlowFirstResult, other) => Err(format!(
            "a slow first audio: {other:?}, expected {want} samples"
        )),
        (_, Ok(got)) => Err(format!("expected {failure:?}, got {got} samples")),
        (_, Err(error)) => failure.check(&error),
    }
}
