//! Real speech from the local `espeak-ng` program: energy and a plausible duration at 16
//! and 24 kHz, text that looks like an option spoken as text, and the typed error when the
//! program is missing.
//!
//! Without `espeak-ng` installed these tests print a SKIPPED line and pass, unless the
//! environment variable `CI` is `true` or `1`: on CI the program must be there.

use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_audio::espeak::{EspeakConfig, EspeakTts};
use promptkit_audio::pcm;
use promptkit_core::{AudioFormat, AudioFrame, SpeechError, SynthesisOptions, TextToSpeech};

/// The synthesiser, or `None` (after a SKIPPED line) when espeak-ng is missing off CI.
#[expect(clippy::print_stdout, reason = "the SKIPPED line of a skipped test")]
async fn espeak(test: &str) -> Option<EspeakTts> {
    let tts = EspeakTts::new(EspeakConfig::new().with_timeout(Duration::from_secs(20))).unwrap();
    if tts.available().await {
        return Some(tts);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "espeak-ng is not installed, and CI requires it ({test})"
    );
    println!("SKIPPED {test}: espeak-ng is not installed");
    None
}

/// The error of a synthesis that must fail to start.
fn refused(result: Result<promptkit_core::AudioStream, SpeechError>) -> SpeechError {
    match result {
        Err(error) => error,
        Ok(_) => panic!("the synthesis started"),
    }
}

async fn speak(tts: &EspeakTts, text: &str, format: AudioFormat) -> Vec<AudioFrame> {
    let options = SynthesisOptions::new().with_format(format);
    let mut stream = tts.synthesize(text, &options).await.unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = stream.next().await {
        frames.push(frame.unwrap());
    }
    frames
}

/// The fraction of 20 ms windows whose RMS is above speech level, and the total duration.
fn speech_profile(frames: &[AudioFrame], format: AudioFormat) -> (f64, Duration) {
    let mut samples = Vec::new();
    for frame in frames {
        assert_eq!(frame.format, format);
        assert_eq!(
            frame.data.len() % format.bytes_per_sample_frame().unwrap(),
            0,
            "whole samples"
        );
        assert_eq!(
            frame.timestamp,
            format.duration_of_samples(samples.len()),
            "frames follow each other"
        );
        let d = frame.duration().unwrap();
        assert!(d <= Duration::from_millis(100), "{d:?}");
        samples.extend(pcm::decode_to_i16(frame).unwrap());
    }
    let at = format.duration_of_samples(samples.len()).unwrap();
    let window = format.sample_rate as usize / 50;
    let windows: Vec<f64> = samples
        .chunks(window)
        .map(|w| {
            let energy: f64 = w.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            (energy / w.len() as f64).sqrt()
        })
        .collect();
    let loud = windows.iter().filter(|&&rms| rms > 500.0).count();
    (loud as f64 / windows.len().max(1) as f64, at)
}

#[tokio::test]
async fn espeak_speaks_at_16_and_24_khz() {
    let Some(tts) = espeak("espeak_speaks_at_16_and_24_khz").await else {
        return;
    };
    let text = "Hello, this is the local voice speaking a short sentence.";
    for format in [AudioFormat::PCM16_16K_MONO, AudioFormat::PCM16_24K_MONO] {
        let frames = speak(&tts, text, format).await;
        assert!(frames.len() > 10, "streamed in frames: {}", frames.len());
        let (speech, duration) = speech_profile(&frames, format);
        // About ten words at 175 words a minute: three to four seconds.
        assert!(
            duration > Duration::from_millis(1500) && duration < Duration::from_secs(10),
            "{format:?}: {duration:?}"
        );
        assert!(
            speech > 0.3,
            "{format:?}: {speech} of the windows are speech"
        );
    }
}

#[tokio::test]
async fn espeak_speaks_mulaw_for_telephony_and_scales_its_rate() {
    let Some(tts) = espeak("espeak_speaks_mulaw_for_telephony_and_scales_its_rate").await else {
        return;
    };
    let text = "Thank you for calling.";
    let frames = speak(&tts, text, AudioFormat::MULAW_8K_MONO).await;
    let (speech, normal) = speech_profile(&frames, AudioFormat::MULAW_8K_MONO);
    assert!(speech > 0.3, "{speech}");
    let options = SynthesisOptions::new()
        .with_format(AudioFormat::MULAW_8K_MONO)
        .with_speed(2.0);
    let mut stream = tts.synthesize(text, &options).await.unwrap();
    let mut fast = Duration::ZERO;
    while let Some(frame) = stream.next().await {
        fast += frame.unwrap().duration().unwrap();
    }
    assert!(
        fast < normal,
        "{fast:?} at double speed, {normal:?} at normal speed"
    );
}

#[tokio::test]
async fn text_that_looks_like_an_option_is_spoken() {
    let Some(tts) = espeak("text_that_looks_like_an_option_is_spoken").await else {
        return;
    };
    for text in [
        "--version please read this aloud",
        "-v xx -w /tmp/owned.wav hello",
    ] {
        let frames = speak(&tts, text, AudioFormat::PCM16_16K_MONO).await;
        let (speech, duration) = speech_profile(&frames, AudioFormat::PCM16_16K_MONO);
        assert!(
            duration > Duration::from_millis(800),
            "{text}: {duration:?}"
        );
        assert!(speech > 0.3, "{text}: {speech}");
    }
    assert!(!std::path::Path::new("/tmp/owned.wav").exists());
}

#[tokio::test]
async fn a_missing_program_is_a_typed_error_naming_it() {
    let tts = EspeakTts::new(
        EspeakConfig::new()
            .with_program("/nonexistent/bin/espeak-ng-missing")
            .with_timeout(Duration::from_secs(5)),
    )
    .unwrap();
    assert!(!tts.available().await);
    let error = refused(tts.synthesize("Hello.", &SynthesisOptions::new()).await);
    match error {
        SpeechError::Unsupported { message } => {
            assert!(
                message.contains("/nonexistent/bin/espeak-ng-missing"),
                "{message}"
            );
            assert!(message.contains("espeak-ng"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unknown_voice_is_a_service_error_with_the_program_s_message() {
    let Some(_) = espeak("an_unknown_voice_is_a_service_error_with_the_program_s_message").await
    else {
        return;
    };
    let tts = EspeakTts::new(EspeakConfig::new().with_voice("qqq")).unwrap();
    let error = refused(tts.synthesize("Hello.", &SynthesisOptions::new()).await);
    assert!(
        matches!(&error, SpeechError::Service { status: 0, message } if message.contains("espeak-ng")),
        "{error:?}"
    );
    let error = refused(
        tts.synthesize("Hello.", &SynthesisOptions::new().with_voice("--stdout"))
            .await,
    );
    assert!(
        matches!(error, SpeechError::InvalidInput { .. }),
        "{error:?}"
    );
    assert_eq!(tts.price().unwrap().per_million_characters, Some(0.0));
}

/// A stand-in for espeak-ng: a shell script with `body`, in a directory of its own.
#[cfg(unix)]
fn fake_program(name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("promptkit-espeak-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("espeak-ng");
    std::fs::write(&path, format!("#!/bin/sh\ncat > /dev/null\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A mono PCM16 22 050 Hz WAV header with espeak-ng's streaming data length, in `printf`
/// octal escapes.
#[cfg(unix)]
const HEADER: &str = r"printf 'RIFF\044\360\377\177WAVEfmt \020\000\000\000\001\000\001\000\042\126\000\000\104\254\000\000\002\000\020\000data\000\360\377\177'";

#[cfg(unix)]
fn fake(program: std::path::PathBuf) -> EspeakTts {
    EspeakTts::new(
        EspeakConfig::new()
            .with_program(program)
            .with_timeout(Duration::from_millis(500)),
    )
    .unwrap()
}

#[cfg(unix)]
#[tokio::test]
async fn a_program_that_writes_no_wav_or_fails_is_a_service_error() {
    let garbage = fake(fake_program("garbage", "echo 'this is not audio at all'"));
    let error = refused(garbage.synthesize("Hello.", &SynthesisOptions::new()).await);
    assert!(
        matches!(&error, SpeechError::Service { status: 0, message } if message.contains("not a WAV")),
        "{error:?}"
    );
    let failing = fake(fake_program(
        "failing",
        "echo 'voice data missing' >&2; exit 3",
    ));
    let error = refused(failing.synthesize("Hello.", &SynthesisOptions::new()).await);
    assert!(
        matches!(&error, SpeechError::Service { status: 0, message }
            if message.contains("voice data missing") && message.contains("no audio")),
        "{error:?}"
    );
    // Audio, then a failure: the audio is delivered, then the error ends the stream.
    let broken = fake(fake_program(
        "broken",
        &format!("{HEADER}; head -c 8820 /dev/zero; echo 'crashed' >&2; exit 1"),
    ));
    let mut stream = broken
        .synthesize("Hello.", &SynthesisOptions::new())
        .await
        .unwrap();
    let mut samples = 0;
    let mut error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(frame) => samples += frame.samples().unwrap(),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    assert!(stream.next().await.is_none(), "the error is terminal");
    assert!(samples > 0 && samples <= 3_200, "{samples}");
    assert!(
        matches!(&error, Some(SpeechError::Service { message, .. }) if message.contains("crashed")),
        "{error:?}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_silent_program_times_out_and_a_dropped_stream_kills_it() {
    let silent = fake(fake_program("silent", "exec sleep 30"));
    let error = refused(silent.synthesize("Hello.", &SynthesisOptions::new()).await);
    assert!(matches!(error, SpeechError::Timeout(_)), "{error:?}");

    let pid_file =
        std::env::temp_dir().join(format!("promptkit-espeak-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let stalling = fake(fake_program(
        "stalling",
        &format!(
            "echo $$ > {}; {HEADER}; head -c 8820 /dev/zero; exec sleep 30",
            pid_file.display()
        ),
    ));
    let mut stream = stalling
        .synthesize("Hello.", &SynthesisOptions::new())
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.format, AudioFormat::PCM16_16K_MONO);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    drop(stream);
    // Killed on drop: gone, or a zombie waiting to be reaped. Polled, not timed.
    let mut gone = false;
    for _ in 0..100 {
        match std::fs::read_to_string(&stat) {
            Err(_) => gone = true,
            Ok(stat) => gone = stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')),
        }
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the program still runs after its stream was dropped");
    let _ = std::fs::remove_file(&pid_file);
}
