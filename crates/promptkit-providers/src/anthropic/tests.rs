use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use promptkit_core::{
    ContentPart, FinishReason, Media, Message, ProviderData, ProviderError, ProviderRequest,
    Reasoning, ReasoningConfig, ResponseFormat, StreamAccumulator, StreamEvent, ToolCall,
    ToolChoice, ToolDef, ToolErrorKind, ToolResult, Usage,
};
use serde_json::{Value, json};

use super::stream::EventDecoder;
use super::wire::{WireUsage, build_body, error_from_body};
use super::{AnthropicConfig, anthropic_pricing};
use crate::http::{Progress, SseHandler};
use crate::sse::SseDecoder;

fn tool(name: &str) -> ToolDef {
    ToolDef::new(name, format!("{name} tool"), json!({"type": "object"}))
}

fn signed(text: &str, signature: &str) -> ContentPart {
    ContentPart::Reasoning(Reasoning {
        text: Some(text.into()),
        redacted: false,
        provider_data: ProviderData::new().with("anthropic.signature", signature),
    })
}

#[test]
fn request_maps_every_field() {
    let assistant = Message::assistant("")
        .with_part(signed("think", "sig-1"))
        .with_part(ContentPart::Reasoning(Reasoning {
            text: None,
            redacted: true,
            provider_data: ProviderData::new().with("anthropic.redacted_data", "enc"),
        }))
        // Another vendor's reasoning cannot be replayed.
        .with_part(ContentPart::Reasoning(Reasoning {
            text: Some("openai thoughts".into()),
            ..Reasoning::default()
        }))
        .with_part("Let me look.")
        .with_tool_call(ToolCall::new("toolu_1", "lookup", json!({"q": "1"})))
        .with_tool_call(ToolCall::from_raw_arguments("toolu_2", "lookup", "{broken"));
    let mut request = ProviderRequest::new(vec![
        Message::system("Also this."),
        Message::user("find order 1"),
        assistant,
        Message::tool(ToolResult::text("toolu_1", "lookup", "shipped")),
        Message::tool(ToolResult::error(
            "toolu_2",
            "lookup",
            ToolErrorKind::InvalidArguments,
            "bad arguments",
        )),
        Message::user("thanks"),
    ])
    .with_system("Be brief.")
    .with_tools(vec![tool("lookup"), tool("cancel")]);
    request.tool_choice = ToolChoice::Tool("lookup".into());
    request.parallel_tool_calls = Some(false);
    request.temperature = Some(0.5);
    request.top_p = Some(0.9);
    request.seed = Some(7);
    request.stop = vec!["END".into()];
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object"}),
        strict: true,
    });
    request.reasoning = Some(ReasoningConfig {
        budget_tokens: Some(8000),
        ..ReasoningConfig::default()
    });
    request
        .extra
        .insert("metadata".into(), json!({"user_id": "u-1"}));
    request.extra.insert("model".into(), json!("ignored"));

    let body = build_body(&request, "claude-sonnet-4-5", 4096, true).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "system": "Be brief.\n\nAlso this.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "find order 1"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "think", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "enc"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "1"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "bad arguments",
                     "is_error": true},
                    {"type": "text", "text": "thanks"}
                ]}
            ],
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "max_tokens": 9024,
            "tools": [
                {"name": "lookup", "description": "lookup tool", "input_schema": {"type": "object"}},
                {"name": "cancel", "description": "cancel tool", "input_schema": {"type": "object"}}
            ],
            "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": true},
            "temperature": 0.5,
            "top_p": 0.8999999761581421,
            "stop_sequences": ["END"],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
            "stream": true,
            "metadata": {"user_id": "u-1"}
        })
    );
}

#[test]
fn tool_choice_forms_defaults_and_media() {
    let mut request = ProviderRequest::new(vec![Message::user("x")]).with_tools(vec![tool("a")]);
    for (choice, expected) in [
        (ToolChoice::Auto, None),
        (ToolChoice::None, Some(json!({"type": "none"}))),
        (ToolChoice::Required, Some(json!({"type": "any"}))),
    ] {
        request.tool_choice = choice;
        let body = build_body(&request, "m", 4096, false).unwrap();
        assert_eq!(body.get("tool_choice").cloned(), expected);
        assert_eq!(body["max_tokens"], json!(4096));
        assert!(body.get("stream").is_none());
        assert!(body.get("system").is_none());
    }
    request.tool_choice = ToolChoice::Auto;
    request.parallel_tool_calls = Some(false);
    let body = build_body(&request, "m", 4096, false).unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );

    let user = Message::user("look")
        .with_part(ContentPart::Image(Media::url("https://example.com/a.png")))
        .with_part(ContentPart::Image(Media::bytes(
            Bytes::from_static(b"\x89PNG"),
            "image/png",
        )))
        .with_part(ContentPart::Document(Media::bytes(
            Bytes::from_static(b"%PDF"),
            "application/pdf",
        )))
        .with_part(ContentPart::Document(Media::url(
            "https://example.com/a.pdf",
        )))
        .with_part(ContentPart::Document(Media::bytes(
            Bytes::from_static(b"plain notes"),
            "text/plain",
        )));
    let mut media = ProviderRequest::new(vec![user]);
    media.max_tokens = Some(10);
    let body = build_body(&media, "m", 4096, false).unwrap();
    assert_eq!(body["max_tokens"], json!(10));
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                "data": "iVBORw=="}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                "data": "JVBERg=="}},
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                "data": "plain notes"}}
        ])
    );

    let audio = ProviderRequest::new(vec![Message::user("x").with_part(ContentPart::Audio(
        Media::bytes(Bytes::from_static(b"RIFF"), "audio/wav"),
    ))]);
    assert!(matches!(
        build_body(&audio, "m", 4096, false),
        Err(ProviderError::Unsupported { .. })
    ));
    let mut json_object = ProviderRequest::new(vec![Message::user("x")]);
    json_object.response_format = Some(ResponseFormat::JsonObject);
    assert!(matches!(
        build_body(&json_object, "m", 4096, false),
        Err(ProviderError::Unsupported { .. })
    ));
}

#[test]
fn tool_result_with_image_is_sent_as_blocks() {
    let mut result = ToolResult::text("toolu_1", "shot", "here");
    result
        .content
        .push(ContentPart::Image(Media::url("https://e.com/x.png")));
    let request = ProviderRequest::new(vec![Message::tool(result)]);
    let body = build_body(&request, "m", 4096, false).unwrap();
    assert_eq!(
        body["messages"][0]["content"][0]["content"],
        json!([{"type": "text", "text": "here"},
               {"type": "image", "source": {"type": "url", "url": "https://e.com/x.png"}}])
    );
}

fn decode(input: &str) -> (Vec<StreamEvent>, Option<ProviderError>) {
    let mut sse = SseDecoder::new();
    let mut decoder = EventDecoder::new(tracing::Span::none());
    let mut out = VecDeque::new();
    let mut events = sse.feed(input.as_bytes()).unwrap();
    events.extend(sse.finish().unwrap());
    for event in events {
        match decoder.on_event(event, &mut out) {
            Ok(Progress::End | Progress::Answered) => return (out.into(), None),
            Ok(Progress::More | Progress::KeepAlive | Progress::Malformed(_)) => {}
            Err(e) => return (out.into(), Some(e)),
        }
    }
    let end = decoder.on_end(None, &mut out).err();
    (out.into(), end)
}

fn frame(event: &Value) -> String {
    format!(
        "event: {}\ndata: {event}\n\n",
        event["type"].as_str().unwrap_or("")
    )
}

#[test]
fn stream_of_the_inventory_sample() {
    let events = [
        json!({"type": "message_start", "message": {"model": "claude-x", "usage":
            {"input_tokens": 12, "cache_read_input_tokens": 100,
             "cache_creation_input_tokens": 8, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block":
            {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta":
            {"type": "thinking_delta", "thinking": "hmm"}}),
        json!({"type": "content_block_delta", "index": 0, "delta":
            {"type": "signature_delta", "signature": "sig"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta":
            {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
        json!({"type": "content_block_delta", "index": 1, "delta":
            {"type": "input_json_delta", "partial_json": "\"test\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 30}}),
        json!({"type": "message_stop"}),
    ];
    let input: String = events.iter().map(frame).collect();
    let (events, error) = decode(&input);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events[2],
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "search".into(),
            provider_data: ProviderData::new(),
        }
    );
    let mut acc = StreamAccumulator::new();
    for e in &events {
        acc.push(e);
    }
    let message = acc.finish();
    assert_eq!(message.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(message.tool_calls[0].arguments, json!({"q": "test"}));
    let reasoning: Vec<_> = message.reasoning().collect();
    assert_eq!(reasoning[0].text.as_deref(), Some("hmm"));
    assert_eq!(
        reasoning[0].provider_data.get_str("anthropic.signature"),
        Some("sig")
    );
    assert_eq!(
        message.usage,
        Some(Usage {
            input_tokens: Some(120),
            output_tokens: Some(30),
            cached_input_tokens: Some(100),
            cache_write_input_tokens: Some(8),
            ..Usage::default()
        })
    );
    // Exactly one usage and one finish, last.
    let n = events.len();
    assert!(matches!(events[n - 2], StreamEvent::Usage { .. }));
    assert!(matches!(events[n - 1], StreamEvent::Finish { .. }));
}

#[test]
fn stream_error_event_and_truncation() {
    let input = frame(&json!({"type": "message_start", "message": {}}))
        + &frame(&json!({"type": "error", "error":
            {"type": "overloaded_error", "message": "Overloaded"}}));
    let (_, error) = decode(&input);
    assert!(
        matches!(error, Some(ProviderError::Overloaded { status: 529, .. })),
        "{error:?}"
    );
    let input = frame(&json!({"type": "error", "error": {"type": "api_error", "message": "x"}}));
    assert!(matches!(
        decode(&input).1,
        Some(ProviderError::Server { status: 500, .. })
    ));
    // Cut off before the stop reason: truncated.
    let input = frame(&json!({"type": "message_start", "message": {}}))
        + &frame(&json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}))
        + &frame(&json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hel"}}));
    assert!(matches!(
        decode(&input).1,
        Some(ProviderError::StreamTruncated { .. })
    ));
    // The `message_delta` with the stop reason completes the answer; `message_stop` is not
    // waited for.
    let input = frame(
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 3}}),
    );
    let (events, error) = decode(&input);
    assert!(error.is_none(), "{error:?}");
    assert!(matches!(
        events[..],
        [
            StreamEvent::Usage { .. },
            StreamEvent::Finish {
                reason: FinishReason::Stop
            }
        ]
    ));
}

#[test]
fn error_bodies_map_to_typed_errors() {
    let body = |kind: &str, message: &str| {
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
    };
    assert!(matches!(
        error_from_body(401, &body("authentication_error", "bad key"), None),
        ProviderError::Auth { .. }
    ));
    assert!(matches!(
        error_from_body(403, &body("permission_error", "no"), None),
        ProviderError::Auth { .. }
    ));
    let retry = Some(Duration::from_secs(3));
    match error_from_body(529, &body("overloaded_error", "Overloaded"), retry) {
        ProviderError::Overloaded {
            status: 529,
            retry_after,
            ..
        } => assert_eq!(retry_after, retry),
        other => panic!("{other:?}"),
    }
    // A used-up credit balance comes as an invalid request, and billing errors as 402.
    let credit = body(
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
    );
    let quota = error_from_body(400, &credit, None);
    assert!(
        matches!(&quota, ProviderError::QuotaExhausted { message } if message.contains("credit")),
        "{quota:?}"
    );
    assert!(!quota.is_retryable());
    assert!(matches!(
        error_from_body(402, &body("billing_error", "pay up"), None),
        ProviderError::QuotaExhausted { .. }
    ));
    assert!(matches!(
        error_from_body(429, &body("rate_limit_error", "slow"), None),
        ProviderError::RateLimited { .. }
    ));
    assert!(matches!(
        error_from_body(
            400,
            &body(
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum"
            ),
            None
        ),
        ProviderError::ContextTooLong { .. }
    ));
    assert!(matches!(
        error_from_body(400, &body("invalid_request_error", "bad field"), None),
        ProviderError::BadRequest { status: 400, .. }
    ));
    assert!(matches!(
        error_from_body(500, &body("api_error", "oops"), None),
        ProviderError::Server { status: 500, .. }
    ));
    assert!(matches!(
        error_from_body(502, "<html>bad gateway</html>", None),
        ProviderError::Server { status: 502, .. }
    ));
}

#[test]
fn usage_normalisation_and_pricing() {
    let usage = WireUsage {
        input_tokens: Some(10),
        output_tokens: Some(5),
        cache_read_input_tokens: Some(1000),
        cache_creation_input_tokens: Some(0),
    }
    .to_usage()
    .unwrap();
    assert_eq!(usage.input_tokens, Some(1010));
    assert_eq!(usage.cached_input_tokens, Some(1000));
    assert_eq!(usage.cache_write_input_tokens, Some(0));
    assert_eq!(WireUsage::default().to_usage(), None);

    let table = anthropic_pricing();
    let cost = table
        .cost("claude-sonnet-4-5-20250929", &usage)
        .expect("priced");
    // 10 plain input at $3, 1000 cache reads at $0.30, 5 output at $15.
    let expected = (10.0 * 3.0 + 1000.0 * 0.30 + 5.0 * 15.0) / 1e6;
    assert!((cost.total_usd - expected).abs() < 1e-12);
    assert!(table.get("claude-opus-4-20250514").is_some());
    assert!(table.get("claude-opus-4-6").is_none());

    let config = AnthropicConfig::new("claude-haiku-4-5", "sk-ant-secret");
    assert!(!format!("{config:?}").contains("secret"));
    assert_eq!(config.url(), "https://api.anthropic.com/v1/messages");
}
