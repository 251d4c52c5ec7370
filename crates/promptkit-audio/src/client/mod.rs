//! What every speech vendor client shares: keys that never print, timeouts, retries before
//! the first audio byte, TLS roots, and fallback across vendors.
//!
//! Each vendor client takes a [`Connection`]: where the service is, its key, its
//! [`Timeouts`] and [`RetryPolicy`], and the [`TlsRoots`] it trusts. The design is in the
//! project's `docs/decisions/0020-speech-clients.md`.
//!
//! Keys never reach a URL, an error or a `Debug` output. One exception is outside our
//! reach: tungstenite logs the raw WebSocket handshake request, key header included,
//! through the `log` crate at trace level; an application that bridges `log` into its
//! logging must keep `tungstenite` below trace.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use promptkit_core::SpeechError;

mod fallback;
#[cfg(feature = "http")]
pub(crate) mod http;
mod segmented;
#[cfg(feature = "ws")]
pub(crate) mod ws;

pub use fallback::{STT_REPLAY_LIMIT, SttFallback, TtsFallback};
pub use segmented::Segmented;

/// A vendor's API key. Its `Debug` and `Display` print `***`, so a configuration can be
/// logged; the key itself goes only into a request header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(Arc::from(key.into()))
    }

    /// Reads a key from the environment variable `name`; `None` when it is unset or empty.
    pub fn from_env(name: &str) -> Option<Self> {
        std::env::var(name)
            .ok()
            .filter(|key| !key.trim().is_empty())
            .map(|key| Self::new(key.trim()))
    }

    /// The key, for a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `***`: vendors echo keys in
    /// error messages, and those messages reach logs.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        text.replace(&*self.0, "***")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How long a client waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// To connect: TCP, TLS and the WebSocket or HTTP handshake (10 s).
    pub connect: Duration,
    /// From a request (a transcript to speak, a batch upload) to its first result (10 s).
    pub first_byte: Duration,
    /// Between two messages of a stream that is producing something (30 s). A live
    /// transcription waiting for speech is not idle: the client sends keep-alives.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// Sets the connect timeout.
    #[must_use]
    pub fn with_connect(mut self, timeout: Duration) -> Self {
        self.connect = timeout;
        self
    }

    /// Sets the first-byte timeout.
    #[must_use]
    pub fn with_first_byte(mut self, timeout: Duration) -> Self {
        self.first_byte = timeout;
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn with_idle(mut self, timeout: Duration) -> Self {
        self.idle = timeout;
        self
    }
}

/// Retries of a request that failed before its first result (a connect error, a 429, a
/// 5xx). Once audio or text has come back, nothing is retried: the caller would hear or
/// read it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (2).
    pub max_retries: u32,
    /// The first backoff (200 ms); each retry doubles it, with jitter.
    pub initial_backoff: Duration,
    /// The longest backoff, and the longest `Retry-After` honoured (2 s: a voice user
    /// does not wait longer; the fallback vendor should take over instead).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Sets the number of retries.
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets the backoffs.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// The wait before retry number `retry` (from 1) after `error`: the vendor's
    /// `Retry-After` when it gave one, else exponential backoff with full jitter; never more
    /// than `max_backoff`.
    pub fn backoff(&self, retry: u32, error: &SpeechError) -> Duration {
        if let SpeechError::RateLimited {
            retry_after: Some(wait),
            ..
        } = error
        {
            return (*wait).min(self.max_backoff);
        }
        let exponent = retry.saturating_sub(1).min(16);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        // Full jitter: anywhere up to the ceiling, so clients that failed together do not
        // come back together.
        ceiling.mul_f64(fastrand::f64())
    }

    /// Runs `attempt` until it succeeds, fails with an error that is not
    /// [retryable](SpeechError::is_retryable), or the retries are used up.
    pub(crate) async fn run<T, F, Fut>(&self, attempt: F) -> Result<T, SpeechError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SpeechError>>,
    {
        self.run_if(SpeechError::is_retryable, attempt).await
    }

    /// [`run`](Self::run), retrying only the errors `retryable` picks: a batch
    /// transcription that timed out waiting for its answer may have been transcribed (and
    /// billed) already, so it is not sent again.
    pub(crate) async fn run_if<T, F, Fut>(
        &self,
        retryable: impl Fn(&SpeechError) -> bool,
        mut attempt: F,
    ) -> Result<T, SpeechError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SpeechError>>,
    {
        let mut retry = 0;
        loop {
            match attempt().await {
                Err(error) if retryable(&error) && retry < self.max_retries => {
                    retry += 1;
                    let wait = self.backoff(retry, &error);
                    tracing::debug!(%error, retry, ?wait, "speech request failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// The certificate authorities a client trusts: the system's, plus any added (a private
/// CA, a test server's self-signed certificate).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsRoots {
    extra: Vec<Vec<u8>>,
}

impl fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsRoots")
            .field("extra", &self.extra.len())
            .finish()
    }
}

impl TlsRoots {
    /// The system's roots only.
    pub fn system() -> Self {
        Self::default()
    }

    /// Also trusts the DER-encoded certificate `der`.
    #[must_use]
    pub fn with_root_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra.push(der.into());
        self
    }

    /// The added certificates, DER-encoded.
    pub fn extra(&self) -> &[Vec<u8>] {
        &self.extra
    }
}

/// Where a speech service is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Connection {
    /// The service's base URL (`https://api.openai.com/v1`, `wss://api.deepgram.com`); a
    /// local server's for tests and self-hosted models. Never carries the key.
    pub base_url: String,
    /// The key, sent in the vendor's header; `None` for servers without authentication.
    pub api_key: Option<ApiKey>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retries before the first result.
    pub retry: RetryPolicy,
    /// Trusted roots.
    pub tls: TlsRoots,
}

impl Connection {
    /// A service at `base_url` without a key.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            tls: TlsRoots::default(),
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Sets the timeouts.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the trusted roots.
    #[must_use]
    pub fn with_tls(mut self, tls: TlsRoots) -> Self {
        self.tls = tls;
        self
    }

    /// `text` with the key scrubbed out.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.api_key
            .as_ref()
            .map_or_else(|| text.to_owned(), |key| key.scrub(text))
    }

    /// The base URL without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }
}

/// `delay` from now, on tokio's clock; a century ahead for a delay too long to add (a
/// timeout set to `Duration::MAX` to turn it off), instead of a panic.
pub(crate) fn after(delay: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Whether a failed batch request may be sent again: a retryable error that is not a
/// timeout waiting for the answer (the vendor may have done, and billed, the work).
pub(crate) fn batch_retryable(error: &SpeechError) -> bool {
    error.is_retryable() && !matches!(error, SpeechError::Timeout(_))
}

/// How long a batch transcription of `audio` may take to answer: the first-byte timeout
/// plus the audio's own length (upload and recognition grow with it).
pub(crate) fn batch_deadline(first_byte: Duration, audio: Duration) -> Duration {
    first_byte.saturating_add(audio)
}

/// The longest vendor error message kept in a [`SpeechError`].
pub(crate) const MAX_MESSAGE: usize = 512;

/// A vendor's message, scrubbed of the key and cut to [`MAX_MESSAGE`] bytes.
pub(crate) fn vendor_message(connection: &Connection, text: &str) -> String {
    let mut message = connection.scrub(text.trim());
    if message.len() > MAX_MESSAGE {
        message.truncate(char_floor(&message, MAX_MESSAGE));
        message.push('…');
    }
    message
}

/// The largest index of `text` at most `max` that falls on a character boundary.
pub(crate) fn char_floor(text: &str, max: usize) -> usize {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// The base URL for HTTP requests of a service configured with a WebSocket URL: `wss`
/// becomes `https` and `ws` becomes `http` (the mirror of `ws::ws_base`).
#[cfg(feature = "http")]
pub(crate) fn http_base(base: &str) -> String {
    if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_owned()
    }
}

/// The error for an HTTP status (of a response or of a refused WebSocket handshake).
pub(crate) fn status_error(
    status: u16,
    retry_after: Option<Duration>,
    message: String,
) -> SpeechError {
    match status {
        401 | 403 => SpeechError::Auth { message },
        429 => SpeechError::RateLimited {
            retry_after,
            message,
        },
        _ => SpeechError::Service { status, message },
    }
}

/// A `Retry-After` value in seconds (the HTTP-date form is rare from speech vendors and is
/// ignored), at most an hour.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// A transport error with its cause.
pub(crate) fn transport(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> SpeechError {
    SpeechError::Transport {
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("sk-secret-value");
        assert_eq!(format!("{key:?} {key}"), "ApiKey(***) ***");
        let connection = Connection::new("http://127.0.0.1:1").with_api_key(key);
        assert!(!format!("{connection:?}").contains("secret"));
        assert_eq!(
            vendor_message(&connection, "bad key sk-secret-value given"),
            "bad key *** given"
        );
    }

    #[test]
    fn vendor_messages_are_bounded_on_a_char_boundary() {
        let connection = Connection::new("http://127.0.0.1:1");
        let long = "é".repeat(1000);
        let message = vendor_message(&connection, &long);
        assert!(message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(message.ends_with('…'));
    }

    #[test]
    fn backoff_honours_retry_after_within_the_cap() {
        let policy = RetryPolicy::default();
        let limited = |secs| SpeechError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
            message: String::new(),
        };
        assert_eq!(policy.backoff(1, &limited(1)), Duration::from_secs(1));
        assert_eq!(policy.backoff(1, &limited(60)), policy.max_backoff);
        let other = SpeechError::Timeout(Duration::from_secs(1));
        for retry in 1..40 {
            assert!(policy.backoff(retry, &other) <= policy.max_backoff);
        }
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_first_success_or_a_final_error() {
        let policy = RetryPolicy::default();
        let mut calls = 0;
        let result: Result<u32, _> = policy
            .run(|| {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(SpeechError::Timeout(Duration::from_secs(1)))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 3);

        let mut calls = 0;
        let result: Result<(), _> = policy
            .run(|| {
                calls += 1;
                async {
                    Err(SpeechError::Auth {
                        message: "no".to_owned(),
                    })
                }
            })
            .await;
        assert!(matches!(result, Err(SpeechError::Auth { .. })));
        assert_eq!(calls, 1, "an auth error is not retried");
    }
}
