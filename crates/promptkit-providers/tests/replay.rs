//! Recording a provider and replaying it.
#![cfg(all(feature = "replay", feature = "mock"))]

use std::sync::Arc;

use futures_util::StreamExt as _;
use promptkit_core::{Message, Provider, ProviderRequest, StreamAccumulator, StreamEvent};
use promptkit_providers::mock::{MockProvider, MockTurn};
use promptkit_providers::replay::{RecordingProvider, ReplayMode, ReplayProvider};

async fn streamed_text(provider: &dyn Provider, request: &ProviderRequest) -> String {
    let mut stream = provider.stream(request).await.unwrap();
    let mut acc = StreamAccumulator::new();
    while let Some(e) = stream.next().await {
        acc.push(&e.unwrap());
    }
    acc.finish().text()
}

#[tokio::test]
async fn records_then_replays_offline_in_order_or_by_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("calls.jsonl");
    let live = Arc::new(
        MockProvider::new("live", "live-1")
            .with_turn(MockTurn::text("first answer"))
            .with_turn(MockTurn::text("second answer, streamed").with_chunk_size(5)),
    );
    let recorder = RecordingProvider::new(live, &file);
    let first = ProviderRequest::new(vec![Message::user("one")]);
    let second = ProviderRequest::new(vec![Message::user("two")]);
    assert_eq!(
        recorder.predict(&first).await.unwrap().text(),
        "first answer"
    );
    assert_eq!(
        streamed_text(&recorder, &second).await,
        "second answer, streamed"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);

    let replay = ReplayProvider::from_file(&file, ReplayMode::Sequential).unwrap();
    assert_eq!(replay.predict(&first).await.unwrap().text(), "first answer");
    assert_eq!(
        streamed_text(&replay, &second).await,
        "second answer, streamed"
    );
    let exhausted = replay.predict(&first).await.unwrap_err();
    assert!(
        exhausted.to_string().contains("no recorded response left"),
        "{exhausted}"
    );

    // By request: the stream recorded for "two" is found whatever the order.
    let replay = ReplayProvider::from_file(&file, ReplayMode::MatchRequest).unwrap();
    let mut stream = replay.stream(&second).await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = stream.next().await {
        events.push(e.unwrap());
    }
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    let miss = replay
        .stream(&ProviderRequest::new(vec![Message::user("three")]))
        .await;
    assert!(miss.is_err());
    assert_eq!(replay.remaining(), 1);
}

#[test]
fn a_corrupt_recording_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, "\nnot json\n").unwrap();
    let err = ReplayProvider::from_file(&file, ReplayMode::Sequential).unwrap_err();
    assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
}
