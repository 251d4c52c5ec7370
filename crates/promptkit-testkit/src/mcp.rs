//! An MCP server for tests: an order service with one tool, `lookup_order`, served by rmcp
//! over streamable HTTP on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig as McpServerInfo,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::json;

/// The order service: one MCP tool, `lookup_order`.
#[derive(Debug, Clone)]
pub struct Orders {
    calls: Arc<AtomicUsize>,
}

impl ServerHandler for Orders {
    fn get_info(&self) -> McpServerInfo {
        McpServerInfo::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string"}}
        });
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "lookup_order",
            "Looks up an order by id",
            Arc::new(schema.as_object().unwrap().clone()),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let order_id = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("order_id"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let order = json!({"order_id": order_id, "status": "shipped", "eta": "2026-04-10"});
        let mut result = CallToolResult::success(vec![ContentBlock::text(order.to_string())]);
        result.structured_content = Some(order);
        Ok(result.into())
    }
}

/// Serves the order service on 127.0.0.1 until the runtime stops; returns its URL (ending in
/// `/mcp`) and a counter of the tool calls it ran.
///
/// `lookup_order` answers `{"order_id": …, "status": "shipped", "eta": "2026-04-10"}` as
/// text and as structured content.
pub async fn order_service() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = Orders {
        calls: calls.clone(),
    };
    let service: StreamableHttpService<Orders, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::default(),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().nest_service("/mcp", service)).await;
    });
    (format!("http://{addr}/mcp"), calls)
}
