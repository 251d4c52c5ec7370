//! Noise suppression with RNNoise (`nnnoiseless`, a pure-Rust port of Xiph's recurrent
//! network denoiser), for 48 kHz mono PCM16.
//!
//! The network works on 10 ms frames (480 samples) and its output lags its input by
//! [`NoiseSuppressor::DELAY`] samples. The suppressor hides both: it takes any number of
//! samples, and over a whole stream ([`process_i16`](NoiseSuppressor::process_i16), then
//! [`finish_i16`](NoiseSuppressor::finish_i16)) it returns exactly as many samples as it was
//! given, aligned with the input. Other rates go through a
//! [`Resampler`](crate::resample::Resampler) on each side.
//!
//! ```
//! use promptkit_audio::denoise::NoiseSuppressor;
//!
//! let mut suppressor = NoiseSuppressor::new();
//! let mut out = Vec::new();
//! suppressor.process_i16(&[0; 1000], &mut out);
//! suppressor.finish_i16(&mut out);
//! assert_eq!(out.len(), 1000);
//! ```

use std::fmt;

use nnnoiseless::DenoiseState;
use promptkit_core::{AudioFormat, AudioFrame};

use crate::AudioError;

/// A streaming RNNoise denoiser for 48 kHz mono PCM16.
pub struct NoiseSuppressor {
    state: Box<DenoiseState<'static>>,
    /// Input waiting for a whole frame.
    pending: Vec<f32>,
    /// Output samples still to drop at the start (the network's lag).
    skip: usize,
    /// Samples given, and samples returned.
    given: u64,
    returned: u64,
    speech_probability: f32,
}

impl fmt::Debug for NoiseSuppressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseSuppressor")
            .field("pending", &self.pending.len())
            .field("given", &self.given)
            .field("returned", &self.returned)
            .finish_non_exhaustive()
    }
}

impl Default for NoiseSuppressor {
    fn default() -> Self {
        Self::new()
    }
}

impl NoiseSuppressor {
    /// The rate the network works at.
    pub const SAMPLE_RATE: u32 = 48_000;

    /// Samples per frame of the network (10 ms).
    pub const FRAME: usize = DenoiseState::FRAME_SIZE;

    /// How far the network's output lags its input, in samples: one frame, from the
    /// overlap of its analysis windows.
    pub const DELAY: usize = DenoiseState::FRAME_SIZE;

    /// The format it takes and gives.
    pub const FORMAT: AudioFormat = AudioFormat::pcm16(48_000, 1);

    /// A fresh suppressor.
    pub fn new() -> Self {
        Self {
            state: DenoiseState::new(),
            pending: Vec::with_capacity(Self::FRAME),
            skip: Self::DELAY,
            given: 0,
            returned: 0,
            speech_probability: 0.0,
        }
    }

    /// The network's speech probability for the last frame it processed.
    pub fn speech_probability(&self) -> f32 {
        self.speech_probability
    }

    /// Denoises `input`, appending what is ready to `out` (up to one frame plus the lag
    /// behind the input).
    pub fn process_i16(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.given += input.len() as u64;
        for &sample in input {
            self.pending.push(f32::from(sample));
            if self.pending.len() == Self::FRAME {
                self.run_frame(out);
            }
        }
    }

    /// Flushes the rest: after it, everything given has been returned, as many samples as
    /// were given. The suppressor can then be used for a new stream.
    pub fn finish_i16(&mut self, out: &mut Vec<i16>) {
        while self.returned < self.given {
            self.pending.resize(Self::FRAME, 0.0);
            self.run_frame(out);
        }
        let extra = usize::try_from(self.returned - self.given).unwrap_or(0);
        out.truncate(out.len().saturating_sub(extra));
        *self = Self::new();
    }

    /// Denoises one frame of [`FORMAT`](Self::FORMAT) audio (any length), keeping its
    /// timestamp. The output of a frame lags: call [`finish_i16`](Self::finish_i16) at the
    /// end of the stream for the rest.
    ///
    /// # Errors
    /// [`AudioError::UnsupportedFormat`] for anything but 48 kHz mono PCM16, and
    /// [`AudioError`] for an odd byte length.
    pub fn process(&mut self, frame: &AudioFrame) -> Result<AudioFrame, AudioError> {
        if frame.format != Self::FORMAT {
            return Err(AudioError::UnsupportedFormat(frame.format));
        }
        let samples = crate::pcm::i16_samples(&frame.data)?;
        let mut out = Vec::with_capacity(samples.len() + Self::FRAME);
        self.process_i16(&samples, &mut out);
        let mut denoised = AudioFrame::new(crate::pcm::i16_bytes(&out), Self::FORMAT);
        denoised.timestamp = frame.timestamp;
        Ok(denoised)
    }

    fn run_frame(&mut self, out: &mut Vec<i16>) {
        let mut output = [0.0_f32; DenoiseState::FRAME_SIZE];
        self.speech_probability = self.state.process_frame(&mut output, &self.pending);
        self.pending.clear();
        let from = self.skip.min(output.len());
        self.skip -= from;
        for &value in &output[from..] {
            #[expect(clippy::cast_possible_truncation, reason = "clamped to the i16 range")]
            out.push(value.round().clamp(-32768.0, 32767.0) as i16);
        }
        self.returned += (output.len() - from) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_as_long_as_input_and_aligned() {
        let mut suppressor = NoiseSuppressor::new();
        let mut out = Vec::new();
        for chunk in [7_usize, 480, 1000, 13] {
            suppressor.process_i16(&vec![0; chunk], &mut out);
        }
        suppressor.finish_i16(&mut out);
        assert_eq!(out.len(), 1500);
    }
}
