//! Process lifecycle of stdio servers: crash and restart, shutdown, drop and owner death.

use std::io::BufRead as _;
use std::time::{Duration, Instant};

use promptkit_core::ToolError;
use promptkit_mcp::{McpConfig, McpRegistry, ServerStatus};
use serde_json::json;

use crate::support::{self, alive, call, eventually, stdio_server};

fn one(name: &str, config: promptkit_mcp::ServerConfig) -> McpRegistry {
    McpRegistry::new(McpConfig::new().with_server(name, config)).unwrap()
}

async fn pids(registry: &McpRegistry, server: &str) -> (u32, Option<u32>) {
    let result = call(registry, &format!("mcp__{server}__pids"), json!({}))
        .await
        .unwrap();
    let pids = result.structured.unwrap();
    (
        u32::try_from(pids["pid"].as_u64().unwrap()).unwrap(),
        pids["grandchild"]
            .as_u64()
            .map(|p| u32::try_from(p).unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_server_restarts_on_next_use_and_the_call_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran.log");
    let log_path = log.to_str().unwrap();
    let registry = one("crashy", stdio_server("crashy"));
    let (first_pid, _) = pids(&registry, "crashy").await;

    // The tool runs (it writes its line), then the process dies before answering.
    let crashed = call(&registry, "mcp__crashy__crash", json!({"path": log_path}))
        .await
        .unwrap_err();
    assert!(matches!(crashed, ToolError::Execution { .. }), "{crashed}");
    assert!(
        eventually(Duration::from_secs(5), || {
            registry.health()[0].status == ServerStatus::Disconnected
        })
        .await,
        "{:?}",
        registry.health()
    );
    assert!(!alive(first_pid));

    // The next call starts the server again and succeeds.
    let echo = call(&registry, "mcp__crashy__echo", json!({"text": "back"}))
        .await
        .unwrap();
    assert_eq!(echo.text_content(), "back");
    let health = &registry.health()[0];
    assert_eq!(health.status, ServerStatus::Running);
    assert_eq!(health.restarts, 1);
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap()
            .contains("connection lost")
    );
    let (second_pid, _) = pids(&registry, "crashy").await;
    assert_ne!(first_pid, second_pid);

    // The crashing call ran once: it was not sent again to the new process.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
    registry.shutdown().await;
    assert!(!alive(second_pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_a_lingering_server_and_its_group_after_the_grace_period() {
    let registry = one(
        "linger",
        stdio_server("linger")
            .with_env(support::LINGER_ENV, "1")
            .with_env(support::GRANDCHILD_ENV, "1")
            .with_shutdown_grace(Duration::from_millis(500)),
    );
    let (pid, grandchild) = pids(&registry, "linger").await;
    let grandchild = grandchild.unwrap();
    assert!(alive(pid) && alive(grandchild));

    let started = Instant::now();
    registry.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "no grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(eventually(Duration::from_secs(3), || !alive(pid) && !alive(grandchild)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polite_server_exits_when_its_stdin_closes_and_helpers_are_killed() {
    let registry = one(
        "polite",
        stdio_server("polite")
            .with_env(support::GRANDCHILD_ENV, "1")
            .with_shutdown_grace(Duration::from_secs(20)),
    );
    let (pid, grandchild) = pids(&registry, "polite").await;
    let grandchild = grandchild.unwrap();
    let started = Instant::now();
    registry.shutdown().await;
    // Closing stdin is enough for the server: no need to wait out the 20 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The helper it left behind in its group is killed with the group.
    assert!(eventually(Duration::from_secs(3), || !alive(pid) && !alive(grandchild)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_registry_stops_the_server() {
    let registry = one(
        "dropped",
        stdio_server("dropped")
            .with_env(support::LINGER_ENV, "1")
            .with_env(support::GRANDCHILD_ENV, "1")
            .with_shutdown_grace(Duration::from_millis(200)),
    );
    let (pid, grandchild) = pids(&registry, "dropped").await;
    let grandchild = grandchild.unwrap();
    drop(registry);
    assert!(
        eventually(Duration::from_secs(5), || !alive(pid) && !alive(grandchild)).await,
        "the server outlived its registry"
    );
}

/// The owner of a client is killed with SIGKILL (no destructor runs): the watchdog kills the
/// server's process group, including a server that ignores the end of its stdin and the
/// helper it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_leaves_no_server() {
    let mut owner = support::spawn_owner();
    let stdout = owner.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test owner_entry ... " on the same line first.
            if let Some((_, pids)) = line.split_once("PIDS ") {
                let mut parts = pids.split(' ').map(|p| p.parse::<u32>().unwrap());
                let _ = tx.send((parts.next().unwrap(), parts.next().unwrap()));
                break;
            }
        }
    });
    let (pid, grandchild) = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the owner did not report its server")
    })
    .await
    .unwrap();
    assert!(alive(pid) && alive(grandchild));

    owner.0.kill().unwrap(); // SIGKILL
    owner.0.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !alive(pid)
            && !alive(grandchild))
        .await,
        "server {pid} or helper {grandchild} outlived its owner"
    );
}
