//! Real speech for the tests: utterances synthesised with `espeak-ng` and trimmed with
//! `sox` by `fixtures/speech/make_fixtures.sh` (committed WAV files, so the tests need
//! neither tool), placed at known offsets in silence, white noise or babble at a chosen
//! signal-to-noise ratio.
//!
//! The white noise is generated here from a fixed seed, so a test sees the same noise on
//! every run.

#![allow(dead_code, reason = "each test binary uses a part of the helpers")]

use std::path::PathBuf;
use std::time::Duration;

use promptkit_audio::{pcm, wav};
use promptkit_core::AudioFormat;

/// A speech fixture as mono PCM16 samples at `rate`: its first sample is the onset of
/// speech and its last the offset.
pub(crate) fn fixture(name: &str, rate: u32) -> Vec<i16> {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "speech",
        name,
    ]
    .iter()
    .collect();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let frame = wav::from_bytes(&bytes).unwrap();
    assert_eq!(frame.format, AudioFormat::pcm16(rate, 1), "{name}");
    pcm::i16_samples(&frame.data).unwrap()
}

/// "Could you book a table for two at seven tonight?" (2.3 s).
pub(crate) fn booking() -> Vec<i16> {
    fixture("booking_16k.wav", 16_000)
}

/// "Yes, and a window seat, please." (2.0 s).
pub(crate) fn window() -> Vec<i16> {
    fixture("window_16k.wav", 16_000)
}

/// Mean power of samples (PCM16 units squared).
pub(crate) fn power(samples: &[f32]) -> f64 {
    samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len().max(1) as f64
}

/// The background an utterance is placed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Background {
    /// Digital silence.
    Silence,
    /// White Gaussian noise at this SNR (dB) to the speech.
    White(f64),
    /// Babble (eight voices talking at once) at this SNR (dB) to the speech.
    Babble(f64),
}

/// Seeded white Gaussian noise of unit power.
pub(crate) fn white_noise(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len)
        .map(|_| {
            // Box-Muller.
            let u1 = rng.f64().max(f64::MIN_POSITIVE);
            let u2 = rng.f64();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// Babble of unit power: eight voices at once (the 6 s fixture, looped from `offset`).
pub(crate) fn babble(len: usize, offset: usize) -> Vec<f32> {
    let voices = fixture("babble_16k.wav", 16_000);
    let mix: Vec<f32> = (0..len)
        .map(|n| f32::from(voices[(n + offset) % voices.len()]))
        .collect();
    let scale = (1.0 / power(&mix)).sqrt() as f32;
    mix.iter().map(|s| s * scale).collect()
}

/// A stream: `lead` of background, the utterances separated by `gap`, then `tail`. Returns
/// the samples and where each utterance lies.
pub(crate) struct Scene {
    pub(crate) samples: Vec<i16>,
    pub(crate) rate: u32,
    pub(crate) spans: Vec<(Duration, Duration)>,
}

impl Scene {
    pub(crate) fn new(
        utterances: &[&[i16]],
        rate: u32,
        lead: Duration,
        gap: Duration,
        tail: Duration,
        background: Background,
    ) -> Self {
        let samples_of = |d: Duration| (d.as_secs_f64() * f64::from(rate)).round() as usize;
        let mut speech = vec![0.0_f32; samples_of(lead)];
        let mut spans = Vec::new();
        let mut all_speech = Vec::new();
        for (i, u) in utterances.iter().enumerate() {
            if i > 0 {
                speech.resize(speech.len() + samples_of(gap), 0.0);
            }
            let start = speech.len();
            speech.extend(u.iter().map(|s| f32::from(*s)));
            all_speech.extend(u.iter().map(|s| f32::from(*s)));
            spans.push((time(start, rate), time(speech.len(), rate)));
        }
        speech.resize(speech.len() + samples_of(tail), 0.0);
        let noise = match background {
            Background::Silence => vec![0.0; speech.len()],
            Background::White(snr) => scaled(white_noise(speech.len(), 7), &all_speech, snr),
            Background::Babble(snr) => scaled(babble(speech.len(), 0), &all_speech, snr),
        };
        let samples = speech
            .iter()
            .zip(&noise)
            .map(|(s, n)| (s + n).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        Self {
            samples,
            rate,
            spans,
        }
    }

    /// Background only, as long as a scene with speech would be.
    pub(crate) fn noise_only(
        len: Duration,
        rate: u32,
        background: Background,
        reference: &[i16],
    ) -> Self {
        let n = (len.as_secs_f64() * f64::from(rate)) as usize;
        let reference: Vec<f32> = reference.iter().map(|s| f32::from(*s)).collect();
        let noise = match background {
            Background::Silence => vec![0.0; n],
            Background::White(snr) => scaled(white_noise(n, 11), &reference, snr),
            Background::Babble(snr) => scaled(babble(n, 40_000), &reference, snr),
        };
        Self {
            samples: noise
                .iter()
                .map(|s| s.round().clamp(-32768.0, 32767.0) as i16)
                .collect(),
            rate,
            spans: Vec::new(),
        }
    }
}

/// Unit-power noise scaled to `snr` dB below the power of `speech`.
fn scaled(mut noise: Vec<f32>, speech: &[f32], snr: f64) -> Vec<f32> {
    let gain = (power(speech) / 10_f64.powf(snr / 10.0)).sqrt() as f32;
    noise.iter_mut().for_each(|s| *s *= gain);
    noise
}

pub(crate) fn time(samples: usize, rate: u32) -> Duration {
    Duration::from_nanos((samples as u128 * 1_000_000_000 / u128::from(rate)) as u64)
}
