//! Voice activity detectors behind the core seam, made fresh per stream by their
//! configurations (which are the [`VadFactory`](promptkit_core::VadFactory)s):
//!
//! - [`EnergyVadConfig`]: the Go original's adaptive energy detector, its constants turned
//!   into time constants so it behaves the same at any frame length;
//! - [`EarshotVadConfig`]: a learned detector (`earshot`, pure Rust, its network compiled
//!   into the crate), the default.
//!
//! Both share one hysteresis, in audio time: a frame is speech when its probability reaches
//! the threshold; speech is confirmed once `start` of speech has been heard without a gap as
//! long as `start` (so a single loud chunk never confirms), and it ends once `stop` of
//! non-speech follows. Events report where speech began and ended, not where the windows
//! closed.

use std::time::Duration;

use promptkit_core::{VadDecision, VadEvent, VadState};

mod earshot;
mod energy;
mod level;

pub use self::earshot::{EARSHOT_FRAME_SAMPLES, EarshotVad, EarshotVadConfig};
pub use self::energy::{EnergyVad, EnergyVadConfig};

/// The state machine both detectors use.
#[derive(Debug, Clone)]
pub(crate) struct Hysteresis {
    threshold: f32,
    start: Duration,
    stop: Duration,
    state: VadState,
    /// Where the current (candidate or confirmed) speech began.
    onset: Duration,
    /// Speech heard since `onset` (candidate speech only).
    voiced: Duration,
    /// The end of the last speech frame.
    last_speech: Duration,
}

impl Hysteresis {
    pub(crate) fn new(threshold: f32, start: Duration, stop: Duration) -> Self {
        Self {
            threshold,
            start,
            stop,
            state: VadState::Quiet,
            onset: Duration::ZERO,
            voiced: Duration::ZERO,
            last_speech: Duration::ZERO,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.state = VadState::Quiet;
        self.voiced = Duration::ZERO;
    }

    /// Takes the probability of the frame spanning `from..to`.
    pub(crate) fn update(&mut self, from: Duration, to: Duration, probability: f32) -> VadDecision {
        let speech = probability >= self.threshold;
        let mut event = None;
        self.state = match (self.state, speech) {
            (VadState::Quiet, true) => {
                self.onset = from;
                self.voiced = Duration::ZERO;
                self.candidate(from, to, &mut event)
            }
            (VadState::Starting, true) => self.candidate(from, to, &mut event),
            (VadState::Starting, false) if to.saturating_sub(self.last_speech) >= self.start => {
                VadState::Quiet
            }
            (VadState::Speaking | VadState::Stopping, true) => {
                self.last_speech = to;
                VadState::Speaking
            }
            (VadState::Speaking | VadState::Stopping, false) => {
                if to.saturating_sub(self.last_speech) >= self.stop {
                    event = Some(VadEvent::SpeechEnded {
                        at: self.last_speech,
                    });
                    VadState::Quiet
                } else {
                    VadState::Stopping
                }
            }
            (state, _) => state,
        };
        let decision = VadDecision::new(self.state, probability);
        match event {
            Some(event) => decision.with_event(event),
            None => decision,
        }
    }

    /// A speech frame of candidate speech: confirms it once enough was heard.
    fn candidate(
        &mut self,
        from: Duration,
        to: Duration,
        event: &mut Option<VadEvent>,
    ) -> VadState {
        self.voiced += to - from;
        self.last_speech = to;
        if self.voiced >= self.start {
            *event = Some(VadEvent::SpeechStarted { at: self.onset });
            VadState::Speaking
        } else {
            VadState::Starting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Hysteresis, pattern: &str) -> Vec<(usize, VadState, Option<VadEvent>)> {
        // Each character is 20 ms: '#' speech, '.' silence.
        pattern
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let from = Duration::from_millis(20 * i as u64);
                let d = h.update(
                    from,
                    from + Duration::from_millis(20),
                    if c == '#' { 0.9 } else { 0.1 },
                );
                (i, d.state, d.event)
            })
            .collect()
    }

    fn events(h: &mut Hysteresis, pattern: &str) -> Vec<VadEvent> {
        run(h, pattern)
            .into_iter()
            .filter_map(|(_, _, e)| e)
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn speech_is_confirmed_after_the_start_window_and_reported_from_its_onset() {
        let mut h = Hysteresis::new(0.5, ms(100), ms(100));
        let got = events(&mut h, "..#####......");
        assert_eq!(
            got,
            [
                VadEvent::SpeechStarted { at: ms(40) },
                VadEvent::SpeechEnded { at: ms(140) }
            ]
        );
    }

    #[test]
    fn a_single_loud_chunk_or_scattered_clicks_never_confirm() {
        let mut h = Hysteresis::new(0.5, ms(100), ms(100));
        assert!(events(&mut h, "..#..........#......#.......").is_empty());
        let states = run(&mut h, "#.");
        assert_eq!(states[0].1, VadState::Starting);
    }

    #[test]
    fn short_gaps_inside_the_start_window_keep_the_first_onset() {
        let mut h = Hysteresis::new(0.5, ms(100), ms(200));
        let got = events(&mut h, "...###..##.....................");
        assert_eq!(got[0], VadEvent::SpeechStarted { at: ms(60) });
        assert_eq!(got[1], VadEvent::SpeechEnded { at: ms(200) });
    }

    #[test]
    fn pauses_shorter_than_stop_do_not_end_speech() {
        let mut h = Hysteresis::new(0.5, ms(60), ms(100));
        let got = events(&mut h, "####....####........");
        assert_eq!(
            got,
            [
                VadEvent::SpeechStarted { at: ms(0) },
                VadEvent::SpeechEnded { at: ms(240) }
            ]
        );
    }
}
