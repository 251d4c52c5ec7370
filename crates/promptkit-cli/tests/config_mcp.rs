//! The configuration file and MCP servers from it, through the binary: the tools of an MCP
//! server (an rmcp server on 127.0.0.1) are listed and called in a one-shot run.

use std::process::Command;

use promptkit_testkit::mcp::order_service;
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, chunks};
use serde_json::Value;

mod support;

fn promptkit(home: &std::path::Path, config: &std::path::Path, args: &[&str]) -> Command {
    let mut command = support::promptkit(home);
    command.arg("--config").arg(config).args(args);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_servers_from_the_config_file_are_listed_and_called() {
    let (mcp_url, calls) = order_service().await;
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("promptkit.yaml");
    std::fs::write(
        &config,
        format!(
            "provider:\n  type: openai-compatible\n  base_url: {}\n  model: mock-model\n\
             state: sqlite://{}/state.db\n\
             system: You look orders up.\n\
             mcpServers:\n  orders:\n    url: {mcp_url}\n",
            upstream.base_url(),
            home.path().display()
        ),
    )
    .unwrap();

    let listed = promptkit(home.path(), &config, &["tools", "list"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(
        listed.trim(),
        "mcp__orders__lookup_order\tLooks up an order by id"
    );

    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::tool_start(
            0,
            "call_1",
            "mcp__orders__lookup_order",
            "{\"order_id\":\"777\"}",
        )),
        SseStep::Json(chunks::finish("tool_calls")),
        SseStep::Done,
    ]));
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("Order 777 has shipped.")),
        SseStep::Json(chunks::finish("stop")),
        SseStep::Done,
    ]));
    let run = tokio::task::spawn_blocking(move || {
        promptkit(
            home.path(),
            &config,
            &["run", "Where is order 777?", "--session", "c1", "--json"],
        )
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let result: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(result["text"], "Order 777 has shipped.");
    let tool = result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("a tool message");
    assert_eq!(tool["tool_result"]["name"], "mcp__orders__lookup_order");
    assert!(tool.to_string().contains("shipped"), "{tool}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The system prompt came from the configuration file.
    let first = &upstream.requests()[0].body;
    assert_eq!(first["messages"][0]["content"], "You look orders up.");
    upstream.shutdown().await.unwrap();
}

#[test]
fn a_bad_configuration_file_exits_2_naming_the_problem() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("bad.yaml");
    std::fs::write(&config, "sytem: typo\n").unwrap();
    let out = promptkit(home.path(), &config, &["tools", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `sytem`"), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");

    std::fs::write(&config, "mcpServers:\n  broken: {}\n").unwrap();
    let out = promptkit(home.path(), &config, &["tools", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken"), "{stderr}");
}
