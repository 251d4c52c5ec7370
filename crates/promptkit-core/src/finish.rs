//! Why a model stopped generating, normalised across vendors.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why generation stopped.
///
/// Each vendor's raw value maps to one of the canonical cases (see the `from_*`
/// constructors); a value no mapping knows is kept verbatim in [`FinishReason::Other`], so
/// nothing is lost and new vendor values never fail a response.
///
/// Serialised as a lowercase string: `"stop"`, `"max_tokens"`, `"tool_calls"`,
/// `"content_filter"`, `"refusal"`, `"cancelled"`, `"error"`, or the raw text of `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FinishReason {
    /// The model finished its answer (or hit a stop sequence).
    Stop,
    /// The output token limit was reached; the answer is cut off.
    MaxTokens,
    /// The model asked for tool calls.
    ToolCalls,
    /// A safety or content filter stopped generation.
    ContentFilter,
    /// The model refused, or produced a malformed tool call it could not complete.
    Refusal,
    /// The caller cancelled (or a person interrupted) the response.
    Cancelled,
    /// The provider reported an error mid-response.
    Error,
    /// A value none of the mappings knows, kept verbatim.
    Other(String),
}

impl FinishReason {
    /// The canonical string (or the raw text of [`FinishReason::Other`]).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stop => "stop",
            Self::MaxTokens => "max_tokens",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::Refusal => "refusal",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
            Self::Other(raw) => raw,
        }
    }

    /// Parses a canonical string; anything else becomes [`FinishReason::Other`].
    pub fn parse(value: &str) -> Self {
        match value {
            "stop" => Self::Stop,
            "max_tokens" => Self::MaxTokens,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "refusal" => Self::Refusal,
            "cancelled" => Self::Cancelled,
            "error" => Self::Error,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Maps an OpenAI Chat Completions / Responses, vLLM or Ollama `finish_reason` (also the
    /// realtime `response.status` values).
    pub fn from_openai(raw: &str) -> Self {
        match raw {
            "stop" | "eos_token" | "eos" | "completed" | "end_turn" => Self::Stop,
            "length" | "max_tokens" | "max_output_tokens" | "incomplete" => Self::MaxTokens,
            "tool_calls" | "function_call" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "refusal" => Self::Refusal,
            "cancelled" | "canceled" => Self::Cancelled,
            "failed" | "error" => Self::Error,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Maps an Anthropic Messages `stop_reason`.
    pub fn from_anthropic(raw: &str) -> Self {
        match raw {
            "end_turn" | "stop_sequence" | "pause_turn" => Self::Stop,
            "max_tokens" | "model_context_window_exceeded" => Self::MaxTokens,
            "tool_use" => Self::ToolCalls,
            "refusal" => Self::Refusal,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Maps a Gemini `finishReason`. Gemini reports `STOP` also when it returns function
    /// calls; the Gemini provider corrects that to [`FinishReason::ToolCalls`] when the
    /// response carries calls.
    pub fn from_gemini(raw: &str) -> Self {
        match raw {
            "STOP" => Self::Stop,
            "MAX_TOKENS" => Self::MaxTokens,
            "SAFETY" | "RECITATION" | "PROHIBITED_CONTENT" | "SPII" | "BLOCKLIST"
            | "IMAGE_SAFETY" => Self::ContentFilter,
            "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => Self::Refusal,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::parse(&raw))
    }
}
