//! The summarizer against a scripted provider and the memory store.

use std::sync::{Arc, Mutex};

use promptkit_core::{
    BoxFuture, EventStream, Message, Provider, ProviderError, ProviderRequest, ProviderResponse,
    Usage,
};
use promptkit_state::{MemoryStore, StateStore, Summarizer, SummarizerConfig};

/// Answers every request with a fixed summary and records the requests.
#[derive(Debug, Default)]
struct FakeModel {
    requests: Mutex<Vec<ProviderRequest>>,
}

impl Provider for FakeModel {
    fn id(&self) -> &str {
        "fake"
    }

    fn model(&self) -> &str {
        "fake-1"
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let n = {
                let mut requests = self.requests.lock().unwrap();
                requests.push(request.clone());
                requests.len()
            };
            let mut message = Message::assistant(format!("summary #{n}"));
            message.usage = Some(Usage {
                output_tokens: Some(3),
                ..Usage::default()
            });
            Ok(ProviderResponse {
                message,
                model: None,
                served_by: None,
                latency: std::time::Duration::ZERO,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        _request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async {
            Err(ProviderError::Transport {
                message: "not streamed in this test".to_owned(),
                source: None,
            })
        })
    }
}

fn turns(from: usize, to: usize) -> Vec<Message> {
    (from..to)
        .map(|i| Message::user(format!("message {i}")).with_id(format!("m{i}")))
        .collect()
}

#[tokio::test]
async fn folds_old_messages_past_the_threshold_into_a_rolling_summary() {
    let store = MemoryStore::new();
    let model = Arc::new(FakeModel::default());
    let summarizer = Summarizer::new(
        Arc::clone(&model) as Arc<dyn Provider>,
        SummarizerConfig::default().with_window(10, 4),
    );

    store.append("c", None, &turns(0, 10)).await.unwrap();
    assert!(
        summarizer
            .maybe_summarize(&store, "c")
            .await
            .unwrap()
            .is_none(),
        "at threshold"
    );
    assert!(
        summarizer
            .maybe_summarize(&store, "missing")
            .await
            .unwrap()
            .is_none()
    );

    store.append("c", None, &turns(10, 12)).await.unwrap();
    let first = summarizer
        .maybe_summarize(&store, "c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.start_index, first.end_index),
        (0, 8),
        "keeps the 4 newest out"
    );
    assert_eq!(first.content, "summary #1");
    assert_eq!(first.token_count, Some(3));
    let prompt = model.requests.lock().unwrap()[0].messages[0].text();
    assert!(prompt.contains("user: message 0") && prompt.contains("user: message 7"));
    assert!(
        !prompt.contains("message 8"),
        "recent messages stay out: {prompt}"
    );

    // Only 4 unsummarised now: nothing due until more than 10 accumulate.
    assert!(
        summarizer
            .maybe_summarize(&store, "c")
            .await
            .unwrap()
            .is_none()
    );
    store.append("c", None, &turns(12, 20)).await.unwrap();
    let second = summarizer
        .maybe_summarize(&store, "c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.start_index, second.end_index), (0, 16));
    let prompt = model.requests.lock().unwrap()[1].messages[0].text();
    assert!(
        prompt.starts_with("Summary so far:\nsummary #1"),
        "rolling: {prompt}"
    );
    assert!(prompt.contains("message 8") && !prompt.contains("message 7\n"));

    let stored = store.load("c").await.unwrap().unwrap();
    assert_eq!(stored.summaries, vec![first, second]);
    assert_eq!(stored.messages.len(), 20, "messages are kept");
}
