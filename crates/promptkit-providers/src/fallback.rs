//! A provider that tries candidates in order until one answers.
//!
//! [`FallbackProvider`] holds an ordered list of providers. A call goes to the first healthy
//! candidate; when it fails with an error the [`FallbackPolicy`] says to fail over on
//! (by default: rate limits, overload, server and transport errors, timeouts, a truncated
//! stream, and candidate-specific errors such as a rejected key, a used-up quota or an
//! oversized answer), the candidate is marked unhealthy for a cooldown and the next one is
//! tried. Errors that would fail anywhere (a bad request, a context that is too long,
//! filtered content) are returned at once. The response names the candidate that served it
//! in [`ProviderResponse::served_by`].
//!
//! Candidates cooling down are skipped while any candidate is healthy; when none is, they
//! are tried, the one whose cooldown ends first first. One call makes at most
//! [`FallbackPolicy::max_attempts`] upstream attempts in all: a candidate other than the last
//! one left makes a single attempt (the next candidate is a better retry than waiting), and
//! the last one retries per its own policy within what is left of the budget.
//!
//! Streams fail over freely until they have produced answer content (text, reasoning or a
//! tool call). After that the error is returned: text already streamed to the caller is
//! never replayed from another candidate.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use promptkit_core::{
    BoxFuture, Capabilities, Cost, EventStream, PricingTable, Provider, ProviderError,
    ProviderRequest, ProviderResponse, StreamEvent, TimeoutPhase, Usage,
};

use crate::budget::{self, Budget, Scope};

/// When a [`FallbackProvider`] moves on to the next candidate.
#[derive(Clone)]
pub struct FallbackPolicy {
    /// Deadline of one candidate's call, its own retries included (for a stream: until its
    /// first event). `None`: no deadline beyond the candidate's own.
    pub attempt_timeout: Option<Duration>,
    /// How long a failed candidate is skipped.
    pub cooldown: Duration,
    /// Most upstream attempts one call makes across all candidates, retries included
    /// (`None`: the number of candidates plus two).
    pub max_attempts: Option<u32>,
    /// Which errors move on to the next candidate.
    pub fail_over_on: Arc<dyn Fn(&ProviderError) -> bool + Send + Sync>,
}

impl fmt::Debug for FallbackPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackPolicy")
            .field("attempt_timeout", &self.attempt_timeout)
            .field("cooldown", &self.cooldown)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// The default failover rule: retryable errors and errors specific to one candidate (its
/// key, quota, configuration, model, or an answer over the size limits).
pub fn default_fail_over(error: &ProviderError) -> bool {
    error.is_retryable()
        || matches!(
            error,
            ProviderError::Auth { .. }
                | ProviderError::QuotaExhausted { .. }
                | ProviderError::Config { .. }
                | ProviderError::Unsupported { .. }
                | ProviderError::ResponseTooLarge { .. }
        )
}

impl Default for FallbackPolicy {
    /// A 120 s deadline per candidate (above the HTTP providers' 60 s request timeout, so it
    /// bounds their retries), a 30 s cooldown, candidates + 2 attempts, [`default_fail_over`].
    fn default() -> Self {
        Self {
            attempt_timeout: Some(Duration::from_secs(120)),
            cooldown: Duration::from_secs(30),
            max_attempts: None,
            fail_over_on: Arc::new(default_fail_over),
        }
    }
}

struct Candidate {
    provider: Arc<dyn Provider>,
    unhealthy_until: Mutex<Option<Instant>>,
}

impl Candidate {
    /// When the cooldown ends, if the candidate is cooling down now.
    fn cooling_until(&self) -> Option<Instant> {
        self.unhealthy_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .filter(|t| Instant::now() < *t)
    }

    fn mark_unhealthy(&self, cooldown: Duration) {
        *self
            .unhealthy_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + cooldown);
    }

    fn mark_healthy(&self) {
        *self
            .unhealthy_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

struct Inner {
    id: String,
    candidates: Vec<Candidate>,
    policy: FallbackPolicy,
}

/// Tries providers in order. Cheap to clone.
#[derive(Clone)]
pub struct FallbackProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for FallbackProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackProvider")
            .field("id", &self.inner.id)
            .field(
                "candidates",
                &self
                    .inner
                    .candidates
                    .iter()
                    .map(|c| c.provider.id())
                    .collect::<Vec<_>>(),
            )
            .field("policy", &self.inner.policy)
            .finish()
    }
}

impl FallbackProvider {
    /// A fallback over `candidates`, in order.
    ///
    /// # Errors
    /// [`ProviderError::Config`] when there is no candidate.
    pub fn new(
        id: impl Into<String>,
        candidates: Vec<Arc<dyn Provider>>,
        policy: FallbackPolicy,
    ) -> Result<Self, ProviderError> {
        if candidates.is_empty() {
            return Err(ProviderError::Config {
                message: "a fallback provider needs at least one candidate".to_owned(),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                id: id.into(),
                candidates: candidates
                    .into_iter()
                    .map(|provider| Candidate {
                        provider,
                        unhealthy_until: Mutex::new(None),
                    })
                    .collect(),
                policy,
            }),
        })
    }

    /// Candidate ids in the order they would be tried now: the healthy ones in order, or,
    /// when every candidate is cooling down, all of them, the soonest to recover first.
    pub fn order(&self) -> Vec<&str> {
        self.attempt_order()
            .into_iter()
            .map(|i| self.inner.candidates[i].provider.id())
            .collect()
    }

    fn attempt_order(&self) -> Vec<usize> {
        let candidates = &self.inner.candidates;
        let healthy: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].cooling_until().is_none())
            .collect();
        if !healthy.is_empty() {
            return healthy;
        }
        let mut cooling: Vec<(usize, Option<Instant>)> = (0..candidates.len())
            .map(|i| (i, candidates[i].cooling_until()))
            .collect();
        cooling.sort_by_key(|&(i, until)| (until, i));
        cooling.into_iter().map(|(i, _)| i).collect()
    }

    /// The attempt budget of a new call: its parent fallback's, if it runs inside one, else
    /// a new one.
    fn budget(&self) -> (Arc<Budget>, bool) {
        match budget::current() {
            Some(parent) => (parent.budget, parent.retries),
            None => {
                let attempts = self.inner.policy.max_attempts.unwrap_or_else(|| {
                    u32::try_from(self.inner.candidates.len())
                        .unwrap_or(u32::MAX)
                        .saturating_add(2)
                });
                (Budget::new(attempts), true)
            }
        }
    }

    async fn with_timeout<T>(
        &self,
        fut: impl Future<Output = Result<T, ProviderError>>,
        phase: TimeoutPhase,
    ) -> Result<T, ProviderError> {
        match self.inner.policy.attempt_timeout {
            Some(limit) => {
                tokio::time::timeout(limit, fut)
                    .await
                    .unwrap_or(Err(ProviderError::Timeout {
                        phase,
                        after: limit,
                    }))
            }
            None => fut.await,
        }
    }

    fn fail_over(
        &self,
        candidate: &Candidate,
        error: ProviderError,
        attempts: &mut Vec<(String, ProviderError)>,
    ) {
        tracing::warn!(
            provider = %candidate.provider.id(),
            error = %crate::error_chain(&error),
            "failing over"
        );
        candidate.mark_unhealthy(self.inner.policy.cooldown);
        attempts.push((candidate.provider.id().to_owned(), error));
    }
}

impl Provider for FallbackProvider {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn model(&self) -> &str {
        self.inner.candidates[0].provider.model()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.candidates[0].provider.capabilities()
    }

    fn pricing(&self) -> Option<&PricingTable> {
        None
    }

    fn cost(&self, model: &str, usage: &Usage) -> Option<Cost> {
        self.inner
            .candidates
            .iter()
            .find_map(|c| c.provider.cost(model, usage))
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let (budget, may_retry) = self.budget();
            let order = self.attempt_order();
            let mut attempts = Vec::new();
            for (position, &i) in order.iter().enumerate() {
                if !budget.take() {
                    tracing::debug!(provider = %self.inner.id, "the fallback's attempt budget is spent");
                    break;
                }
                let candidate = &self.inner.candidates[i];
                let scope = Scope {
                    budget: Arc::clone(&budget),
                    retries: may_retry && position + 1 == order.len(),
                };
                let call = budget::within(scope, candidate.provider.predict(request));
                match self.with_timeout(call, TimeoutPhase::Request).await {
                    Ok(mut response) => {
                        candidate.mark_healthy();
                        response.served_by = Some(candidate.provider.id().to_owned());
                        return Ok(response);
                    }
                    Err(e) if (self.inner.policy.fail_over_on)(&e) => {
                        self.fail_over(candidate, e, &mut attempts);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(ProviderError::AllFailed { attempts })
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let (budget, may_retry) = self.budget();
            let mut state = StreamState {
                this: self.clone(),
                request: request.clone(),
                queue: self.attempt_order().into(),
                budget,
                may_retry,
                attempts: Vec::new(),
                current: None,
                yielded: false,
                content: false,
                pending_reset: false,
            };
            if !state.open_next().await? {
                return Err(ProviderError::AllFailed {
                    attempts: state.attempts,
                });
            }
            let stream: EventStream =
                Box::pin(futures_util::stream::unfold(state, StreamState::next));
            Ok(stream)
        })
    }
}

struct StreamState {
    this: FallbackProvider,
    request: ProviderRequest,
    queue: VecDeque<usize>,
    budget: Arc<Budget>,
    may_retry: bool,
    attempts: Vec<(String, ProviderError)>,
    current: Option<(usize, EventStream)>,
    /// Whether any event was handed out (a failover then starts with `Reset`).
    yielded: bool,
    /// Whether answer content was handed out (no failover after that).
    content: bool,
    pending_reset: bool,
}

impl StreamState {
    /// Opens the next candidate's stream; `Ok(false)` when every candidate failed over or
    /// the attempt budget is spent.
    async fn open_next(&mut self) -> Result<bool, ProviderError> {
        let this = self.this.clone();
        while let Some(i) = self.queue.pop_front() {
            if !self.budget.take() {
                tracing::debug!(provider = %this.inner.id, "the fallback's attempt budget is spent");
                return Ok(false);
            }
            let candidate = &this.inner.candidates[i];
            let scope = Scope {
                budget: Arc::clone(&self.budget),
                retries: self.may_retry && self.queue.is_empty(),
            };
            let open = budget::within(scope, candidate.provider.stream(&self.request));
            match this.with_timeout(open, TimeoutPhase::FirstChunk).await {
                Ok(stream) => {
                    self.current = Some((i, stream));
                    return Ok(true);
                }
                Err(e) if (this.inner.policy.fail_over_on)(&e) => {
                    this.fail_over(candidate, e, &mut self.attempts);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        loop {
            if self.pending_reset {
                self.pending_reset = false;
                return Some((Ok(StreamEvent::Reset), self));
            }
            let (index, stream) = self.current.as_mut()?;
            let index = *index;
            let error = match stream.next().await {
                Some(Ok(event)) => {
                    if matches!(event, StreamEvent::Finish { .. }) {
                        self.this.inner.candidates[index].mark_healthy();
                    }
                    self.yielded = true;
                    self.content |= !matches!(
                        event,
                        StreamEvent::Usage { .. } | StreamEvent::Reset | StreamEvent::Finish { .. }
                    );
                    return Some((Ok(event), self));
                }
                None => return None,
                Some(Err(e)) => e,
            };
            let this = self.this.clone();
            if self.content || !(this.inner.policy.fail_over_on)(&error) {
                self.current = None;
                return Some((Err(error), self));
            }
            this.fail_over(&this.inner.candidates[index], error, &mut self.attempts);
            self.current = None;
            match self.open_next().await {
                Ok(true) => self.pending_reset = self.yielded,
                Ok(false) => {
                    let attempts = std::mem::take(&mut self.attempts);
                    return Some((Err(ProviderError::AllFailed { attempts }), self));
                }
                Err(e) => return Some((Err(e), self)),
            }
        }
    }
}
