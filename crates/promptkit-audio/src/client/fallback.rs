//! Fallback across speech vendors: when one fails before its first result, the next takes
//! over, and the caller does not notice.
//!
//! - [`SttFallback`]: a batch transcription goes to the next recogniser when one fails;
//!   a live session that fails before its first event is reopened on the next recogniser
//!   and the audio sent so far is replayed into it (at most [`STT_REPLAY_LIMIT`] of it).
//! - [`TtsFallback`]: a one-shot synthesis that fails before its first audio goes to the
//!   next synthesiser; a streaming session that fails before its first audio is reopened
//!   on the next one and the text sent so far (with its flushes and its finish) is replayed.
//!
//! Once a result has come back, an error is final: the user already heard or said
//! something, and replaying would repeat it. Errors in the caller's input
//! ([`SpeechError::InvalidInput`], [`SpeechError::EmptyAudio`]) are final at once, since
//! every vendor would reject them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    AudioFormat, AudioFrame, AudioSender, AudioStream, BoxFuture, SpeechError, SpeechPrice,
    SpeechToText, SttEvent, SttSession, SynthesisOptions, TextSender, TextToSpeech, Transcript,
    TranscriptStream, TranscriptionOptions, TtsEvent, TtsEventStream, TtsSession,
};
use tokio::sync::Mutex;

/// The most audio an [`SttFallback`] session keeps for a replay; a session that fails
/// after more audio than this and before any event is not reopened.
pub const STT_REPLAY_LIMIT: Duration = Duration::from_secs(30);

/// Whether the next vendor may do better than one that failed with `error`.
fn falls_over(error: &SpeechError) -> bool {
    !matches!(
        error,
        SpeechError::InvalidInput { .. } | SpeechError::EmptyAudio | SpeechError::Closed
    )
}

fn no_services() -> SpeechError {
    SpeechError::InvalidInput {
        message: "a speech fallback needs at least one service".to_owned(),
    }
}

fn fallback_id(ids: impl Iterator<Item = String>) -> String {
    format!("fallback({})", ids.collect::<Vec<_>>().join(","))
}

// ---------------------------------------------------------------------------------------
// Speech-to-text
// ---------------------------------------------------------------------------------------

/// Recognisers tried in order. A batch transcription goes to the next recogniser when one
/// fails; a live session that fails before its first event is reopened on the next one
/// and the audio sent so far is replayed into it (at most [`STT_REPLAY_LIMIT`] of it).
/// After a first event an error is final; errors in the caller's input are final at once.
pub struct SttFallback {
    id: String,
    services: Arc<[Arc<dyn SpeechToText>]>,
    /// The service that served last, for [`price`](SpeechToText::price).
    last: Arc<AtomicUsize>,
}

impl fmt::Debug for SttFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SttFallback")
            .field("id", &self.id)
            .field("services", &self.services)
            .finish()
    }
}

impl SttFallback {
    /// Tries `services` in order.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] when `services` is empty.
    pub fn new(services: Vec<Arc<dyn SpeechToText>>) -> Result<Self, SpeechError> {
        if services.is_empty() {
            return Err(no_services());
        }
        Ok(Self {
            id: fallback_id(services.iter().map(|s| s.id().to_owned())),
            services: services.into(),
            last: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl SpeechToText for SttFallback {
    fn id(&self) -> &str {
        &self.id
    }

    /// The first recogniser's formats; a later one that does not take the format the
    /// caller chose is skipped.
    fn formats(&self) -> Vec<AudioFormat> {
        self.services[0].formats()
    }

    /// The price of the recogniser that served last.
    fn price(&self) -> Option<SpeechPrice> {
        self.services[self.last.load(Ordering::Relaxed)].price()
    }

    fn transcribe<'a>(
        &'a self,
        audio: &'a [AudioFrame],
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(async move {
            let mut last_error = None;
            for (index, service) in self.services.iter().enumerate() {
                match service.transcribe(audio, options).await {
                    Ok(transcript) => {
                        self.last.store(index, Ordering::Relaxed);
                        return Ok(transcript);
                    }
                    Err(error) if falls_over(&error) => {
                        tracing::warn!(service = service.id(), %error, "transcription failed, trying the next recogniser");
                        last_error = Some(error);
                    }
                    Err(error) => return Err(error),
                }
            }
            Err(last_error.unwrap_or_else(no_services))
        })
    }

    fn open_stream<'a>(
        &'a self,
        format: AudioFormat,
        options: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<SttSession, SpeechError>> {
        Box::pin(async move {
            let (index, session) = open_stt(&self.services, 0, format, options).await?;
            self.last.store(index, Ordering::Relaxed);
            let shared = Arc::new(SttShared {
                committed: AtomicBool::new(false),
                inner: Mutex::new(SttInner {
                    sender: Arc::from(session.sender),
                    replay: Some(Vec::new()),
                    replay_audio: Duration::ZERO,
                }),
            });
            let state = SttStreamState {
                shared: shared.clone(),
                services: self.services.clone(),
                index,
                format,
                options: options.clone(),
                events: session.events,
                last: self.last.clone(),
                done: false,
            };
            Ok(SttSession {
                sender: Box::new(SttFallbackSender { shared }),
                events: Box::pin(futures_util::stream::unfold(state, next_stt_event)),
            })
        })
    }
}

/// Opens a session on the first service from `from` that opens one.
async fn open_stt(
    services: &[Arc<dyn SpeechToText>],
    from: usize,
    format: AudioFormat,
    options: &TranscriptionOptions,
) -> Result<(usize, SttSession), SpeechError> {
    let mut last_error = None;
    for (index, service) in services.iter().enumerate().skip(from) {
        if !service.formats().contains(&format) {
            continue;
        }
        match service.open_stream(format, options).await {
            Ok(session) => return Ok((index, session)),
            Err(error) if falls_over(&error) => {
                tracing::warn!(service = service.id(), %error, "could not open a live transcription, trying the next recogniser");
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or(SpeechError::UnsupportedFormat(format)))
}

/// One thing sent into a live transcription, kept for a replay.
#[derive(Debug, Clone)]
enum SttCommand {
    Audio(AudioFrame),
    Finalize,
    Finish,
}

#[derive(Debug)]
struct SttInner {
    sender: Arc<dyn AudioSender>,
    /// What was sent, until the first event (then `None`: no more fallback).
    replay: Option<Vec<SttCommand>>,
    replay_audio: Duration,
}

impl SttInner {
    fn keep(&mut self, command: SttCommand) {
        let audio = match &command {
            SttCommand::Audio(frame) => frame.duration().unwrap_or_default(),
            SttCommand::Finalize | SttCommand::Finish => Duration::ZERO,
        };
        self.replay_audio += audio;
        if self.replay_audio > STT_REPLAY_LIMIT {
            self.replay = None;
        }
        if let Some(replay) = &mut self.replay {
            replay.push(command);
        }
    }
}

#[derive(Debug)]
struct SttShared {
    /// Set at the first event (or when the replay outgrew its bound): no more fallback,
    /// and nobody takes the lock to send any more, so a slow vendor never blocks the
    /// reader of its events.
    committed: AtomicBool,
    inner: Mutex<SttInner>,
}

#[derive(Debug)]
struct SttFallbackSender {
    shared: Arc<SttShared>,
}

impl SttFallbackSender {
    async fn run(&self, command: SttCommand) -> Result<(), SpeechError> {
        let mut inner = self.shared.inner.lock().await;
        if self.shared.committed.load(Ordering::Acquire) {
            let sender = inner.sender.clone();
            drop(inner);
            return send_stt(sender.as_ref(), command).await;
        }
        inner.keep(command.clone());
        if inner.replay.is_none() {
            self.shared.committed.store(true, Ordering::Release);
        }
        // Held across the send before the first event, so a replay sees every command in
        // order; the reader needs the lock only once this vendor failed, when this send
        // returns at once.
        let sender = inner.sender.clone();
        match send_stt(sender.as_ref(), command).await {
            // Before the first event, a broken session (an error, or `Closed` once its task
            // ended) is the event stream's to replace.
            Err(error) if inner.replay.is_some() && replaceable(&error) => Ok(()),
            other => other,
        }
    }
}

async fn send_stt(sender: &dyn AudioSender, command: SttCommand) -> Result<(), SpeechError> {
    match command {
        SttCommand::Audio(frame) => sender.send(frame).await,
        SttCommand::Finalize => sender.finalize().await,
        SttCommand::Finish => sender.finish().await,
    }
}

/// Whether an error of a sender can be left to the fallback: any but a fault in the
/// caller's input.
fn replaceable(error: &SpeechError) -> bool {
    !matches!(
        error,
        SpeechError::InvalidInput { .. } | SpeechError::EmptyAudio
    )
}

impl AudioSender for SttFallbackSender {
    fn send(&self, frame: AudioFrame) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(self.run(SttCommand::Audio(frame)))
    }

    fn finalize(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(self.run(SttCommand::Finalize))
    }

    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(self.run(SttCommand::Finish))
    }
}

struct SttStreamState {
    shared: Arc<SttShared>,
    services: Arc<[Arc<dyn SpeechToText>]>,
    index: usize,
    format: AudioFormat,
    options: TranscriptionOptions,
    events: TranscriptStream,
    last: Arc<AtomicUsize>,
    done: bool,
}

async fn next_stt_event(
    mut state: SttStreamState,
) -> Option<(Result<SttEvent, SpeechError>, SttStreamState)> {
    if state.done {
        return None;
    }
    loop {
        match state.events.next().await {
            Some(Ok(event)) => {
                state.shared.committed.store(true, Ordering::Release);
                return Some((Ok(event), state));
            }
            Some(Err(error)) => {
                if state.shared.committed.load(Ordering::Acquire) {
                    state.done = true;
                    return Some((Err(error), state));
                }
                let mut inner = state.shared.inner.lock().await;
                let replay = match inner.replay.take() {
                    Some(replay)
                        if falls_over(&error)
                            && !state.shared.committed.load(Ordering::Acquire) =>
                    {
                        replay
                    }
                    _ => {
                        drop(inner);
                        state.done = true;
                        return Some((Err(error), state));
                    }
                };
                tracing::warn!(service = state.services[state.index].id(), %error, "live transcription failed before its first event, trying the next recogniser");
                let reopened = open_stt(
                    &state.services,
                    state.index + 1,
                    state.format,
                    &state.options,
                )
                .await;
                let Ok((index, session)) = reopened else {
                    drop(inner);
                    state.done = true;
                    return Some((Err(error), state));
                };
                let sender: Arc<dyn AudioSender> = Arc::from(session.sender);
                for command in &replay {
                    let replayed = send_stt(sender.as_ref(), command.clone()).await;
                    if let Err(replay_error) = replayed {
                        tracing::warn!(%replay_error, "replaying audio into the next recogniser failed");
                        break;
                    }
                }
                inner.sender = sender;
                inner.replay = Some(replay);
                drop(inner);
                state.index = index;
                state.events = session.events;
                state.last.store(index, Ordering::Relaxed);
            }
            None => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Text-to-speech
// ---------------------------------------------------------------------------------------

/// Synthesisers tried in order. A one-shot synthesis that fails before its first audio
/// goes to the next synthesiser; a streaming session that fails before its first event is
/// reopened on the next one and the text sent so far (with its flushes and its finish) is
/// replayed. After a first event an error is final; errors in the caller's input are final
/// at once.
pub struct TtsFallback {
    id: String,
    services: Arc<[Arc<dyn TextToSpeech>]>,
    last: Arc<AtomicUsize>,
}

impl fmt::Debug for TtsFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtsFallback")
            .field("id", &self.id)
            .field("services", &self.services)
            .finish()
    }
}

impl TtsFallback {
    /// Tries `services` in order.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] when `services` is empty.
    pub fn new(services: Vec<Arc<dyn TextToSpeech>>) -> Result<Self, SpeechError> {
        if services.is_empty() {
            return Err(no_services());
        }
        Ok(Self {
            id: fallback_id(services.iter().map(|s| s.id().to_owned())),
            services: services.into(),
            last: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl TextToSpeech for TtsFallback {
    fn id(&self) -> &str {
        &self.id
    }

    /// The first synthesiser's formats; a later one that cannot produce the format asked
    /// for is skipped.
    fn formats(&self) -> Vec<AudioFormat> {
        self.services[0].formats()
    }

    /// The price of the synthesiser that served last.
    fn price(&self) -> Option<SpeechPrice> {
        self.services[self.last.load(Ordering::Relaxed)].price()
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>> {
        Box::pin(async move {
            let mut last_error = None;
            for (index, service) in self.services.iter().enumerate() {
                if !produces(service.as_ref(), options) {
                    continue;
                }
                let failure = match service.synthesize(text, options).await {
                    Ok(mut stream) => match stream.next().await {
                        Some(Ok(first)) => {
                            self.last.store(index, Ordering::Relaxed);
                            let first = futures_util::stream::iter([Ok(first)]);
                            return Ok(Box::pin(first.chain(stream)) as AudioStream);
                        }
                        Some(Err(error)) => error,
                        None => SpeechError::Service {
                            status: 0,
                            message: "the synthesiser produced no audio".to_owned(),
                        },
                    },
                    Err(error) => error,
                };
                if !falls_over(&failure) {
                    return Err(failure);
                }
                tracing::warn!(service = service.id(), error = %failure, "synthesis failed before its first audio, trying the next synthesiser");
                last_error = Some(failure);
            }
            Err(last_error.unwrap_or_else(|| unsupported_format(options)))
        })
    }

    fn open_stream<'a>(
        &'a self,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<TtsSession, SpeechError>> {
        Box::pin(async move {
            let (index, session) = open_tts(&self.services, 0, options).await?;
            self.last.store(index, Ordering::Relaxed);
            let shared = Arc::new(TtsShared {
                committed: AtomicBool::new(false),
                inner: Mutex::new(TtsInner {
                    sender: Arc::from(session.sender),
                    replay: Some(Vec::new()),
                }),
            });
            let state = TtsStreamState {
                shared: shared.clone(),
                services: self.services.clone(),
                index,
                options: options.clone(),
                events: session.events,
                last: self.last.clone(),
                done: false,
            };
            Ok(TtsSession {
                sender: Box::new(TtsFallbackSender { shared }),
                events: Box::pin(futures_util::stream::unfold(state, next_tts_event)),
            })
        })
    }
}

/// Whether `service` can produce the format `options` asks for (any, when none is set).
fn produces(service: &dyn TextToSpeech, options: &SynthesisOptions) -> bool {
    options
        .format
        .is_none_or(|format| service.formats().contains(&format))
}

fn unsupported_format(options: &SynthesisOptions) -> SpeechError {
    options
        .format
        .map_or_else(no_services, SpeechError::UnsupportedFormat)
}

async fn open_tts(
    services: &[Arc<dyn TextToSpeech>],
    from: usize,
    options: &SynthesisOptions,
) -> Result<(usize, TtsSession), SpeechError> {
    let mut last_error = None;
    for (index, service) in services.iter().enumerate().skip(from) {
        if !produces(service.as_ref(), options) {
            continue;
        }
        match service.open_stream(options).await {
            Ok(session) => return Ok((index, session)),
            Err(error) if falls_over(&error) => {
                tracing::warn!(service = service.id(), %error, "could not open a synthesis session, trying the next synthesiser");
                // A synthesiser without sessions does not hide why the one before failed.
                let unsupported = matches!(error, SpeechError::Unsupported { .. });
                if last_error.is_none() || !unsupported {
                    last_error = Some(error);
                }
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| unsupported_format(options)))
}

#[derive(Debug, Clone)]
enum TtsCommand {
    Text(String),
    Flush,
    Finish,
}

#[derive(Debug)]
struct TtsInner {
    sender: Arc<dyn TextSender>,
    /// What was sent, until the first audio (then `None`: no more fallback).
    replay: Option<Vec<TtsCommand>>,
}

#[derive(Debug)]
struct TtsShared {
    /// Set at the first event or a cancel: no more fallback, and no lock taken to send.
    committed: AtomicBool,
    inner: Mutex<TtsInner>,
}

#[derive(Debug)]
struct TtsFallbackSender {
    shared: Arc<TtsShared>,
}

impl TtsFallbackSender {
    async fn run(&self, command: TtsCommand) -> Result<(), SpeechError> {
        let mut inner = self.shared.inner.lock().await;
        if self.shared.committed.load(Ordering::Acquire) {
            let sender = inner.sender.clone();
            drop(inner);
            return send_tts(sender.as_ref(), command).await;
        }
        if let Some(replay) = &mut inner.replay {
            replay.push(command.clone());
        }
        let sender = inner.sender.clone();
        match send_tts(sender.as_ref(), command).await {
            Err(error) if inner.replay.is_some() && replaceable(&error) => Ok(()),
            other => other,
        }
    }
}

async fn send_tts(sender: &dyn TextSender, command: TtsCommand) -> Result<(), SpeechError> {
    match command {
        TtsCommand::Text(text) => sender.send(text).await,
        TtsCommand::Flush => sender.flush().await,
        TtsCommand::Finish => sender.finish().await,
    }
}

impl TextSender for TtsFallbackSender {
    fn send(&self, text: String) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(self.run(TtsCommand::Text(text)))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(self.run(TtsCommand::Flush))
    }

    fn cancel(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async move {
            // A cancelled session never falls over to another synthesiser.
            self.shared.committed.store(true, Ordering::Release);
            let mut inner = self.shared.inner.lock().await;
            inner.replay = None;
            let sender = inner.sender.clone();
            drop(inner);
            sender.cancel().await
        })
    }

    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(self.run(TtsCommand::Finish))
    }
}

struct TtsStreamState {
    shared: Arc<TtsShared>,
    services: Arc<[Arc<dyn TextToSpeech>]>,
    index: usize,
    options: SynthesisOptions,
    events: TtsEventStream,
    last: Arc<AtomicUsize>,
    done: bool,
}

async fn next_tts_event(
    mut state: TtsStreamState,
) -> Option<(Result<TtsEvent, SpeechError>, TtsStreamState)> {
    if state.done {
        return None;
    }
    loop {
        match state.events.next().await {
            Some(Ok(event)) => {
                // Any event, not only audio: words or a flush given twice would be wrong too.
                state.shared.committed.store(true, Ordering::Release);
                return Some((Ok(event), state));
            }
            Some(Err(error)) => {
                if state.shared.committed.load(Ordering::Acquire) {
                    state.done = true;
                    return Some((Err(error), state));
                }
                let mut inner = state.shared.inner.lock().await;
                let replay = match inner.replay.take() {
                    Some(replay)
                        if falls_over(&error)
                            && !state.shared.committed.load(Ordering::Acquire) =>
                    {
                        replay
                    }
                    _ => {
                        drop(inner);
                        state.done = true;
                        return Some((Err(error), state));
                    }
                };
                tracing::warn!(service = state.services[state.index].id(), %error, "synthesis failed before its first audio, trying the next synthesiser");
                let Ok((index, session)) =
                    open_tts(&state.services, state.index + 1, &state.options).await
                else {
                    drop(inner);
                    state.done = true;
                    return Some((Err(error), state));
                };
                let sender: Arc<dyn TextSender> = Arc::from(session.sender);
                for command in &replay {
                    let replayed = send_tts(sender.as_ref(), command.clone()).await;
                    if let Err(replay_error) = replayed {
                        tracing::warn!(%replay_error, "replaying text into the next synthesiser failed");
                        break;
                    }
                }
                inner.sender = sender;
                inner.replay = Some(replay);
                drop(inner);
                state.index = index;
                state.events = session.events;
                state.last.store(index, Ordering::Relaxed);
            }
            None => return None,
        }
    }
}
