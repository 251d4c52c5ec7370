//! Throughput of the SSE decoder and the Chat Completions stream decoder on streams in the
//! exact wire shape of recorded OpenAI `gpt-4o` streams (`benches/fixtures/`), fed in
//! 1460-byte reads (one TCP segment), and of tool-call delta accumulation.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use promptkit_core::{StreamAccumulator, StreamEvent};
use promptkit_providers::openai::ChatStreamDecoder;
use promptkit_providers::sse::SseDecoder;

const TEXT: &[u8] = include_bytes!("fixtures/openai_text.sse");
const TOOLS: &[u8] = include_bytes!("fixtures/openai_tool_calls.sse");
const READ: usize = 1460;

fn sse_events(body: &[u8]) -> usize {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in body.chunks(READ) {
        decoder.feed_into(chunk, &mut events);
    }
    events.extend(decoder.finish());
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

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse");
    for (name, body) in [("text", TEXT), ("tool_calls", TOOLS)] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("sse_decode/{name}"), |b| {
            b.iter(|| sse_events(black_box(body)));
        });
        group.bench_function(format!("openai_decode/{name}"), |b| {
            b.iter(|| chat_events(black_box(body)));
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
