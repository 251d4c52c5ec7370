//! Gemini provider tests against the test kit's mock upstream on 127.0.0.1.
#![cfg(all(feature = "gemini", feature = "config"))]

use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    FinishReason, Message, Provider, ProviderError, ProviderRequest, StreamAccumulator,
    StreamEvent, ToolDef, ToolResult,
};
use promptkit_providers::config::ProviderSpec;
use promptkit_providers::gemini::{GeminiConfig, GeminiProvider};
use promptkit_providers::http::{HttpConfig, RetryPolicy};
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, gemini};
use serde_json::json;

fn provider(server: &MockUpstream, model: &str) -> GeminiProvider {
    let config = GeminiConfig::new(model, "test-key")
        .with_base_url(server.gemini_base_url())
        .with_http(HttpConfig {
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_attempts: 2,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(20),
                max_elapsed: Duration::from_secs(5),
            },
            ..HttpConfig::default()
        });
    GeminiProvider::new(config).expect("provider")
}

async fn collect(
    provider: &dyn Provider,
    request: &ProviderRequest,
) -> (Message, Vec<StreamEvent>) {
    let mut stream = provider.stream(request).await.expect("stream opens");
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push(event.expect("no stream error"));
    }
    let mut acc = StreamAccumulator::new();
    events.iter().for_each(|e| acc.push(e));
    (acc.finish(), events)
}

#[tokio::test]
async fn benchmark_mode_streams_and_calls_tools() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let provider = provider(&server, "gemini-2.5-flash");
    let request =
        ProviderRequest::new(vec![Message::user("where is order 12345?")]).with_system("Be brief.");

    let (message, events) = collect(&provider, &request).await;
    assert_eq!(message.text(), "chunk-1 chunk-2 chunk-3 ");
    assert_eq!(message.finish_reason, Some(FinishReason::Stop));
    assert_eq!(message.usage.and_then(|u| u.output_tokens), Some(6));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, StreamEvent::TextDelta { .. }))
            .count(),
        3
    );
    let recorded = &server.requests()[0];
    assert_eq!(
        recorded.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(recorded.query.as_deref(), Some("alt=sse"));
    assert_eq!(recorded.header("x-goog-api-key"), Some("test-key"));
    assert_eq!(recorded.header("accept"), Some("text/event-stream"));
    assert_eq!(
        recorded.body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );

    // Not streaming: the benchmark answers with a function call, STOP corrected.
    let response = provider.predict(&request).await?;
    assert_eq!(response.tool_calls()[0].name, "lookup_order");
    assert_eq!(
        response.tool_calls()[0].arguments,
        json!({"order_id": "12345"})
    );
    assert_eq!(response.finish_reason(), Some(&FinishReason::ToolCalls));
    assert!(response.cost().is_some_and(|c| c.total_usd > 0.0));
    assert_eq!(response.model.as_deref(), Some("mock-gemini"));
    assert_eq!(
        server.requests()[1].path,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );

    // The result goes back as a functionResponse; the benchmark then answers in text.
    let call = response.tool_calls()[0].clone();
    let follow_up = ProviderRequest::new(vec![
        Message::user("where is order 12345?"),
        response.message.clone(),
        Message::tool(ToolResult::text(
            &call.id,
            "lookup_order",
            "{\"status\":\"shipped\"}",
        )),
    ]);
    let answer = provider.predict(&follow_up).await?;
    assert_eq!(answer.text(), "chunk-1 chunk-2 chunk-3 ");
    assert_eq!(
        server.requests()[2].body["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "lookup_order",
            "response": {"status": "shipped"}}}]})
    );
    Ok(())
}

#[tokio::test]
async fn thought_signatures_survive_a_round_trip_over_http() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    server.push(Scripted::sse(vec![
        SseStep::Json(gemini::chunk(vec![gemini::thought("Plan: call it.", None)])),
        SseStep::Json(gemini::last_chunk(
            vec![gemini::signed(
                gemini::function_call("lookup_order", json!({"order_id": "1"})),
                "c2lnLTE=",
            )],
            "STOP",
            gemini::usage(20, 5, 0, 9),
        )),
    ]));
    server.push(Scripted::json(
        200,
        gemini::response(
            vec![gemini::text("Shipped.")],
            "STOP",
            gemini::usage(30, 2, 0, 0),
        ),
    ));
    let provider = provider(&server, "gemini-3-pro-preview");
    let tools = vec![ToolDef::new(
        "lookup_order",
        "Looks up an order",
        json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
    )];
    let question = Message::user("where is order 1?");
    let first = ProviderRequest::new(vec![question.clone()]).with_tools(tools.clone());
    let (assistant, _) = collect(&provider, &first).await;
    assert_eq!(assistant.finish_reason, Some(FinishReason::ToolCalls));
    let usage = assistant.usage.expect("usage");
    assert_eq!(
        (usage.output_tokens, usage.reasoning_tokens),
        (Some(14), Some(9))
    );

    let call = assistant.tool_calls[0].clone();
    let second = ProviderRequest::new(vec![
        question,
        assistant,
        Message::tool(ToolResult::text(&call.id, &call.name, "shipped")),
    ])
    .with_tools(tools);
    assert_eq!(provider.predict(&second).await?.text(), "Shipped.");
    let sent = &server.requests()[1].body["contents"];
    assert_eq!(
        sent[1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "lookup_order",
            "args": {"order_id": "1"}}, "thoughtSignature": "c2lnLTE="}]})
    );
    assert_eq!(
        sent[2]["parts"][0]["functionResponse"]["response"],
        json!({"output": "shipped"})
    );
    Ok(())
}

#[tokio::test]
async fn built_from_configuration_with_the_key_from_the_environment() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    let spec: ProviderSpec = serde_json::from_value(json!({
        "type": "gemini",
        "id": "flash",
        "base_url": server.gemini_base_url(),
        "pricing": {"gemini-2.5-flash": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}
    }))?;
    // GEMINI_API_KEY wins; GOOGLE_API_KEY is the fallback.
    let both = |var: &str| match var {
        "GEMINI_API_KEY" => Some("gemini-key".to_owned()),
        "GOOGLE_API_KEY" => Some("google-key".to_owned()),
        _ => None,
    };
    let provider = spec.build_with_env(both)?;
    assert_eq!(
        (provider.id(), provider.model()),
        ("flash", "gemini-2.5-flash")
    );
    provider
        .predict(&ProviderRequest::new(vec![Message::user("hi")]))
        .await?;
    assert_eq!(
        server.requests()[0].header("x-goog-api-key"),
        Some("gemini-key")
    );
    let google_only = |var: &str| (var == "GOOGLE_API_KEY").then(|| "google-key".to_owned());
    spec.build_with_env(google_only)?
        .predict(&ProviderRequest::new(vec![Message::user("hi")]))
        .await?;
    assert_eq!(
        server.requests()[1].header("x-goog-api-key"),
        Some("google-key")
    );
    match spec.build_with_env(|_| None) {
        Err(ProviderError::Config { message }) => assert!(message.contains("GEMINI_API_KEY")),
        other => panic!("unexpected {other:?}"),
    }
    Ok(())
}
