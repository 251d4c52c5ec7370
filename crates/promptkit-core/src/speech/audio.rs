//! Audio formats and frames.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// How audio samples are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AudioEncoding {
    /// Signed 16-bit little-endian PCM (the runtime's working format).
    Pcm16,
    /// 32-bit little-endian float PCM.
    F32,
    /// G.711 mu-law, 8 bits per sample.
    Mulaw,
    /// G.711 A-law, 8 bits per sample.
    Alaw,
    /// Opus packets.
    Opus,
    /// MP3 frames.
    Mp3,
    /// AAC frames.
    Aac,
    /// A WAV file (header and PCM).
    Wav,
}

impl AudioEncoding {
    /// Bytes per sample per channel for raw encodings; `None` for compressed formats.
    pub fn bytes_per_sample(self) -> Option<usize> {
        match self {
            Self::Pcm16 => Some(2),
            Self::F32 => Some(4),
            Self::Mulaw | Self::Alaw => Some(1),
            Self::Opus | Self::Mp3 | Self::Aac | Self::Wav => None,
        }
    }

    /// The media type of this encoding.
    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Pcm16 => "audio/L16",
            Self::F32 => "audio/x-f32le",
            Self::Mulaw => "audio/PCMU",
            Self::Alaw => "audio/PCMA",
            Self::Opus => "audio/opus",
            Self::Mp3 => "audio/mpeg",
            Self::Aac => "audio/aac",
            Self::Wav => "audio/wav",
        }
    }
}

/// The shape of an audio stream.
///
/// Unlike the other speech types this struct is exhaustive: a stream is fully described by
/// its rate, its channel count and its encoding, and new kinds of audio are new
/// [`AudioEncoding`] variants (that enum is `#[non_exhaustive]`). Struct literals such as
/// `AudioFormat { encoding: AudioEncoding::Mulaw, ..format }` are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AudioFormat {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Sample encoding.
    pub encoding: AudioEncoding,
}

impl AudioFormat {
    /// 16 kHz mono PCM16: what speech recognisers and VAD models expect.
    pub const PCM16_16K_MONO: Self = Self::pcm16(16_000, 1);
    /// 24 kHz mono PCM16: what realtime models and most TTS voices produce.
    pub const PCM16_24K_MONO: Self = Self::pcm16(24_000, 1);
    /// 8 kHz mono G.711 mu-law: telephony (Twilio, SIP in North America and Japan).
    pub const MULAW_8K_MONO: Self = Self::new(8_000, 1, AudioEncoding::Mulaw);
    /// 8 kHz mono G.711 A-law: telephony elsewhere.
    pub const ALAW_8K_MONO: Self = Self::new(8_000, 1, AudioEncoding::Alaw);

    /// A format from its three parts.
    pub const fn new(sample_rate: u32, channels: u16, encoding: AudioEncoding) -> Self {
        Self {
            sample_rate,
            channels,
            encoding,
        }
    }

    /// PCM16 at `sample_rate` with `channels`.
    pub const fn pcm16(sample_rate: u32, channels: u16) -> Self {
        Self::new(sample_rate, channels, AudioEncoding::Pcm16)
    }

    /// Bytes of one sample of every channel (a sample frame), for raw encodings.
    pub fn bytes_per_sample_frame(&self) -> Option<usize> {
        self.encoding
            .bytes_per_sample()
            .map(|b| b * usize::from(self.channels))
    }

    /// Bytes per second for raw encodings.
    pub fn bytes_per_second(&self) -> Option<usize> {
        self.bytes_per_sample_frame()
            .map(|b| b * usize::try_from(self.sample_rate).unwrap_or(usize::MAX))
    }

    /// Samples per channel in `len` bytes of raw audio, rounded down; `None` for compressed
    /// encodings or an empty format.
    pub fn samples_in(&self, len: usize) -> Option<usize> {
        self.bytes_per_sample_frame()
            .filter(|b| *b > 0)
            .map(|b| len / b)
    }

    /// Bytes that hold `samples` samples per channel, for raw encodings.
    pub fn bytes_for_samples(&self, samples: usize) -> Option<usize> {
        self.bytes_per_sample_frame()
            .map(|b| b.saturating_mul(samples))
    }

    /// Playback duration of `samples` samples per channel; `None` at a zero sample rate.
    pub fn duration_of_samples(&self, samples: usize) -> Option<Duration> {
        if self.sample_rate == 0 {
            return None;
        }
        let nanos = u128::try_from(samples).ok()? * 1_000_000_000 / u128::from(self.sample_rate);
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// Playback duration of `len` bytes of raw audio; `None` for compressed encodings or
    /// an empty format.
    pub fn duration_of(&self, len: usize) -> Option<Duration> {
        let per_second = self.bytes_per_second().filter(|b| *b > 0)?;
        let nanos = u128::try_from(len).ok()? * 1_000_000_000 / u128::try_from(per_second).ok()?;
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

/// A chunk of audio.
///
/// `#[non_exhaustive]`: build it with [`AudioFrame::new`] and
/// [`with_timestamp`](AudioFrame::with_timestamp); the fields stay public for reading. The
/// pipeline carries frames inline in its elements, so the struct must stay small (56 bytes
/// today, pinned by a test): a field added later has to fit or be boxed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AudioFrame {
    /// The encoded samples (interleaved for multi-channel raw audio).
    pub data: Bytes,
    /// Their format.
    pub format: AudioFormat,
    /// Position of the frame's start on the stream's clock, when known.
    pub timestamp: Option<Duration>,
}

impl AudioFrame {
    /// A frame without a timestamp.
    pub fn new(data: impl Into<Bytes>, format: AudioFormat) -> Self {
        Self {
            data: data.into(),
            format,
            timestamp: None,
        }
    }

    /// The same frame positioned at `timestamp` on the stream's clock.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: Duration) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Playback duration, for raw encodings.
    pub fn duration(&self) -> Option<Duration> {
        self.format.duration_of(self.data.len())
    }

    /// Samples per channel, for raw encodings.
    pub fn samples(&self) -> Option<usize> {
        self.format.samples_in(self.data.len())
    }
}
