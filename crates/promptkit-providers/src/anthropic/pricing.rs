//! Built-in Anthropic prices.

use promptkit_core::{ModelPricing, PricingTable};

/// Anthropic list prices in USD per million tokens (input, output, cache read, cache write
/// with the default 5-minute lifetime) for the current Claude models. Dated ids such as
/// `claude-sonnet-4-5-20250929` are priced by their prefix entry; Claude 4.0 models are
/// listed by their `-0` aliases and dated ids only, so a newer `claude-opus-4-6` is not
/// silently priced as Opus 4.0. A model not listed has no price (cost `None`). Override
/// entries with [`AnthropicConfig::with_pricing_overrides`](super::AnthropicConfig::with_pricing_overrides).
pub fn anthropic_pricing() -> PricingTable {
    const PRICES: &[(&str, f64, f64, f64, f64)] = &[
        ("claude-opus-4-5", 5.0, 25.0, 0.50, 6.25),
        ("claude-opus-4-1", 15.0, 75.0, 1.50, 18.75),
        ("claude-opus-4-0", 15.0, 75.0, 1.50, 18.75),
        ("claude-opus-4-20250514", 15.0, 75.0, 1.50, 18.75),
        ("claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75),
        ("claude-sonnet-4-0", 3.0, 15.0, 0.30, 3.75),
        ("claude-sonnet-4-20250514", 3.0, 15.0, 0.30, 3.75),
        ("claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25),
        ("claude-3-7-sonnet", 3.0, 15.0, 0.30, 3.75),
        ("claude-3-5-sonnet", 3.0, 15.0, 0.30, 3.75),
        ("claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0),
        ("claude-3-opus", 15.0, 75.0, 1.50, 18.75),
        ("claude-3-haiku", 0.25, 1.25, 0.03, 0.30),
    ];
    let mut table = PricingTable::new();
    for &(model, input, output, read, write) in PRICES {
        table.insert(
            model,
            ModelPricing::new(input, output)
                .with_cached_input(read)
                .with_cache_write(write),
        );
    }
    table
}
