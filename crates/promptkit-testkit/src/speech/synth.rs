//! What the synthesiser servers share: audio in the encoding a client asked for, cut into
//! chunks of at most 100 ms, and a tiny G.711 encoder (the test kit does not depend on
//! promptkit-audio, whose decoder the tests check it against).

use super::{MS_PER_CHAR, synth_pcm16};

/// An output encoding of the synthesisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Pcm16,
    Mulaw,
    Alaw,
}

impl Encoding {
    fn bytes_per_sample(self) -> usize {
        match self {
            Self::Pcm16 => 2,
            Self::Mulaw | Self::Alaw => 1,
        }
    }
}

/// The most characters one chunk speaks: 100 ms.
pub(crate) const CHARS_PER_CHUNK: usize = (100 / MS_PER_CHAR) as usize;

/// `chars` characters of speech in `encoding` at `sample_rate`, cut into chunks of at most
/// [`CHARS_PER_CHUNK`] characters (100 ms); each chunk with the number of characters it
/// speaks.
pub(crate) fn chunks(chars: usize, sample_rate: u32, encoding: Encoding) -> Vec<(usize, Vec<u8>)> {
    let pcm = synth_pcm16(chars, sample_rate);
    let audio = match encoding {
        Encoding::Pcm16 => pcm,
        Encoding::Mulaw => samples(&pcm).map(ulaw).collect(),
        Encoding::Alaw => samples(&pcm).map(alaw).collect(),
    };
    let per_char = audio.len() / chars.max(1);
    let mut out = Vec::new();
    let mut left = chars;
    let mut at = 0;
    while left > 0 {
        let n = left.min(CHARS_PER_CHUNK);
        let len = if n == left {
            audio.len() - at
        } else {
            n * per_char
        };
        out.push((n, audio[at..at + len].to_vec()));
        at += len;
        left -= n;
    }
    debug_assert_eq!(per_char % encoding.bytes_per_sample(), 0);
    out
}

fn samples(pcm: &[u8]) -> impl Iterator<Item = i16> + '_ {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
}

/// G.711 mu-law of one PCM16 sample (the classic biased segment encoder).
pub(crate) fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    value = value.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && value & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (value >> (exponent + 3)) & 0x0F;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "eight bits by construction"
    )]
    let code = !(sign | (exponent << 4) | mantissa) as u8;
    code
}

/// G.711 A-law of one PCM16 sample.
pub(crate) fn alaw(sample: i16) -> u8 {
    const ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let pcm = i32::from(sample) >> 3;
    let (mask, magnitude) = if pcm >= 0 {
        (0xD5, pcm)
    } else {
        (0x55, -pcm - 1)
    };
    let Some(segment) = ENDS.iter().position(|end| magnitude <= *end) else {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "eight bits by construction"
        )]
        return (0x7F ^ mask) as u8;
    };
    #[expect(
        clippy::cast_possible_wrap,
        clippy::cast_possible_truncation,
        reason = "below 8"
    )]
    let segment = segment as i32;
    let mantissa = if segment < 2 {
        (magnitude >> 1) & 0x0F
    } else {
        (magnitude >> segment) & 0x0F
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "eight bits by construction"
    )]
    let code = (((segment << 4) | mantissa) ^ mask) as u8;
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_at_most_100_ms_and_add_up() {
        let chunks = chunks(25, 16_000, Encoding::Pcm16);
        assert_eq!(chunks.iter().map(|c| c.0).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(chunks.iter().map(|c| c.1.len()).sum::<usize>(), 25 * 320);
        let mulaw = super::chunks(3, 8_000, Encoding::Mulaw);
        assert_eq!(mulaw[0].1.len(), 3 * 80);
        assert_eq!(ulaw(0), 0xFF);
        assert_eq!(alaw(0), 0xD5);
    }
}
