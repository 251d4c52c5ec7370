//! Keys never leave for another host, and credentials never reach error text or logs (the
//! reliability review's tests 27 and 28), for every HTTP vendor; and error chains name each
//! cause once.
#![cfg(all(feature = "openai", feature = "anthropic", feature = "gemini"))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use promptkit_core::{Message, Provider, ProviderError, ProviderRequest};
use promptkit_providers::anthropic::{AnthropicConfig, AnthropicProvider};
use promptkit_providers::gemini::{GeminiConfig, GeminiProvider};
use promptkit_providers::http::{HttpConfig, RetryPolicy};
use promptkit_providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit_testkit::conformance::{Answer, Wire};
use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted};
use serde_json::json;

const WIRES: [Wire; 4] = [
    Wire::OpenAi,
    Wire::OpenAiCompatible,
    Wire::Anthropic,
    Wire::Gemini,
];

const KEY: &str = "key-secret-123";

/// The key header each wire sends.
fn key_header(wire: Wire) -> &'static str {
    match wire {
        Wire::Anthropic => "x-api-key",
        Wire::Gemini => "x-goog-api-key",
        _ => "authorization",
    }
}

fn http() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        first_event_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 2,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_elapsed: Duration::from_secs(5),
        },
        ..HttpConfig::default()
    }
}

fn build(wire: Wire, base: String) -> Arc<dyn Provider> {
    match wire {
        Wire::Anthropic => Arc::new(
            AnthropicProvider::new(
                AnthropicConfig::new("claude-sonnet-4-5", KEY)
                    .with_base_url(base)
                    .with_http(http()),
            )
            .expect("provider"),
        ),
        Wire::Gemini => Arc::new(
            GeminiProvider::new(
                GeminiConfig::new("gemini-2.5-flash", KEY)
                    .with_base_url(base)
                    .with_http(http()),
            )
            .expect("provider"),
        ),
        Wire::OpenAiCompatible => Arc::new(
            OpenAiProvider::new(
                OpenAiConfig::compatible(base, "llama3")
                    .with_api_key(Some(KEY.to_owned()))
                    .with_http(http()),
            )
            .expect("provider"),
        ),
        _ => Arc::new(
            OpenAiProvider::new(
                OpenAiConfig::openai("gpt-4o", KEY)
                    .with_base_url(base)
                    .with_http(http()),
            )
            .expect("provider"),
        ),
    }
}

fn request() -> ProviderRequest {
    ProviderRequest::new(vec![Message::user("hello?")])
}

/// The upstream answers 307 to another host (a second local server): the redirect is not
/// followed, so the second host never sees the key, and the call fails with a configuration
/// error that says why.
#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() -> anyhow::Result<()> {
    for wire in WIRES {
        let first = MockUpstream::start(Profile::INSTANT).await?;
        let elsewhere = MockUpstream::start(Profile::INSTANT).await?;
        for streaming in [false, true] {
            // Where the provider would post next, on the other host.
            let location = format!("{}/captured", elsewhere.origin());
            first.push(
                Scripted::json(307, json!({"moved": true})).with_header("location", location),
            );
            elsewhere.push(wire.answer(&Answer::text(&["stolen"]), streaming));
            let provider = build(wire, wire.base_url(&first));
            let error = if streaming {
                provider.stream(&request()).await.err()
            } else {
                provider.predict(&request()).await.err()
            };
            let error = error.expect("the redirect fails the call");
            assert!(
                matches!(&error, ProviderError::Config { message } if message.contains("redirect")),
                "{wire:?} streaming {streaming}: {error:?}"
            );
            assert!(!error.is_retryable());
            assert!(
                elsewhere.requests().is_empty(),
                "{wire:?}: the other host was reached"
            );
            let sent = first.requests().pop().expect("the first host got the call");
            assert!(sent.header(key_header(wire)).is_some(), "{wire:?}");
        }
    }
    Ok(())
}

/// A `MakeWriter` that keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every cause of `error` once, as anyhow's alternate form prints them.
fn segments(error: ProviderError) -> (String, Vec<String>) {
    let text = format!("{:#}", anyhow::Error::from(error));
    let segments = text.split(": ").map(str::to_owned).collect();
    (text, segments)
}

/// A `base_url` with credentials (`http://u:secret@127.0.0.1:1/v1`) and a refused
/// connection: neither the error's text, its debug form, nor the logs (the retry warning
/// included) contain the password; the error chain names each cause once.
#[tokio::test]
async fn credentials_in_the_base_url_never_reach_errors_or_logs() -> anyhow::Result<()> {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    for wire in WIRES {
        let base = match wire {
            Wire::Anthropic => "http://u:secret@127.0.0.1:1".to_owned(),
            Wire::Gemini => "http://u:secret@127.0.0.1:1/v1beta".to_owned(),
            _ => "http://u:secret@127.0.0.1:1/v1?gateway-key=secret".to_owned(),
        };
        let provider = build(wire, base);
        assert!(!format!("{provider:?}").contains("secret"), "{wire:?}");
        for streaming in [false, true] {
            let error = if streaming {
                provider.stream(&request()).await.err()
            } else {
                provider.predict(&request()).await.err()
            };
            let error = error.expect("the connection is refused");
            assert!(
                matches!(error, ProviderError::Transport { .. }),
                "{wire:?}: {error:?}"
            );
            let display = error.to_string();
            let debug = format!("{error:?}");
            let (chain, parts) = segments(error);
            for text in [&display, &debug, &chain] {
                assert!(!text.contains("secret"), "{wire:?}: {text}");
            }
            let mut unique = parts.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), parts.len(), "a repeated cause in {chain:?}");
            assert!(chain.starts_with("transport error: cannot "), "{chain}");
        }
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(text.contains("retrying provider call"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    Ok(())
}
