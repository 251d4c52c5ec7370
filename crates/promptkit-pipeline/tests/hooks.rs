//! Hooks and guardrails inside the provider stage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use promptkit_core::{
    BoxFuture, ErrorChain, EventStream, FinishReason, Message, Provider, ProviderError,
    ProviderRequest, ProviderResponse, StreamEvent, ToolCall, ToolContext, ToolDef, ToolError,
    ToolErrorKind, ToolResult, ToolSet, empty_object_schema,
};
use promptkit_pipeline::hooks::guardrails::{self, Action, Direction, PiiKind};
use promptkit_pipeline::hooks::{Decision, Hooks, OnDeny, ProviderHook, ToolHook};
use promptkit_pipeline::provider::{ProviderStage, ProviderStageConfig};
use promptkit_pipeline::{Element, Pipeline, RunData};
use serde_json::json;

/// Streams fixed chunks; the first answer may ask for a tool call.
#[derive(Debug, Default)]
struct Chunks {
    answers: Mutex<Vec<Vec<StreamEvent>>>,
    requests: Mutex<Vec<ProviderRequest>>,
}

impl Chunks {
    fn text(chunks: &[&str]) -> Vec<StreamEvent> {
        let mut events: Vec<StreamEvent> = chunks
            .iter()
            .map(|c| StreamEvent::TextDelta {
                text: (*c).to_owned(),
            })
            .collect();
        events.push(StreamEvent::Finish {
            reason: FinishReason::Stop,
        });
        events
    }

    fn call(name: &str) -> Vec<StreamEvent> {
        vec![
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c1".into(),
                name: name.into(),
                provider_data: Default::default(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{}".into(),
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
            },
        ]
    }

    fn new(answers: Vec<Vec<StreamEvent>>) -> Arc<Self> {
        let mut answers = answers;
        answers.reverse();
        Arc::new(Self {
            answers: Mutex::new(answers),
            requests: Mutex::default(),
        })
    }

    fn next(&self, request: &ProviderRequest) -> Vec<StreamEvent> {
        self.requests.lock().unwrap().push(request.clone());
        self.answers
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| Self::text(&["done"]))
    }
}

impl Provider for Chunks {
    fn id(&self) -> &str {
        "chunks"
    }

    fn model(&self) -> &str {
        "chunks-1"
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let mut acc = promptkit_core::StreamAccumulator::new();
            for e in self.next(request) {
                acc.push(&e);
            }
            Ok(ProviderResponse {
                message: acc.finish(),
                model: None,
                served_by: None,
                latency: Duration::ZERO,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let events = self.next(request).into_iter().map(Ok).collect::<Vec<_>>();
            let stream: EventStream = Box::pin(futures_util::stream::iter(events));
            Ok(stream)
        })
    }
}

#[derive(Debug, Default)]
struct Tools {
    ran: Mutex<Vec<String>>,
}

impl ToolSet for Tools {
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>> {
        Box::pin(async {
            Ok(vec![
                ToolDef::new("delete_account", "", empty_object_schema()),
                ToolDef::new("lookup", "", empty_object_schema()),
            ])
        })
    }

    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        _ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            self.ran.lock().unwrap().push(call.name.clone());
            Ok(ToolResult::text(
                &call.id,
                &call.name,
                "secret internal note: reach ops@corp.example",
            ))
        })
    }
}

fn run(stage: ProviderStage) -> Pipeline {
    Pipeline::builder().then(stage).build().unwrap()
}

#[tokio::test]
async fn a_streaming_guardrail_stops_the_response_before_the_offending_chunk() {
    let provider = Chunks::new(vec![Chunks::text(&[
        "Sure. ",
        "We guarantee ",
        "a refund.",
    ])]);
    let stage = ProviderStage::new(provider)
        .with_hooks(Hooks::new().guardrail(guardrails::banned_words(["guarantee"])));
    let (elements, result) = run(stage)
        .execute(
            RunData::default(),
            futures_util::stream::iter([Element::message(Message::user("refund?"))]),
        )
        .unwrap()
        .finish()
        .await;
    let err = result.unwrap_err();
    assert_eq!(
        ErrorChain(&err).to_string(),
        "stage `provider` failed: the turn was stopped: denied by banned_words: banned word `guarantee`"
    );
    let deltas: Vec<&str> = elements.iter().filter_map(Element::as_text).collect();
    assert_eq!(
        deltas,
        ["Sure. "],
        "the offending chunk never reached the output"
    );
}

#[tokio::test]
async fn a_denied_turn_can_answer_with_a_replacement_instead() {
    let provider = Chunks::new(vec![Chunks::text(&["We guarantee it."])]);
    let stage = ProviderStage::new(provider).with_hooks(
        Hooks::new()
            .guardrail(guardrails::banned_words(["guarantee"]))
            .on_deny(OnDeny::Replace("I can't promise that.".into())),
    );
    let result = run(stage)
        .execute_sync(
            RunData::default(),
            [Element::message(Message::user("promise?"))],
        )
        .await
        .unwrap();
    let answer = result.response.unwrap();
    assert_eq!(answer.text(), "I can't promise that.");
    assert_eq!(answer.finish_reason, Some(FinishReason::ContentFilter));
    assert_eq!(answer.metadata["guardrail"]["hook"], json!("banned_words"));
    assert_eq!(result.text, "", "nothing of the denied answer was streamed");
}

#[tokio::test]
async fn an_input_guardrail_denies_before_the_model_is_called() {
    let provider = Chunks::new(vec![]);
    let stage = ProviderStage::new(provider.clone()).with_hooks(
        Hooks::new().guardrail(guardrails::pii([PiiKind::PaymentCard]).direction(Direction::Input)),
    );
    let failure = run(stage)
        .execute_sync(
            RunData::default(),
            [Element::message(Message::user(
                "my card is 4111 1111 1111 1111",
            ))],
        )
        .await
        .unwrap_err();
    assert!(
        ErrorChain(&failure).to_string().contains("payment card"),
        "{failure}"
    );
    assert!(provider.requests.lock().unwrap().is_empty());
    assert_eq!(
        failure.partial.messages.len(),
        1,
        "the user's message is kept"
    );
}

#[tokio::test]
async fn output_redaction_rewrites_the_complete_answer() {
    let provider = Chunks::new(vec![Chunks::text(&["Mail jane@example.com for help."])]);
    let config = ProviderStageConfig {
        streaming: false,
        ..ProviderStageConfig::default()
    };
    let stage = ProviderStage::new(provider).with_config(config).with_hooks(
        Hooks::new().guardrail(guardrails::pii([PiiKind::Email]).action(Action::Redact)),
    );
    let result = run(stage)
        .execute_sync(
            RunData::default(),
            [Element::message(Message::user("contact?"))],
        )
        .await
        .unwrap();
    assert_eq!(result.response.unwrap().text(), "Mail [REDACTED] for help.");
}

#[derive(Debug)]
struct SystemSuffix;

impl ProviderHook for SystemSuffix {
    fn name(&self) -> &str {
        "suffix"
    }

    fn before_call<'a>(&'a self, request: &'a mut ProviderRequest) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let system = request.system.take().unwrap_or_default();
            request.system = Some(format!("{system} Answer in French."));
            Decision::Allow
        })
    }
}

#[tokio::test]
async fn a_provider_hook_rewrites_the_request() {
    let provider = Chunks::new(vec![Chunks::text(&["Bonjour"])]);
    let stage =
        ProviderStage::new(provider.clone()).with_hooks(Hooks::new().provider(SystemSuffix));
    run(stage)
        .execute_sync(
            RunData::default().with_system_prompt("Be brief."),
            [Element::message(Message::user("hi"))],
        )
        .await
        .unwrap();
    assert_eq!(
        provider.requests.lock().unwrap()[0].system.as_deref(),
        Some("Be brief. Answer in French.")
    );
}

/// Denies destructive tools; scrubs results.
#[derive(Debug)]
struct ToolPolicy;

impl ToolHook for ToolPolicy {
    fn name(&self) -> &str {
        "tool_policy"
    }

    fn before_execution<'a>(&'a self, call: &'a mut ToolCall) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if call.name.starts_with("delete_") {
                Decision::deny("tool_policy", "destructive tools need a human")
            } else {
                Decision::Allow
            }
        })
    }

    fn after_execution<'a>(
        &'a self,
        _call: &'a ToolCall,
        result: &'a mut ToolResult,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if result.text_content().contains("secret internal") {
                Decision::deny("tool_policy", "result contained internal data")
            } else {
                Decision::Allow
            }
        })
    }
}

#[tokio::test]
async fn tool_hook_decisions_are_honoured() {
    let provider = Chunks::new(vec![
        Chunks::call("delete_account"),
        Chunks::call("lookup"),
        Chunks::text(&["ok"]),
    ]);
    let tools = Arc::new(Tools::default());
    let stage = ProviderStage::new(provider)
        .with_tools(tools.clone())
        .with_hooks(Hooks::new().tool(ToolPolicy));
    let result = run(stage)
        .execute_sync(
            RunData::default(),
            [Element::message(Message::user("clean up"))],
        )
        .await
        .unwrap();
    let results: Vec<&ToolResult> = result
        .messages
        .iter()
        .filter_map(|m| m.tool_result.as_deref())
        .collect();
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Denied));
    assert!(
        results[0]
            .text_content()
            .contains("destructive tools need a human")
    );
    assert_eq!(
        *tools.ran.lock().unwrap(),
        ["lookup"],
        "the denied tool never ran"
    );
    assert_eq!(
        results[1].error_kind,
        Some(ToolErrorKind::Denied),
        "after-execution denial replaces the result"
    );
    assert!(!results[1].text_content().contains("ops@corp.example"));
}
