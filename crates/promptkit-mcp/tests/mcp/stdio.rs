//! The stdio transport against the rmcp test server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use promptkit_core::{
    ContentPart, MediaSource, Role, ToolCall, ToolContext, ToolError, ToolErrorKind, ToolSet,
};
use promptkit_mcp::{
    ClientOptions, McpConfig, McpError, McpRegistry, McpServer, ResourceContent, ServerStatus,
    ToolFilter, TransportKind,
};
use serde_json::json;

use crate::support::{self, call, stdio_server};

fn registry(servers: &[(&str, promptkit_mcp::ServerConfig)]) -> McpRegistry {
    let mut config = McpConfig::new();
    for (name, server) in servers {
        config = config.with_server(*name, server.clone());
    }
    McpRegistry::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_paginated_tools_and_maps_every_result_kind() {
    let registry = registry(&[("test", stdio_server("test"))]);
    assert_eq!(registry.health()[0].status, ServerStatus::Idle);

    // Listing starts the server lazily and follows every page (4 tools per page).
    let tools = registry.tools().await;
    let names: Vec<&str> = tools.iter().map(promptkit_mcp::McpTool::name).collect();
    assert_eq!(names.len(), 19, "{names:?}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
    assert!(names.contains(&"mcp__test__echo"));
    // A name outside `[A-Za-z0-9_-]` is made valid; the executor still uses the original.
    let dotted = tools
        .iter()
        .find(|t| t.mcp_name() == "dotted.name")
        .unwrap();
    assert_eq!(dotted.name(), "mcp__test__dotted_name");
    let add = tools.iter().find(|t| t.mcp_name() == "add").unwrap();
    assert_eq!(add.definition().description, "Adds two numbers");
    assert_eq!(add.definition().input_schema["required"], json!(["a", "b"]));
    assert!(add.definition().output_schema.is_some());
    assert_eq!(add.timeout(), Duration::from_secs(30));
    assert_eq!(add.server(), "test");

    let health = &registry.health()[0];
    assert_eq!(health.status, ServerStatus::Running);
    assert_eq!(health.transport, TransportKind::Stdio);
    assert_eq!(health.tools, Some(19));
    assert!(health.pid.is_some());
    let info = health.server.as_ref().unwrap();
    assert!(info.tools && info.tools_list_changed && info.resources && info.prompts);
    assert_eq!(
        info.instructions.as_deref(),
        Some("The promptkit-mcp test server")
    );

    // Text.
    let echo = call(&registry, "mcp__test__echo", json!({"text": "hi"}))
        .await
        .unwrap();
    assert!(!echo.is_error);
    assert_eq!(echo.text_content(), "hi");
    assert_eq!(echo.name, "mcp__test__echo");
    assert_eq!(echo.call_id, "call-1");
    // Structured content.
    let sum = call(&registry, "mcp__test__add", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(sum.structured, Some(json!({"sum": 5.0})));
    assert_eq!(sum.content[0].as_text(), Some("5"));
    // An image becomes an image part with the decoded bytes.
    let image = call(&registry, "mcp__test__image", json!({}))
        .await
        .unwrap();
    let ContentPart::Image(media) = &image.content[1] else {
        panic!("{:?}", image.content)
    };
    assert_eq!(media.mime_type.as_deref(), Some("image/png"));
    let MediaSource::Data(data) = &media.source else {
        panic!("{:?}", media.source)
    };
    assert!(data.starts_with(b"\x89PNG"));
    // Embedded resources: text as text, a PDF as a named document.
    let resource = call(&registry, "mcp__test__resource", json!({}))
        .await
        .unwrap();
    assert_eq!(resource.content[0].as_text(), Some("embedded notes"));
    let ContentPart::Document(doc) = &resource.content[1] else {
        panic!("{:?}", resource.content)
    };
    assert_eq!(doc.name.as_deref(), Some("report.pdf"));
    assert_eq!(
        doc.source,
        MediaSource::Data(Bytes::from_static(b"%PDF-1.4\n"))
    );
    // `isError: true` is a tool error result, not a failure to run.
    let failed = call(
        &registry,
        "mcp__test__fail",
        json!({"message": "disk full"}),
    )
    .await
    .unwrap();
    assert!(failed.is_error);
    assert_eq!(failed.error_kind, Some(ToolErrorKind::Execution));
    assert_eq!(failed.text_content(), "disk full");
    // The sanitised name routes to the original tool.
    let dotted = call(&registry, "mcp__test__dotted_name", json!({}))
        .await
        .unwrap();
    assert_eq!(dotted.text_content(), "dotted");

    // Arguments are checked against the schema before anything is sent.
    let invalid = call(&registry, "mcp__test__add", json!({"a": "two"}))
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, ToolError::InvalidArguments { .. }),
        "{invalid}"
    );
    let raw = ToolCall::from_raw_arguments("c", "mcp__test__echo", "{\"text\": ");
    let invalid = registry
        .execute(&raw, &ToolContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, ToolError::InvalidArguments { .. }),
        "{invalid}"
    );
    // Unknown names, on a known or an unknown server.
    for name in ["mcp__test__nope", "mcp__other__echo", "echo"] {
        let unknown = call(&registry, name, json!({})).await.unwrap_err();
        assert!(
            matches!(unknown, ToolError::UnknownTool { .. }),
            "{name}: {unknown}"
        );
    }

    // The executor handed out per tool works under any registered name.
    let echo_tool = tools.iter().find(|t| t.mcp_name() == "echo").unwrap();
    let result = echo_tool
        .executor()
        .execute(
            &ToolCall::new("c9", "renamed_echo", json!({"text": "via executor"})),
            &ToolContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(result.text_content(), "via executor");
    assert_eq!(result.name, "renamed_echo");

    registry.shutdown().await;
    assert_eq!(registry.health()[0].status, ServerStatus::ShutDown);
    let after = call(&registry, "mcp__test__echo", json!({"text": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(after, ToolError::SourceUnavailable { .. }),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_resources_and_renders_prompts() {
    let server = McpServer::new("res", stdio_server("res")).unwrap();
    let resources = server.list_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["test://greeting", "test://logo.png"]);
    assert_eq!(resources[1].mime_type.as_deref(), Some("image/png"));

    let text = server.read_resource("test://greeting").await.unwrap();
    assert_eq!(text[0].text(), Some("hello resource"));
    let blob = server.read_resource("test://logo.png").await.unwrap();
    let ResourceContent::Blob {
        data, mime_type, ..
    } = &blob[0]
    else {
        panic!("{blob:?}")
    };
    assert_eq!(mime_type.as_deref(), Some("image/png"));
    assert!(data.starts_with(b"\x89PNG"));
    assert!(matches!(blob[0].to_content_part(), ContentPart::Image(_)));
    let missing = server.read_resource("test://missing").await.unwrap_err();
    assert!(matches!(missing, McpError::Protocol { .. }), "{missing}");

    let prompts = server.list_prompts().await.unwrap();
    assert_eq!(prompts[0].name, "greet");
    assert!(prompts[0].arguments[0].required);
    let rendered = server
        .get_prompt(
            "greet",
            &BTreeMap::from([("name".to_owned(), "Ada".to_owned())]),
        )
        .await
        .unwrap();
    assert_eq!(rendered.description.as_deref(), Some("A greeting"));
    assert_eq!(rendered.messages.len(), 2);
    assert_eq!(rendered.messages[0].role, Role::User);
    assert_eq!(rendered.messages[0].text(), "Say hello to Ada");
    assert_eq!(rendered.messages[1].role, Role::Assistant);
    let missing_arg = server
        .get_prompt("greet", &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(missing_arg, McpError::Protocol { .. }),
        "{missing_arg}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_with_the_same_tool_never_collide_and_filters_apply() {
    let filter = ToolFilter {
        allow: vec!["echo".into(), "whoami".into(), "add*".into()],
        deny: vec!["add_tool".into()],
    };
    let registry = registry(&[
        ("alpha", stdio_server("alpha")),
        ("beta", stdio_server("beta").with_tool_filter(filter)),
    ]);
    let names: Vec<String> = registry
        .tools()
        .await
        .iter()
        .filter(|t| t.server() == "beta")
        .map(|t| t.name().to_owned())
        .collect();
    assert_eq!(
        names,
        ["mcp__beta__add", "mcp__beta__echo", "mcp__beta__whoami"]
    );
    for server in ["alpha", "beta"] {
        let who = call(&registry, &format!("mcp__{server}__whoami"), json!({}))
            .await
            .unwrap();
        assert_eq!(who.text_content(), server);
    }
    // A filtered tool is neither offered nor run.
    let denied = call(&registry, "mcp__beta__add_tool", json!({"name": "x"}))
        .await
        .unwrap_err();
    assert!(matches!(denied, ToolError::UnknownTool { .. }), "{denied}");
    let definitions = registry.definitions().await.unwrap();
    assert_eq!(definitions.len(), 19 + 3);
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_refreshes_the_tool_list() {
    let registry = registry(&[("dyn", stdio_server("dyn"))]);
    let before = registry.tools().await;
    assert!(!before.iter().any(|t| t.name() == "mcp__dyn__late"));
    let generation = registry.tools_generation();

    let added = call(&registry, "mcp__dyn__add_tool", json!({"name": "late"}))
        .await
        .unwrap();
    assert_eq!(added.text_content(), "added");
    let changed = tokio::time::timeout(Duration::from_secs(10), registry.tools_changed(generation))
        .await
        .expect("no list_changed notification");
    assert!(changed > generation);

    let after = registry.tools().await;
    assert!(after.iter().any(|t| t.name() == "mcp__dyn__late"));
    let late = call(&registry, "mcp__dyn__late", json!({})).await.unwrap();
    assert_eq!(late.text_content(), "dynamic late");
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_time_out_and_are_cancelled_on_the_server() {
    let registry = registry(&[(
        "slow",
        stdio_server("slow").with_timeout(Duration::from_secs(1)),
    )]);
    registry.start_all().await[0].1.as_ref().unwrap();

    // The server's limit.
    let started = Instant::now();
    let timeout = call(&registry, "mcp__slow__slow", json!({"ms": 10_000}))
        .await
        .unwrap_err();
    assert!(matches!(timeout, ToolError::Timeout { .. }), "{timeout}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(5));

    // The call's own deadline, when earlier.
    let started = Instant::now();
    let short = registry
        .execute(
            &ToolCall::new("c", "mcp__slow__slow", json!({"ms": 10_000})),
            &ToolContext::with_timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert!(matches!(short, ToolError::Timeout { .. }), "{short}");
    assert!(started.elapsed() < Duration::from_millis(900));

    // The server heard `notifications/cancelled` for both, and the connection still works.
    let mut stats = serde_json::Value::Null;
    for _ in 0..50 {
        stats = call(&registry, "mcp__slow__stats", json!({}))
            .await
            .unwrap()
            .structured
            .unwrap();
        if stats["cancelled"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["cancelled"], 2, "{stats}");
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_stderr_never_blocks_the_server() {
    let registry = registry(&[("chatty", stdio_server("chatty"))]);
    // Far more than a pipe buffer (64 KiB): the server blocks unless stderr is drained.
    let result = call(
        &registry,
        "mcp__chatty__stderr",
        json!({"bytes": 2_000_000}),
    )
    .await
    .unwrap();
    assert_eq!(result.text_content(), "wrote 2000000 bytes");
    let echo = call(
        &registry,
        "mcp__chatty__echo",
        json!({"text": "still here"}),
    )
    .await
    .unwrap();
    assert_eq!(echo.text_content(), "still here");
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_servers_get_a_minimal_environment_and_expanded_variables() {
    let options = ClientOptions::new().with_env(|name| match name {
        "PATH" => Some("/usr/bin:/bin".to_owned()),
        "HOME" => Some("/home/tester".to_owned()),
        "PARENT_SECRET" => Some("do-not-leak".to_owned()),
        "PASSED" => Some("passed-through".to_owned()),
        "API_KEY" => Some("k-123".to_owned()),
        _ => None,
    });
    let mut config = stdio_server("env").with_env("SERVER_KEY", "${API_KEY}");
    config.inherit_env = vec!["PASSED".to_owned()];
    let server = McpServer::with_options("env", config, &options).unwrap();
    let tools = server.tools().await.unwrap();
    let env_tool = tools
        .iter()
        .find(|t| t.mcp_name() == "env")
        .unwrap()
        .executor();
    let read = |name: &'static str| {
        let env_tool = env_tool.clone();
        async move {
            env_tool
                .execute(
                    &ToolCall::new("c", "env", json!({"name": name})),
                    &ToolContext::default(),
                )
                .await
                .unwrap()
                .text_content()
        }
    };
    assert_eq!(read("HOME").await, "/home/tester");
    assert_eq!(read("PASSED").await, "passed-through");
    assert_eq!(read("SERVER_KEY").await, "k-123");
    assert_eq!(read("PARENT_SECRET").await, "<unset>");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_reports_stderr_and_backs_off() {
    let config = stdio_server("broken").with_env(support::FAIL_START_ENV, "1");
    let server = McpServer::new("broken", config).unwrap();
    let err = server.start().await.unwrap_err();
    assert!(matches!(err, McpError::Start { .. }), "{err}");
    assert!(err.to_string().contains("refuses to start"), "{err}");
    let health = server.health();
    assert_eq!(health.status, ServerStatus::Failed);
    assert!(health.last_error.unwrap().contains("refuses to start"));
    // The next use within the back-off does not spawn again.
    let again = server.start().await.unwrap_err();
    assert!(matches!(again, McpError::Unavailable { .. }), "{again}");
    // As a tool source, the failure is a tool error the model sees.
    let via_tools = call(&server, "mcp__broken__echo", json!({"text": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(via_tools, ToolError::SourceUnavailable { .. }),
        "{via_tools}"
    );

    let missing = McpServer::new(
        "missing",
        promptkit_mcp::ServerConfig::stdio("/nonexistent/mcp-server", Vec::<String>::new()),
    )
    .unwrap();
    let err = missing.start().await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/mcp-server"), "{err}");
}
