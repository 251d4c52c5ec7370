//! A provider that tries candidates in order until one answers.
//!
//! [`FallbackProvider`] holds an ordered list of providers. A call goes to the first healthy
//! candidate; when it fails with an error the [`FallbackPolicy`] says to fail over on
//! (by default: rate limits, server and transport errors, timeouts, a truncated stream, and
//! candidate-specific errors such as a rejected key), the candidate is marked unhealthy for a
//! cooldown and the next one is tried. Errors that would fail anywhere (a bad request, a
//! context that is too long, filtered content) are returned at once. The response names the
//! candidate that served it in [`ProviderResponse::served_by`].
//!
//! Streams fail over freely before their first event. After output has started, the policy's
//! `after_partial_output` decides: by default the error is returned (the caller already shows
//! part of an answer); when enabled, the stream emits [`StreamEvent::Reset`] so consumers
//! discard what they accumulated, and continues with the next candidate.

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

/// When a [`FallbackProvider`] moves on to the next candidate.
#[derive(Clone)]
pub struct FallbackPolicy {
    /// Deadline of one candidate's call (for a stream: until its first event).
    pub attempt_timeout: Option<Duration>,
    /// How long a failed candidate is skipped.
    pub cooldown: Duration,
    /// Whether a stream that fails after its first event continues on the next candidate
    /// (with a [`StreamEvent::Reset`]) instead of failing.
    pub after_partial_output: bool,
    /// Which errors move on to the next candidate.
    pub fail_over_on: Arc<dyn Fn(&ProviderError) -> bool + Send + Sync>,
}

impl fmt::Debug for FallbackPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackPolicy")
            .field("attempt_timeout", &self.attempt_timeout)
            .field("cooldown", &self.cooldown)
            .field("after_partial_output", &self.after_partial_output)
            .finish_non_exhaustive()
    }
}

/// The default failover rule: retryable errors and errors specific to one candidate.
pub fn default_fail_over(error: &ProviderError) -> bool {
    error.is_retryable()
        || matches!(
            error,
            ProviderError::Auth { .. }
                | ProviderError::Config { .. }
                | ProviderError::Unsupported { .. }
        )
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: None,
            cooldown: Duration::from_secs(30),
            after_partial_output: false,
            fail_over_on: Arc::new(default_fail_over),
        }
    }
}

struct Candidate {
    provider: Arc<dyn Provider>,
    unhealthy_until: Mutex<Option<Instant>>,
}

impl Candidate {
    fn healthy(&self) -> bool {
        self.unhealthy_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|t| Instant::now() >= t)
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

    /// Candidate ids in the order they would be tried now: healthy ones first, then the
    /// ones cooling down (tried only when nothing healthy is left).
    pub fn order(&self) -> Vec<&str> {
        self.attempt_order()
            .into_iter()
            .map(|i| self.inner.candidates[i].provider.id())
            .collect()
    }

    fn attempt_order(&self) -> Vec<usize> {
        let (healthy, cooling): (Vec<usize>, Vec<usize>) =
            (0..self.inner.candidates.len()).partition(|&i| self.inner.candidates[i].healthy());
        healthy.into_iter().chain(cooling).collect()
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
            let mut attempts = Vec::new();
            for i in self.attempt_order() {
                let candidate = &self.inner.candidates[i];
                match self
                    .with_timeout(candidate.provider.predict(request), TimeoutPhase::Request)
                    .await
                {
                    Ok(mut response) => {
                        candidate.mark_healthy();
                        response.served_by = Some(candidate.provider.id().to_owned());
                        return Ok(response);
                    }
                    Err(e) if (self.inner.policy.fail_over_on)(&e) => {
                        tracing::warn!(provider = %candidate.provider.id(), error = %e, "failing over");
                        candidate.mark_unhealthy(self.inner.policy.cooldown);
                        attempts.push((candidate.provider.id().to_owned(), e));
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
            let mut queue: VecDeque<usize> = self.attempt_order().into();
            let mut attempts = Vec::new();
            let Some((index, stream)) = self.open_next(request, &mut queue, &mut attempts).await?
            else {
                return Err(ProviderError::AllFailed { attempts });
            };
            let state = StreamState {
                this: self.clone(),
                request: request.clone(),
                queue,
                attempts,
                current: Some((index, stream)),
                pending_reset: false,
            };
            let stream: EventStream =
                Box::pin(futures_util::stream::unfold(state, StreamState::next));
            Ok(stream)
        })
    }
}

impl FallbackProvider {
    /// Opens the next candidate's stream; `Ok(None)` when every candidate failed over.
    async fn open_next(
        &self,
        request: &ProviderRequest,
        queue: &mut VecDeque<usize>,
        attempts: &mut Vec<(String, ProviderError)>,
    ) -> Result<Option<(usize, EventStream)>, ProviderError> {
        while let Some(i) = queue.pop_front() {
            let candidate = &self.inner.candidates[i];
            match self
                .with_timeout(candidate.provider.stream(request), TimeoutPhase::FirstChunk)
                .await
            {
                Ok(stream) => return Ok(Some((i, stream))),
                Err(e) if (self.inner.policy.fail_over_on)(&e) => {
                    tracing::warn!(provider = %candidate.provider.id(), error = %e, "failing over");
                    candidate.mark_unhealthy(self.inner.policy.cooldown);
                    attempts.push((candidate.provider.id().to_owned(), e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

struct StreamState {
    this: FallbackProvider,
    request: ProviderRequest,
    queue: VecDeque<usize>,
    attempts: Vec<(String, ProviderError)>,
    current: Option<(usize, EventStream)>,
    pending_reset: bool,
}

impl StreamState {
    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        loop {
            if self.pending_reset {
                self.pending_reset = false;
                return Some((Ok(StreamEvent::Reset), self));
            }
            let (index, stream) = self.current.as_mut()?;
            let index = *index;
            match stream.next().await {
                Some(Ok(event)) => {
                    if matches!(event, StreamEvent::Finish { .. }) {
                        self.this.inner.candidates[index].mark_healthy();
                    }
                    return Some((Ok(event), self));
                }
                None => return None,
                Some(Err(e)) => {
                    let candidate = &self.this.inner.candidates[index];
                    let policy = &self.this.inner.policy;
                    if !(policy.after_partial_output && (policy.fail_over_on)(&e)) {
                        self.current = None;
                        return Some((Err(e), self));
                    }
                    candidate.mark_unhealthy(policy.cooldown);
                    self.attempts.push((candidate.provider.id().to_owned(), e));
                    let this = self.this.clone();
                    match this
                        .open_next(&self.request, &mut self.queue, &mut self.attempts)
                        .await
                    {
                        Ok(Some(next)) => {
                            self.current = Some(next);
                            self.pending_reset = true;
                        }
                        Ok(None) => {
                            self.current = None;
                            let attempts = std::mem::take(&mut self.attempts);
                            return Some((Err(ProviderError::AllFailed { attempts }), self));
                        }
                        Err(e) => {
                            self.current = None;
                            return Some((Err(e), self));
                        }
                    }
                }
            }
        }
    }
}
