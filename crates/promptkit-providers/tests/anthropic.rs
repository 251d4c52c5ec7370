//! Anthropic provider tests against the test kit's mock upstream on 127.0.0.1.
#![cfg(feature = "anthropic")]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use promptkit_core::{
    FinishReason, Message, Provider, ProviderError, ProviderRequest, StreamAccumulator,
    StreamEvent, ToolDef, ToolResult, Usage,
};
use promptkit_providers::anthropic::{AnthropicConfig, AnthropicProvider};
use promptkit_providers::http::{HttpConfig, RetryPolicy};
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, anthropic as a};
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

fn provider(server: &MockUpstream) -> AnthropicProvider {
    let config = AnthropicConfig::new("claude-sonnet-4-5", "sk-ant-test")
        .with_base_url(server.origin())
        .with_http(http());
    AnthropicProvider::new(config).expect("provider")
}

fn request() -> ProviderRequest {
    ProviderRequest::new(vec![Message::user("where is order 12345?")]).with_system("Be brief.")
}

fn lookup_tool() -> ToolDef {
    ToolDef::new(
        "lookup_order",
        "Looks up an order",
        json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
    )
}

async fn collect(
    provider: &AnthropicProvider,
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

fn script(parts: Vec<Vec<SseStep>>) -> Scripted {
    Scripted::sse(parts.into_iter().flatten().collect())
}

fn one(event: serde_json::Value) -> Vec<SseStep> {
    vec![a::step(event)]
}

#[tokio::test]
async fn text_stream() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(script(vec![
        one(a::message_start(12, 0, 0)),
        one(a::ping()),
        a::text_block(0, &["Order 12345 ", "has shipped."]),
        one(a::message_delta("end_turn", 7)),
        one(a::message_stop()),
    ]));
    let provider = provider(&server);
    let (events, error) = collect(&provider, &request()).await;
    assert!(error.is_none(), "{error:?}");
    let message = fold(&events);
    assert_eq!(message.text(), "Order 12345 has shipped.");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    assert_eq!(message.usage, Some(Usage::new(12, 7).with_cache(0, 0)));
    let n = events.len();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, StreamEvent::Usage { .. }))
            .count(),
        1
    );
    assert!(matches!(events[n - 2], StreamEvent::Usage { .. }));
    assert!(matches!(events[n - 1], StreamEvent::Finish { .. }));

    let recorded = &server.requests()[0];
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(recorded.header("accept"), Some("text/event-stream"));
    assert_eq!(recorded.body["system"], json!("Be brief."));
    assert_eq!(recorded.body["max_tokens"], json!(4096));
    assert_eq!(recorded.body["stream"], json!(true));
    assert_eq!(recorded.body["model"], json!("claude-sonnet-4-5"));
    Ok(())
}

/// Builds `Usage` with cache counts in one expression.
trait WithCache {
    fn with_cache(self, read: u64, write: u64) -> Self;
}

impl WithCache for Usage {
    fn with_cache(mut self, read: u64, write: u64) -> Self {
        self.cached_input_tokens = Some(read);
        self.cache_write_input_tokens = Some(write);
        self
    }
}

#[tokio::test]
async fn tool_use_stream_with_split_input_and_usage_normalisation() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(script(vec![
        one(a::message_start(20, 1000, 50)),
        a::text_block(0, &["Checking."]),
        a::tool_use_block(
            1,
            "toolu_a",
            "lookup_order",
            &["{\"order", "_id\":\"1", "2\"}"],
        ),
        a::tool_use_block(2, "toolu_b", "lookup_order", &["{\"order_id\":\"7\"}"]),
        one(a::message_delta("tool_use", 40)),
        one(a::message_stop()),
    ]));
    let provider = provider(&server);
    let (events, error) = collect(&provider, &request().with_tools(vec![lookup_tool()])).await;
    assert!(error.is_none(), "{error:?}");
    // Tool-call indexes are call ordinals, not content-block indexes.
    let starts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallStart { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![0, 1]);
    let message = fold(&events);
    assert_eq!(message.text(), "Checking.");
    assert_eq!(message.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(message.tool_calls.len(), 2);
    assert_eq!(message.tool_calls[0].id, "toolu_a");
    assert_eq!(message.tool_calls[0].arguments, json!({"order_id": "12"}));
    assert_eq!(message.tool_calls[1].arguments, json!({"order_id": "7"}));
    // input includes cache reads and writes.
    assert_eq!(
        message.usage,
        Some(Usage::new(1070, 40).with_cache(1000, 50))
    );
    assert_eq!(
        server.requests()[0].body["tools"],
        json!([{"name": "lookup_order", "description": "Looks up an order",
            "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}])
    );
    Ok(())
}

#[tokio::test]
async fn thinking_signature_is_replayed_before_tool_use_and_results_are_grouped()
-> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(script(vec![
        one(a::message_start(30, 0, 0)),
        a::thinking_block(0, "I should look both up.", "sig-abc"),
        one(a::redacted_thinking(1, "encrypted-blob")),
        one(a::block_stop(1)),
        a::tool_use_block(2, "toolu_1", "lookup_order", &["{\"order_id\":\"1\"}"]),
        a::tool_use_block(3, "toolu_2", "lookup_order", &["{\"order_id\":\"2\"}"]),
        one(a::message_delta("tool_use", 60)),
        one(a::message_stop()),
    ]));
    server.push(script(vec![
        one(a::message_start(90, 0, 0)),
        a::text_block(0, &["Both shipped."]),
        one(a::message_delta("end_turn", 4)),
        one(a::message_stop()),
    ]));
    let provider = provider(&server);
    let mut req = request().with_tools(vec![lookup_tool()]);
    req.reasoning = Some(promptkit_core::ReasoningConfig {
        budget_tokens: Some(2048),
        ..promptkit_core::ReasoningConfig::default()
    });
    let (events, error) = collect(&provider, &req).await;
    assert!(error.is_none(), "{error:?}");
    assert!(events.contains(&StreamEvent::ReasoningData {
        provider_data: promptkit_core::ProviderData::new().with("anthropic.signature", "sig-abc"),
        redacted: false,
    }));
    let assistant = fold(&events);
    assert_eq!(assistant.reasoning().count(), 2);

    // Second turn: the assistant message, then two tool results.
    req.messages.push(assistant);
    req.messages.push(Message::tool(ToolResult::text(
        "toolu_1",
        "lookup_order",
        "shipped",
    )));
    req.messages.push(Message::tool(ToolResult::text(
        "toolu_2",
        "lookup_order",
        "shipped too",
    )));
    let (events, error) = collect(&provider, &req).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(fold(&events).text(), "Both shipped.");

    let second = &server.requests()[1].body;
    assert_eq!(
        second["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    let messages = second["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should look both up.", "signature": "sig-abc"},
            {"type": "redacted_thinking", "data": "encrypted-blob"},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup_order",
             "input": {"order_id": "1"}},
            {"type": "tool_use", "id": "toolu_2", "name": "lookup_order",
             "input": {"order_id": "2"}}
        ]})
    );
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "shipped too"}
        ]})
    );
    Ok(())
}

#[tokio::test]
async fn stream_error_event_is_a_typed_error() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(script(vec![
        one(a::message_start(5, 0, 0)),
        a::text_block(0, &["Partial"]),
        one(a::error("overloaded_error", "Overloaded")),
    ]));
    let provider = provider(&server);
    let (events, error) = collect(&provider, &request()).await;
    assert!(
        matches!(&error, Some(ProviderError::Overloaded { status: 529, message, .. }) if message == "Overloaded"),
        "{error:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StreamEvent::Finish { .. }))
    );
    // Not retried after the stream started.
    assert_eq!(server.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_stream_cut_before_its_stop_reason_is_truncated() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(script(vec![
        one(a::message_start(5, 0, 0)),
        a::text_block(0, &["Partial"]),
    ]));
    let (_, error) = collect(&provider(&server), &request()).await;
    assert!(
        matches!(error, Some(ProviderError::StreamTruncated { .. })),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_answer_is_complete_at_its_stop_reason_without_message_stop() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(script(vec![
        one(a::message_start(5, 0, 0)),
        a::text_block(0, &["Whole"]),
        one(a::message_delta("end_turn", 1)),
    ]));
    let (events, error) = collect(&provider(&server), &request()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Finish {
            reason: FinishReason::Stop
        })
    ));
    Ok(())
}

#[tokio::test]
async fn overloaded_529_is_retried_then_succeeds() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(
        Scripted::anthropic_error(529, "overloaded_error", "Overloaded")
            .with_header("retry-after", "0"),
    );
    server.push(Scripted::anthropic_error(
        529,
        "overloaded_error",
        "Overloaded",
    ));
    server.push(script(vec![
        one(a::message_start(5, 0, 0)),
        a::text_block(0, &["ok"]),
        one(a::message_delta("end_turn", 1)),
        one(a::message_stop()),
    ]));
    let started = Instant::now();
    let (events, error) = collect(&provider(&server), &request()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(fold(&events).text(), "ok");
    assert_eq!(server.requests().len(), 3);
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn auth_error_is_not_retried() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::anthropic_error(
        401,
        "authentication_error",
        "invalid x-api-key",
    ));
    let provider = provider(&server);
    let error = provider.predict(&request()).await.expect_err("auth fails");
    assert!(matches!(error, ProviderError::Auth { .. }), "{error:?}");
    assert_eq!(server.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn prompt_too_long_is_context_too_long() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::anthropic_error(
        400,
        "invalid_request_error",
        "prompt is too long: 215000 tokens > 200000 maximum",
    ));
    server.push(Scripted::anthropic_error(
        400,
        "invalid_request_error",
        "messages.0.content: Field required",
    ));
    let provider = provider(&server);
    let error = provider.stream(&request()).await.err();
    assert!(
        matches!(error, Some(ProviderError::ContextTooLong { .. })),
        "{error:?}"
    );
    let error = provider.predict(&request()).await.err();
    assert!(
        matches!(error, Some(ProviderError::BadRequest { status: 400, .. })),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 2);
    Ok(())
}

#[tokio::test]
async fn non_streaming_tool_use_only_response_with_cost() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::json(
        200,
        a::message(
            json!([{"type": "tool_use", "id": "toolu_9", "name": "lookup_order",
                    "input": {"order_id": "12345"}}]),
            "tool_use",
            100,
            20,
        ),
    ));
    let provider = provider(&server);
    let response = provider
        .predict(&request().with_tools(vec![lookup_tool()]))
        .await?;
    assert_eq!(response.text(), "");
    assert_eq!(response.tool_calls().len(), 1);
    assert_eq!(response.tool_calls()[0].id, "toolu_9");
    assert_eq!(
        response.tool_calls()[0].arguments,
        json!({"order_id": "12345"})
    );
    assert_eq!(response.finish_reason(), Some(&FinishReason::ToolCalls));
    assert_eq!(response.model.as_deref(), Some("mock-claude"));
    assert_eq!(
        response.message.usage,
        Some(Usage::new(100, 20).with_cache(0, 0))
    );
    // claude-sonnet-4-5: $3 in, $15 out per MTok.
    let cost = response.cost().expect("priced");
    assert!((cost.total_usd - (100.0 * 3.0 + 20.0 * 15.0) / 1e6).abs() < 1e-12);
    let body = &server.requests()[0].body;
    assert!(body.get("stream").is_none());
    Ok(())
}

#[tokio::test]
async fn non_streaming_thinking_and_text_with_cache_usage() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let mut body = a::message(
        json!([
            {"type": "thinking", "thinking": "short", "signature": "s1"},
            {"type": "text", "text": "Done."}
        ]),
        "max_tokens",
        10,
        5,
    );
    body["usage"]["cache_read_input_tokens"] = json!(200);
    body["usage"]["cache_creation_input_tokens"] = json!(30);
    server.push(Scripted::json(200, body));
    let response = provider(&server).predict(&request()).await?;
    assert_eq!(response.text(), "Done.");
    assert_eq!(response.finish_reason(), Some(&FinishReason::MaxTokens));
    let reasoning: Vec<_> = response.message.reasoning().collect();
    assert_eq!(
        reasoning[0].provider_data.get_str("anthropic.signature"),
        Some("s1")
    );
    assert_eq!(
        response.message.usage,
        Some(Usage::new(240, 5).with_cache(200, 30))
    );
    Ok(())
}

#[tokio::test]
async fn finish_reasons_are_normalised() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let cases = [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::MaxTokens),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::Refusal),
        ("something_new", FinishReason::Other("something_new".into())),
    ];
    let provider = provider(&server);
    for (raw, expected) in cases {
        server.push(script(vec![
            one(a::message_start(1, 0, 0)),
            a::text_block(0, &["x"]),
            one(a::message_delta(raw, 1)),
            one(a::message_stop()),
        ]));
        let (events, error) = collect(&provider, &request()).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(fold(&events).finish_reason, Some(expected));
    }
    Ok(())
}

#[tokio::test]
async fn benchmark_mode_answers_in_the_messages_format() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let provider = provider(&server);
    let (events, error) = collect(&provider, &request()).await;
    assert!(error.is_none(), "{error:?}");
    let message = fold(&events);
    assert_eq!(message.text(), "chunk-1 chunk-2 chunk-3 ");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    assert_eq!(message.usage.and_then(|u| u.output_tokens), Some(6));

    let mut req = request().with_tools(vec![lookup_tool()]);
    let first = provider.predict(&req).await?;
    assert_eq!(first.tool_calls()[0].name, "lookup_order");
    let call_id = first.tool_calls()[0].id.clone();
    req.messages.push(first.message);
    req.messages.push(Message::tool(ToolResult::text(
        call_id,
        "lookup_order",
        "shipped",
    )));
    let second = provider.predict(&req).await?;
    assert_eq!(second.text(), "chunk-1 chunk-2 chunk-3 ");
    assert_eq!(second.finish_reason(), Some(&FinishReason::Stop));
    Ok(())
}
