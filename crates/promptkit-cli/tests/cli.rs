//! The `promptkit` binary, run as a user would.

use std::io::Write;
use std::process::{Output, Stdio};

use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted};
use serde_json::Value;

mod support;

fn promptkit(home: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut child = support::promptkit(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn chat_streams_calls_tools_and_persists_to_sqlite() {
    let home = tempfile::tempdir().unwrap();
    let out = promptkit(
        home.path(),
        &["chat", "--session", "t1"],
        "hello\nwhere is order 4711?\n/history\n/tools\n/quit\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("offline demo model"),
        "says it runs without a key: {stderr}"
    );
    assert!(stdout.contains("[tool lookup_order:"), "{stdout}");
    assert!(
        stderr.contains("  lookup_order\t") && stderr.contains("  current_time\t"),
        "/tools lists the tools: {stderr}"
    );
    assert!(stdout.contains("\"status\":\"shipped\""), "{stdout}");
    assert!(
        home.path().join("state.db").exists(),
        "SQLite in the data directory"
    );

    // A fresh process sees the stored session.
    let list = promptkit(home.path(), &["sessions", "list"], "");
    assert!(
        text(&list.stdout).starts_with("t1\t6 messages"),
        "{}",
        text(&list.stdout)
    );
    let show = promptkit(home.path(), &["sessions", "show", "t1"], "");
    assert!(
        text(&show.stdout).contains("user: where is order 4711?"),
        "{}",
        text(&show.stdout)
    );
    let fork = promptkit(home.path(), &["sessions", "fork", "t1", "t2"], "");
    assert!(fork.status.success());
    let rm = promptkit(home.path(), &["sessions", "rm", "t1"], "");
    assert!(rm.status.success());
    let list = text(&promptkit(home.path(), &["sessions", "list"], "").stdout);
    assert!(
        list.starts_with("t2\t6 messages") && !list.contains("t1\t"),
        "{list}"
    );
}

#[test]
fn run_prints_json_and_continues_a_session() {
    let home = tempfile::tempdir().unwrap();
    let first = promptkit(home.path(), &["run", "hi", "--session", "r1"], "");
    assert!(first.status.success());
    assert!(text(&first.stdout).contains("You said: \"hi\""));
    let out = promptkit(
        home.path(),
        &["run", "order 12345 please", "--session", "r1", "--json"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("valid JSON on stdout");
    assert_eq!(json["session"], "r1");
    assert!(json["text"].as_str().unwrap().contains("shipped"));
    let roles: Vec<&str> = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert!(json["usage"]["input_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn configuration_errors_exit_with_2_and_say_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let bad_state = promptkit(
        home.path(),
        &["--state", "mongodb://x", "sessions", "list"],
        "",
    );
    assert_eq!(bad_state.status.code(), Some(2));
    assert!(
        text(&bad_state.stderr).contains("use sqlite://<path>, memory"),
        "{}",
        text(&bad_state.stderr)
    );
    let no_key = promptkit(home.path(), &["--provider", "openai", "run", "hi"], "");
    assert_eq!(no_key.status.code(), Some(2));
    assert!(text(&no_key.stderr).contains("OPENAI_API_KEY"));
    let missing = promptkit(home.path(), &["sessions", "show", "nope"], "");
    assert_eq!(missing.status.code(), Some(2));
    let config = home.path().join("provider.yaml");
    std::fs::write(&config, "type: anthropic\n").unwrap();
    let no_key = promptkit(
        home.path(),
        &["--provider-config", config.to_str().unwrap(), "run", "hi"],
        "",
    );
    assert_eq!(no_key.status.code(), Some(2));
    assert!(
        text(&no_key.stderr).contains("ANTHROPIC_API_KEY"),
        "{}",
        text(&no_key.stderr)
    );
}

#[test]
fn a_scripted_provider_from_a_config_file() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("mock.json");
    std::fs::write(
        &config,
        r#"{"type": "mock", "turns": [{"text": "scripted answer"}]}"#,
    )
    .unwrap();
    let out = promptkit(
        home.path(),
        &["--provider-config", config.to_str().unwrap(), "run", "hi"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "scripted answer");
}

/// The segments of an error line as `{:#}` prints it ("a: b: c"), after "error: ".
fn segments(stderr: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    line.split(": ").map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_prints_each_cause_once() {
    let home = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    upstream.push(Scripted::openai_error(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided",
    ));
    let base = upstream.base_url();
    // A closed port: the connection itself fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_base = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    for base in [base, closed_base] {
        let out = promptkit(
            home.path(),
            &[
                "--provider",
                "openai-compatible",
                "--base-url",
                &base,
                "--model",
                "m",
                "run",
                "hi",
            ],
            "",
        );
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        let segments = segments(&stderr);
        assert!(segments.len() >= 2, "the cause is printed: {stderr}");
        for (i, segment) in segments.iter().enumerate() {
            for later in &segments[i + 1..] {
                // Short segments ("HTTP 401") may recur inside longer ones by chance.
                let (short, long) = if segment.len() <= later.len() {
                    (segment, later)
                } else {
                    (later, segment)
                };
                assert!(
                    short != long && (short.len() < 12 || !long.contains(short.as_str())),
                    "a cause is printed twice ({segment:?} and {later:?}): {stderr}"
                );
            }
        }
    }
}
