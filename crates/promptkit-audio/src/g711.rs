//! G.711 mu-law and A-law, the telephony codecs (8 bits per sample, usually at 8 kHz).
//!
//! The arithmetic is the classic Sun reference implementation that CPython's `audioop` also
//! uses, and the encoders match `audioop.lin2ulaw` / `lin2alaw` byte for byte over all
//! 65,536 PCM16 values (a committed fixture checks it). Reference implementations disagree by
//! one code for tiny negative inputs: `audioop` shifts the sample right arithmetically before
//! encoding, so -1 encodes as mu-law `0x7e` where some others give `0x7f`; we match
//! `audioop`. Decoding goes through two 256-entry tables built at compile time.

/// Mu-law bias added to the magnitude before the segment search.
const ULAW_BIAS: i16 = 0x84;
/// Largest 14-bit magnitude mu-law represents.
const ULAW_CLIP: i16 = 8159;
/// Upper ends of the eight mu-law segments (14-bit magnitudes plus the bias).
const ULAW_SEGMENT_ENDS: [i16; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper ends of the eight A-law segments (13-bit magnitudes).
const ALAW_SEGMENT_ENDS: [i16; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// The first segment whose end is at least `value`, or 8 when there is none.
const fn segment(value: i16, ends: &[i16; 8]) -> u8 {
    let mut i = 0;
    while i < 8 {
        if value <= ends[i] {
            return i as u8;
        }
        i += 1;
    }
    8
}

/// Encodes one PCM16 sample as mu-law.
pub const fn encode_ulaw_sample(sample: i16) -> u8 {
    // The 16-bit sample becomes the reference's 14-bit input by an arithmetic shift.
    let mut magnitude = sample >> 2;
    let mask: u8 = if magnitude < 0 {
        magnitude = -magnitude;
        0x7F
    } else {
        0xFF
    };
    if magnitude > ULAW_CLIP {
        magnitude = ULAW_CLIP;
    }
    magnitude += ULAW_BIAS >> 2;
    let seg = segment(magnitude, &ULAW_SEGMENT_ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = ((magnitude >> (seg + 1)) & 0xF) as u8;
    ((seg << 4) | mantissa) ^ mask
}

/// Decodes one mu-law byte to PCM16.
pub const fn decode_ulaw_sample(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

const fn ulaw_to_linear(code: u8) -> i16 {
    let inverted = !code;
    let mut t = (((inverted & 0x0F) as i16) << 3) + ULAW_BIAS;
    t <<= (inverted & 0x70) >> 4;
    if inverted & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }
}

/// Encodes one PCM16 sample as A-law.
pub const fn encode_alaw_sample(sample: i16) -> u8 {
    // The 16-bit sample becomes the reference's 13-bit input by an arithmetic shift.
    let mut magnitude = sample >> 3;
    let mask: u8 = if magnitude >= 0 {
        0xD5
    } else {
        magnitude = -magnitude - 1;
        0x55
    };
    let seg = segment(magnitude, &ALAW_SEGMENT_ENDS);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if seg < 2 { 1 } else { seg };
    let mantissa = ((magnitude >> shift) & 0xF) as u8;
    ((seg << 4) | mantissa) ^ mask
}

/// Decodes one A-law byte to PCM16.
pub const fn decode_alaw_sample(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

const fn alaw_to_linear(code: u8) -> i16 {
    let value = code ^ 0x55;
    let mut t = ((value & 0x0F) as i16) << 4;
    let seg = (value & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if value & 0x80 != 0 { t } else { -t }
}

/// Builds a decode table; `alaw` picks the law (a `const fn` cannot call through a
/// function pointer).
const fn table(alaw: bool) -> [i16; 256] {
    let mut out = [0_i16; 256];
    let mut code = 0;
    while code < 256 {
        out[code] = if alaw {
            alaw_to_linear(code as u8)
        } else {
            ulaw_to_linear(code as u8)
        };
        code += 1;
    }
    out
}

static ULAW_DECODE: [i16; 256] = table(false);
static ALAW_DECODE: [i16; 256] = table(true);

/// Encodes little-endian PCM16 bytes as mu-law, appending one byte per sample to `out`. A
/// trailing odd byte is ignored (callers check lengths; see [`crate::pcm`]).
pub fn encode_ulaw(pcm16: &[u8], out: &mut Vec<u8>) {
    out.extend(
        pcm16
            .chunks_exact(2)
            .map(|s| encode_ulaw_sample(i16::from_le_bytes([s[0], s[1]]))),
    );
}

/// Decodes mu-law bytes, appending little-endian PCM16 to `out`.
pub fn decode_ulaw(ulaw: &[u8], out: &mut Vec<u8>) {
    out.reserve(ulaw.len() * 2);
    for &code in ulaw {
        out.extend_from_slice(&decode_ulaw_sample(code).to_le_bytes());
    }
}

/// Encodes little-endian PCM16 bytes as A-law, appending one byte per sample to `out`. A
/// trailing odd byte is ignored.
pub fn encode_alaw(pcm16: &[u8], out: &mut Vec<u8>) {
    out.extend(
        pcm16
            .chunks_exact(2)
            .map(|s| encode_alaw_sample(i16::from_le_bytes([s[0], s[1]]))),
    );
}

/// Decodes A-law bytes, appending little-endian PCM16 to `out`.
pub fn decode_alaw(alaw: &[u8], out: &mut Vec<u8>) {
    out.reserve(alaw.len() * 2);
    for &code in alaw {
        out.extend_from_slice(&decode_alaw_sample(code).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values `voice-research.md` §2.6 computed with Python 3.11 `audioop`.
    #[test]
    fn audioop_golden_values() {
        for (x, ulaw, alaw) in [
            (0, 0xff, 0xd5),
            (1, 0xff, 0xd5),
            (-1, 0x7e, 0x55),
            (100, 0xf2, 0xd3),
            (-100, 0x72, 0x53),
            (1000, 0xce, 0xfa),
            (-1000, 0x4e, 0x7a),
            (32767, 0x80, 0xaa),
            (-32768, 0x00, 0x2a),
        ] {
            assert_eq!(encode_ulaw_sample(x), ulaw, "mu-law of {x}");
            assert_eq!(encode_alaw_sample(x), alaw, "A-law of {x}");
        }
        for (code, pcm) in [(0x00, -32124), (0x7f, 0), (0x80, 32124), (0xff, 0)] {
            assert_eq!(decode_ulaw_sample(code), pcm, "mu-law {code:#04x}");
        }
        for (code, pcm) in [(0x55, -8), (0xd5, 8), (0x2a, -32256), (0xaa, 32256)] {
            assert_eq!(decode_alaw_sample(code), pcm, "A-law {code:#04x}");
        }
    }

    #[test]
    fn byte_helpers_append_per_sample() {
        let pcm: Vec<u8> = [0_i16, -1000, 32767]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut ulaw = Vec::new();
        encode_ulaw(&pcm, &mut ulaw);
        assert_eq!(ulaw, [0xff, 0x4e, 0x80]);
        let mut back = Vec::new();
        decode_ulaw(&ulaw, &mut back);
        assert_eq!(back.len(), 6);
        let mut alaw = Vec::new();
        encode_alaw(&pcm[..5], &mut alaw);
        assert_eq!(alaw, [0xd5, 0x7a], "the odd byte is ignored");
        let mut back = Vec::new();
        decode_alaw(&alaw, &mut back);
        assert_eq!(
            back,
            [8_i16, -1008]
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<_>>()
        );
    }
}
