//! Cutting a stream of user audio into turns: a VAD and a turn detector on one clock, with
//! the audio kept around each turn.

use std::time::Duration;

use promptkit_core::{
    AudioEncoding, AudioFormat, AudioFrame, SpeechError, SttEvent, TurnDetector, TurnEndReason,
    TurnEvent, TurnSignal, VoiceActivityDetector,
};

use crate::error::AudioError;
use crate::rechunk::Rechunker;
use crate::resample::FrameResampler;

/// Audio kept before a turn's onset by default: the start of a word the VAD heard late.
pub const DEFAULT_PRE_ROLL: Duration = Duration::from_millis(500);
/// Audio kept after a turn's end by default: the tail of the last word.
pub const DEFAULT_POST_ROLL: Duration = Duration::from_millis(200);
/// Audio kept while no turn is in progress, beyond the pre-roll: a turn detector confirms a
/// turn some time after its onset (its minimum speech, pauses included), and the audio from
/// the onset must still be there.
const LOOKBACK: Duration = Duration::from_secs(5);

/// One user turn, cut from the stream.
///
/// `#[non_exhaustive]`: made by the [`TurnSegmenter`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UserTurn {
    /// The turn's audio, from `start` on, in the stream's format and stamped with `start`.
    pub audio: AudioFrame,
    /// Where the audio starts: the onset minus the pre-roll (later if the stream started
    /// later). Leading silence before it is trimmed.
    pub start: Duration,
    /// Where speech began.
    pub onset: Duration,
    /// Where speech ended.
    pub end: Duration,
    /// What ended the turn.
    pub reason: TurnEndReason,
}

/// What the segmenter reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SegmentEvent {
    /// A user turn started (a barge-in can be decided here).
    Started {
        /// Where speech began.
        onset: Duration,
    },
    /// A user turn ended, with its audio.
    Turn(UserTurn),
}

/// Runs a VAD and a turn detector over mono PCM16 audio and cuts out each turn's audio.
///
/// Every time is audio time: the duration of the audio pushed since the segmenter was made.
/// Frames are converted to what the VAD takes (resampled and rechunked) on the way. Memory
/// is bounded: while no turn is in progress the segmenter keeps the pre-roll plus five
/// seconds; during a turn, the turn (which the detector ends at its maximum length).
#[derive(Debug)]
pub struct TurnSegmenter {
    format: AudioFormat,
    vad: Box<dyn VoiceActivityDetector>,
    resampler: Option<FrameResampler>,
    rechunker: Option<Rechunker>,
    turns: Box<dyn TurnDetector>,
    pre_roll: Duration,
    post_roll: Duration,
    /// The stream's samples from `buffer_start` on.
    buffer: Vec<u8>,
    buffer_start: usize,
    /// Samples pushed.
    clock: usize,
    /// The onset of the turn in progress.
    onset: Option<Duration>,
    vad_frames: Vec<AudioFrame>,
}

impl TurnSegmenter {
    /// A segmenter for mono PCM16 in `format`, with a fresh VAD and turn detector.
    ///
    /// # Errors
    /// [`AudioError::UnsupportedFormat`] unless `format` is mono PCM16 and the VAD takes
    /// mono PCM16 (at any rate).
    pub fn new(
        format: AudioFormat,
        vad: Box<dyn VoiceActivityDetector>,
        turns: Box<dyn TurnDetector>,
    ) -> Result<Self, AudioError> {
        let mono_pcm16 = |f: AudioFormat| f.encoding == AudioEncoding::Pcm16 && f.channels == 1;
        if !mono_pcm16(format) || format.sample_rate == 0 {
            return Err(AudioError::UnsupportedFormat(format));
        }
        let vad_format = vad.format();
        if !mono_pcm16(vad_format) {
            return Err(AudioError::UnsupportedFormat(vad_format));
        }
        let resampler = (vad_format.sample_rate != format.sample_rate)
            .then(|| FrameResampler::new(format.sample_rate, vad_format.sample_rate))
            .transpose()?;
        let rechunker = vad
            .frame_samples()
            .map(|samples| Rechunker::new(vad_format, samples))
            .transpose()?;
        Ok(Self {
            format,
            vad,
            resampler,
            rechunker,
            turns,
            pre_roll: DEFAULT_PRE_ROLL,
            post_roll: DEFAULT_POST_ROLL,
            buffer: Vec::new(),
            buffer_start: 0,
            clock: 0,
            onset: None,
            vad_frames: Vec::new(),
        })
    }

    /// Sets the audio kept before the onset.
    #[must_use]
    pub fn with_pre_roll(mut self, pre_roll: Duration) -> Self {
        self.pre_roll = pre_roll;
        self
    }

    /// Sets the audio kept after the end of speech.
    #[must_use]
    pub fn with_post_roll(mut self, post_roll: Duration) -> Self {
        self.post_roll = post_roll;
        self
    }

    /// The stream time: the duration of the audio pushed.
    pub fn now(&self) -> Duration {
        self.time_of(self.clock)
    }

    /// Bytes of audio held (for tests and metrics of the memory bound).
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Takes one frame of user audio; appends what it caused to `out`.
    ///
    /// # Errors
    /// [`SpeechError::UnsupportedFormat`] when the frame's format is not the stream's,
    /// [`SpeechError::InvalidInput`] on a partial sample; the VAD's and the detector's
    /// errors.
    pub fn push(
        &mut self,
        frame: &AudioFrame,
        out: &mut Vec<SegmentEvent>,
    ) -> Result<(), SpeechError> {
        if frame.format != self.format {
            return Err(SpeechError::UnsupportedFormat(frame.format));
        }
        crate::pcm::check_whole(frame.format, frame.data.len())?;
        self.buffer.extend_from_slice(&frame.data);
        self.clock += frame.data.len() / 2;
        let event = self.turns.observe(TurnSignal::Audio(frame))?;
        self.handle(event, out);

        let for_vad = match &mut self.resampler {
            Some(resampler) => resampler.process(frame)?,
            None => frame.clone(),
        };
        self.run_vad(&for_vad, out)?;
        self.trim();
        Ok(())
    }

    /// Passes an event of the streaming recogniser to the turn detector.
    ///
    /// # Errors
    /// The detector's.
    pub fn observe_stt(
        &mut self,
        event: &SttEvent,
        out: &mut Vec<SegmentEvent>,
    ) -> Result<(), SpeechError> {
        let event = self.turns.observe(TurnSignal::Stt(event))?;
        self.handle(event, out);
        Ok(())
    }

    /// Passes a semantic model's end-of-turn probability to the turn detector.
    ///
    /// # Errors
    /// The detector's.
    pub fn observe_probability(
        &mut self,
        probability: f32,
        out: &mut Vec<SegmentEvent>,
    ) -> Result<(), SpeechError> {
        let event = self
            .turns
            .observe(TurnSignal::EndOfTurnProbability(probability))?;
        self.handle(event, out);
        Ok(())
    }

    /// Ends the stream: the VAD hears the last audio, and a turn in progress ends.
    ///
    /// # Errors
    /// The VAD's and the detector's.
    pub fn finish(&mut self, out: &mut Vec<SegmentEvent>) -> Result<(), SpeechError> {
        if let Some(resampler) = &mut self.resampler {
            let tail = resampler.finish();
            if !tail.data.is_empty() {
                self.run_vad(&tail, out)?;
            }
        }
        if let Some(last) = self.rechunker.as_mut().and_then(|r| r.flush(true)) {
            self.vad_decide(&last, out)?;
        }
        let event = self.turns.observe(TurnSignal::EndOfAudio)?;
        self.handle(event, out);
        Ok(())
    }

    fn run_vad(
        &mut self,
        frame: &AudioFrame,
        out: &mut Vec<SegmentEvent>,
    ) -> Result<(), SpeechError> {
        if frame.data.is_empty() {
            return Ok(());
        }
        let mut frames = std::mem::take(&mut self.vad_frames);
        frames.clear();
        match &mut self.rechunker {
            Some(rechunker) => rechunker.push(frame, &mut frames)?,
            None => frames.push(frame.clone()),
        }
        let result = frames.iter().try_for_each(|f| self.vad_decide(f, out));
        self.vad_frames = frames;
        result
    }

    fn vad_decide(
        &mut self,
        frame: &AudioFrame,
        out: &mut Vec<SegmentEvent>,
    ) -> Result<(), SpeechError> {
        let decision = self.vad.process(frame)?;
        let event = self.turns.observe(TurnSignal::Vad(decision))?;
        self.handle(event, out);
        Ok(())
    }

    fn handle(&mut self, event: Option<TurnEvent>, out: &mut Vec<SegmentEvent>) {
        match event {
            Some(TurnEvent::Started { onset }) => {
                self.onset = Some(onset);
                out.push(SegmentEvent::Started { onset });
            }
            Some(TurnEvent::Ended(end)) => {
                self.onset = None;
                let start = end.onset.saturating_sub(self.pre_roll);
                let start_sample = self.sample_of(start).max(self.buffer_start);
                let stop_sample = self.sample_of(end.end + self.post_roll).min(self.clock);
                let from = (start_sample - self.buffer_start) * 2;
                let to = (stop_sample.max(start_sample) - self.buffer_start) * 2;
                let start = self.time_of(start_sample);
                let audio = AudioFrame::new(self.buffer[from..to].to_vec(), self.format)
                    .with_timestamp(start);
                out.push(SegmentEvent::Turn(UserTurn {
                    audio,
                    start,
                    onset: end.onset,
                    end: end.end,
                    reason: end.reason,
                }));
            }
            _ => {}
        }
    }

    /// Drops audio no turn can need, in batches of a second so that the buffer is not
    /// shifted on every frame.
    fn trim(&mut self) {
        let keep_from = match self.onset {
            Some(onset) => onset.saturating_sub(self.pre_roll),
            None => self.now().saturating_sub(self.pre_roll + LOOKBACK),
        };
        let keep_from = self.sample_of(keep_from);
        let dead = keep_from.saturating_sub(self.buffer_start);
        if dead >= self.format.sample_rate as usize {
            self.buffer.drain(..dead * 2);
            self.buffer_start += dead;
        }
    }

    fn sample_of(&self, at: Duration) -> usize {
        let samples = at.as_nanos() * u128::from(self.format.sample_rate) / 1_000_000_000;
        usize::try_from(samples).unwrap_or(usize::MAX)
    }

    fn time_of(&self, sample: usize) -> Duration {
        self.format.duration_of_samples(sample).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::TurnConfig;
    use crate::vad::{EarshotVadConfig, EnergyVadConfig};
    use promptkit_core::VadFactory;

    fn tone(amplitude: f32, millis: usize) -> Vec<i16> {
        (0..16 * millis)
            .map(|n| {
                let phase = n as f32 * 2.0 * std::f32::consts::PI * 220.0 / 16_000.0;
                crate::pcm::f32_sample_to_i16(amplitude * phase.sin())
            })
            .collect()
    }

    fn push_all(segmenter: &mut TurnSegmenter, samples: &[i16], out: &mut Vec<SegmentEvent>) {
        for chunk in samples.chunks(320) {
            let frame = AudioFrame::new(crate::pcm::i16_bytes(chunk), AudioFormat::PCM16_16K_MONO);
            segmenter.push(&frame, out).unwrap();
        }
    }

    #[test]
    fn a_turn_keeps_its_pre_roll_and_drops_leading_silence() {
        let mut segmenter = TurnSegmenter::new(
            AudioFormat::PCM16_16K_MONO,
            Box::new(EnergyVadConfig::new(16_000).detector()),
            Box::new(TurnConfig::new().detector()),
        )
        .unwrap()
        .with_pre_roll(Duration::from_millis(300))
        .with_post_roll(Duration::from_millis(100));
        let mut out = Vec::new();
        push_all(&mut segmenter, &tone(0.0, 3000), &mut out);
        push_all(&mut segmenter, &tone(0.2, 1000), &mut out);
        push_all(&mut segmenter, &tone(0.0, 2000), &mut out);
        segmenter.finish(&mut out).unwrap();
        let [SegmentEvent::Started { onset }, SegmentEvent::Turn(turn)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(*onset, Duration::from_millis(3000));
        assert_eq!(turn.start, Duration::from_millis(2700));
        assert_eq!(turn.audio.timestamp, Some(turn.start));
        assert!(turn.end.abs_diff(Duration::from_millis(4000)) <= Duration::from_millis(40));
        let expected = turn.end + Duration::from_millis(100) - turn.start;
        assert_eq!(turn.audio.duration(), Some(expected));
        assert_eq!(turn.reason, TurnEndReason::Silence);
        // Idle memory stays bounded by the pre-roll plus the look-back (and a second of slack).
        assert!(
            segmenter.buffered_bytes() <= 32_000 * 7,
            "{}",
            segmenter.buffered_bytes()
        );
    }

    #[test]
    fn a_vad_at_another_rate_is_fed_resampled_fixed_frames() {
        let mut segmenter = TurnSegmenter::new(
            AudioFormat::pcm16(48_000, 1),
            EarshotVadConfig::new().fresh().unwrap(),
            Box::new(TurnConfig::new().detector()),
        )
        .unwrap();
        let mut out = Vec::new();
        let frame = AudioFrame::new(vec![0_u8; 1920], AudioFormat::pcm16(48_000, 1));
        for _ in 0..100 {
            segmenter.push(&frame, &mut out).unwrap();
        }
        segmenter.finish(&mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(segmenter.now(), Duration::from_secs(2));
        let wrong = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
        assert!(matches!(
            segmenter.push(&wrong, &mut out),
            Err(SpeechError::UnsupportedFormat(_))
        ));
        assert!(
            TurnSegmenter::new(
                AudioFormat::MULAW_8K_MONO,
                EarshotVadConfig::new().fresh().unwrap(),
                Box::new(TurnConfig::new().detector()),
            )
            .is_err()
        );
    }
}
