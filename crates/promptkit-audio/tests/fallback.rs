//! Fallback across speech vendors: the next one takes over before the first result, with
//! the text or audio sent so far replayed, and never after.
#![cfg(feature = "client")]

use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use promptkit_audio::client::{SttFallback, TtsFallback};
use promptkit_core::{
    AudioFormat, AudioFrame, AudioSender, AudioStream, BoxFuture, SpeechError, SpeechToText,
    SttEvent, SttSession, SynthesisOptions, TextSender, TextToSpeech, Transcript,
    TranscriptionOptions, TtsEvent, TtsSession,
};
use tokio::sync::mpsc;

/// How a fake vendor behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Works.
    Works,
    /// Refuses to open (or to synthesise) with a 503.
    RefusesToOpen,
    /// Opens, then fails with a transport error before its first result.
    FailsBeforeFirstResult,
    /// Gives one result, then fails.
    FailsAfterFirstResult,
    /// Recognisers: fails at its first audio and ends, so later sends are `Closed`.
    DiesAtFirstAudio,
}

fn unavailable() -> SpeechError {
    SpeechError::Service {
        status: 503,
        message: "unavailable".to_owned(),
    }
}

fn broken() -> SpeechError {
    SpeechError::Transport {
        message: "connection reset".to_owned(),
        source: None,
    }
}

/// A synthesiser that speaks `id:text` as one audio frame of 2 bytes per character, and
/// records what it was sent.
#[derive(Debug)]
struct FakeTts {
    id: &'static str,
    mode: Mode,
    received: Arc<Mutex<Vec<String>>>,
}

impl FakeTts {
    fn new(id: &'static str, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            id,
            mode,
            received: Arc::default(),
        })
    }
}

#[derive(Debug)]
struct FakeTextSender {
    tx: mpsc::UnboundedSender<Command>,
}

#[derive(Debug)]
enum Command {
    Text(String),
    Finish,
}

impl TextSender for FakeTextSender {
    fn send(&self, text: String) -> BoxFuture<'_, Result<(), SpeechError>> {
        let sent = self
            .tx
            .send(Command::Text(text))
            .map_err(|_| SpeechError::Closed);
        Box::pin(async move { sent })
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async { Ok(()) })
    }
    fn cancel(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        Box::pin(async { Ok(()) })
    }
    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        let sent = self
            .tx
            .send(Command::Finish)
            .map_err(|_| SpeechError::Closed);
        Box::pin(async move { sent })
    }
}

fn audio_of(text: &str) -> AudioFrame {
    AudioFrame::new(vec![0_u8; 2 * text.len()], AudioFormat::PCM16_24K_MONO)
}

impl TextToSpeech for FakeTts {
    fn id(&self) -> &str {
        self.id
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        _: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>> {
        self.received.lock().unwrap().push(text.to_owned());
        let mode = self.mode;
        let frame = audio_of(text);
        Box::pin(async move {
            match mode {
                Mode::RefusesToOpen => Err(unavailable()),
                Mode::FailsBeforeFirstResult | Mode::DiesAtFirstAudio => {
                    Ok(Box::pin(futures_util::stream::iter([Err(broken())])) as AudioStream)
                }
                Mode::FailsAfterFirstResult => {
                    Ok(
                        Box::pin(futures_util::stream::iter([Ok(frame), Err(broken())]))
                            as AudioStream,
                    )
                }
                Mode::Works => Ok(Box::pin(futures_util::stream::iter([Ok(frame)])) as AudioStream),
            }
        })
    }

    fn open_stream<'a>(
        &'a self,
        _: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<TtsSession, SpeechError>> {
        Box::pin(async move {
            if self.mode == Mode::RefusesToOpen {
                return Err(unavailable());
            }
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mode = self.mode;
            let received = self.received.clone();
            let events = async_events(move |out| async move {
                let mut spoken = 0;
                while let Some(command) = rx.recv().await {
                    match command {
                        Command::Text(text) => {
                            received.lock().unwrap().push(text.clone());
                            if mode == Mode::FailsBeforeFirstResult
                                || (mode == Mode::FailsAfterFirstResult && spoken == 1)
                            {
                                let _ = out.send(Err(broken()));
                                return;
                            }
                            spoken += 1;
                            let _ = out.send(Ok(TtsEvent::Audio(audio_of(&text))));
                        }
                        Command::Finish => {
                            let _ = out.send(Ok(TtsEvent::Done));
                            return;
                        }
                    }
                }
            });
            Ok(TtsSession {
                sender: Box::new(FakeTextSender { tx }),
                events,
            })
        })
    }
}

/// A stream fed by a task.
fn async_events<T: Send + 'static, F, Fut>(
    body: F,
) -> promptkit_core::BoxStream<'static, Result<T, SpeechError>>
where
    F: FnOnce(mpsc::UnboundedSender<Result<T, SpeechError>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(body(tx));
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn speak(tts: &TtsFallback, chunks: &[&str]) -> Vec<Result<TtsEvent, String>> {
    let session = tts.open_stream(&SynthesisOptions::new()).await.unwrap();
    for chunk in chunks {
        session.sender.send((*chunk).to_owned()).await.unwrap();
    }
    session.sender.finish().await.unwrap();
    session
        .events
        .map(|e| e.map_err(|e| e.to_string()))
        .collect()
        .await
}

#[tokio::test]
async fn a_synthesis_session_that_fails_before_audio_is_replayed_on_the_next_vendor() {
    let first = FakeTts::new("first", Mode::FailsBeforeFirstResult);
    let second = FakeTts::new("second", Mode::Works);
    let tts = TtsFallback::new(vec![first.clone(), second.clone()]).unwrap();
    assert_eq!(tts.id(), "fallback(first,second)");

    let events = speak(&tts, &["Hello ", "there."]).await;
    let audio: usize = events
        .iter()
        .filter_map(|e| match e {
            Ok(TtsEvent::Audio(frame)) => Some(frame.data.len()),
            _ => None,
        })
        .sum();
    assert_eq!(audio, 2 * "Hello there.".len(), "{events:?}");
    assert!(
        matches!(events.last(), Some(Ok(TtsEvent::Done))),
        "{events:?}"
    );
    assert_eq!(
        *second.received.lock().unwrap(),
        ["Hello ", "there."],
        "all the text replayed"
    );
}

#[tokio::test]
async fn a_synthesis_session_that_fails_after_audio_does_not_fall_over() {
    let first = FakeTts::new("first", Mode::FailsAfterFirstResult);
    let second = FakeTts::new("second", Mode::Works);
    let tts = TtsFallback::new(vec![first, second.clone()]).unwrap();
    let events = speak(&tts, &["Hello ", "there."]).await;
    assert!(matches!(events[0], Ok(TtsEvent::Audio(_))), "{events:?}");
    assert!(
        events[1]
            .as_ref()
            .is_err_and(|e| e.contains("connection reset")),
        "{events:?}"
    );
    assert_eq!(events.len(), 2, "the error is terminal: {events:?}");
    assert!(
        second.received.lock().unwrap().is_empty(),
        "never replayed after audio"
    );
}

#[tokio::test]
async fn one_shot_synthesis_skips_vendors_that_refuse_or_fail_before_audio() {
    let tts = TtsFallback::new(vec![
        FakeTts::new("a", Mode::RefusesToOpen),
        FakeTts::new("b", Mode::FailsBeforeFirstResult),
        FakeTts::new("c", Mode::Works),
    ])
    .unwrap();
    let frames: Vec<_> = tts
        .synthesize("hi", &SynthesisOptions::new())
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].as_ref().unwrap().data.len(), 4);

    let all_down = TtsFallback::new(vec![
        FakeTts::new("a", Mode::RefusesToOpen),
        FakeTts::new("b", Mode::RefusesToOpen),
    ])
    .unwrap();
    let error = all_down
        .synthesize("hi", &SynthesisOptions::new())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, SpeechError::Service { status: 503, .. }),
        "{error}"
    );
    assert!(TtsFallback::new(Vec::new()).is_err());
}

#[tokio::test]
async fn a_format_a_vendor_cannot_produce_skips_it() {
    let tts = TtsFallback::new(vec![FakeTts::new("a", Mode::Works)]).unwrap();
    let options = SynthesisOptions::new().with_format(AudioFormat::MULAW_8K_MONO);
    let error = tts.synthesize("hi", &options).await.err().unwrap();
    assert!(
        matches!(error, SpeechError::UnsupportedFormat(_)),
        "{error}"
    );
}

/// A recogniser that transcribes each finalize as `id` with the audio bytes it got.
#[derive(Debug)]
struct FakeStt {
    id: &'static str,
    mode: Mode,
    audio: Arc<Mutex<usize>>,
}

impl FakeStt {
    fn new(id: &'static str, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            id,
            mode,
            audio: Arc::default(),
        })
    }
}

#[derive(Debug)]
enum SttCommand {
    Audio(usize),
    Finalize,
    Finish,
}

#[derive(Debug)]
struct FakeAudioSender {
    tx: mpsc::UnboundedSender<SttCommand>,
}

impl AudioSender for FakeAudioSender {
    fn send(&self, frame: AudioFrame) -> BoxFuture<'_, Result<(), SpeechError>> {
        let sent = self
            .tx
            .send(SttCommand::Audio(frame.data.len()))
            .map_err(|_| SpeechError::Closed);
        Box::pin(async move { sent })
    }
    fn finalize(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        let sent = self
            .tx
            .send(SttCommand::Finalize)
            .map_err(|_| SpeechError::Closed);
        Box::pin(async move { sent })
    }
    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        let sent = self
            .tx
            .send(SttCommand::Finish)
            .map_err(|_| SpeechError::Closed);
        Box::pin(async move { sent })
    }
}

impl SpeechToText for FakeStt {
    fn id(&self) -> &str {
        self.id
    }

    fn transcribe<'a>(
        &'a self,
        audio: &'a [AudioFrame],
        _: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<Transcript, SpeechError>> {
        Box::pin(async move {
            match self.mode {
                Mode::Works => Ok(Transcript::new(format!(
                    "{} heard {}",
                    self.id,
                    audio.len()
                ))),
                _ => Err(unavailable()),
            }
        })
    }

    fn open_stream<'a>(
        &'a self,
        _: AudioFormat,
        _: &'a TranscriptionOptions,
    ) -> BoxFuture<'a, Result<SttSession, SpeechError>> {
        Box::pin(async move {
            if self.mode == Mode::RefusesToOpen {
                return Err(unavailable());
            }
            let (tx, mut rx) = mpsc::unbounded_channel();
            let (mode, id, audio) = (self.mode, self.id, self.audio.clone());
            let events = async_events(move |out| async move {
                let mut finals = 0;
                while let Some(command) = rx.recv().await {
                    match command {
                        SttCommand::Audio(_) if mode == Mode::DiesAtFirstAudio => {
                            let _ = out.send(Err(broken()));
                            return;
                        }
                        SttCommand::Audio(len) => *audio.lock().unwrap() += len,
                        SttCommand::Finalize => {
                            if mode == Mode::FailsBeforeFirstResult
                                || (mode == Mode::FailsAfterFirstResult && finals == 1)
                            {
                                let _ = out.send(Err(broken()));
                                return;
                            }
                            finals += 1;
                            let text = format!("{id} heard {}", *audio.lock().unwrap());
                            let _ = out.send(Ok(SttEvent::Final {
                                transcript: Transcript::new(text),
                                speech_final: true,
                                from_finalize: true,
                            }));
                        }
                        SttCommand::Finish => return,
                    }
                }
            });
            Ok(SttSession {
                sender: Box::new(FakeAudioSender { tx }),
                events,
            })
        })
    }
}

fn final_text(event: &Result<SttEvent, SpeechError>) -> String {
    match event {
        Ok(SttEvent::Final { transcript, .. }) => transcript.text.clone(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn a_live_transcription_that_fails_before_its_first_event_replays_the_audio() {
    let first = FakeStt::new("first", Mode::FailsBeforeFirstResult);
    let second = FakeStt::new("second", Mode::Works);
    let stt = SttFallback::new(vec![first, second.clone()]).unwrap();
    let session = stt
        .open_stream(AudioFormat::PCM16_16K_MONO, &TranscriptionOptions::new())
        .await
        .unwrap();
    let frame = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
    for _ in 0..10 {
        session.send(frame.clone()).await.unwrap();
    }
    session.finalize().await.unwrap();
    let mut events = session.events;
    let first_event = events.next().await.unwrap();
    assert_eq!(
        final_text(&first_event),
        "second heard 6400",
        "every frame replayed"
    );

    // After the first event, a failure is final.
    let stt = SttFallback::new(vec![
        FakeStt::new("first", Mode::FailsAfterFirstResult),
        FakeStt::new("second", Mode::Works),
    ])
    .unwrap();
    let session = stt
        .open_stream(AudioFormat::PCM16_16K_MONO, &TranscriptionOptions::new())
        .await
        .unwrap();
    session.send(frame.clone()).await.unwrap();
    session.finalize().await.unwrap();
    session.send(frame).await.unwrap();
    session.finalize().await.unwrap();
    let events: Vec<_> = session.events.collect().await;
    assert_eq!(final_text(&events[0]), "first heard 640");
    assert!(
        matches!(events[1], Err(SpeechError::Transport { .. })),
        "{events:?}"
    );
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn batch_transcription_falls_over_but_not_on_bad_input() {
    let stt = SttFallback::new(vec![
        FakeStt::new("first", Mode::RefusesToOpen),
        FakeStt::new("second", Mode::Works),
    ])
    .unwrap();
    let frames = [AudioFrame::new(
        vec![0_u8; 640],
        AudioFormat::PCM16_16K_MONO,
    )];
    let transcript = stt
        .transcribe(&frames, &TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, "second heard 1");

    let stt = SttFallback::new(vec![FakeStt::new("only", Mode::RefusesToOpen)]).unwrap();
    let session = stt
        .open_stream(AudioFormat::PCM16_16K_MONO, &TranscriptionOptions::new())
        .await;
    assert!(matches!(
        session,
        Err(SpeechError::Service { status: 503, .. })
    ));
}

#[tokio::test]
async fn sends_after_the_first_vendor_died_are_kept_for_the_next() {
    let second = FakeStt::new("second", Mode::Works);
    let stt =
        SttFallback::new(vec![FakeStt::new("first", Mode::DiesAtFirstAudio), second]).unwrap();
    let session = stt
        .open_stream(AudioFormat::PCM16_16K_MONO, &TranscriptionOptions::new())
        .await
        .unwrap();
    let frame = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
    // The first vendor dies at the first frame: the sends after it meet a closed session,
    // and the caller must not see that.
    for _ in 0..5 {
        tokio::task::yield_now().await;
        session.send(frame.clone()).await.unwrap();
    }
    session.finalize().await.unwrap();
    let mut events = session.events;
    let first_event = events.next().await.unwrap();
    assert_eq!(
        final_text(&first_event),
        "second heard 3200",
        "every frame reached the next vendor"
    );
}

#[tokio::test]
async fn a_whole_text_synthesiser_speaks_a_stream_sentence_by_sentence() {
    use promptkit_audio::client::Segmented;
    let inner = FakeTts::new("local", Mode::Works);
    let tts = Segmented::new(inner.clone());
    let session = tts.open_stream(&SynthesisOptions::new()).await.unwrap();
    for chunk in ["Hello there. How", " are you? Fine"] {
        session.sender.send(chunk.to_owned()).await.unwrap();
    }
    session.sender.flush().await.unwrap();
    session.sender.send(" thanks.".to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let events: Vec<_> = session.events.collect().await;
    assert_eq!(
        *inner.received.lock().unwrap(),
        ["Hello there. ", "How are you? ", "Fine", " thanks."],
        "each sentence spoken as it completed, the flush and the finish speak the rest"
    );
    // Timestamps on one output clock across sentences, in samples (24 kHz, 1 per char).
    let mut samples = 0;
    let mut flushed_after = None;
    let at = |n: usize| AudioFormat::PCM16_24K_MONO.duration_of_samples(n);
    for event in &events {
        match event {
            Ok(TtsEvent::Audio(frame)) => {
                assert_eq!(
                    frame.timestamp,
                    at(samples),
                    "one output clock across sentences"
                );
                samples += frame.samples().unwrap();
            }
            Ok(TtsEvent::Flushed) => flushed_after = Some(samples),
            other => assert!(matches!(other, Ok(TtsEvent::Done)), "{other:?}"),
        }
    }
    assert_eq!(flushed_after, Some("Hello there. How are you? Fine".len()));
    assert_eq!(samples, "Hello there. How are you? Fine thanks.".len());
    assert!(matches!(events.last(), Some(Ok(TtsEvent::Done))));
}

#[tokio::test]
async fn a_cancelled_sentence_session_ends_at_once_and_a_fallback_can_use_one() {
    use promptkit_audio::client::Segmented;
    let tts = Segmented::new(FakeTts::new("local", Mode::Works));
    let session = tts.open_stream(&SynthesisOptions::new()).await.unwrap();
    session
        .sender
        .send("One. Two. Three. ".to_owned())
        .await
        .unwrap();
    let mut events = session.events;
    assert!(matches!(events.next().await, Some(Ok(TtsEvent::Audio(_)))));
    session.sender.cancel().await.unwrap();
    assert!(events.next().await.is_none(), "nothing after a cancel");
    assert!(matches!(
        session.sender.send("More.".to_owned()).await,
        Err(SpeechError::Closed)
    ));

    // A vendor that refuses, then the local whole-text voice as a streaming fallback.
    let local = FakeTts::new("local", Mode::Works);
    let tts = TtsFallback::new(vec![
        FakeTts::new("cloud", Mode::RefusesToOpen),
        Arc::new(Segmented::new(local.clone())),
    ])
    .unwrap();
    let events = speak(&tts, &["Hello. ", "Bye."]).await;
    assert!(
        matches!(events.last(), Some(Ok(TtsEvent::Done))),
        "{events:?}"
    );
    assert_eq!(*local.received.lock().unwrap(), ["Hello. ", "Bye."]);
}
