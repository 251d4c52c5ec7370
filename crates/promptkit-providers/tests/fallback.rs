//! The fallback provider.
#![cfg(all(feature = "fallback", feature = "mock"))]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    Message, Provider, ProviderError, ProviderRequest, StreamAccumulator, StreamEvent,
};
use promptkit_providers::fallback::{FallbackPolicy, FallbackProvider};
use promptkit_providers::mock::{MockProvider, MockTurn};

fn request() -> ProviderRequest {
    ProviderRequest::new(vec![Message::user("hi")])
}

fn server_error() -> ProviderError {
    ProviderError::from_status(503, "down", None)
}

#[tokio::test]
async fn fails_over_on_retryable_errors_and_names_the_server() {
    let primary =
        Arc::new(MockProvider::new("primary", "p-1").with_turn(MockTurn::error(server_error())));
    let backup =
        Arc::new(MockProvider::new("backup", "b-1").with_turn(MockTurn::text("from backup")));
    let fallback = FallbackProvider::new(
        "fb",
        vec![primary.clone(), backup.clone()],
        FallbackPolicy::default(),
    )
    .unwrap();
    let response = fallback.predict(&request()).await.unwrap();
    assert_eq!(response.text(), "from backup");
    assert_eq!(response.served_by.as_deref(), Some("backup"));
    // The primary now cools down: it is skipped while the backup is healthy.
    assert_eq!(fallback.order(), ["backup"]);
    backup.push_turn(MockTurn::text("again"));
    assert_eq!(
        fallback
            .predict(&request())
            .await
            .unwrap()
            .served_by
            .as_deref(),
        Some("backup")
    );
    assert_eq!(primary.requests().len(), 1);
}

#[tokio::test]
async fn request_errors_do_not_fail_over_and_exhaustion_lists_every_attempt() {
    let bad = ProviderError::BadRequest {
        status: 400,
        message: "bad schema".into(),
    };
    let primary = Arc::new(MockProvider::new("primary", "p").with_turn(MockTurn::error(bad)));
    let backup = Arc::new(MockProvider::new("backup", "b"));
    let fallback = FallbackProvider::new(
        "fb",
        vec![primary, backup.clone()],
        FallbackPolicy::default(),
    )
    .unwrap();
    assert!(matches!(
        fallback.predict(&request()).await,
        Err(ProviderError::BadRequest { .. })
    ));
    assert!(
        backup.requests().is_empty(),
        "the same request would fail everywhere"
    );

    let a = Arc::new(MockProvider::new("a", "a").with_turn(MockTurn::error(server_error())));
    let b = Arc::new(
        MockProvider::new("b", "b").with_turn(MockTurn::error(ProviderError::Auth {
            message: "bad key".into(),
        })),
    );
    let fallback = FallbackProvider::new("fb", vec![a, b], FallbackPolicy::default()).unwrap();
    match fallback.predict(&request()).await {
        Err(ProviderError::AllFailed { attempts }) => {
            let ids: Vec<&str> = attempts.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(ids, ["a", "b"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(FallbackProvider::new("empty", vec![], FallbackPolicy::default()).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_slow_candidate_times_out_per_attempt() {
    let slow = Arc::new(
        MockProvider::new("slow", "s")
            .with_turn(MockTurn::text("late").with_delay(Duration::from_secs(60))),
    );
    let fast = Arc::new(MockProvider::new("fast", "f").with_turn(MockTurn::text("quick")));
    let policy = FallbackPolicy {
        attempt_timeout: Some(Duration::from_secs(2)),
        ..FallbackPolicy::default()
    };
    let fallback = FallbackProvider::new("fb", vec![slow, fast], policy).unwrap();
    let response = fallback.predict(&request()).await.unwrap();
    assert_eq!(response.served_by.as_deref(), Some("fast"));
}

async fn collect(stream: promptkit_core::EventStream) -> (Vec<StreamEvent>, Option<ProviderError>) {
    let mut events = Vec::new();
    let mut stream = stream;
    while let Some(e) = stream.next().await {
        match e {
            Ok(e) => events.push(e),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

#[tokio::test]
async fn streams_fail_over_until_content_and_never_replay_it() {
    let broken = || {
        MockTurn::text("partial answer that breaks")
            .with_chunk_size(4)
            .with_stream_error(server_error())
    };
    // Before the first event: fails over.
    let a = Arc::new(MockProvider::new("a", "a").with_turn(MockTurn::error(server_error())));
    let b = Arc::new(MockProvider::new("b", "b").with_turn(MockTurn::text("streamed from b")));
    let fallback = FallbackProvider::new("fb", vec![a, b], FallbackPolicy::default()).unwrap();
    let (events, error) = collect(fallback.stream(&request()).await.unwrap()).await;
    assert!(error.is_none());
    let mut acc = StreamAccumulator::new();
    events.iter().for_each(|e| acc.push(e));
    assert_eq!(acc.finish().text(), "streamed from b");

    // A stream that opens and fails before any content: fails over too, with nothing to
    // retract.
    let a = Arc::new(
        MockProvider::new("a", "a").with_turn(MockTurn::text("").with_stream_error(server_error())),
    );
    let b = Arc::new(MockProvider::new("b", "b").with_turn(MockTurn::text("complete")));
    let fallback = FallbackProvider::new("fb", vec![a, b], FallbackPolicy::default()).unwrap();
    let (events, error) = collect(fallback.stream(&request()).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Reset)));
    let mut acc = StreamAccumulator::new();
    events.iter().for_each(|e| acc.push(e));
    assert_eq!(acc.finish().text(), "complete");

    // After content was streamed, the error is returned: the text is never replayed from
    // another candidate.
    let a = Arc::new(MockProvider::new("a", "a").with_turn(broken()));
    let b = Arc::new(MockProvider::new("b", "b").with_turn(MockTurn::text("complete")));
    let fallback =
        FallbackProvider::new("fb", vec![a, b.clone()], FallbackPolicy::default()).unwrap();
    let (events, error) = collect(fallback.stream(&request()).await.unwrap()).await;
    assert!(
        matches!(error, Some(ProviderError::Overloaded { .. })),
        "{error:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Reset)));
    assert!(b.requests().is_empty());
}

fn rate_limited() -> ProviderError {
    ProviderError::from_status(429, "slow down", None)
}

#[tokio::test]
async fn cooling_candidates_are_skipped_while_one_is_healthy() {
    let a = Arc::new(MockProvider::new("a", "a").with_turn(MockTurn::error(rate_limited())));
    let b = Arc::new(MockProvider::new("b", "b").with_turn(MockTurn::error(rate_limited())));
    let c = Arc::new(MockProvider::new("c", "c").with_default_text("from c"));
    let fallback = FallbackProvider::new(
        "fb",
        vec![a.clone(), b.clone(), c.clone()],
        FallbackPolicy::default(),
    )
    .unwrap();
    assert_eq!(fallback.predict(&request()).await.unwrap().text(), "from c");
    // a and b cool down: only c is tried, however often it is called.
    assert_eq!(fallback.order(), ["c"]);
    for _ in 0..3 {
        fallback.predict(&request()).await.unwrap();
    }
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    assert_eq!(c.requests().len(), 4);
}

#[tokio::test]
async fn when_every_candidate_cools_the_soonest_to_recover_goes_first() {
    let a = Arc::new(MockProvider::new("a", "a").with_turn(MockTurn::error(rate_limited())));
    let b = Arc::new(MockProvider::new("b", "b").with_turn(MockTurn::error(rate_limited())));
    let fallback =
        FallbackProvider::new("fb", vec![a.clone(), b.clone()], FallbackPolicy::default()).unwrap();
    assert!(matches!(
        fallback.predict(&request()).await,
        Err(ProviderError::AllFailed { .. })
    ));
    // a failed first, so its cooldown ends first.
    assert_eq!(fallback.order(), ["a", "b"]);
}
