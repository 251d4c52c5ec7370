//! Voice activity detection and end-of-turn detection.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SpeechError;
use super::audio::{AudioFormat, AudioFrame};
use super::stt::SttEvent;

/// What a voice activity detector saw in a frame.
///
/// The detector moves `Quiet -> Starting -> Speaking -> Stopping -> Quiet` with
/// hysteresis: `Starting` and `Stopping` are the windows in which a change is not yet
/// confirmed. Only `Speaking` means confirmed speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VadState {
    /// No speech.
    Quiet,
    /// Speech may be starting (not yet long enough to count).
    Starting,
    /// Speech.
    Speaking,
    /// Speech may be ending (silence not yet long enough to count).
    Stopping,
}

impl VadState {
    /// Whether this state counts as confirmed speech (`Speaking`, or `Stopping`, which is
    /// speech until its window passes).
    pub fn is_speech(self) -> bool {
        matches!(self, Self::Speaking | Self::Stopping)
    }
}

/// A confirmed transition reported by a voice activity detector.
///
/// Times are on the detector's clock: the duration of the audio it has processed since it
/// was created (see [`VoiceActivityDetector`]), serialised as whole milliseconds. Each event
/// is reported once its window has passed, so the frame that reports it lies after `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum VadEvent {
    /// Speech started: `at` is where it began (the start of the first frame of the speech
    /// that was then confirmed), not where the start window ended.
    SpeechStarted {
        /// Stream time of the onset.
        #[serde(rename = "at_ms", with = "crate::time::duration_ms")]
        at: Duration,
    },
    /// Speech ended: `at` is where it stopped (the end of the last speech frame), not where
    /// the stop window ended.
    SpeechEnded {
        /// Stream time of the offset.
        #[serde(rename = "at_ms", with = "crate::time::duration_ms")]
        at: Duration,
    },
}

impl VadEvent {
    /// The time the event is about.
    pub fn at(&self) -> Duration {
        match self {
            Self::SpeechStarted { at } | Self::SpeechEnded { at } => *at,
        }
    }
}

/// What a voice activity detector decided about one frame.
///
/// `#[non_exhaustive]`: built with [`VadDecision::new`] and
/// [`with_event`](VadDecision::with_event).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct VadDecision {
    /// The state after the frame.
    pub state: VadState,
    /// The probability (0 to 1) that the frame contained speech.
    pub probability: f32,
    /// The transition this frame confirmed, if any.
    pub event: Option<VadEvent>,
}

impl VadDecision {
    /// A decision without a transition.
    pub fn new(state: VadState, probability: f32) -> Self {
        Self {
            state,
            probability,
            event: None,
        }
    }

    /// The same decision reporting `event`.
    #[must_use]
    pub fn with_event(mut self, event: VadEvent) -> Self {
        self.event = Some(event);
        self
    }
}

/// Detects speech in audio.
///
/// It runs on the audio path frame by frame, so it is synchronous and must be cheap, and it
/// keeps state between frames: one detector serves one audio stream. Stages are shared
/// across runs, so they hold a [`VadFactory`] and take a fresh detector per run.
///
/// **Input.** Every frame must be in [`format`](Self::format) and, when
/// [`frame_samples`](Self::frame_samples) is `Some(n)`, hold exactly `n` samples per
/// channel; the caller resamples and rechunks (promptkit-audio has both). The detector
/// makes one decision per frame, so a frame confirms at most one transition.
///
/// **Time.** The detector's clock is the audio it has processed since it was created: the
/// sum of the frames' durations. Frame timestamps are not read, and time does not pass
/// between frames, so a transport that suppresses silence (DTX) must feed silence instead.
pub trait VoiceActivityDetector: Send + fmt::Debug {
    /// The format frames must have.
    fn format(&self) -> AudioFormat;

    /// The number of samples per channel every frame must hold, or `None` when any length
    /// is accepted.
    fn frame_samples(&self) -> Option<usize>;

    /// Processes one frame.
    ///
    /// # Errors
    /// [`SpeechError::UnsupportedFormat`] when the frame is not in
    /// [`format`](Self::format); [`SpeechError::InvalidInput`] when its length is not
    /// [`frame_samples`](Self::frame_samples). The detector's state is unchanged then.
    fn process(&mut self, frame: &AudioFrame) -> Result<VadDecision, SpeechError>;

    /// Forgets what was heard (levels, model state, the current state goes back to
    /// `Quiet`), as at the start of a stream. The clock keeps running, so times reported
    /// after a reset stay on the same clock as before it.
    fn reset(&mut self);
}

/// Makes voice activity detectors, one per audio stream. Object-safe: used as
/// `Arc<dyn VadFactory>`.
pub trait VadFactory: Send + Sync + fmt::Debug {
    /// The detector's name, for events and logs (`"energy"`, `"earshot"`).
    fn name(&self) -> &str;

    /// A detector in its initial state, its clock at zero.
    ///
    /// # Errors
    /// When the detector cannot be made (a model that fails to load).
    fn fresh(&self) -> Result<Box<dyn VoiceActivityDetector>, SpeechError>;
}

/// What a [`TurnDetector`] is told. All of it is in audio time.
///
/// The detector's clock is the audio it was given with [`TurnSignal::Audio`] since it was
/// created. The times in VAD and STT events are on their own clocks, which coincide with
/// it when the detector, the VAD and the STT session are fed the same audio from the start
/// of the run (the usual wiring); a caller that feeds them differently maps the times
/// before passing the events on.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum TurnSignal<'a> {
    /// User audio: advances the clock by the frame's duration. Detectors that run a model
    /// on the audio also keep it.
    Audio(&'a AudioFrame),
    /// A VAD decision about audio already passed as [`TurnSignal::Audio`]. Pass the
    /// decisions of a frame's audio right after the frame.
    Vad(VadDecision),
    /// An event of the streaming recogniser: finals with `speech_final` and utterance ends
    /// can end a turn, and transcribed words can confirm that speech is real.
    Stt(&'a SttEvent),
    /// A semantic end-of-turn model's probability (0 to 1) that the user has finished, at
    /// the current clock.
    EndOfTurnProbability(f32),
    /// The audio ended (the caller hung up, the input closed): a turn in progress ends.
    EndOfAudio,
}

/// A turn boundary found by a [`TurnDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TurnEvent {
    /// The user started a turn: speech was confirmed and lasted long enough to count.
    /// A barge-in decision can be made from here.
    Started {
        /// Where the speech began (audio before it, the pre-roll, is the caller's to keep).
        #[serde(rename = "onset_ms", with = "crate::time::duration_ms")]
        onset: Duration,
    },
    /// The user's turn ended.
    Ended(TurnEnd),
}

/// The end of a user turn.
///
/// `#[non_exhaustive]`: built with [`TurnEnd::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TurnEnd {
    /// Where the turn's speech began.
    #[serde(rename = "onset_ms", with = "crate::time::duration_ms")]
    pub onset: Duration,
    /// Where its speech ended (before the silence that ended the turn).
    #[serde(rename = "end_ms", with = "crate::time::duration_ms")]
    pub end: Duration,
    /// What ended it.
    pub reason: TurnEndReason,
}

impl TurnEnd {
    /// A turn of speech from `onset` to `end`, ended for `reason`.
    pub fn new(onset: Duration, end: Duration, reason: TurnEndReason) -> Self {
        Self { onset, end, reason }
    }
}

/// What ended a user turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TurnEndReason {
    /// Silence lasted long enough after speech.
    Silence,
    /// The turn reached its maximum length.
    MaxDuration,
    /// The recogniser's endpointing said the user stopped (`speech_final`, utterance end).
    SttEndpoint,
    /// A semantic model said the user finished.
    Semantic,
    /// The audio ended.
    EndOfAudio,
}

/// Decides where user turns begin and end, in audio time (never wall-clock time, so the
/// same audio always gives the same turns).
///
/// Like a VAD it keeps state for one audio stream; stages take a fresh one per run from a
/// [`TurnDetectorFactory`].
pub trait TurnDetector: Send + fmt::Debug {
    /// Takes one signal; returns a boundary when this signal produced one.
    ///
    /// # Errors
    /// When a model the detector runs fails. The detector stays usable.
    fn observe(&mut self, signal: TurnSignal<'_>) -> Result<Option<TurnEvent>, SpeechError>;

    /// Forgets a turn in progress (after a barge-in was handled elsewhere, for example).
    /// The clock keeps running.
    fn reset(&mut self);
}

/// Makes turn detectors, one per audio stream. Object-safe: used as
/// `Arc<dyn TurnDetectorFactory>`.
pub trait TurnDetectorFactory: Send + Sync + fmt::Debug {
    /// The detector's name, for events and logs.
    fn name(&self) -> &str;

    /// A detector in its initial state, its clock at zero.
    ///
    /// # Errors
    /// When the detector cannot be made (a model that fails to load).
    fn fresh(&self) -> Result<Box<dyn TurnDetector>, SpeechError>;
}
