//! The resampler on real speech: 48 kHz to 16 kHz and back keeps speech below 7 kHz at
//! 40 dB SNR or better, and feeding it in chunks gives exactly the samples of one buffer.

mod common;

use promptkit_audio::resample::Resampler;

/// Runs `input` through a fresh resampler in chunks of the sizes given, cyclically (one
/// size of `input.len()` is the whole buffer at once).
fn convert(from: u32, to: u32, input: &[i16], sizes: &[usize]) -> Vec<i16> {
    let mut resampler = Resampler::new(from, to).unwrap();
    let mut out = Vec::new();
    let mut rest = input;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        resampler.process_i16(chunk, &mut out);
        rest = tail;
    }
    resampler.finish_i16(&mut out);
    out
}

fn snr_db(reference: &[i16], actual: &[i16]) -> f64 {
    assert_eq!(reference.len(), actual.len());
    let (mut signal, mut noise) = (0.0_f64, 0.0_f64);
    for (r, a) in reference.iter().zip(actual) {
        signal += f64::from(*r).powi(2);
        noise += (f64::from(*r) - f64::from(*a)).powi(2);
    }
    10.0 * (signal / noise).log10()
}

#[test]
fn a_round_trip_through_16_khz_keeps_speech_below_7_khz_at_40_db() {
    let speech = common::fixture("hello_48k.wav", 48_000);
    let whole = speech.len();
    let down = convert(48_000, 16_000, &speech, &[whole]);
    assert_eq!(down.len(), whole.div_ceil(3));
    let back = convert(16_000, 48_000, &down, &[down.len()]);
    let back = &back[..whole];
    let quality = snr_db(&speech, back);
    assert!(quality >= 40.0, "{quality:.1} dB");
}

#[test]
fn chunked_and_whole_buffer_processing_give_the_same_samples() {
    let speech = common::fixture("hello_48k.wav", 48_000);
    // 20 ms frames, 10 ms frames, and sizes that never line up with the ratio.
    for sizes in [vec![960], vec![480], vec![1, 7, 333, 960, 2, 4_801]] {
        let whole = convert(48_000, 16_000, &speech, &[speech.len()]);
        assert_eq!(convert(48_000, 16_000, &speech, &sizes), whole, "{sizes:?}");
        let up = convert(16_000, 48_000, &whole, &[whole.len()]);
        let small: Vec<usize> = sizes.iter().map(|s| s.div_ceil(3)).collect();
        assert_eq!(convert(16_000, 48_000, &whole, &small), up, "{small:?}");
    }
    // 44.1 kHz, the one rate that is no integer ratio of the others.
    let cd = convert(48_000, 44_100, &speech, &[speech.len()]);
    assert_eq!(
        convert(44_100, 16_000, &cd, &[441, 1, 882, 97]),
        convert(44_100, 16_000, &cd, &[cd.len()])
    );
}
