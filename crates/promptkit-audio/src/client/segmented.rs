//! Streaming sessions for synthesisers that only speak whole texts (`espeak-ng`, OpenAI's
//! speech endpoint): [`Segmented`] cuts the streamed answer at sentence ends and speaks
//! each sentence as it completes, so such a synthesiser can back a [`TtsSession`], on its
//! own or behind a [`TtsFallback`](super::TtsFallback).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    AudioFormat, AudioStream, BoxFuture, SpeechError, SpeechPrice, SynthesisOptions, TextSender,
    TextToSpeech, TtsEvent, TtsSession,
};
use tokio::sync::mpsc;

/// The longest text held back waiting for a sentence end; past it the text is cut at its
/// last space.
const MAX_PENDING: usize = 240;

/// Events a session may hold for a slow consumer; the synthesis waits beyond it.
const EVENT_BUFFER: usize = 64;

/// A synthesiser whose sessions speak sentence by sentence through `synthesize`.
/// One-shot synthesis, formats and price are the inner synthesiser's.
pub struct Segmented {
    inner: Arc<dyn TextToSpeech>,
}

impl fmt::Debug for Segmented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segmented")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Segmented {
    /// Sessions over `inner`'s one-shot synthesis.
    pub fn new(inner: Arc<dyn TextToSpeech>) -> Self {
        Self { inner }
    }
}

impl TextToSpeech for Segmented {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn formats(&self) -> Vec<AudioFormat> {
        self.inner.formats()
    }

    fn price(&self) -> Option<SpeechPrice> {
        self.inner.price()
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>> {
        self.inner.synthesize(text, options)
    }

    fn open_stream<'a>(
        &'a self,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<TtsSession, SpeechError>> {
        let inner = Arc::clone(&self.inner);
        let options = options.clone();
        Box::pin(async move {
            let (commands, rx) = mpsc::unbounded_channel();
            let (events, events_rx) = mpsc::channel(EVENT_BUFFER);
            let cancelled = Arc::new(AtomicBool::new(false));
            tokio::spawn(speak(inner, options, rx, events));
            let stop = Arc::clone(&cancelled);
            let stream = futures_util::stream::unfold(events_rx, move |mut rx| {
                let stop = Arc::clone(&stop);
                async move {
                    if stop.load(Ordering::Acquire) {
                        return None;
                    }
                    let item = rx.recv().await?;
                    // A cancel while this waited: nothing more of this session.
                    (!stop.load(Ordering::Acquire)).then_some((item, rx))
                }
            });
            Ok(TtsSession {
                sender: Box::new(SegmentSender {
                    commands,
                    cancelled,
                }),
                events: Box::pin(stream),
            })
        })
    }
}

#[derive(Debug)]
enum Command {
    Text(String),
    Flush,
    Finish,
}

#[derive(Debug)]
struct SegmentSender {
    commands: mpsc::UnboundedSender<Command>,
    cancelled: Arc<AtomicBool>,
}

impl SegmentSender {
    fn command(&self, command: Command) -> BoxFuture<'_, Result<(), SpeechError>> {
        let sent = if self.cancelled.load(Ordering::Acquire) {
            Err(SpeechError::Closed)
        } else {
            self.commands.send(command).map_err(|_| SpeechError::Closed)
        };
        Box::pin(async move { sent })
    }
}

impl TextSender for SegmentSender {
    fn send(&self, text: String) -> BoxFuture<'_, Result<(), SpeechError>> {
        self.command(Command::Text(text))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        self.command(Command::Flush)
    }

    fn cancel(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        self.cancelled.store(true, Ordering::Release);
        // Dropping the commands' receiver side is the task's; a closed channel ends it.
        let _ = self.commands.send(Command::Finish);
        Box::pin(async { Ok(()) })
    }

    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        self.command(Command::Finish)
    }
}

type Events = mpsc::Sender<Result<TtsEvent, SpeechError>>;

/// The session's task: holds text until a sentence ends, speaks each sentence, and keeps
/// the output clock across them.
async fn speak(
    tts: Arc<dyn TextToSpeech>,
    options: SynthesisOptions,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: Events,
) {
    let mut pending = String::new();
    let mut clock = OutputClock::default();
    while let Some(command) = commands.recv().await {
        let (segment, then) = match command {
            Command::Text(text) => {
                pending.push_str(&text);
                match sentence_end(&pending) {
                    Some(end) => (pending.drain(..end).collect::<String>(), None),
                    None => continue,
                }
            }
            Command::Flush => (std::mem::take(&mut pending), Some(TtsEvent::Flushed)),
            Command::Finish => (std::mem::take(&mut pending), Some(TtsEvent::Done)),
        };
        if !segment.trim().is_empty()
            && let Err(error) = say(tts.as_ref(), &options, &segment, &mut clock, &events).await
        {
            let _ = events.send(Err(error)).await;
            return;
        }
        if let Some(event) = then {
            let done = matches!(event, TtsEvent::Done);
            if events.send(Ok(event)).await.is_err() || done {
                return;
            }
        }
    }
}

/// Speaks one segment, its frames stamped on the session's output clock.
async fn say(
    tts: &dyn TextToSpeech,
    options: &SynthesisOptions,
    segment: &str,
    clock: &mut OutputClock,
    events: &Events,
) -> Result<(), SpeechError> {
    let mut audio = tts.synthesize(segment, options).await?;
    while let Some(frame) = audio.next().await {
        let frame = frame?;
        let at = clock.stamp(&frame);
        let frame = frame.with_timestamp(at);
        if events.send(Ok(TtsEvent::Audio(frame))).await.is_err() {
            // The consumer is gone: stop synthesising.
            return Ok(());
        }
    }
    Ok(())
}

/// The session's output clock, counted in samples so that many short frames do not add up
/// rounding errors.
#[derive(Debug, Default)]
struct OutputClock {
    /// Time before the samples below (from frames of other formats).
    base: Duration,
    format: Option<AudioFormat>,
    samples: usize,
}

impl OutputClock {
    /// Where `frame` starts; advances past it.
    fn stamp(&mut self, frame: &promptkit_core::AudioFrame) -> Duration {
        if self.format != Some(frame.format) {
            self.base = self.now();
            self.format = Some(frame.format);
            self.samples = 0;
        }
        let at = self.now();
        self.samples += frame.samples().unwrap_or(0);
        at
    }

    fn now(&self) -> Duration {
        self.base
            + self
                .format
                .and_then(|f| f.duration_of_samples(self.samples))
                .unwrap_or_default()
    }
}

/// Where the last complete sentence of `text` ends (after its end mark and the space after
/// it), or, in a text longer than [`MAX_PENDING`] without one, after its last space.
fn sentence_end(text: &str) -> Option<usize> {
    let mut end = None;
    let mut previous: Option<char> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace()
            && previous.is_some_and(|p| matches!(p, '.' | '!' | '?' | ';' | ':' | '\n'))
        {
            end = Some(i + c.len_utf8());
        }
        if c == '\n' {
            end = Some(i + 1);
        }
        previous = Some(c);
    }
    end.or_else(|| {
        (text.len() > MAX_PENDING)
            .then(|| text.rfind(' ').map(|i| i + 1))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::sentence_end;

    #[test]
    fn sentences_end_after_their_mark_and_a_space() {
        assert_eq!(sentence_end("Hello there. How"), Some(13));
        assert_eq!(
            sentence_end("Hello there."),
            None,
            "the mark alone may be an abbreviation's"
        );
        assert_eq!(sentence_end("One! Two? Three"), Some(10));
        assert_eq!(sentence_end("a list:\nnext"), Some(8));
        assert_eq!(sentence_end("no end yet"), None);
        let long = "word ".repeat(60);
        assert_eq!(sentence_end(&long), Some(long.len()));
    }
}
