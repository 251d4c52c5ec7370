//! The attempt budget of one fallback call, shared with the HTTP retry loop.
//!
//! A [`FallbackProvider`](crate::fallback::FallbackProvider) call runs each candidate inside a
//! task-local scope that holds the call's remaining attempts and says whether the candidate
//! may retry on its own. The HTTP transport asks [`may_retry`] before each retry: outside a
//! scope (a provider used directly) the answer is always yes and only its own
//! [`RetryPolicy`](crate::http::RetryPolicy) applies; inside one, a retry spends one attempt
//! of the budget, and only the last candidate left may retry at all (the others hand the
//! call on to the next candidate instead of waiting). So a call through a fallback makes at
//! most the fallback's `max_attempts` upstream requests, however many candidates retry.

#[cfg(feature = "fallback")]
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// The attempts one call may still make.
#[derive(Debug)]
pub(crate) struct Budget {
    left: AtomicU32,
}

impl Budget {
    #[cfg(feature = "fallback")]
    pub(crate) fn new(attempts: u32) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicU32::new(attempts),
        })
    }

    /// Takes one attempt; `false` when none is left.
    pub(crate) fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// What a candidate's call runs under.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) budget: Arc<Budget>,
    /// Whether the candidate may retry on its own (it is the last one left).
    pub(crate) retries: bool,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `fut` (a candidate's call) within `scope`.
#[cfg(feature = "fallback")]
pub(crate) async fn within<F: Future>(scope: Scope, fut: F) -> F::Output {
    SCOPE.scope(scope, fut).await
}

/// The scope the current task runs in, if any (a fallback inside a fallback shares its
/// parent's budget).
#[cfg(feature = "fallback")]
pub(crate) fn current() -> Option<Scope> {
    SCOPE.try_with(Clone::clone).ok()
}

/// Whether the transport may retry now; spends one attempt of the budget if so.
#[cfg_attr(
    not(feature = "http"),
    allow(dead_code, reason = "used by the HTTP transport")
)]
pub(crate) fn may_retry() -> bool {
    SCOPE
        .try_with(|scope| scope.retries && scope.budget.take())
        .unwrap_or(true)
}
