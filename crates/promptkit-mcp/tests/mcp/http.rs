//! Streamable HTTP against the rmcp test server on 127.0.0.1.

use std::sync::atomic::Ordering;

use promptkit_core::{ContentPart, ToolError};
use promptkit_mcp::{
    ClientOptions, McpConfig, McpError, McpRegistry, McpServer, ServerConfig, ServerStatus,
    TransportKind,
};
use serde_json::json;

use crate::support::{call, http_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_with_headers_and_bearer_auth() {
    let server = http_server(vec![
        ("authorization", "Bearer s3cret-token".to_owned()),
        ("x-team", "docs".to_owned()),
    ])
    .await;
    let options = ClientOptions::new()
        .with_env(|name| (name == "MCP_TOKEN").then(|| "s3cret-token".to_owned()));
    let config = McpConfig::from_json(&format!(
        r#"{{"mcpServers": {{"web": {{
            "type": "streamable_http", "url": "{}",
            "bearer_token": "${{MCP_TOKEN}}", "headers": {{"X-Team": "docs"}}
        }}}}}}"#,
        server.url
    ))
    .unwrap();
    let registry = McpRegistry::with_options(config, &options).unwrap();

    let tools = registry.tools().await;
    assert_eq!(tools.len(), 19);
    let echo = call(&registry, "mcp__web__echo", json!({"text": "over http"}))
        .await
        .unwrap();
    assert_eq!(echo.text_content(), "over http");
    let image = call(&registry, "mcp__web__image", json!({})).await.unwrap();
    assert!(matches!(image.content[1], ContentPart::Image(_)));
    let failed = call(&registry, "mcp__web__fail", json!({"message": "nope"}))
        .await
        .unwrap();
    assert!(failed.is_error);
    let health = &registry.health()[0];
    assert_eq!(health.status, ServerStatus::Running);
    assert_eq!(health.transport, TransportKind::StreamableHttp);
    assert_eq!(server.state.unauthorized.load(Ordering::SeqCst), 0);
    assert_eq!(server.state.counters.calls.load(Ordering::SeqCst), 3);
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_fails_the_start_without_leaking_it() {
    let server = http_server(vec![("authorization", "Bearer right-token".to_owned())]).await;
    let client = McpServer::new(
        "web",
        ServerConfig::streamable_http(&server.url).with_bearer_token("wrong-token-value"),
    )
    .unwrap();
    let err = client.start().await.unwrap_err();
    assert!(matches!(err, McpError::Start { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-token-value"), "{text}");
    assert!(server.state.unauthorized.load(Ordering::SeqCst) >= 1);
    assert!(
        !format!("{:?}", client.health()).contains("wrong-token-value"),
        "{:?}",
        client.health()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_reinitialised_once_and_the_call_runs_once() {
    let server = http_server(Vec::new()).await;
    let registry = McpRegistry::new(
        McpConfig::new().with_server("web", ServerConfig::streamable_http(&server.url)),
    )
    .unwrap();
    registry.tools().await;
    assert_eq!(server.state.initializes.load(Ordering::SeqCst), 1);

    // The server forgets the session: the next call gets 404.
    server.state.reject_next.store(404, Ordering::SeqCst);
    let echo = call(&registry, "mcp__web__echo", json!({"text": "again"}))
        .await
        .unwrap();
    assert_eq!(echo.text_content(), "again");
    assert_eq!(server.state.reject_next.load(Ordering::SeqCst), 0);
    // One new handshake, and the tool ran once (the 404 means it never reached the tool).
    assert_eq!(server.state.initializes.load(Ordering::SeqCst), 2);
    assert_eq!(server.state.counters.calls.load(Ordering::SeqCst), 1);
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_without_type_is_detected_as_streamable_http() {
    let server = http_server(Vec::new()).await;
    let config = McpConfig::from_json(&format!(
        r#"{{"mcpServers": {{"web": {{"url": "{}"}}}}}}"#,
        server.url
    ))
    .unwrap();
    let registry = McpRegistry::new(config).unwrap();
    assert_eq!(registry.health()[0].transport, TransportKind::Auto);
    let who = call(&registry, "mcp__web__whoami", json!({}))
        .await
        .unwrap();
    assert_eq!(who.text_content(), "http");
    assert_eq!(
        registry.health()[0].transport,
        TransportKind::StreamableHttp
    );
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_is_not_repeated_and_the_next_use_reconnects() {
    let server = http_server(Vec::new()).await;
    let registry = McpRegistry::new(
        McpConfig::new().with_server("web", ServerConfig::streamable_http(&server.url)),
    )
    .unwrap();
    registry.tools().await;
    // Some servers answer 400 for a session they no longer know (after a restart): the
    // call fails, and is not sent again behind the caller's back.
    server.state.reject_next.store(400, Ordering::SeqCst);
    let failed = call(&registry, "mcp__web__echo", json!({"text": "lost"}))
        .await
        .unwrap_err();
    assert!(matches!(failed, ToolError::Execution { .. }), "{failed}");
    assert_eq!(server.state.counters.calls.load(Ordering::SeqCst), 0);
    assert_eq!(registry.health()[0].status, ServerStatus::Disconnected);
    // The next use opens a new session.
    let echo = call(&registry, "mcp__web__echo", json!({"text": "back"}))
        .await
        .unwrap();
    assert_eq!(echo.text_content(), "back");
    assert_eq!(server.state.counters.calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.state.initializes.load(Ordering::SeqCst), 2);
    assert_eq!(registry.health()[0].restarts, 1);
    registry.shutdown().await;
}
