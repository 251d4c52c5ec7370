//! Live sessions: one run, many turns, barge-in. An interrupted answer is saved cut to what
//! the user heard; turn ids travel on elements and events; a session whose history has a
//! tool call without a result (a turn cut off before the fix, or by a crash) recovers.

use std::sync::Arc;
use std::time::Duration;

use promptkit::agent::Agent;
use promptkit::pipeline::events::{EventBus, EventKind};
use promptkit::pipeline::provider::{ProviderStage, ProviderStageConfig, Settle, TurnMode};
use promptkit::pipeline::stages::IncrementalSave;
use promptkit::pipeline::{
    Control, Element, Interrupt, Payload, Pipeline, Playback, RunData, Stage, StageContext,
    StageError, StageInput, StageOutput,
};
use promptkit::providers::mock::{MockProvider, MockTurn};
use promptkit::state::MemoryStore;
use promptkit::{
    AudioFormat, AudioFrame, FinishReason, Message, ModelPricing, PricingTable, ProviderError,
    Role, StateStore, ToolCall, ToolErrorKind,
};
use serde_json::json;

/// A text-to-speech stand-in: turns each streamed delta into one 100 ms audio frame of the
/// same turn and epoch, and records the spoken timeline (by the end of each frame, the text
/// so far has been spoken), as a real TTS does from its word timings.
struct FakeTts;

impl Stage for FakeTts {
    fn name(&self) -> &str {
        "tts"
    }

    async fn run(
        &self,
        cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        // Per turn: audio produced and text bytes spoken so far.
        let mut current: Option<(u64, Duration, usize)> = None;
        while let Some(element) = input.recv().await {
            if let (Payload::Text(text), true, Some(turn)) = (
                &element.payload,
                element.meta.streaming_delta,
                element.meta.turn_id,
            ) {
                let (_, audio, bytes) =
                    current
                        .filter(|(t, _, _)| *t == turn)
                        .unwrap_or((turn, Duration::ZERO, 0));
                let audio = audio + Duration::from_millis(100);
                let bytes = bytes + text.len();
                current = Some((turn, audio, bytes));
                cx.run().record_spoken(turn, audio, bytes);
                let frame = AudioFrame::new(vec![0_u8; 3200], AudioFormat::PCM16_16K_MONO);
                let mut speech = Element::audio(frame).with_turn(Some(turn));
                speech.meta.epoch = element.meta.epoch;
                output.send(speech).await?;
                continue;
            }
            output.send(element).await?;
        }
        Ok(())
    }
}

fn user(text: &str) -> Element {
    Element::message(Message::user(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_answer_is_saved_cut_to_what_was_heard_and_the_next_call_sees_it() {
    let model = Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_turn(MockTurn::text("One two six ten and then some more").with_chunk_size(4))
            .with_turn(MockTurn::text("Sorry, go on.")),
    );
    let store = Arc::new(MemoryStore::new());
    let bus = EventBus::new();
    let mut events = bus.subscribe();
    let config = ProviderStageConfig {
        mode: TurnMode::Continuous,
        settle: Settle::AfterPlayback,
        ..ProviderStageConfig::default()
    };
    let pipeline = Pipeline::builder()
        .events(bus.clone())
        .then(ProviderStage::new(model.clone()).with_config(config))
        .then(FakeTts)
        .then(IncrementalSave::new(store.clone()))
        .build()
        .unwrap();
    let (input, execution) = pipeline.start(RunData::for_session("call-1")).unwrap();
    let (mut output, handle) = execution.into_parts();
    input.send(user("tell me")).await.unwrap();
    input.send(Element::end_of_turn()).await.unwrap();

    // The transport plays the first answer; after 300 ms the user talks over it.
    let mut played = Duration::ZERO;
    let mut elements = Vec::new();
    while played < Duration::from_millis(300) {
        let element = output.recv().await.unwrap();
        if element.as_audio().is_some() {
            assert_eq!(element.meta.turn_id, Some(1));
            played += Duration::from_millis(100);
            input.run().report_playback(Playback::playing(1, played));
        }
        elements.push(element);
    }
    let interrupt = input
        .interrupt(Interrupt::of_turn(1).with_played(played))
        .await
        .unwrap();
    loop {
        let element = output.recv().await.unwrap();
        let done = matches!(element.as_control(), Some(Control::Interrupt(i)) if *i == interrupt);
        elements.push(element);
        if done {
            break;
        }
    }
    input.send(user("wait, what?")).await.unwrap();
    input.send(Element::end_of_turn()).await.unwrap();
    drop(input);
    while let Some(element) = output.recv().await {
        elements.push(element);
    }
    handle.wait().await.unwrap();

    // What the user heard of the first answer, and the second, are saved in order.
    let stored = store.load("call-1").await.unwrap().unwrap();
    let saved: Vec<(Role, String)> = stored.messages.iter().map(|m| (m.role, m.text())).collect();
    assert_eq!(
        saved,
        [
            (Role::User, "tell me".to_owned()),
            (Role::Assistant, "One two six".to_owned()),
            (Role::User, "wait, what?".to_owned()),
            (Role::Assistant, "Sorry, go on.".to_owned()),
        ]
    );
    assert_eq!(
        stored.messages[1].finish_reason,
        Some(FinishReason::Cancelled)
    );
    assert_eq!(stored.messages[3].finish_reason, Some(FinishReason::Stop));
    // The next model call saw the cut answer, not the whole one.
    let second = &model.requests()[1];
    let sent: Vec<String> = second.messages.iter().map(Message::text).collect();
    assert_eq!(sent, ["tell me", "One two six", "wait, what?"]);

    // Turn ids: every element of an answer, and the provider's events, carry their turn.
    for element in &elements {
        let answer = element.meta.streaming_delta
            || element.as_audio().is_some()
            || element
                .as_message()
                .is_some_and(|m| m.role == Role::Assistant);
        if answer {
            assert!(element.meta.turn_id.is_some(), "{}", element.kind_name());
        }
    }
    let second_answer = elements
        .iter()
        .find(|e| e.as_message().is_some_and(|m| m.text() == "Sorry, go on."))
        .unwrap();
    assert_eq!(second_answer.meta.turn_id, Some(2));
    let calls: Vec<Option<u64>> = events
        .drain()
        .iter()
        .filter(|e| matches!(e.data, EventKind::ProviderCallStarted { .. }))
        .map(|e| e.turn_id)
        .collect();
    assert_eq!(calls, [Some(1), Some(2)]);
}

fn lookup_call(id: &str) -> ToolCall {
    ToolCall::new(id, "lookup_order", json!({"order_id": "7"}))
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Lookup {
    #[allow(dead_code, reason = "read by the schema, not by the tool")]
    order_id: String,
}

/// A tool set with one tool, `lookup_order`, that always answers.
fn tools() -> Arc<promptkit::tools::ToolRegistry> {
    let registry = promptkit::tools::ToolRegistry::new();
    registry.register_function(promptkit::tools::FunctionTool::new(
        "lookup_order",
        "Looks up an order",
        |_: Lookup, _ctx| async move { Ok::<_, String>(json!({"status": "shipped"})) },
    ));
    Arc::new(registry)
}

#[tokio::test]
async fn a_session_left_with_a_call_without_result_recovers_on_its_next_turn() {
    // The history of a turn that was cut off (a client gone, a crash) before its tool ran.
    let store = Arc::new(MemoryStore::new());
    let stuck = Message::assistant("").with_tool_call(lookup_call("call_9"));
    store
        .append("s", None, &[Message::user("where is order 7?"), stuck])
        .await
        .unwrap();
    let model = Arc::new(MockProvider::new("mock", "mock-1").with_turn(MockTurn::text("Hello!")));
    let agent = Agent::builder(model.clone())
        .tools(tools())
        .state(store.clone())
        .build()
        .unwrap();

    let reply = agent.send("s", "hello?").await.unwrap();
    assert_eq!(reply.text(), "Hello!", "the model was called");
    let sent = &model.requests()[0].messages;
    let roles: Vec<Role> = sent.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::User, Role::Assistant, Role::Tool, Role::User],
        "the open call is closed before the new message, in an order vendors accept"
    );
    let closed = sent[2].tool_result.as_ref().unwrap();
    assert_eq!(closed.call_id, "call_9");
    assert_eq!(closed.error_kind, Some(ToolErrorKind::Interrupted));
    let stored = store.load("s").await.unwrap().unwrap();
    assert_eq!(
        stored.messages.len(),
        5,
        "the repair is saved with the turn"
    );
}

/// $1 per million input tokens.
fn priced() -> PricingTable {
    let mut pricing = PricingTable::new();
    pricing.insert("mock-1", ModelPricing::new(1.0, 0.0));
    pricing
}

#[tokio::test]
async fn after_a_budget_or_loop_failure_the_next_turn_answers_normally() {
    // Budget: the first round's tool call costs more than the turn may spend.
    let store = Arc::new(MemoryStore::new());
    let model = Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_pricing(priced())
            .with_turn(
                MockTurn::tool_call("call_1", "lookup_order", json!({"order_id": "7"}))
                    .with_usage(promptkit::Usage::new(2_000_000, 0)),
            )
            .with_turn(MockTurn::text("All good now.")),
    );
    let agent = Agent::builder(model.clone())
        .tools(tools())
        .state(store.clone())
        .config(ProviderStageConfig {
            max_cost_usd: Some(1.0),
            ..ProviderStageConfig::default()
        })
        .build()
        .unwrap();
    let failure = agent.send("budget", "where is order 7?").await.unwrap_err();
    assert!(
        promptkit::ErrorChain(&failure)
            .to_string()
            .contains("cost budget"),
        "{failure}"
    );
    let reply = agent.send("budget", "and now?").await.unwrap();
    assert_eq!(reply.text(), "All good now.");
    let roles: Vec<Role> = model.requests()[1]
        .messages
        .iter()
        .map(|m| m.role)
        .collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User]);

    // Loop: the same call again and again, past the warning.
    let store = Arc::new(MemoryStore::new());
    let same = || MockTurn::tool_call("x", "lookup_order", json!({"order_id": "7"}));
    let model = Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_turn(same())
            .with_turn(same())
            .with_turn(same())
            .with_turn(same())
            .with_turn(MockTurn::text("Back on track.")),
    );
    let agent = Agent::builder(model.clone())
        .tools(tools())
        .state(store.clone())
        .build()
        .unwrap();
    let failure = agent.send("loop", "where is order 7?").await.unwrap_err();
    assert!(
        promptkit::ErrorChain(&failure)
            .to_string()
            .contains("same arguments"),
        "{failure}"
    );
    let reply = agent.send("loop", "try again").await.unwrap();
    assert_eq!(reply.text(), "Back on track.");
    let history = &model.requests()[4].messages;
    let open = history
        .iter()
        .filter(|m| !m.tool_calls.is_empty())
        .flat_map(|m| m.tool_calls.iter().map(|c| c.id.clone()))
        .count();
    let answered = history.iter().filter(|m| m.tool_result.is_some()).count();
    assert_eq!(open, answered, "every call in the history has a result");
}

#[tokio::test]
async fn a_stream_that_fails_part_way_keeps_its_text_and_the_session_goes_on() {
    let store = Arc::new(MemoryStore::new());
    let model = Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_turn(
                MockTurn::text("It is nearly")
                    .with_chunk_size(4)
                    .with_stream_error(ProviderError::StreamTruncated {
                        message: "connection reset".into(),
                    }),
            )
            .with_turn(MockTurn::text("Let me finish: it is noon.")),
    );
    let agent = Agent::builder(model.clone())
        .state(store.clone())
        .build()
        .unwrap();
    let failure = agent.send("s", "what time is it?").await.unwrap_err();
    assert_eq!(failure.partial.text(), "It is nearly");
    let stored = store.load("s").await.unwrap().unwrap();
    let last = stored.messages.last().unwrap();
    assert_eq!(last.text(), "It is nearly", "what the client saw is kept");
    assert_eq!(last.finish_reason, Some(FinishReason::Error));

    let reply = agent.send("s", "go on").await.unwrap();
    assert_eq!(reply.text(), "Let me finish: it is noon.");
    let sent: Vec<String> = model.requests()[1]
        .messages
        .iter()
        .map(Message::text)
        .collect();
    assert_eq!(sent, ["what time is it?", "It is nearly", "go on"]);
}
