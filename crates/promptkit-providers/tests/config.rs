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
