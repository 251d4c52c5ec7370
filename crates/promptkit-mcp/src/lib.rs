//! Model Context Protocol client for the PromptKit runtime.
//!
//! This crate will connect MCP servers (stdio and streamable HTTP through rmcp, and the
//! legacy HTTP+SSE transport) and expose their tools through
//! [`promptkit_core::ToolExecutor`], namespaced `mcp__<server>__<tool>`. Until it lands,
//! the crate re-exports the seam.
//!
//! # Example
//!
//! ```
//! use promptkit_mcp::{ToolErrorKind, ToolResult};
//!
//! // An MCP result with `isError: true` becomes a tool error result for the model.
//! let result = ToolResult::error("call_1", "mcp__files__read", ToolErrorKind::Execution, "no such file");
//! assert!(result.is_error);
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub use promptkit_core::{ToolErrorKind, ToolExecutor, ToolResult};
