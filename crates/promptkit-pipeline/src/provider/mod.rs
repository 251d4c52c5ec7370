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
//! messages it already produced (a save stage downstream persists them) and the run's error
//! says why.

mod tool_loop;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use promptkit_core::{Provider, ResponseFormat, ToolCall, ToolChoice, ToolSet};
use serde::{Deserialize, Serialize};

pub use tool_loop::{LoopOutcome, TurnError};

use crate::element::{Control, Element, Payload};
use crate::hooks::Hooks;
use crate::stage::{Stage, StageContext, StageError, StageInput, StageKind, StageOutput};

/// Attribute set on pending tool-call elements that wait for a person's approval.
pub const PENDING_APPROVAL: &str = "pending_approval";

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
            .any(|p| crate::turn::name_matches(p, &call.name))
    }
}

/// A person's decision on a pending tool call, handed to the resumed turn through
/// [`TurnData::approvals`](crate::TurnData::approvals).
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
pub enum TurnMode {
    /// Once, after the input ends (or an end-of-stream element): request/response (Text mode).
    #[default]
    Unary,
    /// Once per end-of-turn element, keeping the conversation across turns, until the input
    /// ends (VAD mode). An interrupt element cancels the answer in progress.
    Continuous,
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
    async fn run_unary(
        &self,
        cx: &StageContext,
        mut input: StageInput,
        output: &StageOutput,
    ) -> Result<(), StageError> {
        let mut conversation = Vec::new();
        let mut trailing = Vec::new();
        loop {
            // Each element is handed on before the send is awaited, so it is not part of this
            // future's state.
            let sent = {
                let Some(element) = input.recv().await else {
                    break;
                };
                if let Payload::Message(m) = &element.payload {
                    conversation.push((**m).clone());
                } else if matches!(element.payload, Payload::Control(Control::EndOfStream)) {
                    trailing.push(element);
                    break;
                }
                output.send_now(element)
            };
            sent.await?;
        }
        let approvals = cx.turn().read().approvals.clone();
        let outcome = self.turn(cx, &mut conversation, &approvals, output).await;
        match outcome {
            Ok(_) => {
                for e in trailing {
                    output.send(e).await?;
                }
                // Anything after an end-of-stream element is passed through unchanged.
                while let Some(e) = input.recv().await {
                    output.send(e).await?;
                }
                Ok(())
            }
            Err(TurnError::Output(e)) => Err(e.into()),
            Err(e) => Err(StageError::with_source(e.to_string(), e)),
        }
    }

    async fn run_continuous(
        &self,
        cx: &StageContext,
        mut input: StageInput,
        output: &StageOutput,
    ) -> Result<(), StageError> {
        let mut conversation = Vec::new();
        let mut queued: std::collections::VecDeque<Element> = std::collections::VecDeque::new();
        loop {
            let element = match queued.pop_front() {
                Some(e) => e,
                None => match input.recv().await {
                    Some(e) => e,
                    None => break,
                },
            };
            match &element.payload {
                Payload::Message(m) => {
                    conversation.push((**m).clone());
                    output.send(element).await?;
                }
                Payload::Control(Control::EndOfTurn | Control::EndOfStream) => {
                    let end_of_stream = element.is_end_of_stream();
                    let no_approvals = BTreeMap::new();
                    let mut turn_conversation = conversation.clone();
                    let mut input_done = false;
                    // `None`: interrupted.
                    let result = {
                        let turn = self.turn(cx, &mut turn_conversation, &no_approvals, output);
                        tokio::pin!(turn);
                        loop {
                            tokio::select! {
                                result = &mut turn => break Some(result),
                                next = input.recv(), if !input_done => match next {
                                    Some(e) if matches!(e.payload, Payload::Control(Control::Interrupt)) => break None,
                                    Some(e) => queued.push_back(e),
                                    None => input_done = true,
                                },
                            }
                        }
                    };
                    let interrupted = match result {
                        None => true,
                        Some(Ok(_)) => {
                            conversation = turn_conversation;
                            false
                        }
                        Some(Err(TurnError::Output(e))) => return Err(e.into()),
                        Some(Err(e)) => {
                            // A failed turn does not end the session: keep what was said and
                            // report the failure downstream.
                            conversation = turn_conversation;
                            output
                                .send(Element::error(cx.name(), e.to_string()))
                                .await?;
                            false
                        }
                    };
                    if interrupted {
                        // The answer in progress is dropped; what was already forwarded stays.
                        output.send(Element::interrupt()).await?;
                        continue;
                    }
                    output.send(element).await?;
                    if end_of_stream {
                        break;
                    }
                }
                _ => output.send(element).await?,
            }
        }
        while let Some(e) = input.recv().await {
            output.send(e).await?;
        }
        Ok(())
    }
}
