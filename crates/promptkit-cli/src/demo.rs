//! The offline demo model and its tools, used when no API key is configured.
//!
//! The demo model is rule-based, not a language model: it looks up orders with the
//! `lookup_order` tool when a message mentions an order number, tells the time with
//! `current_time` when asked, reports tool results, and otherwise echoes. It streams its
//! answers word by word, so every part of the runtime (streaming, the tool loop, state) runs
//! for real without a network.

use std::time::Duration;

use promptkit::tools::{FunctionTool, ToolRegistry};
use promptkit::{
    BoxFuture, Capabilities, EventStream, FinishReason, Provider, ProviderError, ProviderRequest,
    ProviderResponse, Role, StreamAccumulator, StreamEvent, ToolCall, Usage,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// The demo model.
#[derive(Debug, Default)]
pub(crate) struct DemoModel;

fn order_number(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() >= 4)
        .map(str::to_owned)
}

impl DemoModel {
    fn answer(request: &ProviderRequest) -> Vec<StreamEvent> {
        let offered = |name: &str| request.tools.iter().any(|t| t.name == name);
        let last = request.messages.last();
        let mut events = Vec::new();
        let mut text = String::new();
        let mut call: Option<ToolCall> = None;
        match last {
            Some(m) if m.role == Role::Tool => {
                let result = m
                    .tool_result
                    .as_ref()
                    .map(|r| (r.name.clone(), r.text_content()))
                    .unwrap_or_default();
                text = format!("The `{}` tool says: {}", result.0, result.1);
            }
            Some(m) => {
                let said = m.text();
                let lower = said.to_lowercase();
                let turn = request
                    .messages
                    .iter()
                    .filter(|m| m.role == Role::User)
                    .count();
                if let (Some(order), true) = (order_number(&said), offered("lookup_order")) {
                    call = Some(ToolCall::new(
                        format!("call_{turn}"),
                        "lookup_order",
                        json!({"order_id": order}),
                    ));
                } else if lower.contains("time") && offered("current_time") {
                    call = Some(ToolCall::new(
                        format!("call_{turn}"),
                        "current_time",
                        json!({}),
                    ));
                } else {
                    let earlier = turn.saturating_sub(1);
                    text = format!(
                        "(offline demo model) You said: \"{said}\". This conversation has {earlier} earlier message(s) from you. \
                         Ask about an order number or the time to see a tool call."
                    );
                }
            }
            None => text = "(offline demo model) Hello!".to_owned(),
        }
        for word in text.split_inclusive(' ') {
            events.push(StreamEvent::TextDelta {
                text: word.to_owned(),
            });
        }
        let reason = if let Some(call) = call {
            events.push(StreamEvent::ToolCallStart {
                index: 0,
                id: call.id.clone(),
                name: call.name.clone(),
                provider_data: Default::default(),
            });
            events.push(StreamEvent::ToolCallDelta {
                index: 0,
                arguments: call.arguments_json(),
            });
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        };
        let input: usize = request
            .messages
            .iter()
            .map(|m| m.text().len() / 4 + 1)
            .sum();
        events.push(StreamEvent::Usage {
            usage: Usage::new(
                u64::try_from(input).unwrap_or(0),
                u64::try_from(text.len() / 4 + 1).unwrap_or(0),
            ),
        });
        events.push(StreamEvent::Finish { reason });
        events
    }
}

impl Provider for DemoModel {
    fn id(&self) -> &str {
        "demo"
    }

    fn model(&self) -> &str {
        "offline-demo"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tools: true,
            ..Capabilities::text()
        }
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let mut acc = StreamAccumulator::new();
            for e in Self::answer(request) {
                acc.push(&e);
            }
            Ok(ProviderResponse {
                message: acc.finish(),
                model: Some("offline-demo".to_owned()),
                served_by: Some("demo".to_owned()),
                latency: Duration::ZERO,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let events = Self::answer(request);
            let stream = futures_util::stream::unfold(events.into_iter(), |mut it| async move {
                let next = it.next()?;
                // Pace the words a little so streaming is visible.
                tokio::time::sleep(Duration::from_millis(15)).await;
                Some((Ok(next), it))
            });
            let stream: EventStream = Box::pin(stream);
            Ok(stream)
        })
    }
}

#[derive(Deserialize, JsonSchema)]
struct LookupOrder {
    /// The order number.
    order_id: String,
}

#[derive(Deserialize, JsonSchema)]
struct NoArgs {}

/// The demo tools: `lookup_order` and `current_time`.
pub(crate) fn demo_tools(registry: &ToolRegistry) {
    registry.register_function(FunctionTool::new(
        "lookup_order",
        "Looks up the status of an order by its number",
        |args: LookupOrder, _ctx| async move {
            Ok::<_, String>(
                json!({"order_id": args.order_id, "status": "shipped", "eta": "2026-04-10"}),
            )
        },
    ));
    registry.register_function(FunctionTool::new(
        "current_time",
        "The current date and time (UTC)",
        |_: NoArgs, _ctx| async move { Ok::<_, String>(promptkit::Timestamp::now().to_string()) },
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use promptkit::Message;

    #[test]
    fn finds_order_numbers() {
        assert_eq!(
            order_number("where is order 12345?"),
            Some("12345".to_owned())
        );
        assert_eq!(order_number("in 2 days"), None);
    }

    #[test]
    fn calls_tools_then_reports_results() {
        let tools = vec![promptkit::ToolDef::new(
            "lookup_order",
            "",
            promptkit::empty_object_schema(),
        )];
        let request =
            ProviderRequest::new(vec![Message::user("status of 4711?")]).with_tools(tools.clone());
        let events = DemoModel::answer(&request);
        assert!(events.iter().any(
            |e| matches!(e, StreamEvent::ToolCallStart { name, .. } if name == "lookup_order")
        ));
        let mut acc = StreamAccumulator::new();
        for e in &events {
            acc.push(e);
        }
        let call_msg = acc.finish();
        let result = promptkit::ToolResult::text("call_1", "lookup_order", "shipped");
        let request = ProviderRequest::new(vec![
            Message::user("status of 4711?"),
            call_msg,
            Message::tool(result),
        ])
        .with_tools(tools);
        let mut acc = StreamAccumulator::new();
        for e in &DemoModel::answer(&request) {
            acc.push(e);
        }
        assert_eq!(acc.finish().text(), "The `lookup_order` tool says: shipped");
    }
}
