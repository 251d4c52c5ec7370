//! The mock upstream's benchmark mode, over raw HTTP/1.1.

use promptkit_testkit::upstream::{MockUpstream, Profile};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn post(server: &MockUpstream, path: &str, body: &str) -> anyhow::Result<String> {
    let mut socket = TcpStream::connect(server.addr()).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn benchmark_mode_behaviour() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;

    let tool = post(&server, "/tool", "{}").await?;
    assert!(tool.contains(r#""status":"shipped""#), "{tool}");

    let unary = post(
        &server,
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await?;
    assert!(unary.contains("lookup_order") && unary.contains(r#""finish_reason":"tool_calls""#));

    let after_tool = post(
        &server,
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"c","content":"x"}]}"#,
    )
    .await?;
    assert!(after_tool.contains("chunk-3 ") && after_tool.contains(r#""finish_reason":"stop""#));

    let stream = post(
        &server,
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
    )
    .await?;
    assert!(stream.contains("text/event-stream"));
    assert_eq!(stream.matches("chunk-").count(), 3);
    assert!(stream.contains(r#""choices":[]"#) && stream.contains(r#""usage":{"#));
    assert!(stream.contains("data: [DONE]"));

    let no_usage = post(
        &server,
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"messages":[]}"#,
    )
    .await?;
    assert!(!no_usage.contains("\"usage\""));

    // A streaming request that offers tools gets the tool call streamed.
    let streamed_call = post(
        &server,
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"lookup_order"}}]}"#,
    )
    .await?;
    assert!(
        streamed_call.contains(r#""name":"lookup_order""#),
        "{streamed_call}"
    );
    assert!(streamed_call.contains(r#""finish_reason":"tool_calls""#));
    assert_eq!(streamed_call.matches("chunk-").count(), 0);
    assert!(streamed_call.contains("data: [DONE]"));

    let missing = post(&server, "/nope", "{}").await?;
    assert!(missing.starts_with("HTTP/1.1 404"));

    let recorded = server.requests();
    assert_eq!(recorded.len(), 7);
    assert_eq!(recorded[1].body["model"], "m");
    server.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn requests_are_recorded_only_while_recording_is_on() -> anyhow::Result<()> {
    let server = MockUpstream::start(Profile::INSTANT).await?;
    post(&server, "/tool", r#"{"n":1}"#).await?;
    server.record_requests(false);
    let unrecorded = post(&server, "/tool", r#"{"n":2}"#).await?;
    // Answered all the same.
    assert!(unrecorded.contains(r#""status":"shipped""#), "{unrecorded}");
    server.record_requests(true);
    post(&server, "/tool", r#"{"n":3}"#).await?;

    let bodies: Vec<_> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        [serde_json::json!({"n": 1}), serde_json::json!({"n": 3})]
    );
    server.shutdown().await?;
    Ok(())
}
