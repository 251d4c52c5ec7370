//! The scripted mock provider.
#![cfg(feature = "mock")]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use promptkit_core::{
    FinishReason, Message, ModelPricing, PricingTable, Provider, ProviderError, ProviderRequest,
    StreamAccumulator, StreamEvent, Usage,
};
use promptkit_providers::mock::{MockProvider, MockTurn};
use serde_json::json;

fn request(text: &str) -> ProviderRequest {
    ProviderRequest::new(vec![Message::user(text)])
}

#[tokio::test]
async fn scripted_turns_in_order_then_default() {
    let provider = MockProvider::new("mock", "mock-1")
        .with_turn(MockTurn::text("first").with_usage(Usage::new(3, 1)))
        .with_turn(MockTurn::tool_call("c1", "search", json!({"q": "x"})))
        .with_default_text("fallback");
    let first = provider.predict(&request("a")).await.unwrap();
    assert_eq!(first.text(), "first");
    assert_eq!(first.usage(), Some(&Usage::new(3, 1)));
    assert_eq!(first.finish_reason(), Some(&FinishReason::Stop));
    let second = provider.predict(&request("b")).await.unwrap();
    assert_eq!(second.tool_calls()[0].arguments, json!({"q": "x"}));
    assert_eq!(second.finish_reason(), Some(&FinishReason::ToolCalls));
    assert_eq!(
        provider.predict(&request("c")).await.unwrap().text(),
        "fallback"
    );
    let seen: Vec<String> = provider
        .requests()
        .iter()
        .map(|r| r.messages[0].text())
        .collect();
    assert_eq!(seen, ["a", "b", "c"]);
    assert_eq!(provider.remaining_turns(), 0);
}

#[tokio::test]
async fn streams_text_in_chunks_with_usage_then_finish() {
    let provider = MockProvider::new("mock", "mock-1").with_turn(
        MockTurn::text("abcdefghij")
            .with_reasoning("hmm")
            .with_chunk_size(4)
            .with_chunk_delay(Duration::from_millis(1)),
    );
    let mut stream = provider.stream(&request("go")).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = stream.next().await {
        events.push(e.unwrap());
    }
    let texts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["abcd", "efgh", "ij"]);
    assert!(matches!(
        events[events.len() - 2],
        StreamEvent::Usage { .. }
    ));
    assert!(matches!(
        events[events.len() - 1],
        StreamEvent::Finish {
            reason: FinishReason::Stop
        }
    ));
    let mut acc = StreamAccumulator::new();
    for e in &events {
        acc.push(e);
    }
    let message = acc.finish();
    assert_eq!(message.reasoning().count(), 1);
}

#[tokio::test]
async fn errors_delays_and_mid_stream_failures() {
    let provider = MockProvider::new("mock", "mock-1")
        .with_turn(MockTurn::error(ProviderError::RateLimited {
            retry_after: None,
            message: "slow".into(),
        }))
        .with_turn(MockTurn::text("late").with_delay(Duration::from_millis(30)))
        .with_turn(
            MockTurn::text("cut off").with_stream_error(ProviderError::StreamTruncated {
                message: "scripted".into(),
            }),
        );
    assert!(matches!(
        provider.stream(&request("x")).await.err(),
        Some(ProviderError::RateLimited { .. })
    ));
    let started = Instant::now();
    assert_eq!(
        provider.predict(&request("x")).await.unwrap().text(),
        "late"
    );
    assert!(started.elapsed() >= Duration::from_millis(30));
    let mut stream = provider.stream(&request("x")).await.unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    assert!(matches!(
        last,
        Some(Err(ProviderError::StreamTruncated { .. }))
    ));
}

#[tokio::test]
async fn cost_from_pricing_table() {
    let pricing = PricingTable::new().with("mock-1", ModelPricing::new(1.0, 2.0));
    let provider = MockProvider::new("mock", "mock-1")
        .with_pricing(pricing)
        .with_turn(MockTurn::text("x").with_usage(Usage::new(1_000_000, 1_000_000)));
    let response = provider.predict(&request("x")).await.unwrap();
    assert!((response.cost().unwrap().total_usd - 3.0).abs() < 1e-9);
    let unpriced = MockProvider::new("mock", "other");
    assert!(
        unpriced
            .predict(&request("x"))
            .await
            .unwrap()
            .cost()
            .is_none()
    );
}
