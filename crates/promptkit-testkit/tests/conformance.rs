//! The conformance suite fails providers that do not conform: every scenario can fail.

use std::time::Duration;

use futures_util::stream;
use promptkit_core::{
    BoxFuture, EventStream, FinishReason, Message, Provider, ProviderError, ProviderRequest,
    ProviderResponse, StreamEvent,
};
use promptkit_testkit::conformance::{
    self, Answer, Failure, HttpTarget, Probe, SCENARIOS, Target, Wire,
};

/// A provider that ignores its script and always answers "nope", without usage.
#[derive(Debug)]
struct Stubborn;

impl Provider for Stubborn {
    fn id(&self) -> &str {
        "stubborn"
    }

    fn model(&self) -> &str {
        "stubborn-1"
    }

    fn predict<'a>(
        &'a self,
        _request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async {
            let mut message = Message::assistant("nope");
            message.finish_reason = Some(FinishReason::Stop);
            Ok(ProviderResponse {
                message,
                model: None,
                served_by: None,
                latency: Duration::ZERO,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        _request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async {
            let events = vec![
                Ok(StreamEvent::TextDelta {
                    text: "nope".into(),
                }),
                Ok(StreamEvent::Finish {
                    reason: FinishReason::Stop,
                }),
            ];
            let stream: EventStream = Box::pin(stream::iter(events));
            Ok(stream)
        })
    }
}

/// Scripts nothing and accepts every probe: only the provider's behaviour is judged.
struct Lenient;

impl Target for Lenient {
    fn name(&self) -> &str {
        "stubborn"
    }

    fn provider(&self) -> &dyn Provider {
        &Stubborn
    }

    fn script(&self, _answer: &Answer, _streaming: bool) {}

    fn fail(&self, _failure: Failure, _streaming: bool) {}

    fn check(&self, _probe: Probe<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test]
async fn every_scenario_fails_a_provider_that_ignores_the_script() {
    let report = conformance::run(&Lenient).await;
    assert_eq!(report.results.len(), SCENARIOS.len());
    let passed: Vec<String> = report
        .results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(s, _)| s.to_string())
        .collect();
    assert!(
        passed.is_empty(),
        "scenarios passed a broken provider: {passed:?}"
    );
    let outcome = std::panic::catch_unwind(|| report.assert_passed());
    assert!(outcome.is_err(), "assert_passed accepted failures");
}

#[tokio::test]
async fn request_checks_fail_when_the_request_lacks_what_is_probed() -> std::io::Result<()> {
    for wire in [
        Wire::OpenAi,
        Wire::OpenAiCompatible,
        Wire::Anthropic,
        Wire::Gemini,
    ] {
        let target = HttpTarget::start(wire, |_| std::sync::Arc::new(Stubborn)).await?;
        // No request yet.
        assert!(target.check(Probe::System("x")).is_err());
        // A request that carries none of it.
        post_minimal_request(&target, wire).await?;
        let probes = [
            Probe::System("You are a conformance test."),
            Probe::Tools(&["get_weather"]),
            Probe::Image {
                data: b"png",
                mime: "image/png",
                url: "https://example.com/cat.jpg",
            },
            Probe::JsonSchema {
                name: "weather",
                field: "temp_c",
            },
            Probe::ToolResults(&[("call_1".into(), "get_weather".into(), "21".into())]),
        ];
        for probe in probes {
            assert!(
                target.check(probe).is_err(),
                "{wire:?}: {probe:?} passed an empty request"
            );
        }
    }
    Ok(())
}

/// Sends a minimal JSON request for `wire` to the target's server with a bare TCP client.
async fn post_minimal_request(target: &HttpTarget, wire: Wire) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = match wire {
        Wire::Gemini => r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
        _ => r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    };
    let path = match wire {
        Wire::Gemini => "/v1beta/models/m:generateContent",
        Wire::Anthropic => "/v1/messages",
        _ => "/v1/chat/completions",
    };
    let mut socket = tokio::net::TcpStream::connect(target.server().addr()).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    Ok(())
}
