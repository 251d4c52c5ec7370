//! Built-in OpenAI prices.

use promptkit_core::{ModelPricing, PricingTable};

/// OpenAI list prices in USD per million tokens (input, cached input, output), as published
/// on 2026-07-08. Reasoning tokens are billed at the output rate. A dated variant such as
/// `gpt-4o-2024-08-06` is priced by its prefix entry; a model not listed has no price (cost
/// `None`). Override entries with [`OpenAiConfig::with_pricing_overrides`](super::OpenAiConfig::with_pricing_overrides).
pub fn openai_pricing() -> PricingTable {
    const PRICES: &[(&str, f64, f64, f64)] = &[
        ("gpt-4", 30.0, 15.0, 60.0),
        ("gpt-4-turbo", 10.0, 5.0, 30.0),
        ("gpt-3.5-turbo", 1.50, 0.75, 2.00),
        ("gpt-4o", 2.50, 1.25, 10.0),
        ("gpt-4o-mini", 0.15, 0.075, 0.60),
        ("gpt-4.1", 2.00, 0.50, 8.00),
        ("gpt-4.1-mini", 0.40, 0.10, 1.60),
        ("gpt-4.1-nano", 0.10, 0.025, 0.40),
        ("o1", 15.0, 7.50, 60.0),
        ("o1-mini", 1.10, 0.55, 4.40),
        ("o3-mini", 1.10, 0.55, 4.40),
        ("o3", 2.00, 0.50, 8.00),
        ("o4-mini", 1.10, 0.275, 4.40),
        ("gpt-5", 1.25, 0.125, 10.0),
        ("gpt-5-mini", 0.25, 0.025, 2.00),
        ("gpt-5-nano", 0.05, 0.005, 0.40),
    ];
    let mut table = PricingTable::new();
    for &(model, input, cached, output) in PRICES {
        table.insert(
            model,
            ModelPricing::new(input, output).with_cached_input(cached),
        );
    }
    table
}
