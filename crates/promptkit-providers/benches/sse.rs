//! Throughput of the SSE decoder and of each vendor's stream decoder, fed in 1460-byte reads
//! (one TCP segment), and of tool-call delta accumulation.
//!
//! The OpenAI inputs are in the exact wire shape of recorded `gpt-4o` streams
//! (`benches/fixtures/`). The Anthropic and Gemini inputs carry the same text deltas and
//! tool-call argument fragments, re-encoded here in each vendor's wire shape (every field the
//! vendor sends, `event:` lines and `ping` for Anthropic, CRLF framing and per-chunk
//! `usageMetadata` for Gemini). Gemini sends function calls whole, so its tool-call stream is
//! one chunk with the three calls.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use promptkit_core::{StreamAccumulator, StreamEvent};
use promptkit_providers::anthropic::MessagesStreamDecoder;
use promptkit_providers::gemini::GeminiStreamDecoder;
use promptkit_providers::openai::ChatStreamDecoder;
use promptkit_providers::sse::SseDecoder;
use serde_json::json;

const TEXT: &[u8] = include_bytes!("fixtures/openai_text.sse");
const TOOLS: &[u8] = include_bytes!("fixtures/openai_tool_calls.sse");
const READ: usize = 1460;

fn sse_events(body: &[u8]) -> usize {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in body.chunks(READ) {
        decoder
            .feed_into(chunk, &mut events)
            .expect("within the limits");
    }
    events.extend(decoder.finish().expect("within the limits"));
    events.len()
}

fn chat_events(body: &[u8]) -> Vec<StreamEvent> {
    let mut decoder = ChatStreamDecoder::new();
    let mut events = Vec::new();
    for chunk in body.chunks(READ) {
        events.extend(decoder.feed(chunk).expect("valid stream"));
    }
    events.extend(decoder.finish().expect("complete stream"));
    events
}

/// Decodes `body` in reads of `READ` bytes with a vendor decoder's `feed` and `finish`.
macro_rules! decode {
    ($decoder:expr, $body:expr) => {{
        let mut decoder = $decoder;
        let mut events = Vec::new();
        for chunk in $body.chunks(READ) {
            events.extend(decoder.feed(chunk).expect("valid stream"));
        }
        events.extend(decoder.finish().expect("complete stream"));
        events
    }};
}

/// A tool call: id, name and argument fragments.
type Call = (String, String, Vec<String>);

/// The text deltas and the tool calls of an OpenAI stream.
fn deltas(events: &[StreamEvent]) -> (Vec<String>, Vec<Call>) {
    let mut texts = Vec::new();
    let mut calls: Vec<Call> = Vec::new();
    for event in events {
        match event {
            StreamEvent::TextDelta { text } => texts.push(text.clone()),
            StreamEvent::ToolCallStart { id, name, .. } => {
                calls.push((id.clone(), name.clone(), Vec::new()));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                calls[*index as usize].2.push(arguments.clone());
            }
            _ => {}
        }
    }
    (texts, calls)
}

fn anthropic_body(texts: &[String], calls: &[Call]) -> Vec<u8> {
    let mut out = String::new();
    let mut event = |value: serde_json::Value| {
        let name = value["type"].as_str().unwrap_or("message").to_owned();
        out.push_str(&format!("event: {name}\ndata: {value}\n\n"));
    };
    event(
        json!({"type": "message_start", "message": {"id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 472, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": 2, "service_tier": "standard"}}}),
    );
    let mut index = 0;
    if !texts.is_empty() {
        event(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}));
        event(json!({"type": "ping"}));
        for text in texts {
            event(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}));
        }
        event(json!({"type": "content_block_stop", "index": 0}));
        index = 1;
    }
    for (id, name, fragments) in calls {
        event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
        for fragment in fragments {
            event(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": fragment}}));
        }
        event(json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    let stop = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    event(
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": texts.len() + 40}}),
    );
    event(json!({"type": "message_stop"}));
    out.into_bytes()
}

fn gemini_body(texts: &[String], calls: &[Call]) -> Vec<u8> {
    let mut out = String::new();
    let mut chunk = |parts: serde_json::Value, n: usize, finish: bool| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if finish {
            candidate["finishReason"] = json!("STOP");
        }
        let value = json!({"candidates": [candidate],
            "usageMetadata": {"promptTokenCount": 472, "candidatesTokenCount": n,
                "totalTokenCount": 472 + n,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 472}]},
            "modelVersion": "gemini-2.5-flash", "responseId": "mKdOaJ3bK4Ofz7IPjKGq6QQ"});
        out.push_str(&format!("data: {value}\r\n\r\n"));
    };
    for (n, text) in texts.iter().enumerate() {
        chunk(
            json!([{"text": text}]),
            n + 1,
            calls.is_empty() && n + 1 == texts.len(),
        );
    }
    if !calls.is_empty() {
        let parts: Vec<serde_json::Value> = calls
            .iter()
            .map(|(_, name, fragments)| {
                let args: serde_json::Value =
                    serde_json::from_str(&fragments.concat()).expect("arguments are JSON");
                json!({"functionCall": {"name": name, "args": args}})
            })
            .collect();
        chunk(serde_json::Value::Array(parts), texts.len() + 40, true);
    }
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse");
    for (name, body) in [("text", TEXT), ("tool_calls", TOOLS)] {
        let (texts, calls) = deltas(&chat_events(body));
        let anthropic = anthropic_body(&texts, &calls);
        let gemini = gemini_body(&texts, &calls);
        // The re-encoded streams decode to the same answer.
        let fold = |events: Vec<StreamEvent>| {
            let mut acc = StreamAccumulator::new();
            events.iter().for_each(|e| acc.push(e));
            let message = acc.finish();
            (message.text(), message.tool_calls.len())
        };
        let expected = fold(chat_events(body));
        assert_eq!(
            fold(decode!(MessagesStreamDecoder::new(), anthropic)),
            expected
        );
        assert_eq!(fold(decode!(GeminiStreamDecoder::new(), gemini)), expected);

        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("sse_decode/{name}"), |b| {
            b.iter(|| sse_events(black_box(body)));
        });
        group.bench_function(format!("openai_decode/{name}"), |b| {
            b.iter(|| chat_events(black_box(body)));
        });
        group.throughput(Throughput::Bytes(anthropic.len() as u64));
        group.bench_function(format!("anthropic_decode/{name}"), |b| {
            b.iter(|| decode!(MessagesStreamDecoder::new(), black_box(&anthropic)));
        });
        group.throughput(Throughput::Bytes(gemini.len() as u64));
        group.bench_function(format!("gemini_decode/{name}"), |b| {
            b.iter(|| decode!(GeminiStreamDecoder::new(), black_box(&gemini)));
        });
    }
    group.finish();

    let events = chat_events(TOOLS);
    let mut group = c.benchmark_group("accumulate");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("tool_call_deltas", |b| {
        b.iter(|| {
            let mut acc = StreamAccumulator::new();
            for event in black_box(&events) {
                acc.push(event);
            }
            acc.finish()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
