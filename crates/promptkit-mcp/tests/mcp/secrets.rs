//! Secrets expanded into a server's command line stay out of errors, health and logs.

use promptkit_core::ToolSet;
use promptkit_mcp::{ClientOptions, McpConfig, McpRegistry};
use serde_json::json;

use crate::support::{call, capture_logs};

const TOKEN: &str = "k-token-value-123";

/// Review test 46.
// A current-thread runtime, so that the log capture sees the stderr drain's task too.
#[tokio::test]
async fn expanded_command_line_values_never_reach_errors_health_or_logs() {
    let (logs, _guard) = capture_logs();
    let options = ClientOptions::new().with_env(|name| match name {
        "TOKEN" => Some(TOKEN.to_owned()),
        "PATH" => Some("/usr/bin:/bin".to_owned()),
        _ => None,
    });
    let config = McpConfig::from_json(
        r#"{"mcpServers": {
            "echoes": {"command": "/bin/sh",
                       "args": ["-c", "echo \"fatal: token $2 rejected\" >&2; exit 1", "sh", "--token", "${TOKEN}"]},
            "missing": {"command": "/nonexistent/${TOKEN}/server", "args": ["--token", "${TOKEN}"]}
        }}"#,
    )
    .unwrap();
    let registry = McpRegistry::with_options(config, &options).unwrap();
    for (server, outcome) in registry.start_all().await {
        let error = outcome.unwrap_err();
        let text = format!("{error} | {error:?}");
        assert!(!text.contains(TOKEN), "{server}: {text}");
        assert!(text.contains("[redacted]"), "{server}: {text}");
    }
    let echoed = registry.health()[0].last_error.clone().unwrap();
    assert!(
        echoed.contains("fatal: token [redacted] rejected"),
        "{echoed}"
    );
    for health in registry.health() {
        let text = format!("{health:?}");
        assert!(health.last_error.is_some(), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
    // As a tool source: the listing skips both, and a call gets a tool error.
    assert!(registry.definitions().await.unwrap().is_empty());
    let error = call(&registry, "mcp__echoes__anything", json!({}))
        .await
        .unwrap_err();
    assert!(!format!("{error} {error:?}").contains(TOKEN), "{error}");

    let logs = logs.text();
    // The server's stderr was logged, scrubbed.
    assert!(logs.contains("fatal: token [redacted] rejected"), "{logs}");
    assert!(logs.contains("failed to start"), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
}
