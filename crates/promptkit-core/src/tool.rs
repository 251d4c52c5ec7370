//! Tool definitions and the tool seams.
//!
//! Two seams meet here:
//!
//! * [`ToolExecutor`] runs one kind of tool (an in-process function, an HTTP endpoint, a
//!   subprocess, an MCP server). Tool sources implement it.
//! * [`ToolSet`] is what the provider stage sees: the definitions it may offer to the model
//!   and a way to execute one call. The tool registry implements it, routing each call to
//!   the executor of the named tool after checking the allow-list and the arguments.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::future::{BoxError, BoxFuture};
use crate::message::{ToolCall, ToolErrorKind, ToolResult};

/// A tool as offered to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// The name the model uses to call the tool. Unique within a tool set.
    pub name: String,
    /// What the tool does, for the model.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments object.
    #[serde(default = "empty_object_schema")]
    pub input_schema: Value,
    /// JSON Schema of the structured result, when the tool declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

/// The schema of a tool that takes no arguments: `{"type":"object","properties":{}}`.
pub fn empty_object_schema() -> Value {
    let mut schema = Map::new();
    schema.insert("type".to_owned(), Value::String("object".to_owned()));
    schema.insert("properties".to_owned(), Value::Object(Map::new()));
    Value::Object(schema)
}

impl ToolDef {
    /// A tool definition.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema,
            output_schema: None,
        }
    }

    /// Sets the output schema.
    #[must_use]
    pub fn with_output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }
}

/// Matches a tool name against an allow-list entry: exactly, or by prefix when the entry
/// ends in `*` (`mcp__files__*` allows every tool of the `files` MCP server).
///
/// ```
/// use promptkit_core::name_matches;
///
/// assert!(name_matches("search", "search"));
/// assert!(name_matches("mcp__files__*", "mcp__files__read"));
/// assert!(!name_matches("search", "searcher"));
/// ```
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether and which tools the model must call.
///
/// Serialised as `"auto"`, `"none"`, `"required"` or `{"tool":"name"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// Per-call context handed to executors.
#[derive(Debug, Clone, Default)]
pub struct ToolContext {
    /// When the call must have finished. Executors enforce it with their runtime's timer
    /// and return [`ToolError::Timeout`] when it passes; the caller may also drop the future.
    pub deadline: Option<Instant>,
    /// The conversation the call belongs to.
    pub session_id: Option<String>,
    /// The user the conversation belongs to.
    pub user_id: Option<String>,
    /// Application data for executors (for example tenant ids). Must be JSON.
    pub metadata: Map<String, Value>,
}

impl ToolContext {
    /// A context whose deadline is `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            deadline: Some(Instant::now() + timeout),
            ..Self::default()
        }
    }

    /// Time left before the deadline (`None` when there is no deadline; zero when passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// Runs tool calls of one kind. Object-safe: registries hold `Arc<dyn ToolExecutor>`.
///
/// An executor returns `Ok` with a [`ToolResult`] for every call it ran, including calls
/// where the tool itself reported failure (`is_error: true`); `Err` is for failures to run
/// the tool at all (timeout, transport, crash). The tool loop turns both into a result the
/// model sees, so a failing tool never ends a turn.
pub trait ToolExecutor: Send + Sync + fmt::Debug {
    /// Runs `call`. The call's `name` is the name the tool is registered under.
    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>>;

    /// Whether [`execute`](Self::execute) itself ends every call by
    /// [`ToolContext::deadline`], with [`ToolError::Timeout`] (its HTTP client's timeout,
    /// say). A caller then need not run a timer of its own beside the call. The default,
    /// `false`, makes callers bound the call themselves.
    fn enforces_deadline(&self) -> bool {
        false
    }
}

/// The tools a provider stage can offer and run. Object-safe: used as `Arc<dyn ToolSet>`.
pub trait ToolSet: Send + Sync + fmt::Debug {
    /// The definitions of the tools that may be offered, in a stable order (sorted by name)
    /// so that prompt caches keyed on the request prefix keep hitting.
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>>;

    /// Runs one call. Implementations check that the tool exists and is allowed and that
    /// the arguments match its schema before running it.
    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>>;

    /// Whether [`execute`](Self::execute) ends every call by [`ToolContext::deadline`]
    /// (with [`ToolError::Timeout`]), so the caller need not run a timer of its own beside
    /// it. The default, `false`, makes callers such as the provider stage bound each call.
    fn enforces_deadline(&self) -> bool {
        false
    }
}

/// Why a tool call could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No tool has this name.
    #[error("unknown tool `{name}`")]
    UnknownTool {
        /// The requested name.
        name: String,
    },
    /// The tool exists but is not in this turn's allow-list.
    #[error("tool `{name}` is not allowed in this turn")]
    NotAllowed {
        /// The requested name.
        name: String,
    },
    /// The arguments do not match the tool's input schema.
    #[error("invalid arguments for tool `{name}`: {message}")]
    InvalidArguments {
        /// The tool.
        name: String,
        /// What is wrong, in words the model can act on.
        message: String,
    },
    /// The tool did not finish before its deadline.
    #[error("tool `{name}` timed out after {elapsed:?}")]
    Timeout {
        /// The tool.
        name: String,
        /// How long it ran.
        elapsed: Duration,
    },
    /// The tool's rate limit is exhausted.
    #[error("tool `{name}` is rate limited")]
    RateLimited {
        /// The tool.
        name: String,
    },
    /// A hook or policy denied the call.
    #[error("tool `{name}` call denied: {reason}")]
    Denied {
        /// The tool.
        name: String,
        /// Why.
        reason: String,
    },
    /// The tool could not be run (transport failure, crashed process, bad response).
    #[error("tool `{name}` failed: {message}")]
    Execution {
        /// The tool.
        name: String,
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The tool source itself is unavailable (for example an MCP server that cannot start).
    #[error("tool source `{source_name}` unavailable: {message}")]
    SourceUnavailable {
        /// The source (server or registry) name.
        source_name: String,
        /// What happened.
        message: String,
    },
}

impl ToolError {
    /// The kind to record on the [`ToolResult`] sent back to the model.
    pub fn kind(&self) -> ToolErrorKind {
        match self {
            Self::UnknownTool { .. } => ToolErrorKind::UnknownTool,
            Self::NotAllowed { .. } => ToolErrorKind::NotAllowed,
            Self::InvalidArguments { .. } => ToolErrorKind::InvalidArguments,
            Self::Timeout { .. } => ToolErrorKind::Timeout,
            Self::RateLimited { .. } => ToolErrorKind::RateLimited,
            Self::Denied { .. } => ToolErrorKind::Denied,
            Self::Execution { .. } | Self::SourceUnavailable { .. } => ToolErrorKind::Execution,
        }
    }

    /// The error as a result for the model, answering `call`.
    pub fn to_result(&self, call: &ToolCall) -> ToolResult {
        ToolResult::error(
            call.id.clone(),
            call.name.clone(),
            self.kind(),
            self.to_string(),
        )
    }
}
