//! Tools for the PromptKit runtime: descriptors, a registry, validation and executors.
//!
//! - [`ToolDescriptor`]: name, description, argument and result schemas, executor kind,
//!   timeout, rate limit, labels and executor settings; loaded from JSON or YAML files (plain
//!   or `kind: Tool` manifests) with errors that name the file and the field.
//! - [`ToolRegistry`]: implements [`promptkit_core::ToolSet`] for the provider stage: sorted
//!   definitions, an allow-list with `*` prefixes, `ns__tool` namespaces, argument coercion of
//!   common model mistakes (reported, never silent) and JSON Schema validation, per-tool
//!   timeouts and rate limits, output validation and a result size cap.
//! - Executors ([`executors`]): in-process async functions with typed arguments
//!   ([`FunctionTool`], schema derived from the Rust type), HTTP endpoints (feature `http`:
//!   URL templates whose arguments can fill the path and query but never pick the host or
//!   climb the path, no redirects unless a tool asks for same-origin ones, an optional host
//!   allow-list, fixed fields the model cannot override, secret headers from the environment
//!   that never appear in errors, query or JSON body, response selection by JSON Pointer, a
//!   size cap), subprocesses (JSON over stdin/stdout, killed with their children on timeout,
//!   cancellation and at the end of every call) and mocks.
//!
//! # Feature flags
//!
//! | Feature | Enables | Default |
//! |---|---|---|
//! | `http` | the `http` executor kind (reqwest with rustls) | yes |
//!
//! **Who should depend on this crate:** applications and tool sources that want a registry;
//! the provider stage only sees the core `ToolSet` seam.
//!
//! # Example
//!
//! ```
//! use promptkit_core::{ToolCall, ToolContext, ToolSet};
//! use promptkit_tools::{FunctionTool, ToolDescriptor, ToolRegistry};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Lookup {
//!     /// The order id.
//!     order_id: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = ToolRegistry::new();
//! registry.register_function(FunctionTool::new(
//!     "lookup_order",
//!     "Looks up an order",
//!     |args: Lookup, _ctx| async move { Ok::<_, String>(json!({"order_id": args.order_id, "status": "shipped"})) },
//! ));
//! registry.register(
//!     ToolDescriptor::new("greet", "Greets someone")
//!         .with_input_schema(json!({"type": "object", "properties": {"name": {"type": "string"}}}))
//!         .with_executor("mock", json!({"template": "Hello, {{name}}!"})),
//! )?;
//!
//! let names: Vec<String> = registry.definitions().await?.into_iter().map(|d| d.name).collect();
//! assert_eq!(names, ["greet", "lookup_order"]);
//!
//! // The model sent the id as a number: it is coerced to the declared string type.
//! let call = ToolCall::new("c1", "lookup_order", json!({"order_id": 12345}));
//! let err = registry.execute(&call, &ToolContext::default()).await.unwrap_err();
//! assert!(err.to_string().contains("invalid arguments"));
//! let call = ToolCall::new("c2", "lookup_order", json!({"order_id": "12345"}));
//! let result = registry.execute(&call, &ToolContext::default()).await?;
//! assert_eq!(result.structured.unwrap()["status"], "shipped");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod cap;
mod descriptor;
pub mod executors;
pub mod names;
mod registry;
pub mod validate;

pub use descriptor::{DescriptorError, ToolDescriptor};
pub use executors::{FunctionTool, MockExecutor, SubprocessExecutor};
pub use registry::{ExecutorFactory, ToolRegistry};
