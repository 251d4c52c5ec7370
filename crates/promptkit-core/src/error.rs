//! Displaying an error with its causes.

use std::error::Error;
use std::fmt;

/// Displays an error and its causes (its [`source`](Error::source) chain), each once,
/// joined by `: `, as `{:#}` of an `anyhow::Error` does. Every error of the promptkit crates
/// shows its own message only and returns its cause from `source`, so no part repeats.
///
/// ```
/// use promptkit_core::{ErrorChain, StateError};
///
/// let cause = std::io::Error::other("disk full");
/// let error = StateError::backend("append failed", cause);
/// assert_eq!(error.to_string(), "state backend error: append failed");
/// assert_eq!(
///     ErrorChain(&error).to_string(),
///     "state backend error: append failed: disk full"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
