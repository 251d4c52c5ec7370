//! The provider stage and its tool loop, against a scripted provider and an in-test tool set.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    BoxFuture, Cost, ErrorChain, EventStream, FinishReason, Message, ModelPricing, PricingTable,
    Provider, ProviderError, ProviderRequest, ProviderResponse, Role, StreamEvent, ToolCall,
    ToolChoice, ToolContext, ToolDef, ToolError, ToolErrorKind, ToolResult, ToolSet, Usage,
    empty_object_schema,
};
use promptkit_pipeline::provider::{
    Approvals, ApproveTools, PENDING_APPROVAL, ProviderStage, ProviderStageConfig,
    ToolInterruption, TurnMode,
};
use promptkit_pipeline::{Element, Interrupt, Payload, Pipeline, PipelineError, RunData};
use serde_json::json;

/// One scripted model answer.
#[derive(Debug, Clone)]
enum Step {
    Text(&'static str),
    Calls(Vec<ToolCall>),
    /// Text streamed, then the stream breaks.
    Broken(&'static str),
    Fail(u16),
}

#[derive(Debug, Default)]
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    requests: Mutex<Vec<ProviderRequest>>,
    pricing: Option<PricingTable>,
}

impl Scripted {
    fn new(steps: impl IntoIterator<Item = Step>) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into_iter().collect()),
            ..Self::default()
        })
    }

    fn priced(steps: impl IntoIterator<Item = Step>, per_mtok: f64) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::new(steps.into_iter().collect()),
            requests: Mutex::default(),
            pricing: Some(
                PricingTable::new().with("scripted-1", ModelPricing::new(per_mtok, per_mtok)),
            ),
        })
    }

    fn requests(&self) -> Vec<ProviderRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn next(&self, request: &ProviderRequest) -> Step {
        self.requests.lock().unwrap().push(request.clone());
        self.steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Text("(script exhausted)"))
    }

    fn events(step: &Step) -> Vec<Result<StreamEvent, ProviderError>> {
        let usage = StreamEvent::Usage {
            usage: Usage::new(1_000_000, 0),
        };
        match step {
            Step::Text(t) => {
                let (a, b) = t.split_at(t.len() / 2);
                vec![
                    Ok(StreamEvent::TextDelta { text: a.into() }),
                    Ok(StreamEvent::TextDelta { text: b.into() }),
                    Ok(usage),
                    Ok(StreamEvent::Finish {
                        reason: FinishReason::Stop,
                    }),
                ]
            }
            Step::Calls(calls) => {
                let mut events = Vec::new();
                for (i, c) in calls.iter().enumerate() {
                    let index = u32::try_from(i).unwrap();
                    events.push(Ok(StreamEvent::ToolCallStart {
                        index,
                        id: c.id.clone(),
                        name: c.name.clone(),
                        provider_data: Default::default(),
                    }));
                    let args = c.arguments.to_string();
                    let (a, b) = args.split_at(args.len() / 2);
                    events.push(Ok(StreamEvent::ToolCallDelta {
                        index,
                        arguments: a.into(),
                    }));
                    events.push(Ok(StreamEvent::ToolCallDelta {
                        index,
                        arguments: b.into(),
                    }));
                }
                events.push(Ok(usage));
                events.push(Ok(StreamEvent::Finish {
                    reason: FinishReason::ToolCalls,
                }));
                events
            }
            Step::Broken(t) => vec![
                Ok(StreamEvent::TextDelta { text: (*t).into() }),
                Err(ProviderError::StreamTruncated {
                    message: "connection reset".into(),
                }),
            ],
            Step::Fail(status) => vec![Err(ProviderError::from_status(
                *status,
                "scripted failure",
                None,
            ))],
        }
    }
}

impl Provider for Scripted {
    fn id(&self) -> &str {
        "scripted"
    }

    fn model(&self) -> &str {
        "scripted-1"
    }

    fn pricing(&self) -> Option<&PricingTable> {
        self.pricing.as_ref()
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let step = self.next(request);
            let mut acc = promptkit_core::StreamAccumulator::new();
            for e in Self::events(&step) {
                acc.push(&e?);
            }
            Ok(ProviderResponse {
                message: acc.finish(),
                model: Some("scripted-1".into()),
                served_by: Some("scripted".into()),
                latency: Duration::from_millis(1),
            })
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let step = self.next(request);
            if let Step::Fail(status) = step {
                return Err(ProviderError::from_status(status, "scripted failure", None));
            }
            let stream: EventStream = Box::pin(futures_util::stream::iter(Self::events(&step)));
            Ok(stream)
        })
    }
}

/// Tools: `weather` (slow: 50 ms), `time` (fast), `fail` (always errors), `search`
/// (requires a `q` string).
#[derive(Debug, Default)]
struct Tools {
    executed: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// The `gated` tool finishes when this is notified.
    gate: tokio::sync::Notify,
}

impl ToolSet for Tools {
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>> {
        Box::pin(async {
            Ok(["weather", "time", "fail", "search", "sleepy", "gated"]
                .into_iter()
                .map(|n| ToolDef::new(n, format!("the {n} tool"), empty_object_schema()))
                .collect())
        })
    }

    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        _ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            self.executed.lock().unwrap().push(call.name.clone());
            let result = match call.name.as_str() {
                "weather" => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(ToolResult::text(&call.id, &call.name, "sunny"))
                }
                "time" => Ok(ToolResult::text(&call.id, &call.name, "noon")),
                "sleepy" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(ToolResult::text(&call.id, &call.name, "late"))
                }
                "gated" => {
                    self.gate.notified().await;
                    Ok(ToolResult::text(&call.id, &call.name, "booked"))
                }
                "fail" => Err(ToolError::Execution {
                    name: call.name.clone(),
                    message: "backend down".into(),
                    source: None,
                }),
                "search" => match call.arguments.get("q").and_then(|q| q.as_str()) {
                    Some(q) => Ok(ToolResult::text(
                        &call.id,
                        &call.name,
                        format!("results for {q}"),
                    )),
                    None => Err(ToolError::InvalidArguments {
                        name: call.name.clone(),
                        message: "missing field `q`".into(),
                    }),
                },
                other => Err(ToolError::UnknownTool { name: other.into() }),
            };
            self.running.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }
}

fn call(id: &str, name: &str, args: serde_json::Value) -> ToolCall {
    ToolCall::new(id, name, args)
}

fn pipeline(stage: ProviderStage) -> Pipeline {
    Pipeline::builder().then(stage).build().unwrap()
}

fn user(text: &str) -> Element {
    Element::message(Message::user(text))
}

fn tool_results(messages: &[Message]) -> Vec<&ToolResult> {
    messages
        .iter()
        .filter_map(|m| m.tool_result.as_deref())
        .collect()
}

#[tokio::test]
async fn streams_deltas_before_the_complete_message() {
    let provider = Scripted::new([Step::Text("Hello there")]);
    let p = pipeline(ProviderStage::new(provider.clone()));
    let (elements, result) = p
        .execute(
            RunData::default().with_system_prompt("Be kind."),
            futures_util::stream::iter([user("hi")]),
        )
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    let kinds: Vec<&str> = elements.iter().map(Element::kind_name).collect();
    assert_eq!(kinds, ["message", "text", "text", "message"]);
    assert!(elements[1].meta.streaming_delta);
    let answer = elements[3].as_message().unwrap();
    assert_eq!(answer.text(), "Hello there");
    assert_eq!(answer.finish_reason, Some(FinishReason::Stop));
    assert_eq!(elements[3].meta.finish_reason, Some(FinishReason::Stop));
    assert!(answer.latency_ms.is_some() && answer.created_at.is_some());
    assert_eq!(provider.requests()[0].system.as_deref(), Some("Be kind."));
}

#[tokio::test]
async fn the_tool_loop_runs_calls_in_parallel_and_returns_results_in_call_order() {
    let provider = Scripted::new([
        Step::Calls(vec![
            call("c1", "weather", json!({"city": "Oslo"})),
            call("c2", "time", json!({})),
            call("c3", "search", json!({"q": "rust"})),
        ]),
        Step::Text("It is sunny at noon."),
    ]);
    let tools = Arc::new(Tools::default());
    let p = pipeline(ProviderStage::new(provider.clone()).with_tools(tools.clone()));
    let result = p
        .execute_sync(RunData::default(), [user("weather?")])
        .await
        .unwrap();
    let results = tool_results(&result.messages);
    // The slow call (weather) finished last but comes first, as the model asked.
    assert_eq!(
        results
            .iter()
            .map(|r| r.call_id.as_str())
            .collect::<Vec<_>>(),
        ["c1", "c2", "c3"]
    );
    assert_eq!(results[0].text_content(), "sunny");
    assert_eq!(results[2].text_content(), "results for rust");
    assert!(
        tools.max_running.load(Ordering::SeqCst) >= 2,
        "calls overlapped"
    );
    assert_eq!(result.response.unwrap().text(), "It is sunny at noon.");
    let roles: Vec<Role> = result.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Tool,
            Role::Tool,
            Role::Assistant
        ]
    );
    // The second call saw the tool results.
    let second = &provider.requests()[1];
    assert_eq!(second.messages.len(), 5);
    // Usage adds up over both rounds.
    assert_eq!(result.usage.input_tokens, Some(2_000_000));
}

#[tokio::test]
async fn tools_are_offered_sorted_and_filtered_and_the_allow_list_is_enforced_at_execution() {
    let provider = Scripted::new([
        // The model calls a tool it was not offered.
        Step::Calls(vec![
            call("c1", "weather", json!({})),
            call("c2", "fail", json!({})),
        ]),
        Step::Text("ok"),
    ]);
    let tools = Arc::new(Tools::default());
    let p = pipeline(ProviderStage::new(provider.clone()).with_tools(tools.clone()));
    let turn = RunData {
        allowed_tools: Some(vec!["weather".into(), "time".into(), "s*".into()]),
        ..RunData::default()
    };
    let result = p.execute_sync(turn, [user("hi")]).await.unwrap();
    let offered: Vec<String> = provider.requests()[0]
        .tools
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(
        offered,
        ["search", "sleepy", "time", "weather"],
        "allowed tools, sorted by name"
    );
    let results = tool_results(&result.messages);
    assert_eq!(results[1].error_kind, Some(ToolErrorKind::NotAllowed));
    assert!(results[1].is_error);
    assert_eq!(
        *tools.executed.lock().unwrap(),
        ["weather"],
        "the disallowed tool never ran"
    );
}

#[tokio::test]
async fn tool_failures_go_back_to_the_model_and_repeat_offenders_are_no_longer_offered() {
    let provider = Scripted::new([
        Step::Calls(vec![
            call("c1", "fail", json!({})),
            call("c2", "search", json!({})),
            call("c3", "nope", json!({})),
        ]),
        Step::Calls(vec![call("c4", "fail", json!({"retry": true}))]),
        Step::Text("sorry, tools are broken"),
    ]);
    let p = pipeline(ProviderStage::new(provider.clone()).with_tools(Arc::new(Tools::default())));
    let result = p
        .execute_sync(RunData::default(), [user("go")])
        .await
        .unwrap();
    let results = tool_results(&result.messages);
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Execution));
    assert_eq!(
        results[0].text_content(),
        "tool `fail` failed: backend down"
    );
    assert_eq!(results[1].error_kind, Some(ToolErrorKind::InvalidArguments));
    assert_eq!(results[2].error_kind, Some(ToolErrorKind::UnknownTool));
    let requests = provider.requests();
    assert!(
        requests[1].tools.iter().any(|t| t.name == "fail"),
        "one failure: still offered"
    );
    assert!(
        !requests[2].tools.iter().any(|t| t.name == "fail"),
        "second failure: excluded"
    );
    assert_eq!(result.response.unwrap().text(), "sorry, tools are broken");
}

#[tokio::test]
async fn identical_calls_get_one_nudge_then_fail_the_turn() {
    let same = || Step::Calls(vec![call("x", "time", json!({"tz": "UTC"}))]);
    let provider = Scripted::new([same(), same(), same(), same(), Step::Text("unreachable")]);
    let tools = Arc::new(Tools::default());
    let p = pipeline(ProviderStage::new(provider).with_tools(tools.clone()));
    let failure = p
        .execute_sync(RunData::default(), [user("loop")])
        .await
        .unwrap_err();
    assert!(
        ErrorChain(&failure)
            .to_string()
            .contains("tool `time` was called with the same arguments 4 times"),
        "{failure}"
    );
    // Twice executed, the third skipped with a nudge, the fourth ends the turn: it is not
    // run, and it gets a result that says so, so the conversation is never left with a call
    // without a result.
    assert_eq!(tools.executed.lock().unwrap().len(), 2);
    let results = tool_results(&failure.partial.messages);
    assert_eq!(results.len(), 4);
    assert!(results[2].text_content().contains("was called 3 times"));
    assert_eq!(results[3].error_kind, Some(ToolErrorKind::Interrupted));
    assert!(results[3].text_content().contains("stopped repeating"));
    // Everything said before the failure is kept.
    assert_eq!(failure.partial.messages.len(), 1 + 4 * 2);
}

#[tokio::test]
async fn max_rounds_ends_the_turn_with_a_clear_error() {
    let provider = Scripted::new(
        (0..5).map(|i| Step::Calls(vec![call(&format!("c{i}"), "time", json!({"i": i}))])),
    );
    let config = ProviderStageConfig {
        max_rounds: 3,
        ..ProviderStageConfig::default()
    };
    let p = pipeline(
        ProviderStage::new(provider)
            .with_tools(Arc::new(Tools::default()))
            .with_config(config),
    );
    let failure = p
        .execute_sync(RunData::default(), [user("go")])
        .await
        .unwrap_err();
    assert_eq!(
        ErrorChain(&failure).to_string(),
        "stage `provider` failed: the turn was stopped: the model still asked for tools after 3 model calls (max_rounds)"
    );
    assert_eq!(failure.partial.messages.len(), 1 + 3 * 2);
}

/// Runs a turn whose model calls cost $1 each, after a history that cost `history_usd`.
async fn run_priced(
    steps: Vec<Step>,
    config: ProviderStageConfig,
    history_usd: f64,
) -> promptkit_pipeline::RunFailure {
    let provider = Scripted::priced(steps, 1.0);
    let mut earlier = Message::assistant("earlier answer");
    earlier.cost = Some(Cost {
        total_usd: history_usd,
        ..Cost::default()
    });
    let p = pipeline(
        ProviderStage::new(provider)
            .with_tools(Arc::new(Tools::default()))
            .with_config(config),
    );
    p.execute_sync(
        RunData::default(),
        [Element::message(earlier).as_history(), user("more")],
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn the_turn_cost_budget_stops_the_turn() {
    // A $1.50 budget allows the first call and stops after the second.
    let steps = vec![
        Step::Calls(vec![call("c1", "time", json!({}))]),
        Step::Calls(vec![call("c2", "time", json!({"again": true}))]),
        Step::Text("never"),
    ];
    let config = ProviderStageConfig {
        max_cost_usd: Some(1.5),
        ..ProviderStageConfig::default()
    };
    let failure = run_priced(steps, config, 5.0).await;
    assert!(
        ErrorChain(&failure)
            .to_string()
            .contains("cost budget of $1.5000 exceeded: $2.0000 spent"),
        "history cost does not count against the turn budget: {failure}"
    );
    assert_eq!(
        failure.partial.messages.len(),
        1 + 1 + 2 + 2,
        "the turn's messages are kept, with a result for the call the budget stopped"
    );
    let closed = tool_results(&failure.partial.messages)[1].clone();
    assert_eq!(closed.call_id, "c2");
    assert_eq!(closed.error_kind, Some(ToolErrorKind::Interrupted));
    assert!(closed.text_content().contains("cost budget"));
}

#[tokio::test]
async fn the_conversation_cost_budget_counts_history_and_stops_the_turn() {
    let steps = vec![
        Step::Calls(vec![call("c1", "time", json!({}))]),
        Step::Text("done"),
    ];
    let config = ProviderStageConfig {
        max_conversation_cost_usd: Some(1.5),
        ..ProviderStageConfig::default()
    };
    let failure = run_priced(steps, config, 1.0).await;
    assert!(
        ErrorChain(&failure)
            .to_string()
            .contains("cost budget of $1.5000 exceeded: $2.0000 spent"),
        "{failure}"
    );
    assert_eq!(
        failure.partial.cost.unwrap().total_usd,
        1.0,
        "this turn's cost is reported"
    );
}

#[tokio::test]
async fn stop_on_tool_and_tool_choice_only_binds_the_first_round() {
    let provider = Scripted::new([
        Step::Calls(vec![call("c1", "time", json!({}))]),
        Step::Calls(vec![call("c2", "weather", json!({}))]),
        Step::Text("never"),
    ]);
    let config = ProviderStageConfig {
        tool_choice: ToolChoice::Required,
        stop_on_tools: vec!["weather".into()],
        ..ProviderStageConfig::default()
    };
    let p = pipeline(
        ProviderStage::new(provider.clone())
            .with_tools(Arc::new(Tools::default()))
            .with_config(config),
    );
    let result = p
        .execute_sync(RunData::default(), [user("go")])
        .await
        .unwrap();
    let requests = provider.requests();
    assert_eq!(requests.len(), 2, "stopped after the weather round");
    assert_eq!(requests[0].tool_choice, ToolChoice::Required);
    assert_eq!(requests[1].tool_choice, ToolChoice::Auto);
    assert_eq!(result.messages.last().unwrap().role, Role::Tool);

    let provider = Scripted::new([Step::Text("no tools")]);
    let config = ProviderStageConfig {
        tool_choice: ToolChoice::None,
        ..ProviderStageConfig::default()
    };
    let p = pipeline(
        ProviderStage::new(provider.clone())
            .with_tools(Arc::new(Tools::default()))
            .with_config(config),
    );
    p.execute_sync(RunData::default(), [user("go")])
        .await
        .unwrap();
    assert!(
        provider.requests()[0].tools.is_empty(),
        "tool_choice none sends no declarations"
    );
}

#[tokio::test]
async fn calls_needing_approval_end_the_turn_pending_and_the_turn_resumes_with_decisions() {
    let provider = Scripted::new([
        Step::Calls(vec![
            call("c1", "time", json!({})),
            call("c2", "weather", json!({})),
            call("c3", "search", json!({"q": "x"})),
        ]),
        Step::Text("Done: noon and sunny; search was refused."),
    ]);
    let tools = Arc::new(Tools::default());
    let stage = ProviderStage::new(provider.clone())
        .with_tools(tools.clone())
        .with_approval(Arc::new(ApproveTools(vec![
            "weather".into(),
            "search".into(),
        ])));
    let p = pipeline(stage);
    let (elements, result) = p
        .execute(RunData::default(), futures_util::stream::iter([user("go")]))
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    let pending: Vec<&ToolCall> = elements
        .iter()
        .filter(|e| e.meta.attribute(PENDING_APPROVAL).is_some())
        .filter_map(|e| match &e.payload {
            Payload::ToolCall(c) => Some(&**c),
            _ => None,
        })
        .collect();
    assert_eq!(
        pending.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c2", "c3"]
    );
    assert_eq!(
        *tools.executed.lock().unwrap(),
        ["time"],
        "only the unguarded call ran"
    );

    // Resume: history is everything so far; decisions arrive with the turn.
    let history: Vec<Element> = elements
        .iter()
        .filter_map(|e| e.as_message().cloned())
        .map(|m| Element::message(m).as_history())
        .collect();
    let turn = RunData::default()
        .with_extension(Approvals::default().approve("c2").deny("c3", "not today"));
    let result = p.execute_sync(turn, history).await.unwrap();
    assert_eq!(*tools.executed.lock().unwrap(), ["time", "weather"]);
    let results = tool_results(&result.messages);
    assert_eq!(results.len(), 3);
    assert_eq!(results[1].call_id, "c2");
    assert_eq!(results[2].error_kind, Some(ToolErrorKind::Denied));
    assert!(results[2].text_content().contains("not today"));
    assert_eq!(
        result.response.unwrap().text(),
        "Done: noon and sunny; search was refused."
    );
}

#[tokio::test]
async fn a_failed_stream_keeps_what_was_said_and_says_why() {
    let provider = Scripted::new([
        Step::Calls(vec![call("c1", "time", json!({}))]),
        Step::Broken("It is no"),
    ]);
    let p = pipeline(ProviderStage::new(provider).with_tools(Arc::new(Tools::default())));
    let failure = p
        .execute_sync(RunData::default(), [user("time?")])
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, PipelineError::StageFailed { ref stage, .. } if stage == "provider")
    );
    assert!(
        ErrorChain(&failure)
            .to_string()
            .contains("connection reset"),
        "{failure}"
    );
    // The user message, the first round's call and its result survive, and so does the
    // partial text: streamed to the caller, and kept as an assistant message that says it
    // was cut off.
    assert_eq!(failure.partial.messages.len(), 4);
    assert_eq!(failure.partial.text, "It is no");
    let cut = failure.partial.messages.last().unwrap();
    assert_eq!(cut.text(), "It is no");
    assert_eq!(cut.finish_reason, Some(FinishReason::Error));

    let provider = Scripted::new([Step::Fail(401)]);
    let p = pipeline(ProviderStage::new(provider));
    let failure = p
        .execute_sync(RunData::default(), [user("hi")])
        .await
        .unwrap_err();
    assert!(
        ErrorChain(&failure)
            .to_string()
            .contains("authentication failed"),
        "{failure}"
    );
}

#[tokio::test]
async fn non_streaming_mode_calls_predict() {
    let provider = Scripted::new([
        Step::Calls(vec![call("c1", "time", json!({}))]),
        Step::Text("noon"),
    ]);
    let config = ProviderStageConfig {
        streaming: false,
        ..ProviderStageConfig::default()
    };
    let p = pipeline(
        ProviderStage::new(provider)
            .with_tools(Arc::new(Tools::default()))
            .with_config(config),
    );
    let result = p
        .execute_sync(RunData::default(), [user("time?")])
        .await
        .unwrap();
    assert_eq!(result.text, "", "no deltas without streaming");
    assert_eq!(result.response.unwrap().text(), "noon");
}

#[tokio::test(start_paused = true)]
async fn a_hung_tool_times_out_into_an_error_result() {
    let provider = Scripted::new([
        Step::Calls(vec![call("c1", "sleepy", json!({}))]),
        Step::Text("gave up"),
    ]);
    let config = ProviderStageConfig {
        tool_timeout: Duration::from_secs(2),
        ..ProviderStageConfig::default()
    };
    let p = pipeline(
        ProviderStage::new(provider)
            .with_tools(Arc::new(Tools::default()))
            .with_config(config),
    );
    let result = p
        .execute_sync(RunData::default(), [user("go")])
        .await
        .unwrap();
    let results = tool_results(&result.messages);
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Timeout));
    assert_eq!(result.response.unwrap().text(), "gave up");
}

/// A tool set that ends its calls by the context's deadline itself. This one answers a
/// little after the deadline, so a second timer in the stage would show as a timeout.
#[derive(Debug, Default)]
struct SelfTimed {
    deadlines: Mutex<Vec<Option<std::time::Instant>>>,
}

impl ToolSet for SelfTimed {
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>> {
        Box::pin(async {
            Ok(vec![ToolDef::new(
                "slow",
                "a slow tool",
                empty_object_schema(),
            )])
        })
    }

    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            self.deadlines.lock().unwrap().push(ctx.deadline);
            let left = ctx.remaining().unwrap_or_default();
            tokio::time::sleep(left + Duration::from_millis(100)).await;
            Ok(ToolResult::text(&call.id, &call.name, "done"))
        })
    }

    fn enforces_deadline(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn a_tool_set_that_keeps_its_own_deadline_is_not_timed_twice() {
    let provider = Scripted::new([
        Step::Calls(vec![call("c1", "slow", json!({}))]),
        Step::Text("finished"),
    ]);
    let config = ProviderStageConfig {
        tool_timeout: Duration::from_secs(2),
        ..ProviderStageConfig::default()
    };
    let tools = Arc::new(SelfTimed::default());
    let p = pipeline(
        ProviderStage::new(provider)
            .with_tools(Arc::clone(&tools) as Arc<dyn ToolSet>)
            .with_config(config),
    );
    let before = std::time::Instant::now();
    let result = p
        .execute_sync(RunData::default(), [user("go")])
        .await
        .unwrap();
    // The stage handed the set its deadline...
    let deadlines = tools.deadlines.lock().unwrap().clone();
    let deadline = deadlines[0].expect("a deadline");
    assert!(deadline > before && deadline <= std::time::Instant::now() + Duration::from_secs(2));
    // ...and left the call to it: the late answer is the result, not a timeout.
    let results = tool_results(&result.messages);
    assert_eq!(results[0].error_kind, None, "{:?}", results[0]);
    assert_eq!(result.response.unwrap().text(), "finished");
}

#[tokio::test]
async fn continuous_mode_answers_each_turn_and_keeps_the_conversation() {
    let provider = Scripted::new([Step::Text("first answer"), Step::Text("second answer")]);
    let config = ProviderStageConfig {
        mode: TurnMode::Continuous,
        ..ProviderStageConfig::default()
    };
    let p = pipeline(ProviderStage::new(provider.clone()).with_config(config));
    let (input, execution) = p.start(RunData::default()).unwrap();
    let (mut output, handle) = execution.into_parts();
    input.send(user("one")).await.unwrap();
    input.send(Element::end_of_turn()).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = output.recv().await {
        let end = e.kind_name() == "end_of_turn";
        seen.push(e);
        if end {
            break;
        }
    }
    assert_eq!(seen.last().unwrap().kind_name(), "end_of_turn");
    assert!(
        seen.iter()
            .any(|e| e.as_message().is_some_and(|m| m.text() == "first answer"))
    );
    input.send(user("two")).await.unwrap();
    input.send(Element::end_of_turn()).await.unwrap();
    drop(input);
    let mut rest = Vec::new();
    while let Some(e) = output.recv().await {
        rest.push(e);
    }
    handle.wait().await.unwrap();
    assert!(
        rest.iter()
            .any(|e| e.as_message().is_some_and(|m| m.text() == "second answer"))
    );
    // The second call carried the whole conversation.
    let second = &provider.requests()[1];
    let texts: Vec<String> = second.messages.iter().map(Message::text).collect();
    assert_eq!(texts, ["one", "first answer", "two"]);
}

#[tokio::test]
async fn an_interrupt_cancels_a_running_tool_when_asked_and_the_session_goes_on() {
    let provider = Scripted::new([
        Step::Calls(vec![call("c1", "sleepy", json!({}))]),
        Step::Text("after the interruption"),
    ]);
    let tools = Arc::new(Tools::default());
    let config = ProviderStageConfig {
        mode: TurnMode::Continuous,
        interrupt_tools: ToolInterruption::Cancel,
        ..ProviderStageConfig::default()
    };
    let p = pipeline(
        ProviderStage::new(provider.clone())
            .with_tools(tools.clone())
            .with_config(config),
    );
    let (input, execution) = p.start(RunData::default()).unwrap();
    let (mut output, handle) = execution.into_parts();
    input.send(user("slow question")).await.unwrap();
    input.send(Element::end_of_turn()).await.unwrap();
    // Wait until the tool is running, then barge in.
    while tools.running.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    input.interrupt(Interrupt::default()).await.unwrap();
    input.send(user("new question")).await.unwrap();
    input.send(Element::end_of_turn()).await.unwrap();
    drop(input);
    let mut kinds = Vec::new();
    let mut texts = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), output.recv())
        .await
        .unwrap()
    {
        kinds.push(e.kind_name());
        if let Some(m) = e.as_message() {
            texts.push(m.text());
        }
    }
    handle.wait().await.unwrap();
    assert_eq!(
        kinds.iter().filter(|k| **k == "interrupt").count(),
        1,
        "the interrupt is surfaced once: {kinds:?}"
    );
    assert_eq!(
        tools.running.load(Ordering::SeqCst),
        1,
        "the hung call was dropped, not completed"
    );
    assert_eq!(
        texts.last().map(String::as_str),
        Some("after the interruption")
    );
    // The next call sees the interrupted call, closed with an interrupted result, then the
    // new question: a history every vendor accepts.
    let last = provider.requests().last().cloned().unwrap();
    let roles: Vec<Role> = last.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User]);
    let closed = last.messages[2].tool_result.as_ref().unwrap();
    assert_eq!(closed.call_id, "c1");
    assert_eq!(closed.error_kind, Some(ToolErrorKind::Interrupted));
}

#[tokio::test]
async fn an_interrupt_lets_a_running_tool_finish_and_keeps_its_result() {
    let provider = Scripted::new([
        Step::Calls(vec![call("c1", "gated", json!({}))]),
        Step::Text("never asked for"),
    ]);
    let tools = Arc::new(Tools::default());
    let config = ProviderStageConfig {
        mode: TurnMode::Continuous,
        ..ProviderStageConfig::default()
    };
    let p = pipeline(
        ProviderStage::new(provider.clone())
            .with_tools(tools.clone())
            .with_config(config),
    );
    let (input, execution) = p.start(RunData::default()).unwrap();
    let (mut output, handle) = execution.into_parts();
    input.send(user("book it")).await.unwrap();
    input.send(Element::end_of_turn()).await.unwrap();
    while tools.running.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    input.interrupt(Interrupt::default()).await.unwrap();
    tools.gate.notify_one();
    drop(input);
    let mut results = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), output.recv())
        .await
        .unwrap()
    {
        if let Some(result) = e.as_message().and_then(|m| m.tool_result.clone()) {
            results.push(result);
        }
    }
    handle.wait().await.unwrap();
    assert_eq!(
        *tools.executed.lock().unwrap(),
        ["gated"],
        "run exactly once"
    );
    assert_eq!(results.len(), 1);
    assert!(!results[0].is_error, "the finished tool's result is kept");
    assert_eq!(
        provider.requests().len(),
        1,
        "no model call after the interrupt"
    );
}

/// A model that streams `count` deltas `gap` apart.
#[derive(Debug)]
struct Trickle {
    count: usize,
    gap: Duration,
}

impl Provider for Trickle {
    fn id(&self) -> &str {
        "trickle"
    }

    fn model(&self) -> &str {
        "trickle-1"
    }

    fn predict<'a>(
        &'a self,
        _request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async { Err(ProviderError::from_status(400, "stream only", None)) })
    }

    fn stream<'a>(
        &'a self,
        _request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        let gap = self.gap;
        let deltas = futures_util::stream::iter(0..self.count).then(move |i| async move {
            tokio::time::sleep(gap).await;
            Ok(StreamEvent::TextDelta {
                text: format!("{i} "),
            })
        });
        let finish = futures_util::stream::iter([Ok(StreamEvent::Finish {
            reason: FinishReason::Stop,
        })]);
        Box::pin(async move {
            let stream: EventStream = Box::pin(deltas.chain(finish));
            Ok(stream)
        })
    }
}

/// Takes nothing from its input: everything upstream of it backs up.
struct Stuck;

impl promptkit_pipeline::Stage for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }

    async fn run(
        &self,
        _cx: promptkit_pipeline::StageContext,
        _input: promptkit_pipeline::StageInput,
        _output: promptkit_pipeline::StageOutput,
    ) -> Result<(), promptkit_pipeline::StageError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_model_stream_is_not_idle_but_a_stalled_downstream_is() {
    // Deltas 300 ms apart against a 100 ms idle timeout: the stage waits on its model, which
    // is outside work, and the run goes on.
    let trickle = || {
        ProviderStage::new(Arc::new(Trickle {
            count: 4,
            gap: Duration::from_millis(300),
        }))
    };
    let result = Pipeline::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .then(trickle())
        .build()
        .unwrap()
        .execute_sync(RunData::default(), [user("go")])
        .await
        .unwrap();
    assert_eq!(result.text, "0 1 2 3 ");

    // A downstream stage that stops taking elements: once the channel is full, the provider
    // stage waits on the pipeline, not on its model, and the run is idle.
    // (Bounded, so that a regression fails rather than hangs.)
    let stalled = Pipeline::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .channel_capacity(1)
        .then(ProviderStage::new(Arc::new(Trickle {
            count: 50,
            gap: Duration::from_millis(10),
        })))
        .then(Stuck)
        .build()
        .unwrap();
    let run = stalled.execute_sync(RunData::default(), [user("go")]);
    let failure = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the idle timeout ends the run")
        .unwrap_err();
    assert!(
        matches!(failure.error, PipelineError::IdleTimeout(_)),
        "{}",
        failure.error
    );
}
