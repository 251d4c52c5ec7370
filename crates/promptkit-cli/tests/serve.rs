//! `promptkit serve`, run as a user would: the binary in front of a vendor-protocol upstream
//! from the test kit, driven with real HTTP requests.

use std::time::Duration;

use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted, SseStep, chunks};
use serde_json::{Value, json};

mod support;

use support::server::Server;

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// The `data:` payloads of an SSE body.
fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The streamed text of an OpenAI-style SSE body.
fn streamed_text(body: &str) -> String {
    data_lines(body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_openai_style_streams_answers_models_and_health() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &upstream.base_url(), &[]);
    let http = client();

    let health: Value = http
        .get(format!("{}/health", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health.as_object().unwrap().len(),
        1,
        "nothing about load: {health}"
    );
    let models: Value = http
        .get(format!("{}/v1/models", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "mock-model");

    // Streaming, with the usage chunk asked for.
    let response = http
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"model": "anything", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = response.text().await.unwrap();
    assert_eq!(streamed_text(&body), "chunk-1 chunk-2 chunk-3 ");
    let frames = data_lines(&body);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&frames[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let finish: Value = serde_json::from_str(&frames[frames.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage: Value = serde_json::from_str(&frames[frames.len() - 2]).unwrap();
    assert!(
        usage["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    // The system message of the request reached the model.
    let sent = &upstream.requests()[0].body;
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][0]["content"], "Be brief.");

    // Not streaming: one JSON answer. The request's earlier messages are the history.
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("Hi ")),
        SseStep::Json(chunks::text("Ada.")),
        SseStep::Json(chunks::finish("stop")),
        SseStep::Json(chunks::usage(7, 3, 0, 0)),
        SseStep::Done,
    ]));
    let answer: Value = http
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"messages": [
            {"role": "user", "content": "I am Ada."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Greet me."}]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hi Ada.");
    assert_eq!(answer["usage"]["total_tokens"], 10);
    let sent = &upstream.requests()[1].body;
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user"],
        "no system prompt is configured, so the server adds none: {sent}"
    );
    drop(server);
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_configured_tools_inside_the_turn() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let tool = home.path().join("lookup_order.json");
    std::fs::write(
        &tool,
        json!({"name": "lookup_order", "description": "Looks up an order by id",
            "input_schema": {"type": "object", "required": ["order_id"],
                             "properties": {"order_id": {"type": "string"}}},
            "executor": "http",
            "config": {"url": format!("{}/tool", upstream.origin()), "method": "POST"}})
        .to_string(),
    )
    .unwrap();
    // Round 1 streams a tool call split across chunks; round 2 answers with its result.
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::tool_start(0, "call_1", "lookup_order", "{\"order_")),
        SseStep::Json(chunks::tool_args(0, "id\":\"12345\"}")),
        SseStep::Json(chunks::finish("tool_calls")),
        SseStep::Done,
    ]));
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("Order 12345 ")),
        SseStep::Json(chunks::text("has shipped.")),
        SseStep::Json(chunks::finish("stop")),
        SseStep::Done,
    ]));
    let server = Server::start(
        home.path(),
        &upstream.base_url(),
        &["--tools", tool.to_str().unwrap()],
    );
    let body = client()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"stream": true,
            "messages": [{"role": "user", "content": "Where is order 12345?"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(streamed_text(&body), "Order 12345 has shipped.");
    assert!(body.contains("\"finish_reason\":\"stop\""), "{body}");

    let requests = upstream.requests();
    let model_calls: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(model_calls.len(), 2);
    assert_eq!(
        model_calls[0].body["tools"][0]["function"]["name"],
        "lookup_order"
    );
    // The tool ran over HTTP and its result went back to the model.
    assert!(requests.iter().any(|r| r.path == "/tool"));
    let tool_message = model_calls[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .cloned()
        .expect("a tool message");
    assert!(
        tool_message["content"]
            .as_str()
            .unwrap()
            .contains("shipped"),
        "{tool_message}"
    );
    drop(server);
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_header_keeps_the_conversation_in_the_store() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(
        home.path(),
        &upstream.base_url(),
        &["--system", "Answer briefly."],
    );
    let http = client();
    for text in ["first question", "second question"] {
        let response = http
            .post(format!("{}/v1/chat/completions", server.url))
            .header("x-session-id", "web-1")
            .json(&json!({"messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-session-id"], "web-1");
    }
    // The second model call saw the first exchange, loaded from the store.
    let sent = &upstream.requests()[1].body;
    let texts: Vec<String> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].to_string())
        .collect();
    assert_eq!(texts.len(), 4, "system, user, assistant, user: {sent}");
    // The configured system prompt goes first.
    assert_eq!(sent["messages"][0]["role"], "system", "{sent}");
    assert!(texts[0].contains("Answer briefly."), "{sent}");
    assert!(texts[1].contains("first question"), "{sent}");
    assert!(texts[3].contains("second question"), "{sent}");
    // The sessions API shows it.
    let session: Value = http
        .get(server.at("/v1/sessions/web-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["message_count"], 4, "{session}");
    assert_eq!(session["messages"][2]["content"], "second question");
    drop(server);

    // Serve keeps its sessions apart from the CLI's: in a store file of its own, under the
    // key's namespace (`anon` without keys).
    let list = |store: &str| {
        let out = support::promptkit(home.path())
            .args(["--state", store, "sessions", "list"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        list(&format!(
            "sqlite://{}",
            home.path().join("state.db").display()
        )),
        ""
    );
    let served = list(&format!(
        "sqlite://{}",
        home.path().join("serve.db").display()
    ));
    assert!(served.starts_with("srv:anon:web-1\t4 messages"), "{served}");
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_style_errors_and_upstream_failures_map_to_statuses() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path(), &upstream.base_url(), &[]);
    let http = client();
    let post = |body: Value| {
        http.post(format!("{}/v1/chat/completions", server.url))
            .json(&body)
            .send()
    };

    let response = post(json!({"messages": []})).await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no user message")
    );

    let response = post(json!({"messages": [{"role": "robot", "content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown role `robot`"),
        "{error}"
    );

    let response = http
        .post(format!("{}/v1/chat/completions", server.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // An upstream that rejects the key: a gateway error naming the cause, nothing retried.
    // On a streamed request the failure comes before the first token, so the response is not
    // a stream either but the same error with its status.
    for stream in [false, true] {
        upstream.push(Scripted::openai_error(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided",
        ));
        let response = post(json!({"stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
        assert_eq!(response.status(), 502, "stream: {stream}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "an error, not an event stream (stream: {stream})"
        );
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let error: Value = response.json().await.unwrap();
        // The client learns the class and a request id; the upstream's text stays in the log.
        let message = error["error"]["message"].as_str().unwrap();
        assert!(!message.contains("Incorrect API key"), "{error}");
        assert!(message.contains("model provider failed"), "{error}");
        assert!(message.contains(&request_id), "{error}");
        assert_eq!(error["error"]["code"], "upstream_error");
    }

    // A failure in the middle of a stream arrives as an error event, not as a clean end.
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("partial ")),
        SseStep::Disconnect,
    ]));
    let body = post(json!({"stream": true,
            "messages": [{"role": "user", "content": "hi"}]}))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(streamed_text(&body), "partial ");
    let last = data_lines(&body).pop().unwrap();
    assert!(last.contains("\"error\""), "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
    drop(server);
    upstream.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_stream_in_flight_finish_then_exits() {
    let upstream = MockUpstream::start(Profile::INSTANT).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut server = Server::start(home.path(), &upstream.base_url(), &[]);
    upstream.push(Scripted::sse(vec![
        SseStep::Json(chunks::text("slow ")),
        SseStep::Delay(Duration::from_millis(800)),
        SseStep::Json(chunks::text("answer")),
        SseStep::Json(chunks::finish("stop")),
        SseStep::Done,
    ]));
    let mut response = client()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    // The first chunk is here: the turn is in flight. Now ask the server to stop.
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("slow "));
    server.terminate();
    let mut rest = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("answer"), "{rest}");
    assert!(rest.contains("[DONE]"), "{rest}");
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        let log: Vec<String> = server.stderr.try_iter().collect();
        (status, log)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{:?}", status.1);
    assert!(
        status.1.iter().any(|l| l.contains("shutting down")),
        "{:?}",
        status.1
    );
    upstream.shutdown().await.unwrap();
}
