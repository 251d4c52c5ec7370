//! Rechunking: frames of any length in, frames of a fixed number of samples out.
//!
//! Detectors take fixed frames (earshot 256 samples at 16 kHz) while transports send what
//! they send (20 ms, 40 ms, a variable amount). Whole frames are cut from the input without
//! copying where they lie inside one input frame; only a frame that straddles two inputs is
//! copied together.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use promptkit_core::{AudioFormat, AudioFrame};

use crate::error::AudioError;
use crate::pcm;

/// Cuts a stream of frames of one raw format into frames of `frame_samples` samples.
///
/// Output frames are stamped with their position when the input frames carry timestamps:
/// the first input timestamp plus the duration of the samples returned before.
#[derive(Debug, Clone)]
pub struct Rechunker {
    format: AudioFormat,
    frame_samples: usize,
    frame_bytes: usize,
    pending: BytesMut,
    origin: Option<Duration>,
    emitted: usize,
}

impl Rechunker {
    /// A rechunker for `format` making frames of `frame_samples` samples per channel.
    ///
    /// # Errors
    /// [`AudioError::UnsupportedFormat`] for compressed formats;
    /// [`AudioError::InvalidSetting`] for a frame of zero samples.
    pub fn new(format: AudioFormat, frame_samples: usize) -> Result<Self, AudioError> {
        let frame_bytes = format
            .bytes_for_samples(frame_samples)
            .filter(|_| format.bytes_per_sample_frame().is_some_and(|b| b > 0))
            .ok_or(AudioError::UnsupportedFormat(format))?;
        if frame_samples == 0 {
            return Err(AudioError::InvalidSetting {
                what: "frame size",
                message: "a frame needs at least one sample".to_owned(),
            });
        }
        Ok(Self {
            format,
            frame_samples,
            frame_bytes,
            pending: BytesMut::new(),
            origin: None,
            emitted: 0,
        })
    }

    /// The samples per output frame.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Samples held back until the next frame is complete.
    pub fn pending_samples(&self) -> usize {
        self.format.samples_in(self.pending.len()).unwrap_or(0)
    }

    /// Takes a frame; appends every complete output frame to `out`.
    ///
    /// # Errors
    /// [`AudioError::UnsupportedFormat`] when the frame's format differs;
    /// [`AudioError::PartialSample`] when it holds a partial sample.
    pub fn push(
        &mut self,
        frame: &AudioFrame,
        out: &mut Vec<AudioFrame>,
    ) -> Result<(), AudioError> {
        if frame.format != self.format {
            return Err(AudioError::UnsupportedFormat(frame.format));
        }
        pcm::check_whole(frame.format, frame.data.len())?;
        if self.origin.is_none() && self.emitted == 0 && self.pending.is_empty() {
            self.origin = frame.timestamp;
        }
        let mut data = frame.data.clone();
        if !self.pending.is_empty() {
            let missing = self.frame_bytes - self.pending.len();
            let take = missing.min(data.len());
            self.pending.extend_from_slice(&data.split_to(take));
            if self.pending.len() < self.frame_bytes {
                return Ok(());
            }
            let whole = self.pending.split().freeze();
            out.push(self.stamp(whole));
        }
        while data.len() >= self.frame_bytes {
            let whole = data.split_to(self.frame_bytes);
            out.push(self.stamp(whole));
        }
        self.pending.extend_from_slice(&data);
        Ok(())
    }

    /// Returns the held-back samples as a last, shorter frame (or padded with silence to a
    /// full frame when `pad`), and starts over. `None` when nothing is held back.
    pub fn flush(&mut self, pad: bool) -> Option<AudioFrame> {
        let frame = if self.pending.is_empty() {
            None
        } else {
            if pad {
                let silence = silence_byte(self.format);
                self.pending.resize(self.frame_bytes, silence);
            }
            let rest = self.pending.split().freeze();
            Some(self.stamp(rest))
        };
        self.origin = None;
        self.emitted = 0;
        frame
    }

    fn stamp(&mut self, data: Bytes) -> AudioFrame {
        let samples = self.format.samples_in(data.len()).unwrap_or(0);
        let frame = AudioFrame::new(data, self.format);
        let frame = match self.origin {
            Some(origin) => frame.with_timestamp(
                origin
                    + self
                        .format
                        .duration_of_samples(self.emitted)
                        .unwrap_or_default(),
            ),
            None => frame,
        };
        self.emitted += samples;
        frame
    }
}

/// The byte that encodes silence: zero for PCM, the zero codes of G.711.
fn silence_byte(format: AudioFormat) -> u8 {
    match format.encoding {
        promptkit_core::AudioEncoding::Mulaw => 0xFF,
        promptkit_core::AudioEncoding::Alaw => 0xD5,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(samples: std::ops::Range<i16>) -> AudioFrame {
        let samples: Vec<i16> = samples.collect();
        AudioFrame::new(pcm::i16_bytes(&samples), AudioFormat::PCM16_16K_MONO)
    }

    #[test]
    fn frames_of_any_length_become_fixed_frames_in_order() {
        let mut chunker = Rechunker::new(AudioFormat::PCM16_16K_MONO, 4).unwrap();
        let mut out = Vec::new();
        let first = frame(0..10).with_timestamp(Duration::from_secs(2));
        chunker.push(&first, &mut out).unwrap();
        chunker.push(&frame(10..11), &mut out).unwrap();
        chunker.push(&frame(11..13), &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(chunker.pending_samples(), 1);
        let all: Vec<i16> = out
            .iter()
            .flat_map(|f| pcm::i16_samples(&f.data).unwrap())
            .collect();
        assert_eq!(all, (0..12).collect::<Vec<i16>>());
        // Frames cut from inside one input share its bytes.
        assert_eq!(out[0].data.as_ptr(), first.data.as_ptr());
        let stamps: Vec<_> = out.iter().map(|f| f.timestamp.unwrap()).collect();
        assert_eq!(
            stamps,
            [2_000_000, 2_000_250, 2_000_500].map(Duration::from_micros)
        );
        let last = chunker.flush(true).unwrap();
        assert_eq!(pcm::i16_samples(&last.data).unwrap(), [12, 0, 0, 0]);
        assert!(chunker.flush(true).is_none());
    }

    #[test]
    fn mismatched_and_partial_input_is_refused() {
        let mut chunker = Rechunker::new(AudioFormat::PCM16_16K_MONO, 4).unwrap();
        let mut out = Vec::new();
        let ulaw = AudioFrame::new(vec![0_u8; 4], AudioFormat::MULAW_8K_MONO);
        assert!(chunker.push(&ulaw, &mut out).is_err());
        let odd = AudioFrame::new(vec![0_u8; 3], AudioFormat::PCM16_16K_MONO);
        assert!(chunker.push(&odd, &mut out).is_err());
        assert!(Rechunker::new(AudioFormat::PCM16_16K_MONO, 0).is_err());

        let mut ulaw_chunker = Rechunker::new(AudioFormat::MULAW_8K_MONO, 160).unwrap();
        ulaw_chunker.push(&ulaw, &mut out).unwrap();
        assert_eq!(ulaw_chunker.flush(true).unwrap().data[159], 0xFF);
    }
}
