//! End-of-turn detection in audio time: VAD silence, minimum and maximum lengths, and the
//! recogniser's endpointing.

use std::time::Duration;

use promptkit_core::{
    SpeechError, SttEvent, TurnDetector, TurnDetectorFactory, TurnEnd, TurnEndReason, TurnEvent,
    TurnSignal, VadEvent,
};

/// What the recogniser's endpointing (`speech_final`, utterance end) does to a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SttEndpointing {
    /// Nothing: only silence, the maximum length and a semantic model end turns.
    Ignore,
    /// An endpoint ends the turn as soon as the VAD hears no speech, before the silence
    /// window has passed (the recogniser often knows sooner).
    End,
    /// Silence ends a turn only once the recogniser also sent an endpoint, or after
    /// [`TurnConfig::confirm_timeout`] of silence: for speech with long pauses (a phone
    /// number read out) where silence alone cuts the user off.
    Confirm,
}

/// Settings of the [`SilenceTurnDetector`]; also its [`TurnDetectorFactory`].
///
/// `#[non_exhaustive]`: built with [`TurnConfig::new`] (or `default()`) and the `with_*`
/// methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TurnConfig {
    /// Speech (as the VAD confirmed it, pauses excluded) a turn needs before it starts.
    pub min_speech: Duration,
    /// Silence after speech that ends a turn. A VAD reports the end of speech only after its
    /// own stop window, so the effective silence is at least that window.
    pub silence: Duration,
    /// The longest turn: a turn this long ends, and continuing speech starts the next one.
    pub max_turn: Duration,
    /// What the recogniser's endpointing does.
    pub stt: SttEndpointing,
    /// With [`SttEndpointing::Confirm`], the silence that ends a turn without an endpoint.
    pub confirm_timeout: Duration,
    /// The semantic model probability that ends a turn once the user is silent; `None`
    /// ignores such signals.
    pub semantic_threshold: Option<f32>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl TurnConfig {
    /// The Go original's defaults: min speech 200 ms, silence 800 ms, max turn 30 s;
    /// endpoints end turns; confirm timeout 3 s; semantic threshold 0.5.
    pub fn new() -> Self {
        Self {
            min_speech: Duration::from_millis(200),
            silence: Duration::from_millis(800),
            max_turn: Duration::from_secs(30),
            stt: SttEndpointing::End,
            confirm_timeout: Duration::from_secs(3),
            semantic_threshold: Some(0.5),
        }
    }

    /// Sets the minimum speech.
    #[must_use]
    pub fn with_min_speech(mut self, min_speech: Duration) -> Self {
        self.min_speech = min_speech;
        self
    }

    /// Sets the silence that ends a turn.
    #[must_use]
    pub fn with_silence(mut self, silence: Duration) -> Self {
        self.silence = silence;
        self
    }

    /// Sets the longest turn.
    #[must_use]
    pub fn with_max_turn(mut self, max_turn: Duration) -> Self {
        self.max_turn = max_turn;
        self
    }

    /// Sets what endpoints do.
    #[must_use]
    pub fn with_stt_endpointing(mut self, stt: SttEndpointing) -> Self {
        self.stt = stt;
        self
    }

    /// Sets the confirm timeout.
    #[must_use]
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Sets the semantic threshold.
    #[must_use]
    pub fn with_semantic_threshold(mut self, threshold: Option<f32>) -> Self {
        self.semantic_threshold = threshold;
        self
    }

    /// A detector in its initial state.
    pub fn detector(&self) -> SilenceTurnDetector {
        SilenceTurnDetector {
            config: self.clone(),
            clock: Duration::ZERO,
            speech_since: None,
            voiced: Duration::ZERO,
            onset: None,
            started: false,
            last_offset: Duration::ZERO,
            endpoint: false,
        }
    }
}

impl TurnDetectorFactory for TurnConfig {
    fn name(&self) -> &str {
        "silence"
    }

    fn fresh(&self) -> Result<Box<dyn TurnDetector>, SpeechError> {
        Ok(Box::new(self.detector()))
    }
}

/// Ends turns on silence, length and endpoints, from VAD events; all in audio time.
///
/// A turn candidate begins where the VAD confirmed speech. It becomes a turn
/// ([`TurnEvent::Started`]) once it holds [`TurnConfig::min_speech`] of speech; a candidate
/// that falls silent before that is dropped without an event, so a loud chunk, a cough or a
/// click never makes a turn.
#[derive(Debug, Clone)]
pub struct SilenceTurnDetector {
    config: TurnConfig,
    clock: Duration,
    /// Where the speech in progress began, while the VAD hears speech.
    speech_since: Option<Duration>,
    /// Speech of the candidate in finished stretches.
    voiced: Duration,
    /// The candidate's (or turn's) onset.
    onset: Option<Duration>,
    /// Whether the candidate became a turn.
    started: bool,
    /// Where the last stretch of speech ended.
    last_offset: Duration,
    /// Whether the recogniser sent an endpoint since the last speech.
    endpoint: bool,
}

impl SilenceTurnDetector {
    fn speech(&self) -> Duration {
        self.voiced
            + self
                .speech_since
                .map_or(Duration::ZERO, |since| self.clock.saturating_sub(since))
    }

    fn end(&mut self, end: Duration, reason: TurnEndReason) -> Option<TurnEvent> {
        let onset = self.onset.take()?;
        let started = std::mem::replace(&mut self.started, false);
        self.voiced = Duration::ZERO;
        self.endpoint = false;
        started.then(|| TurnEvent::Ended(TurnEnd::new(onset, end.max(onset), reason)))
    }

    fn on_audio(&mut self) -> Option<TurnEvent> {
        let onset = self.onset?;
        if self.clock.saturating_sub(onset) >= self.config.max_turn {
            let event = self.end(self.clock, TurnEndReason::MaxDuration);
            if self.speech_since.is_some() {
                // The user is still speaking: that is the next turn.
                self.speech_since = Some(self.clock);
                self.onset = Some(self.clock);
            }
            return event;
        }
        if self.speech_since.is_none() {
            let silent = self.clock.saturating_sub(self.last_offset);
            if !self.started {
                if silent >= self.config.silence {
                    self.onset = None;
                    self.voiced = Duration::ZERO;
                }
                return None;
            }
            let confirmed = match self.config.stt {
                SttEndpointing::Confirm => self.endpoint || silent >= self.config.confirm_timeout,
                _ => true,
            };
            if silent >= self.config.silence && confirmed {
                return self.end(self.last_offset, TurnEndReason::Silence);
            }
        }
        self.maybe_start()
    }

    fn maybe_start(&mut self) -> Option<TurnEvent> {
        let onset = self.onset?;
        if !self.started && self.speech() >= self.config.min_speech {
            self.started = true;
            return Some(TurnEvent::Started { onset });
        }
        None
    }

    fn on_vad(&mut self, event: VadEvent) -> Option<TurnEvent> {
        match event {
            VadEvent::SpeechStarted { at } => {
                self.speech_since = Some(at);
                self.onset.get_or_insert(at);
                self.endpoint = false;
            }
            VadEvent::SpeechEnded { at } => {
                if let Some(since) = self.speech_since.take() {
                    self.voiced += at.saturating_sub(since);
                }
                self.last_offset = at;
            }
            _ => {}
        }
        self.maybe_start()
    }

    fn on_stt(&mut self, event: &SttEvent) -> Option<TurnEvent> {
        let is_endpoint = matches!(
            event,
            SttEvent::Final {
                speech_final: true,
                ..
            } | SttEvent::UtteranceEnd { .. }
        );
        if !is_endpoint || !self.started || self.speech_since.is_some() {
            return None;
        }
        match self.config.stt {
            SttEndpointing::End => self.end(self.last_offset, TurnEndReason::SttEndpoint),
            SttEndpointing::Confirm => {
                self.endpoint = true;
                let silent = self.clock.saturating_sub(self.last_offset);
                (silent >= self.config.silence)
                    .then(|| self.end(self.last_offset, TurnEndReason::SttEndpoint))
                    .flatten()
            }
            _ => None,
        }
    }
}

impl TurnDetector for SilenceTurnDetector {
    fn observe(&mut self, signal: TurnSignal<'_>) -> Result<Option<TurnEvent>, SpeechError> {
        Ok(match signal {
            TurnSignal::Audio(frame) => {
                self.clock += frame
                    .duration()
                    .ok_or(SpeechError::UnsupportedFormat(frame.format))?;
                self.on_audio()
            }
            TurnSignal::Vad(decision) => decision.event.and_then(|event| self.on_vad(event)),
            TurnSignal::Stt(event) => self.on_stt(event),
            TurnSignal::EndOfTurnProbability(probability) => {
                let done = self
                    .config
                    .semantic_threshold
                    .is_some_and(|threshold| probability >= threshold);
                if done && self.started && self.speech_since.is_none() {
                    self.end(self.last_offset, TurnEndReason::Semantic)
                } else {
                    None
                }
            }
            TurnSignal::EndOfAudio => {
                let end = if self.speech_since.take().is_some() {
                    self.clock
                } else {
                    self.last_offset
                };
                self.end(end, TurnEndReason::EndOfAudio)
            }
            _ => None,
        })
    }

    fn reset(&mut self) {
        self.onset = None;
        self.started = false;
        self.voiced = Duration::ZERO;
        self.endpoint = false;
        // Speech still in progress is the start of the next candidate.
        if self.speech_since.is_some() {
            self.speech_since = Some(self.clock);
            self.onset = Some(self.clock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promptkit_core::{AudioFormat, AudioFrame, Transcript, VadDecision, VadState};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a detector with 20 ms frames and VAD events given at frame indices.
    struct Script {
        detector: SilenceTurnDetector,
        frame: AudioFrame,
        events: Vec<(u64, TurnEvent)>,
        now: u64,
    }

    impl Script {
        fn new(config: &TurnConfig) -> Self {
            Self {
                detector: config.detector(),
                frame: AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO),
                events: Vec::new(),
                now: 0,
            }
        }

        fn record(&mut self, event: Option<TurnEvent>) {
            if let Some(event) = event {
                self.events.push((self.now, event));
            }
        }

        /// Advances to `until` ms.
        fn run(&mut self, until: u64) {
            while self.now < until {
                let event = self
                    .detector
                    .observe(TurnSignal::Audio(&self.frame))
                    .unwrap();
                self.now += 20;
                self.record(event);
            }
        }

        fn vad(&mut self, event: VadEvent) {
            let decision = VadDecision::new(VadState::Speaking, 1.0).with_event(event);
            let event = self.detector.observe(TurnSignal::Vad(decision)).unwrap();
            self.record(event);
        }

        fn signal(&mut self, signal: TurnSignal<'_>) {
            let event = self.detector.observe(signal).unwrap();
            self.record(event);
        }
    }

    fn ended(onset: u64, end: u64, reason: TurnEndReason) -> TurnEvent {
        TurnEvent::Ended(TurnEnd::new(ms(onset), ms(end), reason))
    }

    #[test]
    fn speech_then_silence_makes_one_turn() {
        let mut s = Script::new(&TurnConfig::new());
        s.run(400);
        s.vad(VadEvent::SpeechStarted { at: ms(200) });
        s.run(1200);
        s.vad(VadEvent::SpeechEnded { at: ms(900) });
        s.run(3000);
        assert_eq!(
            s.events,
            [
                (400, TurnEvent::Started { onset: ms(200) }),
                (1700, ended(200, 900, TurnEndReason::Silence)),
            ]
        );
    }

    #[test]
    fn short_speech_makes_no_turn_and_pauses_merge() {
        let mut s = Script::new(&TurnConfig::new());
        // 100 ms of speech, then silence: dropped.
        s.run(300);
        s.vad(VadEvent::SpeechStarted { at: ms(200) });
        s.vad(VadEvent::SpeechEnded { at: ms(300) });
        s.run(2000);
        assert!(s.events.is_empty(), "{:?}", s.events);
        // Two stretches of 120 ms with a 500 ms pause: one turn from the first onset.
        s.vad(VadEvent::SpeechStarted { at: ms(2000) });
        s.run(2120);
        s.vad(VadEvent::SpeechEnded { at: ms(2120) });
        s.run(2620);
        s.vad(VadEvent::SpeechStarted { at: ms(2620) });
        s.run(2740);
        s.vad(VadEvent::SpeechEnded { at: ms(2740) });
        s.run(4000);
        assert_eq!(
            s.events,
            [
                (2700, TurnEvent::Started { onset: ms(2000) }),
                (3540, ended(2000, 2740, TurnEndReason::Silence)),
            ]
        );
    }

    #[test]
    fn a_long_turn_is_cut_at_the_maximum_and_goes_on() {
        let mut s = Script::new(&TurnConfig::new().with_max_turn(ms(1000)));
        s.vad(VadEvent::SpeechStarted { at: ms(0) });
        s.run(2500);
        s.signal(TurnSignal::EndOfAudio);
        assert_eq!(
            s.events,
            [
                (200, TurnEvent::Started { onset: ms(0) }),
                (1000, ended(0, 1000, TurnEndReason::MaxDuration)),
                (1200, TurnEvent::Started { onset: ms(1000) }),
                (2000, ended(1000, 2000, TurnEndReason::MaxDuration)),
                (2200, TurnEvent::Started { onset: ms(2000) }),
                (2500, ended(2000, 2500, TurnEndReason::EndOfAudio)),
            ]
        );
    }

    fn endpoint() -> SttEvent {
        SttEvent::Final {
            transcript: Transcript::new("hello"),
            speech_final: true,
            from_finalize: false,
        }
    }

    #[test]
    fn an_stt_endpoint_ends_the_turn_early_but_not_while_speaking() {
        let mut s = Script::new(&TurnConfig::new());
        s.vad(VadEvent::SpeechStarted { at: ms(0) });
        s.run(500);
        s.signal(TurnSignal::Stt(&endpoint()));
        assert_eq!(s.events.len(), 1, "still speaking: {:?}", s.events);
        s.vad(VadEvent::SpeechEnded { at: ms(500) });
        s.run(700);
        s.signal(TurnSignal::Stt(&SttEvent::UtteranceEnd { at: ms(480) }));
        assert_eq!(
            s.events[1],
            (700, ended(0, 500, TurnEndReason::SttEndpoint))
        );
        s.run(3000);
        assert_eq!(s.events.len(), 2);
    }

    #[test]
    fn confirm_waits_for_an_endpoint_or_the_timeout() {
        let config = TurnConfig::new().with_stt_endpointing(SttEndpointing::Confirm);
        let mut s = Script::new(&config);
        s.vad(VadEvent::SpeechStarted { at: ms(0) });
        s.run(400);
        s.vad(VadEvent::SpeechEnded { at: ms(400) });
        s.run(2000);
        assert_eq!(s.events.len(), 1, "silence alone does not end it");
        s.signal(TurnSignal::Stt(&endpoint()));
        assert_eq!(
            s.events[1],
            (2000, ended(0, 400, TurnEndReason::SttEndpoint))
        );

        let mut s = Script::new(&config);
        s.vad(VadEvent::SpeechStarted { at: ms(0) });
        s.run(400);
        s.vad(VadEvent::SpeechEnded { at: ms(400) });
        s.run(4000);
        assert_eq!(s.events[1], (3400, ended(0, 400, TurnEndReason::Silence)));

        let ignore = TurnConfig::new().with_stt_endpointing(SttEndpointing::Ignore);
        let mut s = Script::new(&ignore);
        s.vad(VadEvent::SpeechStarted { at: ms(0) });
        s.run(400);
        s.vad(VadEvent::SpeechEnded { at: ms(400) });
        s.run(500);
        s.signal(TurnSignal::Stt(&endpoint()));
        assert_eq!(s.events.len(), 1);
    }

    #[test]
    fn a_semantic_model_ends_the_turn_once_the_user_is_silent() {
        let mut s = Script::new(&TurnConfig::new());
        s.vad(VadEvent::SpeechStarted { at: ms(0) });
        s.run(400);
        s.signal(TurnSignal::EndOfTurnProbability(0.9));
        assert_eq!(s.events.len(), 1);
        s.vad(VadEvent::SpeechEnded { at: ms(400) });
        s.run(500);
        s.signal(TurnSignal::EndOfTurnProbability(0.2));
        s.signal(TurnSignal::EndOfTurnProbability(0.8));
        assert_eq!(s.events[1], (500, ended(0, 400, TurnEndReason::Semantic)));
    }

    #[test]
    fn reset_forgets_the_turn_in_progress() {
        let mut s = Script::new(&TurnConfig::new());
        s.vad(VadEvent::SpeechStarted { at: ms(0) });
        s.run(300);
        s.detector.reset();
        s.vad(VadEvent::SpeechEnded { at: ms(300) });
        s.run(2000);
        s.signal(TurnSignal::EndOfAudio);
        assert_eq!(s.events, [(200, TurnEvent::Started { onset: ms(0) })]);
    }
}
