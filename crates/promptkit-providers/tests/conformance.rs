//! The cross-provider conformance suite (`promptkit_testkit::conformance`) against every
//! provider: OpenAI, OpenAI-compatible, Anthropic and Gemini against the test kit's mock
//! upstream speaking each wire format, and the mock provider with scripted turns.
#![cfg(all(
    feature = "openai-compatible",
    feature = "anthropic",
    feature = "gemini",
    feature = "mock"
))]

use std::sync::Arc;
use std::time::Duration;

use promptkit_core::{
    ContentPart, MediaSource, PricingTable, Provider, ProviderError, ProviderRequest,
    ResponseFormat, TimeoutPhase, ToolCall, Usage,
};
use promptkit_providers::anthropic::{AnthropicConfig, AnthropicProvider};
use promptkit_providers::gemini::{GeminiConfig, GeminiProvider};
use promptkit_providers::http::{HttpConfig, RetryPolicy};
use promptkit_providers::mock::{MockProvider, MockTurn};
use promptkit_providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit_testkit::conformance::{
    self, Answer, Failure, HttpTarget, IDLE_TIMEOUT, Probe, Target, Wire,
};

/// What the suite asks of a target: no retries, its idle timeout, its prices.
fn http() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        idle_timeout: IDLE_TIMEOUT,
        max_concurrency: None,
        retry: RetryPolicy::none(),
        ..HttpConfig::default()
    }
}

fn prices(model: &str) -> PricingTable {
    PricingTable::new().with(model, conformance::pricing())
}

#[tokio::test]
async fn openai() -> anyhow::Result<()> {
    let target = HttpTarget::start(Wire::OpenAi, |base| {
        let config = OpenAiConfig::openai("conformance-gpt", "sk-test")
            .with_base_url(base)
            .with_http(http())
            .with_pricing(prices("conformance-gpt"));
        Arc::new(OpenAiProvider::new(config).expect("provider"))
    })
    .await?;
    conformance::run(&target).await.assert_passed();
    Ok(())
}

#[tokio::test]
async fn openai_compatible() -> anyhow::Result<()> {
    let target = HttpTarget::start(Wire::OpenAiCompatible, |base| {
        let config = OpenAiConfig::compatible(base, "llama3.1")
            .with_http(http())
            .with_pricing(prices("llama3.1"));
        Arc::new(OpenAiProvider::new(config).expect("provider"))
    })
    .await?;
    conformance::run(&target).await.assert_passed();
    Ok(())
}

#[tokio::test]
async fn anthropic() -> anyhow::Result<()> {
    let target = HttpTarget::start(Wire::Anthropic, |base| {
        let config = AnthropicConfig::new("conformance-claude", "sk-ant-test")
            .with_base_url(base)
            .with_http(http())
            .with_pricing(prices("conformance-claude"));
        Arc::new(AnthropicProvider::new(config).expect("provider"))
    })
    .await?;
    conformance::run(&target).await.assert_passed();
    Ok(())
}

#[tokio::test]
async fn gemini() -> anyhow::Result<()> {
    let target = HttpTarget::start(Wire::Gemini, |base| {
        let config = GeminiConfig::new("conformance-gemini", "test-key")
            .with_base_url(base)
            .with_http(http())
            .with_pricing(prices("conformance-gemini"));
        Arc::new(GeminiProvider::new(config).expect("provider"))
    })
    .await?;
    conformance::run(&target).await.assert_passed();
    Ok(())
}

/// The mock provider: answers become scripted turns, failures scripted errors, and its
/// "wire form" is the request it records.
struct MockTarget {
    provider: MockProvider,
}

impl MockTarget {
    fn last(&self) -> Result<ProviderRequest, String> {
        self.provider
            .requests()
            .pop()
            .ok_or_else(|| "no request".to_owned())
    }
}

fn error_for(failure: Failure) -> ProviderError {
    match failure {
        Failure::Auth => ProviderError::Auth {
            message: "scripted".into(),
        },
        Failure::RateLimited { retry_after_secs } => ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(retry_after_secs)),
            message: "scripted".into(),
        },
        Failure::ContextTooLong => ProviderError::ContextTooLong {
            message: "scripted".into(),
        },
        Failure::ContentFiltered => ProviderError::ContentFiltered {
            message: "scripted".into(),
        },
        Failure::BadRequest => ProviderError::BadRequest {
            status: 400,
            message: "scripted".into(),
        },
        Failure::Server => ProviderError::Server {
            status: 500,
            message: "scripted".into(),
        },
        Failure::Overloaded => ProviderError::Overloaded {
            status: 503,
            retry_after: None,
            message: "scripted".into(),
        },
        Failure::QuotaExhausted => ProviderError::QuotaExhausted {
            message: "scripted".into(),
        },
        Failure::MidStreamError => ProviderError::Overloaded {
            status: 529,
            retry_after: None,
            message: conformance::MID_STREAM_MESSAGE.into(),
        },
        Failure::Disconnect => ProviderError::Transport {
            message: "scripted".into(),
            source: None,
        },
        Failure::Stall => ProviderError::Timeout {
            phase: TimeoutPhase::Idle,
            after: IDLE_TIMEOUT,
        },
        other => panic!("no scripted error for {other:?}"),
    }
}

impl Target for MockTarget {
    fn name(&self) -> &str {
        "mock"
    }

    fn provider(&self) -> &dyn Provider {
        &self.provider
    }

    fn script(&self, answer: &Answer, _streaming: bool) {
        let first = answer.text.first().map_or(1, |t| t.chars().count());
        let mut turn = MockTurn::text(answer.full_text())
            .with_chunk_size(first)
            .with_usage(Usage {
                input_tokens: Some(answer.usage.input),
                cached_input_tokens: Some(answer.usage.cached),
                output_tokens: Some(answer.usage.output),
                reasoning_tokens: Some(answer.usage.reasoning),
                ..Usage::default()
            });
        for call in &answer.calls {
            turn = turn.with_tool_call(ToolCall::from_raw_arguments(
                call.id.clone(),
                call.name.clone(),
                &call.arguments_text(),
            ));
        }
        self.provider.push_turn(turn);
    }

    fn fail(&self, failure: Failure, streaming: bool) {
        let turn = match failure {
            // Mid-stream failures come after a delta, like on the wire.
            Failure::Disconnect if streaming => {
                MockTurn::text("partial ").with_stream_error(ProviderError::StreamTruncated {
                    message: "scripted".into(),
                })
            }
            Failure::Stall | Failure::MidStreamError => {
                MockTurn::text("partial ").with_stream_error(error_for(failure))
            }
            other => MockTurn::error(error_for(other)),
        };
        self.provider.push_turn(turn);
    }

    fn check(&self, probe: Probe<'_>) -> Result<(), String> {
        let request = self.last()?;
        let ok = match probe {
            Probe::System(text) => request.system.as_deref() == Some(text),
            Probe::Tools(names) => request
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .eq(names.iter().copied()),
            Probe::Image { data, url, .. } => {
                let media: Vec<&MediaSource> = request
                    .messages
                    .iter()
                    .flat_map(|m| &m.content)
                    .filter_map(|p| match p {
                        ContentPart::Image(m) => Some(&m.source),
                        _ => None,
                    })
                    .collect();
                matches!(media.as_slice(),
                    [MediaSource::Data(d), MediaSource::Url(u)] if d.as_ref() == data && u == url)
            }
            Probe::JsonSchema { name, field } => matches!(&request.response_format,
                Some(ResponseFormat::JsonSchema { name: n, schema, .. })
                    if n == name && schema["properties"].get(field).is_some()),
            Probe::ToolResults(results) => results.iter().all(|(id, name, content)| {
                request.messages.iter().any(|m| {
                    m.tool_result.as_ref().is_some_and(|r| {
                        r.call_id == *id && r.name == *name && r.text_content() == *content
                    })
                })
            }),
            other => return Err(format!("unknown probe {other:?}")),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("the request does not carry {probe:?}"))
        }
    }
}

#[tokio::test]
async fn mock() {
    let target = MockTarget {
        provider: MockProvider::new("mock", "conformance-mock")
            .with_pricing(prices("conformance-mock")),
    };
    conformance::run(&target).await.assert_passed();
}
