//! Unit tests of the Gemini wire format, schema sanitiser and decoder.

use std::collections::VecDeque;
use std::time::Duration;

use promptkit_core::{
    ContentPart, FinishReason, Media, Message, ProviderData, ProviderError, ProviderRequest,
    Reasoning, ReasoningConfig, ReasoningEffort, ResponseFormat, StreamAccumulator, StreamEvent,
    ToolCall, ToolChoice, ToolDef, ToolResult, Usage,
};
use serde_json::{Value, json};

use super::wire::{CALL_ID_KEY, GenerateResponse, SIGNATURE_KEY, build_body, error_from_body};
use super::{
    ChunkDecoder, GeminiConfig, GeminiStreamDecoder, SchemaError, SchemaMode, sanitize_schema,
};

fn body(request: &ProviderRequest) -> Value {
    build_body(request, SchemaMode::Sanitized).expect("body builds")
}

fn weather_tool() -> ToolDef {
    ToolDef::new(
        "get_weather",
        "Weather for a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"], "additionalProperties": false}),
    )
}

#[test]
fn system_roles_and_generation_config() {
    let mut request = ProviderRequest::new(vec![
        Message::system("Also terse."),
        Message::user("hi"),
        Message::assistant("hello"),
        Message::user("bye"),
    ])
    .with_system("Be brief.");
    request.temperature = Some(0.0);
    request.top_p = Some(0.5);
    request.max_tokens = Some(64);
    request.seed = Some(7);
    request.stop = vec!["END".into()];
    let body = body(&request);
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be brief.\n\nAlso terse."}]})
    );
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "bye"}]},
        ])
    );
    assert_eq!(
        body["generationConfig"],
        json!({"temperature": 0.0, "topP": 0.5, "maxOutputTokens": 64, "seed": 7,
            "stopSequences": ["END"]})
    );
    // Nothing set: no generationConfig, no tools.
    let plain = build_body(
        &ProviderRequest::new(vec![Message::user("x")]),
        SchemaMode::Sanitized,
    )
    .unwrap();
    assert!(plain.get("generationConfig").is_none());
    assert!(plain.get("tools").is_none());
    assert!(plain.get("systemInstruction").is_none());
}

#[test]
fn tools_tool_choice_and_sanitised_parameters() {
    let no_args = ToolDef::new("now", "", json!({"type": "object", "properties": {}}));
    let mut request =
        ProviderRequest::new(vec![Message::user("hi")]).with_tools(vec![weather_tool(), no_args]);
    request.parallel_tool_calls = Some(false);
    let expect_decls = json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]}},
        {"name": "now"}
    ]}]);
    let cases = [
        (ToolChoice::Auto, None),
        (ToolChoice::None, Some(json!({"mode": "NONE"}))),
        (ToolChoice::Required, Some(json!({"mode": "ANY"}))),
        (
            ToolChoice::Tool("get_weather".into()),
            Some(json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})),
        ),
    ];
    for (choice, expected) in cases {
        request.tool_choice = choice;
        let body = body(&request);
        assert_eq!(body["tools"], expect_decls);
        assert_eq!(
            body.get("toolConfig")
                .map(|c| c["functionCallingConfig"].clone()),
            expected
        );
        assert!(body.get("parallel_tool_calls").is_none());
    }
    // Native JSON Schema mode keeps the schema (minus meta keywords).
    let mut tool = weather_tool();
    tool.input_schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let native = build_body(
        &ProviderRequest::new(vec![Message::user("x")]).with_tools(vec![tool]),
        SchemaMode::JsonSchema,
    )
    .unwrap();
    let declaration = &native["tools"][0]["functionDeclarations"][0];
    assert!(declaration.get("parameters").is_none());
    assert_eq!(
        declaration["parametersJsonSchema"]["additionalProperties"],
        json!(false)
    );
    assert!(declaration["parametersJsonSchema"].get("$schema").is_none());
}

#[test]
fn a_tool_whose_schema_cannot_be_sanitised_is_left_out_alone() {
    let tree = ToolDef::new(
        "tree",
        "",
        json!({"type": "object", "properties": {"root": {"$ref": "#/$defs/node"}},
            "$defs": {"node": {"type": "object", "properties": {
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}}),
    );
    assert!(matches!(
        sanitize_schema(&tree.input_schema),
        Err(SchemaError::RecursiveRef { .. })
    ));
    let fine = ToolDef::new(
        "fine",
        "",
        json!({"type": "object", "properties": {"q": {"type": "string"}}}),
    );
    let request = ProviderRequest::new(vec![Message::user("x")]).with_tools(vec![tree, fine]);
    let body = build_body(&request, SchemaMode::Sanitized).unwrap();
    let names: Vec<&str> = body["tools"][0]["functionDeclarations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["fine"]);
    // With no tool left, none is declared (an empty declaration list is a 400).
    let request =
        ProviderRequest::new(vec![Message::user("x")]).with_tools(vec![request.tools[0].clone()]);
    let body = build_body(&request, SchemaMode::Sanitized).unwrap();
    assert!(body.get("tools").is_none() && body.get("toolConfig").is_none());
    // The native mode passes references through.
    assert!(build_body(&request, SchemaMode::JsonSchema).is_ok());
}

/// Thirty levels of definitions that each use the next twice expand to 2^30 subschemas:
/// the sanitiser refuses them at its node limit, quickly, and only that tool is left out.
#[test]
fn a_doubly_referenced_dag_is_refused_at_the_size_limit() {
    let mut defs = serde_json::Map::new();
    for level in 0..30 {
        let next = format!("#/$defs/d{}", level + 1);
        defs.insert(
            format!("d{level}"),
            json!({"type": "object", "properties": {
                "left": {"$ref": next}, "right": {"$ref": next}}}),
        );
    }
    defs.insert("d30".into(), json!({"type": "string"}));
    let schema = json!({"type": "object", "properties": {"root": {"$ref": "#/$defs/d0"}},
        "$defs": defs});
    // Without the limit this would not end (nor fit in memory).
    assert_eq!(sanitize_schema(&schema), Err(SchemaError::TooLarge));
    // Five levels (64 leaves) are fine.
    let mut small = schema.clone();
    small["$defs"]["d5"] = json!({"type": "string"});
    assert!(sanitize_schema(&small).is_ok());

    let dag = ToolDef::new("dag", "", schema);
    let fine = ToolDef::new(
        "fine",
        "",
        json!({"type": "object", "properties": {"q": {"type": "string"}}}),
    );
    let request = ProviderRequest::new(vec![Message::user("x")]).with_tools(vec![dag, fine]);
    let body = build_body(&request, SchemaMode::Sanitized).unwrap();
    let declarations = body["tools"][0]["functionDeclarations"].as_array().unwrap();
    assert_eq!(declarations.len(), 1);
    assert_eq!(declarations[0]["name"], "fine");
}

#[test]
fn sanitiser_handles_the_keywords_mcp_servers_use() {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "urn:x",
        "type": "object",
        "additionalProperties": false,
        "definitions": {"point": {"type": "object", "properties": {
            "x": {"type": "number", "format": "double"}, "y": {"type": "number"}},
            "required": ["x", "y"]}},
        "properties": {
            "at": {"$ref": "#/definitions/point", "description": "Where"},
            "tags": {"type": "array", "items": {"type": "string", "format": "email"},
                     "uniqueItems": true, "minItems": 1},
            "level": {"type": "integer", "enum": [1, 2, 3], "exclusiveMinimum": 0},
            "kind": {"const": "fixed"},
            "when": {"type": "string", "format": "date-time"},
            "either": {"oneOf": [{"type": "string"}, {"type": "null"}]},
            "many": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "both": {"allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]},
            "multi": {"type": ["string", "integer"]},
            "free": true,
            "pattern_props": {"type": "object", "patternProperties": {"^x": {"type": "string"}},
                              "properties": {"k": {"type": "string"}}}
        },
        "required": ["at", "nope"]
    });
    let out = sanitize_schema(&schema).unwrap();
    assert_eq!(
        out,
        json!({
            "type": "object",
            "properties": {
                "at": {"type": "object", "description": "Where", "properties": {
                    "x": {"type": "number", "format": "double"}, "y": {"type": "number"}},
                    "required": ["x", "y"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "level": {"type": "integer", "description": "Allowed values: 1, 2, 3."},
                "kind": {"type": "string", "enum": ["fixed"]},
                "when": {"type": "string", "format": "date-time"},
                "either": {"type": "string", "nullable": true},
                "many": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "both": {"type": "object", "properties": {
                    "a": {"type": "string"}, "b": {"type": "boolean"}}, "required": ["a", "b"]},
                "multi": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "free": {},
                "pattern_props": {"type": "object", "properties": {"k": {"type": "string"}}}
            },
            "required": ["at"]
        })
    );
}

#[test]
fn sanitiser_errors_are_typed() {
    assert_eq!(
        sanitize_schema(&json!({"$ref": "https://example.com/s.json"})),
        Err(SchemaError::UnresolvedRef {
            reference: "https://example.com/s.json".into()
        })
    );
    assert_eq!(
        sanitize_schema(&json!({"$ref": "#/$defs/missing"})),
        Err(SchemaError::UnresolvedRef {
            reference: "#/$defs/missing".into()
        })
    );
    assert!(matches!(
        sanitize_schema(
            &json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
            "$ref": "#/$defs/a"})
        ),
        Err(SchemaError::RecursiveRef { .. })
    ));
    let mut deep = json!({"type": "string"});
    for _ in 0..70 {
        deep = json!({"type": "array", "items": deep});
    }
    assert_eq!(sanitize_schema(&deep), Err(SchemaError::TooDeep));
}

#[test]
fn response_formats() {
    let schema = json!({"$schema": "x", "type": "object", "additionalProperties": false,
        "properties": {"n": {"type": "integer"}}});
    let mut request = ProviderRequest::new(vec![Message::user("x")]);
    request.response_format = Some(ResponseFormat::JsonObject);
    assert_eq!(
        body(&request)["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: schema.clone(),
        strict: true,
    });
    assert_eq!(
        body(&request)["generationConfig"],
        json!({"responseMimeType": "application/json", "responseSchema":
            {"type": "object", "properties": {"n": {"type": "integer"}}}})
    );
    let native = build_body(&request, SchemaMode::JsonSchema).unwrap();
    assert_eq!(
        native["generationConfig"]["responseJsonSchema"]["additionalProperties"],
        json!(false)
    );
    request.response_format = Some(ResponseFormat::Text);
    assert!(body(&request).get("generationConfig").is_none());
}

#[test]
fn thinking_config() {
    let mut request = ProviderRequest::new(vec![Message::user("x")]);
    request.reasoning = Some(ReasoningConfig {
        budget_tokens: Some(1024),
        effort: Some(ReasoningEffort::High),
        include_summary: true,
    });
    assert_eq!(
        body(&request)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 1024, "includeThoughts": true})
    );
    request.reasoning = Some(ReasoningConfig {
        effort: Some(ReasoningEffort::Low),
        ..ReasoningConfig::default()
    });
    assert_eq!(
        body(&request)["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "low"})
    );
}

#[test]
fn media_parts_inline_and_by_reference() {
    let message = Message::user("look")
        .with_part(ContentPart::Image(Media::bytes(
            vec![1u8, 2, 3],
            "image/jpeg",
        )))
        .with_part(ContentPart::Image(Media::url(
            "https://example.com/cat.webp?x=1",
        )))
        .with_part(ContentPart::Image(Media::url("data:image/gif;base64,R0lG")))
        .with_part(ContentPart::Audio(Media::url("gs://bucket/clip.mp3")))
        .with_part(ContentPart::Video(
            Media::url("https://generativelanguage.googleapis.com/v1beta/files/abc")
                .with_mime_type("video/mp4"),
        ))
        .with_part(ContentPart::Document(Media::bytes(
            b"%PDF".to_vec(),
            "application/pdf",
        )));
    let body = body(&ProviderRequest::new(vec![message]));
    assert_eq!(
        body["contents"][0]["parts"],
        json!([
            {"text": "look"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "AQID"}},
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}},
            {"inlineData": {"mimeType": "image/gif", "data": "R0lG"}},
            {"fileData": {"mimeType": "audio/mpeg", "fileUri": "gs://bucket/clip.mp3"}},
            {"fileData": {"mimeType": "video/mp4",
                "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERg=="}},
        ])
    );
    let file = Message::user("x").with_part(ContentPart::Image(Media::file("/tmp/a.png")));
    assert!(matches!(
        build_body(&ProviderRequest::new(vec![file]), SchemaMode::Sanitized),
        Err(ProviderError::Unsupported { .. })
    ));
}

fn call(id: &str, name: &str, args: Value, data: ProviderData) -> ToolCall {
    let mut call = ToolCall::new(id, name, args);
    call.provider_data = data;
    call
}

#[test]
fn function_calls_and_responses_pair_by_position_and_keep_signatures() {
    let mut assistant = Message::assistant("Checking both.");
    assistant.content.insert(
        0,
        ContentPart::Reasoning(Reasoning {
            text: Some("need two tools".into()),
            redacted: false,
            provider_data: ProviderData::new().with(SIGNATURE_KEY, "sig-thought"),
        }),
    );
    // A signature Gemini put on the text part arrives as a reasoning part after it.
    assistant.content.push(ContentPart::Reasoning(Reasoning {
        text: None,
        redacted: false,
        provider_data: ProviderData::new().with(SIGNATURE_KEY, "sig-text"),
    }));
    assistant = assistant
        .with_tool_call(call(
            "call_a",
            "get_weather",
            json!({"city": "Paris"}),
            ProviderData::new().with(SIGNATURE_KEY, "sig-call"),
        ))
        .with_tool_call(call(
            "call_b",
            "get_time",
            json!("not an object"),
            ProviderData::new().with(CALL_ID_KEY, "fc-7"),
        ));
    let mut unnamed = ToolResult::text("call_b", "", "12:00");
    unnamed.name = String::new();
    let request = ProviderRequest::new(vec![
        Message::user("weather and time in Paris?"),
        assistant,
        // Results arrive in the other order; one without a name.
        Message::tool(unnamed),
        Message::tool(ToolResult::text("call_a", "get_weather", "{\"temp_c\":21}")),
        Message::user("thanks"),
        Message::tool(ToolResult::error(
            "call_x",
            "other",
            promptkit_core::ToolErrorKind::Execution,
            "boom",
        )),
    ]);
    let body = body(&request);
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "weather and time in Paris?"}]},
            {"role": "model", "parts": [
                {"text": "need two tools", "thought": true, "thoughtSignature": "sig-thought"},
                {"text": "Checking both.", "thoughtSignature": "sig-text"},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                 "thoughtSignature": "sig-call"},
                {"functionCall": {"id": "fc-7", "name": "get_time", "args": {}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
                {"functionResponse": {"id": "fc-7", "name": "get_time",
                    "response": {"output": "12:00"}}},
                {"text": "thanks"},
                {"functionResponse": {"name": "other", "response": {"error": "boom"}}},
            ]},
        ])
    );
}

#[test]
fn a_result_without_any_name_is_a_bad_request() {
    let mut result = ToolResult::text("call_zz", "", "x");
    result.name = String::new();
    let request = ProviderRequest::new(vec![Message::user("x"), Message::tool(result)]);
    assert!(matches!(
        build_body(&request, SchemaMode::Sanitized),
        Err(ProviderError::BadRequest { status: 400, .. })
    ));
}

#[test]
fn extra_fields_pass_through_without_overriding() {
    let mut request = ProviderRequest::new(vec![Message::user("x")]);
    request.extra.insert(
        "safetySettings".into(),
        json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]),
    );
    request.extra.insert("contents".into(), json!([]));
    let body = body(&request);
    assert_eq!(body["safetySettings"][0]["threshold"], "BLOCK_NONE");
    assert_eq!(body["contents"][0]["parts"][0]["text"], "x");
}

fn decode(chunks: &[Value]) -> (Vec<StreamEvent>, Result<(), ProviderError>) {
    let mut decoder = GeminiStreamDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        match decoder.feed(format!("data: {chunk}\r\n\r\n").as_bytes()) {
            Ok(more) => events.extend(more),
            Err(e) => return (events, Err(e)),
        }
    }
    match decoder.finish() {
        Ok(more) => {
            events.extend(more);
            (events, Ok(()))
        }
        Err(e) => (events, Err(e)),
    }
}

fn fold(events: &[StreamEvent]) -> Message {
    let mut acc = StreamAccumulator::new();
    events.iter().for_each(|e| acc.push(e));
    acc.finish()
}

#[test]
fn stream_decoding_thoughts_text_calls_and_usage() {
    let (events, result) = decode(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking…", "thought": true}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": "Let me check."}]}}],
               "usageMetadata": {"promptTokenCount": 10}}),
        json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
             "thoughtSignature": "sig-1"},
            {"functionCall": {"name": "get_time", "args": {}}}]},
            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20,
                "cachedContentTokenCount": 40, "thoughtsTokenCount": 7,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 90},
                                        {"modality": "AUDIO", "tokenCount": 10}]},
            "modelVersion": "gemini-2.5-flash"}),
    ]);
    result.unwrap();
    let message = fold(&events);
    assert_eq!(message.text(), "Let me check.");
    assert_eq!(
        message.reasoning().next().and_then(|r| r.text.as_deref()),
        Some("thinking…")
    );
    assert_eq!(message.tool_calls.len(), 2);
    let (a, b) = (&message.tool_calls[0], &message.tool_calls[1]);
    assert_eq!(a.name, "get_weather");
    assert_eq!(a.arguments, json!({"city": "Paris"}));
    assert_eq!(a.provider_data.get_str(SIGNATURE_KEY), Some("sig-1"));
    assert_eq!(b.arguments, json!({}));
    assert!(a.id.starts_with("call_") && b.id.starts_with("call_"));
    assert_ne!(a.id, b.id);
    assert_eq!(message.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        message.usage,
        Some(Usage {
            input_tokens: Some(100),
            output_tokens: Some(27),
            cached_input_tokens: Some(40),
            reasoning_tokens: Some(7),
            audio_input_tokens: Some(10),
            ..Usage::default()
        })
    );
    // Usage then Finish, last.
    assert!(matches!(
        events[events.len() - 2],
        StreamEvent::Usage { .. }
    ));
    assert!(matches!(
        events[events.len() - 1],
        StreamEvent::Finish { .. }
    ));
    // Ids differ between answers.
    let (again, _) = decode(&[json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "get_weather", "args": {}}}]}, "finishReason": "STOP"}]})]);
    assert_ne!(fold(&again).tool_calls[0].id, a.id);
}

#[test]
fn signature_on_a_text_part_round_trips() {
    let (events, result) = decode(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": "lo"}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": "", "thoughtSignature": "s"}]},
            "finishReason": "STOP"}]}),
    ]);
    result.unwrap();
    let message = fold(&events);
    assert_eq!(message.text(), "Hello");
    let replay = body(&ProviderRequest::new(vec![Message::user("hi"), message]));
    assert_eq!(
        replay["contents"][1],
        json!({"role": "model", "parts": [{"text": "Hello", "thoughtSignature": "s"}]})
    );
}

#[test]
fn blocks_truncation_and_malformed_frames() {
    let (_, result) = decode(&[json!({"promptFeedback": {"blockReason": "SAFETY"}})]);
    assert!(
        matches!(result, Err(ProviderError::ContentFiltered { .. })),
        "{result:?}"
    );

    // Blocked before any output: an error; after some output: a finish reason.
    let (_, result) = decode(&[json!({"candidates": [{"finishReason": "PROHIBITED_CONTENT"}]})]);
    assert!(matches!(result, Err(ProviderError::ContentFiltered { .. })));
    let (events, result) = decode(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Sure, "}]}}]}),
        json!({"candidates": [{"finishReason": "SAFETY"}]}),
    ]);
    result.unwrap();
    assert_eq!(
        fold(&events).finish_reason,
        Some(FinishReason::ContentFilter)
    );

    let (events, result) =
        decode(&[json!({"candidates": [{"content": {"parts": [{"text": "cut"}]}}]})]);
    assert_eq!(fold(&events).text(), "cut");
    assert!(matches!(result, Err(ProviderError::StreamTruncated { .. })));

    let mut decoder = GeminiStreamDecoder::new();
    let mut events = decoder
        .feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\n")
        .unwrap();
    events.extend(decoder.feed(b"data: {not json\n\n: comment\n\n").unwrap());
    events.extend(
        decoder
            .feed(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"MAX_TOKENS\"}]}\n\n")
            .unwrap(),
    );
    events.extend(decoder.finish().unwrap());
    let message = fold(&events);
    assert_eq!(message.text(), "ab");
    assert_eq!(message.finish_reason, Some(FinishReason::MaxTokens));

    // An error object inside the stream.
    let (_, result) = decode(&[json!({"error": {"code": 503, "status": "UNAVAILABLE",
        "message": "overloaded"}})]);
    assert!(matches!(
        result,
        Err(ProviderError::Overloaded { status: 503, .. })
    ));
}

#[test]
fn non_streaming_response_folds_like_a_stream() {
    let response: GenerateResponse = serde_json::from_value(json!({
        "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP",
            "safetyRatings": [], "unknownField": 1}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
        "responseId": "r"}))
    .unwrap();
    let mut decoder = ChunkDecoder::new(tracing::Span::none());
    let mut events = VecDeque::new();
    decoder.apply(response, &mut events).unwrap();
    assert!(decoder.close(&mut events).unwrap());
    let events: Vec<_> = events.into();
    let message = fold(&events);
    assert_eq!(message.text(), "hi");
    assert_eq!(message.usage, Some(Usage::new(3, 1)));
}

#[test]
fn error_bodies_map_to_typed_errors() {
    let body = |code: u16, status: &str, message: &str, details: Value| {
        json!({"error": {"code": code, "status": status, "message": message, "details": details}})
            .to_string()
    };
    let key = body(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]),
    );
    assert!(matches!(
        error_from_body(400, &key, None),
        ProviderError::Auth { .. }
    ));
    let denied = body(403, "PERMISSION_DENIED", "no access", json!([]));
    assert!(matches!(
        error_from_body(403, &denied, None),
        ProviderError::Auth { .. }
    ));

    let limited = body(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded",
        json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]),
    );
    match error_from_body(429, &limited, None) {
        ProviderError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(17)));
        }
        other => panic!("unexpected {other:?}"),
    }
    // The Retry-After header wins over the body.
    assert_eq!(
        error_from_body(429, &limited, Some(Duration::from_secs(2))).retry_after(),
        Some(Duration::from_secs(2))
    );

    let long = body(
        400,
        "INVALID_ARGUMENT",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        json!([]),
    );
    assert!(matches!(
        error_from_body(400, &long, None),
        ProviderError::ContextTooLong { .. }
    ));
    let bad = body(400, "INVALID_ARGUMENT", "Invalid JSON payload", json!([]));
    assert!(matches!(
        error_from_body(400, &bad, None),
        ProviderError::BadRequest { status: 400, .. }
    ));
    let missing = body(404, "NOT_FOUND", "models/x is not found", json!([]));
    assert!(matches!(
        error_from_body(404, &missing, None),
        ProviderError::BadRequest { status: 404, .. }
    ));
    let internal = body(500, "INTERNAL", "oops", json!([]));
    assert!(matches!(
        error_from_body(500, &internal, None),
        ProviderError::Server { status: 500, .. }
    ));
    // The array form of the non-SSE stream, and plain text.
    let array = format!("[{}]", body(503, "UNAVAILABLE", "overloaded", json!([])));
    assert!(matches!(
        error_from_body(503, &array, None),
        ProviderError::Overloaded { status: 503, .. }
    ));
    assert!(matches!(
        error_from_body(502, "<html>bad gateway</html>", None),
        ProviderError::Server { status: 502, .. }
    ));
}

#[test]
fn urls_and_debug_output_hide_the_key() {
    let config = GeminiConfig::new("models/gemini-2.5-pro", "secret-key");
    assert_eq!(
        config.url("models/gemini-2.5-pro", false),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("secret-key"), "{debug}");
    let provider = super::GeminiProvider::new(config).unwrap();
    assert!(!format!("{provider:?}").contains("secret-key"));
}

#[test]
fn built_in_prices() {
    let table = super::gemini_pricing();
    let flash = table
        .get("gemini-2.5-flash-preview-05-20")
        .expect("prefix match");
    assert!((flash.input_per_mtok - 0.30).abs() < 1e-9);
    assert!(table.get("models/gemini-2.5-flash-lite").is_some());
    assert!(table.get("gemini-exp-1206").is_none());
    let cost = flash.cost(&Usage {
        input_tokens: Some(1_000_000),
        cached_input_tokens: Some(400_000),
        output_tokens: Some(1_000_000),
        reasoning_tokens: Some(500_000),
        ..Usage::default()
    });
    // 600k uncached at 0.30, 400k cached at 0.075, 1M output (thoughts included) at 2.50.
    assert!(
        (cost.total_usd - (0.18 + 0.03 + 2.5)).abs() < 1e-9,
        "{cost:?}"
    );
}

/// `retryDelay` values a hostile upstream sends: no panic, clamped, nonsense ignored.
#[test]
fn retry_delays_are_clamped_or_ignored() {
    use super::wire::parse_retry_delay;
    let max = crate::http::RetryPolicy::MAX_RETRY_AFTER;
    assert_eq!(parse_retry_delay("17s"), Some(Duration::from_secs(17)));
    assert_eq!(
        parse_retry_delay(" 0.5s "),
        Some(Duration::from_millis(500))
    );
    for huge in ["1e20s", "1e400s", "infs"] {
        assert_eq!(parse_retry_delay(huge), Some(max), "{huge}");
    }
    for nonsense in ["NaNs", "-1s", "17", "s", "", "1e20"] {
        assert_eq!(parse_retry_delay(nonsense), None, "{nonsense}");
    }
    let error = error_from_body(
        429,
        &json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": "1e20s"}]}})
        .to_string(),
        None,
    );
    assert!(
        matches!(error, ProviderError::RateLimited { retry_after: Some(d), .. } if d == max),
        "{error:?}"
    );
}

proptest::proptest! {
    #[test]
    fn retry_delay_never_panics_and_stays_within_the_clamp(
        value in ".{0,40}|[-+]?([0-9]{0,25}(\\.[0-9]{0,5})?([eE][-+]?[0-9]{1,3})?|inf|nan)"
    ) {
        let max = crate::http::RetryPolicy::MAX_RETRY_AFTER;
        for delay in [value.clone(), format!("{value}s")] {
            if let Some(d) = super::wire::parse_retry_delay(&delay) {
                proptest::prop_assert!(d <= max);
            }
        }
    }
}

/// Gemini's quota answers: a per-day quota or a zero limit is used up, a per-minute one is a
/// rate limit; 503 is overload.
#[test]
fn quota_and_overload_classes() {
    let quota = |id: &str, message: &str| {
        error_from_body(
            429,
            &json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": message,
                "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": id}]}]}})
            .to_string(),
            None,
        )
    };
    assert!(matches!(
        quota(
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "You exceeded your current quota"
        ),
        ProviderError::QuotaExhausted { .. }
    ));
    assert!(matches!(
        quota(
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "You exceeded your current quota"
        ),
        ProviderError::RateLimited { .. }
    ));
    assert!(matches!(
        quota(
            "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            "Quota exceeded for metric: x, limit: 0, model: gemini-2.5-pro"
        ),
        ProviderError::QuotaExhausted { .. }
    ));
}
