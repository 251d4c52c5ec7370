//! The registry: every server of a configuration, as one tool set.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::join_all;
use promptkit_core::{BoxFuture, ToolCall, ToolContext, ToolDef, ToolError, ToolResult, ToolSet};
use tokio::sync::watch;

use crate::config::McpConfig;
use crate::error::McpError;
use crate::names::split_qualified_name;
use crate::server::{McpServer, McpTool, wait_for_generation};
use crate::types::{ClientOptions, ServerHealth};

/// The servers of an [`McpConfig`].
///
/// Servers start lazily, on first use, or eagerly with [`McpRegistry::start_all`]; all
/// enabled servers start concurrently when their tools are first needed. A server whose
/// connection is lost is started again on next use; one whose start failed is retried after
/// a back-off (1 s, doubling up to 30 s).
///
/// The registry implements [`ToolSet`], so it can be a provider stage's tool set on its own.
/// To combine MCP tools with others in a tool registry, register each [`McpTool`] from
/// [`McpRegistry::tools`] (its definition and executor) and re-register when
/// [`McpRegistry::tools_changed`] fires.
///
/// Dropping the registry (and every executor it handed out) stops every server; prefer
/// [`McpRegistry::shutdown`], which gives stdio servers their grace period and waits.
pub struct McpRegistry {
    servers: BTreeMap<String, McpServer>,
    changes: Arc<watch::Sender<u64>>,
}

impl fmt::Debug for McpRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpRegistry")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl McpRegistry {
    /// A registry of `config`'s servers with default options. Nothing starts yet.
    ///
    /// # Errors
    /// [`McpError::Config`] for an invalid configuration.
    pub fn new(config: McpConfig) -> Result<Self, McpError> {
        Self::with_options(config, &ClientOptions::default())
    }

    /// [`McpRegistry::new`] with `options`.
    ///
    /// # Errors
    /// As [`McpRegistry::new`].
    pub fn with_options(config: McpConfig, options: &ClientOptions) -> Result<Self, McpError> {
        config.validate()?;
        let changes = Arc::new(watch::Sender::new(0));
        let servers = config
            .servers
            .into_iter()
            .map(|(name, server)| {
                McpServer::build(name.clone(), server, options, changes.clone())
                    .map(|server| (name, server))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { servers, changes })
    }

    /// The server named `name`.
    ///
    /// # Errors
    /// [`McpError::UnknownServer`].
    pub fn server(&self, name: &str) -> Result<&McpServer, McpError> {
        self.servers
            .get(name)
            .ok_or_else(|| McpError::UnknownServer(name.to_owned()))
    }

    /// Every server, by name.
    pub fn servers(&self) -> impl Iterator<Item = &McpServer> {
        self.servers.values()
    }

    fn enabled(&self) -> impl Iterator<Item = &McpServer> {
        self.servers.values().filter(|s| !s.config().disabled)
    }

    /// Starts every enabled server concurrently and lists its tools (eager start). Returns
    /// each server's outcome; a failed server is retried on its next use.
    pub async fn start_all(&self) -> Vec<(String, Result<(), McpError>)> {
        join_all(
            self.enabled()
                .map(|server| async move { (server.name().to_owned(), server.start().await) }),
        )
        .await
    }

    /// The tools of every enabled server, sorted by qualified name, starting servers as
    /// needed. A server that fails is left out (with a warning in the log and its error in
    /// [`McpRegistry::health`]), so one broken server does not hide the others' tools.
    pub async fn tools(&self) -> Vec<McpTool> {
        let listed = join_all(self.enabled().map(McpServer::tools)).await;
        let mut tools = Vec::new();
        for (server, result) in self.enabled().zip(listed) {
            match result {
                Ok(server_tools) => tools.extend(server_tools),
                Err(e) => tracing::warn!(
                    server = server.name(),
                    error = %e,
                    "MCP server's tools are unavailable"
                ),
            }
        }
        tools.sort_by(|a, b| a.name().cmp(b.name()));
        tools
    }

    /// The health of every server, by name.
    pub fn health(&self) -> Vec<ServerHealth> {
        self.servers.values().map(McpServer::health).collect()
    }

    /// A counter that grows when a server's tool list may have changed.
    pub fn tools_generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// Waits until [`McpRegistry::tools_generation`] exceeds `since`, and returns it. A
    /// facade keeping a tool registry in sync loops on this and re-registers
    /// [`McpRegistry::tools`].
    pub async fn tools_changed(&self, since: u64) -> u64 {
        wait_for_generation(&self.changes, since).await
    }

    /// Shuts every server down concurrently (see [`McpServer::shutdown`]).
    pub async fn shutdown(&self) {
        join_all(self.servers.values().map(McpServer::shutdown)).await;
    }
}

impl ToolSet for McpRegistry {
    /// The definitions of every enabled server's tools, sorted; a server that fails is left
    /// out (see [`McpRegistry::tools`]).
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>> {
        Box::pin(async move {
            let listed = join_all(self.enabled().map(ToolSet::definitions)).await;
            let mut definitions = Vec::new();
            for (server, result) in self.enabled().zip(listed) {
                match result {
                    Ok(defs) => definitions.extend(defs),
                    Err(e) => tracing::warn!(
                        server = server.name(),
                        error = %e,
                        "MCP server's tools are unavailable"
                    ),
                }
            }
            definitions.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(definitions)
        })
    }

    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            let server = split_qualified_name(&call.name)
                .and_then(|(server, _)| self.servers.get(server))
                .ok_or_else(|| ToolError::UnknownTool {
                    name: call.name.clone(),
                })?;
            server.execute(call, ctx).await
        })
    }

    /// Calls go to a server, which bounds each by the call's deadline.
    fn enforces_deadline(&self) -> bool {
        true
    }
}
