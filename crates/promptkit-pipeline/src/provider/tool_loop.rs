//! One turn of the provider stage: model rounds and tool execution.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use promptkit_core::{
    BoxFuture, ContentPart, Message, ProviderError, ProviderRequest, Reasoning, Role,
    StreamAccumulator, StreamEvent, Timestamp, ToolCall, ToolContext, ToolDef, ToolError,
    ToolErrorKind, ToolResult,
};
use tracing::Instrument as _;

use super::{Approval, PENDING_APPROVAL, ProviderStage};
use crate::element::Element;
use crate::events::EventKind;
use crate::hooks::{Decision, OnDeny, Violation};
use crate::stage::{OutputClosed, StageContext, StageOutput};
use crate::turn::name_matches;

/// How a turn ended without error.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LoopOutcome {
    /// The model answered without asking for tools.
    Finished,
    /// A stop-on-tool ran.
    Stopped {
        /// The tool.
        tool: String,
    },
    /// Calls wait for approval; resume the turn with decisions in
    /// [`TurnData::approvals`](crate::TurnData::approvals).
    Pending(Vec<ToolCall>),
    /// A hook denied the call and the configured replacement answer was given.
    Blocked(Violation),
}

/// Why a turn failed. The messages produced before the failure were already forwarded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The model call failed.
    #[error("model call failed: {0}")]
    Provider(#[source] ProviderError),
    /// The tool set could not list its tools.
    #[error("tools unavailable: {0}")]
    Tools(#[source] ToolError),
    /// The model kept asking for tools past the round limit.
    #[error(
        "turn stopped after {0} model calls (max_rounds) while the model still asked for tools"
    )]
    MaxRounds(u32),
    /// The turn's (or the conversation's) cost passed its budget.
    #[error("cost budget of ${budget:.4} exceeded: ${spent:.4} spent")]
    CostBudget {
        /// The budget.
        budget: f64,
        /// Spent so far (history included).
        spent: f64,
    },
    /// The model kept repeating an identical call after being told to stop.
    #[error(
        "tool `{tool}` was called with the same arguments {count} times, again after a warning"
    )]
    ToolLoop {
        /// The tool.
        tool: String,
        /// How often.
        count: u32,
    },
    /// A hook or guardrail denied the model call or its answer.
    #[error("denied by {0}")]
    Denied(Violation),
    /// Downstream stopped receiving.
    #[error("output closed")]
    Output(#[source] OutputClosed),
}

impl From<OutputClosed> for TurnError {
    fn from(e: OutputClosed) -> Self {
        Self::Output(e)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Calls in the last assistant message that have no tool result after it.
fn unanswered_calls(conversation: &[Message]) -> Vec<ToolCall> {
    let Some(pos) = conversation.iter().rposition(|m| m.role == Role::Assistant) else {
        return Vec::new();
    };
    let answered: HashSet<&str> = conversation[pos + 1..]
        .iter()
        .filter_map(|m| m.tool_result.as_ref().map(|r| r.call_id.as_str()))
        .collect();
    conversation[pos]
        .tool_calls
        .iter()
        .filter(|c| !answered.contains(c.id.as_str()))
        .cloned()
        .collect()
}

/// A round's request, and whether it borrows the conversation and the tool definitions
/// (moved back once the call is over).
struct RoundRequest {
    request: ProviderRequest,
    lent_conversation: bool,
    lent_tools: bool,
}

fn identity_key(call: &ToolCall) -> Vec<u8> {
    // serde_json's map is ordered, so re-serialising canonicalises key order. Written
    // directly rather than through `format!`, which runs every byte through the formatter.
    let mut key = Vec::with_capacity(call.name.len() + 64);
    key.extend_from_slice(call.name.as_bytes());
    key.push(0);
    // Writing into memory cannot fail; a key without its arguments would only be coarser.
    let _ = serde_json::to_writer(&mut key, &call.arguments);
    key
}

impl ProviderStage {
    /// Runs one turn over `conversation`, appending and forwarding every message it produces.
    pub(super) async fn turn(
        &self,
        cx: &StageContext,
        conversation: &mut Vec<Message>,
        approvals: &BTreeMap<String, Approval>,
        output: &StageOutput,
    ) -> Result<LoopOutcome, TurnError> {
        let config = &self.config;
        let mut definitions: Vec<ToolDef> = match &self.tools {
            Some(tools) => cx
                .busy(tools.definitions())
                .await
                .map_err(TurnError::Tools)?,
            None => Vec::new(),
        };
        // A stable order keeps the request prefix identical across calls (prompt caching).
        definitions.sort_by(|a, b| a.name.cmp(&b.name));
        definitions.dedup_by(|a, b| a.name == b.name);

        // Resume a turn left with calls waiting for approval. Boxed: it is rare, and its state
        // would otherwise sit in every turn's.
        let unanswered = unanswered_calls(conversation);
        if !unanswered.is_empty()
            && let Some(outcome) =
                Box::pin(self.resume(cx, conversation, approvals, output, unanswered)).await?
        {
            return Ok(outcome);
        }

        let history_cost: f64 = conversation
            .iter()
            .filter_map(|m| m.cost.map(|c| c.total_usd))
            .sum();
        let mut spent = 0.0;
        let mut tool_choice = config.tool_choice.clone();
        let mut failures: HashMap<String, u32> = HashMap::new();
        let mut excluded: HashSet<String> = HashSet::new();
        let mut identical: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut warned = false;

        for _round in 0..config.max_rounds {
            cx.heartbeat();
            // Scoped so that the request and the reply are not part of the turn's state
            // while the tools run: only what outlives a round is kept across its awaits.
            let calls = {
                let called = {
                    let RoundRequest {
                        mut request,
                        lent_conversation,
                        lent_tools,
                    } = self.round_request(
                        cx,
                        conversation,
                        &mut definitions,
                        &excluded,
                        &tool_choice,
                    );
                    if let Decision::Deny(v) = self.hooks.before_call(&mut request).await {
                        return self.deny(conversation, output, v).await;
                    }
                    let called = self.call_model(cx, &request, output).await;
                    if lent_conversation {
                        *conversation = std::mem::take(&mut request.messages);
                    }
                    if lent_tools {
                        definitions = std::mem::take(&mut request.tools);
                    }
                    called
                };
                let mut message = match called {
                    Err(TurnError::Denied(v)) => {
                        return self.deny(conversation, output, v).await;
                    }
                    other => other?,
                };
                if let Decision::Deny(v) = self.hooks.after_call(&mut message).await {
                    return self.deny(conversation, output, v).await;
                }
                spent += message.cost.map_or(0.0, |c| c.total_usd);
                let calls = message.tool_calls.clone();
                self.push(conversation, output, message).await?;
                calls
            };

            if let Some(budget) = config.max_cost_usd
                && spent > budget
            {
                return Err(TurnError::CostBudget { budget, spent });
            }
            if let Some(budget) = config.max_conversation_cost_usd
                && history_cost + spent > budget
            {
                return Err(TurnError::CostBudget {
                    budget,
                    spent: history_cost + spent,
                });
            }
            if calls.is_empty() {
                return Ok(LoopOutcome::Finished);
            }

            // Split: calls held for approval, calls repeated too often, calls to run.
            let mut pending = Vec::new();
            let mut results: Vec<Option<ToolResult>> = vec![None; calls.len()];
            let mut to_run = Vec::new();
            let mut looping: Option<(String, u32)> = None;
            for (i, call) in calls.iter().enumerate() {
                if self
                    .approval
                    .as_ref()
                    .is_some_and(|p| p.requires_approval(call))
                {
                    pending.push(call.clone());
                    continue;
                }
                let count = identical.entry(identity_key(call)).or_insert(0);
                *count += 1;
                if *count >= config.max_identical_tool_calls {
                    looping = Some((call.name.clone(), *count));
                    results[i] = Some(ToolResult::error(
                        call.id.clone(),
                        call.name.clone(),
                        ToolErrorKind::Denied,
                        format!(
                            "This call was skipped: `{}` was called {} times with the same arguments. \
                             Change the arguments or answer without this tool.",
                            call.name, count
                        ),
                    ));
                } else {
                    to_run.push((i, call));
                }
            }
            if let Some((tool, count)) = looping {
                if warned {
                    return Err(TurnError::ToolLoop { tool, count });
                }
                warned = true;
            }
            let executed = self
                .execute_all(cx, to_run.iter().map(|(_, c)| *c).collect())
                .await;
            for ((i, _), result) in to_run.into_iter().zip(executed) {
                results[i] = Some(result);
            }
            // Each result is handed over before its send is awaited, so no result is part of
            // the turn's state (nor `flatten`'s two, as a `for` over it would keep).
            let mut results = results.into_iter();
            loop {
                let sent = {
                    let Some(slot) = results.next() else { break };
                    let Some(result) = slot else { continue };
                    if result.is_error {
                        let n = failures.entry(result.name.clone()).or_insert(0);
                        *n += 1;
                        if *n >= config.exclude_after_failures {
                            excluded.insert(result.name.clone());
                        }
                    }
                    self.push_result(conversation, output, result)
                };
                sent.await?;
            }
            if !pending.is_empty() {
                return Self::hold_for_approval(output, pending).await;
            }
            tool_choice = promptkit_core::ToolChoice::Auto;
            if let Some(call) = calls
                .iter()
                .find(|c| config.stop_on_tools.iter().any(|t| t == &c.name))
            {
                return Ok(LoopOutcome::Stopped {
                    tool: call.name.clone(),
                });
            }
        }
        Err(TurnError::MaxRounds(config.max_rounds))
    }

    /// Builds a round's request from the turn's data, the conversation and the tool
    /// definitions (less those `excluded`).
    fn round_request(
        &self,
        cx: &StageContext,
        conversation: &mut Vec<Message>,
        definitions: &mut Vec<ToolDef>,
        excluded: &HashSet<String>,
        tool_choice: &promptkit_core::ToolChoice,
    ) -> RoundRequest {
        let config = &self.config;
        let (system, model, allowed) = {
            let turn = cx.turn().read();
            (
                turn.system_prompt.clone(),
                turn.model.clone(),
                turn.allowed_tools.clone(),
            )
        };
        let offers = |d: &ToolDef| {
            !excluded.contains(&d.name)
                && allowed
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|p| name_matches(p, &d.name)))
        };
        // The request borrows the conversation and the tool definitions for the call: moved
        // in and back, rather than cloned every round (a long history is most of a request,
        // and a tool's schema is a tree of small allocations). Only when nothing can rewrite
        // them on the way: no provider hook; for the conversation, no system message for
        // `lift_system_messages` to take out; for the tools, every tool offered.
        let unhooked = self.hooks.provider.is_empty();
        let lend = unhooked && !conversation.iter().any(|m| m.role == Role::System);
        let lend_tools = unhooked
            && *tool_choice != promptkit_core::ToolChoice::None
            && definitions.iter().all(offers);
        let offered: Vec<ToolDef> = if lend_tools {
            std::mem::take(definitions)
        } else if *tool_choice == promptkit_core::ToolChoice::None {
            Vec::new()
        } else {
            definitions.iter().filter(|d| offers(d)).cloned().collect()
        };
        let messages = if lend {
            std::mem::take(conversation)
        } else {
            conversation.clone()
        };
        let mut request = ProviderRequest::new(messages);
        request.system = system;
        request.tool_choice = if offered.is_empty() {
            promptkit_core::ToolChoice::Auto
        } else {
            tool_choice.clone()
        };
        request.tools = offered;
        request.model = model;
        request.temperature = config.request.temperature;
        request.top_p = config.request.top_p;
        request.max_tokens = config.request.max_tokens;
        request.seed = config.request.seed;
        request.stop.clone_from(&config.request.stop);
        request
            .response_format
            .clone_from(&config.request.response_format);
        request.lift_system_messages();
        RoundRequest {
            request,
            lent_conversation: lend,
            lent_tools: lend_tools,
        }
    }

    /// Runs or denies the calls of the last assistant message that waited for approval, as
    /// `approvals` decides. `Some` when the turn ends here (calls still waiting).
    async fn resume(
        &self,
        cx: &StageContext,
        conversation: &mut Vec<Message>,
        approvals: &BTreeMap<String, Approval>,
        output: &StageOutput,
        unanswered: Vec<ToolCall>,
    ) -> Result<Option<LoopOutcome>, TurnError> {
        let mut still_pending = Vec::new();
        let mut runnable = Vec::new();
        let mut results: Vec<(usize, ToolResult)> = Vec::new();
        for (i, call) in unanswered.iter().enumerate() {
            match approvals.get(&call.id) {
                Some(Approval::Approved) => runnable.push((i, call)),
                Some(Approval::Denied { reason }) => results.push((
                    i,
                    ToolResult::error(
                        call.id.clone(),
                        call.name.clone(),
                        ToolErrorKind::Denied,
                        format!("The user denied this call: {reason}"),
                    ),
                )),
                None => still_pending.push(call.clone()),
            }
        }
        let executed = self
            .execute_all(cx, runnable.iter().map(|(_, c)| *c).collect())
            .await;
        results.extend(runnable.into_iter().map(|(i, _)| i).zip(executed));
        results.sort_by_key(|(i, _)| *i);
        for (_, result) in results {
            self.push_result(conversation, output, result).await?;
        }
        if !still_pending.is_empty() {
            return Self::hold_for_approval(output, still_pending)
                .await
                .map(Some);
        }
        Ok(None)
    }

    /// Ends the turn for a denial: a typed error, or the configured replacement answer.
    /// Boxed: denials are rare, and the turn awaits this from three places, each of which
    /// would otherwise hold its state.
    fn deny<'a>(
        &'a self,
        conversation: &'a mut Vec<Message>,
        output: &'a StageOutput,
        violation: Violation,
    ) -> BoxFuture<'a, Result<LoopOutcome, TurnError>> {
        Box::pin(async move {
            tracing::info!(hook = %violation.hook, reason = %violation.reason, "model call denied");
            match &self.hooks.on_deny {
                OnDeny::Fail => Err(TurnError::Denied(violation)),
                OnDeny::Replace(text) => {
                    let mut message =
                        Message::assistant(text.clone()).with_created_at(Timestamp::now());
                    message.finish_reason = Some(promptkit_core::FinishReason::ContentFilter);
                    message.metadata.insert(
                        "guardrail".to_owned(),
                        serde_json::json!({"hook": violation.hook, "reason": violation.reason}),
                    );
                    self.push(conversation, output, message).await?;
                    Ok(LoopOutcome::Blocked(violation))
                }
            }
        })
    }

    /// Appends and forwards a tool result message.
    fn push_result<'o>(
        &self,
        conversation: &mut Vec<Message>,
        output: &'o StageOutput,
        result: ToolResult,
    ) -> impl Future<Output = Result<(), OutputClosed>> + Send + 'o {
        self.push(
            conversation,
            output,
            Message::tool(result).with_created_at(Timestamp::now()),
        )
    }

    /// Forwards each call waiting for approval (marked [`PENDING_APPROVAL`]) and ends the turn.
    async fn hold_for_approval(
        output: &StageOutput,
        calls: Vec<ToolCall>,
    ) -> Result<LoopOutcome, TurnError> {
        for call in &calls {
            output
                .send(Element::tool_call(call.clone()).with_attribute(PENDING_APPROVAL, true))
                .await?;
        }
        Ok(LoopOutcome::Pending(calls))
    }

    /// Appends `message` to the conversation and sends it downstream, returning what is left
    /// to await (nothing, unless the channel is full). Not an `async fn`: the turn's state
    /// then holds neither the message nor its element.
    fn push<'o>(
        &self,
        conversation: &mut Vec<Message>,
        output: &'o StageOutput,
        message: Message,
    ) -> impl Future<Output = Result<(), OutputClosed>> + Send + 'o {
        conversation.push(message.clone());
        let finish = message.finish_reason.clone();
        let mut element = Element::message(message).with_source(Arc::clone(&self.name));
        element.meta.finish_reason = finish;
        output.send_now(element)
    }

    /// One model call; streams deltas downstream when streaming. Returns the assistant message
    /// with usage, cost, finish reason, timestamp and latency.
    async fn call_model(
        &self,
        cx: &StageContext,
        request: &ProviderRequest,
        output: &StageOutput,
    ) -> Result<Message, TurnError> {
        let provider = &self.provider;
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| provider.model().to_owned());
        cx.events().emit_with(|| EventKind::ProviderCallStarted {
            provider: provider.id().to_owned(),
            model: model.clone(),
            messages: request.messages.len(),
            tools: request.tools.len(),
        });
        let started = Instant::now();
        let span = tracing::info_span!(
            "gen_ai.chat",
            gen_ai.system = provider.id(),
            gen_ai.request.model = %model,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
        );
        let result = async {
            if self.config.streaming {
                self.stream_round(cx, request, output).await
            } else {
                cx.busy(provider.predict(request))
                    .await
                    .map(|r| r.message)
                    .map_err(TurnError::Provider)
            }
        }
        .instrument(span.clone())
        .await;
        let duration = started.elapsed();
        let mut message = match result {
            Ok(m) => m,
            Err(e) => {
                cx.events().emit_with(|| EventKind::ProviderCallFailed {
                    provider: provider.id().to_owned(),
                    model: model.clone(),
                    error: e.to_string(),
                    duration_ms: millis(duration),
                });
                return Err(e);
            }
        };
        message.role = Role::Assistant;
        message.created_at.get_or_insert_with(Timestamp::now);
        message.latency_ms.get_or_insert(millis(duration));
        if message.cost.is_none()
            && let Some(usage) = &message.usage
        {
            message.cost = provider.cost(&model, usage);
        }
        if let Some(u) = &message.usage {
            if let Some(n) = u.input_tokens {
                span.record("gen_ai.usage.input_tokens", n);
            }
            if let Some(n) = u.output_tokens {
                span.record("gen_ai.usage.output_tokens", n);
            }
        }
        cx.events().emit_with(|| EventKind::ProviderCallCompleted {
            provider: provider.id().to_owned(),
            model,
            duration_ms: millis(duration),
            usage: message.usage,
            cost: message.cost,
            finish_reason: message.finish_reason.clone(),
            tool_calls: message.tool_calls.len(),
        });
        Ok(message)
    }

    async fn stream_round(
        &self,
        cx: &StageContext,
        request: &ProviderRequest,
        output: &StageOutput,
    ) -> Result<Message, TurnError> {
        let mut stream = cx
            .busy(self.provider.stream(request))
            .await
            .map_err(TurnError::Provider)?;
        let mut acc = StreamAccumulator::new();
        let intercepted = !self.hooks.chunk.is_empty();
        let mut so_far = String::new();
        // Waiting on the model is outside work: the stage stays marked busy for the whole
        // stream, except while it waits for room downstream (see the send below).
        let mut busy = cx.mark_busy();
        loop {
            // The event becomes its element before the send is awaited, so that the event is
            // not held in this future's state across that await.
            let element = {
                let Some(event) = stream.next().await else {
                    break;
                };
                let event = event.map_err(TurnError::Provider)?;
                // The accumulator copies what it keeps; the delta's own text then moves on
                // into the element, so a streamed piece of text is allocated once after
                // decoding.
                acc.push(&event);
                match event {
                    StreamEvent::TextDelta { text } if !text.is_empty() => {
                        if intercepted {
                            so_far.push_str(&text);
                            // Interceptors see the chunk before anything downstream does.
                            if let Decision::Deny(v) = self.hooks.on_chunk(&so_far, &text) {
                                return Err(TurnError::Denied(v));
                            }
                        }
                        Element::text(text)
                    }
                    StreamEvent::ReasoningDelta { text } if !text.is_empty() => {
                        Element::part(ContentPart::Reasoning(Reasoning {
                            text: Some(text),
                            ..Reasoning::default()
                        }))
                    }
                    StreamEvent::Reset => {
                        so_far.clear();
                        tracing::warn!(stage = %cx.name(), "provider restarted its stream; deltas already forwarded are not retracted");
                        continue;
                    }
                    _ => continue,
                }
            };
            let mut element = element.with_source(Arc::clone(&self.name));
            element.meta.streaming_delta = true;
            // With room in the one target's channel a send is no wait, and the stage stays busy
            // on its model stream. Otherwise (a full channel; with several targets, every
            // send) the wait comes back boxed, and it is a wait on the pipeline, which the
            // run's idle timeout must see: the busy mark is lifted for it.
            if let Some(wait) = output.start_send(element)? {
                drop(busy);
                let sent = wait.await;
                busy = cx.mark_busy();
                sent?;
            }
        }
        drop(busy);
        if !acc.is_finished() {
            return Err(TurnError::Provider(ProviderError::StreamTruncated {
                message: "the stream ended without a finish event".to_owned(),
            }));
        }
        Ok(acc.finish())
    }

    /// Runs calls in parallel (bounded), returning results in call order. Never fails: every
    /// problem becomes an error result for the model.
    async fn execute_all(&self, cx: &StageContext, calls: Vec<&ToolCall>) -> Vec<ToolResult> {
        // The common case, one call, needs none of the ordered-buffering machinery (a queue
        // and a reference-counted waker per call).
        if let [call] = calls[..] {
            return vec![cx.busy(self.execute_one(cx, call)).await];
        }
        let limit = self.config.max_parallel_tool_calls.max(1);
        // Collected first: a lazy `map` over borrowed calls, held across the await, trips the
        // compiler's `Send` check on higher-ranked lifetimes.
        let runs: Vec<_> = calls
            .into_iter()
            .map(|call| self.execute_one(cx, call))
            .collect();
        let runs = futures_util::stream::iter(runs)
            .buffered(limit)
            .collect::<Vec<_>>();
        cx.busy(runs).await
    }

    async fn execute_one(&self, cx: &StageContext, call: &ToolCall) -> ToolResult {
        // The allow-list is enforced here, not only when tools are offered.
        if !cx.turn().tool_allowed(&call.name) {
            return ToolError::NotAllowed {
                name: call.name.clone(),
            }
            .to_result(call);
        }
        let Some(tools) = &self.tools else {
            return ToolError::UnknownTool {
                name: call.name.clone(),
            }
            .to_result(call);
        };
        let original = call;
        // A copy only when a hook may rewrite the call.
        let mut rewritten = None;
        if !self.hooks.tool.is_empty() {
            let copy = rewritten.insert(call.clone());
            if let Decision::Deny(v) = self.hooks.before_execution(copy).await {
                return ToolError::Denied {
                    name: call.name.clone(),
                    reason: v.to_string(),
                }
                .to_result(call);
            }
        }
        let call = rewritten.as_ref().unwrap_or(original);
        cx.events()
            .emit_with(|| EventKind::ToolCallStarted { call: call.clone() });
        let started = Instant::now();
        let timeout = self.config.tool_timeout;
        let ctx = {
            let turn = cx.turn().read();
            ToolContext {
                deadline: Some(Instant::now() + timeout),
                session_id: turn.session_id.clone(),
                user_id: turn.user_id.clone(),
                metadata: turn.metadata.clone(),
            }
        };
        let span = tracing::info_span!("gen_ai.execute_tool", gen_ai.tool.name = %call.name, gen_ai.tool.call.id = %call.id);
        let run = tools.execute(call, &ctx).instrument(span);
        // A tool set that ends its calls by the deadline needs no second timer here.
        let ran = if tools.enforces_deadline() {
            Ok(run.await)
        } else {
            tokio::time::timeout(timeout, run).await
        };
        let mut result = match ran {
            Err(_) => ToolError::Timeout {
                name: call.name.clone(),
                elapsed: started.elapsed(),
            }
            .to_result(call),
            Ok(Err(e)) => e.to_result(call),
            Ok(Ok(r)) => r,
        };
        if let Decision::Deny(v) = self.hooks.after_execution(call, &mut result).await {
            result = ToolError::Denied {
                name: call.name.clone(),
                reason: v.to_string(),
            }
            .to_result(call);
        }
        // The result answers the model's call, whatever the executor or hooks wrote.
        result.call_id.clone_from(&original.id);
        result.name.clone_from(&original.name);
        cx.events().emit_with(|| EventKind::ToolCallCompleted {
            call_id: call.id.clone(),
            name: call.name.clone(),
            duration_ms: millis(started.elapsed()),
            is_error: result.is_error,
        });
        result
    }
}
