//! Shared helpers of the server-backed tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use promptkit_core::Timestamp;

/// Whether this run is CI, where a missing server fails instead of skipping.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Handles a server that cannot be reached: panics under CI, otherwise prints a note and
/// returns (the caller skips).
pub(crate) fn unavailable(what: &str, url: &str, error: &dyn std::fmt::Display) {
    assert!(
        !in_ci(),
        "{what} at {url} is required under CI=true: {error}"
    );
    #[expect(
        clippy::print_stderr,
        reason = "tell the developer why the test is skipped"
    )]
    {
        eprintln!("SKIPPED: {what} not reachable at {url} ({error}); set CI=true to fail instead");
    }
}

/// A name unique to this test run (schema, key prefix).
pub(crate) fn unique_name(base: &str) -> String {
    format!(
        "{base}_{}_{:x}",
        std::process::id(),
        Timestamp::now().as_unix_nanos() & 0xffff_ffff_ffff
    )
}

/// Everything a log line could show of `error`: its `Debug` form and the `Display` of each
/// error in its source chain.
pub(crate) fn shown(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{error:?}");
    let mut next = Some(error);
    while let Some(e) = next {
        out.push('\n');
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}
