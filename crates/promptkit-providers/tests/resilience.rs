//! Resilience of every HTTP vendor (OpenAI, Anthropic, Gemini) against the test kit's mock
//! upstream: retries honouring the vendor's retry delay, the total-time bound, no retry
//! after the first streamed event, the idle timeout, a malformed frame skipped, and
//! failover to a second provider and back after the cooldown.
#![cfg(all(
    feature = "openai",
    feature = "anthropic",
    feature = "gemini",
    feature = "fallback"
))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use promptkit_core::{
    Message, Provider, ProviderError, ProviderRequest, StreamAccumulator, StreamEvent, TimeoutPhase,
};
use promptkit_providers::anthropic::{AnthropicConfig, AnthropicProvider};
use promptkit_providers::fallback::{FallbackPolicy, FallbackProvider};
use promptkit_providers::gemini::{GeminiConfig, GeminiProvider};
use promptkit_providers::http::{HttpConfig, RetryPolicy};
use promptkit_providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit_testkit::conformance::{Answer, Failure, Wire};
use promptkit_testkit::upstream::{MockUpstream, Profile, ScriptedBody, SseStep};

/// Retries on, with a backoff far shorter than any `Retry-After` used here, so a wait that
/// long can only come from honouring it.
fn http(idle: Duration) -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        idle_timeout: idle,
        max_concurrency: None,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_elapsed: Duration::from_secs(10),
        },
        ..HttpConfig::default()
    }
}

fn build(wire: Wire, server: &MockUpstream, http: HttpConfig) -> Arc<dyn Provider> {
    let base = wire.base_url(server);
    match wire {
        Wire::Anthropic => Arc::new(
            AnthropicProvider::new(
                AnthropicConfig::new("claude-sonnet-4-5", "k")
                    .with_base_url(base)
                    .with_http(http),
            )
            .expect("provider"),
        ),
        Wire::Gemini => Arc::new(
            GeminiProvider::new(
                GeminiConfig::new("gemini-2.5-flash", "k")
                    .with_base_url(base)
                    .with_http(http),
            )
            .expect("provider"),
        ),
        _ => Arc::new(
            OpenAiProvider::new(
                OpenAiConfig::openai("gpt-4o", "k")
                    .with_base_url(base)
                    .with_http(http),
            )
            .expect("provider"),
        ),
    }
}

fn request() -> ProviderRequest {
    ProviderRequest::new(vec![Message::user("hello?")])
}

async fn collect(
    provider: &dyn Provider,
) -> Result<(Vec<StreamEvent>, Option<ProviderError>), ProviderError> {
    let mut stream = provider.stream(&request()).await?;
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(e) => return Ok((events, Some(e))),
        }
    }
    Ok((events, None))
}

fn text(events: &[StreamEvent]) -> String {
    let mut acc = StreamAccumulator::new();
    events.iter().for_each(|e| acc.push(e));
    acc.finish().text()
}

async fn rate_limit_then_success_honouring_the_retry_delay(wire: Wire) -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    // OpenAI and Anthropic send `Retry-After`; Gemini a RetryInfo detail in the body.
    server.push(wire.failure(
        Failure::RateLimited {
            retry_after_secs: 1,
        },
        true,
    ));
    server.push(wire.answer(&Answer::text(&["after ", "the wait"]), true));
    let provider = build(wire, &server, http(Duration::from_secs(5)));
    let started = Instant::now();
    let (events, error) = collect(provider.as_ref()).await?;
    assert!(error.is_none(), "{wire:?}: {error:?}");
    assert_eq!(text(&events), "after the wait");
    assert_eq!(server.requests().len(), 2, "{wire:?}: one retry");
    // The backoff is capped at 1 ms: only the vendor's 1 s delay explains the wait.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{wire:?}: the retry delay was not honoured"
    );
    Ok(())
}

async fn a_retry_past_the_total_time_bound_is_not_made(wire: Wire) -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(wire.failure(
        Failure::RateLimited {
            retry_after_secs: 30,
        },
        false,
    ));
    let mut config = http(Duration::from_secs(5));
    config.retry.max_elapsed = Duration::from_secs(2);
    let provider = build(wire, &server, config);
    match provider.predict(&request()).await {
        Err(ProviderError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)), "{wire:?}");
        }
        other => panic!("{wire:?}: unexpected {other:?}"),
    }
    assert_eq!(server.requests().len(), 1, "{wire:?}: no retry was made");
    Ok(())
}

async fn no_retry_after_the_first_streamed_event(wire: Wire) -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    // Dropped before the first event: retried.
    server.push(promptkit_testkit::upstream::Scripted::sse(vec![
        SseStep::Disconnect,
    ]));
    server.push(wire.answer(&Answer::text(&["fine"]), true));
    let provider = build(wire, &server, http(Duration::from_secs(5)));
    let (events, error) = collect(provider.as_ref()).await?;
    assert!(error.is_none(), "{wire:?}: {error:?}");
    assert_eq!(text(&events), "fine");
    assert_eq!(server.requests().len(), 2, "{wire:?}");

    // Dropped after a delta: the error reaches the caller, nothing is retried.
    server.push(wire.failure(Failure::Disconnect, true));
    let (events, error) = collect(provider.as_ref()).await?;
    assert_eq!(text(&events), "partial ", "{wire:?}");
    assert!(
        matches!(error, Some(ProviderError::StreamTruncated { .. })),
        "{wire:?}: {error:?}"
    );
    assert_eq!(server.requests().len(), 3, "{wire:?}: not retried");
    Ok(())
}

async fn idle_timeout_between_chunks(wire: Wire) -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(wire.failure(Failure::Stall, true));
    let provider = build(wire, &server, http(Duration::from_millis(200)));
    let (events, error) = collect(provider.as_ref()).await?;
    assert_eq!(text(&events), "partial ", "{wire:?}");
    assert!(
        matches!(
            error,
            Some(ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                ..
            })
        ),
        "{wire:?}: {error:?}"
    );
    assert_eq!(server.requests().len(), 1, "{wire:?}: not retried");
    Ok(())
}

/// A stream whose first event is late: the request's first-event deadline fires, and the
/// `stream` future itself returns a first-chunk timeout after it.
async fn a_first_event_that_never_comes_times_out(wire: Wire) -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let mut scripted = wire.answer(&Answer::text(&["late"]), true);
    let ScriptedBody::Sse(steps) = &mut scripted.body else {
        panic!("a stream is scripted as SSE");
    };
    steps.insert(0, SseStep::Delay(Duration::from_millis(800)));
    server.push(scripted);
    let deadline = Duration::from_millis(150);
    let config = HttpConfig {
        retry: RetryPolicy::none(),
        first_event_timeout: deadline,
        ..http(Duration::from_secs(5))
    };
    let provider = build(wire, &server, config);
    // Had the timeout not fired, the event would have come and the stream opened.
    let Err(error) = provider.stream(&request()).await else {
        panic!("{wire:?}: the stream opened");
    };
    assert!(
        matches!(
            error,
            ProviderError::Timeout {
                phase: TimeoutPhase::FirstChunk,
                after,
            } if after == deadline
        ),
        "{wire:?}: {error:?}"
    );
    Ok(())
}

/// The idle timeout is between chunks, not for the whole stream: a stream that keeps
/// sending, slower than nothing but faster than the timeout, outlives it several times over.
async fn a_steady_stream_outlives_the_idle_timeout(wire: Wire) -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let mut scripted = wire.answer(&Answer::text(&["a ", "b ", "c ", "d ", "e ", "f"]), true);
    let ScriptedBody::Sse(steps) = &mut scripted.body else {
        panic!("a stream is scripted as SSE");
    };
    let paced: Vec<SseStep> = steps
        .drain(..)
        .flat_map(|step| [SseStep::Delay(Duration::from_millis(60)), step])
        .collect();
    *steps = paced;
    server.push(scripted);
    let provider = build(wire, &server, http(Duration::from_millis(150)));
    let (events, error) = collect(provider.as_ref()).await?;
    assert!(error.is_none(), "{wire:?}: {error:?}");
    assert_eq!(text(&events), "a b c d e f", "{wire:?}");
    Ok(())
}

async fn a_malformed_frame_is_skipped(wire: Wire) -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let mut scripted = wire.answer(&Answer::text(&["one ", "two ", "three"]), true);
    let ScriptedBody::Sse(steps) = &mut scripted.body else {
        panic!("a stream is scripted as SSE");
    };
    // After the first text frame (Anthropic's frames start with message_start and the
    // block start).
    let at = match wire {
        Wire::Anthropic => 3,
        _ => 1,
    };
    steps.insert(at, SseStep::Data("{\"truncated\": [".to_owned()));
    steps.insert(at + 1, SseStep::Raw(": keep-alive\n\n".to_owned()));
    server.push(scripted);
    let provider = build(wire, &server, http(Duration::from_secs(5)));
    let (events, error) = collect(provider.as_ref()).await?;
    assert!(error.is_none(), "{wire:?}: {error:?}");
    assert_eq!(text(&events), "one two three", "{wire:?}");
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    Ok(())
}

macro_rules! per_wire {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use super::*;

                #[tokio::test]
                async fn openai() -> anyhow::Result<()> {
                    super::$scenario(Wire::OpenAi).await
                }

                #[tokio::test]
                async fn anthropic() -> anyhow::Result<()> {
                    super::$scenario(Wire::Anthropic).await
                }

                #[tokio::test]
                async fn gemini() -> anyhow::Result<()> {
                    super::$scenario(Wire::Gemini).await
                }
            }
        )+
    };
}

per_wire!(
    rate_limit_then_success_honouring_the_retry_delay,
    a_retry_past_the_total_time_bound_is_not_made,
    no_retry_after_the_first_streamed_event,
    idle_timeout_between_chunks,
    a_first_event_that_never_comes_times_out,
    a_steady_stream_outlives_the_idle_timeout,
    a_malformed_frame_is_skipped,
);

#[tokio::test]
async fn fallback_to_the_second_vendor_and_back_after_the_cooldown() -> anyhow::Result<()> {
    let gemini_server = MockUpstream::start(Profile::INSTANT).await?;
    let openai_server = MockUpstream::start(Profile::INSTANT).await?;
    let no_retries = HttpConfig {
        retry: RetryPolicy::none(),
        ..http(Duration::from_secs(5))
    };
    let primary = build(Wire::Gemini, &gemini_server, no_retries.clone());
    let backup = build(Wire::OpenAi, &openai_server, no_retries);
    let cooldown = Duration::from_millis(200);
    let fallback = FallbackProvider::new(
        "chain",
        vec![primary, backup],
        FallbackPolicy {
            cooldown,
            ..FallbackPolicy::default()
        },
    )?;

    // The primary is down: the backup serves, and the primary cools down.
    gemini_server.push(Wire::Gemini.failure(Failure::Server, true));
    let (events, error) = collect(&fallback).await?;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text(&events), "chunk-1 chunk-2 chunk-3 ");
    assert_eq!(fallback.order(), ["openai"]);
    let response = fallback.predict(&request()).await?;
    assert_eq!(response.served_by.as_deref(), Some("openai"));
    assert_eq!(
        gemini_server.requests().len(),
        1,
        "skipped while cooling down"
    );

    // After the cooldown the primary is tried first again, and serves.
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;
    assert_eq!(fallback.order(), ["gemini", "openai"]);
    let response = fallback.predict(&request()).await?;
    assert_eq!(response.served_by.as_deref(), Some("gemini"));
    assert_eq!(gemini_server.requests().len(), 2);
    assert_eq!(openai_server.requests().len(), 2);
    Ok(())
}

/// Three candidates, every one answering 429 (the review's test 29): one call makes at most
/// the fallback's attempt budget in upstream requests, although each candidate would retry
/// three times on its own; the first two hand over at once, the last retries within what is
/// left. Then every candidate cools down and is tried again only when none is healthy.
#[tokio::test]
async fn a_fallback_call_stays_within_its_attempt_budget() -> anyhow::Result<()> {
    let servers = [
        MockUpstream::start(Profile::INSTANT).await?,
        MockUpstream::start(Profile::INSTANT).await?,
        MockUpstream::start(Profile::INSTANT).await?,
    ];
    let wires = [Wire::OpenAi, Wire::Anthropic, Wire::Gemini];
    let mut candidates = Vec::new();
    for (server, wire) in servers.iter().zip(wires) {
        for _ in 0..10 {
            server.push(wire.failure(
                Failure::RateLimited {
                    retry_after_secs: 0,
                },
                false,
            ));
        }
        candidates.push(build(wire, server, http(Duration::from_secs(5))));
    }
    let fallback = FallbackProvider::new(
        "chain",
        candidates,
        FallbackPolicy {
            max_attempts: Some(4),
            ..FallbackPolicy::default()
        },
    )?;
    let error = fallback.predict(&request()).await.expect_err("all limited");
    let ProviderError::AllFailed { attempts } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(attempts.len(), 3);
    let sent: Vec<usize> = servers.iter().map(|s| s.requests().len()).collect();
    assert_eq!(
        sent,
        [1, 1, 2],
        "one attempt each, the last one retries once"
    );

    // Every candidate cools down: all are tried again, the first to have failed first, and
    // the budget still holds.
    assert_eq!(fallback.order(), ["openai", "anthropic", "gemini"]);
    let error = fallback
        .stream(&request())
        .await
        .err()
        .expect("all limited");
    assert!(
        matches!(error, ProviderError::AllFailed { .. }),
        "{error:?}"
    );
    let total: usize = servers.iter().map(|s| s.requests().len()).sum();
    assert_eq!(total, 4 + 4);
    Ok(())
}

/// A used-up quota (OpenAI `insufficient_quota`, Anthropic's credit-balance 400, Gemini's
/// per-day `RESOURCE_EXHAUSTED`) is its own class: never retried, although the candidate may
/// retry, and the fallback moves on to the next vendor at once.
#[tokio::test]
async fn a_used_up_quota_is_not_retried_and_fails_over() -> anyhow::Result<()> {
    for wire in [Wire::OpenAi, Wire::Anthropic, Wire::Gemini] {
        let primary_server = MockUpstream::start(Profile::INSTANT).await?;
        let backup_server = MockUpstream::start(Profile::INSTANT).await?;
        let retries = HttpConfig {
            retry: RetryPolicy {
                max_attempts: 3,
                initial_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
                max_elapsed: Duration::from_secs(5),
            },
            ..http(Duration::from_secs(5))
        };
        let backup_wire = if wire == Wire::OpenAi {
            Wire::Anthropic
        } else {
            Wire::OpenAi
        };
        for _ in 0..3 {
            primary_server.push(wire.failure(Failure::QuotaExhausted, false));
        }
        backup_server.push(backup_wire.answer(&Answer::text(&["from the backup"]), false));

        // Alone, the candidate would retry a retryable error: a used-up quota is not one.
        let alone = build(wire, &primary_server, retries.clone());
        let error = alone.predict(&request()).await.expect_err("quota");
        assert!(
            matches!(error, ProviderError::QuotaExhausted { .. }) && !error.is_retryable(),
            "{wire:?}: {error:?}"
        );
        assert_eq!(primary_server.requests().len(), 1, "{wire:?}: retried");

        let fallback = FallbackProvider::new(
            "chain",
            vec![
                build(wire, &primary_server, retries.clone()),
                build(backup_wire, &backup_server, retries),
            ],
            FallbackPolicy::default(),
        )?;
        let response = fallback.predict(&request()).await?;
        assert_eq!(response.text(), "from the backup", "{wire:?}");
        assert_eq!(primary_server.requests().len(), 2, "{wire:?}");
        assert_eq!(backup_server.requests().len(), 1, "{wire:?}");
    }
    Ok(())
}
