//! The HTTP executor against a local server.
#![cfg(feature = "http")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use promptkit_core::{ToolCall, ToolContext, ToolSet};
use promptkit_tools::executors::{HttpConfig, HttpExecutor};
use promptkit_tools::{ToolDescriptor, ToolRegistry};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Value)>>>);

async fn server() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/orders/{id}",
            get(|Path(id): Path<String>, Query(q): Query<HashMap<String, String>>, State(seen): State<Seen>| async move {
                seen.0.lock().unwrap().push((format!("GET /orders/{id}"), json!(q)));
                axum::Json(json!({"data": {"order_id": id, "status": "shipped", "verbose": q.get("verbose")}}))
            }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, State(seen): State<Seen>, body: String| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                seen.0.lock().unwrap().push(("POST /echo".into(), json!({"auth": auth, "body": body})));
                (StatusCode::OK, body)
            }),
        )
        .route(
            "/leaky",
            post(|headers: HeaderMap| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                (StatusCode::INTERNAL_SERVER_ERROR, format!("failed for credentials {auth}"))
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::new()
}

fn http_tool(name: &str, config: Value) -> ToolDescriptor {
    ToolDescriptor::new(name, "an HTTP tool").with_executor("http", config)
}

#[tokio::test]
async fn get_with_url_template_query_and_response_selection() {
    let (base, seen) = server().await;
    let registry = ToolRegistry::new();
    registry
        .register(http_tool(
            "lookup_order",
            json!({"url": format!("{base}/orders/{{{{order_id}}}}"), "method": "GET",
                   "static_query": {"source": "promptkit"}, "response_pointer": "/data"}),
        ))
        .unwrap();
    let call = ToolCall::new(
        "c1",
        "lookup_order",
        json!({"order_id": "12 345", "verbose": true}),
    );
    let result = registry
        .execute(&call, &ToolContext::default())
        .await
        .unwrap();
    assert_eq!(result.structured.unwrap()["status"], "shipped");
    let (path, query) = seen.0.lock().unwrap()[0].clone();
    assert_eq!(path, "GET /orders/12 345");
    assert_eq!(query, json!({"source": "promptkit", "verbose": "true"}));
}

#[tokio::test]
async fn post_sends_a_json_body_and_secret_headers_never_leak() {
    let (base, seen) = server().await;
    let registry = ToolRegistry::new();
    let secret_headers = json!({"Authorization": "TOOL_TOKEN"});
    // Secrets come from a lookup (a secret manager); the process environment is not touched.
    let env = |var: &str| (var == "TOOL_TOKEN").then(|| "Bearer s3cr3t-value".to_owned());
    for (name, config) in [
        (
            "echo",
            json!({"url": format!("{base}/echo"), "headers_from_env": secret_headers,
                        "static_body": {"client": "promptkit"}, "exclude": ["internal"]}),
        ),
        (
            "leaky",
            json!({"url": format!("{base}/leaky"), "headers_from_env": secret_headers}),
        ),
        (
            "down",
            json!({"url": "http://127.0.0.1:9/nothing", "headers_from_env": secret_headers}),
        ),
    ] {
        let config: HttpConfig = serde_json::from_value(config).unwrap();
        let executor = HttpExecutor::with_env(config, reqwest_client(), env).unwrap();
        registry.register_with(
            ToolDescriptor::new(name, "an HTTP tool"),
            Arc::new(executor),
        );
    }
    let ctx = ToolContext::default();
    let ok = registry
        .execute(
            &ToolCall::new("c", "echo", json!({"q": "hi", "internal": 1})),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(
        ok.structured,
        Some(json!({"client": "promptkit", "q": "hi"}))
    );
    assert_eq!(
        seen.0.lock().unwrap()[0].1["auth"],
        "Bearer s3cr3t-value",
        "the header was sent"
    );

    let leaky = registry
        .execute(&ToolCall::new("c", "leaky", json!({})), &ctx)
        .await
        .unwrap();
    assert!(leaky.is_error);
    assert!(
        leaky.text_content().contains("HTTP 500"),
        "{}",
        leaky.text_content()
    );
    assert!(
        !leaky.text_content().contains("s3cr3t"),
        "{}",
        leaky.text_content()
    );
    assert!(leaky.text_content().contains("[REDACTED]"));

    let down = registry
        .execute(&ToolCall::new("c", "down", json!({})), &ctx)
        .await
        .unwrap_err();
    assert!(!down.to_string().contains("s3cr3t"), "{down}");
    assert!(!format!("{down:?}").contains("s3cr3t"));
    assert!(!format!("{registry:?}").contains("s3cr3t"));

    let missing = ToolRegistry::new()
        .register(http_tool("x", json!({"url": "http://127.0.0.1:9", "headers_from_env": {"X-Key": "PROMPTKIT_TEST_UNSET_VAR"}})))
        .unwrap_err();
    assert!(
        missing.to_string().contains("PROMPTKIT_TEST_UNSET_VAR"),
        "{missing}"
    );
}

#[tokio::test]
async fn http_tools_use_the_client_the_registry_is_given() {
    let (base, seen) = server().await;
    // A client that marks its requests: the tool's request must carry the mark.
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::AUTHORIZATION,
        axum::http::HeaderValue::from_static("Bearer shared-client"),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let registry = ToolRegistry::new().with_http_client(client);
    registry
        .register(http_tool("echo", json!({"url": format!("{base}/echo")})))
        .unwrap();
    let result = registry
        .execute(
            &ToolCall::new("c", "echo", json!({"q": "hi"})),
            &ToolContext::default(),
        )
        .await
        .unwrap();
    assert!(!result.is_error, "{result:?}");
    let (path, request) = seen.0.lock().unwrap()[0].clone();
    assert_eq!(path, "POST /echo");
    assert_eq!(request["auth"], "Bearer shared-client");

    // A registry left to itself builds its own client, which adds nothing.
    let (base, seen) = server().await;
    let registry = ToolRegistry::new();
    registry
        .register(http_tool("echo", json!({"url": format!("{base}/echo")})))
        .unwrap();
    registry
        .execute(
            &ToolCall::new("c", "echo", json!({"q": "hi"})),
            &ToolContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(seen.0.lock().unwrap()[0].1["auth"], "");
}

#[tokio::test]
async fn a_fixed_url_is_checked_when_the_tool_is_registered() {
    let registry = ToolRegistry::new();
    let error = registry
        .register(http_tool("bad", json!({"url": "no scheme/tool"})))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("`no scheme/tool` is not a valid URL"),
        "{error}"
    );
    // A template is checked when it is filled in, at the call.
    registry
        .register(http_tool("templated", json!({"url": "{{base}}/tool"})))
        .unwrap();
    let result = registry
        .execute(
            &ToolCall::new("c", "templated", json!({"base": "nowhere"})),
            &ToolContext::default(),
        )
        .await;
    let text = format!("{result:?}");
    assert!(text.contains("invalid URL `nowhere/tool`"), "{text}");
}

/// The registry leaves the deadline to the HTTP executor (one timer per call, the client's):
/// it must hold whether the server is slow to answer or stalls in the middle of the body.
#[tokio::test]
async fn an_http_tool_times_out_on_slow_headers_and_on_a_stalled_body() {
    let app = Router::new()
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/stall",
            post(|| async {
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"partial\":"))
                });
                axum::body::Body::from_stream(first.chain(futures_util::stream::pending()))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let registry = ToolRegistry::new();
    for name in ["slow", "stall"] {
        let mut tool = http_tool(name, json!({"url": format!("http://{addr}/{name}")}));
        tool.timeout_ms = Some(300);
        registry.register(tool).unwrap();
    }
    assert!(registry.enforces_deadline());
    for name in ["slow", "stall"] {
        let started = std::time::Instant::now();
        let error = registry
            .execute(
                &ToolCall::new("c", name, json!({})),
                &ToolContext::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, promptkit_core::ToolError::Timeout { .. }),
            "{name}: {error}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{name}: the deadline was not kept"
        );
    }
}
