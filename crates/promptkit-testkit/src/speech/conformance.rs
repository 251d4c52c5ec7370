//! The speech conformance suite (to come).
