//! Descriptors, the registry and the executors.

use std::time::Duration;

use promptkit_core::{ToolCall, ToolContext, ToolError, ToolErrorKind, ToolSet};
use promptkit_tools::executors::SubprocessConfig;
use promptkit_tools::{
    DescriptorError, FunctionTool, SubprocessExecutor, ToolDescriptor, ToolRegistry,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

const WEATHER_YAML: &str = r#"
apiVersion: promptkit.altairalabs.ai/v1alpha1
kind: Tool
metadata:
  name: get_weather
spec:
  description: Current weather for a city
  timeout_ms: 5000
  labels: {team: search}
  input_schema:
    type: object
    required: [city]
    properties:
      city: {type: string}
      days: {type: integer}
  executor: mock
  config:
    template: "Sunny in {{city}} for {{days}} days"
"#;

#[tokio::test]
async fn descriptors_load_from_yaml_manifests_and_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("weather.yaml"), WEATHER_YAML).unwrap();
    std::fs::write(
        dir.path().join("ping.json"),
        r#"{"name": "net__ping", "description": "Pings", "executor": "mock", "config": {"result": {"ok": true}}}"#,
    )
    .unwrap();
    let registry = ToolRegistry::new();
    let loaded = registry.load_dir(dir.path()).unwrap();
    assert_eq!(loaded, ["net__ping", "get_weather"]);
    let weather = registry.get("get_weather").unwrap();
    assert_eq!(weather.timeout_ms, Some(5000));
    assert_eq!(weather.labels["team"], "search");
    assert_eq!(registry.namespace("net").len(), 1);

    // The model sent `days` as a string: coerced, and the template renders.
    let call = ToolCall::new("c1", "get_weather", json!({"city": "Oslo", "days": "3"}));
    let result = registry
        .execute(&call, &ToolContext::default())
        .await
        .unwrap();
    assert_eq!(result.text_content(), "Sunny in Oslo for 3 days");
    let (args, fixes) = registry
        .prepare_arguments("get_weather", &call.arguments)
        .unwrap();
    assert_eq!(args["days"], json!(3));
    assert_eq!(fixes.len(), 1);
    let ping = registry
        .execute(
            &ToolCall::new("c2", "net__ping", json!({})),
            &ToolContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(ping.structured, Some(json!({"ok": true})));
}

#[test]
fn descriptor_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "no_name.yaml",
            "apiVersion: v1\nkind: Tool\nmetadata: {}\nspec: {description: x}\n",
            "metadata.name",
        ),
        (
            "bad_kind.yaml",
            "apiVersion: v1\nkind: Prompt\nmetadata: {name: x}\nspec: {description: x}\n",
            "kind",
        ),
        (
            "typo.json",
            r#"{"name": "x", "description": "d", "timeout": 5}"#,
            "timeout",
        ),
        (
            "no_desc.json",
            r#"{"name": "x", "description": " "}"#,
            "description",
        ),
        (
            "bad_name.json",
            r#"{"name": "has space", "description": "d"}"#,
            "name",
        ),
        (
            "bad_schema.json",
            r#"{"name": "x", "description": "d", "input_schema": {"type": 7}}"#,
            "input_schema",
        ),
    ];
    for (file, text, field) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let err = ToolDescriptor::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(file), "{file}: {err}");
        assert!(err.contains(field), "{file} should name `{field}`: {err}");
    }
    let registry = ToolRegistry::new();
    let err = registry
        .register(ToolDescriptor::new("x", "d").with_executor("carrier-pigeon", json!(null)))
        .unwrap_err();
    assert!(matches!(err, DescriptorError::UnknownExecutor { .. }));
    assert!(
        err.to_string().contains("which is not registered (known: "),
        "{err}"
    );
    let err = registry
        .register(ToolDescriptor::new("x", "d").with_executor("subprocess", json!({"cmd": "ls"})))
        .unwrap_err();
    assert!(err.to_string().contains("invalid `config`"), "{err}");
}

#[derive(Deserialize, JsonSchema)]
struct Sleep {
    millis: u64,
}

#[tokio::test(start_paused = true)]
async fn registry_errors_are_typed_for_the_model() {
    let registry = ToolRegistry::new().with_allowed(["safe__*", "slow", "limited"]);
    registry
        .register(
            ToolDescriptor::new("safe__echo", "Echo")
                .with_executor("mock", json!({"template": "{{args}}"})),
        )
        .unwrap();
    registry
        .register(ToolDescriptor::new("danger", "Danger"))
        .unwrap();
    let mut limited = ToolDescriptor::new("limited", "Limited");
    limited.rate_limit_per_minute = Some(2);
    registry.register(limited).unwrap();
    let mut slow = ToolDescriptor::new("slow", "Slow");
    slow.timeout_ms = Some(100);
    registry.register_with(
        slow,
        std::sync::Arc::new(FunctionTool::new(
            "slow",
            "Slow",
            |a: Sleep, _ctx| async move {
                tokio::time::sleep(Duration::from_millis(a.millis)).await;
                Ok::<_, String>("done")
            },
        )),
    );
    let ctx = ToolContext::default();
    let names: Vec<String> = registry
        .definitions()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(
        names,
        ["limited", "safe__echo", "slow"],
        "sorted and allow-listed"
    );

    let run = |name: &str, args| ToolCall::new("c", name, args);
    assert!(matches!(
        registry.execute(&run("nope", json!({})), &ctx).await,
        Err(ToolError::UnknownTool { .. })
    ));
    assert!(matches!(
        registry.execute(&run("danger", json!({})), &ctx).await,
        Err(ToolError::NotAllowed { .. })
    ));
    assert!(matches!(
        registry
            .execute(&run("safe__echo", json!("{broken")), &ctx)
            .await,
        Err(ToolError::InvalidArguments { .. })
    ));
    for _ in 0..2 {
        registry
            .execute(&run("limited", json!({})), &ctx)
            .await
            .unwrap();
    }
    assert!(matches!(
        registry.execute(&run("limited", json!({})), &ctx).await,
        Err(ToolError::RateLimited { .. })
    ));
    assert!(
        registry
            .execute(&run("slow", json!({"millis": 10})), &ctx)
            .await
            .is_ok()
    );
    let err = registry
        .execute(&run("slow", json!({"millis": 1000})), &ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Timeout { .. }), "{err}");
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
}

#[tokio::test]
async fn output_schema_and_result_cap() {
    let registry = ToolRegistry::new();
    let mut typed = ToolDescriptor::new("typed", "Typed")
        .with_executor("mock", json!({"result": {"n": "not a number"}}));
    typed.output_schema = Some(json!({"type": "object", "properties": {"n": {"type": "integer"}}}));
    registry.register(typed).unwrap();
    let capped = ToolRegistry::new().with_max_result_bytes(16);
    capped
        .register(
            ToolDescriptor::new("chatty", "Chatty")
                .with_executor("mock", json!({"result": "x".repeat(100)})),
        )
        .unwrap();
    let ctx = ToolContext::default();
    let r = registry
        .execute(&ToolCall::new("c", "typed", json!({})), &ctx)
        .await
        .unwrap();
    assert!(r.is_error);
    assert!(
        r.text_content()
            .contains("does not match its output schema"),
        "{}",
        r.text_content()
    );
    let r = capped
        .execute(&ToolCall::new("c", "chatty", json!({})), &ctx)
        .await
        .unwrap();
    assert!(r.text_content().starts_with(&"x".repeat(16)));
    assert!(
        r.text_content()
            .contains("[truncated: the result was 100 bytes, the limit is 16]")
    );
}

#[derive(Deserialize, JsonSchema)]
struct Divide {
    a: f64,
    b: f64,
}

#[tokio::test]
async fn function_tools_have_derived_schemas_and_report_errors_as_results() {
    let registry = ToolRegistry::new();
    registry.register_function(FunctionTool::new(
        "divide",
        "a / b",
        |d: Divide, _ctx| async move {
            if d.b == 0.0 {
                Err("division by zero".to_owned())
            } else {
                Ok(d.a / d.b)
            }
        },
    ));
    let def = &registry.definitions().await.unwrap()[0];
    assert_eq!(def.input_schema["required"], json!(["a", "b"]));
    let ctx = ToolContext::default();
    let ok = registry
        .execute(&ToolCall::new("c", "divide", json!({"a": 1, "b": 4})), &ctx)
        .await
        .unwrap();
    assert_eq!(ok.structured, Some(json!(0.25)));
    let err = registry
        .execute(&ToolCall::new("c", "divide", json!({"a": 1, "b": 0})), &ctx)
        .await
        .unwrap();
    assert!(err.is_error);
    assert_eq!(err.text_content(), "division by zero");
    let invalid = registry
        .execute(&ToolCall::new("c", "divide", json!({"a": 1})), &ctx)
        .await
        .unwrap_err();
    assert!(
        invalid.to_string().contains("\"b\" is a required property"),
        "{invalid}"
    );
}

fn sh(script: &str) -> SubprocessExecutor {
    SubprocessExecutor::new(SubprocessConfig {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        inherit_env: vec![],
        cwd: None,
        timeout_ms: Some(5000),
        max_output_bytes: None,
    })
}

#[tokio::test]
async fn subprocess_tools_speak_json_over_stdio() {
    use promptkit_core::ToolExecutor;
    let ctx = ToolContext::default();
    let call = ToolCall::new("c", "proc", json!({"x": 1}));
    let echo = sh("cat").execute(&call, &ctx).await.unwrap();
    assert_eq!(
        echo.structured,
        Some(json!({"x": 1})),
        "stdin carries the arguments"
    );
    let wrapped = sh(r#"echo "{\"result\": \"$GREETING\", \"is_error\": false}""#)
        .execute(&call, &ctx)
        .await
        .unwrap();
    assert_eq!(wrapped.text_content(), "hi");
    let text = sh("echo plain words").execute(&call, &ctx).await.unwrap();
    assert_eq!(text.text_content(), "plain words");
    let failing = sh("echo oops >&2; exit 3")
        .execute(&call, &ctx)
        .await
        .unwrap();
    assert!(failing.is_error);
    assert!(
        failing.text_content().contains("oops"),
        "{}",
        failing.text_content()
    );
    let missing = SubprocessExecutor::new(SubprocessConfig {
        command: "/nonexistent/tool".into(),
        args: vec![],
        env: Default::default(),
        inherit_env: vec![],
        cwd: None,
        timeout_ms: None,
        max_output_bytes: None,
    })
    .execute(&call, &ctx)
    .await
    .unwrap_err();
    assert!(missing.to_string().contains("cannot start"), "{missing}");
}

fn alive(pid: i32) -> bool {
    // A killed process may linger as a zombie until reaped; that counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_cancelled_subprocess_is_killed_with_its_children() {
    use promptkit_core::ToolExecutor;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let executor = sh(&script);
    let call = ToolCall::new("c", "proc", json!({}));
    let ctx = ToolContext::default();
    // Cancel by dropping the call's future.
    let outcome =
        tokio::time::timeout(Duration::from_millis(500), executor.execute(&call, &ctx)).await;
    assert!(outcome.is_err(), "the call was still running");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(pid),
        "the grandchild `sleep` (pid {pid}) was killed with its group"
    );

    // Its own timeout kills the group too.
    let pidfile2 = dir.path().join("child2.pid");
    let cfg_exec = SubprocessExecutor::new(SubprocessConfig {
        command: "sh".into(),
        args: vec![
            "-c".into(),
            format!("sleep 300 & echo $! > {}; wait", pidfile2.display()),
        ],
        env: Default::default(),
        inherit_env: vec![],
        cwd: None,
        timeout_ms: Some(300),
        max_output_bytes: None,
    });
    let err = cfg_exec.execute(&call, &ctx).await.unwrap_err();
    assert!(matches!(err, ToolError::Timeout { .. }), "{err}");
    let pid2: i32 = std::fs::read_to_string(&pidfile2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if !alive(pid2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid2));
}

fn sh_with(script: &str, timeout_ms: u64, max_output_bytes: Option<usize>) -> SubprocessExecutor {
    SubprocessExecutor::new(SubprocessConfig {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: [("TOOL_TOKEN".to_owned(), "k-env-secret".to_owned())].into(),
        inherit_env: vec![],
        cwd: None,
        timeout_ms: Some(timeout_ms),
        max_output_bytes,
    })
}

/// Review test 35: stdin is written while stdout is read, so large arguments to a program
/// that answers before it reads cannot deadlock the pipes.
#[tokio::test]
async fn large_arguments_to_a_program_that_writes_first_complete() {
    use promptkit_core::ToolExecutor;
    let big = "x".repeat(1 << 20);
    let call = ToolCall::new("c", "proc", json!({"blob": big}));
    // 1 MiB out before reading a byte of stdin, then count what stdin held.
    let executor = sh_with(
        "head -c 1048576 /dev/zero | tr '\\0' y; echo; wc -c",
        30_000,
        Some(4 << 20),
    );
    let result = executor
        .execute(&call, &ToolContext::default())
        .await
        .unwrap();
    let text = result.text_content();
    assert!(text.starts_with("yyyy"), "{}", &text[..40.min(text.len())]);
    let counted: usize = text.lines().last().unwrap().trim().parse().unwrap();
    assert_eq!(counted, serde_json::to_vec(&call.arguments).unwrap().len());
}

/// Review test 36: all of stderr is read, so a program that writes a lot to it and exits 0
/// returns its result instead of blocking until the timeout.
#[tokio::test]
async fn a_chatty_stderr_does_not_block_the_call() {
    use promptkit_core::ToolExecutor;
    let call = ToolCall::new("c", "proc", json!({}));
    let executor = sh_with(
        "head -c 1048576 /dev/zero | tr '\\0' e >&2; echo finished",
        30_000,
        None,
    );
    let result = executor
        .execute(&call, &ToolContext::default())
        .await
        .unwrap();
    assert_eq!(result.text_content(), "finished");

    // The tail shown on failure is bounded and scrubbed of the configured secrets.
    let failing = sh_with(
        "head -c 1048576 /dev/zero | tr '\\0' e >&2; echo >&2; echo \"token $TOOL_TOKEN rejected\" >&2; exit 4",
        30_000,
        None,
    );
    let result = failing
        .execute(&call, &ToolContext::default())
        .await
        .unwrap();
    assert!(result.is_error);
    let text = result.text_content();
    assert!(
        text.contains("token [REDACTED] rejected"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    assert!(!text.contains("k-env-secret"));
    assert!(text.len() < 4096, "{} bytes", text.len());
}

/// Review test 37: the process group is killed when the call succeeds too, so a background
/// child does not outlive the call (even one that keeps the call's stderr open).
#[tokio::test]
async fn a_background_child_dies_with_a_successful_call() {
    use promptkit_core::ToolExecutor;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let script = format!(
        "sleep 300 > /dev/null & echo $! > {}; echo done",
        pidfile.display()
    );
    let call = ToolCall::new("c", "proc", json!({}));
    let result = sh_with(&script, 30_000, None)
        .execute(&call, &ToolContext::default())
        .await
        .unwrap();
    assert_eq!(result.text_content(), "done");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(pid),
        "the background `sleep` (pid {pid}) outlived the call"
    );

    // One that also holds stdout open: the call still ends when the program exits.
    let pidfile = dir.path().join("holder.pid");
    let script = format!("sleep 300 & echo $! > {}; echo done", pidfile.display());
    let result = sh_with(&script, 30_000, None)
        .execute(&call, &ToolContext::default())
        .await
        .unwrap();
    assert_eq!(result.text_content(), "done");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(pid),
        "the background `sleep` (pid {pid}) outlived the call"
    );
}

#[derive(Deserialize, JsonSchema)]
struct Rows {
    count: usize,
}

/// Review test 38: structured output is capped like text, with a marker saying so.
#[tokio::test]
async fn huge_structured_output_is_capped_with_a_marker() {
    let registry = ToolRegistry::new();
    registry.register_function(FunctionTool::new(
        "rows",
        "Returns rows",
        |args: Rows, _ctx| async move {
            let rows: Vec<serde_json::Value> = (0..args.count)
                .map(|i| json!({"id": i, "name": format!("row number {i}"), "payload": "x".repeat(80)}))
                .collect();
            Ok::<_, String>(json!({"rows": rows}))
        },
    ));
    let ctx = ToolContext::default();
    // About 10 MiB of JSON.
    let result = registry
        .execute(&ToolCall::new("c", "rows", json!({"count": 90_000})), &ctx)
        .await
        .unwrap();
    assert!(result.structured.is_none());
    let text = result.text_content();
    assert!(text.starts_with("{\"rows\":[{"), "{}", &text[..40]);
    assert!(
        text.ends_with(
            "[truncated: the structured result is larger than the limit of 1048576 bytes of JSON]"
        ),
        "{}",
        &text[text.len() - 120..]
    );
    assert!(text.len() < (1 << 20) + 200, "{} bytes", text.len());

    // Small output is untouched.
    let small = registry
        .execute(&ToolCall::new("c", "rows", json!({"count": 2})), &ctx)
        .await
        .unwrap();
    assert_eq!(
        small.structured.unwrap()["rows"].as_array().unwrap().len(),
        2
    );
}
