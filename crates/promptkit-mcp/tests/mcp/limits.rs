//! Bounds on what servers send: results, listings, hanging and flooding servers, redirects.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use promptkit_core::{ContentPart, ToolError, ToolSet};
use promptkit_mcp::{McpConfig, McpError, McpRegistry, McpServer, ServerConfig};
use serde_json::json;

use crate::support::{
    self, HANG_LIST_ENV, LIST_LOG_ENV, LISTING_ENV, MANY_TOOLS_ENV, call, capture_logs,
    stdio_server,
};

fn one(name: &str, config: ServerConfig) -> McpRegistry {
    McpRegistry::new(McpConfig::new().with_server(name, config)).unwrap()
}

/// Review test 40: a huge `tools/call` result is cut to the cap with a marker, and an image
/// over the cap is dropped with a note; what would be stored stays within the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_are_capped() {
    let registry = one("big", stdio_server("big"));
    let ten_mib = 10 << 20;
    let result = call(&registry, "mcp__big__big_text", json!({"bytes": ten_mib}))
        .await
        .unwrap();
    let text = result.text_content();
    assert!(text.starts_with("xxxx"));
    assert!(
        text.ends_with(&format!(
            "[truncated: the result was {ten_mib} bytes, the limit is {}]",
            1 << 20
        )),
        "{}",
        &text[text.len() - 100..]
    );
    let stored = serde_json::to_string(&result).unwrap();
    assert!(stored.len() < (1 << 20) + 1024, "{} bytes", stored.len());

    let image = call(&registry, "mcp__big__big_image", json!({"bytes": 2 << 20}))
        .await
        .unwrap();
    let texts: Vec<&str> = image
        .content
        .iter()
        .filter_map(ContentPart::as_text)
        .collect();
    assert_eq!(image.content.len(), 3, "{texts:?}");
    assert_eq!(texts[0], "before");
    assert!(
        texts[1].starts_with("[dropped: an image (image/png) of 2097152 bytes"),
        "{texts:?}"
    );
    assert_eq!(texts[2], "after");
    registry.shutdown().await;

    // The cap is the server's to set.
    let small = one("small", stdio_server("small").with_max_result_bytes(100));
    let result = call(&small, "mcp__small__big_text", json!({"bytes": 1000}))
        .await
        .unwrap();
    assert_eq!(
        result.text_content(),
        format!(
            "{}\n[truncated: the result was 1000 bytes, the limit is 100]",
            "x".repeat(100)
        )
    );
    small.shutdown().await;
}

/// Review test 41 (and the 1 MiB description of test 42): bad definitions are checked one by
/// one; only the bad tool goes, and the rest of the server's tools stay usable.
// A current-thread runtime, so that the log capture sees every task.
#[tokio::test]
async fn bad_tool_definitions_are_left_out_one_by_one() {
    let (logs, _guard) = capture_logs();
    let registry = one(
        "wild",
        stdio_server("wild").with_env(LISTING_ENV, "hostile"),
    );
    let definitions = registry.definitions().await.unwrap();
    let names: Vec<&str> = definitions.iter().map(|d| d.name.as_str()).collect();
    for gone in ["banana", "not_object", "huge_schema"] {
        assert!(
            !names.contains(&format!("mcp__wild__{gone}").as_str()),
            "{gone}: {names:?}"
        );
    }
    assert!(names.contains(&"mcp__wild__echo"), "{names:?}");
    let long = definitions
        .iter()
        .find(|d| d.name == "mcp__wild__long_description")
        .unwrap();
    assert_eq!(long.description.len(), 8 * 1024 + '…'.len_utf8());
    let bad_output = definitions
        .iter()
        .find(|d| d.name == "mcp__wild__bad_output")
        .unwrap();
    assert!(bad_output.output_schema.is_none());
    // Everything offered is small.
    for definition in &definitions {
        let size = serde_json::to_string(definition).unwrap().len();
        assert!(size < 80 * 1024, "{}: {size} bytes", definition.name);
    }

    let health = &registry.health()[0];
    let warnings = health.listing_warnings.join("\n");
    for needle in [
        "`banana` left out: its input schema does not compile",
        "`not_object` left out",
        "`huge_schema` left out",
        "`long_description`: its description of 1048576 bytes was cut",
        "`bad_output`: its output schema does not compile",
    ] {
        assert!(warnings.contains(needle), "{needle}\n{warnings}");
    }
    assert!(
        logs.text()
            .contains("left out: its input schema does not compile")
    );

    // The turn goes on: the good tools run, the dropped one is unknown.
    let echo = call(&registry, "mcp__wild__echo", json!({"text": "fine"}))
        .await
        .unwrap();
    assert_eq!(echo.text_content(), "fine");
    let banana = call(&registry, "mcp__wild__banana", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(banana, ToolError::UnknownTool { .. }), "{banana}");
    registry.shutdown().await;
}

/// Review test 42: a server listing 10 000 tools offers `max_tools` of them, and listing
/// stops paginating once it has enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_thousands_of_tools_offers_a_bounded_number() {
    let registry = one(
        "many",
        stdio_server("many").with_env(MANY_TOOLS_ENV, "10000"),
    );
    let tools = registry.tools().await;
    assert_eq!(tools.len(), 128);
    let health = &registry.health()[0];
    assert_eq!(health.tools, Some(128));
    assert!(
        health
            .listing_warnings
            .iter()
            .any(|w| w.contains("more than 128 tools")),
        "{:?}",
        health.listing_warnings
    );
    registry.shutdown().await;

    let few = one(
        "few",
        stdio_server("few")
            .with_env(MANY_TOOLS_ENV, "10000")
            .with_max_tools(20),
    );
    assert_eq!(few.definitions().await.unwrap().len(), 20);
    few.shutdown().await;
}

/// Review test 43: a server whose `tools/list` hangs costs one listing deadline, not the call
/// timeout, and later turns do not wait for it again until its back-off ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_listing_does_not_hold_up_turns() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("lists.log");
    let registry = McpRegistry::new(
        McpConfig::new()
            .with_server(
                "hung",
                stdio_server("hung")
                    .with_env(HANG_LIST_ENV, "1")
                    .with_env(LIST_LOG_ENV, log.to_str().unwrap())
                    .with_list_timeout(Duration::from_millis(300)),
            )
            .with_server("ok", stdio_server("ok")),
    )
    .unwrap();
    registry.start_all().await;
    let lists = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = lists();

    let started = Instant::now();
    let first = registry.definitions().await.unwrap();
    // Bounded by the 300 ms listing deadline, not the 30 s call timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(first.iter().all(|d| d.name.starts_with("mcp__ok__")));
    assert!(!first.is_empty());

    for _ in 0..10 {
        let later = registry.definitions().await.unwrap();
        assert_eq!(later.len(), first.len());
    }
    // At most one listing per second of back-off (1 s, then 2 s, ...).
    let elapsed = started.elapsed().as_secs() as usize;
    assert!(
        lists() - before <= 1 + elapsed,
        "{} listings in {elapsed} s",
        lists() - before
    );
    let hung = registry.server("hung").unwrap().health();
    let last_error = hung.last_error.unwrap();
    assert!(last_error.contains("`tools/list`"), "{last_error}");
    let error = registry.server("hung").unwrap().start().await.unwrap_err();
    assert!(
        matches!(
            error,
            McpError::Unavailable { .. } | McpError::Timeout { .. }
        ),
        "{error}"
    );
    registry.shutdown().await;
}

/// Review test 45: a flood of `list_changed` notifications does not make every turn list the
/// tools again, nor wake watchers for each notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_floods_are_paced() {
    let registry = one("noisy", stdio_server("noisy"));
    registry.tools().await;
    let generation = registry.tools_generation();
    let started = Instant::now();
    call(
        &registry,
        "mcp__noisy__spam_list_changed",
        json!({"count": 2000, "pause_ms": 10}),
    )
    .await
    .unwrap();
    for _ in 0..40 {
        let definitions = registry.definitions().await.unwrap();
        assert_eq!(definitions.len(), 19);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs() as usize;
    let stats = call(&registry, "mcp__noisy__stats", json!({}))
        .await
        .unwrap()
        .structured
        .unwrap();
    let lists = usize::try_from(stats["lists"].as_u64().unwrap()).unwrap();
    // The first listing, a burst of three, then one per second.
    assert!(
        lists <= 1 + 3 + elapsed + 1,
        "{lists} listings in {elapsed} s"
    );
    let bumps = registry.tools_generation() - generation;
    assert!(
        bumps <= lists as u64 + 1,
        "{bumps} wake-ups for {lists} listings"
    );
    registry.shutdown().await;
}

/// The HTTP client follows redirects within the server's origin only, so configured headers
/// never reach another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_servers_are_not_followed_to_another_origin() {
    let (elsewhere, seen, _elsewhere) = support::counting_server().await;
    let (origin, redirected, _served) =
        support::redirecting_server(format!("{elsewhere}/mcp")).await;
    let server = McpServer::new(
        "moved",
        ServerConfig::streamable_http(format!("{origin}/mcp"))
            .with_header("X-Api-Key", "k-header-secret")
            .with_startup_timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let error = server.start().await.unwrap_err();
    assert!(matches!(error, McpError::Start { .. }), "{error}");
    assert!(redirected.load(Ordering::SeqCst) >= 1);
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );

    // Within the origin, a redirect is followed (the test server moves `/old` to `/mcp`).
    let real = support::http_server(vec![("x-api-key", "k-header-secret".to_owned())]).await;
    let follows = McpServer::new(
        "moved",
        ServerConfig::streamable_http(real.url.replace("/mcp", "/old"))
            .with_header("X-Api-Key", "k-header-secret"),
    )
    .unwrap();
    let who = call(&follows, "mcp__moved__whoami", json!({}))
        .await
        .unwrap();
    assert_eq!(who.text_content(), "http");
    follows.shutdown().await;
}
