//! PCM sample conversions: bytes and samples, PCM16 and f32, G.711, channel mixing.
//!
//! Float samples use the symmetric scale of most audio libraries: PCM16 `x` is `x / 32768`,
//! and a float becomes `round(x * 32768)` clamped to the PCM16 range.

use bytes::Bytes;
use promptkit_core::{AudioEncoding, AudioFormat, AudioFrame};

use crate::error::AudioError;
use crate::g711;

const SCALE: f32 = 32768.0;

/// Checks that `len` bytes hold whole samples of every channel of `format` (a raw format).
///
/// # Errors
/// [`AudioError::UnsupportedFormat`] for compressed encodings, [`AudioError::PartialSample`]
/// when the length is not whole.
pub fn check_whole(format: AudioFormat, len: usize) -> Result<(), AudioError> {
    let sample_bytes = format
        .bytes_per_sample_frame()
        .filter(|b| *b > 0)
        .ok_or(AudioError::UnsupportedFormat(format))?;
    if len.is_multiple_of(sample_bytes) {
        Ok(())
    } else {
        Err(AudioError::PartialSample { len, sample_bytes })
    }
}

/// Reads little-endian PCM16 bytes as samples.
///
/// # Errors
/// [`AudioError::PartialSample`] on an odd length.
pub fn i16_samples(data: &[u8]) -> Result<Vec<i16>, AudioError> {
    if !data.len().is_multiple_of(2) {
        return Err(AudioError::PartialSample {
            len: data.len(),
            sample_bytes: 2,
        });
    }
    Ok(data
        .chunks_exact(2)
        .map(|s| i16::from_le_bytes([s[0], s[1]]))
        .collect())
}

/// Writes samples as little-endian PCM16 bytes.
pub fn i16_bytes(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for sample in samples {
        out.extend_from_slice(&sample.to_le_bytes());
    }
    out
}

/// Converts PCM16 samples to floats in `[-1, 1)`, appending to `out`.
pub fn i16_to_f32(samples: &[i16], out: &mut Vec<f32>) {
    out.extend(samples.iter().map(|&s| f32::from(s) / SCALE));
}

/// Converts float samples to PCM16, rounding and clamping, appending to `out`.
pub fn f32_to_i16(samples: &[f32], out: &mut Vec<i16>) {
    out.extend(samples.iter().map(|&s| f32_sample_to_i16(s)));
}

/// One float sample as PCM16, rounded and clamped (NaN becomes 0).
pub fn f32_sample_to_i16(sample: f32) -> i16 {
    let scaled = (sample * SCALE).round();
    if scaled.is_nan() {
        0
    } else {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "clamped to the i16 range first"
        )]
        let value = scaled.clamp(-32768.0, 32767.0) as i16;
        value
    }
}

/// Decodes a raw frame (PCM16, f32, mu-law or A-law; any channel count) to PCM16 samples,
/// interleaved as they were.
///
/// # Errors
/// [`AudioError::UnsupportedFormat`] for compressed encodings, [`AudioError::PartialSample`]
/// for a partial sample.
pub fn decode_to_i16(frame: &AudioFrame) -> Result<Vec<i16>, AudioError> {
    check_whole(frame.format, frame.data.len())?;
    Ok(match frame.format.encoding {
        AudioEncoding::Pcm16 => i16_samples(&frame.data)?,
        AudioEncoding::F32 => frame
            .data
            .chunks_exact(4)
            .map(|s| f32_sample_to_i16(f32::from_le_bytes([s[0], s[1], s[2], s[3]])))
            .collect(),
        AudioEncoding::Mulaw => frame
            .data
            .iter()
            .map(|&c| g711::decode_ulaw_sample(c))
            .collect(),
        AudioEncoding::Alaw => frame
            .data
            .iter()
            .map(|&c| g711::decode_alaw_sample(c))
            .collect(),
        _ => return Err(AudioError::UnsupportedFormat(frame.format)),
    })
}

/// Encodes PCM16 samples in `encoding` (PCM16, f32, mu-law or A-law).
///
/// # Errors
/// [`AudioError::UnsupportedFormat`] for compressed encodings (`format` names them).
pub fn encode_from_i16(samples: &[i16], format: AudioFormat) -> Result<Bytes, AudioError> {
    Ok(Bytes::from(match format.encoding {
        AudioEncoding::Pcm16 => i16_bytes(samples),
        AudioEncoding::F32 => {
            let mut out = Vec::with_capacity(samples.len() * 4);
            for &s in samples {
                out.extend_from_slice(&(f32::from(s) / SCALE).to_le_bytes());
            }
            out
        }
        AudioEncoding::Mulaw => samples
            .iter()
            .map(|&s| g711::encode_ulaw_sample(s))
            .collect(),
        AudioEncoding::Alaw => samples
            .iter()
            .map(|&s| g711::encode_alaw_sample(s))
            .collect(),
        _ => return Err(AudioError::UnsupportedFormat(format)),
    }))
}

/// The same audio in another raw encoding (rate and channels unchanged). Converting to the
/// frame's own encoding returns it as it is, without copying.
///
/// # Errors
/// As [`decode_to_i16`] and [`encode_from_i16`].
pub fn transcode(frame: &AudioFrame, encoding: AudioEncoding) -> Result<AudioFrame, AudioError> {
    if frame.format.encoding == encoding {
        check_whole(frame.format, frame.data.len())?;
        return Ok(frame.clone());
    }
    let samples = decode_to_i16(frame)?;
    let format = AudioFormat {
        encoding,
        ..frame.format
    };
    Ok(with_timestamp_of(
        AudioFrame::new(encode_from_i16(&samples, format)?, format),
        frame,
    ))
}

/// The frame mixed down to one PCM16 channel (the mean of the channels). A mono PCM16
/// frame is returned as it is.
///
/// # Errors
/// As [`decode_to_i16`].
pub fn to_mono_pcm16(frame: &AudioFrame) -> Result<AudioFrame, AudioError> {
    let format = AudioFormat::pcm16(frame.format.sample_rate, 1);
    if frame.format == format {
        return transcode(frame, AudioEncoding::Pcm16);
    }
    let samples = decode_to_i16(frame)?;
    let channels = usize::from(frame.format.channels.max(1));
    let mono: Vec<i16> = samples
        .chunks_exact(channels)
        .map(|group| {
            let sum: i32 = group.iter().map(|&s| i32::from(s)).sum();
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_possible_wrap,
                reason = "the mean of i16 values is an i16; channels is at most u16::MAX"
            )]
            let mean = (sum / channels as i32) as i16;
            mean
        })
        .collect();
    Ok(with_timestamp_of(
        AudioFrame::new(i16_bytes(&mono), format),
        frame,
    ))
}

/// `frame` carrying the timestamp of `source`, if it has one.
pub(crate) fn with_timestamp_of(frame: AudioFrame, source: &AudioFrame) -> AudioFrame {
    match source.timestamp {
        Some(at) => frame.with_timestamp(at),
        None => frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_conversion_rounds_clamps_and_round_trips() {
        let mut floats = Vec::new();
        i16_to_f32(&[-32768, -1, 0, 1, 32767], &mut floats);
        assert_eq!(floats[0], -1.0);
        let mut back = Vec::new();
        f32_to_i16(&floats, &mut back);
        assert_eq!(back, [-32768, -1, 0, 1, 32767]);
        assert_eq!(f32_sample_to_i16(2.0), 32767);
        assert_eq!(f32_sample_to_i16(-2.0), -32768);
        assert_eq!(f32_sample_to_i16(f32::NAN), 0);
        assert_eq!(
            f32_sample_to_i16(0.5 / 32768.0),
            1,
            "rounds half away from zero"
        );
    }

    #[test]
    fn transcoding_between_raw_encodings() {
        let pcm = AudioFrame::new(i16_bytes(&[0, 1000, -1000]), AudioFormat::pcm16(8000, 1))
            .with_timestamp(std::time::Duration::from_millis(20));
        let ulaw = transcode(&pcm, AudioEncoding::Mulaw).unwrap();
        assert_eq!(ulaw.data.as_ref(), [0xff, 0xce, 0x4e]);
        assert_eq!(ulaw.format, AudioFormat::MULAW_8K_MONO);
        assert_eq!(ulaw.timestamp, pcm.timestamp);
        let f32s = transcode(&pcm, AudioEncoding::F32).unwrap();
        assert_eq!(f32s.data.len(), 12);
        let back = transcode(&f32s, AudioEncoding::Pcm16).unwrap();
        assert_eq!(back, pcm);
        let same = transcode(&pcm, AudioEncoding::Pcm16).unwrap();
        assert_eq!(same.data.as_ptr(), pcm.data.as_ptr(), "no copy");

        let odd = AudioFrame::new(vec![0_u8; 3], AudioFormat::PCM16_16K_MONO);
        assert!(matches!(
            transcode(&odd, AudioEncoding::Mulaw),
            Err(AudioError::PartialSample {
                len: 3,
                sample_bytes: 2
            })
        ));
        let mp3 = AudioFrame::new(
            vec![0_u8; 4],
            AudioFormat::new(44_100, 2, AudioEncoding::Mp3),
        );
        assert!(matches!(
            transcode(&mp3, AudioEncoding::Pcm16),
            Err(AudioError::UnsupportedFormat(_))
        ));
    }

    #[test]
    fn stereo_mixes_down_to_the_mean() {
        let stereo = AudioFrame::new(
            i16_bytes(&[100, 300, -50, -150]),
            AudioFormat::pcm16(48_000, 2),
        );
        let mono = to_mono_pcm16(&stereo).unwrap();
        assert_eq!(mono.format, AudioFormat::pcm16(48_000, 1));
        assert_eq!(i16_samples(&mono.data).unwrap(), [200, -100]);
        let partial = AudioFrame::new(vec![0_u8; 6], AudioFormat::pcm16(48_000, 2));
        assert!(to_mono_pcm16(&partial).is_err());
    }
}
