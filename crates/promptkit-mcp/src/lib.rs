//! Model Context Protocol client for the PromptKit runtime: MCP servers as tool sources.
//!
//! This crate connects [MCP](https://modelcontextprotocol.io) servers and exposes their tools
//! through the core tool seams, so the tool registry and the provider stage's tool loop use
//! them like any other tool. It is built on [rmcp](https://docs.rs/rmcp) (client features
//! only), whose types never appear in this crate's API.
//!
//! - [`McpConfig`] and [`ServerConfig`]: servers from the common `mcpServers` JSON (or YAML)
//!   shape: `command`/`args`/`env`/`cwd` for stdio servers, `url`/`headers`/`bearer_token`
//!   for HTTP servers, per-server [`ToolFilter`]s and timeouts, `${VAR}` expansion.
//! - [`McpRegistry`]: every server of a configuration, started lazily or eagerly
//!   ([`McpRegistry::start_all`]), with [`ServerHealth`] per server, restarts of lost
//!   connections on next use, and [`ToolSet`](promptkit_core::ToolSet) over all their tools.
//! - [`McpServer`]: one server: its tools ([`McpTool`], each with a [`ToolDef`](promptkit_core::ToolDef) and an
//!   `Arc<dyn ToolExecutor>`), resources ([`McpServer::list_resources`],
//!   [`McpServer::read_resource`]) and prompts ([`McpServer::list_prompts`],
//!   [`McpServer::get_prompt`]).
//! - Transports ([`TransportKind`]): stdio child processes (own process group, stderr drained
//!   into `tracing`, graceful shutdown then a group kill, a watchdog so no server outlives
//!   this process), streamable HTTP (headers, bearer auth, one transparent re-initialisation
//!   on an expired session) and the legacy HTTP+SSE transport; a URL without a `type`
//!   tries streamable HTTP, then SSE.
//! - Tool names are namespaced `mcp__<server>__<tool>` ([`qualified_name`],
//!   [`assign_names`]), so two servers offering the same tool never collide. A
//!   `notifications/tools/list_changed` makes the next listing fresh and bumps
//!   [`McpRegistry::tools_generation`]; a flood of them is re-listed at a bounded rate.
//! - Listings are checked tool by tool: a tool whose input schema does not compile, is not
//!   an object or is too large is left out, a long description is cut, and at most
//!   `max_tools` tools are offered per server, with warnings in the log and in
//!   [`ServerHealth::listing_warnings`]. A listing that hangs is given up after
//!   `list_timeout_ms` and not tried again before a back-off, so it cannot delay every turn.
//! - Results map to [`ToolResult`](promptkit_core::ToolResult)s: text, images and audio as
//!   content parts, embedded resources by media type, structured content as structured output,
//!   and `isError` as an error result the model sees, all within `max_result_bytes` (text cut
//!   with a marker, media that does not fit dropped with a note). A call that fails after it
//!   may have reached the server is never repeated.
//! - Secrets (header values, the bearer token, `env` values, and every `${VAR}` expanded into
//!   the URL, `command` or `args`) never appear in errors, health or logs, server stderr
//!   included; the HTTP transports follow redirects only within the server's origin.
//!
//! # Who should depend on this crate
//!
//! Applications that want MCP tools usually take it through the `promptkit` facade (feature
//! `mcp`), where MCP tools are registered next to other tools. Depend on it directly to use MCP
//! servers without the rest of the runtime, for example as the tool set of your own loop.
//!
//! # Example
//!
//! Reading a configuration and inspecting what it will run (nothing starts until a server is
//! used):
//!
//! ```
//! use promptkit_mcp::{
//!     ClientOptions, McpConfig, McpRegistry, ServerStatus, TransportKind, qualified_name,
//!     split_qualified_name,
//! };
//!
//! let config = McpConfig::from_json(r#"{
//!   "mcpServers": {
//!     "files": {
//!       "command": "npx",
//!       "args": ["-y", "@modelcontextprotocol/server-filesystem", "${PROJECT_DIR}"],
//!       "tools": {"deny": ["write_*", "move_file"]}
//!     },
//!     "tickets": {
//!       "type": "http",
//!       "url": "https://tickets.example/mcp",
//!       "bearer_token": "${TICKETS_TOKEN}",
//!       "timeout_ms": 10000
//!     }
//!   }
//! }"#)?;
//!
//! let files = &config.servers["files"];
//! assert_eq!(files.transport_kind()?, TransportKind::Stdio);
//! assert!(files.tools.allows("read_text_file"));
//! assert!(!files.tools.allows("write_file"));
//!
//! // `${VAR}`s are read when a server starts, from the process environment or a lookup.
//! let options = ClientOptions::new().with_env(|name| match name {
//!     "PROJECT_DIR" => Some("/srv/project".to_owned()),
//!     "TICKETS_TOKEN" => Some("token-from-a-secret-store".to_owned()),
//!     _ => None,
//! });
//! let registry = McpRegistry::with_options(config, &options)?;
//! for health in registry.health() {
//!     assert_eq!(health.status, ServerStatus::Idle);
//! }
//!
//! // Both servers could offer a `search` tool; their names never collide.
//! assert_eq!(qualified_name("tickets", "search"), "mcp__tickets__search");
//! assert_eq!(split_qualified_name("mcp__files__search"), Some(("files", "search")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Using the tools (this one needs a server, so it is not run here):
//!
//! ```no_run
//! use std::sync::Arc;
//! use promptkit_core::{ToolCall, ToolContext, ToolSet};
//! use promptkit_mcp::{McpConfig, McpRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(McpRegistry::new(McpConfig::from_file("mcp.json")?)?);
//! registry.start_all().await; // or let the first use start them
//! for tool in registry.tools().await {
//!     // Register `tool.definition()` and `tool.executor()` in a tool registry, or...
//!     println!("{}: {}", tool.name(), tool.definition().description);
//! }
//! // ...use the registry itself as a provider stage's tool set.
//! let call = ToolCall::new("call_1", "mcp__files__read_text_file", serde_json::json!({"path": "README.md"}));
//! let result = registry.execute(&call, &ToolContext::default()).await?;
//! println!("{}", result.text_content());
//! registry.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.95); see the repository README.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod config;
mod connection;
mod convert;
mod error;
mod listing;
mod names;
mod process;
mod registry;
mod server;
mod sse;
mod types;

pub use config::{McpConfig, ServerConfig, ToolFilter, TransportKind, expand_variables};
pub use error::McpError;
pub use names::{
    MAX_SERVER_NAME_LEN, MAX_TOOL_NAME_LEN, NAMESPACE, assign_names, qualified_name,
    split_qualified_name, validate_server_name,
};
pub use registry::McpRegistry;
pub use server::{McpServer, McpTool};
#[doc(hidden)]
pub use sse::decode_events_for_fuzzing;
pub use types::{
    ClientOptions, Prompt, PromptArgument, PromptResult, Resource, ResourceContent, ServerHealth,
    ServerInfo, ServerStatus, ToolAnnotations,
};
