//! What the local and HTTP synthesisers share: PCM16 bytes of one rate in, frames of the
//! caller's format out (resampled, G.711-encoded when asked), 20 to 100 ms each, stamped on
//! the output clock, whatever sizes the bytes arrived in.

use std::time::Duration;

use promptkit_core::{AudioEncoding, AudioFormat, AudioFrame, SpeechError};

use crate::pcm;
use crate::resample::Resampler;

/// The shortest frame sent before the end of the audio.
const MIN_FRAME: Duration = Duration::from_millis(20);
/// The longest frame.
const MAX_FRAME: Duration = Duration::from_millis(100);

/// Whether a synthesiser that makes mono PCM16 can deliver `format`: mono PCM16, mu-law or
/// A-law at any rate (resampled).
/// The formats a synthesiser whose PCM goes through a [`PcmFramer`] offers: `native` (what
/// the vendor makes, no conversion) first, then the common PCM16 rates and 8 kHz G.711.
pub(crate) fn framed_formats(native: AudioFormat) -> Vec<AudioFormat> {
    let mut formats = vec![native];
    for format in [
        AudioFormat::PCM16_24K_MONO,
        AudioFormat::PCM16_16K_MONO,
        AudioFormat::pcm16(8_000, 1),
        AudioFormat::pcm16(48_000, 1),
        AudioFormat::MULAW_8K_MONO,
        AudioFormat::ALAW_8K_MONO,
    ] {
        if !formats.contains(&format) {
            formats.push(format);
        }
    }
    formats
}

pub(crate) fn supports(format: AudioFormat) -> bool {
    format.channels == 1
        && format.sample_rate > 0
        && matches!(
            format.encoding,
            AudioEncoding::Pcm16 | AudioEncoding::Mulaw | AudioEncoding::Alaw
        )
}

/// Mono PCM16 little-endian bytes at one rate, turned into frames of the target format.
#[derive(Debug)]
pub(crate) struct PcmFramer {
    target: AudioFormat,
    resampler: Option<Resampler>,
    /// The first byte of a sample split across two pushes.
    odd: Option<u8>,
    /// Samples at the target rate not yet sent.
    pending: Vec<i16>,
    /// Samples at the target rate sent so far.
    emitted: usize,
    min: usize,
    max: usize,
    scratch: Vec<i16>,
}

impl PcmFramer {
    /// A framer from mono PCM16 at `source_rate` to `target`.
    pub(crate) fn new(source_rate: u32, target: AudioFormat) -> Result<Self, SpeechError> {
        if !supports(target) || source_rate == 0 {
            return Err(SpeechError::UnsupportedFormat(target));
        }
        let resampler = if source_rate == target.sample_rate {
            None
        } else {
            Some(Resampler::new(source_rate, target.sample_rate)?)
        };
        let samples_of = |d: Duration| {
            usize::try_from(u128::from(target.sample_rate) * d.as_millis() / 1000)
                .unwrap_or(usize::MAX)
                .max(1)
        };
        Ok(Self {
            target,
            resampler,
            odd: None,
            pending: Vec::new(),
            emitted: 0,
            min: samples_of(MIN_FRAME),
            max: samples_of(MAX_FRAME),
            scratch: Vec::new(),
        })
    }

    /// Takes the next bytes (of any length: a sample split across two pushes is joined);
    /// appends the frames that are ready.
    pub(crate) fn push(
        &mut self,
        mut bytes: &[u8],
        out: &mut Vec<AudioFrame>,
    ) -> Result<(), SpeechError> {
        self.scratch.clear();
        if let Some(first) = self.odd.take() {
            let Some((&second, rest)) = bytes.split_first() else {
                self.odd = Some(first);
                return Ok(());
            };
            self.scratch.push(i16::from_le_bytes([first, second]));
            bytes = rest;
        }
        let whole = bytes.len() & !1;
        self.scratch.extend(
            bytes[..whole]
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]])),
        );
        if whole < bytes.len() {
            self.odd = Some(bytes[whole]);
        }
        match &mut self.resampler {
            Some(resampler) => resampler.process_i16(&self.scratch, &mut self.pending),
            None => self.pending.extend_from_slice(&self.scratch),
        }
        self.drain(false, out)
    }

    /// Ends the audio: the resampler's last samples and the rest, as one last frame (a
    /// half sample left over is dropped).
    pub(crate) fn finish(&mut self, out: &mut Vec<AudioFrame>) -> Result<(), SpeechError> {
        self.odd = None;
        if let Some(resampler) = &mut self.resampler {
            resampler.finish_i16(&mut self.pending);
        }
        self.drain(true, out)
    }

    /// The audio sent so far.
    #[cfg(test)]
    fn emitted(&self) -> Duration {
        self.target
            .duration_of_samples(self.emitted)
            .unwrap_or_default()
    }

    fn drain(&mut self, all: bool, out: &mut Vec<AudioFrame>) -> Result<(), SpeechError> {
        let mut start = 0;
        while self.pending.len() - start >= self.min || (all && start < self.pending.len()) {
            let len = (self.pending.len() - start).min(self.max);
            let samples = &self.pending[start..start + len];
            let data = pcm::encode_from_i16(samples, self.target)?;
            let at = self
                .target
                .duration_of_samples(self.emitted)
                .unwrap_or_default();
            out.push(AudioFrame::new(data, self.target).with_timestamp(at));
            self.emitted += len;
            start += len;
        }
        self.pending.drain(..start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_whole_and_bounded_whatever_the_chunking() {
        let bytes: Vec<u8> = (0..24_000_i16)
            .flat_map(|s| (s % 500).to_le_bytes())
            .collect();
        let mut framer = PcmFramer::new(24_000, AudioFormat::PCM16_24K_MONO).unwrap();
        let mut frames = Vec::new();
        for chunk in bytes.chunks(333) {
            framer.push(chunk, &mut frames).unwrap();
        }
        framer.finish(&mut frames).unwrap();
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.data.to_vec()).collect();
        assert_eq!(joined, bytes);
        for frame in &frames[..frames.len() - 1] {
            let d = frame.duration().unwrap();
            assert!(d >= MIN_FRAME && d <= MAX_FRAME, "{d:?}");
        }
        assert_eq!(framer.emitted(), Duration::from_secs(1));
        assert_eq!(frames[1].timestamp, frames[0].duration());
    }

    #[test]
    fn resampled_and_encoded_output_keeps_the_duration() {
        let bytes = vec![0_u8; 48_000];
        let mut framer = PcmFramer::new(24_000, AudioFormat::MULAW_8K_MONO).unwrap();
        let mut frames = Vec::new();
        framer.push(&bytes, &mut frames).unwrap();
        framer.finish(&mut frames).unwrap();
        let total: usize = frames.iter().map(|f| f.data.len()).sum();
        assert_eq!(total, 8_000);
        assert!(PcmFramer::new(24_000, AudioFormat::pcm16(16_000, 2)).is_err());
    }
}
