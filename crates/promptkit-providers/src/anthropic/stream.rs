//! The Messages stream decoder: SSE events in, [`StreamEvent`]s out.

use std::collections::VecDeque;

use promptkit_core::{FinishReason, ProviderData, ProviderError, StreamEvent};
use serde::Deserialize;

use super::wire::{Block, MessagesResponse, REDACTED_KEY, SIGNATURE_KEY, WireError, WireUsage};
use crate::http::{Frame, Progress, SseHandler, error_chain, parse_frame, push_close};
use crate::sse::SseEvent;
use crate::vendor::body_decoder;

/// One SSE event's JSON (routed on `type`; the `event:` line is not needed).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    index: Option<u32>,
    message: Option<MessagesResponse>,
    content_block: Option<Block>,
    delta: Option<WireDelta>,
    usage: Option<WireUsage>,
    error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    thinking: Option<String>,
    signature: Option<String>,
    stop_reason: Option<String>,
}

/// What an open content block is.
#[derive(Debug)]
enum Open {
    Text,
    Thinking { signature: String },
    Tool { call: u32 },
    Other,
}

/// Folds Messages stream events into stream events.
///
/// Usage is merged (input counts from `message_start`, output from `message_delta`) and,
/// with the finish reason, emitted once: at the `message_delta` that carries the stop reason
/// (the stream ends there; `message_stop` is read apart from the consumer), or at
/// `message_stop` when no stop reason came. An `error` event fails the stream with the mapped
/// error (the Go original ignored it and ended silently).
#[derive(Debug)]
pub(crate) struct EventDecoder {
    // Open content blocks by their content-block index.
    blocks: Vec<(u32, Open)>,
    // Tool calls started so far: the next call's ordinal.
    calls: u32,
    usage: WireUsage,
    pub(crate) model: Option<String>,
    span: tracing::Span,
}

impl EventDecoder {
    pub(crate) fn new(span: tracing::Span) -> Self {
        Self {
            blocks: Vec::new(),
            calls: 0,
            usage: WireUsage::default(),
            model: None,
            span,
        }
    }

    fn block(&mut self, index: Option<u32>) -> Option<&mut Open> {
        let index = index.unwrap_or(0);
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    /// Applies one decoded event. The answer is complete at the `message_delta` that carries
    /// the stop reason and final usage ([`Progress::Answered`]: `message_stop` follows), or
    /// else at `message_stop`.
    fn apply(
        &mut self,
        event: WireEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        match event.kind.as_str() {
            "message_start" => {
                if let Some(message) = event.message {
                    if self.model.is_none() {
                        self.model = message.model;
                    }
                    if let Some(usage) = message.usage {
                        self.usage.overlay(usage);
                    }
                }
            }
            "content_block_start" => {
                let index = event.index.unwrap_or(0);
                let block = event.content_block.unwrap_or_default();
                let open = self.start_block(block, out);
                self.blocks.retain(|(i, _)| *i != index);
                self.blocks.push((index, open));
            }
            "content_block_delta" => {
                let delta = event.delta.unwrap_or_default();
                self.apply_delta(event.index, delta, out);
            }
            "content_block_stop" => {
                let index = event.index.unwrap_or(0);
                if let Some(pos) = self.blocks.iter().position(|(i, _)| *i == index) {
                    let (_, open) = self.blocks.remove(pos);
                    if let Open::Thinking { signature } = open {
                        let mut data = ProviderData::new();
                        if !signature.is_empty() {
                            data.insert(SIGNATURE_KEY, signature);
                        }
                        // Closes the reasoning block even without a signature.
                        out.push_back(StreamEvent::ReasoningData {
                            provider_data: data,
                            redacted: false,
                        });
                    }
                }
            }
            "message_delta" => {
                if let Some(usage) = event.usage {
                    self.usage.overlay(usage);
                }
                if let Some(reason) = event
                    .delta
                    .and_then(|d| d.stop_reason)
                    .filter(|r| !r.is_empty())
                {
                    self.close(FinishReason::from_anthropic(&reason), out);
                    return Ok(Progress::Answered);
                }
            }
            "message_stop" => {
                self.close(FinishReason::Stop, out);
                return Ok(Progress::End);
            }
            "error" => {
                return Err(event.error.unwrap_or_default().to_error(None, None));
            }
            // A ping carries nothing: it keeps the connection open, not the answer going.
            "ping" | "" => return Ok(Progress::KeepAlive),
            // Event types added later.
            _ => {}
        }
        Ok(Progress::More)
    }

    fn start_block(&mut self, block: Block, out: &mut VecDeque<StreamEvent>) -> Open {
        match block.kind.as_str() {
            "text" => {
                if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::TextDelta { text });
                }
                Open::Text
            }
            "thinking" => {
                if let Some(text) = block.thinking.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::ReasoningDelta { text });
                }
                Open::Thinking {
                    signature: block.signature.unwrap_or_default(),
                }
            }
            "redacted_thinking" => {
                out.push_back(StreamEvent::ReasoningData {
                    provider_data: ProviderData::new()
                        .with(REDACTED_KEY, block.data.unwrap_or_default()),
                    redacted: true,
                });
                Open::Other
            }
            "tool_use" => {
                let call = self.calls;
                self.calls += 1;
                out.push_back(StreamEvent::ToolCallStart {
                    index: call,
                    id: block.id.unwrap_or_else(|| format!("toolu_{call}")),
                    name: block.name.unwrap_or_default(),
                    provider_data: ProviderData::new(),
                });
                // The stream sends `input: {}` and the arguments as `input_json_delta`s;
                // a non-empty start input is taken as the whole arguments.
                if let Some(input) = block
                    .input
                    .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                {
                    out.push_back(StreamEvent::ToolCallDelta {
                        index: call,
                        arguments: input.to_string(),
                    });
                }
                Open::Tool { call }
            }
            _ => Open::Other,
        }
    }

    fn apply_delta(
        &mut self,
        index: Option<u32>,
        delta: WireDelta,
        out: &mut VecDeque<StreamEvent>,
    ) {
        match delta.kind.as_deref().unwrap_or("") {
            "text_delta" => {
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::TextDelta { text });
                }
            }
            "thinking_delta" => {
                if let Some(text) = delta.thinking.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::ReasoningDelta { text });
                }
            }
            "signature_delta" => {
                if let (Some(Open::Thinking { signature }), Some(more)) =
                    (self.block(index), delta.signature)
                {
                    signature.push_str(&more);
                }
            }
            "input_json_delta" => {
                let call = match self.block(index) {
                    Some(Open::Tool { call }) => *call,
                    _ => return,
                };
                if let Some(arguments) = delta.partial_json.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::ToolCallDelta {
                        index: call,
                        arguments,
                    });
                }
            }
            // `citations_delta` and later additions.
            _ => {}
        }
    }

    /// Pushes the closing usage and finish events.
    fn close(&mut self, reason: FinishReason, out: &mut VecDeque<StreamEvent>) {
        push_close(
            &self.span,
            self.usage.to_usage(),
            reason,
            self.model.as_deref(),
            out,
        );
    }
}

impl SseHandler for EventDecoder {
    fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        match parse_frame::<WireEvent>(&event.data) {
            Frame::Parsed(mut wire) => {
                if wire.kind.is_empty()
                    && let Some(name) = event.event
                {
                    wire.kind = name;
                }
                self.apply(wire, out)
            }
            Frame::Empty => Ok(Progress::KeepAlive),
            Frame::Malformed(frame) => Ok(Progress::Malformed(frame)),
        }
    }

    fn on_end(
        &mut self,
        error: Option<&reqwest::Error>,
        _out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::StreamTruncated {
            message: match error {
                Some(e) => format!(
                    "the connection failed before message_stop: {}",
                    error_chain(e)
                ),
                None => "the stream ended before message_stop".to_owned(),
            },
        })
    }
}

body_decoder! {
    /// Decodes an Anthropic Messages SSE body held in memory or fed in chunks, outside a
    /// provider call: for replaying recorded streams, proxies and benchmarks.
    ///
    /// ```
    /// use promptkit_providers::StreamEvent;
    /// use promptkit_providers::anthropic::MessagesStreamDecoder;
    ///
    /// let mut decoder = MessagesStreamDecoder::new();
    /// let mut events = decoder.feed(
    ///     b"event: content_block_start\n\
    ///       data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
    ///       data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
    /// )?;
    /// events.extend(decoder.feed(b"data: {\"type\":\"message_stop\"}\n\n")?);
    /// events.extend(decoder.finish()?);
    /// assert_eq!(events.len(), 2);
    /// assert!(matches!(events[1], StreamEvent::Finish { .. }));
    /// # Ok::<(), promptkit_providers::ProviderError>(())
    /// ```
    MessagesStreamDecoder(EventDecoder),
    feed_errors: "The mapped error of an `error` event inside the stream.",
    finish_errors: "[`ProviderError::StreamTruncated`] when `message_stop` was not seen.",
}
