//! In-process tools: async Rust functions with typed arguments.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use promptkit_core::{
    BoxFuture, ToolCall, ToolContext, ToolDef, ToolError, ToolExecutor, ToolResult,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

type Handler<A, R> = dyn Fn(A, ToolContext) -> BoxFuture<'static, Result<R, String>> + Send + Sync;

/// A tool implemented by an async function. The argument schema is derived from the argument
/// type (`#[derive(Deserialize, JsonSchema)]`); the return value is serialised: a string
/// becomes text, anything else structured output. An `Err(message)` becomes a tool error the
/// model sees.
///
/// ```
/// use promptkit_tools::FunctionTool;
/// use schemars::JsonSchema;
/// use serde::Deserialize;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Add {
///     /// First addend.
///     a: i64,
///     /// Second addend.
///     b: i64,
/// }
///
/// let add = FunctionTool::new("add", "Adds two integers", |args: Add, _ctx| async move {
///     Ok::<_, String>(args.a + args.b)
/// });
/// let def = add.definition();
/// assert_eq!(def.input_schema["properties"]["a"]["type"], "integer");
/// ```
pub struct FunctionTool<A, R> {
    def: ToolDef,
    handler: Arc<Handler<A, R>>,
    _marker: PhantomData<fn(A) -> R>,
}

impl<A, R> std::fmt::Debug for FunctionTool<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionTool")
            .field("name", &self.def.name)
            .finish_non_exhaustive()
    }
}

impl<A, R> FunctionTool<A, R>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    R: Serialize + Send + 'static,
{
    /// A tool named `name` running `f`.
    pub fn new<F, Fut>(name: impl Into<String>, description: impl Into<String>, f: F) -> Self
    where
        F: Fn(A, ToolContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, String>> + Send + 'static,
    {
        let mut schema = serde_json::to_value(schemars::schema_for!(A))
            .unwrap_or_else(|_| promptkit_core::empty_object_schema());
        if let Value::Object(map) = &mut schema {
            // Vendors want a bare object schema.
            map.remove("$schema");
            map.remove("title");
        }
        Self {
            def: ToolDef::new(name, description, schema),
            handler: Arc::new(move |a, ctx| Box::pin(f(a, ctx))),
            _marker: PhantomData,
        }
    }

    /// The definition (name, description, derived schema).
    pub fn definition(&self) -> ToolDef {
        self.def.clone()
    }
}

impl<A, R> ToolExecutor for FunctionTool<A, R>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    R: Serialize + Send + 'static,
{
    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            let args: A = serde_json::from_value(call.arguments.clone()).map_err(|e| {
                ToolError::InvalidArguments {
                    name: call.name.clone(),
                    message: e.to_string(),
                }
            })?;
            match (self.handler)(args, ctx.clone()).await {
                Ok(value) => {
                    let value = serde_json::to_value(value).map_err(|e| ToolError::Execution {
                        name: call.name.clone(),
                        message: format!("result could not be serialised: {e}"),
                        source: None,
                    })?;
                    let mut result = ToolResult::text(&call.id, &call.name, "");
                    match value {
                        Value::String(s) => {
                            result.content = vec![promptkit_core::ContentPart::text(s)];
                        }
                        other => {
                            result.content.clear();
                            result.structured = Some(other);
                        }
                    }
                    Ok(result)
                }
                Err(message) => Ok(ToolResult::error(
                    &call.id,
                    &call.name,
                    promptkit_core::ToolErrorKind::Execution,
                    message,
                )),
            }
        })
    }
}
