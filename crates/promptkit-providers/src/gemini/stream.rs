//! The `streamGenerateContent?alt=sse` decoder: SSE events in, [`StreamEvent`]s out. A
//! non-streaming response is folded through the same code as a one-chunk stream.

use std::collections::VecDeque;

use promptkit_core::{FinishReason, ProviderData, ProviderError, StreamEvent, Usage};

use super::wire::{CALL_ID_KEY, GenerateResponse, Part, SIGNATURE_KEY, error_in_text};
use crate::http::{Frame, Progress, SseHandler, error_chain, parse_frame, push_close};
use crate::sse::SseEvent;
use crate::vendor::body_decoder;

/// Folds `GenerateContentResponse` chunks into stream events.
///
/// Each chunk carries parts of the first candidate: thought parts become
/// [`StreamEvent::ReasoningDelta`]s, text parts [`StreamEvent::TextDelta`]s, function calls
/// a [`StreamEvent::ToolCallStart`] (with a generated id, Gemini sends none) and their
/// arguments in one [`StreamEvent::ToolCallDelta`]. A thought signature on a function call
/// travels on the call; one on any other part closes a reasoning block
/// ([`StreamEvent::ReasoningData`]), so it is stored in order and sent back with the text
/// it followed. The finish reason and the latest usage are remembered and emitted when the
/// body ends (Gemini sends no end marker), `STOP` with calls being corrected to
/// [`FinishReason::ToolCalls`].
#[derive(Debug)]
pub(crate) struct ChunkDecoder {
    // Calls started so far: the next call's index.
    calls: u32,
    // Distinguishes this answer's generated call ids from other answers' ones.
    call_prefix: String,
    finish: Option<String>,
    finish_message: Option<String>,
    usage: Option<Usage>,
    // Whether any text, reasoning or call was produced.
    output: bool,
    // Text of the stream outside any SSE event: Gemini writes a bare JSON error object
    // into an event stream that fails after it started.
    unframed: String,
    pub(crate) model: Option<String>,
    span: tracing::Span,
}

impl ChunkDecoder {
    pub(crate) fn new(span: tracing::Span) -> Self {
        Self {
            calls: 0,
            call_prefix: format!("{:08x}", fastrand::u32(..)),
            finish: None,
            finish_message: None,
            usage: None,
            output: false,
            unframed: String::new(),
            model: None,
            span,
        }
    }

    /// Applies one response (or stream chunk).
    pub(crate) fn apply(
        &mut self,
        response: GenerateResponse,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), ProviderError> {
        if let Some(error) = response.error {
            return Err(error.to_error(None, None));
        }
        if self.model.is_none() {
            self.model = response.model_version;
        }
        if let Some(usage) = response.usage_metadata.and_then(|u| u.to_usage()) {
            self.usage = Some(usage);
        }
        if let Some(feedback) = response.prompt_feedback
            && let Some(reason) = feedback.block_reason.filter(|r| !r.is_empty())
        {
            let detail = feedback
                .block_reason_message
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(ProviderError::ContentFiltered {
                message: format!("Gemini blocked the prompt ({reason}){detail}"),
            });
        }
        // Only the first candidate is an answer (`candidateCount` is never set).
        let Some(candidate) = response
            .candidates
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0)
        else {
            return Ok(());
        };
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            self.part(part, out);
        }
        if let Some(reason) = candidate
            .finish_reason
            .filter(|r| !r.is_empty() && r != "FINISH_REASON_UNSPECIFIED")
        {
            self.finish = Some(reason);
            self.finish_message = candidate.finish_message;
        }
        Ok(())
    }

    fn part(&mut self, part: Part, out: &mut VecDeque<StreamEvent>) {
        let signature = part.thought_signature.filter(|s| !s.is_empty());
        if let Some(call) = part.function_call {
            let index = self.calls;
            self.calls += 1;
            self.output = true;
            let mut provider_data = ProviderData::new();
            if let Some(signature) = signature {
                provider_data.insert(SIGNATURE_KEY, signature);
            }
            let id = match call.id.filter(|id| !id.is_empty()) {
                Some(id) => {
                    provider_data.insert(CALL_ID_KEY, id.clone());
                    id
                }
                None => format!("call_{}_{index}", self.call_prefix),
            };
            out.push_back(StreamEvent::ToolCallStart {
                index,
                id,
                name: call.name.unwrap_or_default(),
                provider_data,
            });
            let arguments = match call.args {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(args) => args.to_string(),
            };
            if !arguments.is_empty() {
                out.push_back(StreamEvent::ToolCallDelta { index, arguments });
            }
            return;
        }
        if let Some(text) = part.text.filter(|t| !t.is_empty()) {
            self.output = true;
            if part.thought == Some(true) {
                out.push_back(StreamEvent::ReasoningDelta { text });
            } else {
                out.push_back(StreamEvent::TextDelta { text });
            }
        }
        if let Some(signature) = signature {
            out.push_back(StreamEvent::ReasoningData {
                provider_data: ProviderData::new().with(SIGNATURE_KEY, signature),
                redacted: false,
            });
        }
        // Inline media, code execution and later part kinds have no stream event yet.
    }

    /// Pushes the closing usage and finish events; `Ok(false)` when no finish reason was
    /// seen (nothing is pushed then).
    pub(crate) fn close(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<bool, ProviderError> {
        let Some(raw) = self.finish.take() else {
            return Ok(false);
        };
        let mut reason = FinishReason::from_gemini(&raw);
        if reason == FinishReason::Stop && self.calls > 0 {
            // Gemini reports STOP also when it asks for function calls.
            reason = FinishReason::ToolCalls;
        }
        if reason == FinishReason::ContentFilter && !self.output {
            let detail = self
                .finish_message
                .take()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(ProviderError::ContentFiltered {
                message: format!("Gemini blocked the answer ({raw}){detail}"),
            });
        }
        push_close(
            &self.span,
            self.usage.take(),
            reason,
            self.model.as_deref(),
            out,
        );
        Ok(true)
    }
}

impl SseHandler for ChunkDecoder {
    const UNFRAMED: bool = true;

    fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        // Gemini has no closing event: its stream ends with the body (`on_end`).
        match parse_frame::<GenerateResponse>(&event.data) {
            Frame::Parsed(chunk) => {
                let keep_alive = chunk.candidates.is_empty()
                    && chunk.usage_metadata.is_none()
                    && chunk.prompt_feedback.is_none()
                    && chunk.error.is_none();
                self.apply(chunk, out)?;
                Ok(if keep_alive {
                    Progress::KeepAlive
                } else {
                    Progress::More
                })
            }
            Frame::Empty => Ok(Progress::KeepAlive),
            Frame::Malformed(frame) => Ok(Progress::Malformed(frame)),
        }
    }

    /// Collects the bare text; once it is a whole Gemini error object, the stream fails with
    /// that error, its class and message kept.
    fn on_unframed(
        &mut self,
        text: &str,
        _out: &mut VecDeque<StreamEvent>,
    ) -> Result<Progress, ProviderError> {
        self.unframed.push_str(text);
        match error_in_text(&self.unframed) {
            Some(error) => Err(error),
            None => Ok(Progress::KeepAlive),
        }
    }

    fn on_end(
        &mut self,
        error: Option<&reqwest::Error>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<(), ProviderError> {
        if let Some(error) = error_in_text(&self.unframed) {
            return Err(error);
        }
        if self.close(out)? {
            // A finish reason was seen: the answer is complete even if the connection
            // then failed.
            return Ok(());
        }
        let stray = if self.unframed.is_empty() {
            String::new()
        } else {
            format!(
                " ({} bytes outside any event were not a Gemini error)",
                self.unframed.len()
            )
        };
        Err(ProviderError::StreamTruncated {
            message: match error {
                Some(e) => format!(
                    "the connection failed before a finish reason: {}{stray}",
                    error_chain(e)
                ),
                None => format!("the stream ended before a finish reason{stray}"),
            },
        })
    }
}

body_decoder! {
    /// Decodes a Gemini `streamGenerateContent?alt=sse` body held in memory or fed in chunks,
    /// outside a provider call: for replaying recorded streams, proxies and benchmarks.
    ///
    /// ```
    /// use promptkit_providers::StreamEvent;
    /// use promptkit_providers::gemini::GeminiStreamDecoder;
    ///
    /// let mut decoder = GeminiStreamDecoder::new();
    /// let mut events = decoder.feed(
    ///     b"data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n",
    /// )?;
    /// events.extend(decoder.feed(
    ///     b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\"}]}\n\n",
    /// )?);
    /// events.extend(decoder.finish()?);
    /// assert_eq!(events.len(), 3);
    /// assert!(matches!(events[2], StreamEvent::Finish { .. }));
    /// # Ok::<(), promptkit_providers::ProviderError>(())
    /// ```
    GeminiStreamDecoder(ChunkDecoder),
    feed_errors: "The mapped error of an error object inside the stream, or [`ProviderError::ContentFiltered`] for a blocked prompt.",
    finish_errors: "[`ProviderError::StreamTruncated`] when no finish reason was seen, or [`ProviderError::ContentFiltered`] when the answer was blocked before any output.",
}
