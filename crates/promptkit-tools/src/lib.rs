//! Tools for the PromptKit runtime.
//!
//! This crate will hold the tool registry (implementing [`promptkit_core::ToolSet`]),
//! descriptor loading from JSON and YAML, JSON-schema argument validation and the
//! executors (in-process, HTTP, subprocess, mock) implementing
//! [`promptkit_core::ToolExecutor`]. Until they land, the crate re-exports the seams.
//!
//! # Example
//!
//! ```
//! use promptkit_tools::{ToolCall, ToolDef};
//! use serde_json::json;
//!
//! let def = ToolDef::new(
//!     "lookup_order",
//!     "Look up an order by id",
//!     json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
//! );
//! let call = ToolCall::from_raw_arguments("call_1", &def.name, r#"{"order_id":"12345"}"#);
//! assert_eq!(call.arguments["order_id"], "12345");
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub use promptkit_core::{
    ToolCall, ToolContext, ToolDef, ToolError, ToolExecutor, ToolResult, ToolSet,
};
