//! One turn of the provider stage: model rounds and tool execution.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use promptkit_core::{
    BoxFuture, ContentPart, FinishReason, Message, ProviderError, ProviderRequest, Reasoning, Role,
    StreamAccumulator, StreamEvent, Timestamp, ToolCall, ToolChoice, ToolContext, ToolDef,
    ToolError, ToolErrorKind, ToolResult,
};
use tracing::Instrument as _;

use super::{
    Approval, PENDING_APPROVAL, PENDING_APPROVAL_METADATA, ProviderStage, Settle, ToolInterruption,
};
use crate::context::StageContext;
use crate::element::Element;
use crate::events::{Emitter, EventKind};
use crate::hooks::{Decision, OnDeny, Violation};
use crate::output::{OutputClosed, StageOutput, TrySendError};
use crate::stage::StageError;

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
    /// Calls wait for approval; resume the turn with decisions in an
    /// [`Approvals`](super::Approvals) extension.
    Pending(Vec<ToolCall>),
    /// A hook denied the call and the configured replacement answer was given.
    Blocked(Violation),
    /// The run was interrupted during the turn: what was said is kept, cut to what was heard.
    Interrupted,
}

/// Why a turn failed. The messages produced before the failure were already forwarded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The model call failed.
    #[error("model call failed")]
    Provider(#[source] ProviderError),
    /// The tool set could not list its tools.
    #[error("tools unavailable")]
    Tools(#[source] ToolError),
    /// The model kept asking for tools past the round limit.
    #[error("the model still asked for tools after {0} model calls (max_rounds)")]
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
    #[error("could not send downstream")]
    Output(#[source] OutputClosed),
}

impl From<OutputClosed> for TurnError {
    fn from(e: OutputClosed) -> Self {
        Self::Output(e)
    }
}

impl From<TurnError> for StageError {
    /// The turn's message, with the turn's cause as the source (not the turn error itself,
    /// whose message would then appear twice in the chain).
    fn from(e: TurnError) -> Self {
        match e {
            TurnError::Provider(cause) => Self::with_source("model call failed", cause),
            TurnError::Tools(cause) => Self::with_source("tools unavailable", cause),
            TurnError::Output(cause) => cause.into(),
            // The turn error itself is the cause, so callers can tell a budget or a round
            // limit from a failure (serve answers a budget with a 400).
            other => Self::with_source("the turn was stopped", other),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a turn works with besides the conversation: where its output goes, how it is
/// stamped, and (in a live run) the interrupt it watches for.
pub(super) struct Scope<'a> {
    pub(super) cx: &'a StageContext,
    pub(super) output: &'a StageOutput,
    /// The turn everything is stamped with.
    pub(super) turn_id: u64,
    /// The run's interrupt epoch when the turn started; deltas carry it.
    pub(super) epoch: u64,
    /// Events of the turn, stamped with its id.
    pub(super) events: Emitter,
    /// Whether an interrupt ends the turn (live runs); unary turns ignore interrupts (their
    /// stale deltas are still dropped downstream).
    pub(super) interruptible: bool,
    /// Whether the final answer is held for the caller to settle, not forwarded.
    pub(super) hold_answer: bool,
}

impl<'a> Scope<'a> {
    pub(super) fn new(
        cx: &'a StageContext,
        output: &'a StageOutput,
        turn_id: u64,
        interruptible: bool,
        settle: Settle,
    ) -> Self {
        Self {
            cx,
            output,
            turn_id,
            epoch: cx.run().epoch(),
            events: cx.events().with_turn(Some(turn_id)),
            interruptible,
            hold_answer: interruptible && settle == Settle::AfterPlayback,
        }
    }

    /// Whether the run was interrupted since the turn started.
    fn interrupted(&self) -> bool {
        self.interruptible && self.cx.run().epoch() > self.epoch
    }

    /// Runs `fut` until it completes, or, in an interruptible turn, until the run is
    /// interrupted (`None`; `fut` is dropped).
    async fn unless_interrupted<F: Future>(&self, fut: F) -> Option<F::Output> {
        if !self.interruptible {
            return Some(fut.await);
        }
        if self.interrupted() {
            return None;
        }
        tokio::select! {
            biased;
            _ = self.cx.run().interrupted_after(self.epoch) => None,
            output = fut => Some(output),
        }
    }
}

/// How a turn ended, and the final answer when the turn held it back (see
/// [`Settle::AfterPlayback`]).
#[derive(Debug)]
pub(super) struct TurnEnd {
    pub(super) outcome: LoopOutcome,
    pub(super) held: Option<Message>,
}

impl From<LoopOutcome> for TurnEnd {
    fn from(outcome: LoopOutcome) -> Self {
        Self {
            outcome,
            held: None,
        }
    }
}

/// How one model call ended.
enum Round {
    /// The complete assistant message.
    Answer(Message),
    /// The run was interrupted: what had been said.
    Interrupted(Message),
    /// A chunk interceptor denied the answer.
    Denied(Violation),
    /// The call failed, perhaps after some text was streamed.
    Failed {
        error: TurnError,
        partial: Option<Message>,
    },
}

/// The per-turn guards of the tool loop.
struct Guards {
    /// Cost of this turn's model calls.
    spent: f64,
    /// Cost recorded on the history before the turn.
    history_cost: f64,
    /// Failures per tool.
    failures: HashMap<String, u32>,
    /// Tools no longer offered after repeated failures.
    excluded: HashSet<String>,
    /// How often each (tool, arguments) was called.
    identical: HashMap<(String, String), u32>,
    /// Whether the model was told to stop repeating a call.
    warned: bool,
    /// The tool choice of the next round.
    tool_choice: ToolChoice,
}

/// Calls in the last assistant message that have no tool result after it.
pub(super) fn unanswered_calls(conversation: &[Message]) -> Vec<ToolCall> {
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

/// The ids of the last assistant message's calls that were held for approval.
fn held_for_approval(conversation: &[Message]) -> HashSet<String> {
    conversation
        .iter()
        .rfind(|m| m.role == Role::Assistant)
        .and_then(|m| m.metadata.get(PENDING_APPROVAL_METADATA))
        .and_then(|ids| ids.as_array())
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A round's request, borrowing the conversation and the tool definitions when nothing can
/// rewrite them on the way: they are moved into the request and moved back when this guard
/// is dropped, on every path. A long conversation is most of a request, and a copy per
/// round is exactly the quadratic cost a long session cannot afford.
struct Lent<'a> {
    conversation: &'a mut Vec<Message>,
    definitions: &'a mut Vec<ToolDef>,
    request: ProviderRequest,
    messages_lent: bool,
    tools_lent: bool,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if self.messages_lent {
            *self.conversation = std::mem::take(&mut self.request.messages);
        }
        if self.tools_lent {
            *self.definitions = std::mem::take(&mut self.request.tools);
        }
    }
}

impl ProviderStage {
    /// Applies what the history's unanswered tool calls need before the turn goes on: runs
    /// or denies those with approval decisions, denies those held for approval when the
    /// conversation moved on without a decision (`new_message`), and closes every other one
    /// (a call left by a turn that was cancelled or crashed) with an "interrupted" result, so
    /// that no session is ever stuck on a call without a result. Returns the calls still
    /// waiting for approval.
    pub(super) async fn settle_history(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
        approvals: &BTreeMap<String, Approval>,
        new_message: bool,
    ) -> Result<Vec<ToolCall>, TurnError> {
        let unanswered = unanswered_calls(conversation);
        if unanswered.is_empty() {
            return Ok(Vec::new());
        }
        let held = held_for_approval(conversation);
        let mut still_pending = Vec::new();
        let mut runnable = Vec::new();
        let mut results: Vec<(usize, ToolResult)> = Vec::new();
        for (i, call) in unanswered.iter().enumerate() {
            let closed = |kind, text: &str| {
                ToolResult::error(call.id.clone(), call.name.clone(), kind, text.to_owned())
            };
            match approvals.get(&call.id) {
                Some(Approval::Approved) => runnable.push((i, call)),
                Some(Approval::Denied { reason }) => results.push((
                    i,
                    closed(
                        ToolErrorKind::Denied,
                        &format!("The user denied this call: {reason}"),
                    ),
                )),
                None if held.contains(&call.id) && !new_message => {
                    still_pending.push(call.clone());
                }
                None if held.contains(&call.id) => results.push((
                    i,
                    closed(
                        ToolErrorKind::Denied,
                        "This call was not run: the conversation went on before anyone approved it.",
                    ),
                )),
                None => results.push((
                    i,
                    closed(
                        ToolErrorKind::Interrupted,
                        "This call never completed: the turn it belonged to was interrupted.",
                    ),
                )),
            }
        }
        if !runnable.is_empty() {
            let calls: Vec<&ToolCall> = runnable.iter().map(|(_, c)| *c).collect();
            let (executed, _) = self
                .execute_calls(scope, &calls, &HashSet::new(), false)
                .await;
            results.extend(
                runnable
                    .iter()
                    .map(|(i, _)| *i)
                    .zip(executed.into_iter().flatten()),
            );
        }
        results.sort_by_key(|(i, _)| *i);
        for (_, result) in results {
            self.push_result(scope, conversation, result).await?;
        }
        Ok(still_pending)
    }

    /// Runs one turn over `conversation`, appending and forwarding every message it produces.
    pub(super) async fn turn(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
    ) -> Result<TurnEnd, TurnError> {
        let still_pending = unanswered_calls(conversation);
        if !still_pending.is_empty() {
            // Only calls held for approval can be left here (see `settle_history`).
            return self
                .hold_for_approval(scope, still_pending)
                .await
                .map(Into::into);
        }
        let mut definitions = self.definitions(scope.cx).await?;
        let mut guards = Guards {
            spent: 0.0,
            history_cost: if self.config.max_conversation_cost_usd.is_some() {
                conversation
                    .iter()
                    .filter_map(|m| m.cost.map(|c| c.total_usd))
                    .sum()
            } else {
                0.0
            },
            failures: HashMap::new(),
            excluded: HashSet::new(),
            identical: HashMap::new(),
            warned: false,
            tool_choice: self.config.tool_choice.clone(),
        };
        for _round in 0..self.config.max_rounds {
            scope.cx.heartbeat();
            let (round, withheld) = self
                .round(scope, conversation, &mut definitions, &guards)
                .await;
            let mut message = match round {
                Round::Answer(message) => message,
                Round::Interrupted(partial) => {
                    self.keep_interrupted(scope, conversation, partial).await?;
                    return Ok(LoopOutcome::Interrupted.into());
                }
                Round::Denied(violation) => {
                    return self
                        .deny(scope, conversation, violation)
                        .await
                        .map(Into::into);
                }
                Round::Failed { error, partial } => {
                    if let Some(partial) = partial {
                        self.push(scope, conversation, partial).await?;
                    }
                    return Err(error);
                }
            };
            if let Decision::Deny(violation) = self.hooks.after_call(&mut message).await {
                return self
                    .deny(scope, conversation, violation)
                    .await
                    .map(Into::into);
            }
            guards.spent += message.cost.map_or(0.0, |c| c.total_usd);
            if message.tool_calls.is_empty() {
                if scope.hold_answer {
                    return Ok(TurnEnd {
                        outcome: LoopOutcome::Finished,
                        held: Some(message),
                    });
                }
                self.push(scope, conversation, message).await?;
                self.check_budget(&guards)?;
                return Ok(LoopOutcome::Finished.into());
            }
            let calls = message.tool_calls.clone();
            let pending: Vec<ToolCall> = calls
                .iter()
                .filter(|c| {
                    self.approval
                        .as_ref()
                        .is_some_and(|p| p.requires_approval(c))
                })
                .cloned()
                .collect();
            if !pending.is_empty() {
                let ids = pending.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
                message
                    .metadata
                    .insert(PENDING_APPROVAL_METADATA.to_owned(), ids.into());
            }
            self.push(scope, conversation, message).await?;
            if let Err(error) = self.check_budget(&guards) {
                self.close_calls(
                    scope,
                    conversation,
                    &calls,
                    "its turn's cost budget ran out",
                )
                .await?;
                return Err(error);
            }
            if let Some(outcome) = self
                .run_calls(
                    scope,
                    conversation,
                    &calls,
                    &pending,
                    &withheld,
                    &mut guards,
                )
                .await?
            {
                return Ok(outcome.into());
            }
        }
        Err(TurnError::MaxRounds(self.config.max_rounds))
    }

    /// The tool definitions the set offers, sorted by name and without duplicates, so the
    /// request prefix stays identical across calls (prompt caching).
    async fn definitions(&self, cx: &StageContext) -> Result<Vec<ToolDef>, TurnError> {
        let Some(tools) = &self.tools else {
            return Ok(Vec::new());
        };
        let mut definitions = cx
            .busy(tools.definitions())
            .await
            .map_err(TurnError::Tools)?;
        definitions.sort_by(|a, b| a.name.cmp(&b.name));
        definitions.dedup_by(|a, b| a.name == b.name);
        Ok(definitions)
    }

    fn check_budget(&self, guards: &Guards) -> Result<(), TurnError> {
        if let Some(budget) = self.config.max_cost_usd
            && guards.spent > budget
        {
            return Err(TurnError::CostBudget {
                budget,
                spent: guards.spent,
            });
        }
        if let Some(budget) = self.config.max_conversation_cost_usd
            && guards.history_cost + guards.spent > budget
        {
            return Err(TurnError::CostBudget {
                budget,
                spent: guards.history_cost + guards.spent,
            });
        }
        Ok(())
    }

    /// One model call: builds the request (see [`Lent`]), runs the provider hooks and calls
    /// the model. Also returns the names of the tools the set has but the request did not
    /// offer, whose calls are refused.
    async fn round(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
        definitions: &mut Vec<ToolDef>,
        guards: &Guards,
    ) -> (Round, HashSet<String>) {
        let mut lent = self.round_request(scope.cx, conversation, definitions, guards);
        let withheld = if lent.tools_lent {
            HashSet::new()
        } else {
            let offered: HashSet<&str> =
                lent.request.tools.iter().map(|t| t.name.as_str()).collect();
            lent.definitions
                .iter()
                .filter(|d| !offered.contains(d.name.as_str()))
                .map(|d| d.name.clone())
                .collect()
        };
        if let Decision::Deny(violation) = self.hooks.before_call(&mut lent.request).await {
            return (Round::Denied(violation), withheld);
        }
        let round = self.call_model(scope, &lent.request).await;
        (round, withheld)
    }

    /// Builds a round's request from the run's data, the conversation and the tool
    /// definitions (less those excluded, and none under `ToolChoice::None`).
    fn round_request<'a>(
        &self,
        cx: &StageContext,
        conversation: &'a mut Vec<Message>,
        definitions: &'a mut Vec<ToolDef>,
        guards: &Guards,
    ) -> Lent<'a> {
        let config = &self.config;
        let (system, model, allowed) = {
            let run = cx.run().read();
            (
                run.system_prompt.clone(),
                run.model.clone(),
                run.allowed_tools.clone(),
            )
        };
        let choice = &guards.tool_choice;
        let offers = |d: &ToolDef| {
            *choice != ToolChoice::None
                && !guards.excluded.contains(&d.name)
                && allowed
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|p| promptkit_core::name_matches(p, &d.name)))
        };
        // Lend only when nothing can rewrite the request on the way: no provider hook; for
        // the conversation, no system message for `lift_system_messages` to take out; for the
        // tools, every tool offered.
        let unhooked = self.hooks.provider.is_empty();
        let messages_lent = unhooked && !conversation.iter().any(|m| m.role == Role::System);
        let tools_lent = unhooked && definitions.iter().all(offers);
        let tools = if tools_lent {
            std::mem::take(definitions)
        } else {
            definitions.iter().filter(|d| offers(d)).cloned().collect()
        };
        let messages = if messages_lent {
            std::mem::take(conversation)
        } else {
            conversation.clone()
        };
        let mut request = ProviderRequest::new(messages);
        request.system = system;
        request.tool_choice = if tools.is_empty() {
            ToolChoice::Auto
        } else {
            choice.clone()
        };
        request.tools = tools;
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
        Lent {
            conversation,
            definitions,
            request,
            messages_lent,
            tools_lent,
        }
    }

    /// Runs a round's calls (the ones allowed and not repeated too often) and records their
    /// results in call order. `Some` when the turn ends here.
    async fn run_calls(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
        calls: &[ToolCall],
        pending: &[ToolCall],
        withheld: &HashSet<String>,
        guards: &mut Guards,
    ) -> Result<Option<LoopOutcome>, TurnError> {
        let mut results: Vec<Option<ToolResult>> = vec![None; calls.len()];
        let mut to_run = Vec::new();
        let mut looping: Option<(String, u32)> = None;
        for (i, call) in calls.iter().enumerate() {
            if pending.iter().any(|p| p.id == call.id) {
                continue;
            }
            let key = (call.name.clone(), call.arguments.to_string());
            let count = guards.identical.entry(key).or_insert(0);
            *count += 1;
            if *count >= self.config.max_identical_tool_calls {
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
            if guards.warned {
                self.close_calls(
                    scope,
                    conversation,
                    calls,
                    "the turn stopped repeating calls",
                )
                .await?;
                return Err(TurnError::ToolLoop { tool, count });
            }
            guards.warned = true;
        }
        let run: Vec<&ToolCall> = to_run.iter().map(|(_, c)| *c).collect();
        let cancel = self.config.interrupt_tools == ToolInterruption::Cancel;
        let (executed, interrupted) = self.execute_calls(scope, &run, withheld, cancel).await;
        for ((i, call), result) in to_run.iter().zip(executed) {
            results[*i] = Some(result.unwrap_or_else(|| {
                ToolResult::error(
                    call.id.clone(),
                    call.name.clone(),
                    ToolErrorKind::Interrupted,
                    "This call was cancelled: the user interrupted.",
                )
            }));
        }
        for result in results.into_iter().flatten() {
            if result.is_error {
                let n = guards.failures.entry(result.name.clone()).or_insert(0);
                *n += 1;
                if *n >= self.config.exclude_after_failures {
                    guards.excluded.insert(result.name.clone());
                }
            }
            self.push_result(scope, conversation, result).await?;
        }
        if !pending.is_empty() {
            return self
                .hold_for_approval(scope, pending.to_vec())
                .await
                .map(Some);
        }
        if interrupted || scope.interrupted() {
            return Ok(Some(LoopOutcome::Interrupted));
        }
        guards.tool_choice = ToolChoice::Auto;
        Ok(calls
            .iter()
            .find(|c| self.config.stop_on_tools.iter().any(|t| t == &c.name))
            .map(|call| LoopOutcome::Stopped {
                tool: call.name.clone(),
            }))
    }

    /// Gives each of `calls` an error result saying it was not run, and why.
    async fn close_calls(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
        calls: &[ToolCall],
        why: &str,
    ) -> Result<(), OutputClosed> {
        let open: HashSet<String> = unanswered_calls(conversation)
            .into_iter()
            .map(|c| c.id)
            .collect();
        for call in calls.iter().filter(|c| open.contains(&c.id)) {
            let result = ToolResult::error(
                call.id.clone(),
                call.name.clone(),
                ToolErrorKind::Interrupted,
                format!("This call was not run: {why}."),
            );
            self.push_result(scope, conversation, result).await?;
        }
        Ok(())
    }

    /// Keeps the partial answer of an interrupted round: cut to what the user heard, finish
    /// reason `cancelled`. Nothing is kept when nothing was said.
    async fn keep_interrupted(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
        mut partial: Message,
    ) -> Result<(), OutputClosed> {
        cut_to_heard(scope.cx, scope.turn_id, &mut partial);
        if partial.text().is_empty() {
            return Ok(());
        }
        self.push(scope, conversation, partial).await
    }

    /// Ends the turn for a denial: a typed error, or the configured replacement answer.
    /// Boxed: denials are rare.
    fn deny<'a>(
        &'a self,
        scope: &'a Scope<'_>,
        conversation: &'a mut Vec<Message>,
        violation: Violation,
    ) -> BoxFuture<'a, Result<LoopOutcome, TurnError>> {
        Box::pin(async move {
            tracing::info!(hook = %violation.hook, reason = %violation.reason, "model call denied");
            match &self.hooks.on_deny {
                OnDeny::Fail => Err(TurnError::Denied(violation)),
                OnDeny::Replace(text) => {
                    let mut message =
                        Message::assistant(text.clone()).with_created_at(Timestamp::now());
                    message.finish_reason = Some(FinishReason::ContentFilter);
                    message.metadata.insert(
                        "guardrail".to_owned(),
                        serde_json::json!({"hook": violation.hook, "reason": violation.reason}),
                    );
                    self.push(scope, conversation, message).await?;
                    Ok(LoopOutcome::Blocked(violation))
                }
            }
        })
    }

    /// Appends and forwards a tool result message.
    async fn push_result(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
        result: ToolResult,
    ) -> Result<(), OutputClosed> {
        let message = Message::tool(result).with_created_at(Timestamp::now());
        self.push(scope, conversation, message).await
    }

    /// Forwards each call waiting for approval (marked [`PENDING_APPROVAL`]) and ends the turn.
    async fn hold_for_approval(
        &self,
        scope: &Scope<'_>,
        calls: Vec<ToolCall>,
    ) -> Result<LoopOutcome, TurnError> {
        for call in &calls {
            let element = Element::tool_call(call.clone())
                .with_attribute(PENDING_APPROVAL, true)
                .with_source(Arc::clone(&self.name))
                .with_turn(Some(scope.turn_id));
            scope.output.send(element).await?;
        }
        Ok(LoopOutcome::Pending(calls))
    }

    /// Sends `message` downstream, then appends it to the conversation: a send dropped
    /// part-way delivered nothing, so the two never disagree.
    pub(super) async fn push(
        &self,
        scope: &Scope<'_>,
        conversation: &mut Vec<Message>,
        message: Message,
    ) -> Result<(), OutputClosed> {
        let mut element = Element::message(message.clone())
            .with_source(Arc::clone(&self.name))
            .with_turn(Some(scope.turn_id));
        element
            .meta
            .finish_reason
            .clone_from(&message.finish_reason);
        scope.output.send(element).await?;
        conversation.push(message);
        Ok(())
    }

    /// One model call; streams deltas downstream when streaming.
    async fn call_model(&self, scope: &Scope<'_>, request: &ProviderRequest) -> Round {
        let provider = &self.provider;
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| provider.model().to_owned());
        scope.events.emit_with(|| EventKind::ProviderCallStarted {
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
        let round = async {
            if self.config.streaming {
                self.stream_round(scope, request).await
            } else {
                self.predict_round(scope, request).await
            }
        }
        .instrument(span.clone())
        .await;
        let duration = started.elapsed();
        let mut message = match round {
            Round::Answer(message) => message,
            Round::Failed { error, partial } => {
                scope.events.emit_with(|| EventKind::ProviderCallFailed {
                    provider: provider.id().to_owned(),
                    model: model.clone(),
                    error: crate::pipeline::error_chain(&error),
                    duration_ms: millis(duration),
                });
                return Round::Failed { error, partial };
            }
            other => return other,
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
        scope.events.emit_with(|| EventKind::ProviderCallCompleted {
            provider: provider.id().to_owned(),
            model,
            duration_ms: millis(duration),
            usage: message.usage,
            cost: message.cost,
            finish_reason: message.finish_reason.clone(),
            tool_calls: message.tool_calls.len(),
        });
        Round::Answer(message)
    }

    async fn predict_round(&self, scope: &Scope<'_>, request: &ProviderRequest) -> Round {
        let called = scope
            .unless_interrupted(scope.cx.busy(self.provider.predict(request)))
            .await;
        match called {
            None => Round::Interrupted(Message::new(Role::Assistant)),
            Some(Ok(response)) => Round::Answer(response.message),
            Some(Err(error)) => Round::Failed {
                error: TurnError::Provider(error),
                partial: None,
            },
        }
    }

    async fn stream_round(&self, scope: &Scope<'_>, request: &ProviderRequest) -> Round {
        let cx = scope.cx;
        let opened = scope
            .unless_interrupted(cx.busy(self.provider.stream(request)))
            .await;
        let mut stream = match opened {
            None => return Round::Interrupted(Message::new(Role::Assistant)),
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                return Round::Failed {
                    error: TurnError::Provider(error),
                    partial: None,
                };
            }
        };
        let mut acc = StreamAccumulator::new();
        let intercepted = !self.hooks.chunk.is_empty();
        let mut so_far = String::new();
        // Waiting on the model is outside work: the stage stays marked busy for the whole
        // stream, except while it waits for room downstream, which the run's idle timeout
        // must see.
        let mut busy = Some(cx.mark_busy());
        loop {
            let event = match scope.unless_interrupted(stream.next()).await {
                None => return Round::Interrupted(partial(&acc, FinishReason::Cancelled)),
                Some(None) => break,
                Some(Some(Ok(event))) => event,
                Some(Some(Err(error))) => {
                    return Round::Failed {
                        error: TurnError::Provider(error),
                        partial: Some(partial(&acc, FinishReason::Error)),
                    };
                }
            };
            acc.push(&event);
            let element = match event {
                StreamEvent::TextDelta { text } if !text.is_empty() => {
                    if intercepted {
                        so_far.push_str(&text);
                        // Interceptors see the chunk before anything downstream does.
                        if let Decision::Deny(v) = self.hooks.on_chunk(&so_far, &text) {
                            return Round::Denied(v);
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
            };
            let mut element = element
                .with_source(Arc::clone(&self.name))
                .with_turn(Some(scope.turn_id))
                .with_epoch(scope.epoch);
            element.meta.streaming_delta = true;
            if let Err(full) = scope.output.try_send(element) {
                let TrySendError::Full(element) = full else {
                    return Round::Failed {
                        error: TurnError::Output(OutputClosed),
                        partial: None,
                    };
                };
                drop(busy.take());
                let sent = scope.output.send(element).await;
                busy = Some(cx.mark_busy());
                if let Err(closed) = sent {
                    return Round::Failed {
                        error: TurnError::Output(closed),
                        partial: None,
                    };
                }
            }
        }
        drop(busy);
        if !acc.is_finished() {
            return Round::Failed {
                error: TurnError::Provider(ProviderError::StreamTruncated {
                    message: "the stream ended without a finish event".to_owned(),
                }),
                partial: Some(partial(&acc, FinishReason::Error)),
            };
        }
        Round::Answer(acc.finish())
    }

    /// Runs calls in parallel (bounded). Returns one slot per call, in call order (`None` for
    /// a call cancelled by an interrupt), and whether the run was interrupted. Never fails:
    /// every problem becomes an error result for the model. Calls to tools the round
    /// `withheld` (excluded after failures, filtered by the allow-list, all of them under
    /// `ToolChoice::None`) are refused without running.
    async fn execute_calls(
        &self,
        scope: &Scope<'_>,
        calls: &[&ToolCall],
        withheld: &HashSet<String>,
        cancel_on_interrupt: bool,
    ) -> (Vec<Option<ToolResult>>, bool) {
        let mut results: Vec<Option<ToolResult>> = vec![None; calls.len()];
        if calls.is_empty() {
            return (results, false);
        }
        let limit = self.config.max_parallel_tool_calls.max(1);
        let runs: Vec<_> = calls
            .iter()
            .enumerate()
            .map(|(i, call)| async move {
                let result = if withheld.contains(&call.name) {
                    ToolError::NotAllowed {
                        name: call.name.clone(),
                    }
                    .to_result(call)
                } else {
                    self.execute_one(scope, call).await
                };
                (i, result)
            })
            .collect();
        let mut running = futures_util::stream::iter(runs).buffer_unordered(limit);
        let mut interrupted = false;
        let collect = async {
            loop {
                let next = if cancel_on_interrupt {
                    scope.unless_interrupted(running.next()).await
                } else {
                    Some(running.next().await)
                };
                match next {
                    None => {
                        interrupted = true;
                        break;
                    }
                    Some(None) => break,
                    Some(Some((i, result))) => results[i] = Some(result),
                }
            }
        };
        scope.cx.busy(collect).await;
        (results, interrupted)
    }

    async fn execute_one(&self, scope: &Scope<'_>, call: &ToolCall) -> ToolResult {
        let cx = scope.cx;
        // The allow-list is enforced here, not only when tools are offered.
        if !cx.run().tool_allowed(&call.name) {
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
        scope
            .events
            .emit_with(|| EventKind::ToolCallStarted { call: call.clone() });
        let started = Instant::now();
        let timeout = self.config.tool_timeout;
        let ctx = {
            let run = cx.run().read();
            ToolContext {
                deadline: Some(Instant::now() + timeout),
                session_id: run.session_id.clone(),
                user_id: run.user_id.clone(),
                metadata: run.metadata.clone(),
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
        scope.events.emit_with(|| EventKind::ToolCallCompleted {
            call_id: call.id.clone(),
            name: call.name.clone(),
            duration_ms: millis(started.elapsed()),
            is_error: result.is_error,
        });
        result
    }
}

/// What a round had said when it stopped: its text only (calls in progress are incomplete),
/// with `reason`.
fn partial(acc: &StreamAccumulator, reason: FinishReason) -> Message {
    let mut message = Message::assistant(acc.text()).with_created_at(Timestamp::now());
    message.finish_reason = Some(reason);
    message
}

/// Cuts an interrupted answer to what the user heard: the text spoken by the played
/// position, when text-to-speech recorded a timeline for the turn; the whole text
/// otherwise (in a text session, what was forwarded was seen). The cut falls back to the end
/// of the last whole word.
pub(super) fn cut_to_heard(cx: &StageContext, turn_id: u64, message: &mut Message) {
    let run = cx.run();
    let played = run.played(turn_id).or_else(|| {
        let last = run.last_interrupt();
        (last.turn_id == Some(turn_id))
            .then_some(last.played)
            .flatten()
    });
    message.finish_reason = Some(FinishReason::Cancelled);
    let Some(heard) = played.and_then(|p| run.heard_bytes(turn_id, p)) else {
        return;
    };
    let mut left = heard;
    let mut cut = false;
    message.content.retain_mut(|part| {
        let ContentPart::Text { text, .. } = part else {
            return true;
        };
        if cut {
            return false;
        }
        if text.len() <= left {
            left -= text.len();
            return true;
        }
        truncate_at_word(text, left);
        cut = true;
        !text.is_empty()
    });
}

/// Truncates `text` to at most `bytes` bytes, ending after a whole word.
fn truncate_at_word(text: &mut String, bytes: usize) {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mid_word = text[end..]
        .chars()
        .next()
        .is_some_and(|c| !c.is_whitespace())
        && text[..end]
            .chars()
            .next_back()
            .is_some_and(|c| !c.is_whitespace());
    if mid_word {
        end = text[..end].rfind(char::is_whitespace).unwrap_or(0);
    }
    text.truncate(end);
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
}

#[cfg(test)]
mod tests {
    use super::truncate_at_word;

    #[test]
    fn a_cut_never_splits_a_word_or_a_character() {
        let cut = |text: &str, bytes| {
            let mut s = text.to_owned();
            truncate_at_word(&mut s, bytes);
            s
        };
        assert_eq!(cut("Hello there, friend", 8), "Hello");
        assert_eq!(cut("Hello there, friend", 12), "Hello there,");
        assert_eq!(cut("Hello there, friend", 13), "Hello there,");
        assert_eq!(cut("Hello there, friend", 100), "Hello there, friend");
        assert_eq!(cut("naïve", 3), "");
        assert_eq!(cut("a naïve plan", 5), "a");
        assert_eq!(cut("", 3), "");
    }
}
