//! WAV files, read and written with `hound`.
//!
//! Integer PCM of 8 to 32 bits reads as PCM16 (scaled), IEEE float as f32. Only PCM16 and
//! f32 are written; G.711 inside WAV (format tags 6 and 7) is not supported by `hound`, and
//! nothing in the runtime needs it: convert with [`crate::pcm::transcode`] first.

use std::io::{Cursor, Read};

use promptkit_core::{AudioEncoding, AudioFormat, AudioFrame};

use crate::error::AudioError;
use crate::pcm;

/// Reads a whole WAV file into one frame.
///
/// # Errors
/// [`AudioError::Wav`] when the data is not a WAV file `hound` reads.
pub fn read(reader: impl Read) -> Result<AudioFrame, AudioError> {
    let mut wav = hound::WavReader::new(reader).map_err(AudioError::Wav)?;
    let spec = wav.spec();
    let (encoding, data) = match spec.sample_format {
        hound::SampleFormat::Float => {
            let mut data = Vec::with_capacity(wav.len() as usize * 4);
            for sample in wav.samples::<f32>() {
                data.extend_from_slice(&sample.map_err(AudioError::Wav)?.to_le_bytes());
            }
            (AudioEncoding::F32, data)
        }
        hound::SampleFormat::Int => {
            let shift = i32::from(spec.bits_per_sample) - 16;
            let mut data = Vec::with_capacity(wav.len() as usize * 2);
            for sample in wav.samples::<i32>() {
                let sample = sample.map_err(AudioError::Wav)?;
                let scaled = if shift >= 0 {
                    sample >> shift
                } else {
                    sample << -shift
                };
                let clamped = i16::try_from(scaled.clamp(i32::from(i16::MIN), i32::from(i16::MAX)))
                    .unwrap_or_default();
                data.extend_from_slice(&clamped.to_le_bytes());
            }
            (AudioEncoding::Pcm16, data)
        }
    };
    Ok(AudioFrame::new(
        data,
        AudioFormat::new(spec.sample_rate, spec.channels, encoding),
    ))
}

/// Reads a WAV file from bytes.
///
/// # Errors
/// As [`read`].
pub fn from_bytes(bytes: &[u8]) -> Result<AudioFrame, AudioError> {
    read(Cursor::new(bytes))
}

/// Writes audio as a WAV file.
///
/// # Errors
/// [`AudioError::UnsupportedFormat`] unless the audio is PCM16 or f32;
/// [`AudioError::PartialSample`] on a partial sample.
pub fn to_bytes(frame: &AudioFrame) -> Result<Vec<u8>, AudioError> {
    let format = frame.format;
    let spec = match format.encoding {
        AudioEncoding::Pcm16 => hound::WavSpec {
            channels: format.channels,
            sample_rate: format.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
        AudioEncoding::F32 => hound::WavSpec {
            channels: format.channels,
            sample_rate: format.sample_rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        },
        _ => return Err(AudioError::UnsupportedFormat(format)),
    };
    pcm::check_whole(format, frame.data.len())?;
    let mut out = Cursor::new(Vec::with_capacity(frame.data.len() + 44));
    {
        let mut writer = hound::WavWriter::new(&mut out, spec).map_err(AudioError::Wav)?;
        if format.encoding == AudioEncoding::Pcm16 {
            for s in frame.data.chunks_exact(2) {
                writer
                    .write_sample(i16::from_le_bytes([s[0], s[1]]))
                    .map_err(AudioError::Wav)?;
            }
        } else {
            for s in frame.data.chunks_exact(4) {
                writer
                    .write_sample(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                    .map_err(AudioError::Wav)?;
            }
        }
        writer.finalize().map_err(AudioError::Wav)?;
    }
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm16_and_f32_round_trip() {
        let pcm16 = AudioFrame::new(
            pcm::i16_bytes(&[0, 1, -1, 32767, -32768]),
            AudioFormat::pcm16(8000, 1),
        );
        let bytes = to_bytes(&pcm16).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(bytes.len(), 44 + 10);
        assert_eq!(from_bytes(&bytes).unwrap(), pcm16);

        let f32s = pcm::transcode(&pcm16, AudioEncoding::F32).unwrap();
        let stereo = AudioFrame::new(
            f32s.data.slice(..16),
            AudioFormat::new(8000, 2, AudioEncoding::F32),
        );
        assert_eq!(from_bytes(&to_bytes(&stereo).unwrap()).unwrap(), stereo);
    }

    #[test]
    fn other_bit_depths_read_as_pcm16() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        for s in [0x7F_FFFF, -0x80_0000, 0x100] {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        let frame = from_bytes(out.get_ref()).unwrap();
        assert_eq!(frame.format, AudioFormat::PCM16_16K_MONO);
        assert_eq!(pcm::i16_samples(&frame.data).unwrap(), [32767, -32768, 1]);
    }

    #[test]
    fn garbage_and_g711_are_refused_clearly() {
        let err = from_bytes(b"not a wav file").unwrap_err();
        assert!(err.to_string().starts_with("WAV: "), "{err}");
        let ulaw = AudioFrame::new(vec![0xFF_u8; 8], AudioFormat::MULAW_8K_MONO);
        assert!(matches!(
            to_bytes(&ulaw),
            Err(AudioError::UnsupportedFormat(_))
        ));
    }
}
