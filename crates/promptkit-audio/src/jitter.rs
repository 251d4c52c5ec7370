//! A jitter buffer between a bursty producer (a network transport, a synthesiser) and a
//! playback clock that pulls a fixed number of samples per tick.
//!
//! Bounded: when the producer runs ahead, the **oldest** samples are dropped, so playback
//! stays close to live instead of drifting further behind. When the consumer runs dry, the
//! missing samples are **silence** and counted. Optionally it waits until a prefill level
//! is buffered before it starts playing, and again after every underrun, so a network that
//! delivers in bursts is smoothed instead of played as stutter.
//!
//! ```
//! use promptkit_audio::jitter::JitterBuffer;
//!
//! let mut buffer = JitterBuffer::new(320).with_prefill(160);
//! buffer.push(&[7; 100]);
//! let mut out = [1_i16; 80];
//! buffer.pull(&mut out);
//! assert_eq!(out, [0; 80], "still filling up to the prefill level");
//! buffer.push(&[7; 100]);
//! buffer.pull(&mut out);
//! assert_eq!(out, [7; 80]);
//! buffer.push(&[9; 400]); // more than the capacity: the oldest are dropped
//! assert_eq!(buffer.len(), 320);
//! assert_eq!(buffer.stats().dropped_samples, 200);
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use promptkit_core::AudioFormat;

use crate::AudioError;

/// Counters of a [`JitterBuffer`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JitterStats {
    /// Samples pushed.
    pub pushed_samples: u64,
    /// Samples dropped because the buffer was full (the oldest ones).
    pub dropped_samples: u64,
    /// Samples pulled that held audio.
    pub played_samples: u64,
    /// Pulls that could not be filled with audio (wholly or partly silence), after
    /// playback had started.
    pub underruns: u64,
    /// Samples of silence given in those pulls.
    pub underrun_samples: u64,
}

/// A bounded buffer of PCM16 samples (interleaved when there are several channels): drop
/// oldest on overflow, silence on underrun, optional prefill.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    samples: VecDeque<i16>,
    capacity: usize,
    prefill: usize,
    playing: bool,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer of at most `capacity` samples that plays as soon as it holds any.
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            prefill: 0,
            playing: false,
            stats: JitterStats::default(),
        }
    }

    /// A buffer holding at most `capacity` of `format`'s audio.
    ///
    /// # Errors
    /// [`AudioError`] when the format is not PCM16.
    pub fn for_duration(format: AudioFormat, capacity: Duration) -> Result<Self, AudioError> {
        Ok(Self::new(samples_in(format, capacity)?))
    }

    /// Waits until `samples` are buffered before playing, at the start and after every
    /// underrun (at most the capacity).
    #[must_use]
    pub fn with_prefill(mut self, samples: usize) -> Self {
        self.prefill = samples.min(self.capacity);
        self
    }

    /// The prefill as a duration of `format`'s audio.
    ///
    /// # Errors
    /// [`AudioError`] when the format is not PCM16.
    pub fn with_prefill_duration(
        self,
        format: AudioFormat,
        prefill: Duration,
    ) -> Result<Self, AudioError> {
        Ok(self.with_prefill(samples_in(format, prefill)?))
    }

    /// Adds samples; when they do not fit, the oldest samples are dropped (of a push larger
    /// than the capacity, only its last `capacity` samples are kept).
    pub fn push(&mut self, samples: &[i16]) {
        self.stats.pushed_samples += samples.len() as u64;
        let keep = &samples[samples.len().saturating_sub(self.capacity)..];
        let dropped_of_push = samples.len() - keep.len();
        let overflow = (self.samples.len() + keep.len()).saturating_sub(self.capacity);
        self.samples.drain(..overflow);
        self.samples.extend(keep);
        self.stats.dropped_samples += (dropped_of_push + overflow) as u64;
    }

    /// Fills `out` with the oldest samples; what is missing is silence. While filling up
    /// to the prefill level, `out` is all silence.
    pub fn pull(&mut self, out: &mut [i16]) {
        if !self.playing {
            if self.samples.len() < self.prefill.max(1) {
                out.fill(0);
                return;
            }
            self.playing = true;
        }
        let available = self.samples.len().min(out.len());
        for (slot, sample) in out.iter_mut().zip(self.samples.drain(..available)) {
            *slot = sample;
        }
        out[available..].fill(0);
        self.stats.played_samples += available as u64;
        if available < out.len() {
            self.stats.underruns += 1;
            self.stats.underrun_samples += (out.len() - available) as u64;
            // Buffer up again before playing on.
            self.playing = false;
        }
    }

    /// Drops everything buffered (an interruption): the next pull is silence, and playback
    /// waits for the prefill again.
    pub fn clear(&mut self) {
        self.samples.clear();
        self.playing = false;
    }

    /// Samples buffered.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The capacity in samples.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }
}

fn samples_in(format: AudioFormat, duration: Duration) -> Result<usize, AudioError> {
    if format.encoding != promptkit_core::AudioEncoding::Pcm16 {
        return Err(AudioError::UnsupportedFormat(format));
    }
    let per_second = u128::from(format.sample_rate) * u128::from(format.channels);
    Ok(usize::try_from(per_second * duration.as_micros() / 1_000_000).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_the_oldest_and_counts_them() {
        let mut buffer = JitterBuffer::new(4);
        buffer.push(&[1, 2, 3]);
        buffer.push(&[4, 5, 6]);
        let mut out = [0; 4];
        buffer.pull(&mut out);
        assert_eq!(out, [3, 4, 5, 6]);
        buffer.push(&[1, 2, 3, 4, 5, 6, 7]);
        buffer.pull(&mut out);
        assert_eq!(out, [4, 5, 6, 7]);
        let stats = buffer.stats();
        assert_eq!(stats.pushed_samples, 13);
        assert_eq!(stats.dropped_samples, 5);
        assert_eq!(stats.played_samples, 8);
    }

    #[test]
    fn underruns_are_silence_and_wait_for_the_prefill_again() {
        let mut buffer = JitterBuffer::new(100).with_prefill(4);
        let mut out = [9; 3];
        buffer.push(&[1, 2, 3]);
        buffer.pull(&mut out);
        assert_eq!(out, [0, 0, 0], "below the prefill");
        assert_eq!(buffer.stats().underruns, 0, "not playing yet: no underrun");
        buffer.push(&[4, 5]);
        buffer.pull(&mut out);
        assert_eq!(out, [1, 2, 3]);
        buffer.pull(&mut out);
        assert_eq!(out, [4, 5, 0]);
        assert_eq!(buffer.stats().underruns, 1);
        assert_eq!(buffer.stats().underrun_samples, 1);
        buffer.push(&[6, 7]);
        buffer.pull(&mut out);
        assert_eq!(out, [0, 0, 0], "refilling after the underrun");
    }

    #[test]
    fn zero_capacity_drops_everything_and_clear_empties() {
        let mut empty = JitterBuffer::new(0);
        empty.push(&[1, 2]);
        let mut out = [5; 2];
        empty.pull(&mut out);
        assert_eq!(out, [0, 0]);
        assert_eq!(empty.stats().dropped_samples, 2);

        let mut buffer =
            JitterBuffer::for_duration(AudioFormat::PCM16_16K_MONO, Duration::from_millis(200))
                .unwrap();
        assert_eq!(buffer.capacity(), 3200);
        buffer.push(&[1; 100]);
        buffer.clear();
        assert!(buffer.is_empty());
        assert!(
            JitterBuffer::for_duration(AudioFormat::MULAW_8K_MONO, Duration::from_millis(20))
                .is_err()
        );
    }
}
