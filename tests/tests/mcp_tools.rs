//! Text mode end to end with an MCP tool: PromptAssembly -> Template -> Provider, where the
//! model (the test kit's OpenAI-compatible server, scripted) calls a tool of an MCP server (an
//! rmcp server on 127.0.0.1, over streamable HTTP) and answers with its result.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use promptkit::mcp::{McpConfig, McpRegistry, ServerConfig};
use promptkit::pipeline::Element;
use promptkit::providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit::tools::{ToolDescriptor, ToolRegistry};
use promptkit::{Role, ToolSet};
use promptkit_testkit::mcp::order_service;
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, chunks};
use serde_json::json;

mod support;

/// Scripts the model: a call of the MCP tool, then an answer.
fn script(upstream: &MockUpstream) {
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::tool_start(
            0,
            "call_1",
            "mcp__orders__lookup_order",
            "{\"order_",
        )),
        SseStep::Json(chunks::tool_args(0, "id\":\"12345\"}")),
        SseStep::Json(chunks::finish("tool_calls")),
        SseStep::Done,
    ]));
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("Order 12345 has shipped ")),
        SseStep::Json(chunks::text("and arrives on 2026-04-10.")),
        SseStep::Json(chunks::finish("stop")),
        SseStep::Done,
    ]));
}

async fn run_turn(upstream: &MockUpstream, tools: Arc<dyn ToolSet>) -> Vec<Element> {
    let provider = Arc::new(
        OpenAiProvider::new(OpenAiConfig::compatible(upstream.base_url(), "gpt-test")).unwrap(),
    );
    support::support_turn(provider, tools, "[\"mcp__orders__*\"]", "e2e-mcp").await
}

/// The answer used the tool's result, and the requests carried the MCP tool and its result.
fn check(upstream: &MockUpstream, elements: &[Element]) {
    let answer = elements
        .iter()
        .filter_map(Element::as_message)
        .rfind(|m| m.role == Role::Assistant)
        .unwrap();
    assert_eq!(
        answer.text(),
        "Order 12345 has shipped and arrives on 2026-04-10."
    );
    let tool_message = elements
        .iter()
        .filter_map(Element::as_message)
        .find(|m| m.role == Role::Tool)
        .unwrap();
    let result = tool_message.tool_result.as_ref().unwrap();
    assert!(!result.is_error, "{}", result.text_content());
    assert_eq!(result.name, "mcp__orders__lookup_order");
    assert_eq!(result.structured.as_ref().unwrap()["status"], "shipped");

    let requests = upstream.requests();
    let chat: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(chat.len(), 2);
    // The MCP tool was offered under its namespaced name, with the server's schema.
    let tool = &chat[0].body["tools"][0]["function"];
    assert_eq!(tool["name"], "mcp__orders__lookup_order");
    assert_eq!(tool["description"], "Looks up an order by id");
    assert_eq!(tool["parameters"]["required"], json!(["order_id"]));
    // Its result went back to the model, keyed by the call id.
    let tool_msg = chat[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert_eq!(tool_msg["tool_call_id"], "call_1");
    assert!(
        tool_msg["content"].to_string().contains("shipped"),
        "{tool_msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_calls_an_mcp_tool_registered_in_the_tool_registry() {
    let (url, calls) = order_service().await;
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    script(&upstream);

    // The facade's wiring: each MCP tool registered with its definition and executor.
    let mcp = McpRegistry::new(
        McpConfig::new().with_server("orders", ServerConfig::streamable_http(url)),
    )
    .unwrap();
    let tools = ToolRegistry::new();
    for tool in mcp.tools().await {
        let def = tool.definition();
        let mut descriptor = ToolDescriptor::new(&def.name, &def.description)
            .with_input_schema(def.input_schema.clone());
        descriptor.output_schema.clone_from(&def.output_schema);
        descriptor.executor = "mcp".to_owned();
        descriptor.timeout_ms = Some(u64::try_from(tool.timeout().as_millis()).unwrap());
        tools.register_with(descriptor, tool.executor());
    }
    assert_eq!(tools.names(), ["mcp__orders__lookup_order"]);

    let elements = run_turn(&upstream, Arc::new(tools)).await;
    check(&upstream, &elements);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    mcp.shutdown().await;
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_registry_is_a_tool_set_of_its_own() {
    let (url, calls) = order_service().await;
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    script(&upstream);

    let mcp = Arc::new(
        McpRegistry::new(
            McpConfig::new().with_server("orders", ServerConfig::streamable_http(url)),
        )
        .unwrap(),
    );
    let elements = run_turn(&upstream, mcp.clone()).await;
    check(&upstream, &elements);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    mcp.shutdown().await;
    upstream.shutdown().await.unwrap();
}
