//! The learned detector: `earshot`, a small recurrent network over mel features, pure Rust,
//! with its weights compiled into the crate (nothing to download, no ONNX runtime).
//!
//! **The level gate.** The network answers "is there speech in this frame", and babble,
//! a television or a colleague across the room are speech. A frame counts only when the
//! network says speech **and** its speech-band level stands out of the noise floor (the
//! energy detector's meter) by [`GATE_RATIO`]: the speech probability reported is the lower
//! of the network's score and the level's probability (0.5 at the gate). In digital
//! silence the gate is at [`MIN_GATE`], well under quiet speech.

use std::fmt;
use std::time::Duration;

use promptkit_core::{
    AudioFormat, AudioFrame, SpeechError, VadDecision, VadFactory, VoiceActivityDetector,
};

use super::Hysteresis;
use super::energy::probability;
use super::level::LevelMeter;

/// The frame `earshot` takes: 256 samples, 16 ms at 16 kHz.
pub const EARSHOT_FRAME_SAMPLES: usize = 256;
/// The level a frame needs over the noise floor to count as speech: 3.5 dB.
const GATE_RATIO: f32 = 1.5;
/// The gate never goes below this level (RMS of PCM16 normalised to 1, about -54 dBFS).
const MIN_GATE: f32 = 0.002;
/// The window whose minimum level the noise floor follows.
const FLOOR_WINDOW: Duration = Duration::from_secs(3);
/// The duration of one frame.
const FRAME: Duration = Duration::from_millis(16);

/// Settings of the learned detector; also its [`VadFactory`].
///
/// `#[non_exhaustive]`: built with [`EarshotVadConfig::new`] (or `default()`) and the
/// `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EarshotVadConfig {
    /// Score at which a frame counts as speech (`earshot` suggests 0.5).
    pub threshold: f32,
    /// Speech needed to confirm a start.
    pub start: Duration,
    /// Non-speech needed to confirm an end.
    pub stop: Duration,
}

impl Default for EarshotVadConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl EarshotVadConfig {
    /// Threshold 0.5, start 96 ms (six frames), stop 300 ms.
    pub fn new() -> Self {
        Self {
            threshold: 0.5,
            start: Duration::from_millis(96),
            stop: Duration::from_millis(300),
        }
    }

    /// Sets the score threshold.
    #[must_use]
    pub fn with_threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }

    /// Sets the start window.
    #[must_use]
    pub fn with_start(mut self, start: Duration) -> Self {
        self.start = start;
        self
    }

    /// Sets the stop window.
    #[must_use]
    pub fn with_stop(mut self, stop: Duration) -> Self {
        self.stop = stop;
        self
    }

    /// A detector in its initial state.
    pub fn detector(&self) -> EarshotVad {
        EarshotVad {
            model: ::earshot::Detector::default_boxed(),
            hysteresis: Hysteresis::new(self.threshold, self.start, self.stop),
            clock: Duration::ZERO,
            samples: Vec::with_capacity(EARSHOT_FRAME_SAMPLES),
            meter: LevelMeter::new(16_000, FLOOR_WINDOW),
        }
    }
}

impl VadFactory for EarshotVadConfig {
    fn name(&self) -> &str {
        "earshot"
    }

    fn fresh(&self) -> Result<Box<dyn VoiceActivityDetector>, SpeechError> {
        Ok(Box::new(self.detector()))
    }
}

/// The learned detector. Takes mono PCM16 at 16 kHz in frames of
/// [`EARSHOT_FRAME_SAMPLES`] samples.
pub struct EarshotVad {
    model: Box<::earshot::Detector>,
    hysteresis: Hysteresis,
    clock: Duration,
    samples: Vec<i16>,
    meter: LevelMeter,
}

impl fmt::Debug for EarshotVad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarshotVad")
            .field("hysteresis", &self.hysteresis)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl VoiceActivityDetector for EarshotVad {
    fn format(&self) -> AudioFormat {
        AudioFormat::PCM16_16K_MONO
    }

    fn frame_samples(&self) -> Option<usize> {
        Some(EARSHOT_FRAME_SAMPLES)
    }

    fn process(&mut self, frame: &AudioFrame) -> Result<VadDecision, SpeechError> {
        if frame.format != self.format() {
            return Err(SpeechError::UnsupportedFormat(frame.format));
        }
        if frame.data.len() != EARSHOT_FRAME_SAMPLES * 2 {
            return Err(SpeechError::InvalidInput {
                message: format!(
                    "earshot takes frames of {EARSHOT_FRAME_SAMPLES} samples, got {} bytes",
                    frame.data.len()
                ),
            });
        }
        self.samples.clear();
        self.samples.extend(
            frame
                .data
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]])),
        );
        let score = self.model.predict_i16(&self.samples).clamp(0.0, 1.0);
        let from = self.clock;
        self.clock += FRAME;
        self.meter.measure(&self.samples, FRAME, self.clock);
        let floor = self.meter.floor();
        let gate = probability(
            self.meter.level(),
            floor,
            (floor * GATE_RATIO).max(MIN_GATE),
        );
        Ok(self.hysteresis.update(from, self.clock, score.min(gate)))
    }

    fn reset(&mut self) {
        self.model.reset();
        self.hysteresis.reset();
        self.meter.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promptkit_core::VadState;

    #[test]
    fn silence_is_quiet_and_wrong_frames_are_refused() {
        let mut vad = EarshotVadConfig::new().fresh().unwrap();
        assert_eq!(vad.frame_samples(), Some(256));
        let silence = AudioFrame::new(vec![0_u8; 512], AudioFormat::PCM16_16K_MONO);
        for _ in 0..50 {
            let decision = vad.process(&silence).unwrap();
            assert_eq!(decision.state, VadState::Quiet);
            assert!(decision.probability < 0.5);
        }
        let short = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
        assert!(matches!(
            vad.process(&short),
            Err(SpeechError::InvalidInput { .. })
        ));
        let wrong = AudioFrame::new(vec![0_u8; 512], AudioFormat::PCM16_24K_MONO);
        assert!(matches!(
            vad.process(&wrong),
            Err(SpeechError::UnsupportedFormat(_))
        ));
    }
}
