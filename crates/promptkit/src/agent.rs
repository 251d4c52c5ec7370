//! A conversation agent: the common Text-mode pipeline behind two calls.
//!
//! [`Agent`] wires `[StateStoreLoad] -> [PromptAssembly -> Template] -> Provider (tools, hooks)
//! -> [IncrementalSave]` once, and runs it per message with a session id: [`Agent::send`]
//! waits for the reply, [`Agent::stream`] yields text as it is generated. Every crate stays
//! usable on its own; this is only the shortcut for the common case.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use promptkit_core::{
    ContentPart, Cost, Message, Provider, Role, StateStore, ToolCall, ToolSet, Usage,
};
use promptkit_pipeline::hooks::Hooks;
use promptkit_pipeline::prompt::{
    PromptAssemblyStage, PromptRegistry, PromptTemplate, TemplateStage,
};
use promptkit_pipeline::provider::{PENDING_APPROVAL, ProviderStage, ProviderStageConfig};
use promptkit_pipeline::stages::{IncrementalSave, StateStoreLoad};
use promptkit_pipeline::{
    BuildError, Element, OutputStream, Payload, Pipeline, PipelineError, RunData, RunHandle,
    StageError,
};

/// Builds an [`Agent`].
#[derive(Debug)]
#[must_use = "call `build` to get an agent"]
pub struct AgentBuilder {
    provider: Arc<dyn Provider>,
    system: Option<String>,
    prompts: Option<(Arc<PromptRegistry>, String)>,
    variables: Vec<(String, String)>,
    tools: Option<Arc<dyn ToolSet>>,
    allowed_tools: Option<Vec<String>>,
    state: Option<Arc<dyn StateStore>>,
    history: Option<usize>,
    hooks: Hooks,
    config: ProviderStageConfig,
}

impl AgentBuilder {
    /// A fixed system prompt (rendered with the variables, `{{name}}` placeholders allowed).
    pub fn system(mut self, prompt: impl Into<String>) -> Self {
        self.system = Some(prompt.into());
        self
    }

    /// A prompt from a registry, by task type (replaces [`system`](Self::system)).
    pub fn prompt(mut self, registry: Arc<PromptRegistry>, task_type: impl Into<String>) -> Self {
        self.prompts = Some((registry, task_type.into()));
        self
    }

    /// A template variable for every turn.
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.push((name.into(), value.into()));
        self
    }

    /// Tools the model may call (replaces what was given before; see [`add_tools`](Self::add_tools)).
    pub fn tools(mut self, tools: Arc<dyn ToolSet>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Tools the model may call, in addition to those given before (see
    /// [`CombinedTools`](crate::CombinedTools)): for example a tool registry and then MCP
    /// servers.
    pub fn add_tools(mut self, tools: Arc<dyn ToolSet>) -> Self {
        self.tools = Some(match self.tools.take() {
            None => tools,
            Some(first) => Arc::new(crate::CombinedTools::new(vec![first, tools])),
        });
        self
    }

    /// Restricts the tools offered and run (`*` suffix for prefixes).
    pub fn allowed_tools<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.allowed_tools = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Keeps conversations in `store`: history is loaded before each turn and the turn's
    /// messages are saved as they are produced.
    pub fn state(mut self, store: Arc<dyn StateStore>) -> Self {
        self.state = Some(store);
        self
    }

    /// Loads only the `n` most recent messages of the history.
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history = Some(n);
        self
    }

    /// Hooks and guardrails around model and tool calls.
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Provider-stage settings (rounds, parallelism, budget, sampling).
    pub fn config(mut self, config: ProviderStageConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the agent.
    ///
    /// # Errors
    /// A [`BuildError`] if the pipeline cannot be assembled.
    pub fn build(self) -> Result<Agent, BuildError> {
        let mut builder = Pipeline::builder();
        if let Some(store) = &self.state {
            let mut load = StateStoreLoad::new(Arc::clone(store));
            if let Some(n) = self.history {
                load = load.recent(n);
            }
            builder = builder.then(load);
        }
        if let Some((registry, task)) = &self.prompts {
            // The prompt is chosen per turn, so it is rendered in the pipeline. A fixed
            // system prompt is rendered by `stream_with_history` instead: no stage (and no
            // task) for a few microseconds of work.
            builder = builder
                .then(PromptAssemblyStage::new(Arc::clone(registry), task.clone()))
                .then(TemplateStage::new());
        }
        let mut provider = ProviderStage::new(Arc::clone(&self.provider))
            .with_config(self.config.clone())
            .with_hooks(self.hooks.clone());
        if let Some(tools) = &self.tools {
            provider = provider.with_tools(Arc::clone(tools));
        }
        builder = builder.then(provider);
        if let Some(store) = &self.state {
            builder = builder.then(IncrementalSave::new(Arc::clone(store)));
        }
        let base = RunData {
            variables: self.variables.iter().cloned().collect(),
            allowed_tools: self.allowed_tools.clone(),
            ..RunData::default()
        };
        let template = if self.prompts.is_none() {
            self.system.as_ref().map(PromptTemplate::from_text)
        } else {
            None
        };
        Ok(Agent {
            pipeline: builder.build()?,
            base,
            template,
            provider: self.provider,
        })
    }
}

/// A conversation agent. Cheap to clone; turns of different sessions run concurrently.
///
/// ```
/// # #[cfg(all(feature = "mock", feature = "memory"))]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use promptkit::agent::Agent;
/// use promptkit::providers::mock::{MockProvider, MockTurn};
/// use promptkit::state::MemoryStore;
///
/// let model = MockProvider::new("mock", "mock-1")
///     .with_turn(MockTurn::text("Hello, Ada!"))
///     .with_turn(MockTurn::text("You told me your name is Ada."));
/// let agent = Agent::builder(Arc::new(model))
///     .system("You are {{persona}}.")
///     .variable("persona", "a concise assistant")
///     .state(Arc::new(MemoryStore::new()))
///     .build()?;
///
/// let reply = agent.send("session-1", "Hi, I am Ada.").await?;
/// assert_eq!(reply.text(), "Hello, Ada!");
/// let reply = agent.send("session-1", "What is my name?").await?;
/// assert_eq!(reply.text(), "You told me your name is Ada.");
/// # Ok(())
/// # }
/// # #[cfg(not(all(feature = "mock", feature = "memory")))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone)]
pub struct Agent {
    pipeline: Pipeline,
    base: RunData,
    /// The fixed system prompt, rendered by the agent per turn; `None` when there is none or
    /// a prompt registry chooses the prompt in the pipeline.
    template: Option<PromptTemplate>,
    provider: Arc<dyn Provider>,
}

/// The result of one turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    /// The messages this turn produced, in order (the user's message, assistant messages, tool
    /// results); history is not included.
    pub messages: Vec<Message>,
    /// Token usage of the turn's model calls.
    pub usage: Usage,
    /// Cost of the turn's model calls, when the model is priced.
    pub cost: Option<Cost>,
    /// Tool calls waiting for approval (the turn ended early).
    pub pending: Vec<ToolCall>,
}

impl Reply {
    /// The last assistant message.
    pub fn message(&self) -> Option<&Message> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant)
    }

    /// The text of the last assistant message (empty when there is none).
    pub fn text(&self) -> String {
        self.message().map(Message::text).unwrap_or_default()
    }

    /// Takes in one output element; `copies` makes complete messages and pending calls events
    /// too (each event is a copy).
    fn absorb(&mut self, element: Element, copies: bool) -> Option<AgentEvent> {
        if element.meta.from_history {
            return None;
        }
        let pending = element.meta.attribute(PENDING_APPROVAL).is_some();
        match element.payload {
            Payload::Text(t) => Some(AgentEvent::Text(t)),
            Payload::Part(part) => match *part {
                ContentPart::Reasoning(r) => r.text.map(AgentEvent::Reasoning),
                _ => None,
            },
            Payload::Message(m) => {
                if m.role == Role::Assistant {
                    if let Some(u) = m.usage {
                        self.usage += u;
                    }
                    if let Some(c) = m.cost {
                        *self.cost.get_or_insert_with(Cost::default) += c;
                    }
                }
                if copies {
                    self.messages.push((*m).clone());
                    Some(AgentEvent::Message(m))
                } else {
                    self.messages.push(*m);
                    None
                }
            }
            Payload::ToolCall(call) if pending => {
                if copies {
                    self.pending.push(ToolCall::clone(&call));
                    Some(AgentEvent::PendingApproval(*call))
                } else {
                    self.pending.push(*call);
                    None
                }
            }
            _ => None,
        }
    }
}

/// Something a streaming turn produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// Answer text, as generated.
    Text(String),
    /// Reasoning text, as generated.
    Reasoning(String),
    /// A complete message (the user's, an assistant's, a tool result).
    Message(Box<Message>),
    /// A tool call waiting for approval.
    PendingApproval(ToolCall),
}

/// Why a turn failed. `partial` holds what the turn produced before (already saved when the
/// agent has a state store). It displays as its error, and its causes are the error's.
#[derive(Debug)]
pub struct AgentError {
    /// The cause.
    pub error: PipelineError,
    /// What the turn produced before failing.
    pub partial: Box<Reply>,
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl From<PipelineError> for AgentError {
    fn from(error: PipelineError) -> Self {
        Self {
            error,
            partial: Box::default(),
        }
    }
}

impl Agent {
    /// A builder for an agent calling `provider`.
    pub fn builder(provider: Arc<dyn Provider>) -> AgentBuilder {
        AgentBuilder {
            provider,
            system: None,
            prompts: None,
            variables: Vec::new(),
            tools: None,
            allowed_tools: None,
            state: None,
            history: None,
            hooks: Hooks::default(),
            config: ProviderStageConfig::default(),
        }
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// The pipeline the agent runs.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Runs one turn and waits for the reply.
    ///
    /// # Errors
    /// An [`AgentError`] with what the turn produced before failing.
    pub async fn send(
        &self,
        session: &str,
        message: impl Into<Message>,
    ) -> Result<Reply, AgentError> {
        self.stream(session, message)?.finish().await
    }

    /// Starts a turn; read its events as they are produced, then [`ReplyStream::finish`].
    ///
    /// # Errors
    /// An [`AgentError`] when the turn cannot start (the pipeline is shutting down).
    pub fn stream(
        &self,
        session: &str,
        message: impl Into<Message>,
    ) -> Result<ReplyStream, AgentError> {
        self.stream_with(RunData::for_session(session), message)
    }

    /// [`stream`](Self::stream) with explicit run data (user id, extra variables, an
    /// [`Approvals`](promptkit_pipeline::provider::Approvals) extension).
    ///
    /// # Errors
    /// As [`stream`](Self::stream).
    pub fn stream_with(
        &self,
        turn: RunData,
        message: impl Into<Message>,
    ) -> Result<ReplyStream, AgentError> {
        self.stream_with_history(turn, Vec::new(), message)
    }

    /// [`stream_with`](Self::stream_with) with history supplied by the caller: `history` is
    /// sent to the model before `message` (after any history the state store loads) and is
    /// never saved again. This serves callers that keep the conversation themselves, such as
    /// an OpenAI-compatible endpoint whose clients send every message on each request.
    ///
    /// A turn whose [`RunData::system_prompt`] is set keeps it: the agent's own system prompt
    /// applies only to turns that bring none.
    ///
    /// # Errors
    /// As [`stream`](Self::stream).
    pub fn stream_with_history(
        &self,
        mut turn: RunData,
        history: Vec<Message>,
        message: impl Into<Message>,
    ) -> Result<ReplyStream, AgentError> {
        for (k, v) in &self.base.variables {
            turn.variables.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if turn.system_prompt.is_none()
            && let Some(template) = &self.template
        {
            // A fixed prompt is rendered here, as the template stage would render it: no
            // stage (and no task) per turn for it.
            let rendered = template.render(&turn.variables).map_err(|e| {
                AgentError::from(PipelineError::StageFailed {
                    stage: "template".to_owned(),
                    source: StageError::from(e),
                })
            })?;
            turn.system_prompt = Some(rendered.text);
        }
        if turn.allowed_tools.is_none() {
            turn.allowed_tools.clone_from(&self.base.allowed_tools);
        }
        let mut message = message.into();
        message
            .created_at
            .get_or_insert_with(promptkit_core::Timestamp::now);
        let execution = self
            .pipeline
            .execute_iter(
                turn,
                history
                    .into_iter()
                    .map(|m| Element::message(m).as_history())
                    .chain(std::iter::once(Element::message(message))),
            )
            .map_err(AgentError::from)?;
        let (output, handle) = execution.into_parts();
        Ok(ReplyStream {
            output,
            handle,
            reply: Reply::default(),
        })
    }
}

/// The events of a running turn. Dropping it cancels the turn.
#[derive(Debug)]
pub struct ReplyStream {
    output: OutputStream,
    handle: RunHandle,
    reply: Reply,
}

impl ReplyStream {
    /// The next event, or `None` when the turn's output has ended.
    pub async fn next_event(&mut self) -> Option<AgentEvent> {
        loop {
            let element = self.output.recv().await?;
            if let Some(event) = self.reply.absorb(element, true) {
                return Some(event);
            }
        }
    }

    /// The run's handle (to interrupt or cancel the turn).
    pub fn handle(&self) -> &RunHandle {
        &self.handle
    }

    /// Reads what is left and returns the reply.
    ///
    /// # Errors
    /// An [`AgentError`] with what the turn produced before failing.
    pub async fn finish(self) -> Result<Reply, AgentError> {
        let Self {
            mut output,
            handle,
            mut reply,
        } = self;
        while let Some(element) = output.recv().await {
            reply.absorb(element, false);
        }
        match handle.wait().await {
            Ok(_) => Ok(reply),
            Err(error) => Err(AgentError {
                error,
                partial: Box::new(reply),
            }),
        }
    }
}

impl Stream for ReplyStream {
    type Item = AgentEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AgentEvent>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.output).poll_next(cx) {
                Poll::Ready(Some(element)) => {
                    if let Some(event) = this.reply.absorb(element, true) {
                        return Poll::Ready(Some(event));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
