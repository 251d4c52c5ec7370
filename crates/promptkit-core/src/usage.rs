//! Token usage, cost and pricing.
//!
//! Every count in [`Usage`] is optional: a provider that does not report a number leaves it
//! `None`, which is different from reporting zero. Vendor numbers are normalised so that
//! the same field means the same thing for every provider:
//!
//! * `input_tokens` counts **all** prompt tokens, including those read from or written to a
//!   prompt cache (Anthropic reports these separately; its adapter adds them up).
//! * `cached_input_tokens` and `cache_write_input_tokens` are subsets of `input_tokens`.
//! * `output_tokens` counts **all** generated tokens, including reasoning tokens (Gemini
//!   reports thoughts separately; its adapter adds them up).
//! * `reasoning_tokens` is a subset of `output_tokens`.

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

/// Token counts of one or more provider calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// All generated tokens, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Prompt tokens served from the provider's prompt cache (subset of `input_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_tokens: Option<u64>,
    /// Prompt tokens written to the prompt cache (subset of `input_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_input_tokens: Option<u64>,
    /// Generated tokens spent on reasoning (subset of `output_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Audio prompt tokens (subset of `input_tokens`), for audio-capable models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_input_tokens: Option<u64>,
    /// Audio output tokens (subset of `output_tokens`), for audio-capable models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_output_tokens: Option<u64>,
}

impl Usage {
    /// Usage with input and output counts only.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens: Some(input_tokens),
            output_tokens: Some(output_tokens),
            ..Self::default()
        }
    }

    /// Input plus output tokens, or `None` when neither was reported.
    pub fn total_tokens(&self) -> Option<u64> {
        add_opt(self.input_tokens, self.output_tokens)
    }

    /// Whether no count at all was reported.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn add_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

impl Add for Usage {
    type Output = Self;

    /// Sums two usages field by field; a field is `None` only if it is `None` in both.
    fn add(self, rhs: Self) -> Self {
        Self {
            input_tokens: add_opt(self.input_tokens, rhs.input_tokens),
            output_tokens: add_opt(self.output_tokens, rhs.output_tokens),
            cached_input_tokens: add_opt(self.cached_input_tokens, rhs.cached_input_tokens),
            cache_write_input_tokens: add_opt(
                self.cache_write_input_tokens,
                rhs.cache_write_input_tokens,
            ),
            reasoning_tokens: add_opt(self.reasoning_tokens, rhs.reasoning_tokens),
            audio_input_tokens: add_opt(self.audio_input_tokens, rhs.audio_input_tokens),
            audio_output_tokens: add_opt(self.audio_output_tokens, rhs.audio_output_tokens),
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

/// The cost of one or more provider calls, in US dollars.
///
/// `total_usd` is the sum of the other fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Uncached prompt tokens (and audio input tokens at the audio rate).
    pub input_usd: f64,
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cached_input_usd: f64,
    /// Prompt tokens written to the cache.
    #[serde(default)]
    pub cache_write_usd: f64,
    /// Generated tokens, reasoning and audio output included.
    pub output_usd: f64,
    /// The sum of the fields above.
    pub total_usd: f64,
}

impl Add for Cost {
    type Output = Self;

    fn add(self, rhs: Self) -> Self {
        Self {
            input_usd: self.input_usd + rhs.input_usd,
            cached_input_usd: self.cached_input_usd + rhs.cached_input_usd,
            cache_write_usd: self.cache_write_usd + rhs.cache_write_usd,
            output_usd: self.output_usd + rhs.output_usd,
            total_usd: self.total_usd + rhs.total_usd,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

/// Prices of one model, in US dollars per million tokens.
///
/// Rates that are `None` fall back: cached and cache-write input to the input rate,
/// reasoning to the output rate, audio to the text rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPricing {
    /// Uncached prompt tokens.
    pub input_per_mtok: f64,
    /// Generated tokens.
    pub output_per_mtok: f64,
    /// Prompt tokens read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    /// Prompt tokens written to the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
    /// Reasoning tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_per_mtok: Option<f64>,
    /// Audio prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_input_per_mtok: Option<f64>,
    /// Audio output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_output_per_mtok: Option<f64>,
}

impl ModelPricing {
    /// Pricing with input and output rates only.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
            reasoning_per_mtok: None,
            audio_input_per_mtok: None,
            audio_output_per_mtok: None,
        }
    }

    /// Sets the cached-input rate.
    #[must_use]
    pub fn with_cached_input(mut self, per_mtok: f64) -> Self {
        self.cached_input_per_mtok = Some(per_mtok);
        self
    }

    /// Sets the cache-write rate.
    #[must_use]
    pub fn with_cache_write(mut self, per_mtok: f64) -> Self {
        self.cache_write_per_mtok = Some(per_mtok);
        self
    }

    /// Sets the reasoning rate.
    #[must_use]
    pub fn with_reasoning(mut self, per_mtok: f64) -> Self {
        self.reasoning_per_mtok = Some(per_mtok);
        self
    }

    /// Sets the audio input and output rates.
    #[must_use]
    pub fn with_audio(mut self, input_per_mtok: f64, output_per_mtok: f64) -> Self {
        self.audio_input_per_mtok = Some(input_per_mtok);
        self.audio_output_per_mtok = Some(output_per_mtok);
        self
    }

    /// The cost of `usage` at these prices. Counts that were not reported cost nothing;
    /// subsets (cached, reasoning, audio) are priced at their own rate and taken out of the
    /// count they belong to, so no token is billed twice.
    pub fn cost(&self, usage: &Usage) -> Cost {
        const PER: f64 = 1_000_000.0;
        #[expect(
            clippy::cast_precision_loss,
            reason = "token counts are far below 2^52"
        )]
        let f = |n: u64| n as f64;

        let input = usage.input_tokens.unwrap_or(0);
        let cached = usage.cached_input_tokens.unwrap_or(0).min(input);
        let written = usage
            .cache_write_input_tokens
            .unwrap_or(0)
            .min(input - cached);
        let audio_in = usage
            .audio_input_tokens
            .unwrap_or(0)
            .min(input - cached - written);
        let plain_in = input - cached - written - audio_in;

        let output = usage.output_tokens.unwrap_or(0);
        let reasoning = usage.reasoning_tokens.unwrap_or(0).min(output);
        let audio_out = usage
            .audio_output_tokens
            .unwrap_or(0)
            .min(output - reasoning);
        let plain_out = output - reasoning - audio_out;

        let input_usd = (f(plain_in) * self.input_per_mtok
            + f(audio_in) * self.audio_input_per_mtok.unwrap_or(self.input_per_mtok))
            / PER;
        let cached_input_usd =
            f(cached) * self.cached_input_per_mtok.unwrap_or(self.input_per_mtok) / PER;
        let cache_write_usd =
            f(written) * self.cache_write_per_mtok.unwrap_or(self.input_per_mtok) / PER;
        let output_usd = (f(plain_out) * self.output_per_mtok
            + f(reasoning) * self.reasoning_per_mtok.unwrap_or(self.output_per_mtok)
            + f(audio_out) * self.audio_output_per_mtok.unwrap_or(self.output_per_mtok))
            / PER;
        Cost {
            input_usd,
            cached_input_usd,
            cache_write_usd,
            output_usd,
            total_usd: input_usd + cached_input_usd + cache_write_usd + output_usd,
        }
    }
}

/// Prices for many models, looked up by model id.
///
/// A lookup tries the exact id first, then the longest entry that is a prefix of the id
/// (so `gpt-4o` prices `gpt-4o-2024-08-06`), after stripping a `vendor/` prefix such as
/// `openai/gpt-4o`. A model with no entry has no price: cost is then reported as unknown
/// (`None`), never as zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PricingTable(BTreeMap<String, ModelPricing>);

impl PricingTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the prices of `model`.
    pub fn insert(&mut self, model: impl Into<String>, pricing: ModelPricing) {
        self.0.insert(model.into(), pricing);
    }

    /// Builder form of [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, model: impl Into<String>, pricing: ModelPricing) -> Self {
        self.insert(model, pricing);
        self
    }

    /// Entries of `overrides` replace entries of `self` with the same key.
    #[must_use]
    pub fn merged(mut self, overrides: &Self) -> Self {
        for (model, pricing) in &overrides.0 {
            self.0.insert(model.clone(), *pricing);
        }
        self
    }

    /// The prices of `model` (see the type docs for the lookup rule).
    pub fn get(&self, model: &str) -> Option<&ModelPricing> {
        let bare = model.rsplit_once('/').map_or(model, |(_, m)| m);
        for candidate in [model, bare] {
            if let Some(p) = self.0.get(candidate) {
                return Some(p);
            }
        }
        self.0
            .iter()
            .filter(|(key, _)| bare.starts_with(key.as_str()) || model.starts_with(key.as_str()))
            .max_by_key(|(key, _)| key.len())
            .map(|(_, p)| p)
    }

    /// The cost of `usage` on `model`, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<Cost> {
        self.get(model).map(|p| p.cost(usage))
    }

    /// Number of models priced.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
