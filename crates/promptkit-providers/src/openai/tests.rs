use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use promptkit_core::{
    ContentPart, FinishReason, ImageDetail, Media, Message, ProviderError, ProviderRequest,
    ReasoningConfig, ReasoningEffort, ResponseFormat, StreamAccumulator, StreamEvent, ToolCall,
    ToolChoice, ToolDef, ToolResult, Usage,
};
use serde_json::{Value, json};

use super::stream::ChunkDecoder;
use super::wire::{Shape, build_body, error_from_body};
use super::{OpenAiConfig, openai_pricing};
use crate::http::{Progress, SseHandler};
use crate::sse::SseDecoder;

const OPENAI: Shape = Shape {
    send_model: true,
    max_completion_tokens: true,
};

fn tool(name: &str) -> ToolDef {
    ToolDef::new(
        name,
        format!("{name} tool"),
        json!({"type": "object", "properties": {"q": {"type": "string"}}}),
    )
}

/// A request that sets every field the body maps (no pass-through values).
fn every_field() -> ProviderRequest {
    let mut request = ProviderRequest::new(vec![
        Message::user("find order 1"),
        Message::assistant("")
            .with_tool_call(ToolCall::new("call_1", "lookup", json!({"q": "1"})))
            .with_tool_call(ToolCall::from_raw_arguments("call_2", "lookup", "{broken")),
        Message::tool(ToolResult::text("call_1", "lookup", "shipped")),
        Message::tool(ToolResult::text("call_2", "lookup", "unknown")),
    ])
    .with_system("Be brief.")
    .with_tools(vec![tool("lookup"), tool("cancel")]);
    request.tool_choice = ToolChoice::Tool("lookup".into());
    request.parallel_tool_calls = Some(true);
    request.temperature = Some(0.0);
    request.top_p = Some(0.5);
    request.max_tokens = Some(100);
    request.seed = Some(7);
    request.stop = vec!["END".into()];
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object"}),
        strict: true,
    });
    request.reasoning = Some(ReasoningConfig {
        effort: Some(ReasoningEffort::Low),
        ..ReasoningConfig::default()
    });
    request
}

#[test]
fn request_maps_every_field() {
    let mut request = every_field();
    request.extra.insert("user".into(), json!("u-1"));
    request.extra.insert("model".into(), json!("ignored"));

    let body = build_body(&request, "gpt-4o", OPENAI, true).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "find order 1"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "lookup", "arguments": "{\"q\":\"1\"}"}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "lookup", "arguments": "{broken"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
                {"role": "tool", "tool_call_id": "call_2", "content": "unknown"}
            ],
            "tools": [
                {"type": "function", "function": {"name": "lookup", "description": "lookup tool",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "cancel", "description": "cancel tool",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "parallel_tool_calls": true,
            "temperature": 0.0,
            "top_p": 0.5,
            "max_completion_tokens": 100,
            "seed": 7,
            "stop": ["END"],
            "response_format": {"type": "json_schema", "json_schema":
                {"name": "answer", "schema": {"type": "object"}, "strict": true}},
            "reasoning_effort": "low",
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1"
        })
    );
}

#[test]
fn pass_through_never_replaces_a_key_the_body_writes() {
    // Guards `Body::sets` against drift: a field it forgets would be written twice.
    let azure_like = Shape {
        send_model: false,
        max_completion_tokens: false,
    };
    for shape in [OPENAI, azure_like] {
        for stream in [true, false] {
            let mut request = every_field();
            let own = build_body(&request, "m", shape, stream).unwrap();
            for key in own.as_object().unwrap().keys() {
                request.extra.insert(key.clone(), json!("pass-through"));
            }
            assert_eq!(build_body(&request, "m", shape, stream).unwrap(), own);
        }
    }
}

#[test]
fn tool_choice_forms_and_no_tools() {
    let mut request = ProviderRequest::new(vec![Message::user("x")]).with_tools(vec![tool("a")]);
    for (choice, expected) in [
        (ToolChoice::Auto, None),
        (ToolChoice::None, Some(json!("none"))),
        (ToolChoice::Required, Some(json!("required"))),
    ] {
        request.tool_choice = choice;
        let body = build_body(&request, "m", OPENAI, false).unwrap();
        assert_eq!(body.get("tool_choice").cloned(), expected);
        assert!(body.get("stream").is_none());
    }
    // Without tools, neither tool_choice nor parallel_tool_calls is sent.
    let mut bare = ProviderRequest::new(vec![Message::user("x")]);
    bare.tool_choice = ToolChoice::Required;
    bare.parallel_tool_calls = Some(false);
    let body = build_body(&bare, "m", OPENAI, false).unwrap();
    assert!(body.get("tool_choice").is_none());
    assert!(body.get("parallel_tool_calls").is_none());
    assert!(body.get("tools").is_none());
}

#[test]
fn media_parts_and_compatible_shape() {
    let user = Message::user("look")
        .with_part(ContentPart::Image(
            Media::url("https://example.com/a.png").with_detail(ImageDetail::High),
        ))
        .with_part(ContentPart::Image(Media::bytes(
            Bytes::from_static(b"\x89PNG"),
            "image/png",
        )))
        .with_part(ContentPart::Audio(Media::bytes(
            Bytes::from_static(b"RIFF"),
            "audio/wav",
        )));
    let mut request = ProviderRequest::new(vec![user]);
    request.max_tokens = Some(5);
    request.response_format = Some(ResponseFormat::JsonObject);
    let shape = Shape {
        send_model: false,
        max_completion_tokens: false,
    };
    let body = build_body(&request, "m", shape, false).unwrap();
    assert!(body.get("model").is_none());
    assert_eq!(body["max_tokens"], json!(5));
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
        ])
    );
}

#[test]
fn unsupported_media_is_a_typed_error() {
    let video = Message::user("x").with_part(ContentPart::Video(Media::url("https://v")));
    let err = build_body(&ProviderRequest::new(vec![video]), "m", OPENAI, false).unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
    let ogg = Message::user("x").with_part(ContentPart::Audio(Media::bytes(
        Bytes::from_static(b"x"),
        "audio/ogg",
    )));
    let err = build_body(&ProviderRequest::new(vec![ogg]), "m", OPENAI, false).unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
    let file = Message::user("x").with_part(ContentPart::Image(Media::file("/tmp/a.png")));
    let err = build_body(&ProviderRequest::new(vec![file]), "m", OPENAI, false).unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
}

#[test]
fn error_bodies_map_to_typed_errors() {
    let body = |code: &str, kind: &str| {
        json!({"error": {"message": "boom", "type": kind, "code": code}}).to_string()
    };
    assert!(matches!(
        error_from_body(401, &body("invalid_api_key", "invalid_request_error"), None),
        ProviderError::Auth { .. }
    ));
    assert!(matches!(
        error_from_body(403, "", None),
        ProviderError::Auth { .. }
    ));
    let limited = error_from_body(
        429,
        &body("rate_limit_exceeded", "requests"),
        Some(Duration::from_secs(2)),
    );
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
    assert!(limited.is_retryable());
    assert!(
        !error_from_body(429, &body("insufficient_quota", "insufficient_quota"), None)
            .is_retryable()
    );
    assert!(matches!(
        error_from_body(
            400,
            &body("context_length_exceeded", "invalid_request_error"),
            None
        ),
        ProviderError::ContextTooLong { .. }
    ));
    assert!(matches!(
        error_from_body(400, &body("content_filter", "invalid_request_error"), None),
        ProviderError::ContentFiltered { .. }
    ));
    for status in [400, 404, 422] {
        assert!(matches!(
            error_from_body(status, &body("bad", "invalid_request_error"), None),
            ProviderError::BadRequest { .. }
        ));
    }
    let overloaded = error_from_body(503, "<html>down</html>", None);
    assert!(
        matches!(&overloaded, ProviderError::Overloaded { status: 503, message, .. } if message.contains("down"))
    );
    assert!(overloaded.is_retryable());
    let server = error_from_body(
        500,
        r#"{"error":{"message":"boom","type":"server_error"}}"#,
        None,
    );
    assert!(matches!(&server, ProviderError::Server { status: 500, .. }));
    // A used-up quota is a 429 that waiting does not fix.
    let quota = error_from_body(
        429,
        r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
        Some(Duration::from_secs(1)),
    );
    assert!(
        matches!(&quota, ProviderError::QuotaExhausted { .. }),
        "{quota:?}"
    );
    assert!(!quota.is_retryable());
    // Ollama-style `{"error": "text"}`.
    let ollama = error_from_body(404, r#"{"error":"model 'x' not found"}"#, None);
    assert!(
        matches!(&ollama, ProviderError::BadRequest { message, .. } if message.contains("not found"))
    );
}

/// What each frame of a stream makes the decoder say.
fn progress(frames: &[&str]) -> Vec<Progress> {
    let mut handler = ChunkDecoder::new(tracing::Span::none());
    let mut out = VecDeque::new();
    frames
        .iter()
        .map(|data| {
            let event = SseDecoder::new()
                .feed(format!("data: {data}\n\n").as_bytes())
                .unwrap()
                .remove(0);
            handler.on_event(event, &mut out).expect("decodes")
        })
        .collect()
}

/// The answer is complete at the first chunk with usage at or after the finish reason;
/// usage reported before the finish (continuous usage) does not end it.
#[test]
fn the_answer_is_complete_at_usage_after_the_finish_reason() {
    use Progress::{Answered, End, More};
    let text = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
    let finish = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    let usage = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
    let text_with_usage = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
    let finish_with_usage = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
    assert_eq!(progress(&[text, finish, usage]), [More, More, Answered]);
    assert_eq!(progress(&[text, finish_with_usage]), [More, Answered]);
    assert_eq!(
        progress(&[text_with_usage, text_with_usage, finish_with_usage]),
        [More, More, Answered]
    );
    // Without usage, `[DONE]` ends it, as before.
    assert_eq!(progress(&[text, finish, "[DONE]"]), [More, More, End]);
}

fn decode(frames: &str) -> (Vec<StreamEvent>, Result<(), ProviderError>) {
    let mut sse = SseDecoder::new();
    let mut handler = ChunkDecoder::new(tracing::Span::none());
    let mut out = VecDeque::new();
    let mut events = sse.feed(frames.as_bytes()).unwrap();
    events.extend(sse.finish().unwrap());
    for event in events {
        match handler.on_event(event, &mut out) {
            Ok(Progress::End | Progress::Answered) => return (out.into(), Ok(())),
            Ok(Progress::More | Progress::KeepAlive | Progress::Malformed(_)) => {}
            Err(e) => return (out.into(), Err(e)),
        }
    }
    let end = handler.on_end(None, &mut out);
    (out.into(), end)
}

fn fold(events: &[StreamEvent]) -> Message {
    let mut acc = StreamAccumulator::new();
    for e in events {
        acc.push(e);
    }
    acc.finish()
}

#[test]
fn real_wire_tool_call_stream_keeps_finish_reason() {
    let frames = r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"location\":"}}]}}]}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}

data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}

data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":15,"total_tokens":35,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}

data: [DONE]

"#;
    let (events, end) = decode(frames);
    end.unwrap();
    let finishes = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Finish { .. }))
        .count();
    assert_eq!(finishes, 1);
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Finish {
            reason: FinishReason::ToolCalls
        })
    ));
    let message = fold(&events);
    assert_eq!(message.tool_calls.len(), 1);
    assert_eq!(message.tool_calls[0].id, "call_1");
    assert_eq!(
        message.tool_calls[0].arguments,
        json!({"location": "Paris"})
    );
    assert_eq!(
        message.usage,
        Some(Usage {
            input_tokens: Some(20),
            output_tokens: Some(15),
            cached_input_tokens: Some(4),
            reasoning_tokens: Some(3),
            ..Usage::default()
        })
    );
}

#[test]
fn parallel_calls_reasoning_and_missing_done() {
    let frames = concat!(
        r#"data: {"choices":[{"delta":{"reasoning_content":"think"}}]}"#,
        "\n\n",
        r#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#,
        "\n\n",
        r#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\""}},{"index":1,"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}"#,
        "\n\n",
        r#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
        "\n\n",
        r#"data: {"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        "\n\n",
    );
    let (events, end) = decode(frames);
    end.unwrap();
    let message = fold(&events);
    assert_eq!(message.text(), "Hi");
    assert_eq!(
        message.reasoning().next().and_then(|r| r.text.as_deref()),
        Some("think")
    );
    assert_eq!(message.tool_calls.len(), 2);
    assert_eq!(message.tool_calls[0].arguments, json!({"x": 1}));
    assert_eq!(message.tool_calls[1].name, "g");
    assert_eq!(message.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(message.usage, None);
}

#[test]
fn malformed_frame_is_skipped_and_truncation_detected() {
    let frames = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {oops\n\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n";
    let (events, end) = decode(frames);
    assert_eq!(fold(&events).text(), "ab");
    assert!(matches!(end, Err(ProviderError::StreamTruncated { .. })));
}

#[test]
fn lenient_chunks_unknown_reason_and_whole_call_in_one_delta() {
    // Ollama sends whole calls, no index, arguments as an object, unknown reasons.
    let frames = concat!(
        r#"data: {"model":"llama3","choices":[{"delta":{"content":null,"tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]}}],"usage":{}}"#,
        "\n\n",
        r#"data: {"choices":null,"usage":null}"#,
        "\n\n",
        r#"data: {"choices":[{"delta":{"content":"x","tool_calls":null},"finish_reason":""}]}"#,
        "\n\n",
        r#"data: {"choices":[{"delta":{},"finish_reason":"eos_token_weird"}]}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    let (events, end) = decode(frames);
    end.unwrap();
    let message = fold(&events);
    assert_eq!(message.tool_calls[0].id, "call_0");
    assert_eq!(message.tool_calls[0].arguments, json!({"a": 1}));
    assert_eq!(message.text(), "x");
    assert_eq!(
        message.finish_reason,
        Some(FinishReason::Other("eos_token_weird".into()))
    );
    assert!(message.usage.is_none());
}

#[test]
fn in_stream_error_object_fails_the_stream() {
    let frames = r#"data: {"error":{"message":"overloaded","type":"server_error"}}"#;
    let (_, end) = decode(frames);
    assert!(matches!(end, Err(ProviderError::Server { .. })));
}

#[test]
fn pricing_prefix_and_unknown_models() {
    let table = openai_pricing();
    let usage = Usage {
        input_tokens: Some(1_000_000),
        output_tokens: Some(1_000_000),
        cached_input_tokens: Some(500_000),
        ..Usage::default()
    };
    let cost = table.cost("gpt-4o-2024-08-06", &usage).unwrap();
    assert!((cost.total_usd - (1.25 + 0.625 + 10.0)).abs() < 1e-9);
    assert!(table.cost("gpt-4o-mini", &usage).unwrap().total_usd < 1.0);
    assert!(table.cost("llama3", &usage).is_none());
}

#[test]
fn config_urls_and_debug_redacts_key() {
    let openai = OpenAiConfig::openai("gpt-4o", "sk-secret");
    assert_eq!(openai.url(), "https://api.openai.com/v1/chat/completions");
    assert!(!format!("{openai:?}").contains("sk-secret"));
    let azure = OpenAiConfig::azure("https://res.openai.azure.com/", "prod", "gpt-4o", "k")
        .with_api_version("2025-01-01");
    assert_eq!(
        azure.url(),
        "https://res.openai.azure.com/openai/deployments/prod/chat/completions?api-version=2025-01-01"
    );
    let value: Value = json!(azure.url());
    assert!(value.is_string());
}

#[test]
fn chunk_strings_are_borrowed_when_plain_and_still_read_when_escaped() {
    use std::borrow::Cow;

    use super::wire::ChatChunk;

    let plain = r#"{"model":"gpt-4o","choices":[{"delta":{},"finish_reason":"stop"}]}"#;
    let chunk: ChatChunk<'_> = serde_json::from_str(plain).unwrap();
    assert!(matches!(chunk.model, Some(Cow::Borrowed("gpt-4o"))));
    assert!(matches!(
        chunk.choices[0].finish_reason,
        Some(Cow::Borrowed("stop"))
    ));

    // An escaped string cannot be borrowed: it is read into an owned one, not rejected.
    let escaped = r#"{"model":"gpt\u002d4o","choices":[{"finish_reason":null}]}"#;
    let chunk: ChatChunk<'_> = serde_json::from_str(escaped).unwrap();
    assert_eq!(chunk.model.as_deref(), Some("gpt-4o"));
    assert!(chunk.choices[0].finish_reason.is_none());
    let none: ChatChunk<'_> = serde_json::from_str(r#"{"choices":[]}"#).unwrap();
    assert!(none.model.is_none());
}
