//! The Chat Completions stream decoder: SSE events in, [`StreamEvent`]s out.

use std::borrow::Cow;
use std::collections::VecDeque;

use promptkit_core::{FinishReason, ProviderData, ProviderError, StreamEvent, Usage};

use super::wire::{ChatChunk, finish_reason};
use crate::http::{Frame, Progress, SseHandler, error_chain, parse_frame, push_close};
use crate::sse::SseEvent;
use crate::vendor::body_decoder;

/// Folds Chat Completions chunks into stream events.
///
/// The finish reason and usage are remembered and emitted once: at the first chunk that
/// carries usage at or after the finish reason, else at `[DONE]` or at the end of the body.
/// The real wire sends the finish reason, then a usage-only chunk with empty `choices`
/// (asked for with `stream_options.include_usage`), then `[DONE]`; the Go original lost the
/// finish reason there. The answer is complete at the usage chunk, so the stream ends there
/// and `[DONE]` is read apart from the consumer ([`Progress::Answered`]). A server that
/// reports usage on every chunk (vLLM's continuous usage) ends at its finish chunk, whose
/// usage is the final count.
#[derive(Debug)]
pub(crate) struct ChunkDecoder {
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    // Tool-call indexes already started, with the id/name sent.
    started: Vec<(u32, bool, bool)>,
    // Set when a chunk named the served model.
    pub(crate) model: Option<String>,
    span: tracing::Span,
}

impl ChunkDecoder {
    pub(crate) fn new(span: tracing::Span) -> Self {
        Self {
            finish: None,
            usage: None,
            started: Vec::new(),
            model: None,
            span,
        }
    }

    /// Applies one decoded chunk; `true` when it carried usage.
    pub(crate) fn apply(
        &mut self,
        chunk: ChatChunk<'_>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, ProviderError> {
        if let Some(error) = chunk.error {
            return Err(error.to_error(None, None));
        }
        if self.model.is_none() {
            self.model = chunk.model.map(Cow::into_owned);
        }
        let carried_usage = match chunk.usage.and_then(|u| u.to_usage()) {
            Some(usage) => {
                self.usage = Some(usage);
                true
            }
            None => false,
        };
        // Only the first choice is an answer (`n` is never set, but a server may ignore that).
        for choice in chunk
            .choices
            .into_iter()
            .filter(|c| c.index.unwrap_or(0) == 0)
        {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.reasoning_content.or(delta.reasoning)
                    && !text.is_empty()
                {
                    out.push_back(StreamEvent::ReasoningDelta { text });
                }
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::TextDelta { text });
                }
                if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::TextDelta { text });
                }
                for (position, call) in delta.tool_calls.into_iter().enumerate() {
                    let index = call
                        .index
                        .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
                    let id = call.id.filter(|s| !s.is_empty());
                    let (name, arguments) = match call.function {
                        Some(f) => (f.name.clone().filter(|s| !s.is_empty()), f.arguments_text()),
                        None => (None, String::new()),
                    };
                    self.start_call(index, id, name, out);
                    if !arguments.is_empty() {
                        out.push_back(StreamEvent::ToolCallDelta { index, arguments });
                    }
                }
            }
            if let Some(reason) = finish_reason(choice.finish_reason.as_deref()) {
                self.finish = Some(reason);
            }
        }
        Ok(carried_usage)
    }

    fn start_call(
        &mut self,
        index: u32,
        id: Option<String>,
        name: Option<String>,
        out: &mut VecDeque<StreamEvent>,
    ) {
        let entry = self.started.iter_mut().find(|(i, _, _)| *i == index);
        let emit = match entry {
            None => {
                self.started.push((index, id.is_some(), name.is_some()));
                true
            }
            // A later delta fills in an id or name the first one lacked.
            Some((_, has_id, has_name)) => {
                let fills = (!*has_id && id.is_some()) || (!*has_name && name.is_some());
                *has_id |= id.is_some();
                *has_name |= name.is_some();
                fills
            }
        };
        if emit {
            out.push_back(StreamEvent::ToolCallStart {
                index,
                id: id.unwrap_or_else(|| format!("call_{index}")),
                name: name.unwrap_or_default(),
                provider_data: ProviderData::new(),
            });
        }
    }

    /// Pushes the closing usage and finish events.
    pub(crate) fn close(&mut self, reason: FinishReason, out: &mut VecDeque<StreamEvent>) {
        push_close(
            &self.span,
            self.usage.take(),
            reason,
            self.model.as_deref(),
            out,
        );
    }
}

impl SseHandler for ChunkDecoder {
    fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            // `[DONE]` without a finish reason: the server says the answer is complete.
            let reason = self.finish.take().unwrap_or(FinishReason::Stop);
            self.close(reason, out);
            return Ok(Progress::End);
        }
        let chunk = match parse_frame::<ChatChunk<'_>>(data) {
            Frame::Parsed(chunk) => chunk,
            Frame::Empty => return Ok(Progress::KeepAlive),
            Frame::Malformed(frame) => return Ok(Progress::Malformed(frame)),
        };
        // A chunk with no choice, usage or error (`{}`, `{"choices":[]}`) is a keep-alive.
        let keep_alive = chunk.choices.is_empty() && chunk.usage.is_none() && chunk.error.is_none();
        if self.apply(chunk, out)?
            && let Some(reason) = self.finish.take()
        {
            self.close(reason, out);
            return Ok(Progress::Answered);
        }
        Ok(if keep_alive {
            Progress::KeepAlive
        } else {
            Progress::More
        })
    }

    fn on_end(
        &mut self,
        error: Option<&reqwest::Error>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), ProviderError> {
        match self.finish.take() {
            // The finish reason was seen: a missing `[DONE]` is tolerated.
            Some(reason) => {
                self.close(reason, out);
                Ok(())
            }
            None => Err(ProviderError::StreamTruncated {
                message: match error {
                    Some(e) => format!(
                        "the connection failed before a finish reason: {}",
                        error_chain(e)
                    ),
                    None => "the stream ended before a finish reason or [DONE]".to_owned(),
                },
            }),
        }
    }
}

body_decoder! {
    /// Decodes a Chat Completions SSE body held in memory or fed in chunks, outside a provider
    /// call: for replaying recorded streams, proxies and benchmarks.
    ///
    /// ```
    /// use promptkit_providers::openai::ChatStreamDecoder;
    /// use promptkit_providers::StreamEvent;
    ///
    /// let mut decoder = ChatStreamDecoder::new();
    /// let mut events = decoder.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n")?;
    /// events.extend(decoder.feed(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")?);
    /// events.extend(decoder.finish()?);
    /// assert_eq!(events.len(), 2);
    /// assert!(matches!(events[1], StreamEvent::Finish { .. }));
    /// # Ok::<(), promptkit_providers::ProviderError>(())
    /// ```
    ChatStreamDecoder(ChunkDecoder),
    feed_errors: "An error object sent inside the stream.",
    finish_errors: "[`ProviderError::StreamTruncated`] when neither a finish reason nor `[DONE]` was seen.",
}
