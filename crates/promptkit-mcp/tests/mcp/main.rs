//! Integration tests of promptkit-mcp against real MCP servers: one built here on rmcp's
//! server side (over stdio, as this very binary re-executed, and over streamable HTTP and a
//! legacy SSE bridge on 127.0.0.1), and the reference server
//! `@modelcontextprotocol/server-everything` from npm.

#![cfg(unix)]

mod everything;
mod http;
mod lifecycle;
mod limits;
mod secrets;
mod sse;
mod stdio;
mod support;

use std::io::Write as _;
use std::time::Duration;

use promptkit_mcp::{McpConfig, McpRegistry};

/// Not a test: the stdio MCP server other tests start by running this binary with
/// `PROMPTKIT_MCP_TEST_SERVER` set (see `support::stdio_server`).
#[test]
#[ignore = "entry point of the stdio test server; other tests run it"]
fn server_entry() {
    if let Ok(name) = std::env::var(support::SERVER_ENV) {
        support::server_main(&name);
    }
}

/// Not a test: the owner of a stdio client, killed by `lifecycle::killing_the_owner_leaves_no_server`.
/// Starts a lingering server with a grandchild, prints `PIDS <server> <grandchild>`, then waits
/// to be killed.
#[test]
#[ignore = "entry point of the owner process; a lifecycle test runs it"]
fn owner_entry() {
    if std::env::var_os(support::OWNER_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = McpConfig::new().with_server(
            "owned",
            support::stdio_server("owned")
                .with_env(support::LINGER_ENV, "1")
                .with_env(support::GRANDCHILD_ENV, "1"),
        );
        let registry = McpRegistry::new(config).unwrap();
        let result = support::call(&registry, "mcp__owned__pids", serde_json::json!({}))
            .await
            .unwrap();
        let pids = result.structured.unwrap();
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "PIDS {} {}", pids["pid"], pids["grandchild"]).unwrap();
        stdout.flush().unwrap();
        drop(stdout);
        // Keep the registry alive until this process is killed.
        tokio::time::sleep(Duration::from_secs(600)).await;
        drop(registry);
    });
}
