//! The legacy HTTP+SSE transport against the SSE bridge to the rmcp test server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use promptkit_mcp::{McpConfig, McpRegistry, McpServer, ServerConfig, ServerStatus, TransportKind};
use serde_json::json;

use crate::support::{call, eventually, sse_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_lists_and_calls_tools() {
    let server = sse_server(None).await;
    let registry =
        McpRegistry::new(McpConfig::new().with_server("old", ServerConfig::sse(&server.url)))
            .unwrap();
    let tools = registry.tools().await;
    assert_eq!(tools.len(), 19);
    let echo = call(&registry, "mcp__old__echo", json!({"text": "over sse"}))
        .await
        .unwrap();
    assert_eq!(echo.text_content(), "over sse");
    let sum = call(&registry, "mcp__old__add", json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(sum.structured, Some(json!({"sum": 3.0})));
    let failed = call(&registry, "mcp__old__fail", json!({"message": "bad"}))
        .await
        .unwrap();
    assert!(failed.is_error);
    assert_eq!(registry.health()[0].transport, TransportKind::Sse);

    // The server ends the event stream: the connection is lost and comes back on next use.
    let bye = call(&registry, "mcp__old__hangup", json!({}))
        .await
        .unwrap();
    assert_eq!(bye.text_content(), "bye");
    assert!(
        eventually(Duration::from_secs(5), || {
            registry.health()[0].status == ServerStatus::Disconnected
        })
        .await
    );
    let echo = call(&registry, "mcp__old__echo", json!({"text": "reconnected"}))
        .await
        .unwrap();
    assert_eq!(echo.text_content(), "reconnected");
    assert_eq!(registry.health()[0].restarts, 1);
    assert_eq!(server.sessions.load(Ordering::SeqCst), 2);
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_without_type_falls_back_to_legacy_sse() {
    let server = sse_server(None).await;
    let config = McpConfig::from_json(&format!(
        r#"{{"mcpServers": {{"old": {{"url": "{}"}}}}}}"#,
        server.url
    ))
    .unwrap();
    let registry = McpRegistry::new(config).unwrap();
    let who = call(&registry, "mcp__old__whoami", json!({}))
        .await
        .unwrap();
    assert_eq!(who.text_content(), "sse");
    assert_eq!(registry.health()[0].transport, TransportKind::Sse);
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_on_another_origin_is_refused() {
    let server = sse_server(Some("http://elsewhere.invalid/message".to_owned())).await;
    let client = McpServer::new("old", ServerConfig::sse(&server.url)).unwrap();
    let err = client.start().await.unwrap_err();
    assert!(err.to_string().contains("another origin"), "{err}");
    // Relative endpoints resolve against the stream's URL (the normal case is covered above).
    assert!(server.url.starts_with(&server.origin));
}
