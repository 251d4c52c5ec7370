//! The HTTP executor against a local server.
#![cfg(feature = "http")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use promptkit_core::{ToolCall, ToolContext, ToolError, ToolSet};
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
async fn a_url_is_checked_when_the_tool_is_registered() {
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
    // A template is checked when it loads too: no argument may pick the scheme or the host.
    for url in [
        "{{base}}/tool",
        "http://127.0.0.1:{{port}}/tool",
        "http://127.0.0.1{{suffix}}/tool",
    ] {
        let error = registry
            .register(http_tool("templated", json!({"url": url})))
            .unwrap_err();
        assert!(
            error.to_string().contains("scheme or host"),
            "{url}: {error}"
        );
    }
    let error = registry
        .register(http_tool(
            "dotted",
            json!({"url": "http://127.0.0.1/a/../{{x}}"}),
        ))
        .unwrap_err();
    assert!(error.to_string().contains("`..` path segment"), "{error}");
    assert!(registry.names().is_empty());
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
            matches!(error, ToolError::Timeout { .. }),
            "{name}: {error}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{name}: the deadline was not kept"
        );
    }
}

/// A request a [`Recorder`] saw.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: String,
}

/// A server that records every request and answers by path: a configured status with a
/// `Location`, or 200 with a JSON echo of the request.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Recorded>>>,
    redirects: Arc<Mutex<HashMap<String, (u16, String)>>>,
    base: String,
}

impl Recorder {
    async fn start() -> Self {
        let mut recorder = Self::default();
        let state = recorder.clone();
        let app = Router::new().fallback(move |request: axum::extract::Request| {
            let state = state.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&body).into_owned();
                let uri = parts.uri.to_string();
                state.seen.lock().unwrap().push(Recorded {
                    method: parts.method.to_string(),
                    uri: uri.clone(),
                    headers: parts.headers.clone(),
                    body: body.clone(),
                });
                let redirect = state
                    .redirects
                    .lock()
                    .unwrap()
                    .get(parts.uri.path())
                    .cloned();
                match redirect {
                    Some((status, location)) => (
                        StatusCode::from_u16(status).unwrap(),
                        [(axum::http::header::LOCATION, location)],
                    )
                        .into_response(),
                    None => axum::Json(
                        json!({"method": parts.method.to_string(), "uri": uri, "body": body}),
                    )
                    .into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        recorder.base = format!("http://{addr}");
        recorder
    }

    fn redirect(&self, path: &str, status: u16, location: &str) {
        self.redirects
            .lock()
            .unwrap()
            .insert(path.to_owned(), (status, location.to_owned()));
    }

    fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

use axum::response::IntoResponse as _;

async fn run(
    registry: &ToolRegistry,
    name: &str,
    args: Value,
) -> Result<promptkit_core::ToolResult, ToolError> {
    registry
        .execute(&ToolCall::new("c", name, args), &ToolContext::default())
        .await
}

/// Review test 31: `.` and `..` from the model never climb the path, and nothing is sent.
#[tokio::test]
async fn dot_segments_from_arguments_are_rejected_before_sending() {
    let server = Recorder::start().await;
    let registry = ToolRegistry::new();
    registry
        .register(http_tool(
            "item",
            json!({"url": format!("{}/tenants/acme/items/{{{{id}}}}", server.base), "method": "GET"}),
        ))
        .unwrap();
    registry
        .register(http_tool(
            "pair",
            json!({"url": format!("{}/files/{{{{a}}}}{{{{b}}}}/raw", server.base), "method": "GET"}),
        ))
        .unwrap();
    for (tool, args) in [
        ("item", json!({"id": ".."})),
        ("item", json!({"id": "."})),
        ("pair", json!({"a": ".", "b": "."})),
        ("pair", json!({"a": "", "b": ".."})),
        ("item", json!({})),
    ] {
        let error = run(&registry, tool, args.clone()).await.unwrap_err();
        assert!(
            matches!(error, ToolError::InvalidArguments { .. }),
            "{args}: {error}"
        );
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());

    // Slashes and dots inside a value stay inside one segment.
    let ok = run(&registry, "item", json!({"id": "../../admin"}))
        .await
        .unwrap();
    assert!(!ok.is_error, "{ok:?}");
    let ok = run(&registry, "item", json!({"id": "v1.2"})).await.unwrap();
    assert!(!ok.is_error, "{ok:?}");
    let seen: Vec<String> = server.seen().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        seen,
        [
            "/tenants/acme/items/..%2F..%2Fadmin",
            "/tenants/acme/items/v1.2"
        ]
    );
}

/// Review test 32: redirects are not followed by default; with `same_origin` only to the same
/// origin, and the secret headers stay behind.
#[tokio::test]
async fn redirects_are_not_followed_unless_same_origin_is_asked_for() {
    let home = Recorder::start().await;
    let elsewhere = Recorder::start().await;
    home.redirect("/away", 302, &format!("{}/landing", elsewhere.base));
    home.redirect("/hop", 307, "/landing?from=hop");
    let env = |var: &str| (var == "TOOL_KEY").then(|| "k-secret-header".to_owned());
    let registry = ToolRegistry::new();
    for (name, path, redirects) in [
        ("strict_away", "away", "none"),
        ("strict_hop", "hop", "none"),
        ("follow_away", "away", "same_origin"),
        ("follow_hop", "hop", "same_origin"),
    ] {
        let config: HttpConfig = serde_json::from_value(json!({
            "url": format!("{}/{path}", home.base),
            "redirects": redirects,
            "headers": {"X-Plain": "visible"},
            "headers_from_env": {"X-Api-Key": "TOOL_KEY"}
        }))
        .unwrap();
        let executor = HttpExecutor::with_env(
            config,
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            env,
        )
        .unwrap();
        registry.register_with(ToolDescriptor::new(name, "a tool"), Arc::new(executor));
    }

    for name in ["strict_away", "strict_hop", "follow_away"] {
        let result = run(&registry, name, json!({"q": 1})).await.unwrap();
        assert!(result.is_error, "{name}: {result:?}");
        assert!(
            result.text_content().contains("HTTP 30"),
            "{name}: {}",
            result.text_content()
        );
    }
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
    assert_eq!(home.seen().len(), 3);

    // A 307 to the same origin is followed with the same method and body, without the
    // secret header.
    let followed = run(&registry, "follow_hop", json!({"q": 2})).await.unwrap();
    assert!(!followed.is_error, "{followed:?}");
    let seen = home.seen();
    let (hop, landing) = (&seen[3], &seen[4]);
    assert_eq!(hop.uri, "/hop");
    assert_eq!(hop.headers["x-api-key"], "k-secret-header");
    assert_eq!(landing.uri, "/landing?from=hop");
    assert_eq!(landing.method, "POST");
    assert_eq!(landing.body, r#"{"q":2}"#);
    assert_eq!(landing.headers["x-plain"], "visible");
    assert!(
        !landing.headers.contains_key("x-api-key"),
        "{:?}",
        landing.headers
    );

    // The registry's own client follows nothing either.
    let own = ToolRegistry::new();
    own.register(http_tool(
        "away",
        json!({"url": format!("{}/away", home.base)}),
    ))
    .unwrap();
    let result = run(&own, "away", json!({})).await.unwrap();
    assert!(result.is_error);
    assert!(elsewhere.seen().is_empty());
}

/// Review test 33: a field the operator pinned cannot be changed by the model.
#[tokio::test]
async fn static_fields_win_over_arguments() {
    let server = Recorder::start().await;
    let registry = ToolRegistry::new();
    registry
        .register(http_tool(
            "post",
            json!({"url": format!("{}/orders", server.base), "static_body": {"tenant": "a"}}),
        ))
        .unwrap();
    registry
        .register(http_tool(
            "get",
            json!({"url": format!("{}/orders", server.base), "method": "GET",
                   "static_query": {"tenant": "a"}}),
        ))
        .unwrap();
    registry
        .register(http_tool(
            "post_query",
            json!({"url": format!("{}/orders", server.base), "query": ["tenant", "page"],
                   "static_query": {"tenant": "a"}}),
        ))
        .unwrap();
    run(&registry, "post", json!({"tenant": "b", "item": 1}))
        .await
        .unwrap();
    run(&registry, "get", json!({"tenant": "b", "item": 1}))
        .await
        .unwrap();
    run(&registry, "post_query", json!({"tenant": "b", "page": 2}))
        .await
        .unwrap();
    let seen = server.seen();
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, json!({"tenant": "a", "item": 1}));
    assert_eq!(seen[1].uri, "/orders?tenant=a&item=1");
    assert_eq!(seen[2].uri, "/orders?tenant=a&page=2");
}

/// Review test 34: secrets in `static_query` and in the URL never reach the model.
#[tokio::test]
async fn secrets_in_the_url_and_static_query_stay_out_of_errors() {
    let registry = ToolRegistry::new();
    registry
        .register(http_tool(
            "down",
            json!({"url": "http://user:k-url-password@127.0.0.1:9/x/{{id}}?api_key=k-url-query",
                   "method": "GET", "static_query": {"token": "k-static-query"}}),
        ))
        .unwrap();
    let error = run(&registry, "down", json!({"id": "7"}))
        .await
        .unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(text.contains("127.0.0.1:9/x/7"), "{text}");
    assert!(!text.contains("k-"), "{text}");
    assert!(!format!("{registry:?}").contains("k-"));

    // An upstream that echoes the query in its error body.
    let app = Router::new().fallback(|uri: axum::http::Uri| async move {
        (StatusCode::BAD_REQUEST, format!("bad request {uri}"))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    registry
        .register(http_tool(
            "echoing",
            json!({"url": format!("http://{addr}/x"), "method": "GET",
                   "static_query": {"token": "k-static-query"}}),
        ))
        .unwrap();
    let result = run(&registry, "echoing", json!({})).await.unwrap();
    assert!(result.is_error);
    assert!(
        result.text_content().contains("HTTP 400"),
        "{}",
        result.text_content()
    );
    assert!(
        !result.text_content().contains("k-static-query"),
        "{}",
        result.text_content()
    );
}

#[tokio::test]
async fn hosts_can_be_limited_per_tool_and_per_registry() {
    let server = Recorder::start().await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let registry = ToolRegistry::new();
    let error = registry
        .register(http_tool(
            "pinned",
            json!({"url": format!("{}/x", server.base), "allowed_hosts": ["api.example.com"]}),
        ))
        .unwrap_err();
    assert!(error.to_string().contains("allowed_hosts"), "{error}");
    registry
        .register(http_tool(
            "local",
            json!({"url": format!("{}/x", server.base), "allowed_hosts": ["127.0.0.1"]}),
        ))
        .unwrap();

    let limited = ToolRegistry::new().with_allowed_hosts(["127.0.0.1", "*.example.com"]);
    let error = limited
        .register(http_tool(
            "by_name",
            json!({"url": format!("http://localhost:{port}/x")}),
        ))
        .unwrap_err();
    assert!(error.to_string().contains("allowed hosts"), "{error}");
    limited
        .register(http_tool(
            "by_ip",
            json!({"url": format!("{}/x", server.base)}),
        ))
        .unwrap();
    let ok = run(&limited, "by_ip", json!({})).await.unwrap();
    assert!(!ok.is_error, "{ok:?}");
    assert_eq!(server.seen().len(), 1);
}
