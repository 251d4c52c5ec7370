//! Built-in Gemini prices.

use promptkit_core::{ModelPricing, PricingTable};

/// Gemini list prices in USD per million tokens (input, output) for the short-context tier
/// (prompts up to 128K or 200K tokens; longer prompts cost more and are under-priced here),
/// as listed on 2026-07-07. Cache reads (implicit or explicit caching) are billed at a
/// quarter of the input rate and thinking tokens at the output rate, as Google publishes.
/// The Gemini 3 rates are not verified against a published price list. Dated and preview
/// ids such as `gemini-2.5-flash-preview-05-20` are priced by their prefix entry, and a
/// `models/` prefix is ignored; a model not listed has no price (cost `None`). Override
/// entries with [`GeminiConfig::with_pricing_overrides`](super::GeminiConfig::with_pricing_overrides).
pub fn gemini_pricing() -> PricingTable {
    const PRICES: &[(&str, f64, f64)] = &[
        ("gemini-1.5-pro", 1.25, 5.00),
        ("gemini-1.5-flash", 0.075, 0.30),
        ("gemini-2.0-flash", 0.10, 0.40),
        ("gemini-2.0-flash-lite", 0.075, 0.30),
        ("gemini-2.5-pro", 1.25, 10.0),
        ("gemini-2.5-flash", 0.30, 2.50),
        ("gemini-2.5-flash-lite", 0.10, 0.40),
        ("gemini-3-pro", 2.00, 12.0),
        ("gemini-3-flash", 0.40, 3.00),
        ("gemini-3-flash-lite", 0.15, 0.60),
    ];
    let mut table = PricingTable::new();
    for &(model, input, output) in PRICES {
        table.insert(
            model,
            ModelPricing::new(input, output).with_cached_input(input / 4.0),
        );
    }
    table
}
