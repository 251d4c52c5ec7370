//! Serde round trips and golden forms of every persisted type, finish-reason normalisation,
//! cost calculation and stream accumulation.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::*;

/// Serialises `value`, checks the JSON equals `golden`, deserialises it back and checks the
/// result equals `value`.
pub(crate) fn golden<T>(value: &T, golden: &Value)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_value(value).unwrap();
    assert_eq!(&json, golden, "serialised form changed");
    let back: T = serde_json::from_value(json).unwrap();
    assert_eq!(&back, value, "round trip changed the value");
    // And through text, as stores write it.
    let text = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, value);
}

fn ts(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(millis).unwrap()
}

#[test]
fn roles() {
    for (role, name) in [
        (Role::System, "system"),
        (Role::User, "user"),
        (Role::Assistant, "assistant"),
        (Role::Tool, "tool"),
    ] {
        golden(&role, &json!(name));
        assert_eq!(role.as_str(), name);
    }
}

#[test]
fn text_part() {
    golden(
        &ContentPart::text("hi"),
        &json!({"type": "text", "text": "hi"}),
    );
    let with_data = ContentPart::Text {
        text: "hi".into(),
        provider_data: ProviderData::new().with("gemini.thought_signature", "c2ln"),
    };
    golden(
        &with_data,
        &json!({"type": "text", "text": "hi", "provider_data": {"gemini.thought_signature": "c2ln"}}),
    );
}

#[test]
fn every_media_part_kind_and_source() {
    let sources = [
        (
            Media::url("https://example.com/cat.png").with_detail(ImageDetail::High),
            json!({"source": {"url": "https://example.com/cat.png"}, "detail": "high"}),
        ),
        (
            Media::bytes(vec![0_u8, 1, 2, 255], "image/png"),
            json!({"source": {"data": "AAEC/w=="}, "mime_type": "image/png"}),
        ),
        (
            Media::file("/tmp/report.pdf").with_name("report.pdf"),
            json!({"source": {"file": "/tmp/report.pdf"}, "mime_type": "application/pdf", "name": "report.pdf"}),
        ),
        (
            Media::storage("media/abc123", "audio/wav"),
            json!({"source": {"storage": "media/abc123"}, "mime_type": "audio/wav"}),
        ),
    ];
    type Ctor = fn(Media) -> ContentPart;
    let kinds: [(Ctor, &str, ContentKind); 4] = [
        (ContentPart::Image, "image", ContentKind::Image),
        (ContentPart::Audio, "audio", ContentKind::Audio),
        (ContentPart::Video, "video", ContentKind::Video),
        (ContentPart::Document, "document", ContentKind::Document),
    ];
    for (ctor, tag, kind) in kinds {
        for (media, media_json) in &sources {
            let part = ctor(media.clone());
            let mut expected = media_json.clone();
            expected["type"] = json!(tag);
            golden(&part, &expected);
            assert_eq!(part.kind(), kind);
            assert_eq!(part.kind().as_str(), tag);
            assert_eq!(part.media(), Some(media));
        }
    }
}

#[test]
fn media_provider_data_round_trips() {
    let mut media = Media::url("https://x/y.mp4").with_mime_type("video/mp4");
    media.provider_data.insert("gemini.file_uri", "files/abc");
    golden(
        &ContentPart::Video(media),
        &json!({"type": "video", "source": {"url": "https://x/y.mp4"}, "mime_type": "video/mp4",
                "provider_data": {"gemini.file_uri": "files/abc"}}),
    );
}

#[test]
fn invalid_base64_is_a_clear_error() {
    let err = serde_json::from_value::<ContentPart>(
        json!({"type": "image", "source": {"data": "not base64!"}, "mime_type": "image/png"}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not valid base64"), "{err}");
}

#[test]
fn reasoning_part_with_signature_round_trips() {
    let part = ContentPart::Reasoning(Reasoning {
        text: Some("Let me think.".into()),
        redacted: false,
        provider_data: ProviderData::new().with("anthropic.signature", "EqQBCkYI"),
    });
    golden(
        &part,
        &json!({"type": "reasoning", "text": "Let me think.",
                "provider_data": {"anthropic.signature": "EqQBCkYI"}}),
    );
    let redacted = ContentPart::Reasoning(Reasoning {
        text: None,
        redacted: true,
        provider_data: ProviderData::new().with("anthropic.redacted_data", "opaque"),
    });
    golden(
        &redacted,
        &json!({"type": "reasoning", "redacted": true,
                "provider_data": {"anthropic.redacted_data": "opaque"}}),
    );
}

#[test]
fn opaque_provider_data_keeps_arbitrary_json() {
    let data = ProviderData::new().with("openai.item_id", "rs_123").with(
        "openai.encrypted_content",
        json!({"blob": "xyz", "n": [1, 2]}),
    );
    golden(
        &data,
        &json!({"openai.item_id": "rs_123", "openai.encrypted_content": {"blob": "xyz", "n": [1, 2]}}),
    );
    assert_eq!(data.get_str("openai.item_id"), Some("rs_123"));
}

#[test]
fn tool_call_and_result() {
    let mut call = ToolCall::new("call_1", "get_weather", json!({"city": "Paris"}));
    call.provider_data
        .insert("gemini.thought_signature", "sig==");
    golden(
        &call,
        &json!({"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"},
                "provider_data": {"gemini.thought_signature": "sig=="}}),
    );

    let ok = ToolResult::text("call_1", "get_weather", "18C");
    golden(
        &ok,
        &json!({"call_id": "call_1", "name": "get_weather", "content": [{"type": "text", "text": "18C"}]}),
    );
    let mut structured = ok.clone();
    structured.content.clear();
    structured.structured = Some(json!({"celsius": 18}));
    assert_eq!(structured.text_content(), r#"{"celsius":18}"#);
    golden(
        &structured,
        &json!({"call_id": "call_1", "name": "get_weather", "structured": {"celsius": 18}}),
    );

    let err = ToolResult::error("call_2", "x", ToolErrorKind::InvalidArguments, "bad city");
    golden(
        &err,
        &json!({"call_id": "call_2", "name": "x", "content": [{"type": "text", "text": "bad city"}],
                "is_error": true, "error_kind": "invalid_arguments"}),
    );
}

#[test]
fn borrowed_texts_match_the_owned_ones_and_borrow_a_single_part() {
    use std::borrow::Cow;

    let one = Message::user("hello");
    assert!(matches!(one.text_borrowed(), Cow::Borrowed("hello")));
    let mut two = Message::user("a");
    two.content.push(ContentPart::text(""));
    two.content.push(ContentPart::text("b"));
    assert_eq!(two.text_borrowed(), "ab");
    assert_eq!(two.text(), "ab");
    assert!(matches!(
        Message::user("").text_borrowed(),
        Cow::Borrowed("")
    ));

    let mut result = ToolResult::text("1", "f", "line one");
    result.content.push(ContentPart::text("line two"));
    assert_eq!(result.text_content_borrowed(), "line one\nline two");
    assert_eq!(result.text_content(), "line one\nline two");
    let tool = Message::tool(ToolResult::text("1", "f", "18C"));
    assert!(matches!(tool.text_borrowed(), Cow::Borrowed("18C")));
    let mut structured = ToolResult::text("1", "f", "");
    structured.content.clear();
    structured.structured = Some(json!({"celsius": 18}));
    assert_eq!(structured.text_content_borrowed(), r#"{"celsius":18}"#);

    let raw = ToolCall::from_raw_arguments("1", "f", r#"{"a":"#);
    assert!(matches!(
        raw.arguments_json_borrowed(),
        Cow::Borrowed(r#"{"a":"#)
    ));
    let parsed = ToolCall::from_raw_arguments("1", "f", r#"{"a":1}"#);
    assert_eq!(parsed.arguments_json_borrowed(), parsed.arguments_json());
}

#[test]
fn raw_tool_arguments_are_parsed_or_kept() {
    let ok = ToolCall::from_raw_arguments("1", "f", r#"{"a":1}"#);
    assert_eq!(ok.arguments, json!({"a": 1}));
    assert_eq!(ok.arguments_json(), r#"{"a":1}"#);
    let empty = ToolCall::from_raw_arguments("1", "f", "  ");
    assert_eq!(empty.arguments, json!({}));
    // Truncated output is kept verbatim, not replaced by `{}`.
    let cut = ToolCall::from_raw_arguments("1", "f", r#"{"a":"#);
    assert_eq!(cut.arguments, json!(r#"{"a":"#));
    assert!(!cut.has_object_arguments());
    assert_eq!(cut.arguments_json(), r#"{"a":"#);
    // A persisted call without arguments reads as `{}`.
    let call: ToolCall = serde_json::from_value(json!({"id": "1", "name": "f"})).unwrap();
    assert_eq!(call.arguments, json!({}));
}

#[test]
fn full_assistant_message_golden() {
    let mut message = Message::new(Role::Assistant)
        .with_id("msg-1")
        .with_created_at(ts(1_764_001_088_000))
        .with_part(ContentPart::Reasoning(Reasoning {
            text: Some("thinking".into()),
            ..Reasoning::default()
        }))
        .with_part("Checking.")
        .with_tool_call(ToolCall::new("c1", "lookup", json!({"q": "x"})));
    message.usage = Some(Usage {
        input_tokens: Some(100),
        output_tokens: Some(20),
        cached_input_tokens: Some(40),
        ..Usage::default()
    });
    message.cost = Some(Cost {
        input_usd: 0.1,
        cached_input_usd: 0.01,
        cache_write_usd: 0.0,
        output_usd: 0.2,
        total_usd: 0.31,
    });
    message.finish_reason = Some(FinishReason::ToolCalls);
    message.latency_ms = Some(850);
    message.metadata.insert("source".into(), json!("pipeline"));
    golden(
        &message,
        &json!({
            "id": "msg-1",
            "role": "assistant",
            "content": [
                {"type": "reasoning", "text": "thinking"},
                {"type": "text", "text": "Checking."}
            ],
            "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"q": "x"}}],
            "usage": {"input_tokens": 100, "output_tokens": 20, "cached_input_tokens": 40},
            "cost": {"input_usd": 0.1, "cached_input_usd": 0.01, "cache_write_usd": 0.0,
                     "output_usd": 0.2, "total_usd": 0.31},
            "finish_reason": "tool_calls",
            "created_at": "2025-11-24T16:18:08Z",
            "latency_ms": 850,
            "metadata": {"source": "pipeline"}
        }),
    );
    assert_eq!(message.text(), "Checking.");
    assert_eq!(message.reasoning().count(), 1);
    assert_eq!(message.without_reasoning().content.len(), 1);
}

#[test]
fn minimal_messages_golden() {
    golden(
        &Message::user("hello"),
        &json!({"role": "user", "content": [{"type": "text", "text": "hello"}]}),
    );
    golden(
        &Message::system("be brief"),
        &json!({"role": "system", "content": [{"type": "text", "text": "be brief"}]}),
    );
    let tool = Message::tool(ToolResult::text("c1", "lookup", "found"));
    golden(
        &tool,
        &json!({"role": "tool", "tool_result": {"call_id": "c1", "name": "lookup",
                "content": [{"type": "text", "text": "found"}]}}),
    );
    assert_eq!(tool.text(), "found");
}

#[test]
fn multimodal_user_message_round_trips() {
    let message = Message::user("What is in these?")
        .with_part(ContentPart::Image(Media::bytes(
            vec![1, 2, 3],
            "image/jpeg",
        )))
        .with_part(ContentPart::Audio(Media::url("https://x/a.wav")))
        .with_part(ContentPart::Document(Media::file("a.pdf")));
    let back: Message = serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap();
    assert_eq!(back, message);
    assert!(message.has_media());
    assert_eq!(message.text(), "What is in these?");
}

#[test]
fn unknown_fields_are_ignored_on_read() {
    let message: Message = serde_json::from_value(json!({
        "role": "user",
        "content": [{"type": "text", "text": "hi"}],
        "written_by_a_newer_version": true
    }))
    .unwrap();
    assert_eq!(message.text(), "hi");
}

#[test]
fn unknown_part_type_is_a_clear_error() {
    let err = serde_json::from_value::<ContentPart>(json!({"type": "hologram"})).unwrap_err();
    assert!(err.to_string().contains("hologram"), "{err}");
}

#[test]
fn usage_optional_fields_and_sum() {
    golden(&Usage::default(), &json!({}));
    golden(
        &Usage::new(10, 5),
        &json!({"input_tokens": 10, "output_tokens": 5}),
    );
    let all = Usage {
        input_tokens: Some(1),
        output_tokens: Some(2),
        cached_input_tokens: Some(3),
        cache_write_input_tokens: Some(4),
        reasoning_tokens: Some(5),
        audio_input_tokens: Some(6),
        audio_output_tokens: Some(7),
    };
    golden(
        &all,
        &json!({"input_tokens": 1, "output_tokens": 2, "cached_input_tokens": 3,
                "cache_write_input_tokens": 4, "reasoning_tokens": 5,
                "audio_input_tokens": 6, "audio_output_tokens": 7}),
    );
    // Not reported stays not reported; reported adds up.
    let sum = Usage::new(10, 5)
        + Usage {
            reasoning_tokens: Some(2),
            ..Usage::default()
        };
    assert_eq!(sum.input_tokens, Some(10));
    assert_eq!(sum.reasoning_tokens, Some(2));
    assert_eq!(sum.cached_input_tokens, None);
    assert_eq!(Usage::default().total_tokens(), None);
    assert_eq!(sum.total_tokens(), Some(15));
    assert!(Usage::default().is_empty());
}

#[test]
fn cost_of_plain_usage() {
    let pricing = ModelPricing::new(2.5, 10.0);
    let cost = pricing.cost(&Usage::new(1_000_000, 100_000));
    assert!((cost.input_usd - 2.5).abs() < 1e-12);
    assert!((cost.output_usd - 1.0).abs() < 1e-12);
    assert!((cost.total_usd - 3.5).abs() < 1e-12);
}

#[test]
fn cost_prices_subsets_once_at_their_own_rate() {
    let pricing = ModelPricing::new(3.0, 15.0)
        .with_cached_input(0.3)
        .with_cache_write(3.75)
        .with_reasoning(20.0);
    let usage = Usage {
        input_tokens: Some(1_000_000),
        cached_input_tokens: Some(600_000),
        cache_write_input_tokens: Some(100_000),
        output_tokens: Some(200_000),
        reasoning_tokens: Some(50_000),
        ..Usage::default()
    };
    let cost = pricing.cost(&usage);
    // 300k plain input at $3, 600k cached at $0.30, 100k written at $3.75.
    assert!((cost.input_usd - 0.9).abs() < 1e-9, "{cost:?}");
    assert!((cost.cached_input_usd - 0.18).abs() < 1e-9, "{cost:?}");
    assert!((cost.cache_write_usd - 0.375).abs() < 1e-9, "{cost:?}");
    // 150k visible output at $15, 50k reasoning at $20.
    assert!((cost.output_usd - (2.25 + 1.0)).abs() < 1e-9, "{cost:?}");
    let sum = cost.input_usd + cost.cached_input_usd + cost.cache_write_usd + cost.output_usd;
    assert!((cost.total_usd - sum).abs() < 1e-12);
}

#[test]
fn cost_rates_fall_back_and_inconsistent_counts_are_clamped() {
    let pricing = ModelPricing::new(1.0, 2.0).with_audio(10.0, 20.0);
    // Cached count larger than the input: clamped, never negative.
    let usage = Usage {
        input_tokens: Some(100),
        cached_input_tokens: Some(500),
        output_tokens: Some(10),
        audio_output_tokens: Some(10),
        ..Usage::default()
    };
    let cost = pricing.cost(&usage);
    assert!(cost.input_usd.abs() < 1e-15);
    // Cached rate falls back to the input rate.
    assert!((cost.cached_input_usd - 100.0 / 1e6).abs() < 1e-12);
    // All 10 output tokens are audio, at the audio rate.
    assert!((cost.output_usd - 200.0 / 1e6).abs() < 1e-12);
    // Nothing reported costs nothing.
    assert_eq!(pricing.cost(&Usage::default()).total_usd, 0.0);
}

#[test]
fn pricing_table_lookup_and_unknown_models() {
    let table = PricingTable::new()
        .with("gpt-4o", ModelPricing::new(2.5, 10.0))
        .with("gpt-4o-mini", ModelPricing::new(0.15, 0.6));
    assert_eq!(table.get("gpt-4o").unwrap().input_per_mtok, 2.5);
    // Longest prefix wins for dated snapshots.
    assert_eq!(
        table.get("gpt-4o-mini-2024-07-18").unwrap().input_per_mtok,
        0.15
    );
    assert_eq!(table.get("gpt-4o-2024-08-06").unwrap().input_per_mtok, 2.5);
    // Vendor prefixes are stripped.
    assert_eq!(table.get("openai/gpt-4o").unwrap().input_per_mtok, 2.5);
    // Unknown models have no price: cost is unknown, not zero.
    assert!(table.cost("llama3", &Usage::new(10, 10)).is_none());
    let overridden = table
        .clone()
        .merged(&PricingTable::new().with("gpt-4o", ModelPricing::new(1.0, 1.0)));
    assert_eq!(overridden.get("gpt-4o").unwrap().input_per_mtok, 1.0);
    assert_eq!(overridden.len(), 2);
    golden(
        &PricingTable::new().with("m", ModelPricing::new(1.0, 2.0).with_cached_input(0.5)),
        &json!({"m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cached_input_per_mtok": 0.5}}),
    );
}

#[test]
fn cost_adds_up() {
    let a = ModelPricing::new(1.0, 1.0).cost(&Usage::new(1_000_000, 0));
    let b = ModelPricing::new(1.0, 1.0).cost(&Usage::new(0, 1_000_000));
    let mut sum = a;
    sum += b;
    assert!((sum.total_usd - 2.0).abs() < 1e-12);
}

#[test]
fn finish_reason_openai() {
    use FinishReason as F;
    for (raw, want) in [
        ("stop", F::Stop),
        ("eos_token", F::Stop),
        ("length", F::MaxTokens),
        ("tool_calls", F::ToolCalls),
        ("function_call", F::ToolCalls),
        ("content_filter", F::ContentFilter),
        ("cancelled", F::Cancelled),
        ("canceled", F::Cancelled),
        ("incomplete", F::MaxTokens),
        ("completed", F::Stop),
        ("failed", F::Error),
        ("something_new", F::Other("something_new".into())),
    ] {
        assert_eq!(F::from_openai(raw), want, "openai {raw}");
    }
}

#[test]
fn finish_reason_anthropic() {
    use FinishReason as F;
    for (raw, want) in [
        ("end_turn", F::Stop),
        ("stop_sequence", F::Stop),
        ("pause_turn", F::Stop),
        ("max_tokens", F::MaxTokens),
        ("model_context_window_exceeded", F::MaxTokens),
        ("tool_use", F::ToolCalls),
        ("refusal", F::Refusal),
        ("new_reason", F::Other("new_reason".into())),
    ] {
        assert_eq!(F::from_anthropic(raw), want, "anthropic {raw}");
    }
}

#[test]
fn finish_reason_gemini() {
    use FinishReason as F;
    for (raw, want) in [
        ("STOP", F::Stop),
        ("MAX_TOKENS", F::MaxTokens),
        ("SAFETY", F::ContentFilter),
        ("RECITATION", F::ContentFilter),
        ("PROHIBITED_CONTENT", F::ContentFilter),
        ("SPII", F::ContentFilter),
        ("BLOCKLIST", F::ContentFilter),
        ("MALFORMED_FUNCTION_CALL", F::Refusal),
        (
            "FINISH_REASON_UNSPECIFIED",
            F::Other("FINISH_REASON_UNSPECIFIED".into()),
        ),
    ] {
        assert_eq!(F::from_gemini(raw), want, "gemini {raw}");
    }
}

#[test]
fn finish_reason_serde_is_the_canonical_string() {
    use FinishReason as F;
    for (reason, text) in [
        (F::Stop, "stop"),
        (F::MaxTokens, "max_tokens"),
        (F::ToolCalls, "tool_calls"),
        (F::ContentFilter, "content_filter"),
        (F::Refusal, "refusal"),
        (F::Cancelled, "cancelled"),
        (F::Error, "error"),
        (F::Other("vendor_thing".into()), "vendor_thing"),
    ] {
        golden(&reason, &json!(text));
        assert_eq!(reason.to_string(), text);
    }
}

#[test]
fn tool_def_and_choice() {
    let def = ToolDef::new(
        "lookup_order",
        "Look up an order",
        json!({"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}),
    );
    golden(
        &def,
        &json!({"name": "lookup_order", "description": "Look up an order",
                "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                 "required": ["order_id"]}}),
    );
    let bare: ToolDef = serde_json::from_value(json!({"name": "ping"})).unwrap();
    assert_eq!(bare.input_schema, empty_object_schema());
    golden(&ToolChoice::Auto, &json!("auto"));
    golden(&ToolChoice::None, &json!("none"));
    golden(&ToolChoice::Required, &json!("required"));
    golden(
        &ToolChoice::Tool("lookup_order".into()),
        &json!({"tool": "lookup_order"}),
    );
}

#[test]
fn tool_errors_become_results_for_the_model() {
    let call = ToolCall::new("c9", "search", json!({}));
    let err = ToolError::InvalidArguments {
        name: "search".into(),
        message: "missing field `q`".into(),
    };
    let result = err.to_result(&call);
    assert!(result.is_error);
    assert_eq!(result.call_id, "c9");
    assert_eq!(result.error_kind, Some(ToolErrorKind::InvalidArguments));
    assert_eq!(
        result.text_content(),
        "invalid arguments for tool `search`: missing field `q`"
    );
    let timeout = ToolError::Timeout {
        name: "search".into(),
        elapsed: Duration::from_secs(3),
    };
    assert_eq!(timeout.kind(), ToolErrorKind::Timeout);
}

#[test]
fn provider_request_round_trips_and_lifts_system_messages() {
    let mut request = ProviderRequest::new(vec![
        Message::system("rule one"),
        Message::user("hi"),
        Message::system("rule two"),
    ])
    .with_system("base")
    .with_tools(vec![ToolDef::new("t", "", empty_object_schema())]);
    request.temperature = Some(0.0);
    request.max_tokens = Some(256);
    request.tool_choice = ToolChoice::Required;
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "answer".into(),
        schema: json!({"type": "object"}),
        strict: true,
    });
    request.reasoning = Some(ReasoningConfig {
        effort: Some(ReasoningEffort::High),
        budget_tokens: Some(2048),
        include_summary: true,
    });
    let back: ProviderRequest =
        serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
    assert_eq!(back, request);
    // Temperature zero is kept, not treated as "default".
    assert_eq!(
        serde_json::to_value(&request).unwrap()["temperature"],
        json!(0.0)
    );

    request.lift_system_messages();
    assert_eq!(
        request.system.as_deref(),
        Some("base\n\nrule one\n\nrule two")
    );
    assert_eq!(request.messages.len(), 1);
    let once = request.clone();
    request.lift_system_messages();
    assert_eq!(request, once, "lifting is idempotent");
}

#[test]
fn response_format_forms() {
    golden(&ResponseFormat::Text, &json!({"type": "text"}));
    golden(&ResponseFormat::JsonObject, &json!({"type": "json_object"}));
    golden(
        &ResponseFormat::JsonSchema {
            name: "n".into(),
            schema: json!({"type": "object"}),
            strict: false,
        },
        &json!({"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": false}),
    );
}

#[test]
fn provider_response_round_trips() {
    let response = ProviderResponse {
        message: Message::assistant("done"),
        model: Some("gpt-4o-2024-08-06".into()),
        served_by: Some("primary".into()),
        latency: Duration::from_millis(1234),
    };
    golden(
        &response,
        &json!({"message": {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
                "model": "gpt-4o-2024-08-06", "served_by": "primary", "latency": 1234}),
    );
}

#[test]
fn stream_events_round_trip() {
    let events = vec![
        StreamEvent::ReasoningDelta { text: "hmm".into() },
        StreamEvent::ReasoningData {
            provider_data: ProviderData::new().with("anthropic.signature", "s"),
            redacted: false,
        },
        StreamEvent::TextDelta { text: "Hi".into() },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "c".into(),
            name: "f".into(),
            provider_data: ProviderData::new(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            arguments: "{}".into(),
        },
        StreamEvent::Usage {
            usage: Usage::new(1, 2),
        },
        StreamEvent::Reset,
        StreamEvent::Finish {
            reason: FinishReason::Stop,
        },
    ];
    let back: Vec<StreamEvent> =
        serde_json::from_str(&serde_json::to_string(&events).unwrap()).unwrap();
    assert_eq!(back, events);
    assert_eq!(
        serde_json::to_value(&events[2]).unwrap(),
        json!({"type": "text_delta", "text": "Hi"})
    );
}

#[test]
fn accumulator_assembles_interleaved_parallel_tool_calls() {
    let mut acc = StreamAccumulator::new();
    let start = |index, id: &str, name: &str| StreamEvent::ToolCallStart {
        index,
        id: id.into(),
        name: name.into(),
        provider_data: ProviderData::new(),
    };
    let delta = |index, s: &str| StreamEvent::ToolCallDelta {
        index,
        arguments: s.into(),
    };
    for event in [
        StreamEvent::TextDelta {
            text: "Let me ".into(),
        },
        StreamEvent::TextDelta {
            text: "check.".into(),
        },
        start(1, "b", "weather"),
        start(0, "a", "time"),
        delta(1, r#"{"city":"#),
        delta(0, r#"{"tz":"UTC"}"#),
        delta(1, r#""Oslo"}"#),
        StreamEvent::Usage {
            usage: Usage {
                input_tokens: Some(50),
                ..Usage::default()
            },
        },
        StreamEvent::Usage {
            usage: Usage {
                output_tokens: Some(9),
                ..Usage::default()
            },
        },
        StreamEvent::Finish {
            reason: FinishReason::ToolCalls,
        },
    ] {
        acc.push(&event);
    }
    assert!(acc.is_finished());
    assert_eq!(acc.text(), "Let me check.");
    let message = acc.finish();
    assert_eq!(message.role, Role::Assistant);
    assert_eq!(message.text(), "Let me check.");
    assert_eq!(message.tool_calls.len(), 2);
    assert_eq!(message.tool_calls[0].name, "time");
    assert_eq!(message.tool_calls[0].arguments, json!({"tz": "UTC"}));
    assert_eq!(message.tool_calls[1].id, "b");
    assert_eq!(message.tool_calls[1].arguments, json!({"city": "Oslo"}));
    assert_eq!(message.usage, Some(Usage::new(50, 9)));
    assert_eq!(message.finish_reason, Some(FinishReason::ToolCalls));
}

#[test]
fn accumulator_keeps_reasoning_blocks_in_order_with_signatures() {
    let mut acc = StreamAccumulator::new();
    for event in [
        StreamEvent::ReasoningDelta {
            text: "step 1".into(),
        },
        StreamEvent::ReasoningDelta {
            text: ", step 2".into(),
        },
        StreamEvent::ReasoningData {
            provider_data: ProviderData::new().with("anthropic.signature", "sig1"),
            redacted: false,
        },
        StreamEvent::ReasoningData {
            provider_data: ProviderData::new().with("anthropic.redacted_data", "zzz"),
            redacted: true,
        },
        StreamEvent::TextDelta {
            text: "Answer".into(),
        },
        StreamEvent::Finish {
            reason: FinishReason::Stop,
        },
    ] {
        acc.push(&event);
    }
    let message = acc.finish();
    let reasoning: Vec<_> = message.reasoning().collect();
    assert_eq!(reasoning.len(), 2);
    assert_eq!(reasoning[0].text.as_deref(), Some("step 1, step 2"));
    assert_eq!(
        reasoning[0].provider_data.get_str("anthropic.signature"),
        Some("sig1")
    );
    assert!(reasoning[1].redacted);
    assert_eq!(message.text(), "Answer");
    assert!(matches!(
        message.content.last(),
        Some(ContentPart::Text { .. })
    ));
}

#[test]
fn accumulator_reset_discards_everything() {
    let mut acc = StreamAccumulator::new();
    acc.push(&StreamEvent::TextDelta {
        text: "partial".into(),
    });
    acc.push(&StreamEvent::Reset);
    acc.push(&StreamEvent::TextDelta {
        text: "fresh".into(),
    });
    assert!(!acc.is_finished());
    let message = acc.finish();
    assert_eq!(message.text(), "fresh");
    assert_eq!(
        message.finish_reason, None,
        "a stream without Finish has no finish reason"
    );
}

#[test]
fn accumulator_keeps_unparseable_arguments_verbatim() {
    let mut acc = StreamAccumulator::new();
    acc.push(&StreamEvent::ToolCallStart {
        index: 0,
        id: "c".into(),
        name: "f".into(),
        provider_data: ProviderData::new(),
    });
    acc.push(&StreamEvent::ToolCallDelta {
        index: 0,
        arguments: r#"{"a": tru"#.into(),
    });
    let message = acc.finish();
    assert_eq!(message.tool_calls[0].arguments, json!(r#"{"a": tru"#));
}

#[test]
fn provider_errors_classify_retries() {
    let rate = ProviderError::from_status(429, "slow down", Some(Duration::from_secs(2)));
    assert!(rate.is_retryable());
    assert_eq!(rate.retry_after(), Some(Duration::from_secs(2)));
    assert!(matches!(
        ProviderError::from_status(401, "no", None),
        ProviderError::Auth { .. }
    ));
    assert!(!ProviderError::from_status(401, "no", None).is_retryable());
    assert!(matches!(
        ProviderError::from_status(404, "no model", None),
        ProviderError::BadRequest { status: 404, .. }
    ));
    assert!(ProviderError::from_status(500, "boom", None).is_retryable());
    for status in [503, 529] {
        let overloaded = ProviderError::from_status(status, "busy", Some(Duration::from_secs(3)));
        assert!(
            matches!(overloaded, ProviderError::Overloaded { status: s, .. } if s == status),
            "{overloaded:?}"
        );
        assert!(overloaded.is_retryable());
        assert_eq!(overloaded.retry_after(), Some(Duration::from_secs(3)));
    }
    let quota = ProviderError::QuotaExhausted {
        message: "out of credit".into(),
    };
    assert!(!quota.is_retryable());
    assert_eq!(quota.to_string(), "quota exhausted: out of credit");
    let large = ProviderError::ResponseTooLarge {
        part: ResponsePart::StreamEvent,
        limit: 1024,
    };
    assert!(!large.is_retryable());
    assert_eq!(
        large.to_string(),
        "response too large: a stream event exceeds 1024 bytes"
    );
    assert!(!ProviderError::Cancelled.is_retryable());
    let all = ProviderError::AllFailed {
        attempts: vec![
            ("a".into(), ProviderError::from_status(500, "boom", None)),
            (
                "b".into(),
                ProviderError::Timeout {
                    phase: TimeoutPhase::Idle,
                    after: Duration::from_secs(30),
                },
            ),
        ],
    };
    assert_eq!(
        all.to_string(),
        "all 2 providers failed; last: b: timed out (idle between chunks) after 30s"
    );
}

#[test]
fn conversation_golden_and_defaults() {
    let mut conversation = Conversation::new("s-1").with_user("u-1");
    conversation
        .messages
        .push(Message::user("hi").with_id("m1"));
    conversation.summaries.push(Summary {
        start_index: 0,
        end_index: 10,
        content: "they said hello".into(),
        token_count: Some(4),
        created_at: ts(0),
    });
    conversation
        .metadata
        .insert("topic".into(), json!("greetings"));
    conversation.version = 3;
    conversation.created_at = Some(ts(1000));
    conversation.updated_at = Some(ts(2000));
    golden(
        &conversation,
        &json!({
            "id": "s-1",
            "user_id": "u-1",
            "messages": [{"id": "m1", "role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "summaries": [{"start_index": 0, "end_index": 10, "content": "they said hello",
                           "token_count": 4, "created_at": "1970-01-01T00:00:00Z"}],
            "metadata": {"topic": "greetings"},
            "version": 3,
            "created_at": "1970-01-01T00:00:01Z",
            "updated_at": "1970-01-01T00:00:02Z"
        }),
    );
    let bare: Conversation = serde_json::from_value(json!({"id": "x"})).unwrap();
    assert_eq!(bare, Conversation::new("x"));
}

#[test]
fn conversation_info_page_and_expected_version() {
    let page = Page {
        items: vec![ConversationInfo {
            id: "a".into(),
            user_id: None,
            message_count: 2,
            version: 1,
            created_at: None,
            updated_at: None,
        }],
        total: 1,
    };
    golden(
        &page,
        &json!({"items": [{"id": "a", "message_count": 2, "version": 1}], "total": 1}),
    );
    golden(&ExpectedVersion::Any, &json!("any"));
    golden(&ExpectedVersion::New, &json!("new"));
    golden(&ExpectedVersion::Exact(7), &json!({"exact": 7}));
    golden(&SortOrder::UpdatedDesc, &json!("updated_desc"));
    assert_eq!(ListOptions::for_user("u").limit, 100);
}

#[test]
fn conversation_ids_are_validated() {
    assert!(StateError::validate_id("session-42").is_ok());
    for bad in ["", "a\nb", &"x".repeat(300)] {
        let err = StateError::validate_id(bad).unwrap_err();
        assert!(matches!(err, StateError::InvalidId { .. }), "{err}");
    }
    let conflict = StateError::Conflict {
        id: "s".into(),
        expected: ExpectedVersion::Exact(2),
        actual: 3,
    };
    assert_eq!(
        conflict.to_string(),
        "version conflict on conversation `s`: expected Exact(2), found 3"
    );
}

#[test]
fn mime_guessing() {
    assert_eq!(mime_from_extension("PNG"), Some("image/png"));
    assert_eq!(mime_from_extension("wav"), Some("audio/wav"));
    assert_eq!(mime_from_extension("pdf"), Some("application/pdf"));
    assert_eq!(mime_from_extension("xyz"), None);
    assert_eq!(
        Media::file("clip.MP4").mime_type.as_deref(),
        Some("video/mp4")
    );
    assert_eq!(Media::file("noext").mime_type, None);
}

#[test]
fn capabilities_gate_content_kinds() {
    let text = Capabilities::text();
    assert!(text.accepts(ContentKind::Text));
    assert!(!text.accepts(ContentKind::Image));
    assert!(Capabilities::all().accepts(ContentKind::Video));
    let vision = Capabilities {
        images: true,
        ..Capabilities::default()
    };
    assert!(vision.accepts(ContentKind::Image));
}

/// The seams are object-safe and their trait objects are `Send + Sync` (`Send` for the
/// per-stream detectors, which one task owns).
#[test]
fn seams_are_object_safe() {
    fn assert_send_sync<T: ?Sized + Send + Sync>() {}
    assert_send_sync::<dyn Provider>();
    assert_send_sync::<dyn RealtimeProvider>();
    assert_send_sync::<dyn RealtimeSender>();
    assert_send_sync::<dyn ToolSet>();
    assert_send_sync::<dyn ToolExecutor>();
    assert_send_sync::<dyn StateStore>();
    assert_send_sync::<dyn SpeechToText>();
    assert_send_sync::<dyn TextToSpeech>();
    assert_send_sync::<dyn AudioSender>();
    assert_send_sync::<dyn TextSender>();
    assert_send_sync::<dyn VadFactory>();
    assert_send_sync::<dyn TurnDetectorFactory>();
    fn assert_send<T: ?Sized + Send>() {}
    assert_send::<dyn VoiceActivityDetector>();
    assert_send::<dyn TurnDetector>();
    assert_send::<RealtimeSession>();
    assert_send::<SttSession>();
    assert_send::<TtsSession>();
}

/// A store written before leases and `append_if` existed: only the required methods.
#[derive(Debug)]
struct OldStore;

impl StateStore for OldStore {
    fn load<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Conversation>, StateError>> {
        Box::pin(async { Ok(None) })
    }
    fn save<'a>(
        &'a self,
        _: &'a Conversation,
        _: ExpectedVersion,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async { Ok(1) })
    }
    fn append<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<AppendOutcome, StateError>> {
        Box::pin(async move {
            Ok(AppendOutcome {
                appended: messages.len(),
                total: messages.len(),
                version: 1,
            })
        })
    }
    fn fork<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StateError>> {
        Box::pin(async { Err(StateError::Closed) })
    }
    fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async { Ok(false) })
    }
    fn list<'a>(
        &'a self,
        _: &'a ListOptions,
    ) -> BoxFuture<'a, Result<Page<ConversationInfo>, StateError>> {
        Box::pin(async {
            Ok(Page {
                items: Vec::new(),
                total: 0,
            })
        })
    }
    fn merge_metadata<'a>(
        &'a self,
        _: &'a str,
        _: &'a serde_json::Map<String, Value>,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async { Ok(1) })
    }
    fn add_summary<'a>(
        &'a self,
        _: &'a str,
        _: &'a Summary,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async { Ok(1) })
    }
}

#[tokio::test]
async fn stores_without_leases_say_so_with_a_typed_error() {
    let store: &dyn StateStore = &OldStore;
    let batch = [Message::user("hi")];
    let any = store
        .append_if("s", None, &batch, ExpectedVersion::Any)
        .await;
    assert_eq!(any.expect("`Any` is a plain append").appended, 1);
    for result in [
        store
            .append_if("s", None, &batch, ExpectedVersion::New)
            .await
            .map(|_| ()),
        store
            .try_lease("s", "t", Duration::from_secs(1))
            .await
            .map(|_| ()),
        store.release_lease("s", "t").await,
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, StateError::Unsupported { .. }), "{err}");
    }
    let err = store.release_lease("s", "t").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "state store does not support `release_lease`"
    );
}

#[test]
fn lease_arguments_are_validated() {
    assert!(StateError::validate_lease("s", "token").is_ok());
    for (id, token) in [("", "t"), ("s", ""), ("s", &*"t".repeat(300))] {
        let err = StateError::validate_lease(id, token).unwrap_err();
        assert!(matches!(err, StateError::InvalidId { .. }), "{err}");
    }
}

#[test]
fn user_and_message_ids_are_validated_without_echoing_them() {
    assert!(StateError::validate_user_id("s", "user-7").is_ok());
    assert!(StateError::validate_user_id("s", "").is_ok());
    let long = "u".repeat(10 * 1024);
    for bad in ["a\0b", long.as_str()] {
        let err = StateError::validate_user_id("s", bad).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::InvalidValue {
                    what: "user id",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().len() < 100,
            "the value is not repeated: {err}"
        );
    }
    assert_eq!(
        StateError::validate_user_id("s", "a\0b")
            .unwrap_err()
            .to_string(),
        "invalid user id for conversation `s`: it contains control characters"
    );
    let fine = [
        Message::user("text with \0 is fine").with_id("m1"),
        Message::user("no id"),
    ];
    assert!(StateError::validate_message_ids("s", &fine).is_ok());
    let bad = [
        Message::user("x").with_id("m1"),
        Message::user("y").with_id("m\u{0}2"),
    ];
    assert_eq!(
        StateError::validate_message_ids("s", &bad)
            .unwrap_err()
            .to_string(),
        "invalid message id for conversation `s`: the id of message 1 contains control characters"
    );
    let err = StateError::validate_lease("s", "t\0").unwrap_err();
    assert!(matches!(err, StateError::InvalidId { .. }), "{err}");
}
mod realtime;
mod speech;
