//! Both detectors on real speech: onset and offset within 100 ms of where the utterance was
//! placed, in silence, in white noise at 20 dB and 10 dB SNR and in babble at 20 dB SNR.

mod common;

use std::time::Duration;

use common::{Background, Scene, booking};
use promptkit_audio::rechunk::Rechunker;
use promptkit_audio::{EarshotVadConfig, EnergyVadConfig, pcm};
use promptkit_core::{AudioFormat, AudioFrame, VadEvent, VadFactory};

const TOLERANCE: Duration = Duration::from_millis(100);

/// Runs a fresh detector over the scene in 20 ms frames; returns its events.
fn detect(factory: &dyn VadFactory, scene: &Scene) -> Vec<VadEvent> {
    let mut vad = factory.fresh().unwrap();
    let format = AudioFormat::pcm16(scene.rate, 1);
    assert_eq!(vad.format(), format);
    let mut rechunker = vad
        .frame_samples()
        .map(|n| Rechunker::new(format, n).unwrap());
    let mut events = Vec::new();
    let mut frames = Vec::new();
    for chunk in scene.samples.chunks(scene.rate as usize / 50) {
        let frame = AudioFrame::new(pcm::i16_bytes(chunk), format);
        frames.clear();
        match &mut rechunker {
            Some(r) => r.push(&frame, &mut frames).unwrap(),
            None => frames.push(frame),
        }
        for f in &frames {
            events.extend(vad.process(f).unwrap().event);
        }
    }
    events
}

fn check(name: &str, factory: &dyn VadFactory, background: Background) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_one(name, factory, background);
    }))
    .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
}

fn check_one(name: &str, factory: &dyn VadFactory, background: Background) {
    let speech = booking();
    let second = Duration::from_secs(1);
    let scene = Scene::new(
        &[&speech],
        16_000,
        second * 3 / 2,
        second,
        second * 3 / 2,
        background,
    );
    let (onset, offset) = scene.spans[0];
    let events = detect(factory, &scene);
    let first = events.iter().find_map(|e| match e {
        VadEvent::SpeechStarted { at } => Some(*at),
        _ => None,
    });
    let last = events.iter().rev().find_map(|e| match e {
        VadEvent::SpeechEnded { at } => Some(*at),
        _ => None,
    });
    let first = first.unwrap_or_else(|| panic!("{name} {background:?}: no speech found"));
    let last = last.unwrap_or_else(|| panic!("{name} {background:?}: speech never ended"));
    assert!(
        first.abs_diff(onset) <= TOLERANCE,
        "{name} {background:?}: onset {first:?}, placed at {onset:?}"
    );
    assert!(
        last.abs_diff(offset) <= TOLERANCE,
        "{name} {background:?}: offset {last:?}, placed at {offset:?}"
    );
    // Nothing before the utterance or after it.
    let outside = events.iter().filter(|e| {
        let at = e.at();
        at + TOLERANCE < onset || at > offset + TOLERANCE
    });
    assert_eq!(outside.count(), 0, "{name} {background:?}: {events:?}");
}

/// Babble at 10 dB SNR is not here: both detectors find the utterance in it, but up to
/// 700 ms late (decision 0019, "Open").
const BACKGROUNDS: [Background; 4] = [
    Background::Silence,
    Background::White(20.0),
    Background::White(10.0),
    Background::Babble(20.0),
];

#[test]
fn energy_vad_finds_speech_in_silence_and_noise() {
    let failures: Vec<String> = BACKGROUNDS
        .iter()
        .filter_map(|b| check("energy", &EnergyVadConfig::new(16_000), *b).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn earshot_vad_finds_speech_in_silence_and_noise() {
    let failures: Vec<String> = BACKGROUNDS
        .iter()
        .filter_map(|b| check("earshot", &EarshotVadConfig::new(), *b).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
