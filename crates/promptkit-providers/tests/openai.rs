//! OpenAI provider tests against the test kit's mock upstream on 127.0.0.1.
#![cfg(feature = "openai-compatible")]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use promptkit_core::{
    FinishReason, Message, Provider, ProviderError, ProviderRequest, StreamAccumulator,
    StreamEvent, TimeoutPhase, ToolDef, Usage,
};
use promptkit_providers::http::{HttpConfig, RetryPolicy};
use promptkit_providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, chunks};
use serde_json::json;

fn http() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_concurrency: Some(4),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(5),
        },
        ..HttpConfig::default()
    }
}

fn provider(server: &MockUpstream, model: &str) -> OpenAiProvider {
    let config = OpenAiConfig::openai(model, "sk-test")
        .with_base_url(server.base_url())
        .with_http(http());
    OpenAiProvider::new(config).expect("provider")
}

fn request() -> ProviderRequest {
    ProviderRequest::new(vec![Message::user("where is order 12345?")]).with_system("Be brief.")
}

async fn collect(
    provider: &OpenAiProvider,
    request: &ProviderRequest,
) -> (Vec<StreamEvent>, Option<ProviderError>) {
    let mut stream = provider.stream(request).await.expect("stream opens");
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

fn fold(events: &[StreamEvent]) -> Message {
    let mut acc = StreamAccumulator::new();
    for e in events {
        acc.push(e);
    }
    acc.finish()
}

/// Each call carries the JSON content type, `Accept: text/event-stream` when streamed, and
/// the configured headers, which win over either; credentials in the base URL become basic
/// authentication, as reqwest's builder makes them.
#[tokio::test]
async fn requests_carry_their_headers_and_configured_ones_win() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let config = OpenAiConfig::openai("gpt-4o-mini", "sk-test")
        .with_base_url(server.base_url())
        .with_http(http())
        .with_header("accept", "text/event-stream; charset=utf-8")
        .with_header("x-team", "orders");
    let custom = OpenAiProvider::new(config)?;
    let (_, error) = collect(&custom, &request()).await;
    assert!(error.is_none(), "{error:?}");
    custom.predict(&request()).await?;
    let plain = provider(&server, "gpt-4o-mini");
    plain.predict(&request()).await?;
    let with_credentials = OpenAiConfig::compatible(
        server.base_url().replace("http://", "http://ada:secret@"),
        "gpt-4o-mini",
    )
    .with_http(http());
    OpenAiProvider::new(with_credentials)?
        .predict(&request())
        .await?;

    let recorded = server.requests();
    let [streamed, unary, plain_unary, credentials] = &recorded[..] else {
        panic!("four requests: {recorded:?}");
    };
    for r in [streamed, unary] {
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("accept"), Some("text/event-stream; charset=utf-8"));
        assert_eq!(r.header("x-team"), Some("orders"));
        assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
    }
    assert_eq!(plain_unary.header("content-type"), Some("application/json"));
    assert_ne!(plain_unary.header("accept"), Some("text/event-stream"));
    // "ada:secret", base64.
    assert_eq!(
        credentials.header("authorization"),
        Some("Basic YWRhOnNlY3JldA==")
    );
    Ok(())
}

#[tokio::test]
async fn text_stream_in_benchmark_mode() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let provider = provider(&server, "gpt-4o-mini");
    let (events, error) = collect(&provider, &request()).await;
    assert!(error.is_none(), "{error:?}");
    let message = fold(&events);
    assert_eq!(message.text(), "chunk-1 chunk-2 chunk-3 ");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    assert_eq!(message.usage.and_then(|u| u.output_tokens), Some(6));
    // Usage then Finish, last.
    assert!(matches!(
        events[events.len() - 2],
        StreamEvent::Usage { .. }
    ));
    assert!(matches!(
        events[events.len() - 1],
        StreamEvent::Finish { .. }
    ));

    let recorded = &server.requests()[0];
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(recorded.header("accept"), Some("text/event-stream"));
    assert_eq!(
        recorded.body["stream_options"],
        json!({"include_usage": true})
    );
    assert_eq!(
        recorded.body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    Ok(())
}

#[tokio::test]
async fn tool_call_stream_with_parallel_calls_and_split_arguments() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        SseStep::Json(chunks::tool_start(0, "call_a", "lookup_order", "{\"order")),
        SseStep::Json(chunks::tool_start(1, "call_b", "track", "")),
        SseStep::Json(chunks::tool_args(0, "_id\":\"1")),
        SseStep::Delay(Duration::from_millis(5)),
        SseStep::Json(chunks::tool_args(1, "{\"carrier\":\"ups\"}")),
        SseStep::Json(chunks::tool_args(0, "2\"}")),
        SseStep::Json(chunks::finish("tool_calls")),
        SseStep::Json(chunks::usage(30, 12, 10, 0)),
        SseStep::Done,
    ]));
    let provider = provider(&server, "gpt-4o");
    let req = request().with_tools(vec![ToolDef::new(
        "lookup_order",
        "Looks up an order",
        json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
    )]);
    let (events, error) = collect(&provider, &req).await;
    assert!(error.is_none(), "{error:?}");
    let message = fold(&events);
    assert_eq!(message.tool_calls.len(), 2);
    assert_eq!(message.tool_calls[0].id, "call_a");
    assert_eq!(message.tool_calls[0].arguments, json!({"order_id": "12"}));
    assert_eq!(message.tool_calls[1].arguments, json!({"carrier": "ups"}));
    assert_eq!(message.finish_reason, Some(FinishReason::ToolCalls));
    let usage = message.usage.expect("usage");
    assert_eq!(usage.cached_input_tokens, Some(10));
    assert!(provider.cost("gpt-4o", &usage).is_some());
    assert_eq!(
        server.requests()[0].body["tools"][0]["function"]["name"],
        "lookup_order"
    );
    Ok(())
}

#[tokio::test]
async fn non_streaming_tool_call_with_cost() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let provider = provider(&server, "gpt-4o");
    let response = provider.predict(&request()).await?;
    assert_eq!(response.tool_calls()[0].name, "lookup_order");
    assert_eq!(
        response.tool_calls()[0].arguments,
        json!({"order_id": "12345"})
    );
    assert_eq!(response.finish_reason(), Some(&FinishReason::ToolCalls));
    assert!(response.cost().is_some_and(|c| c.total_usd > 0.0));
    assert_eq!(response.served_by.as_deref(), Some("openai"));
    assert!(server.requests()[0].body.get("stream").is_none());

    // An unpriced model has no cost (not zero).
    let unpriced = provider_with_model(&server, "my-finetune");
    let response = unpriced.predict(&request()).await?;
    assert!(response.usage().is_some());
    assert!(response.cost().is_none());
    Ok(())
}

fn provider_with_model(server: &MockUpstream, model: &str) -> OpenAiProvider {
    provider(server, model)
}

#[tokio::test]
async fn usage_only_final_chunk_keeps_the_finish_reason() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("cut")),
        SseStep::Json(chunks::finish("length")),
        SseStep::Json(chunks::usage(5, 7, 0, 3)),
        SseStep::Done,
    ]));
    let (events, error) = collect(&provider(&server, "o3"), &request()).await;
    assert!(error.is_none());
    let finishes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Finish { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finishes, vec![FinishReason::MaxTokens]);
    let message = fold(&events);
    assert_eq!(
        message.usage,
        Some(Usage {
            input_tokens: Some(5),
            output_tokens: Some(7),
            cached_input_tokens: Some(0),
            reasoning_tokens: Some(3),
            ..Usage::default()
        })
    );
    Ok(())
}

/// One streamed Chat Completions response written by hand, chunk by chunk, so that a test
/// decides when `[DONE]` goes out.
mod held_done {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};

    /// What the server saw of the client's connection after it sent `[DONE]`.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum After {
        /// The client closed it.
        Closed,
        /// It stayed open, and the next request came on it.
        Reused,
    }

    /// Serves one connection: answers its first request up to the usage chunk, waits for
    /// `release`, sends `[DONE]` and the end of the body, then reports whether the
    /// connection is closed or carries the next request (answered in full).
    pub(super) async fn serve(
        listener: TcpListener,
        release: oneshot::Receiver<()>,
        report: mpsc::Sender<After>,
    ) -> std::io::Result<()> {
        let (mut socket, _) = listener.accept().await?;
        if !read_request(&mut socket).await? {
            return Ok(());
        }
        write_head(&mut socket).await?;
        for frame in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Shipped."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
        ] {
            write_chunk(&mut socket, &format!("data: {frame}\n\n")).await?;
        }
        let _ = release.await;
        write_chunk(&mut socket, "data: [DONE]\n\n").await?;
        socket.write_all(b"0\r\n\r\n").await?;
        let after = if read_request(&mut socket).await? {
            write_head(&mut socket).await?;
            write_chunk(&mut socket, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Again.\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n").await?;
            socket.write_all(b"0\r\n\r\n").await?;
            After::Reused
        } else {
            After::Closed
        };
        let _ = report.send(after).await;
        Ok(())
    }

    /// Reads one request (head and `content-length` body); `false` at the end of the
    /// connection.
    async fn read_request(socket: &mut TcpStream) -> std::io::Result<bool> {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap_or(0));
                if data.len() >= end + 4 + length {
                    return Ok(true);
                }
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(false),
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn write_head(socket: &mut TcpStream) -> std::io::Result<()> {
        socket
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await
    }

    async fn write_chunk(socket: &mut TcpStream, data: &str) -> std::io::Result<()> {
        socket
            .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
            .await?;
        socket.flush().await
    }
}

/// The answer is complete at the usage chunk, which comes after the finish reason: the
/// stream ends there without waiting for `[DONE]` (under load, each further frame is a
/// round trip through the runtime before a tool can run), and the trailing frames are still
/// read, so the connection goes back to the pool and carries the next call.
#[tokio::test]
async fn the_stream_ends_at_the_usage_chunk_and_its_connection_is_kept() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    let (release, released) = tokio::sync::oneshot::channel();
    let (report, mut reported) = tokio::sync::mpsc::channel(1);
    let server = tokio::spawn(held_done::serve(listener, released, report));
    let config = OpenAiConfig::openai("gpt-4o-mini", "sk-test")
        .with_base_url(base)
        .with_http(http());
    let provider = OpenAiProvider::new(config)?;

    // `[DONE]` is held back until the stream has ended: waiting for it would never end.
    let (events, error) =
        tokio::time::timeout(Duration::from_secs(20), collect(&provider, &request()))
            .await
            .map_err(|_| anyhow::anyhow!("the stream waited for [DONE] after its usage chunk"))?;
    assert!(error.is_none(), "{error:?}");
    let message = fold(&events);
    assert_eq!(message.text(), "Shipped.");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    assert_eq!(message.usage.and_then(|u| u.output_tokens), Some(2));
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));

    release
        .send(())
        .map_err(|()| anyhow::anyhow!("server gone"))?;
    // The next call finds the connection in the pool once the trailing frames are read. A
    // call made before that opens a second connection, which this server never accepts, so
    // calls (their results do not matter) are repeated until the server reports.
    let mut tries = 0;
    let again = request();
    let outcome = loop {
        tokio::select! {
            after = reported.recv() => break after,
            _ = tokio::time::timeout(Duration::from_millis(100), provider.predict(&again)) => {}
        }
        tries += 1;
        if tries == 200 {
            break None;
        }
    };
    assert_eq!(outcome, Some(held_done::After::Reused));
    server.await??;
    Ok(())
}

#[tokio::test]
async fn malformed_frame_is_skipped_and_missing_done_tolerated() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("a")),
        SseStep::Data("{not json".into()),
        SseStep::Raw(": keep-alive\r\n\r\n".into()),
        SseStep::Json(chunks::text("b")),
        SseStep::Json(chunks::finish("stop")),
    ]));
    let (events, error) = collect(&provider(&server, "gpt-4o"), &request()).await;
    assert!(error.is_none(), "{error:?}");
    let message = fold(&events);
    assert_eq!(message.text(), "ab");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    Ok(())
}

#[tokio::test]
async fn early_disconnect_is_stream_truncated() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("partial")),
        SseStep::Disconnect,
    ]));
    server.push(Scripted::sse(vec![SseStep::Json(chunks::text(
        "clean eof",
    ))]));
    let provider = provider(&server, "gpt-4o");
    for expected in ["partial", "clean eof"] {
        let (events, error) = collect(&provider, &request()).await;
        assert_eq!(fold(&events).text(), expected);
        assert!(
            matches!(error, Some(ProviderError::StreamTruncated { .. })),
            "{error:?}"
        );
    }
    // Not retried once events were delivered.
    assert_eq!(server.requests().len(), 2);
    Ok(())
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_retried_then_succeeds() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(
        Scripted::openai_error(429, "requests", "rate_limit_exceeded", "slow down")
            .with_header("retry-after", "1"),
    );
    let provider = provider(&server, "gpt-4o");
    let started = Instant::now();
    let (events, error) = collect(&provider, &request()).await;
    assert!(error.is_none());
    assert_eq!(fold(&events).text(), "chunk-1 chunk-2 chunk-3 ");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(server.requests().len(), 2);
    Ok(())
}

#[tokio::test]
async fn server_errors_exhaust_the_retry_budget() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    for _ in 0..3 {
        server.push(Scripted::text(503, "upstream unavailable"));
    }
    let err = provider(&server, "gpt-4o")
        .predict(&request())
        .await
        .expect_err("fails");
    assert!(
        matches!(err, ProviderError::Overloaded { status: 503, .. }),
        "{err}"
    );
    assert_eq!(server.requests().len(), 3);
    Ok(())
}

#[tokio::test]
async fn auth_error_is_not_retried() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::openai_error(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided",
    ));
    let err = provider(&server, "gpt-4o")
        .stream(&request())
        .await
        .err()
        .expect("fails");
    assert!(matches!(&err, ProviderError::Auth { message } if message.contains("Incorrect")));
    assert_eq!(server.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn context_length_error_is_typed() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::openai_error(
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens.",
    ));
    let err = provider(&server, "gpt-4o")
        .predict(&request())
        .await
        .expect_err("fails");
    assert!(matches!(err, ProviderError::ContextTooLong { .. }), "{err}");
    assert!(!err.is_retryable());
    Ok(())
}

#[tokio::test]
async fn idle_timeout_between_chunks() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("a")),
        SseStep::Delay(Duration::from_millis(500)),
        SseStep::Json(chunks::finish("stop")),
    ]));
    let config = OpenAiConfig::openai("gpt-4o", "k")
        .with_base_url(server.base_url())
        .with_http(HttpConfig {
            idle_timeout: Duration::from_millis(100),
            ..http()
        });
    let provider = OpenAiProvider::new(config)?;
    let (events, error) = collect(&provider, &request()).await;
    assert_eq!(fold(&events).text(), "a");
    assert!(
        matches!(
            error,
            Some(ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                ..
            })
        ),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn concurrency_limit_queues_calls() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile {
        chunks: 2,
        first_chunk_delay: Duration::from_millis(100),
        chunk_interval: Duration::ZERO,
        tool_delay: Duration::ZERO,
    })
    .await?;
    let config = OpenAiConfig::openai("gpt-4o", "k")
        .with_base_url(server.base_url())
        .with_http(HttpConfig {
            max_concurrency: Some(1),
            ..http()
        });
    let provider = OpenAiProvider::new(config)?;
    let req = request();
    let started = Instant::now();
    let (a, b) = tokio::join!(provider.predict(&req), provider.predict(&req));
    a?;
    b?;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "calls ran one at a time"
    );
    Ok(())
}

#[tokio::test]
async fn azure_url_and_api_key_header() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let config = OpenAiConfig::azure(server.origin(), "prod-4o", "gpt-4o", "azure-key")
        .with_api_version("2025-01-01-preview")
        .with_http(http());
    let provider = OpenAiProvider::new(config)?;
    let (events, error) = collect(&provider, &request()).await;
    assert!(error.is_none());
    assert_eq!(fold(&events).finish_reason, Some(FinishReason::Stop));
    let recorded = &server.requests()[0];
    assert_eq!(
        recorded.path,
        "/openai/deployments/prod-4o/chat/completions"
    );
    assert_eq!(
        recorded.query.as_deref(),
        Some("api-version=2025-01-01-preview")
    );
    assert_eq!(recorded.header("api-key"), Some("azure-key"));
    assert_eq!(recorded.header("authorization"), None);
    assert!(recorded.body.get("model").is_none());
    Ok(())
}

#[tokio::test]
async fn compatible_mode_decodes_leniently() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    // content null, tool call without id, unknown finish reason, no usage, extra fields.
    server.push(Scripted::json(
        200,
        json!({"model": "llama3.1", "choices": [{"message": {"role": "assistant",
            "content": null, "tool_calls": [{"function": {"name": "f",
            "arguments": {"a": 1}}}]}, "finish_reason": "eos_token_custom", "logprobs": null}],
            "x_vendor": true}),
    ));
    // Empty usage object, no finish reason on the content, [DONE] ends it.
    server.push(Scripted::sse(vec![
        SseStep::Raw(
            "data:{\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":{}}\n\n".into(),
        ),
        SseStep::Done,
    ]));
    // Minimal body, nulls where lists belong.
    server.push(Scripted::json(
        200,
        json!({"choices": [{"message": {"content": null, "tool_calls": null}}], "usage": null}),
    ));

    let config = OpenAiConfig::compatible(server.base_url(), "llama3.1").with_http(http());
    let provider = OpenAiProvider::new(config)?;
    let mut req = request();
    req.max_tokens = Some(64);

    let response = provider.predict(&req).await?;
    assert_eq!(response.text(), "");
    assert_eq!(response.tool_calls()[0].id, "call_0");
    assert_eq!(response.tool_calls()[0].arguments, json!({"a": 1}));
    assert_eq!(
        response.finish_reason(),
        Some(&FinishReason::Other("eos_token_custom".into()))
    );
    assert!(response.usage().is_none());
    assert!(response.cost().is_none());
    let recorded = &server.requests()[0];
    assert_eq!(recorded.header("authorization"), None);
    assert_eq!(recorded.body["max_tokens"], json!(64));

    let (events, error) = collect(&provider, &req).await;
    assert!(error.is_none(), "{error:?}");
    let message = fold(&events);
    assert_eq!(message.text(), "hi");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    assert!(message.usage.is_none());

    let minimal = provider.predict(&req).await?;
    assert_eq!(minimal.text(), "");
    assert!(minimal.finish_reason().is_none());
    Ok(())
}

#[tokio::test]
async fn non_streaming_body_cut_mid_way_is_retried() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        SseStep::Raw("{\"choices\":[{\"mess".into()),
        SseStep::Disconnect,
    ]));
    let response = provider(&server, "gpt-4o").predict(&request()).await?;
    assert_eq!(response.tool_calls()[0].name, "lookup_order");
    assert_eq!(server.requests().len(), 2);
    Ok(())
}

#[tokio::test]
async fn stream_failing_before_its_first_event_is_retried() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    // 200, a keep-alive comment, then the connection drops: no event was delivered.
    server.push(Scripted::sse(vec![
        SseStep::Raw(": keep-alive\n\n".into()),
        SseStep::Disconnect,
    ]));
    // 200 and an empty body.
    server.push(Scripted::sse(vec![]));
    let (events, error) = collect(&provider(&server, "gpt-4o"), &request()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(fold(&events).text(), "chunk-1 chunk-2 chunk-3 ");
    assert_eq!(server.requests().len(), 3);
    Ok(())
}

#[tokio::test]
async fn custom_headers_and_invalid_configuration() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let config = OpenAiConfig::azure(server.origin(), "d", "gpt-4o", "azure-key")
        .with_header("Authorization", "Bearer entra-token")
        .with_header("api-key", "override")
        .with_header("x-team", "search")
        .with_http(http());
    OpenAiProvider::new(config)?.predict(&request()).await?;
    let recorded = &server.requests()[0];
    assert_eq!(recorded.header("authorization"), Some("Bearer entra-token"));
    assert_eq!(recorded.header("api-key"), Some("override"));
    assert_eq!(recorded.header("x-team"), Some("search"));

    let bad_header = OpenAiConfig::openai("gpt-4o", "k").with_header("bad header", "v");
    assert!(matches!(
        OpenAiProvider::new(bad_header),
        Err(ProviderError::Config { .. })
    ));
    let bad_key = OpenAiConfig::openai("gpt-4o", "line\nbreak");
    assert!(matches!(
        OpenAiProvider::new(bad_key),
        Err(ProviderError::Config { .. })
    ));
    let bad_url = OpenAiConfig::openai("gpt-4o", "k").with_base_url("not a url");
    assert!(matches!(
        OpenAiProvider::new(bad_url),
        Err(ProviderError::Config { .. })
    ));
    Ok(())
}
