//! Per-execution shared data.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Map, Value};

use crate::prompt::PromptTemplate;

/// Data shared by the stages of one execution: created fresh for every run, never copied
/// onto elements.
///
/// Stages read and write it through short critical sections ([`TurnContext::read`],
/// [`TurnContext::write`]); never hold the guard across an `.await`.
#[derive(Debug, Default)]
pub struct TurnContext {
    inner: RwLock<TurnData>,
}

/// The fields of a [`TurnContext`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnData {
    /// The conversation (session) id.
    pub session_id: Option<String>,
    /// The user id.
    pub user_id: Option<String>,
    /// The rendered system prompt (set by the template stage).
    pub system_prompt: Option<String>,
    /// The unrendered prompt selected for this turn (set by the prompt-assembly stage).
    pub template: Option<PromptTemplate>,
    /// Tool names the model may use in this turn; `None` means no restriction. Entries may
    /// end in `*` to allow a prefix.
    pub allowed_tools: Option<Vec<String>>,
    /// Template variables (later writers win).
    pub variables: BTreeMap<String, String>,
    /// Model override for this turn.
    pub model: Option<String>,
    /// Application data for stages (for example provider request metadata).
    pub metadata: Map<String, Value>,
    /// Decisions on tool calls left pending by an earlier turn, by call id; the provider
    /// stage applies them when the turn resumes.
    pub approvals: BTreeMap<String, crate::provider::Approval>,
}

impl TurnContext {
    /// A context holding `data`.
    pub fn new(data: TurnData) -> Self {
        Self {
            inner: RwLock::new(data),
        }
    }

    /// Reads the data.
    pub fn read(&self) -> RwLockReadGuard<'_, TurnData> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the data.
    pub fn write(&self) -> RwLockWriteGuard<'_, TurnData> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the data.
    pub fn snapshot(&self) -> TurnData {
        self.read().clone()
    }

    /// Whether `tool` is allowed in this turn.
    pub fn tool_allowed(&self, tool: &str) -> bool {
        self.read()
            .allowed_tools
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|p| name_matches(p, tool)))
    }
}

/// Matches a tool name against an allow-list entry: exact, or a prefix when the entry ends
/// in `*`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl TurnData {
    /// Data for a session.
    pub fn for_session(session_id: impl Into<String>) -> Self {
        Self {
            session_id: Some(session_id.into()),
            ..Self::default()
        }
    }

    /// Sets the user.
    #[must_use]
    pub fn with_user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets a variable.
    #[must_use]
    pub fn with_variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matching() {
        let turn = TurnContext::default();
        assert!(
            turn.tool_allowed("anything"),
            "no list means no restriction"
        );
        turn.write().allowed_tools = Some(vec!["search".into(), "mcp__files__*".into()]);
        assert!(turn.tool_allowed("search"));
        assert!(turn.tool_allowed("mcp__files__read"));
        assert!(!turn.tool_allowed("mcp__shell__run"));
        assert!(!turn.tool_allowed("searcher"));
    }
}
