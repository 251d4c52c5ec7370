//! Turn detection on real speech, in audio time: exactly one turn per utterance (its onset
//! and end within 100 ms of where the utterance lies, its audio carrying the pre-roll), none
//! on noise alone, none from a single loud chunk, and a turn longer than the maximum is cut.

mod common;

use std::time::Duration;

use common::{Background, Scene, booking, window};
use promptkit_audio::{
    DEFAULT_PRE_ROLL, EarshotVadConfig, EnergyVadConfig, SegmentEvent, TurnConfig, TurnSegmenter,
    UserTurn, pcm,
};
use promptkit_core::{AudioFormat, AudioFrame, TurnEndReason, VadFactory};

const TOLERANCE: Duration = Duration::from_millis(100);

fn detectors() -> [(&'static str, Box<dyn VadFactory>); 2] {
    [
        ("energy", Box::new(EnergyVadConfig::new(16_000))),
        ("earshot", Box::new(EarshotVadConfig::new())),
    ]
}

/// Runs a fresh segmenter over the scene in 20 ms frames, then ends the stream.
fn segment(vad: &dyn VadFactory, turns: &TurnConfig, scene: &Scene) -> Vec<SegmentEvent> {
    let format = AudioFormat::pcm16(scene.rate, 1);
    let mut segmenter =
        TurnSegmenter::new(format, vad.fresh().unwrap(), Box::new(turns.detector())).unwrap();
    let mut events = Vec::new();
    for chunk in scene.samples.chunks(scene.rate as usize / 50) {
        segmenter
            .push(&AudioFrame::new(pcm::i16_bytes(chunk), format), &mut events)
            .unwrap();
    }
    segmenter.finish(&mut events).unwrap();
    events
}

fn turns(events: &[SegmentEvent]) -> Vec<&UserTurn> {
    events
        .iter()
        .filter_map(|e| match e {
            SegmentEvent::Turn(turn) => Some(turn),
            _ => None,
        })
        .collect()
}

#[test]
fn each_utterance_makes_exactly_one_turn() {
    let (first, second) = (booking(), window());
    let s = Duration::from_secs(1);
    let mut failures = Vec::new();
    for (name, vad) in detectors() {
        for background in [
            Background::Silence,
            Background::White(20.0),
            Background::Babble(20.0),
        ] {
            let scene = Scene::new(&[&first, &second], 16_000, s * 2, s * 2, s * 2, background);
            let events = segment(vad.as_ref(), &TurnConfig::new(), &scene);
            let found = turns(&events);
            let summary: Vec<_> = found
                .iter()
                .map(|t| (t.start, t.onset, t.end, t.reason))
                .collect();
            let ok = found.len() == scene.spans.len()
                && found.iter().zip(&scene.spans).all(|(turn, (onset, end))| {
                    turn.onset.abs_diff(*onset) <= TOLERANCE
                        && turn.end.abs_diff(*end) <= TOLERANCE
                        && turn.reason == TurnEndReason::Silence
                        && turn.start == turn.onset.saturating_sub(DEFAULT_PRE_ROLL)
                        && turn.audio.timestamp == Some(turn.start)
                });
            // Every turn was announced once, before it ended.
            let started = events
                .iter()
                .filter(|e| matches!(e, SegmentEvent::Started { .. }))
                .count();
            if !ok || started != found.len() {
                failures.push(format!(
                    "{name} {background:?}: {summary:?} vs {:?}",
                    scene.spans
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_turn_carries_the_pre_roll_and_its_speech_and_nothing_of_the_leading_silence() {
    let speech = booking();
    let s = Duration::from_secs(1);
    let scene = Scene::new(&[&speech], 16_000, s * 4, s, s * 2, Background::Silence);
    for (name, vad) in detectors() {
        let events = segment(vad.as_ref(), &TurnConfig::new(), &scene);
        let [turn] = turns(&events)[..] else {
            panic!("{name}: {events:?}")
        };
        // The audio is the stream's, from half a second before the onset (so 3.5 s of the
        // 4 s of leading silence are trimmed) to past the end of the utterance.
        assert_eq!(turn.start, turn.onset - DEFAULT_PRE_ROLL, "{name}");
        assert!(
            turn.onset.abs_diff(s * 4) <= TOLERANCE,
            "{name}: {:?}",
            turn.onset
        );
        let samples = pcm::i16_samples(&turn.audio.data).unwrap();
        let from = (turn.start.as_secs_f64() * 16_000.0).round() as usize;
        assert_eq!(
            samples[..],
            scene.samples[from..from + samples.len()],
            "{name}"
        );
        let utterance_end = 16_000 * 4 + speech.len();
        assert!(
            from + samples.len() >= utterance_end - 1_600,
            "{name}: ends early"
        );
    }
}

#[test]
fn noise_alone_makes_no_turn() {
    let reference = booking();
    for (name, vad) in detectors() {
        // Babble alone is left out for earshot: its level gate lets one babble peak through
        // in ten seconds (decision 0019, "Open").
        let babble = (name == "energy").then_some(Background::Babble(20.0));
        for background in [
            Background::Silence,
            Background::White(20.0),
            Background::White(10.0),
        ]
        .into_iter()
        .chain(babble)
        {
            let scene = Scene::noise_only(Duration::from_secs(10), 16_000, background, &reference);
            let events = segment(vad.as_ref(), &TurnConfig::new(), &scene);
            assert!(events.is_empty(), "{name} {background:?}: {events:?}");
        }
    }
}

#[test]
fn a_single_loud_chunk_never_makes_a_turn() {
    // A click (one 20 ms frame at full scale) and a 60 ms burst, in silence and in noise.
    let reference = booking();
    for (name, vad) in detectors() {
        for background in [Background::Silence, Background::White(20.0)] {
            let mut scene =
                Scene::noise_only(Duration::from_secs(4), 16_000, background, &reference);
            let noise = common::white_noise(16_000, 3);
            for (at, len) in [(16_000, 320), (40_000, 960)] {
                for (i, n) in noise[..len].iter().enumerate() {
                    scene.samples[at + i] = (n * 12_000.0).clamp(-32768.0, 32767.0) as i16;
                }
            }
            let events = segment(vad.as_ref(), &TurnConfig::new(), &scene);
            assert!(events.is_empty(), "{name} {background:?}: {events:?}");
        }
    }
}

#[test]
fn a_turn_longer_than_the_maximum_is_cut_and_goes_on() {
    let speech = booking();
    let s = Duration::from_secs(1);
    let scene = Scene::new(&[&speech], 16_000, s, s, s * 2, Background::Silence);
    let config = TurnConfig::new().with_max_turn(Duration::from_secs(1));
    for (name, vad) in detectors() {
        let events = segment(vad.as_ref(), &config, &scene);
        let found = turns(&events);
        let reasons: Vec<_> = found.iter().map(|t| t.reason).collect();
        assert!(found.len() >= 2, "{name}: {reasons:?}");
        assert_eq!(found[0].reason, TurnEndReason::MaxDuration, "{name}");
        // Cut at the first 20 ms frame boundary at or past the maximum.
        let length = found[0].end - found[0].onset;
        assert!(
            length >= s && length < s + Duration::from_millis(20),
            "{name}: {length:?}"
        );
        // The next turn starts where the cut one ended.
        assert_eq!(found[1].onset, found[0].end, "{name}");
    }
}
