//! The published reference server, `@modelcontextprotocol/server-everything`, over stdio, legacy
//! SSE and streamable HTTP.
//!
//! The package is installed from the npm registry on first use into the target directory
//! (`npm install --prefix target/tmp/server-everything-<version>`), and reused afterwards.
//! Under `CI=true` these tests fail when node or npm is missing or the install fails; elsewhere
//! they are skipped with a message.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use promptkit_core::{ContentPart, MediaSource, ToolCall, ToolContext};
use promptkit_mcp::{McpConfig, McpRegistry, ServerConfig, ServerStatus, TransportKind};
use serde_json::json;

use crate::support::call;

/// The pinned version. Its CLI takes the transport as the first argument (`stdio`, `sse`,
/// `streamableHttp`) and the HTTP port from `PORT`; SSE serves `GET /sse` and
/// `POST /message`, streamable HTTP serves `/mcp`.
const VERSION: &str = "2026.8.31";
const PACKAGE: &str = "@modelcontextprotocol/server-everything";

/// The server's entry script, installing the package if needed; `None` to skip.
fn entry_script() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("server-everything-{VERSION}"));
    let script = |dir: &Path| dir.join("node_modules").join(PACKAGE).join("dist/index.js");
    if script(&dir).is_file() {
        return node_available()
            .map(|()| script(&dir))
            .or_else(|| skip("node is not installed"));
    }
    if let Some(missing) = ["node", "npm"]
        .into_iter()
        .find(|tool| !runs(Command::new(tool).arg("--version")))
    {
        return skip(&format!("`{missing}` is not installed"));
    }
    // Install next to the final place and rename, so that concurrent test processes never
    // see a half-installed package.
    let staging = dir.with_extension(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    let installed = runs(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&staging)
            .arg(format!("{PACKAGE}@{VERSION}")),
    );
    if !installed || !script(&staging).is_file() {
        let _ = std::fs::remove_dir_all(&staging);
        return skip(&format!("`npm install {PACKAGE}@{VERSION}` failed"));
    }
    if std::fs::rename(&staging, &dir).is_err() {
        // Another test process installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        script(&dir).is_file(),
        "{} is missing after install",
        script(&dir).display()
    );
    Some(script(&dir))
}

fn node_available() -> Option<()> {
    runs(Command::new("node").arg("--version")).then_some(())
}

fn runs(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails under `CI=true`, else prints why the test is skipped.
fn skip<T>(reason: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "server-everything tests are required under CI=true: {reason}"
    );
    let _ = writeln!(std::io::stderr(), "skipping: {reason}");
    None
}

async fn script() -> Option<PathBuf> {
    tokio::task::spawn_blocking(entry_script).await.unwrap()
}

/// The node server in HTTP mode on a free port, killed when dropped.
struct NodeServer {
    _child: tokio::process::Child,
    port: u16,
}

async fn start_node(script: &Path, transport: &str) -> NodeServer {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new("node")
        .arg(script)
        .arg(transport)
        .env("PORT", port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return NodeServer {
                _child: child,
                port,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server-everything ({transport}) did not listen on port {port}");
}

/// Lists the tools, calls several, and maps an image and a tool error.
async fn exercise(registry: &McpRegistry, transport: TransportKind) {
    let tools = registry.tools().await;
    let names: Vec<&str> = tools.iter().map(promptkit_mcp::McpTool::name).collect();
    for expected in [
        "mcp__everything__echo",
        "mcp__everything__get-sum",
        "mcp__everything__get-tiny-image",
        "mcp__everything__get-structured-content",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let health = &registry.health()[0];
    assert_eq!(health.status, ServerStatus::Running);
    assert_eq!(health.transport, transport);
    assert_eq!(
        health.server.as_ref().and_then(|s| s.name.as_deref()),
        Some("mcp-servers/everything")
    );

    let echo = call(
        registry,
        "mcp__everything__echo",
        json!({"message": "hello"}),
    )
    .await
    .unwrap();
    assert_eq!(echo.text_content(), "Echo: hello");

    let sum = call(
        registry,
        "mcp__everything__get-sum",
        json!({"a": 2, "b": 3}),
    )
    .await
    .unwrap();
    assert_eq!(sum.text_content(), "The sum of 2 and 3 is 5.");

    let weather = call(
        registry,
        "mcp__everything__get-structured-content",
        json!({"location": "Chicago"}),
    )
    .await
    .unwrap();
    assert_eq!(weather.structured.as_ref().unwrap()["temperature"], 36);

    let image = call(registry, "mcp__everything__get-tiny-image", json!({}))
        .await
        .unwrap();
    let media = image
        .content
        .iter()
        .find_map(|part| match part {
            ContentPart::Image(media) => Some(media),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no image in {:?}", image.content));
    assert_eq!(media.mime_type.as_deref(), Some("image/png"));
    let MediaSource::Data(png) = &media.source else {
        panic!("{:?}", media.source)
    };
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(image.content.iter().any(|p| p.as_text().is_some()));

    // A tool error: the executor (which, unlike the tool set, does not validate arguments
    // itself) sends bad arguments; the server answers `isError: true`.
    let get_sum = tools.iter().find(|t| t.mcp_name() == "get-sum").unwrap();
    let error = get_sum
        .executor()
        .execute(
            &ToolCall::new("bad", get_sum.name(), json!({"a": "two", "b": 3})),
            &ToolContext::with_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(error.is_error, "{error:?}");
    assert!(!error.text_content().is_empty());

    // Beyond tools.
    let server = registry.server("everything").unwrap();
    let prompts = server.list_prompts().await.unwrap();
    assert!(
        prompts.iter().any(|p| p.name == "simple-prompt"),
        "{prompts:?}"
    );
    let resources = server.list_resources().await.unwrap();
    let first = resources.first().expect("no resources");
    let contents = server.read_resource(&first.uri).await.unwrap();
    assert_eq!(contents[0].uri(), first.uri);
}

fn registry(server: ServerConfig) -> McpRegistry {
    McpRegistry::new(McpConfig::new().with_server(
        "everything",
        server.with_startup_timeout(Duration::from_secs(60)),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_stdio() {
    let Some(script) = script().await else { return };
    let registry = registry(ServerConfig::stdio(
        "node",
        [script.to_str().unwrap(), "stdio"],
    ));
    exercise(&registry, TransportKind::Stdio).await;
    let pid = registry.health()[0].pid.unwrap();
    registry.shutdown().await;
    assert!(!crate::support::alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_legacy_sse() {
    let Some(script) = script().await else { return };
    let node = start_node(&script, "sse").await;
    let url = format!("http://127.0.0.1:{}/sse", node.port);
    let registry = registry(ServerConfig::sse(&url));
    exercise(&registry, TransportKind::Sse).await;
    registry.shutdown().await;

    // Without a `type`, the client tries streamable HTTP, then falls back to SSE.
    let detected = McpRegistry::new(McpConfig::new().with_server(
        "everything",
        ServerConfig {
            url: Some(url),
            ..ServerConfig::default()
        },
    ))
    .unwrap();
    let echo = call(
        &detected,
        "mcp__everything__echo",
        json!({"message": "auto"}),
    )
    .await
    .unwrap();
    assert_eq!(echo.text_content(), "Echo: auto");
    assert_eq!(detected.health()[0].transport, TransportKind::Sse);
    detected.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_streamable_http() {
    let Some(script) = script().await else { return };
    let node = start_node(&script, "streamableHttp").await;
    let url = format!("http://127.0.0.1:{}/mcp", node.port);
    let registry = registry(ServerConfig::streamable_http(&url));
    exercise(&registry, TransportKind::StreamableHttp).await;
    registry.shutdown().await;
}
