//! Providers built from configuration.
#![cfg(all(
    feature = "config",
    feature = "mock",
    feature = "openai",
    feature = "anthropic",
    feature = "openai-compatible"
))]

use futures_util::StreamExt as _;
use promptkit_core::{Message, ProviderRequest};
use promptkit_providers::config::ProviderSpec;
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, chunks};

const MOCK_YAML: &str = r#"
type: mock
id: scripted
turns:
  - text: "I will look that up."
    tool_calls:
      - name: lookup_order
        arguments: {order_id: "12345"}
  - text: "It has shipped."
    chunk_size: 3
  - error_status: 429
"#;

#[tokio::test]
async fn a_mock_scripted_from_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mock.yaml");
    std::fs::write(&path, MOCK_YAML).unwrap();
    let provider = ProviderSpec::from_file(&path).unwrap().build().unwrap();
    assert_eq!(provider.id(), "scripted");
    let request = ProviderRequest::new(vec![Message::user("where is 12345?")]);
    let first = provider.predict(&request).await.unwrap();
    assert_eq!(first.tool_calls()[0].name, "lookup_order");
    assert_eq!(first.tool_calls()[0].arguments["order_id"], "12345");
    assert_eq!(
        provider.predict(&request).await.unwrap().text(),
        "It has shipped."
    );
    let err = provider.predict(&request).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[test]
fn configuration_errors_are_clear() {
    let env = |_: &str| None;
    let spec = |json: serde_json::Value| serde_json::from_value::<ProviderSpec>(json).unwrap();
    let unknown = spec(serde_json::json!({"type": "palm"}))
        .build_with_env(env)
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("unknown provider type `palm` (this build knows: openai"),
        "{unknown}"
    );
    let no_key = spec(serde_json::json!({"type": "anthropic", "id": "claude"}))
        .build_with_env(env)
        .unwrap_err();
    assert!(
        no_key.to_string().contains("provider `claude` (anthropic) needs an API key: set the environment variable `ANTHROPIC_API_KEY`"),
        "{no_key}"
    );
    let custom_var = spec(serde_json::json!({"type": "openai", "api_key_env": "TEAM_OPENAI_KEY"}))
        .build_with_env(env)
        .unwrap_err();
    assert!(
        custom_var.to_string().contains("`TEAM_OPENAI_KEY`"),
        "{custom_var}"
    );
    let no_url = spec(serde_json::json!({"type": "openai-compatible", "model": "llama3"}))
        .build_with_env(env)
        .unwrap_err();
    assert!(no_url.to_string().contains("needs `base_url`"), "{no_url}");
    let typo = ProviderSpec::parse("type: mock\nmodle: x\n", "p.yaml".as_ref()).unwrap_err();
    assert!(
        typo.to_string().contains("p.yaml") && typo.to_string().contains("modle"),
        "{typo}"
    );
    let ok = spec(serde_json::json!({"type": "openai", "model": "gpt-4o"}))
        .build_with_env(|var| (var == "OPENAI_API_KEY").then(|| "sk-test".to_owned()))
        .unwrap();
    assert_eq!(ok.model(), "gpt-4o");
}

#[tokio::test]
async fn switching_provider_is_a_configuration_change() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let spec: ProviderSpec = serde_json::from_value(serde_json::json!({
        "type": "openai-compatible",
        "model": "llama3",
        "base_url": upstream.base_url(),
        "headers": {"x-team": "search"},
        "max_attempts": 1
    }))
    .unwrap();
    let provider = spec.build_with_env(|_| None).unwrap();
    let mut request = ProviderRequest::new(vec![Message::user("hi")]);
    request.max_tokens = Some(10);
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("streamed")),
        SseStep::Json(chunks::finish("stop")),
        SseStep::Done,
    ]));
    let mut stream = provider.stream(&request).await.unwrap();
    let mut acc = promptkit_core::StreamAccumulator::new();
    while let Some(e) = stream.next().await {
        acc.push(&e.unwrap());
    }
    assert_eq!(acc.finish().text(), "streamed");
    assert_eq!(
        upstream.requests().last().unwrap().header("x-team"),
        Some("search")
    );
    upstream.shutdown().await.unwrap();
}

/// `openai-compatible` never sends `OPENAI_API_KEY` to the server it names: only the
/// variable `api_key_env` names is read (the review's test 30, at the spec level).
#[tokio::test]
async fn a_compatible_server_never_gets_the_openai_key_implicitly() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let env = |var: &str| match var {
        "OPENAI_API_KEY" => Some("sk-x".to_owned()),
        "LOCAL_KEY" => Some("local-secret".to_owned()),
        _ => None,
    };
    let spec = |json: serde_json::Value| serde_json::from_value::<ProviderSpec>(json).unwrap();
    let request = ProviderRequest::new(vec![Message::user("hi")]);
    for (api_key_env, want) in [
        (None, None),
        (Some("LOCAL_KEY"), Some("Bearer local-secret")),
    ] {
        let mut json = serde_json::json!({"type": "openai-compatible", "model": "llama3",
            "base_url": upstream.base_url(), "max_attempts": 1});
        if let Some(var) = api_key_env {
            json["api_key_env"] = var.into();
        }
        let provider = spec(json).build_with_env(env).unwrap();
        upstream.push(Scripted::json(
            200,
            serde_json::json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}),
        ));
        provider.predict(&request).await.unwrap();
        let sent = upstream.requests().pop().unwrap();
        assert_eq!(sent.header("authorization"), want, "{api_key_env:?}");
    }
    upstream.shutdown().await.unwrap();
}

/// `Debug` of a spec names its headers but shows no header value, and the base URL without
/// its credentials or query values.
#[test]
fn a_spec_debug_shows_no_secret() {
    let spec: ProviderSpec = serde_json::from_value(serde_json::json!({
        "type": "azure-openai",
        "model": "gpt-4o",
        "base_url": "https://u:secret-password@example.openai.azure.com/?key=secret-query",
        "headers": {"authorization": "Bearer secret-token", "x-team": "search"}
    }))
    .unwrap();
    let debug = format!("{spec:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(
        debug.contains("authorization") && debug.contains("x-team"),
        "{debug}"
    );
    assert!(debug.contains("example.openai.azure.com"), "{debug}");
    let built = spec
        .build_with_env(|_| Some("secret-key".to_owned()))
        .unwrap();
    let debug = format!("{built:?}");
    assert!(!debug.contains("secret"), "{debug}");
}

/// The bounds of provider I/O are configuration too, and a compatible server keeps its
/// longer default timeouts when the spec does not set them.
#[test]
fn io_bounds_are_configurable() {
    let spec: ProviderSpec = serde_json::from_value(serde_json::json!({
        "type": "openai-compatible", "model": "llama3", "base_url": "http://127.0.0.1:9/v1",
        "first_event_timeout_ms": 1500, "max_stream_duration_ms": 60000,
        "max_body_bytes": 1000, "max_event_bytes": 2000, "max_stream_bytes": 3000
    }))
    .unwrap();
    let provider = spec.build_with_env(|_| None).unwrap();
    let debug = format!("{provider:?}");
    for want in [
        "first_event_timeout: 1.5s",
        "max_stream_duration: 60s",
        "max_body_bytes: 1000",
        "max_line_bytes: 2000",
        "max_event_bytes: 2000",
        "max_stream_bytes: 3000",
        // Not set in the spec: the compatible form's own default.
        "request_timeout: 120s",
    ] {
        assert!(debug.contains(want), "{want} in {debug}");
    }
}
