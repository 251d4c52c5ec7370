//! The errors `serve` answers with, in the OpenAI shape: `{"error": {"message", "type",
//! "param", "code"}}`.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A request the server refuses or could not answer, as an OpenAI-style error.
///
/// The message is what the client may know: a client's own mistake is named precisely, a
/// failure on the server side is generic (its details go to the log under the request id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// The OpenAI error `type`.
    pub(crate) kind: &'static str,
    /// The OpenAI error `code`, when there is one.
    pub(crate) code: Option<&'static str>,
    pub(crate) message: String,
    /// Seconds for a `Retry-After` header.
    pub(crate) retry_after: Option<u64>,
    /// Whether the connection closes after this answer (its request was not read to the end).
    pub(crate) close: bool,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code: Some(code),
            message,
            retry_after: None,
            close: false,
        }
    }

    /// A 400 for a malformed request; `message` says what is wrong.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: None,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "",
                message.into(),
            )
        }
    }

    /// A 400 with a code.
    pub(crate) fn invalid_with(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// 401: no key was presented.
    pub(crate) fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing_api_key",
            "no API key given: send `Authorization: Bearer <key>`".to_owned(),
        )
    }

    /// 401: the key presented is not one of the server's.
    pub(crate) fn wrong_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "the API key is not valid".to_owned(),
        )
    }

    /// 415: the body is not declared as JSON.
    pub(crate) fn not_json() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            "the request body must be sent with `Content-Type: application/json`".to_owned(),
        )
    }

    /// 421: the `Host` header names a host this server does not answer for.
    pub(crate) fn host_not_allowed(host: &str) -> Self {
        Self::new(
            StatusCode::MISDIRECTED_REQUEST,
            "invalid_request_error",
            "host_not_allowed",
            format!(
                "this server does not answer for host `{}` (see serve.allowed_hosts)",
                printable(host)
            ),
        )
    }

    /// 403: a browser sent the request from a page of another site.
    pub(crate) fn origin_not_allowed() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "origin_not_allowed",
            "requests from pages of other origins are not accepted".to_owned(),
        )
    }

    /// 413: the body is larger than `limit` bytes.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self {
            close: true,
            ..Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        }
    }

    /// 408: the body did not arrive in time.
    pub(crate) fn body_timeout() -> Self {
        Self {
            close: true,
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
                "the request body did not arrive in time".to_owned(),
            )
        }
    }

    /// 429 from the server's own rate limit.
    pub(crate) fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                format!("too many requests for this key; retry in {retry_after} s"),
            )
        }
    }

    /// 503: the wait queue is full.
    pub(crate) fn queue_full() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
                "the server is at capacity and its wait queue is full; retry later".to_owned(),
            )
        }
    }

    /// 503: no slot freed up within the queue timeout.
    pub(crate) fn queue_timeout(waited: std::time::Duration) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
                format!("every slot stayed busy for {waited:?}; retry later"),
            )
        }
    }

    /// 409: another turn holds the session for longer than the queue timeout.
    pub(crate) fn session_busy() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "session_busy",
            "another request is running a turn on this session; retry when it has finished"
                .to_owned(),
        )
    }

    /// 503: the server is stopping.
    pub(crate) fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "unavailable",
            "the server is shutting down".to_owned(),
        )
    }

    /// 404 for an unknown session.
    pub(crate) fn no_session(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "session_not_found",
            format!("no session `{id}`"),
        )
    }

    /// 404 for an unknown path.
    pub(crate) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            "no such endpoint".to_owned(),
        )
    }

    /// A failure on the server side: `status` and `kind` classify it, `message` is generic,
    /// and the request id lets an operator find the details in the log.
    pub(crate) fn server(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: &str,
        request_id: &str,
    ) -> Self {
        Self::new(
            status,
            kind,
            code,
            format!("{message} (request id {request_id})"),
        )
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": Value::Null,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_response(self.status, &self.body());
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `text` cut to 64 characters with control characters replaced, for echoing a client's
/// value in an error.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
