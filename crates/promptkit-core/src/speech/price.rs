//! What speech costs: a vendor's price and the usage it applies to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A speech service's list price, in USD. Recognisers bill by audio time, synthesisers by
/// characters; a vendor that bills both ways sets both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpeechPrice {
    /// USD per minute of audio (transcribed or produced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<f64>,
    /// USD per million characters of text synthesised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_million_characters: Option<f64>,
}

impl SpeechPrice {
    /// A price per minute of audio.
    pub fn per_minute(usd: f64) -> Self {
        Self {
            per_minute: Some(usd),
            per_million_characters: None,
        }
    }

    /// A price per million characters.
    pub fn per_million_characters(usd: f64) -> Self {
        Self {
            per_minute: None,
            per_million_characters: Some(usd),
        }
    }

    /// What `usage` costs at this price, in USD.
    pub fn cost(&self, usage: &SpeechUsage) -> f64 {
        let minutes = usage.audio.as_secs_f64() / 60.0;
        let audio = self.per_minute.map_or(0.0, |rate| rate * minutes);
        // Character counts of one session fit an f64 exactly.
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let text = self
            .per_million_characters
            .map_or(0.0, |rate| rate * usage.characters as f64 / 1_000_000.0);
        audio + text
    }
}

/// What one speech session or request used: the unit a [`SpeechPrice`] applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpeechUsage {
    /// Audio transcribed (STT) or produced (TTS).
    #[serde(rename = "audio_ms", with = "crate::time::duration_ms")]
    pub audio: Duration,
    /// Characters of text synthesised.
    #[serde(default)]
    pub characters: u64,
}

impl SpeechUsage {
    /// Usage of `audio` time.
    pub fn audio(audio: Duration) -> Self {
        Self {
            audio,
            characters: 0,
        }
    }

    /// Usage of `characters` of text.
    pub fn characters(characters: u64) -> Self {
        Self {
            audio: Duration::ZERO,
            characters,
        }
    }
}
