//! G.711 against CPython's `audioop`, byte for byte: every PCM16 value encoded and every
//! code decoded, from the tables `fixtures/g711/make_fixtures.py` wrote with Python 3.11
//! (committed, because `audioop` is gone from Python 3.13).

use promptkit_audio::g711;

const ULAW_ENCODE: &[u8] = include_bytes!("fixtures/g711/ulaw_encode.bin");
const ALAW_ENCODE: &[u8] = include_bytes!("fixtures/g711/alaw_encode.bin");
const ULAW_DECODE: &[u8] = include_bytes!("fixtures/g711/ulaw_decode.bin");
const ALAW_DECODE: &[u8] = include_bytes!("fixtures/g711/alaw_decode.bin");

/// Every PCM16 value in ascending order, as little-endian bytes (the fixtures' order).
fn every_sample() -> Vec<u8> {
    (i16::MIN..=i16::MAX).flat_map(i16::to_le_bytes).collect()
}

fn first_difference(expected: &[u8], actual: &[u8], width: usize) -> Option<String> {
    assert_eq!(expected.len(), actual.len());
    (0..expected.len() / width).find_map(|i| {
        let range = i * width..(i + 1) * width;
        (expected[range.clone()] != actual[range.clone()]).then(|| {
            format!(
                "entry {i}: audioop {:02x?}, ours {:02x?}",
                &expected[range.clone()],
                &actual[range]
            )
        })
    })
}

#[test]
fn encoders_match_audioop_over_all_65536_values() {
    assert_eq!(ULAW_ENCODE.len(), 65_536);
    assert_eq!(ALAW_ENCODE.len(), 65_536);
    let pcm = every_sample();
    let mut ulaw = Vec::new();
    g711::encode_ulaw(&pcm, &mut ulaw);
    assert_eq!(first_difference(ULAW_ENCODE, &ulaw, 1), None, "mu-law");
    let mut alaw = Vec::new();
    g711::encode_alaw(&pcm, &mut alaw);
    assert_eq!(first_difference(ALAW_ENCODE, &alaw, 1), None, "A-law");
}

#[test]
fn decoders_match_audioop_over_all_256_codes() {
    let codes: Vec<u8> = (0..=255).collect();
    let mut pcm = Vec::new();
    g711::decode_ulaw(&codes, &mut pcm);
    assert_eq!(first_difference(ULAW_DECODE, &pcm, 2), None, "mu-law");
    pcm.clear();
    g711::decode_alaw(&codes, &mut pcm);
    assert_eq!(first_difference(ALAW_DECODE, &pcm, 2), None, "A-law");
}
