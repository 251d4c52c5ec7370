//! A cross-provider conformance suite: the same scenarios against every provider.
//!
//! A [`Target`] pairs a provider with a way to script its answers and failures and to
//! inspect the request it sent, in its vendor's own form. [`HttpTarget`] does that for the
//! HTTP vendors through a [`MockUpstream`] speaking the vendor's [`Wire`] format (OpenAI,
//! OpenAI-compatible, Anthropic, Gemini); other providers (a mock, a custom provider)
//! implement [`Target`] themselves. [`run`] plays every [`Scenario`] and returns a
//! [`Report`]:
//!
//! - plain text (`predict`, with a system prompt), streaming text (several deltas, then at
//!   most one usage event, then exactly one finish);
//! - a tool round trip with two calls in one turn: the calls are streamed with their
//!   arguments split, the results go back in the reverse order, and the final answer comes;
//! - an image input (inline bytes and a URL, checked in the vendor's request form);
//! - JSON-schema output (the vendor's response-format form in the request; the answer
//!   parses);
//! - usage and cost, normalised (input includes cached tokens, output includes reasoning)
//!   and priced with [`pricing`];
//! - every error class: authentication, rate limiting with its retry delay, a used-up
//!   quota, overload, context too long, content filtered, bad request, server error, the
//!   vendor's error inside a stream, a connection that drops mid-stream or mid-body, and a
//!   stream that stalls past the idle timeout.
//!
//! What a target must set up for the checks to hold: no retries (errors surface as they
//! are), an idle timeout of [`IDLE_TIMEOUT`], and prices [`pricing`] for its model.
//!
//! ```no_run
//! use std::sync::Arc;
//! use promptkit_testkit::conformance::{self, HttpTarget, Wire};
//! # fn build(_base_url: &str) -> Arc<dyn promptkit_core::Provider> { unimplemented!() }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let target = HttpTarget::start(Wire::Gemini, build).await?;
//! conformance::run(&target).await.assert_passed();
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    ContentPart, FinishReason, Media, Message, ModelPricing, Provider, ProviderError,
    ProviderRequest, ResponseFormat, StreamAccumulator, StreamEvent, TimeoutPhase, ToolCall,
    ToolDef, ToolResult, encode_base64,
};
use serde_json::{Value, json};

use crate::upstream::{
    MockUpstream, Profile, RecordedRequest, Scripted, SseStep, anthropic, chunks, gemini,
};

/// The idle timeout targets must configure (a stalled stream must fail after it).
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a scripted stall lasts: ten idle timeouts.
pub const STALL: Duration = Duration::from_secs(3);

/// The vendor's message of a [`Failure::MidStreamError`], which the error must keep.
pub const MID_STREAM_MESSAGE: &str = "The model is overloaded right now.";

/// The prices targets must set for their model: 2 USD per million input tokens, 0.5 per
/// million cached input tokens, 8 per million output tokens (reasoning included).
pub fn pricing() -> ModelPricing {
    ModelPricing::new(2.0, 8.0).with_cached_input(0.5)
}

/// A scripted tool call: its id (where the vendor sends ids), tool name and argument JSON
/// text split into the pieces a stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// The call id.
    pub id: String,
    /// The tool.
    pub name: String,
    /// The argument JSON text, in pieces.
    pub arguments: Vec<String>,
}

impl CallSpec {
    /// The whole argument text.
    pub fn arguments_text(&self) -> String {
        self.arguments.concat()
    }
}

/// Token counts in the normalised form of `promptkit_core::Usage`: `input` includes
/// `cached`, `output` includes `reasoning`. Each wire encodes them the vendor's way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSpec {
    /// All prompt tokens.
    pub input: u64,
    /// Prompt tokens read from the cache.
    pub cached: u64,
    /// All generated tokens.
    pub output: u64,
    /// Generated tokens spent on reasoning.
    pub reasoning: u64,
}

/// A vendor-neutral scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The text, in the pieces a stream delivers.
    pub text: Vec<String>,
    /// Tool calls.
    pub calls: Vec<CallSpec>,
    /// The usage.
    pub usage: UsageSpec,
    /// Whether the output token limit cut the answer (else it stopped, or called tools).
    pub max_tokens: bool,
}

impl Answer {
    /// A text answer in these pieces, with a small usage.
    pub fn text(pieces: &[&str]) -> Self {
        Self {
            text: pieces.iter().map(|&p| p.to_owned()).collect(),
            calls: Vec::new(),
            usage: UsageSpec {
                input: 12,
                cached: 0,
                output: 5,
                reasoning: 0,
            },
            max_tokens: false,
        }
    }

    /// The whole text.
    pub fn full_text(&self) -> String {
        self.text.concat()
    }
}

/// A vendor-neutral scripted failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The key is rejected.
    Auth,
    /// Too many requests; the vendor asks to wait this many seconds.
    RateLimited {
        /// The delay the vendor asks for.
        retry_after_secs: u64,
    },
    /// The prompt exceeds the context window.
    ContextTooLong,
    /// The vendor's safety system blocks the request or answer.
    ContentFiltered,
    /// The request is invalid.
    BadRequest,
    /// The vendor fails (HTTP 500).
    Server,
    /// The vendor is overloaded (OpenAI and Gemini 503, Anthropic 529): retryable, and not a
    /// rate limit.
    Overloaded,
    /// The account's quota or credit is used up (OpenAI `insufficient_quota`, a Gemini
    /// per-day quota, a too-low Anthropic credit balance): not retryable.
    QuotaExhausted,
    /// A stream sends one text delta, then the vendor's own error inside the stream (an
    /// OpenAI error chunk, an Anthropic `overloaded_error` event, a bare Gemini error object):
    /// the error keeps the vendor's class and message instead of becoming a truncation.
    MidStreamError,
    /// The connection drops: after one text delta (stream) or mid-body (not streaming).
    Disconnect,
    /// A stream sends one text delta, then nothing for [`STALL`].
    Stall,
}

/// How a vendor reports that its safety system stopped an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSignal {
    /// A [`ProviderError::ContentFiltered`].
    Error,
    /// A normal answer with this finish reason (Anthropic's `refusal`).
    Finish(FinishReason),
}

/// Something the last request must carry, checked in the vendor's own form.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Probe<'a> {
    /// The system prompt.
    System(&'a str),
    /// These tools are declared, in order.
    Tools(&'a [&'a str]),
    /// An image as inline bytes and one by URL.
    Image {
        /// The inline bytes.
        data: &'a [u8],
        /// Their media type.
        mime: &'a str,
        /// The URL.
        url: &'a str,
    },
    /// JSON output with a schema named `name` whose properties include `field`.
    JsonSchema {
        /// The schema's name.
        name: &'a str,
        /// A property of the schema.
        field: &'a str,
    },
    /// The tool results `(call id, tool name, content)`, listed in the order of the calls.
    ToolResults(&'a [(String, String, String)]),
}

/// A provider under test, with its scripting and inspection.
pub trait Target: Send + Sync {
    /// A name for reports.
    fn name(&self) -> &str;
    /// The provider.
    fn provider(&self) -> &dyn Provider;
    /// Queues `answer` for the next call (`streaming` says which kind of call it is).
    fn script(&self, answer: &Answer, streaming: bool);
    /// Queues `failure` for the next call.
    fn fail(&self, failure: Failure, streaming: bool);
    /// Checks the last request carries `probe`.
    ///
    /// # Errors
    ///
    /// What is missing or wrong.
    fn check(&self, probe: Probe<'_>) -> Result<(), String>;
    /// Whether the vendor reports reasoning tokens apart (Anthropic does not).
    fn reports_reasoning_tokens(&self) -> bool {
        true
    }
    /// How the vendor reports a filtered answer.
    fn filter_signal(&self) -> FilterSignal {
        FilterSignal::Error
    }
}

/// The scenarios of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// A non-streamed text answer to a prompt with a system prompt.
    PlainText,
    /// A streamed text answer.
    StreamingText,
    /// Two tool calls in one streamed turn, results sent back, then the final answer.
    ParallelToolRoundTrip,
    /// An image as bytes and by URL.
    ImageInput,
    /// JSON output constrained by a schema.
    JsonSchemaOutput,
    /// Normalised usage and its cost, streamed and not.
    UsageAndCost,
    /// One error class, streamed and not.
    Error(Failure),
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(failure) => write!(f, "error {failure:?}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Every scenario, in the order [`run`] plays them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario::PlainText,
    Scenario::StreamingText,
    Scenario::ParallelToolRoundTrip,
    Scenario::ImageInput,
    Scenario::JsonSchemaOutput,
    Scenario::UsageAndCost,
    Scenario::Error(Failure::Auth),
    Scenario::Error(Failure::RateLimited {
        retry_after_secs: 7,
    }),
    Scenario::Error(Failure::ContextTooLong),
    Scenario::Error(Failure::ContentFiltered),
    Scenario::Error(Failure::BadRequest),
    Scenario::Error(Failure::Server),
    Scenario::Error(Failure::Overloaded),
    Scenario::Error(Failure::QuotaExhausted),
    Scenario::Error(Failure::MidStreamError),
    Scenario::Error(Failure::Disconnect),
    Scenario::Error(Failure::Stall),
];

/// The outcome of [`run`].
#[derive(Debug)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Each scenario with its outcome (`Err` says what failed).
    pub results: Vec<(Scenario, Result<(), String>)>,
}

impl Report {
    /// The scenarios that failed.
    pub fn failures(&self) -> Vec<&(Scenario, Result<(), String>)> {
        self.results.iter().filter(|(_, r)| r.is_err()).collect()
    }

    /// Panics, listing every failure, unless all scenarios passed.
    pub fn assert_passed(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{}: {} of {} conformance scenarios failed:\n{}",
            self.target,
            failures.len(),
            self.results.len(),
            failures
                .iter()
                .map(|(s, r)| format!("  {s}: {}", r.as_ref().err().map_or("", String::as_str)))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Plays every scenario against `target`.
pub async fn run(target: &dyn Target) -> Report {
    let mut results = Vec::with_capacity(SCENARIOS.len());
    for &scenario in SCENARIOS {
        results.push((scenario, run_scenario(target, scenario).await));
    }
    Report {
        target: target.name().to_owned(),
        results,
    }
}

/// Plays one scenario.
///
/// # Errors
///
/// What did not conform.
pub async fn run_scenario(target: &dyn Target, scenario: Scenario) -> Result<(), String> {
    match scenario {
        Scenario::PlainText => plain_text(target).await,
        Scenario::StreamingText => streaming_text(target).await,
        Scenario::ParallelToolRoundTrip => tool_round_trip(target).await,
        Scenario::ImageInput => image_input(target).await,
        Scenario::JsonSchemaOutput => json_schema_output(target).await,
        Scenario::UsageAndCost => usage_and_cost(target).await,
        Scenario::Error(failure) => error_class(target, failure).await,
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// A stream read to its end: the events, and the error that ended it (from the `stream`
/// future itself when `opened` is false).
struct Streamed {
    opened: bool,
    events: Vec<StreamEvent>,
    error: Option<ProviderError>,
}

async fn stream(provider: &dyn Provider, request: &ProviderRequest) -> Streamed {
    let mut stream = match provider.stream(request).await {
        Ok(stream) => stream,
        Err(error) => {
            return Streamed {
                opened: false,
                events: Vec::new(),
                error: Some(error),
            };
        }
    };
    let mut events = Vec::new();
    // Bounded: a well-formed stream ends; a broken one must not hang the suite.
    let read = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => events.push(event),
                Err(error) => return Some(error),
            }
        }
        None
    };
    let error = match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(error) => error,
        Err(_) => Some(ProviderError::Cancelled),
    };
    Streamed {
        opened: true,
        events,
        error,
    }
}

fn fold(events: &[StreamEvent]) -> Message {
    let mut acc = StreamAccumulator::new();
    for event in events {
        acc.push(event);
    }
    acc.finish()
}

/// Checks the stream contract: deltas, then at most one usage, then exactly one finish,
/// last.
fn check_stream_shape(events: &[StreamEvent]) -> Result<(), String> {
    let finishes = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Finish { .. }))
        .count();
    ensure!(
        finishes == 1,
        "{finishes} finish events, expected exactly one"
    );
    ensure!(
        matches!(events.last(), Some(StreamEvent::Finish { .. })),
        "the finish event is not last"
    );
    let usages: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, StreamEvent::Usage { .. }))
        .map(|(i, _)| i)
        .collect();
    ensure!(usages.len() <= 1, "{} usage events", usages.len());
    if let Some(&i) = usages.first() {
        ensure!(
            i + 2 == events.len(),
            "the usage event is not right before the finish"
        );
    }
    Ok(())
}

fn user(text: &str) -> ProviderRequest {
    ProviderRequest::new(vec![Message::user(text)])
}

async fn plain_text(target: &dyn Target) -> Result<(), String> {
    let provider = target.provider();
    target.script(&Answer::text(&["Hello, ", "conformance!"]), false);
    let request = user("Say hello.").with_system("You are a conformance test.");
    let response = provider
        .predict(&request)
        .await
        .map_err(|e| format!("predict failed: {e}"))?;
    ensure!(
        response.text() == "Hello, conformance!",
        "text {:?}",
        response.text()
    );
    ensure!(
        response.finish_reason() == Some(&FinishReason::Stop),
        "finish reason {:?}",
        response.finish_reason()
    );
    ensure!(
        response.served_by.as_deref() == Some(provider.id()),
        "served_by {:?}, expected {:?}",
        response.served_by,
        provider.id()
    );
    ensure!(response.tool_calls().is_empty(), "unexpected tool calls");
    target.check(Probe::System("You are a conformance test."))
}

async fn streaming_text(target: &dyn Target) -> Result<(), String> {
    let pieces = ["The ", "quick ", "brown ", "fox."];
    target.script(&Answer::text(&pieces), true);
    let streamed = stream(target.provider(), &user("Finish the sentence.")).await;
    if let Some(error) = streamed.error {
        return Err(format!("the stream failed: {error}"));
    }
    let deltas = streamed
        .events
        .iter()
        .filter(|e| matches!(e, StreamEvent::TextDelta { .. }))
        .count();
    ensure!(
        deltas >= 2,
        "{deltas} text deltas: the answer did not stream incrementally"
    );
    check_stream_shape(&streamed.events)?;
    let message = fold(&streamed.events);
    ensure!(
        message.text() == pieces.concat(),
        "text {:?}",
        message.text()
    );
    ensure!(
        message.finish_reason == Some(FinishReason::Stop),
        "finish reason {:?}",
        message.finish_reason
    );
    Ok(())
}

fn weather_tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "get_weather",
            "Current weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"], "additionalProperties": false}),
        ),
        ToolDef::new(
            "get_time",
            "Local time in a time zone",
            json!({"type": "object", "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"]}),
        ),
    ]
}

async fn tool_round_trip(target: &dyn Target) -> Result<(), String> {
    let provider = target.provider();
    let question = Message::user("What are the weather and the time in Paris?");
    let calls = vec![
        CallSpec {
            id: "call_weather".into(),
            name: "get_weather".into(),
            arguments: vec!["{\"ci".into(), "ty\":\"Par".into(), "is\"}".into()],
        },
        CallSpec {
            id: "call_time".into(),
            name: "get_time".into(),
            arguments: vec!["{\"timezone\":".into(), "\"Europe/Paris\"}".into()],
        },
    ];
    target.script(
        &Answer {
            text: Vec::new(),
            calls: calls.clone(),
            usage: UsageSpec {
                input: 40,
                cached: 0,
                output: 20,
                reasoning: 0,
            },
            max_tokens: false,
        },
        true,
    );
    let first = ProviderRequest::new(vec![question.clone()]).with_tools(weather_tools());
    let streamed = stream(provider, &first).await;
    if let Some(error) = streamed.error {
        return Err(format!("the first turn failed: {error}"));
    }
    check_stream_shape(&streamed.events)?;
    target.check(Probe::Tools(&["get_weather", "get_time"]))?;
    let assistant = fold(&streamed.events);
    ensure!(
        assistant.finish_reason == Some(FinishReason::ToolCalls),
        "finish reason {:?}, expected tool calls",
        assistant.finish_reason
    );
    let got: Vec<(&str, &Value)> = assistant
        .tool_calls
        .iter()
        .map(|c| (c.name.as_str(), &c.arguments))
        .collect();
    let want = [
        ("get_weather", &json!({"city": "Paris"})),
        ("get_time", &json!({"timezone": "Europe/Paris"})),
    ];
    ensure!(got == want, "tool calls {got:?}, expected {want:?}");
    let ids: Vec<&str> = assistant.tool_calls.iter().map(|c| c.id.as_str()).collect();
    ensure!(
        ids.iter().all(|id| !id.is_empty()) && ids[0] != ids[1],
        "call ids {ids:?} are not distinct"
    );

    // Results go back in the reverse order; the final answer follows.
    let (weather, time): (&ToolCall, &ToolCall) =
        (&assistant.tool_calls[0], &assistant.tool_calls[1]);
    let results = vec![
        (
            weather.id.clone(),
            "get_weather".to_owned(),
            "{\"temp_c\":21}".to_owned(),
        ),
        (time.id.clone(), "get_time".to_owned(), "14:05".to_owned()),
    ];
    let mut messages = vec![question, assistant.clone()];
    for (id, name, content) in results.iter().rev() {
        messages.push(Message::tool(ToolResult::text(id, name, content)));
    }
    let second = ProviderRequest::new(messages).with_tools(weather_tools());
    target.script(
        &Answer::text(&["It is 21°C ", "and 14:05 in Paris."]),
        false,
    );
    let response = provider
        .predict(&second)
        .await
        .map_err(|e| format!("the second turn failed: {e}"))?;
    ensure!(
        response.text() == "It is 21°C and 14:05 in Paris.",
        "final text {:?}",
        response.text()
    );
    ensure!(
        response.finish_reason() == Some(&FinishReason::Stop),
        "final finish reason {:?}",
        response.finish_reason()
    );
    target.check(Probe::ToolResults(&results))
}

/// The smallest PNG header, enough to be recognisable in a request.
const PNG: &[u8] = &[0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
const IMAGE_URL: &str = "https://example.com/cat.jpg";

async fn image_input(target: &dyn Target) -> Result<(), String> {
    target.script(&Answer::text(&["Two ", "cats."]), false);
    let message = Message::user("What is in these images?")
        .with_part(ContentPart::Image(Media::bytes(PNG.to_vec(), "image/png")))
        .with_part(ContentPart::Image(Media::url(IMAGE_URL)));
    let response = target
        .provider()
        .predict(&ProviderRequest::new(vec![message]))
        .await
        .map_err(|e| format!("predict failed: {e}"))?;
    ensure!(response.text() == "Two cats.", "text {:?}", response.text());
    target.check(Probe::Image {
        data: PNG,
        mime: "image/png",
        url: IMAGE_URL,
    })
}

async fn json_schema_output(target: &dyn Target) -> Result<(), String> {
    target.script(
        &Answer::text(&["{\"city\":\"Paris\",", "\"temp_c\":21}"]),
        false,
    );
    let mut request = user("Weather in Paris as JSON.");
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "weather".into(),
        schema: json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
            "required": ["city", "temp_c"]
        }),
        strict: true,
    });
    let response = target
        .provider()
        .predict(&request)
        .await
        .map_err(|e| format!("predict failed: {e}"))?;
    let parsed: Value = serde_json::from_str(&response.text())
        .map_err(|e| format!("the answer is not JSON ({e}): {:?}", response.text()))?;
    ensure!(
        parsed == json!({"city": "Paris", "temp_c": 21}),
        "answer {parsed}"
    );
    target.check(Probe::JsonSchema {
        name: "weather",
        field: "temp_c",
    })
}

/// 1000 uncached input tokens at 2, 200 cached at 0.5, 300 output at 8 (per million).
const EXPECTED_COST: f64 = (1000.0 * 2.0 + 200.0 * 0.5 + 300.0 * 8.0) / 1_000_000.0;

fn close_to(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

async fn usage_and_cost(target: &dyn Target) -> Result<(), String> {
    let provider = target.provider();
    let answer = Answer {
        usage: UsageSpec {
            input: 1200,
            cached: 200,
            output: 300,
            reasoning: 100,
        },
        ..Answer::text(&["Counted."])
    };
    let check = |usage: Option<&promptkit_core::Usage>, how: &str| -> Result<(), String> {
        let usage = usage.ok_or_else(|| format!("{how}: no usage"))?;
        ensure!(
            usage.input_tokens == Some(1200)
                && usage.cached_input_tokens == Some(200)
                && usage.output_tokens == Some(300),
            "{how}: usage {usage:?}, expected 1200 input (200 cached), 300 output"
        );
        if target.reports_reasoning_tokens() {
            ensure!(
                usage.reasoning_tokens == Some(100),
                "{how}: reasoning tokens {:?}, expected 100",
                usage.reasoning_tokens
            );
        }
        let cost = provider
            .cost(provider.model(), usage)
            .ok_or_else(|| format!("{how}: the model {} is not priced", provider.model()))?;
        ensure!(
            close_to(cost.total_usd, EXPECTED_COST),
            "{how}: cost {cost:?}, expected {EXPECTED_COST} USD"
        );
        Ok(())
    };

    target.script(&answer, false);
    let response = provider
        .predict(&user("Count."))
        .await
        .map_err(|e| format!("predict failed: {e}"))?;
    check(response.usage(), "predict")?;
    let cost = response
        .cost()
        .ok_or("predict: the response carries no cost")?;
    ensure!(
        close_to(cost.total_usd, EXPECTED_COST),
        "predict: response cost {cost:?}, expected {EXPECTED_COST} USD"
    );

    target.script(&answer, true);
    let streamed = stream(provider, &user("Count.")).await;
    if let Some(error) = streamed.error {
        return Err(format!("the stream failed: {error}"));
    }
    check_stream_shape(&streamed.events)?;
    check(fold(&streamed.events).usage.as_ref(), "stream")
}

fn error_matches(failure: Failure, error: &ProviderError) -> Result<(), String> {
    let ok = match failure {
        Failure::Auth => matches!(error, ProviderError::Auth { .. }),
        Failure::RateLimited { retry_after_secs } => matches!(
            error,
            ProviderError::RateLimited { retry_after, .. }
                if *retry_after == Some(Duration::from_secs(retry_after_secs))
        ),
        Failure::ContextTooLong => matches!(error, ProviderError::ContextTooLong { .. }),
        Failure::ContentFiltered => matches!(error, ProviderError::ContentFiltered { .. }),
        Failure::BadRequest => matches!(error, ProviderError::BadRequest { status: 400, .. }),
        Failure::Server => matches!(error, ProviderError::Server { status, .. } if *status >= 500),
        Failure::Overloaded => {
            matches!(error, ProviderError::Overloaded { status, .. } if *status >= 503)
                && error.is_retryable()
        }
        Failure::QuotaExhausted => {
            matches!(error, ProviderError::QuotaExhausted { .. }) && !error.is_retryable()
        }
        Failure::MidStreamError => {
            matches!(
                error,
                ProviderError::Overloaded { .. } | ProviderError::Server { .. }
            ) && error.to_string().contains(MID_STREAM_MESSAGE)
        }
        Failure::Disconnect => matches!(
            error,
            ProviderError::StreamTruncated { .. } | ProviderError::Transport { .. }
        ),
        Failure::Stall => matches!(
            error,
            ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                ..
            }
        ),
    };
    ensure!(ok, "got {error:?} ({error})");
    Ok(())
}

async fn error_class(target: &dyn Target, failure: Failure) -> Result<(), String> {
    let provider = target.provider();
    let request = user("Trigger a failure.");
    let filtered_by_finish = match (failure, target.filter_signal()) {
        (Failure::ContentFiltered, FilterSignal::Finish(reason)) => Some(reason),
        _ => None,
    };

    // Not streaming (a stall and an error inside a stream are stream failures only).
    if !matches!(failure, Failure::Stall | Failure::MidStreamError) {
        target.fail(failure, false);
        match (provider.predict(&request).await, &filtered_by_finish) {
            (Ok(response), Some(reason)) => ensure!(
                response.finish_reason() == Some(reason),
                "predict: finish reason {:?}, expected {reason:?}",
                response.finish_reason()
            ),
            (Ok(response), None) => {
                return Err(format!("predict succeeded: {:?}", response.text()));
            }
            (Err(error), _) => {
                if failure == Failure::Disconnect {
                    ensure!(
                        matches!(error, ProviderError::Transport { .. }),
                        "predict: got {error:?}, expected a transport error"
                    );
                }
                error_matches(failure, &error).map_err(|e| format!("predict: {e}"))?;
            }
        }
    }

    // Streaming.
    target.fail(failure, true);
    let streamed = stream(provider, &request).await;
    let deltas = streamed
        .events
        .iter()
        .filter(|e| matches!(e, StreamEvent::TextDelta { .. }))
        .count();
    match (streamed.error, filtered_by_finish) {
        (None, Some(reason)) => {
            check_stream_shape(&streamed.events)?;
            let finish = fold(&streamed.events).finish_reason;
            ensure!(
                finish.as_ref() == Some(&reason),
                "stream: finish reason {finish:?}, expected {reason:?}"
            );
        }
        (None, None) => return Err("stream: ended without an error".to_owned()),
        (Some(error), _) => {
            error_matches(failure, &error).map_err(|e| format!("stream: {e}"))?;
            match failure {
                // Mid-stream failures arrive as stream items after the first delta.
                Failure::Disconnect | Failure::Stall | Failure::MidStreamError => {
                    ensure!(
                        streamed.opened && deltas >= 1,
                        "stream: the failure came before any delta"
                    );
                    ensure!(
                        !streamed
                            .events
                            .iter()
                            .any(|e| matches!(e, StreamEvent::Finish { .. })),
                        "stream: a finish event before the failure"
                    );
                }
                // A vendor may block the prompt in its first chunk.
                Failure::ContentFiltered => {}
                // Error statuses fail the `stream` future itself, before any event.
                _ => ensure!(
                    !streamed.opened,
                    "stream: the error arrived as a stream item, not from `stream`"
                ),
            }
        }
    }
    Ok(())
}

// ---- The HTTP vendors ----

/// A vendor wire format the mock upstream can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wire {
    /// OpenAI Chat Completions.
    OpenAi,
    /// An OpenAI-compatible server (Ollama, vLLM): `data:` without a space, no `id`,
    /// `object` or `created` fields, tool arguments as an object when not streaming.
    OpenAiCompatible,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent` / `streamGenerateContent?alt=sse`.
    Gemini,
}

impl Wire {
    /// The base URL to configure the vendor's provider with.
    pub fn base_url(self, server: &MockUpstream) -> String {
        match self {
            Self::OpenAi | Self::OpenAiCompatible => server.base_url(),
            Self::Anthropic => server.origin(),
            Self::Gemini => server.gemini_base_url(),
        }
    }

    /// `answer` in this wire format.
    pub fn answer(self, answer: &Answer, streaming: bool) -> Scripted {
        match (self, streaming) {
            (Self::OpenAi | Self::OpenAiCompatible, true) => openai_stream(answer, self),
            (Self::OpenAi | Self::OpenAiCompatible, false) => openai_response(answer, self),
            (Self::Anthropic, true) => anthropic_stream(answer),
            (Self::Anthropic, false) => Scripted::json(200, anthropic_response(answer, None)),
            (Self::Gemini, true) => gemini_stream(answer),
            (Self::Gemini, false) => Scripted::json(200, gemini_response(answer)),
        }
    }

    /// `failure` in this wire format.
    pub fn failure(self, failure: Failure, streaming: bool) -> Scripted {
        let partial = Answer::text(&["partial "]);
        match failure {
            Failure::Disconnect if streaming => {
                let mut steps = stream_head(self, &partial, false);
                steps.push(SseStep::Disconnect);
                Scripted::sse(steps)
            }
            Failure::Disconnect => Scripted::sse(vec![
                SseStep::Raw("{\"choices\":[{\"message\":{\"content\":\"par".to_owned()),
                SseStep::Disconnect,
            ]),
            Failure::Stall => {
                let mut steps = stream_head(self, &partial, false);
                steps.push(SseStep::Delay(STALL));
                Scripted::sse(steps)
            }
            Failure::MidStreamError => {
                let mut steps = stream_head(self, &partial, false);
                steps.push(self.mid_stream_error());
                Scripted::sse(steps)
            }
            Failure::ContentFiltered => self.filtered(streaming),
            _ => self.error_response(failure),
        }
    }

    fn error_response(self, failure: Failure) -> Scripted {
        match self {
            Self::OpenAi | Self::OpenAiCompatible => match failure {
                Failure::Auth => Scripted::openai_error(
                    401,
                    "invalid_request_error",
                    "invalid_api_key",
                    "Incorrect API key provided: sk-test.",
                ),
                Failure::RateLimited { retry_after_secs } => Scripted::openai_error(
                    429,
                    "requests",
                    "rate_limit_exceeded",
                    "Rate limit reached for requests",
                )
                .with_header("retry-after", retry_after_secs.to_string()),
                Failure::ContextTooLong => Scripted::openai_error(
                    400,
                    "invalid_request_error",
                    "context_length_exceeded",
                    "This model's maximum context length is 128000 tokens.",
                ),
                Failure::BadRequest => Scripted::openai_error(
                    400,
                    "invalid_request_error",
                    "invalid_value",
                    "Invalid value for 'messages'.",
                ),
                Failure::Overloaded => Scripted::openai_error(
                    503,
                    "server_error",
                    "service_unavailable",
                    "The engine is currently overloaded, please try again later.",
                ),
                Failure::QuotaExhausted => Scripted::openai_error(
                    429,
                    "insufficient_quota",
                    "insufficient_quota",
                    "You exceeded your current quota, please check your plan and billing details.",
                ),
                _ => Scripted::openai_error(
                    500,
                    "server_error",
                    "server_error",
                    "The server had an error while processing your request.",
                ),
            },
            Self::Anthropic => match failure {
                Failure::Auth => {
                    Scripted::anthropic_error(401, "authentication_error", "invalid x-api-key")
                }
                Failure::RateLimited { retry_after_secs } => Scripted::anthropic_error(
                    429,
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                )
                .with_header("retry-after", retry_after_secs.to_string()),
                Failure::ContextTooLong => Scripted::anthropic_error(
                    400,
                    "invalid_request_error",
                    "prompt is too long: 250000 tokens > 200000 maximum",
                ),
                Failure::BadRequest => Scripted::anthropic_error(
                    400,
                    "invalid_request_error",
                    "messages: at least one message is required",
                ),
                Failure::Overloaded => {
                    Scripted::anthropic_error(529, "overloaded_error", "Overloaded")
                }
                Failure::QuotaExhausted => Scripted::anthropic_error(
                    400,
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to \
                     Plans & Billing to upgrade or purchase credits.",
                ),
                _ => Scripted::anthropic_error(500, "api_error", "Internal server error"),
            },
            Self::Gemini => match failure {
                Failure::Auth => Scripted::gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    vec![json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID", "domain": "googleapis.com"})],
                ),
                // The delay travels in the body only: Gemini sends no Retry-After header.
                Failure::RateLimited { retry_after_secs } => Scripted::gemini_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your current quota.",
                    vec![gemini::retry_info(retry_after_secs)],
                ),
                Failure::ContextTooLong => Scripted::gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count (1200000) exceeds the maximum number of tokens \
                     allowed (1048576).",
                    vec![],
                ),
                Failure::BadRequest => Scripted::gemini_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Invalid JSON payload received. Unknown name \"foo\".",
                    vec![],
                ),
                Failure::Overloaded => Scripted::gemini_error(
                    503,
                    "UNAVAILABLE",
                    "The model is overloaded. Please try again later.",
                    vec![],
                ),
                // A per-day quota: the retry delay does not make it a rate limit.
                Failure::QuotaExhausted => Scripted::gemini_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your current quota, please check your plan and billing details.",
                    vec![
                        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{
                                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}),
                        gemini::retry_info(20),
                    ],
                ),
                _ => Scripted::gemini_error(
                    500,
                    "INTERNAL",
                    "An internal error has occurred.",
                    vec![],
                ),
            },
        }
    }

    /// The vendor's own error inside a stream, carrying [`MID_STREAM_MESSAGE`].
    fn mid_stream_error(self) -> SseStep {
        match self {
            Self::OpenAi | Self::OpenAiCompatible => openai_chunk(
                self,
                json!({"error": {"message": MID_STREAM_MESSAGE, "type": "server_error",
                    "code": null}}),
            ),
            Self::Anthropic => {
                anthropic::step(anthropic::error("overloaded_error", MID_STREAM_MESSAGE))
            }
            // Gemini writes the error object bare (not as an SSE event), pretty-printed.
            Self::Gemini => SseStep::Raw(format!(
                "{{\n  \"error\": {{\n    \"code\": 503,\n    \"message\": \"{MID_STREAM_MESSAGE}\",\n    \"status\": \"UNAVAILABLE\"\n  }}\n}}\n"
            )),
        }
    }

    fn filtered(self, streaming: bool) -> Scripted {
        match self {
            // Azure OpenAI's content filter error.
            Self::OpenAi | Self::OpenAiCompatible => Scripted::json(
                400,
                json!({"error": {"message": "The response was filtered due to the prompt \
                    triggering content management policy.", "type": null,
                    "param": "prompt", "code": "content_filter", "status": 400}}),
            ),
            // Anthropic stops with `refusal` (no error).
            Self::Anthropic => {
                let answer = Answer::text(&["I can't help with that."]);
                if streaming {
                    let mut steps = stream_head(self, &answer, true);
                    steps.extend(anthropic_tail(&answer, "refusal"));
                    Scripted::sse(steps)
                } else {
                    Scripted::json(200, anthropic_response(&answer, Some("refusal")))
                }
            }
            Self::Gemini => {
                if streaming {
                    Scripted::sse(vec![SseStep::Json(gemini::blocked("SAFETY"))])
                } else {
                    Scripted::json(200, gemini::blocked("SAFETY"))
                }
            }
        }
    }

    fn reports_reasoning_tokens(self) -> bool {
        !matches!(self, Self::Anthropic)
    }

    fn filter_signal(self) -> FilterSignal {
        match self {
            Self::Anthropic => FilterSignal::Finish(FinishReason::Refusal),
            _ => FilterSignal::Error,
        }
    }

    fn check(self, request: &RecordedRequest, probe: Probe<'_>) -> Result<(), String> {
        let body = &request.body;
        match self {
            Self::OpenAi | Self::OpenAiCompatible => check_openai(body, probe),
            Self::Anthropic => check_anthropic(body, probe),
            Self::Gemini => check_gemini(body, probe),
        }
    }
}

// -- Encoding answers --

fn openai_chunk(wire: Wire, mut chunk: Value) -> SseStep {
    if wire == Wire::OpenAiCompatible {
        if let Value::Object(map) = &mut chunk {
            for key in ["id", "object", "created"] {
                map.remove(key);
            }
        }
        return SseStep::Raw(format!("data:{chunk}\n\n"));
    }
    SseStep::Json(chunk)
}

fn openai_stream(answer: &Answer, wire: Wire) -> Scripted {
    let mut steps = stream_head(wire, answer, true);
    for (index, call) in (0u32..).zip(&answer.calls) {
        let (first, rest) = call
            .arguments
            .split_first()
            .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
        steps.push(openai_chunk(
            wire,
            chunks::tool_start(index, &call.id, &call.name, first),
        ));
        for piece in rest {
            steps.push(openai_chunk(wire, chunks::tool_args(index, piece)));
        }
    }
    let finish = if !answer.calls.is_empty() {
        "tool_calls"
    } else if answer.max_tokens {
        "length"
    } else {
        "stop"
    };
    steps.push(openai_chunk(wire, chunks::finish(finish)));
    let u = answer.usage;
    steps.push(openai_chunk(
        wire,
        chunks::usage(u.input, u.output, u.cached, u.reasoning),
    ));
    steps.push(SseStep::Done);
    Scripted::sse(steps)
}

fn openai_response(answer: &Answer, wire: Wire) -> Scripted {
    let text = answer.full_text();
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() { Value::Null } else { text.into() }});
    if !answer.calls.is_empty() {
        let calls: Vec<Value> = answer
            .calls
            .iter()
            .map(|c| {
                let arguments = if wire == Wire::OpenAiCompatible {
                    serde_json::from_str(&c.arguments_text()).unwrap_or(Value::Null)
                } else {
                    c.arguments_text().into()
                };
                json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": arguments}})
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = if !answer.calls.is_empty() {
        "tool_calls"
    } else if answer.max_tokens {
        "length"
    } else {
        "stop"
    };
    let u = answer.usage;
    let usage = chunks::usage(u.input, u.output, u.cached, u.reasoning)["usage"].clone();
    let mut body = json!({"id": "chatcmpl-test", "object": "chat.completion", "created": 0,
        "model": "mock-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage});
    if wire == Wire::OpenAiCompatible
        && let Value::Object(map) = &mut body
    {
        for key in ["id", "object", "created"] {
            map.remove(key);
        }
    }
    Scripted::json(200, body)
}

/// The start of a stream up to and including its text deltas (an Anthropic text block is
/// left open unless `close` is set: a failure may follow its last delta).
fn stream_head(wire: Wire, answer: &Answer, close: bool) -> Vec<SseStep> {
    match wire {
        Wire::OpenAi | Wire::OpenAiCompatible => answer
            .text
            .iter()
            .map(|t| openai_chunk(wire, chunks::text(t)))
            .collect(),
        Wire::Anthropic => {
            let u = answer.usage;
            let mut steps = vec![anthropic::step(anthropic::message_start(
                u.input - u.cached,
                u.cached,
                0,
            ))];
            if !answer.text.is_empty() {
                let pieces: Vec<&str> = answer.text.iter().map(String::as_str).collect();
                let mut block = anthropic::text_block(0, &pieces);
                if !close {
                    block.pop();
                }
                steps.extend(block);
            }
            steps
        }
        Wire::Gemini => answer
            .text
            .iter()
            .map(|t| SseStep::Json(gemini::chunk(vec![gemini::text(t)])))
            .collect(),
    }
}

fn anthropic_tail(answer: &Answer, stop_reason: &str) -> Vec<SseStep> {
    let offset = u32::from(!answer.text.is_empty());
    let mut steps = Vec::new();
    for (i, call) in (0u32..).zip(&answer.calls) {
        let pieces: Vec<&str> = call.arguments.iter().map(String::as_str).collect();
        steps.extend(anthropic::tool_use_block(
            i + offset,
            &call.id,
            &call.name,
            &pieces,
        ));
    }
    steps.push(anthropic::step(anthropic::message_delta(
        stop_reason,
        answer.usage.output,
    )));
    steps.push(anthropic::step(anthropic::message_stop()));
    steps
}

fn anthropic_stop_reason(answer: &Answer) -> &'static str {
    if !answer.calls.is_empty() {
        "tool_use"
    } else if answer.max_tokens {
        "max_tokens"
    } else {
        "end_turn"
    }
}

fn anthropic_stream(answer: &Answer) -> Scripted {
    let mut steps = stream_head(Wire::Anthropic, answer, true);
    steps.extend(anthropic_tail(answer, anthropic_stop_reason(answer)));
    Scripted::sse(steps)
}

fn anthropic_response(answer: &Answer, stop_reason: Option<&str>) -> Value {
    let mut content = Vec::new();
    let text = answer.full_text();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in &answer.calls {
        let input: Value = serde_json::from_str(&call.arguments_text()).unwrap_or(json!({}));
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
    }
    let u = answer.usage;
    let mut message = anthropic::message(
        Value::Array(content),
        stop_reason.unwrap_or_else(|| anthropic_stop_reason(answer)),
        u.input - u.cached,
        u.output,
    );
    message["usage"]["cache_read_input_tokens"] = u.cached.into();
    message
}

fn gemini_parts_and_finish(answer: &Answer) -> (Vec<Value>, &'static str, Value) {
    let calls = answer
        .calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.arguments_text()).unwrap_or(json!({}));
            gemini::function_call(&c.name, args)
        })
        .collect();
    // Gemini reports STOP for function calls too.
    let finish = if answer.max_tokens {
        "MAX_TOKENS"
    } else {
        "STOP"
    };
    let u = answer.usage;
    let usage = gemini::usage(u.input, u.output - u.reasoning, u.cached, u.reasoning);
    (calls, finish, usage)
}

fn gemini_stream(answer: &Answer) -> Scripted {
    let mut steps = stream_head(Wire::Gemini, answer, true);
    let (calls, finish, usage) = gemini_parts_and_finish(answer);
    steps.push(SseStep::Json(gemini::last_chunk(calls, finish, usage)));
    Scripted::sse(steps)
}

fn gemini_response(answer: &Answer) -> Value {
    let (calls, finish, usage) = gemini_parts_and_finish(answer);
    let text = answer.full_text();
    let mut parts = Vec::new();
    if !text.is_empty() {
        parts.push(gemini::text(&text));
    }
    parts.extend(calls);
    gemini::response(parts, finish, usage)
}

// -- Checking requests --

fn get<'a>(value: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    value
        .pointer(pointer)
        .ok_or_else(|| format!("the request has no {pointer}"))
}

/// The items of the array at `pointer`, each replaced by the items of its own array `inner`
/// (`messages` → their `content` blocks, `contents` → their `parts`).
fn nested<'a>(body: &'a Value, pointer: &str, inner: &str) -> Result<Vec<&'a Value>, String> {
    Ok(get(body, pointer)?
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|item| item[inner].as_array().into_iter().flatten())
        .collect())
}

/// Checks the tool names at `name` (a pointer) in each entry of the array at `pointer`.
fn check_names(body: &Value, pointer: &str, name: &str, want: &[&str]) -> Result<(), String> {
    let got: Vec<&str> = get(body, pointer)?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.pointer(name).and_then(Value::as_str))
        .collect();
    ensure!(got == want, "tools at {pointer}: {got:?}");
    Ok(())
}

fn check_openai(body: &Value, probe: Probe<'_>) -> Result<(), String> {
    let messages = get(body, "/messages")?
        .as_array()
        .cloned()
        .unwrap_or_default();
    match probe {
        Probe::System(text) => {
            let first = messages.first().cloned().unwrap_or_default();
            ensure!(
                first == json!({"role": "system", "content": text}),
                "first message {first}"
            );
        }
        Probe::Tools(names) => {
            check_names(body, "/tools", "/function/name", names)?;
        }
        Probe::Image { data, mime, url } => {
            let urls: Vec<&str> = messages
                .iter()
                .flat_map(|m| m["content"].as_array().into_iter().flatten())
                .filter(|p| p["type"] == "image_url")
                .filter_map(|p| p.pointer("/image_url/url").and_then(Value::as_str))
                .collect();
            let inline = format!("data:{mime};base64,{}", encode_base64(data));
            ensure!(
                urls == [inline.as_str(), url],
                "image_url parts {urls:?}, expected a data URL and {url}"
            );
        }
        Probe::JsonSchema { name, field } => {
            let format = get(body, "/response_format")?;
            ensure!(
                format["type"] == "json_schema"
                    && format["json_schema"]["name"] == name
                    && format["json_schema"]["schema"]["properties"]
                        .get(field)
                        .is_some(),
                "response_format {format}"
            );
        }
        Probe::ToolResults(results) => {
            let calls: Vec<&str> = messages
                .iter()
                .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
                .filter_map(|c| c["id"].as_str())
                .collect();
            for (id, _, content) in results {
                ensure!(calls.contains(&id.as_str()), "no assistant tool call {id}");
                ensure!(
                    messages.iter().any(|m| m["role"] == "tool"
                        && m["tool_call_id"] == id.as_str()
                        && m["content"] == content.as_str()),
                    "no tool message for {id} with {content:?}"
                );
            }
        }
    }
    Ok(())
}

fn check_anthropic(body: &Value, probe: Probe<'_>) -> Result<(), String> {
    let blocks = nested(body, "/messages", "content")?;
    match probe {
        Probe::System(text) => ensure!(body["system"] == text, "system {}", body["system"]),
        Probe::Tools(names) => {
            check_names(body, "/tools", "/name", names)?;
        }
        Probe::Image { data, mime, url } => {
            let sources: Vec<&Value> = blocks
                .iter()
                .filter(|b| b["type"] == "image")
                .map(|b| &b["source"])
                .collect();
            let want = [
                json!({"type": "base64", "media_type": mime, "data": encode_base64(data)}),
                json!({"type": "url", "url": url}),
            ];
            ensure!(
                sources.len() == 2 && *sources[0] == want[0] && *sources[1] == want[1],
                "image sources {sources:?}"
            );
        }
        Probe::JsonSchema { field, .. } => {
            let format = get(body, "/output_config/format")?;
            ensure!(
                format["type"] == "json_schema"
                    && format["schema"]["properties"].get(field).is_some(),
                "output_config.format {format}"
            );
        }
        Probe::ToolResults(results) => {
            for (id, _, content) in results {
                ensure!(
                    blocks
                        .iter()
                        .any(|b| b["type"] == "tool_use" && b["id"] == id.as_str()),
                    "no tool_use block {id}"
                );
                ensure!(
                    blocks.iter().any(|b| b["type"] == "tool_result"
                        && b["tool_use_id"] == id.as_str()
                        && b["content"] == content.as_str()),
                    "no tool_result block for {id} with {content:?}"
                );
            }
        }
    }
    Ok(())
}

fn check_gemini(body: &Value, probe: Probe<'_>) -> Result<(), String> {
    let parts = nested(body, "/contents", "parts")?;
    match probe {
        Probe::System(text) => {
            let system = get(body, "/systemInstruction/parts/0/text")?;
            ensure!(system == text, "systemInstruction {system}");
        }
        Probe::Tools(names) => {
            check_names(body, "/tools/0/functionDeclarations", "/name", names)?;
        }
        Probe::Image { data, mime, url } => {
            let inline = json!({"inlineData": {"mimeType": mime, "data": encode_base64(data)}});
            ensure!(parts.contains(&&inline), "no inlineData part {inline}");
            ensure!(
                parts
                    .iter()
                    .any(|p| p.pointer("/fileData/fileUri") == Some(&json!(url))
                        && p.pointer("/fileData/mimeType").is_some()),
                "no fileData part for {url}"
            );
        }
        Probe::JsonSchema { field, .. } => {
            let config = get(body, "/generationConfig")?;
            let schema = &config["responseSchema"];
            ensure!(
                config["responseMimeType"] == "application/json"
                    && schema["properties"].get(field).is_some(),
                "generationConfig {config}"
            );
            ensure!(
                schema.get("additionalProperties").is_none() && schema.get("$schema").is_none(),
                "responseSchema is not sanitised: {schema}"
            );
        }
        Probe::ToolResults(results) => {
            let calls: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.pointer("/functionCall/name").and_then(Value::as_str))
                .collect();
            let names: Vec<&str> = results.iter().map(|(_, n, _)| n.as_str()).collect();
            ensure!(calls == names, "functionCall parts {calls:?}");
            let responses: Vec<&Value> = parts
                .iter()
                .filter_map(|p| p.get("functionResponse"))
                .collect();
            ensure!(
                responses.len() == results.len(),
                "{} functionResponse parts",
                responses.len()
            );
            // Gemini pairs by position: the responses must follow the calls' order.
            for ((_, name, content), response) in results.iter().zip(responses) {
                let want = match serde_json::from_str::<Value>(content) {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({"output": content}),
                };
                ensure!(
                    response["name"] == name.as_str() && response["response"] == want,
                    "functionResponse {response}, expected {name} with {want}"
                );
            }
        }
    }
    Ok(())
}

/// An HTTP provider against a [`MockUpstream`] speaking its [`Wire`] format.
pub struct HttpTarget {
    name: String,
    wire: Wire,
    server: MockUpstream,
    provider: Arc<dyn Provider>,
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("name", &self.name)
            .field("wire", &self.wire)
            .field("server", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl HttpTarget {
    /// Starts a mock upstream and builds the provider with `build`, which receives the base
    /// URL to configure ([`Wire::base_url`]).
    ///
    /// # Errors
    ///
    /// When the server cannot be started.
    pub async fn start(
        wire: Wire,
        build: impl FnOnce(&str) -> Arc<dyn Provider>,
    ) -> io::Result<Self> {
        let server = MockUpstream::start(Profile::INSTANT).await?;
        let provider = build(&wire.base_url(&server));
        Ok(Self {
            name: format!("{wire:?} ({})", provider.id()),
            wire,
            server,
            provider,
        })
    }

    /// The mock upstream.
    pub fn server(&self) -> &MockUpstream {
        &self.server
    }
}

impl Target for HttpTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &dyn Provider {
        self.provider.as_ref()
    }

    fn script(&self, answer: &Answer, streaming: bool) {
        self.server.push(self.wire.answer(answer, streaming));
    }

    fn fail(&self, failure: Failure, streaming: bool) {
        self.server.push(self.wire.failure(failure, streaming));
    }

    fn check(&self, probe: Probe<'_>) -> Result<(), String> {
        let requests = self.server.requests();
        let last = requests.last().ok_or("the server received no request")?;
        self.wire.check(last, probe)
    }

    fn reports_reasoning_tokens(&self) -> bool {
        self.wire.reports_reasoning_tokens()
    }

    fn filter_signal(&self) -> FilterSignal {
        self.wire.filter_signal()
    }
}
