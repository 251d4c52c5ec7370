//! Folding old messages into a [`Summary`] through any [`Provider`].

use std::fmt;
use std::sync::Arc;

use promptkit_core::{
    Message, Provider, ProviderError, ProviderRequest, StateError, StateStore, Summary, Timestamp,
};

/// Settings of a [`Summarizer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SummarizerConfig {
    /// Summarise once more than this many messages are not covered by the latest summary.
    pub threshold: usize,
    /// Messages at the end left out of the summary (they stay verbatim in the prompt).
    pub keep_recent: usize,
    /// The system prompt of the summarisation call.
    pub instructions: String,
    /// Output token limit of the summarisation call.
    pub max_tokens: Option<u32>,
}

impl Default for SummarizerConfig {
    fn default() -> Self {
        Self {
            threshold: 40,
            keep_recent: 10,
            instructions: "Summarise the conversation below for the assistant that continues it. \
                Keep names, facts, decisions, open questions and commitments; drop pleasantries. \
                Write plain prose, at most 200 words."
                .to_owned(),
            max_tokens: Some(400),
        }
    }
}

impl SummarizerConfig {
    /// Sets the threshold and the number of recent messages kept out of the summary.
    #[must_use]
    pub fn with_window(mut self, threshold: usize, keep_recent: usize) -> Self {
        self.threshold = threshold;
        self.keep_recent = keep_recent;
        self
    }
}

/// Why summarising failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SummarizeError {
    /// Reading or writing the conversation failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The model call failed.
    #[error("summarisation call failed: {0}")]
    Provider(#[from] ProviderError),
    /// The model answered with no text.
    #[error("the model returned an empty summary")]
    Empty,
}

/// Keeps a rolling summary of a conversation: past [`threshold`](SummarizerConfig::threshold)
/// unsummarised messages, it asks the provider to fold the previous summary and the older
/// messages (all but the [`keep_recent`](SummarizerConfig::keep_recent) newest) into a new
/// summary covering `0..end`, and stores it with [`StateStore::add_summary`]. Messages are
/// never deleted; `StateStoreLoad` in the pipeline emits the latest summary in their place.
#[derive(Clone)]
pub struct Summarizer {
    provider: Arc<dyn Provider>,
    config: SummarizerConfig,
}

impl fmt::Debug for Summarizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Summarizer")
            .field("provider", &self.provider.id())
            .field("config", &self.config)
            .finish()
    }
}

impl Summarizer {
    /// A summarizer calling `provider`.
    pub fn new(provider: Arc<dyn Provider>, config: SummarizerConfig) -> Self {
        Self { provider, config }
    }

    /// Summarises conversation `id` if it is past the threshold; returns the new summary, or
    /// `None` when nothing was due (or the conversation does not exist).
    ///
    /// # Errors
    /// [`SummarizeError`] when the store or the model call fails.
    pub async fn maybe_summarize(
        &self,
        store: &dyn StateStore,
        id: &str,
    ) -> Result<Option<Summary>, SummarizeError> {
        let Some(conversation) = store.load(id).await? else {
            return Ok(None);
        };
        let previous = conversation.summaries.last();
        let covered = previous
            .map_or(0, |s| usize::try_from(s.end_index).unwrap_or(usize::MAX))
            .min(conversation.messages.len());
        let total = conversation.messages.len();
        if total - covered <= self.config.threshold {
            return Ok(None);
        }
        let end = total.saturating_sub(self.config.keep_recent).max(covered);
        if end == covered {
            return Ok(None);
        }
        let mut transcript = String::new();
        if let Some(previous) = previous {
            transcript.push_str("Summary so far:\n");
            transcript.push_str(&previous.content);
            transcript.push_str("\n\nLater messages:\n");
        }
        for message in &conversation.messages[covered..end] {
            transcript.push_str(&render(message));
            transcript.push('\n');
        }
        let mut request = ProviderRequest::new(vec![Message::user(transcript)])
            .with_system(self.config.instructions.clone());
        request.max_tokens = self.config.max_tokens;
        let response = self.provider.predict(&request).await?;
        let content = response.message.text().trim().to_owned();
        if content.is_empty() {
            return Err(SummarizeError::Empty);
        }
        let summary = Summary {
            start_index: 0,
            end_index: end as u64,
            content,
            token_count: response.message.usage.and_then(|u| u.output_tokens),
            created_at: Timestamp::now(),
        };
        store.add_summary(id, &summary).await?;
        Ok(Some(summary))
    }
}

/// One transcript line: `role: text`, with tool calls and results named.
fn render(message: &Message) -> String {
    let mut line = format!("{}: {}", message.role.as_str(), message.text());
    for call in &message.tool_calls {
        line.push_str(&format!(
            " [called {}({})]",
            call.name,
            call.arguments_json()
        ));
    }
    if let Some(result) = &message.tool_result {
        line.push_str(&format!(
            " [{} returned: {}]",
            result.name,
            result.text_content()
        ));
    }
    line
}
