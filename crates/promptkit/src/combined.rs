//! Several tool sets offered as one.

use std::sync::Arc;

use promptkit_core::{BoxFuture, ToolCall, ToolContext, ToolDef, ToolError, ToolResult, ToolSet};

/// Tool sets offered to the model as one: a tool registry and MCP servers, say.
///
/// The definitions are those of every set, sorted by name (sets are asked on each listing, so
/// a set whose tools change, such as an MCP server announcing `list_changed`, is current). A
/// call goes to the first set, in the order given, that lists the tool's name.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # #[cfg(feature = "tools")] {
/// use std::sync::Arc;
/// use promptkit::{CombinedTools, ToolCall, ToolContext, ToolSet};
/// use promptkit::tools::{ToolDescriptor, ToolRegistry};
/// use serde_json::json;
///
/// let local = ToolRegistry::new();
/// local
///     .register(ToolDescriptor::new("clock", "Tells the time")
///         .with_executor("mock", json!({"result": "12:00"})))
///     .unwrap();
/// let orders = ToolRegistry::new();
/// orders
///     .register(ToolDescriptor::new("lookup_order", "Finds an order")
///         .with_executor("mock", json!({"result": {"status": "shipped"}})))
///     .unwrap();
///
/// let tools = CombinedTools::new(vec![Arc::new(local), Arc::new(orders)]);
/// let names: Vec<_> = tools.definitions().await.unwrap().into_iter().map(|d| d.name).collect();
/// assert_eq!(names, ["clock", "lookup_order"]);
/// let call = ToolCall::new("c1", "lookup_order", json!({}));
/// let result = tools.execute(&call, &ToolContext::default()).await.unwrap();
/// assert!(result.text_content().contains("shipped"));
/// # }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CombinedTools {
    sets: Vec<Arc<dyn ToolSet>>,
}

impl CombinedTools {
    /// The sets, in the order calls are routed.
    pub fn new(sets: Vec<Arc<dyn ToolSet>>) -> Self {
        Self { sets }
    }

    /// Adds a set after the others.
    #[must_use]
    pub fn with(mut self, set: Arc<dyn ToolSet>) -> Self {
        self.sets.push(set);
        self
    }
}

impl ToolSet for CombinedTools {
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            for set in &self.sets {
                all.extend(set.definitions().await?);
            }
            all.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(all)
        })
    }

    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            for set in &self.sets {
                if set
                    .definitions()
                    .await?
                    .iter()
                    .any(|def| def.name == call.name)
                {
                    return set.execute(call, ctx).await;
                }
            }
            Err(ToolError::UnknownTool {
                name: call.name.clone(),
            })
        })
    }

    /// When every set does.
    fn enforces_deadline(&self) -> bool {
        self.sets.iter().all(|set| set.enforces_deadline())
    }
}
