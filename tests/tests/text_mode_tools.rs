//! Text mode end to end: PromptAssembly -> Template -> Provider (the OpenAI and the Anthropic
//! wire formats, served by the test kit on 127.0.0.1) with an HTTP tool served on 127.0.0.1.

use std::sync::Arc;

use promptkit::Provider;
use promptkit::Role;
use promptkit::pipeline::{Element, Payload};
use promptkit::providers::anthropic::{AnthropicConfig, AnthropicProvider};
use promptkit::providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit::tools::{ToolDescriptor, ToolRegistry};
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, anthropic, chunks};
use serde_json::json;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_calls_an_http_tool_and_answers_with_its_result() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    // Round 1: the model asks for the tool (arguments split across chunks).
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::tool_start(0, "call_1", "lookup_order", "{\"order_")),
        SseStep::Json(chunks::tool_args(0, "id\":\"12345\"}")),
        SseStep::Json(chunks::finish("tool_calls")),
        SseStep::Done,
    ]));
    // Round 2: it answers, streamed.
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("Your order ")),
        SseStep::Json(chunks::text("12345 has shipped")),
        SseStep::Json(chunks::text(" and arrives on 2026-04-10.")),
        SseStep::Json(chunks::finish("stop")),
        SseStep::Json(chunks::usage(120, 18, 0, 0)),
        SseStep::Done,
    ]));

    let elements = run_turn(
        &upstream,
        Arc::new(
            OpenAiProvider::new(OpenAiConfig::compatible(upstream.base_url(), "gpt-test")).unwrap(),
        ),
    )
    .await;
    check_answer(&elements, Some(120));

    let requests = upstream.requests();
    let chat: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(chat.len(), 2);
    let tool_calls: Vec<_> = requests.iter().filter(|r| r.path == "/tool").collect();
    assert_eq!(tool_calls.len(), 1);
    assert_eq!(tool_calls[0].body, json!({"order_id": "12345"}));
    // The rendered system prompt and the tool declaration were sent.
    let first = &chat[0].body;
    assert_eq!(first["messages"][0]["role"], "system");
    assert_eq!(
        first["messages"][0]["content"],
        "You are the support agent of Acme. Use tools to look orders up."
    );
    assert_eq!(first["tools"][0]["function"]["name"], "lookup_order");
    // The second call carried the tool result, keyed by the call id.
    let second = &chat[1].body;
    let tool_msg = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert_eq!(tool_msg["tool_call_id"], "call_1");
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_turn_over_the_anthropic_wire_format() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    // Round 1: a tool_use block whose input arrives in pieces.
    let mut round1 = vec![anthropic::step(anthropic::message_start(95, 0, 0))];
    round1.extend(anthropic::tool_use_block(
        0,
        "toolu_1",
        "lookup_order",
        &["{\"order_", "id\":\"12345\"}"],
    ));
    round1.push(anthropic::step(anthropic::message_delta("tool_use", 20)));
    round1.push(anthropic::step(anthropic::message_stop()));
    upstream.push(Scripted::sse(round1));
    // Round 2: the answer, streamed.
    let mut round2 = vec![anthropic::step(anthropic::message_start(120, 0, 0))];
    round2.extend(anthropic::text_block(
        0,
        &[
            "Your order ",
            "12345 has shipped",
            " and arrives on 2026-04-10.",
        ],
    ));
    round2.push(anthropic::step(anthropic::message_delta("end_turn", 18)));
    round2.push(anthropic::step(anthropic::message_stop()));
    upstream.push(Scripted::sse(round2));

    let config = AnthropicConfig::new("claude-test", "test-key").with_base_url(upstream.origin());
    let elements = run_turn(&upstream, Arc::new(AnthropicProvider::new(config).unwrap())).await;
    check_answer(&elements, Some(120));

    let requests = upstream.requests();
    let calls: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].header("x-api-key"), Some("test-key"));
    assert_eq!(
        calls[0].body["system"],
        "You are the support agent of Acme. Use tools to look orders up."
    );
    assert_eq!(calls[0].body["tools"][0]["name"], "lookup_order");
    // The tool result went back as a tool_result block in a user message.
    let last = calls[1].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_1");
    upstream.shutdown().await.unwrap();
}

/// Runs PromptAssembly -> Template -> Provider (with the HTTP tool `lookup_order` pointing at
/// the test kit's `/tool`) on one user message and returns the output.
async fn run_turn(upstream: &MockUpstream, provider: Arc<dyn Provider>) -> Vec<Element> {
    // The tool is an HTTP endpoint (the test kit's `/tool`).
    let tools = Arc::new(ToolRegistry::new());
    tools
        .register(
            ToolDescriptor::new("lookup_order", "Looks up an order by id")
                .with_input_schema(json!({
                    "type": "object",
                    "required": ["order_id"],
                    "properties": {"order_id": {"type": "string"}}
                }))
                .with_executor(
                    "http",
                    json!({"url": format!("{}/tool", upstream.origin()), "method": "POST"}),
                ),
        )
        .unwrap();

    support::support_turn(provider, tools, "[lookup_order]", "e2e-1").await
}

/// The streamed answer came before the final message, and the tool ran over HTTP.
fn check_answer(elements: &[Element], input_tokens: Option<u64>) {
    // Text deltas reach the output before the final message.
    let first_delta = elements
        .iter()
        .position(|e| matches!(e.payload, Payload::Text(_)))
        .unwrap();
    let final_answer = elements
        .iter()
        .rposition(|e| e.as_message().is_some_and(|m| m.role == Role::Assistant))
        .unwrap();
    assert!(first_delta < final_answer);
    let answer = elements[final_answer].as_message().unwrap();
    assert_eq!(
        answer.text(),
        "Your order 12345 has shipped and arrives on 2026-04-10."
    );
    assert_eq!(answer.usage.and_then(|u| u.input_tokens), input_tokens);

    // The tool ran over HTTP and its result went back to the model.
    let tool_message = elements
        .iter()
        .filter_map(Element::as_message)
        .find(|m| m.role == Role::Tool)
        .unwrap();
    let result = tool_message.tool_result.as_ref().unwrap();
    assert!(!result.is_error, "{}", result.text_content());
    assert_eq!(result.structured.as_ref().unwrap()["status"], "shipped");
}
