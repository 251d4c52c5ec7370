//! The bounds of provider I/O against hostile or broken upstreams (the reliability review's
//! tests 19 to 26), for every HTTP vendor where the wire matters: huge retry delays, lines
//! and events past their limits, keep-alive-only and never-ending streams, huge bodies and
//! floods of malformed frames. Each ends in a typed error at its limit, with memory bounded
//! by the limit and the concurrency slot released.
#![cfg(all(feature = "openai", feature = "anthropic", feature = "gemini"))]

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    Message, Provider, ProviderError, ProviderRequest, ResponsePart, StreamEvent, TimeoutPhase,
};
use promptkit_providers::anthropic::{AnthropicConfig, AnthropicProvider};
use promptkit_providers::gemini::{GeminiConfig, GeminiProvider};
use promptkit_providers::http::{HttpConfig, IoLimits, RetryPolicy};
use promptkit_providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit_testkit::conformance::{Answer, Failure, Wire};
use promptkit_testkit::upstream::{
    MockUpstream, Profile, Scripted, SseStep, anthropic, chunks, gemini,
};
use serde_json::json;

const WIRES: [Wire; 3] = [Wire::OpenAi, Wire::Anthropic, Wire::Gemini];

/// Short timeouts, no retries unless a test asks for them.
fn http() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        first_event_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(5),
        retry: RetryPolicy::none(),
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

/// The events of a stream and the error that ended it, whether the `stream` future or a
/// stream item returned it.
async fn outcome(provider: &dyn Provider) -> (Vec<StreamEvent>, Option<ProviderError>) {
    let mut stream = match provider.stream(&request()).await {
        Ok(stream) => stream,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

fn deltas(events: &[StreamEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, StreamEvent::TextDelta { .. }))
        .count()
}

/// The first event of a streamed answer in the wire's framing (a text delta), so that what
/// follows comes after the stream opened.
fn first_delta(wire: Wire) -> Vec<SseStep> {
    match wire {
        Wire::Anthropic => vec![
            anthropic::step(anthropic::message_start(5, 0, 0)),
            anthropic::step(anthropic::text_start(0)),
            anthropic::step(anthropic::text_delta(0, "tick ")),
        ],
        Wire::Gemini => vec![SseStep::Json(gemini::chunk(vec![gemini::text("tick ")]))],
        _ => vec![SseStep::Json(chunks::text("tick "))],
    }
}

/// One more text delta in the wire's framing, as raw SSE text.
fn delta_frame(wire: Wire) -> String {
    match wire {
        Wire::Anthropic => format!(
            "event: content_block_delta\ndata: {}\n\n",
            anthropic::text_delta(0, "tick ")
        ),
        Wire::Gemini => format!("data: {}\n\n", gemini::chunk(vec![gemini::text("tick ")])),
        _ => format!("data: {}\n\n", chunks::text("tick ")),
    }
}

// ---- 19: huge retry delays ----

/// A 429 asking to wait `1e20` seconds (or `1e400`, `inf`, `NaN`) panicked in
/// `Duration::from_secs_f64`. Now huge values are clamped (and such a wait is past the retry
/// budget, so no retry is made), nonsense is ignored (the backoff applies).
#[tokio::test]
async fn huge_retry_delays_never_panic() -> anyhow::Result<()> {
    let max = RetryPolicy::MAX_RETRY_AFTER;
    let retries = HttpConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_elapsed: Duration::from_secs(10),
        },
        ..http()
    };
    for wire in WIRES {
        let cases: Vec<(&str, &str, Option<Duration>)> = vec![
            ("retry-after", "1e20", Some(max)),
            ("retry-after", "1e400", Some(max)),
            ("retry-after", "inf", Some(max)),
            ("retry-after-ms", "1e30", Some(max)),
            ("retry-after", "NaN", None),
        ];
        for (header, value, want) in cases {
            let server = MockUpstream::start(Profile::INSTANT).await?;
            for _ in 0..3 {
                let mut scripted = wire.failure(
                    Failure::RateLimited {
                        retry_after_secs: 1,
                    },
                    false,
                );
                scripted.headers = vec![(header.to_owned(), value.to_owned())];
                if wire == Wire::Gemini {
                    // Gemini's delay is in the body; the header (absent in reality) wins.
                    scripted =
                        Scripted::gemini_error(429, "RESOURCE_EXHAUSTED", "slow down", vec![])
                            .with_header(header, value);
                }
                server.push(scripted);
            }
            let provider = build(wire, &server, retries.clone());
            let error = provider
                .predict(&request())
                .await
                .expect_err("rate limited");
            match &error {
                ProviderError::RateLimited { retry_after, .. } => {
                    assert_eq!(*retry_after, want, "{wire:?} {header}: {value}");
                }
                other => panic!("{wire:?} {header}: {value}: {other:?}"),
            }
            // A clamped hour is past the 10 s budget: no retry. An ignored value: backoff.
            let expected = if want.is_some() { 1 } else { 3 };
            assert_eq!(
                server.requests().len(),
                expected,
                "{wire:?} {header}: {value}"
            );
        }
    }
    // Gemini's own `retryDelay: "1e20s"`.
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "slow down",
        vec![json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1e20s"})],
    ));
    let provider = build(Wire::Gemini, &server, retries);
    let error = provider
        .predict(&request())
        .await
        .expect_err("rate limited");
    assert!(
        matches!(error, ProviderError::RateLimited { retry_after: Some(d), .. } if d == max),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 1);
    Ok(())
}

// ---- 20, 21: lines and events past their limits ----

/// The peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak to the current resident memory (Linux 4.0 and later).
fn reset_peak_rss() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .and_then(|mut f| f.write_all(b"5"))
        .is_ok()
}

/// `data: ` and then 64 MiB without a newline: the stream fails with "event exceeds N
/// bytes" at the 16 MiB default, and the process grows by less than the limit plus 10 %.
#[tokio::test]
async fn an_endless_line_fails_at_the_event_limit_with_memory_bounded() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let provider = build(Wire::OpenAi, &server, http());
    let limit = IoLimits::default().max_event_bytes;
    // Warm up the client and the server first (connection pool, allocator arenas).
    server.push(Wire::OpenAi.answer(&Answer::text(&["warm"]), true));
    let (_, warm_error) = outcome(provider.as_ref()).await;
    assert!(warm_error.is_none(), "{warm_error:?}");
    server.push(Scripted::sse(vec![
        SseStep::Raw("data: ".to_owned()),
        SseStep::Repeat {
            text: "x".repeat(64 * 1024),
            times: Some(1024),
            every: Duration::ZERO,
        },
    ]));
    let measured = reset_peak_rss();
    let before = peak_rss();
    let (_, error) = outcome(provider.as_ref()).await;
    let grown = peak_rss().saturating_sub(before);
    let error = error.expect("an error");
    assert!(
        matches!(
            error,
            ProviderError::ResponseTooLarge {
                part: ResponsePart::StreamEvent,
                limit: l,
            } if l == limit as u64
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("event exceeds {limit} bytes")),
        "{error}"
    );
    if measured {
        let bound = limit as u64 + limit as u64 / 10;
        assert!(grown < bound, "grew by {grown} bytes, bound {bound}");
    }
    Ok(())
}

/// A million `data: x` lines and no blank line: one event that grows past the event limit.
#[tokio::test]
async fn a_million_data_lines_fail_at_the_event_limit() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![SseStep::Repeat {
        text: "data: x\n".repeat(1000),
        times: Some(1000),
        every: Duration::ZERO,
    }]));
    let limit = 1 << 20;
    let config = HttpConfig {
        limits: IoLimits {
            max_event_bytes: limit,
            ..IoLimits::default()
        },
        ..http()
    };
    let provider = build(Wire::OpenAi, &server, config);
    let (_, error) = outcome(provider.as_ref()).await;
    assert!(
        matches!(
            error,
            Some(ProviderError::ResponseTooLarge {
                part: ResponsePart::StreamEvent,
                limit: l,
            }) if l == limit as u64
        ),
        "{error:?}"
    );
    Ok(())
}

// ---- 22, 23, 24: keep-alives and streams that never end ----

/// Keep-alives before the first event, one every 50 ms: the first-event deadline (fixed when
/// the request was sent) fires regardless. SSE comments for every vendor, and each vendor's
/// own empty events: Anthropic pings, OpenAI chunks without choices, Gemini empty chunks.
#[tokio::test]
async fn keep_alives_do_not_extend_the_first_event_deadline() -> anyhow::Result<()> {
    let deadline = Duration::from_millis(400);
    let config = HttpConfig {
        first_event_timeout: deadline,
        ..http()
    };
    let every = Duration::from_millis(50);
    let mut cases: Vec<(Wire, String)> = WIRES
        .iter()
        .map(|&w| (w, ": keep-alive\n\n".to_owned()))
        .collect();
    cases.push((
        Wire::Anthropic,
        format!("event: ping\ndata: {}\n\n", anthropic::ping()),
    ));
    cases.push((Wire::OpenAi, "data: {\"choices\":[]}\n\n".to_owned()));
    cases.push((Wire::Gemini, "data: {}\n\n".to_owned()));
    for (wire, keep_alive) in cases {
        let server = MockUpstream::start(Profile::INSTANT).await?;
        server.push(Scripted::sse(vec![SseStep::Repeat {
            text: keep_alive.clone(),
            times: None,
            every,
        }]));
        let provider = build(wire, &server, config.clone());
        let started = std::time::Instant::now();
        let (events, error) = outcome(provider.as_ref()).await;
        assert!(events.is_empty(), "{wire:?} {keep_alive:?}: {events:?}");
        assert!(
            matches!(
                error,
                Some(ProviderError::Timeout {
                    phase: TimeoutPhase::FirstChunk,
                    after,
                }) if after == deadline
            ),
            "{wire:?} {keep_alive:?}: {error:?}"
        );
        assert!(started.elapsed() >= deadline);
    }
    Ok(())
}

/// Anthropic: `message_start`, then a `ping` every 50 ms forever. The stream outlives the
/// idle timeout (the pings are traffic) but not the stream's duration limit; the failed turn
/// frees its concurrency slot at once, though its stream is still held.
#[tokio::test]
async fn pings_after_the_start_end_at_the_stream_duration() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        anthropic::step(anthropic::message_start(5, 0, 0)),
        SseStep::Repeat {
            text: format!("event: ping\ndata: {}\n\n", anthropic::ping()),
            times: None,
            every: Duration::from_millis(50),
        },
    ]));
    let limit = Duration::from_millis(800);
    let config = HttpConfig {
        idle_timeout: Duration::from_millis(300),
        max_stream_duration: limit,
        max_concurrency: Some(1),
        ..http()
    };
    let provider = build(Wire::Anthropic, &server, config);
    let mut stream = provider.stream(&request()).await?;
    let mut error = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            error = Some(e);
            break;
        }
    }
    assert!(
        matches!(
            error,
            Some(ProviderError::Timeout {
                phase: TimeoutPhase::Stream,
                after,
            }) if after == limit
        ),
        "{error:?}"
    );
    // The slot is free while the failed stream is still held.
    server.push(Wire::Anthropic.answer(&Answer::text(&["next"]), true));
    let next = tokio::time::timeout(Duration::from_secs(5), outcome(provider.as_ref())).await;
    let (events, next_error) = next.expect("the slot was released");
    assert!(next_error.is_none(), "{next_error:?}");
    assert_eq!(deltas(&events), 1);
    drop(stream);
    Ok(())
}

/// One token every 50 ms forever: the turn ends at the stream's duration limit, or at its
/// size limit, whichever comes first, after the tokens that came before it.
#[tokio::test]
async fn a_never_ending_token_stream_ends_at_the_limits() -> anyhow::Result<()> {
    for wire in WIRES {
        let endless = |wire: Wire| {
            let mut steps = first_delta(wire);
            steps.push(SseStep::Repeat {
                text: delta_frame(wire),
                times: None,
                every: Duration::from_millis(50),
            });
            Scripted::sse(steps)
        };
        // The duration limit.
        let server = MockUpstream::start(Profile::INSTANT).await?;
        server.push(endless(wire));
        let limit = Duration::from_millis(600);
        let config = HttpConfig {
            max_stream_duration: limit,
            ..http()
        };
        let provider = build(wire, &server, config);
        let (events, error) = outcome(provider.as_ref()).await;
        assert!(deltas(&events) >= 2, "{wire:?}: {events:?}");
        assert!(
            matches!(
                error,
                Some(ProviderError::Timeout { phase: TimeoutPhase::Stream, after }) if after == limit
            ),
            "{wire:?}: {error:?}"
        );

        // The size limit.
        let server = MockUpstream::start(Profile::INSTANT).await?;
        server.push(endless(wire));
        let bytes = 4096;
        let config = HttpConfig {
            limits: IoLimits {
                max_stream_bytes: bytes,
                ..IoLimits::default()
            },
            ..http()
        };
        let provider = build(wire, &server, config);
        let (events, error) = outcome(provider.as_ref()).await;
        assert!(deltas(&events) >= 2, "{wire:?}: {events:?}");
        assert!(
            matches!(
                error,
                Some(ProviderError::ResponseTooLarge { part: ResponsePart::Stream, limit })
                    if limit == bytes as u64
            ),
            "{wire:?}: {error:?}"
        );
    }
    Ok(())
}

// ---- 25: huge non-streaming bodies ----

/// A 200 with a 1 GiB JSON body fails at the body limit with "response too large": before
/// reading anything when the length is declared, at the limit when it is not, with memory
/// bounded by the limit (not by the body).
#[tokio::test]
async fn a_huge_body_fails_at_the_body_limit() -> anyhow::Result<()> {
    let limit = 8 << 20;
    let config = HttpConfig {
        limits: IoLimits {
            max_body_bytes: limit,
            ..IoLimits::default()
        },
        ..http()
    };
    let gib: u64 = 1 << 30;
    let piece = "x".repeat(64 * 1024);
    let huge = |declared: bool| {
        let mut scripted = Scripted::sse(vec![
            SseStep::Raw("{\"choices\":[{\"message\":{\"content\":\"".to_owned()),
            SseStep::Repeat {
                text: piece.clone(),
                times: Some(gib / piece.len() as u64),
                every: Duration::ZERO,
            },
        ]);
        if declared {
            scripted = scripted.with_header("content-length", gib.to_string());
        }
        scripted
    };
    for declared in [true, false] {
        let server = MockUpstream::start(Profile::INSTANT).await?;
        server.push(huge(declared));
        let provider = build(Wire::OpenAi, &server, config.clone());
        let measured = reset_peak_rss();
        let before = peak_rss();
        let error = provider.predict(&request()).await.expect_err("too large");
        let grown = peak_rss().saturating_sub(before);
        assert!(
            matches!(
                error,
                ProviderError::ResponseTooLarge { part: ResponsePart::Body, limit: l }
                    if l == limit as u64
            ),
            "declared {declared}: {error:?}"
        );
        assert!(
            error.to_string().starts_with("response too large"),
            "{error}"
        );
        if measured {
            // The body buffer grows by doubling: at most twice the limit, never the body.
            let bound = 2 * limit as u64 + (limit as u64) / 2;
            assert!(grown < bound, "declared {declared}: grew by {grown} bytes");
        }
    }
    Ok(())
}

// ---- 26: malformed frames ----

/// A `MakeWriter` that keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Ten thousand malformed frames in a row after the first delta: the stream fails at the
/// limit (64 by default), one warning is logged for them, and it shows neither the whole
/// frame nor its control characters (no forged log lines or terminal sequences).
#[tokio::test]
async fn a_flood_of_malformed_frames_fails_after_the_limit() -> anyhow::Result<()> {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockUpstream::start(Profile::INSTANT).await?;
    let mut steps = first_delta(Wire::OpenAi);
    let frame = format!(
        "data: {{not json \u{1b}[31m forged {} TAIL-MARKER\n\n",
        "y".repeat(200)
    );
    steps.push(SseStep::Repeat {
        text: frame,
        times: Some(10_000),
        every: Duration::ZERO,
    });
    server.push(Scripted::sse(steps));
    let provider = build(Wire::OpenAi, &server, http());
    let (events, error) = outcome(provider.as_ref()).await;
    assert_eq!(deltas(&events), 1);
    let max = IoLimits::default().max_malformed_frames;
    match &error {
        Some(ProviderError::Decode { message, raw }) => {
            assert_eq!(message, &format!("{max} malformed stream frames in a row"));
            assert!(raw.len() <= 64 + '…'.len_utf8(), "{raw:?}");
        }
        other => panic!("{other:?}"),
    }
    let text = logs.text();
    let warnings = text.matches("skipping malformed stream frame").count();
    assert_eq!(warnings, 1, "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape reached the log: {text:?}"
    );
    assert!(!text.contains("TAIL-MARKER"), "the whole frame was logged");
    Ok(())
}
