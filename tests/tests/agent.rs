//! The facade's agent: streamed multi-turn conversation with a tool, persisted to SQLite and
//! continued by a fresh agent on a reopened database.

use std::sync::Arc;

use promptkit::agent::{Agent, AgentEvent};
use promptkit::providers::mock::{MockProvider, MockTurn};
use promptkit::state::SqliteStore;
use promptkit::tools::{FunctionTool, ToolRegistry};
use promptkit::{Role, StateStore};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct Lookup {
    order_id: String,
}

fn tools() -> Arc<ToolRegistry> {
    let registry = ToolRegistry::new();
    registry.register_function(FunctionTool::new(
        "lookup_order",
        "Looks up an order",
        |a: Lookup, _ctx| async move {
            Ok::<_, String>(json!({"order_id": a.order_id, "status": "shipped"}))
        },
    ));
    Arc::new(registry)
}

/// A model that asks for `lookup_order`, then answers in chunks of six characters.
fn order_lookup_model() -> Arc<MockProvider> {
    Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_turn(MockTurn::tool_call(
                "call_1",
                "lookup_order",
                json!({"order_id": "12345"}),
            ))
            .with_turn(MockTurn::text("Order 12345 has shipped.").with_chunk_size(6)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_conversation_with_a_tool_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");

    let model = order_lookup_model();
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let agent = Agent::builder(model.clone())
        .system("You are the support agent of {{company}}.")
        .variable("company", "Acme")
        .tools(tools())
        .state(Arc::clone(&store))
        .build()
        .unwrap();

    let mut stream = agent.stream("s-1", "Where is order 12345?").unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.next_event().await {
        events.push(event);
    }
    let reply = stream.finish().await.unwrap();
    assert_eq!(reply.text(), "Order 12345 has shipped.");
    let deltas = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Text(_)))
        .count();
    assert!(deltas >= 3, "the answer streamed in chunks: {deltas}");
    let last_delta = events
        .iter()
        .rposition(|e| matches!(e, AgentEvent::Text(_)))
        .unwrap();
    let final_message = events
        .iter()
        .rposition(|e| matches!(e, AgentEvent::Message(m) if m.role == Role::Assistant))
        .unwrap();
    assert!(
        last_delta < final_message,
        "deltas come before the complete message"
    );
    let roles: Vec<Role> = reply.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );
    assert_eq!(
        model.requests()[0].system.as_deref(),
        Some("You are the support agent of Acme.")
    );
    drop(agent);
    drop(store);

    // A new process would do exactly this: reopen the file, build a new agent.
    let model = Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_turn(MockTurn::text("You asked about order 12345.")),
    );
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let agent = Agent::builder(model.clone())
        .state(Arc::clone(&store))
        .build()
        .unwrap();
    let reply = agent.send("s-1", "What did I ask?").await.unwrap();
    assert_eq!(reply.text(), "You asked about order 12345.");
    // The second model call saw the whole stored conversation.
    let seen: Vec<Role> = model.requests()[0]
        .messages
        .iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(
        seen,
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Assistant,
            Role::User
        ]
    );
    let stored = store.load("s-1").await.unwrap().unwrap();
    assert_eq!(stored.messages.len(), 6);
}

#[tokio::test]
async fn a_stream_yields_text_and_messages_and_the_reply_keeps_them() {
    let model = order_lookup_model();
    let agent = Agent::builder(model).tools(tools()).build().unwrap();

    let mut stream = agent.stream("s-1", "Where is order 12345?").unwrap();
    let mut text = String::new();
    let mut messages = Vec::new();
    while let Some(event) = stream.next_event().await {
        match event {
            AgentEvent::Text(t) => text.push_str(&t),
            AgentEvent::Message(m) => messages.push(m.role),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(text, "Order 12345 has shipped.");
    let reply = stream.finish().await.unwrap();
    let roles: Vec<Role> = reply.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );
    assert_eq!(roles, messages, "every message was also an event");
    assert_eq!(reply.messages[1].tool_calls[0].name, "lookup_order");
    assert_eq!(reply.text(), "Order 12345 has shipped.");
}

/// A turn finished without reading its output: whatever was not read is absorbed, and the
/// reply comes whole.
#[tokio::test]
async fn a_turn_can_be_finished_without_reading_its_output() {
    let agent = Agent::builder(order_lookup_model())
        .tools(tools())
        .build()
        .unwrap();
    let stream = agent.stream("s-1", "Where is order 12345?").unwrap();
    let reply = stream.finish().await.unwrap();
    assert_eq!(reply.text(), "Order 12345 has shipped.");
    let roles: Vec<Role> = reply.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
    );
}
