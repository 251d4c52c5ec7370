//! The adaptive energy detector of the Go original, in audio time.
//!
//! Per frame: the RMS level (of PCM16 normalised to 1, in the speech band 100 Hz to 4 kHz)
//! is smoothed with a gentle attack and a fast release; the threshold is three times a noise
//! floor, at least 0.01; the speech probability reaches 0.5 at the threshold and 1 at twice
//! the distance from the floor.
//!
//! The Go original applies its smoothing factors once per chunk, so its behaviour depended
//! on the chunk length; here they are time constants, equal to Go's factors at 20 ms
//! chunks (0.3 attack, 0.7 release, 0.05 floor update), and any frame length gives the same
//! curve. The level is measured in the speech band (Go measures the whole signal): hum
//! below it and hiss above it raise the floor without being speech, which cost the detector
//! the first word in white noise at 10 dB SNR.
//!
//! **The noise floor.** Go's documentation says the floor "only tracks upward while quiet"
//! while its code moves it both ways whenever the level is under the threshold, speech
//! pauses included. Neither is what a voice call needs. Upward-only ratchets: one noisy
//! minute (a passing truck, a fan) would raise the floor for the rest of the call and make
//! the detector deaf to quiet speech. Updating under the threshold lets speech tails, which
//! sit just under it, pull the floor up during speech. And neither recovers when the noise
//! itself rises above the threshold (an air conditioner starting): the detector then stays
//! in speech for good. So the floor follows the **minimum** of a 300 ms-smoothed level over
//! the last three seconds, in every state: it falls to a quieter room as fast as that
//! smoothing allows, and rises at Go's rate when the minimum rises. Speech has pauses
//! between words, so the minimum over three seconds of speech stays near the noise, while
//! a sustained rise in the noise lifts
//! it within the window.

use std::time::Duration;

use promptkit_core::{
    AudioFormat, AudioFrame, SpeechError, VadDecision, VadFactory, VoiceActivityDetector,
};

use super::Hysteresis;
use super::level::LevelMeter;
use crate::pcm;

/// Threshold = floor x this.
const SPEECH_RATIO: f32 = 3.0;
/// The threshold never goes below this level.
const MIN_THRESHOLD: f32 = 0.01;

/// Settings of the adaptive energy detector; also its [`VadFactory`].
///
/// `#[non_exhaustive]`: built with [`EnergyVadConfig::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnergyVadConfig {
    /// The sample rate of the (mono PCM16) input.
    pub sample_rate: u32,
    /// Probability at which a frame counts as speech (0.5: the level reaches the threshold).
    pub threshold: f32,
    /// Speech needed to confirm a start.
    pub start: Duration,
    /// Non-speech needed to confirm an end.
    pub stop: Duration,
    /// The window whose minimum level the noise floor follows.
    pub floor_window: Duration,
}

impl EnergyVadConfig {
    /// The defaults for mono PCM16 at `sample_rate`: threshold 0.5, start 200 ms (Go's),
    /// stop 300 ms (shorter than Go's 800 ms: ending the turn is the turn detector's job,
    /// and a short stop reports where speech really ended), floor window 3 s.
    pub fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            threshold: 0.5,
            start: Duration::from_millis(200),
            stop: Duration::from_millis(300),
            floor_window: Duration::from_secs(3),
        }
    }

    /// Sets the probability threshold.
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

    /// Sets the noise floor's window.
    #[must_use]
    pub fn with_floor_window(mut self, window: Duration) -> Self {
        self.floor_window = window;
        self
    }

    /// A detector in its initial state.
    pub fn detector(&self) -> EnergyVad {
        EnergyVad {
            config: self.clone(),
            hysteresis: Hysteresis::new(self.threshold, self.start, self.stop),
            clock: Duration::ZERO,
            meter: LevelMeter::new(self.sample_rate, self.floor_window),
        }
    }
}

impl VadFactory for EnergyVadConfig {
    fn name(&self) -> &str {
        "energy"
    }

    fn fresh(&self) -> Result<Box<dyn VoiceActivityDetector>, SpeechError> {
        if self.sample_rate == 0 {
            return Err(SpeechError::InvalidInput {
                message: "energy VAD sample rate is zero".to_owned(),
            });
        }
        Ok(Box::new(self.detector()))
    }
}

/// The adaptive energy detector. Takes mono PCM16 frames of any length at its configured
/// rate.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    config: EnergyVadConfig,
    hysteresis: Hysteresis,
    clock: Duration,
    meter: LevelMeter,
}

impl EnergyVad {
    /// The current noise floor (RMS, PCM16 normalised to 1).
    pub fn noise_floor(&self) -> f32 {
        self.meter.floor()
    }
}

/// Go's mapping: 0 at the floor, 0.5 at the threshold, 1 at twice the distance.
pub(crate) fn probability(level: f32, floor: f32, threshold: f32) -> f32 {
    if level <= floor {
        return 0.0;
    }
    ((level - floor) / (2.0 * (threshold - floor))).clamp(0.0, 1.0)
}

impl VoiceActivityDetector for EnergyVad {
    fn format(&self) -> AudioFormat {
        AudioFormat::pcm16(self.config.sample_rate, 1)
    }

    fn frame_samples(&self) -> Option<usize> {
        None
    }

    fn process(&mut self, frame: &AudioFrame) -> Result<VadDecision, SpeechError> {
        if frame.format != self.format() {
            return Err(SpeechError::UnsupportedFormat(frame.format));
        }
        let samples = pcm::i16_samples(&frame.data)?;
        if samples.is_empty() {
            return Err(SpeechError::InvalidInput {
                message: "empty audio frame".to_owned(),
            });
        }
        let step = frame.duration().unwrap_or_default();
        let from = self.clock;
        self.clock += step;

        self.meter.measure(&samples, step, self.clock);
        let floor = self.meter.floor();
        let threshold = (floor * SPEECH_RATIO).max(MIN_THRESHOLD);
        let probability = probability(self.meter.level(), floor, threshold);
        Ok(self.hysteresis.update(from, self.clock, probability))
    }

    fn reset(&mut self) {
        self.hysteresis.reset();
        self.meter.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::level::{ATTACK, FLOOR_RISE, RELEASE, factor};
    use promptkit_core::{VadEvent, VadState};

    fn tone(amplitude: f32, millis: usize) -> AudioFrame {
        let samples: Vec<i16> = (0..16 * millis)
            .map(|n| {
                let phase = n as f32 * 2.0 * std::f32::consts::PI * 300.0 / 16_000.0;
                pcm::f32_sample_to_i16(amplitude * phase.sin())
            })
            .collect();
        AudioFrame::new(pcm::i16_bytes(&samples), AudioFormat::PCM16_16K_MONO)
    }

    fn feed(vad: &mut EnergyVad, frame: &AudioFrame, millis: usize, chunk: usize) -> Vec<VadEvent> {
        let bytes = frame.data.len() * chunk / millis;
        frame
            .data
            .chunks(bytes)
            .map(|c| AudioFrame::new(c.to_vec(), frame.format))
            .filter_map(|f| vad.process(&f).unwrap().event)
            .collect()
    }

    #[test]
    fn time_constants_equal_gos_factors_at_20_ms() {
        let step = Duration::from_millis(20);
        assert!((factor(step, ATTACK) - 0.3).abs() < 1e-4);
        assert!((factor(step, RELEASE) - 0.7).abs() < 1e-4);
        assert!((factor(step, FLOOR_RISE) - 0.05).abs() < 1e-4);
    }

    #[test]
    fn a_tone_in_silence_is_found_at_any_chunk_length() {
        let config = EnergyVadConfig::new(16_000);
        for chunk in [10, 20, 40] {
            let mut vad = config.detector();
            let mut events = feed(&mut vad, &tone(0.0, 500), 500, chunk);
            events.extend(feed(&mut vad, &tone(0.1, 1000), 1000, chunk));
            events.extend(feed(&mut vad, &tone(0.0, 1000), 1000, chunk));
            assert_eq!(events.len(), 2, "{chunk} ms: {events:?}");
            let VadEvent::SpeechStarted { at } = events[0] else {
                panic!("{events:?}")
            };
            assert!(
                at.abs_diff(Duration::from_millis(500)) <= Duration::from_millis(chunk as u64),
                "{chunk} ms: {at:?}"
            );
            let VadEvent::SpeechEnded { at } = events[1] else {
                panic!("{events:?}")
            };
            // The release takes a few milliseconds whatever the chunk length.
            assert!(
                at.abs_diff(Duration::from_millis(1500)) <= Duration::from_millis(40),
                "{chunk} ms: {at:?}"
            );
        }
    }

    #[test]
    fn the_floor_falls_to_a_quieter_room_and_recovers_from_a_noise_step() {
        let mut vad = EnergyVadConfig::new(16_000).detector();
        // A quiet room, then a loud stationary hum starts (an air conditioner): speech at
        // first, then, once the floor's window holds only the hum, the floor catches up.
        let mut events = feed(&mut vad, &tone(0.0, 500), 500, 20);
        events.extend(feed(&mut vad, &tone(0.05, 6000), 6000, 20));
        assert!(
            matches!(
                events.as_slice(),
                [VadEvent::SpeechStarted { .. }, VadEvent::SpeechEnded { .. }]
            ),
            "{events:?}"
        );
        assert!(vad.noise_floor() > 0.02, "{}", vad.noise_floor());
        // The room goes quiet: the floor follows as fast as its 300 ms smoothing lets it
        // (no waiting for Go's slow rise), and quiet speech is heard.
        feed(&mut vad, &tone(0.001, 1500), 1500, 20);
        assert!(vad.noise_floor() < 0.002, "{}", vad.noise_floor());
        let events = feed(&mut vad, &tone(0.02, 600), 600, 20);
        assert!(
            matches!(events.as_slice(), [VadEvent::SpeechStarted { .. }]),
            "{events:?}"
        );
    }

    #[test]
    fn wrong_input_is_refused_and_reset_returns_to_quiet() {
        let mut vad = EnergyVadConfig::new(16_000).detector();
        let wrong = AudioFrame::new(vec![0_u8; 320], AudioFormat::PCM16_24K_MONO);
        assert!(matches!(
            vad.process(&wrong),
            Err(SpeechError::UnsupportedFormat(_))
        ));
        let empty = AudioFrame::new(Vec::new(), AudioFormat::PCM16_16K_MONO);
        assert!(matches!(
            vad.process(&empty),
            Err(SpeechError::InvalidInput { .. })
        ));
        feed(&mut vad, &tone(0.2, 400), 400, 20);
        vad.reset();
        let decision = vad.process(&tone(0.0, 20)).unwrap();
        assert_eq!(decision.state, VadState::Quiet);
        assert!(EnergyVadConfig::new(0).fresh().is_err());
    }
}
