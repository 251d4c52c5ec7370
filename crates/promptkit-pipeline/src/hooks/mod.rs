//! Hooks and guardrails run by the provider stage.
//!
//! - [`ProviderHook`]: before each model call (may rewrite the request or deny it) and after
//!   it (may rewrite the answer or deny it).
//! - [`ChunkInterceptor`]: sees every streamed text delta **before** it is forwarded and can
//!   stop the stream, so an offending chunk never reaches the output.
//! - [`ToolHook`]: before a tool runs (may rewrite the call or deny it) and after (may rewrite
//!   the result or deny it); decisions are honoured.
//!
//! [`Hooks`] holds them in registration order; the first denial wins. What a denial does is
//! configured with [`OnDeny`]: end the turn with a typed error, or answer with a replacement
//! message. Built-in guardrails live in [`guardrails`].

pub mod guardrails;

use std::fmt;
use std::sync::Arc;

use promptkit_core::{BoxFuture, Message, ProviderRequest, ToolCall, ToolResult};
use serde::{Deserialize, Serialize};

/// A denial: which hook, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The hook or guardrail that denied.
    pub hook: String,
    /// Why, in words fit for logs (and for the model, for tool denials).
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.hook, self.reason)
    }
}

/// The outcome of a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on (the hook may have rewritten what it was given).
    Allow,
    /// Stop.
    Deny(Violation),
}

impl Decision {
    /// A denial by `hook`.
    pub fn deny(hook: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Deny(Violation {
            hook: hook.into(),
            reason: reason.into(),
        })
    }
}

/// Runs around every model call. Object-safe.
pub trait ProviderHook: Send + Sync + fmt::Debug {
    /// The hook's name (reported in violations).
    fn name(&self) -> &str;

    /// Before the call; may rewrite `request`.
    fn before_call<'a>(&'a self, request: &'a mut ProviderRequest) -> BoxFuture<'a, Decision> {
        let _ = request;
        Box::pin(async { Decision::Allow })
    }

    /// After the call; may rewrite the assistant `message`.
    fn after_call<'a>(&'a self, message: &'a mut Message) -> BoxFuture<'a, Decision> {
        let _ = message;
        Box::pin(async { Decision::Allow })
    }
}

/// Sees streamed text before it is forwarded. Synchronous: it runs on every delta.
pub trait ChunkInterceptor: Send + Sync + fmt::Debug {
    /// The interceptor's name.
    fn name(&self) -> &str;

    /// `text` is the answer so far including `delta`. Return [`Decision::Deny`] to stop the
    /// stream; `delta` is then not forwarded.
    fn on_chunk(&self, text: &str, delta: &str) -> Decision;
}

/// Runs around every tool call. Object-safe.
pub trait ToolHook: Send + Sync + fmt::Debug {
    /// The hook's name.
    fn name(&self) -> &str;

    /// Before the call runs; may rewrite `call`. A denial turns into an error result for the
    /// model and the tool does not run.
    fn before_execution<'a>(&'a self, call: &'a mut ToolCall) -> BoxFuture<'a, Decision> {
        let _ = call;
        Box::pin(async { Decision::Allow })
    }

    /// After the call; may rewrite `result`. A denial replaces the result with an error
    /// result for the model.
    fn after_execution<'a>(
        &'a self,
        call: &'a ToolCall,
        result: &'a mut ToolResult,
    ) -> BoxFuture<'a, Decision> {
        let _ = (call, result);
        Box::pin(async { Decision::Allow })
    }
}

/// What a denied model call does to the turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnDeny {
    /// End the turn with [`TurnError::Denied`](crate::provider::TurnError::Denied).
    #[default]
    Fail,
    /// Answer with this text instead (finish reason `content_filter`) and end the turn normally.
    Replace(String),
}

/// The hooks of a provider stage, in registration order.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub(crate) provider: Vec<Arc<dyn ProviderHook>>,
    pub(crate) chunk: Vec<Arc<dyn ChunkInterceptor>>,
    pub(crate) tool: Vec<Arc<dyn ToolHook>>,
    pub(crate) on_deny: OnDeny,
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider hook.
    #[must_use]
    pub fn provider(mut self, hook: impl ProviderHook + 'static) -> Self {
        self.provider.push(Arc::new(hook));
        self
    }

    /// Adds a chunk interceptor.
    #[must_use]
    pub fn chunk(mut self, interceptor: impl ChunkInterceptor + 'static) -> Self {
        self.chunk.push(Arc::new(interceptor));
        self
    }

    /// Adds a tool hook.
    #[must_use]
    pub fn tool(mut self, hook: impl ToolHook + 'static) -> Self {
        self.tool.push(Arc::new(hook));
        self
    }

    /// Adds a guardrail as both a provider hook and a chunk interceptor, so it checks
    /// streamed output before it is forwarded as well as complete answers.
    #[must_use]
    pub fn guardrail<G>(mut self, guardrail: G) -> Self
    where
        G: ProviderHook + ChunkInterceptor + 'static,
    {
        let g = Arc::new(guardrail);
        self.provider.push(g.clone());
        self.chunk.push(g);
        self
    }

    /// Sets what a denial does.
    #[must_use]
    pub fn on_deny(mut self, on_deny: OnDeny) -> Self {
        self.on_deny = on_deny;
        self
    }

    /// Whether there is no hook at all.
    pub fn is_empty(&self) -> bool {
        self.provider.is_empty() && self.chunk.is_empty() && self.tool.is_empty()
    }

    pub(crate) async fn before_call(&self, request: &mut ProviderRequest) -> Decision {
        for h in &self.provider {
            if let d @ Decision::Deny(_) = h.before_call(request).await {
                return d;
            }
        }
        Decision::Allow
    }

    pub(crate) async fn after_call(&self, message: &mut Message) -> Decision {
        for h in &self.provider {
            if let d @ Decision::Deny(_) = h.after_call(message).await {
                return d;
            }
        }
        Decision::Allow
    }

    pub(crate) fn on_chunk(&self, text: &str, delta: &str) -> Decision {
        for h in &self.chunk {
            if let d @ Decision::Deny(_) = h.on_chunk(text, delta) {
                return d;
            }
        }
        Decision::Allow
    }

    pub(crate) async fn before_execution(&self, call: &mut ToolCall) -> Decision {
        for h in &self.tool {
            if let d @ Decision::Deny(_) = h.before_execution(call).await {
                return d;
            }
        }
        Decision::Allow
    }

    pub(crate) async fn after_execution(
        &self,
        call: &ToolCall,
        result: &mut ToolResult,
    ) -> Decision {
        for h in &self.tool {
            if let d @ Decision::Deny(_) = h.after_execution(call, result).await {
                return d;
            }
        }
        Decision::Allow
    }
}
