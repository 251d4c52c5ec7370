//! The provider stage: calls the model, streams its answer downstream and runs the tool loop.
//!
//! The stage reads the turn's messages, offers the allowed tools, calls the
//! [`Provider`], forwards text and reasoning deltas as they arrive
//! (marked [`ElementMeta::streaming_delta`](crate::ElementMeta)), then the complete assistant
//! message. When the model asks for tools, the calls of a round run in parallel (bounded),
//! their results are appended in call order, and the model is called again, until it answers
//! without tool calls or a limit is reached.
//!
//! Every message is forwarded as soon as it exists, so a turn that fails part-way keeps the
//! messages it already produced (a save stage downstream persists them), including the
//! partial text of a streamed round that failed, and the run's error says why. No tool call
//! is ever left without a result: calls a failed, cancelled or crashed turn left open get an
//! "interrupted" result before the conversation goes on.

mod session;
mod tool_loop;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use promptkit_core::{Message, Provider, ResponseFormat, ToolCall, ToolChoice, ToolSet};
use serde::{Deserialize, Serialize};

pub use tool_loop::{LoopOutcome, TurnError};

use crate::context::StageContext;
use crate::element::{Control, Payload};
use crate::hooks::Hooks;
use crate::input::StageInput;
use crate::output::StageOutput;
use crate::{Stage, StageError, StageKind};
use tool_loop::Scope;

/// Attribute set on pending tool-call elements that wait for a person's approval.
pub const PENDING_APPROVAL: &str = "pending_approval";

/// Metadata key of an assistant message whose calls (the ids listed) wait for approval. A
/// call without a result that is not listed there was cut off, and gets an "interrupted"
/// result when the conversation goes on.
pub const PENDING_APPROVAL_METADATA: &str = "promptkit.pending_approval";

/// Whether a tool call needs a person's approval before it runs.
pub trait ApprovalPolicy: Send + Sync + std::fmt::Debug {
    /// `true` when `call` must wait for approval.
    fn requires_approval(&self, call: &ToolCall) -> bool;
}

/// Requires approval for the tools named (entries may end in `*`).
#[derive(Debug, Clone, Default)]
pub struct ApproveTools(pub Vec<String>);

impl ApprovalPolicy for ApproveTools {
    fn requires_approval(&self, call: &ToolCall) -> bool {
        self.0
            .iter()
            .any(|p| promptkit_core::name_matches(p, &call.name))
    }
}

/// A person's decision on a pending tool call, handed to the resumed turn through an
/// [`Approvals`] extension of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Approval {
    /// Run the call.
    Approved,
    /// Do not run it; the model is told why.
    Denied {
        /// Why, shown to the model.
        reason: String,
    },
}

/// Decisions on tool calls left pending by an earlier turn, by call id: set it as an
/// extension of the run that resumes the turn
/// ([`RunData::with_extension`](crate::RunData::with_extension)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvals(pub BTreeMap<String, Approval>);

impl Approvals {
    /// Approves the call `id`.
    #[must_use]
    pub fn approve(mut self, id: impl Into<String>) -> Self {
        self.0.insert(id.into(), Approval::Approved);
        self
    }

    /// Denies the call `id`, telling the model why.
    #[must_use]
    pub fn deny(mut self, id: impl Into<String>, reason: impl Into<String>) -> Self {
        self.0.insert(
            id.into(),
            Approval::Denied {
                reason: reason.into(),
            },
        );
        self
    }
}

/// Sampling and output settings sent with every model call of the stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestSettings {
    /// Temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Maximum output tokens.
    pub max_tokens: Option<u32>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Output format.
    pub response_format: Option<ResponseFormat>,
}

/// When the stage calls the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnMode {
    /// Once, after the input ends (or an end-of-stream element): request/response (Text mode).
    #[default]
    Unary,
    /// Once per end-of-turn element, keeping the conversation across turns, until the input
    /// ends (a session: VAD mode, or a text chat on one run). An interrupt of the run
    /// ([`RunContext::interrupt`](crate::RunContext::interrupt)) ends the answer in progress;
    /// what was said is kept, cut to what was heard, with finish reason `cancelled`.
    Continuous,
}

/// What a running tool does when the user interrupts (continuous mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolInterruption {
    /// It finishes, and its result is kept (a tool with side effects is never run twice and
    /// never left half done); the model is not called again in that turn.
    #[default]
    Finish,
    /// It is cancelled, and its result says so; tools that finished before keep their
    /// results.
    Cancel,
}

/// When the final answer of a turn is recorded (continuous mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settle {
    /// As soon as the model finishes it.
    #[default]
    Immediately,
    /// When its playback is settled (voice): played to the end
    /// ([`Playback::stopped`](crate::Playback::stopped)), interrupted (then cut at the played
    /// position through the run's spoken timeline), or when the next turn begins or the
    /// input ends. The store and the next model call see what the user heard.
    AfterPlayback,
}

/// Settings of a [`ProviderStage`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderStageConfig {
    /// Unary or continuous.
    pub mode: TurnMode,
    /// Stream the answer (forward deltas as they arrive); otherwise one call per round.
    pub streaming: bool,
    /// Most model calls in one turn (default 50).
    pub max_rounds: u32,
    /// Most tool calls running at once (default 10).
    pub max_parallel_tool_calls: usize,
    /// A call with the same tool and arguments this many times in one turn is not run again;
    /// the model is told to change approach once, and the turn fails if it persists (default 3).
    pub max_identical_tool_calls: u32,
    /// A tool that fails this many times in one turn is no longer offered (default 2).
    pub exclude_after_failures: u32,
    /// Cost ceiling of this turn's model calls, in US dollars.
    pub max_cost_usd: Option<f64>,
    /// Cost ceiling of the whole conversation (the cost recorded on history plus this turn),
    /// in US dollars.
    pub max_conversation_cost_usd: Option<f64>,
    /// Tool choice for the first round; later rounds use `auto`.
    pub tool_choice: ToolChoice,
    /// Finish the turn after a round that ran one of these tools.
    pub stop_on_tools: Vec<String>,
    /// Deadline of each tool call (default 60 s).
    pub tool_timeout: Duration,
    /// Sampling and output settings.
    pub request: RequestSettings,
    /// What running tools do when the user interrupts (continuous mode).
    pub interrupt_tools: ToolInterruption,
    /// When the final answer is recorded (continuous mode).
    pub settle: Settle,
}

impl Default for ProviderStageConfig {
    fn default() -> Self {
        Self {
            mode: TurnMode::Unary,
            streaming: true,
            max_rounds: 50,
            max_parallel_tool_calls: 10,
            max_identical_tool_calls: 3,
            exclude_after_failures: 2,
            max_cost_usd: None,
            max_conversation_cost_usd: None,
            tool_choice: ToolChoice::Auto,
            stop_on_tools: Vec::new(),
            tool_timeout: Duration::from_secs(60),
            request: RequestSettings::default(),
            interrupt_tools: ToolInterruption::default(),
            settle: Settle::default(),
        }
    }
}

/// Calls a model with the turn's conversation and runs the tool loop.
#[derive(Debug, Clone)]
pub struct ProviderStage {
    /// Shared, so tagging each streamed element with its source allocates nothing.
    name: Arc<str>,
    provider: Arc<dyn Provider>,
    tools: Option<Arc<dyn ToolSet>>,
    approval: Option<Arc<dyn ApprovalPolicy>>,
    hooks: Hooks,
    config: ProviderStageConfig,
}

impl ProviderStage {
    /// A stage named `provider` calling `provider`, without tools.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            name: Arc::from("provider"),
            provider,
            tools: None,
            approval: None,
            hooks: Hooks::default(),
            config: ProviderStageConfig::default(),
        }
    }

    /// Renames the stage.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Arc::from(name.into());
        self
    }

    /// Offers and runs tools from `tools` (filtered by the turn's allow-list).
    #[must_use]
    pub fn with_tools(mut self, tools: Arc<dyn ToolSet>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Holds calls that need approval: the turn ends with them pending.
    #[must_use]
    pub fn with_approval(mut self, policy: Arc<dyn ApprovalPolicy>) -> Self {
        self.approval = Some(policy);
        self
    }

    /// Runs these hooks and guardrails around model and tool calls.
    #[must_use]
    pub fn with_hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Replaces the settings.
    #[must_use]
    pub fn with_config(mut self, config: ProviderStageConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings.
    pub fn config(&self) -> &ProviderStageConfig {
        &self.config
    }
}

impl Stage for ProviderStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Generate
    }

    async fn run(
        &self,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        match self.config.mode {
            TurnMode::Unary => self.run_unary(&cx, input, &output).await,
            TurnMode::Continuous => self.run_continuous(&cx, input, &output).await,
        }
    }
}

impl ProviderStage {
    /// Collects the conversation until the input ends (or an end-of-stream element), then
    /// runs one turn.
    async fn run_unary(
        &self,
        cx: &StageContext,
        mut input: StageInput,
        output: &StageOutput,
    ) -> Result<(), StageError> {
        let approvals = cx
            .run()
            .read()
            .extensions
            .get::<Approvals>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let mut conversation: Vec<Message> = Vec::new();
        let mut turn_id = None;
        let mut settled = false;
        let mut trailing = None;
        while let Some(element) = input.recv().await {
            match &element.payload {
                Payload::Message(m) if !element.meta.from_history => {
                    let id = *turn_id.get_or_insert_with(|| {
                        element
                            .meta
                            .turn_id
                            .unwrap_or_else(|| cx.run().begin_turn())
                    });
                    if !settled {
                        // The history's open calls are answered before the new message, so
                        // the stored conversation stays in an order every vendor accepts.
                        let scope = Scope::new(cx, output, id, false, self.config.settle);
                        self.settle_history(&scope, &mut conversation, &approvals, true)
                            .await?;
                        settled = true;
                    }
                    conversation.push((**m).clone());
                }
                Payload::Message(m) => conversation.push((**m).clone()),
                Payload::Control(Control::EndOfStream) => {
                    trailing = Some(element);
                    break;
                }
                _ => {}
            }
            output.send(element).await?;
        }
        let id = turn_id.unwrap_or_else(|| cx.run().begin_turn());
        let scope = Scope::new(cx, output, id, false, self.config.settle);
        if !settled {
            self.settle_history(&scope, &mut conversation, &approvals, false)
                .await?;
        }
        let end = self.turn(&scope, &mut conversation).await?;
        tracing::debug!(stage = %cx.name(), outcome = ?end.outcome, "turn ended");
        if let Some(element) = trailing {
            output.send(element).await?;
        }
        // Anything after an end-of-stream element is passed through unchanged.
        while let Some(element) = input.recv().await {
            output.send(element).await?;
        }
        Ok(())
    }
}
