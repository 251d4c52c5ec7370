//! Reading a chat-completions request: pure functions from headers and body bytes to a parsed
//! request or the [`ApiError`] to answer with, so a fuzz target can drive them directly.

use axum::http::{HeaderMap, header};
use promptkit::{ContentPart, Media, Message, Role, ToolResult};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// Request headers that name the session (the first present wins).
const SESSION_HEADERS: [&str; 2] = ["x-session-id", "x-promptkit-session"];

/// The longest session id a client may choose.
pub(crate) const MAX_SESSION_ID: usize = 128;

/// The longest `user` value accepted.
const MAX_USER: usize = 256;

/// What a request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestLimits {
    /// Most messages in one request.
    pub(crate) max_messages: usize,
    /// The most output tokens a turn may ask for; a client's larger value is lowered to it,
    /// and a request without one gets it.
    pub(crate) max_output_tokens: u32,
}

/// The parts of an OpenAI chat-completions request the server uses.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// A request's conversation: system prompt, earlier messages and the new message.
#[derive(Debug)]
pub(crate) struct Conversation {
    /// The request's `system` and `developer` messages, joined.
    pub(crate) system: Option<String>,
    /// The messages before the last.
    pub(crate) history: Vec<Message>,
    /// The last message, from the user.
    pub(crate) message: Message,
}

/// A chat-completions request, checked.
#[derive(Debug)]
pub(crate) struct ChatTurn {
    /// Stream the answer as SSE.
    pub(crate) stream: bool,
    /// Send the usage chunk at the end of a stream.
    pub(crate) include_usage: bool,
    /// The client's `user` field.
    pub(crate) user: Option<String>,
    /// The output-token limit of the turn's model calls (within the server's maximum).
    pub(crate) max_tokens: u32,
    /// The session the client named.
    pub(crate) session: Option<String>,
    pub(crate) conversation: Conversation,
}

/// Checks that the body is declared as JSON (`application/json`, any parameters).
///
/// Browsers send a cross-site `POST` without asking first only with a form or text content
/// type, so requiring JSON keeps web pages from driving the server.
///
/// # Errors
/// 415 otherwise.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::not_json())
    }
}

/// Parses a chat-completions request from its headers and body.
///
/// # Errors
/// A 400 naming what is wrong: the JSON, a message, the session header, the limits.
pub(crate) fn parse_chat(
    headers: &HeaderMap,
    body: &[u8],
    limits: &RequestLimits,
) -> Result<ChatTurn, ApiError> {
    let request: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    if request.messages.len() > limits.max_messages {
        return Err(ApiError::invalid_with(
            "too_many_messages",
            format!(
                "too many messages: {} (this server takes at most {})",
                request.messages.len(),
                limits.max_messages
            ),
        ));
    }
    let session = session_header(headers)?;
    let user = request.user.map(check_user).transpose()?;
    let max_tokens = output_tokens(
        request.max_completion_tokens.or(request.max_tokens),
        limits.max_output_tokens,
    )?;
    Ok(ChatTurn {
        stream: request.stream,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        user,
        max_tokens,
        session,
        conversation: conversation(request.messages)?,
    })
}

/// The output-token limit: the client's, lowered to the server's maximum, or the maximum.
fn output_tokens(asked: Option<u64>, maximum: u32) -> Result<u32, ApiError> {
    match asked {
        None => Ok(maximum),
        Some(0) => Err(ApiError::invalid(
            "`max_tokens` (or `max_completion_tokens`) must be at least 1",
        )),
        Some(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX).min(maximum)),
    }
}

fn check_user(user: String) -> Result<String, ApiError> {
    if user.len() > MAX_USER || user.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "`user` must be at most {MAX_USER} bytes without control characters"
        )));
    }
    Ok(user)
}

/// The session a request names, checked: 1 to 128 of `A-Z a-z 0-9 . _ : -`.
///
/// # Errors
/// A 400 when the header is not such an id.
pub(crate) fn session_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    for name in SESSION_HEADERS {
        if let Some(value) = headers.get(name) {
            let value = std::str::from_utf8(value.as_bytes())
                .map_err(|_| bad_session_id(name))?
                .trim();
            if !is_session_id(value) {
                return Err(bad_session_id(name));
            }
            return Ok(Some(value.to_owned()));
        }
    }
    Ok(None)
}

/// Whether `id` is a session id a client may use: 1 to 128 of `A-Z a-z 0-9 . _ : -`.
pub(crate) fn is_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SESSION_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn bad_session_id(header: &str) -> ApiError {
    ApiError::invalid_with(
        "invalid_session_id",
        format!(
            "header `{header}` must be 1 to {MAX_SESSION_ID} characters of A-Z, a-z, 0-9, \
             `.`, `_`, `:` and `-`"
        ),
    )
}

/// The text of an OpenAI `content` (a string or an array of parts) as content parts.
fn content_parts(content: Option<&Value>, index: usize) -> Result<Vec<ContentPart>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![ContentPart::text(s.clone())]),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("text") => part["text"].as_str().map(ContentPart::text).ok_or_else(|| {
                    ApiError::invalid(format!("messages[{index}]: a text part needs `text`"))
                }),
                Some("image_url") => part["image_url"]["url"]
                    .as_str()
                    .map(|url| ContentPart::Image(Media::url(url)))
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "messages[{index}]: an image_url part needs `image_url.url`"
                        ))
                    }),
                other => Err(ApiError::invalid(format!(
                    "messages[{index}]: unsupported content part type {}",
                    other.map_or_else(|| "(none)".to_owned(), |t| format!("`{t}`"))
                ))),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(format!(
            "messages[{index}].content must be a string or an array of parts"
        ))),
    }
}

fn text_of(parts: &[ContentPart]) -> String {
    parts.iter().filter_map(ContentPart::as_text).collect()
}

fn conversation(messages: Vec<WireMessage>) -> Result<Conversation, ApiError> {
    let mut system: Option<String> = None;
    let mut history = Vec::with_capacity(messages.len());
    for (index, m) in messages.into_iter().enumerate() {
        let parts = content_parts(m.content.as_ref(), index)?;
        let message = match m.role.as_str() {
            "system" | "developer" => {
                let text = text_of(&parts);
                match &mut system {
                    Some(s) => {
                        s.push_str("\n\n");
                        s.push_str(&text);
                    }
                    None => system = Some(text),
                }
                continue;
            }
            "user" => Message {
                content: parts,
                ..Message::new(Role::User)
            },
            "assistant" => {
                let mut message = Message {
                    content: parts,
                    ..Message::new(Role::Assistant)
                };
                for call in m.tool_calls {
                    message = message.with_tool_call(promptkit::ToolCall::from_raw_arguments(
                        call.id,
                        call.function.name,
                        &call.function.arguments,
                    ));
                }
                message
            }
            "tool" => {
                let Some(id) = m.tool_call_id else {
                    return Err(ApiError::invalid(format!(
                        "messages[{index}]: a tool message needs `tool_call_id`"
                    )));
                };
                Message::tool(ToolResult::text(
                    id,
                    m.name.unwrap_or_default(),
                    text_of(&parts),
                ))
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "messages[{index}]: unknown role `{}`",
                    other.chars().take(32).collect::<String>()
                )));
            }
        };
        history.push(message);
    }
    let message = match history.pop() {
        Some(m) if m.role == Role::User => m,
        Some(m) => {
            return Err(ApiError::invalid(format!(
                "the last message must be from the user, not `{}`",
                m.role.as_str()
            )));
        }
        None => return Err(ApiError::invalid("`messages` holds no user message")),
    };
    Ok(Conversation {
        system,
        history,
        message,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_messages: 3,
        max_output_tokens: 100,
    };

    fn parse(headers: &HeaderMap, body: &str) -> Result<ChatTurn, ApiError> {
        parse_chat(headers, body.as_bytes(), &LIMITS)
    }

    #[test]
    fn session_ids_are_checked_at_the_edge() {
        let mut headers = HeaderMap::new();
        for good in ["a", "web-1", "user:42.tab_3", &"x".repeat(128)] {
            headers.insert("x-session-id", HeaderValue::from_str(good).unwrap());
            assert_eq!(session_header(&headers).unwrap().as_deref(), Some(good));
        }
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(129), "a\tb"] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            headers.insert("x-session-id", value);
            let error = session_header(&headers).unwrap_err();
            assert_eq!(error.status, 400, "{bad:?}");
            assert_eq!(error.code, Some("invalid_session_id"));
        }
    }

    #[test]
    fn the_message_count_and_output_tokens_are_bounded() {
        let headers = HeaderMap::new();
        let four = r#"{"messages":[{"role":"user"},{"role":"user"},{"role":"user"},{"role":"user","content":"x"}]}"#;
        let error = parse(&headers, four).unwrap_err();
        assert!(error.message.contains("too many messages"), "{error:?}");

        let turn = parse(&headers, r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(
            turn.max_tokens, 100,
            "the server's maximum when none is asked"
        );
        let asked = |body: &str| parse(&headers, body).map(|t| t.max_tokens);
        assert_eq!(
            asked(r#"{"max_tokens":7,"messages":[{"role":"user","content":"x"}]}"#),
            Ok(7)
        );
        assert_eq!(
            asked(r#"{"max_completion_tokens":1e3,"messages":[{"role":"user","content":"x"}]}"#)
                .map_err(|e| e.status),
            Err(axum::http::StatusCode::BAD_REQUEST),
            "not an integer"
        );
        assert_eq!(
            asked(
                r#"{"max_completion_tokens":18446744073709551615,"messages":[{"role":"user","content":"x"}]}"#
            ),
            Ok(100)
        );
        assert!(asked(r#"{"max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#).is_err());
    }

    #[test]
    fn only_json_bodies_are_taken() {
        let mut headers = HeaderMap::new();
        assert_eq!(require_json(&headers).unwrap_err().status, 415);
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("application/jsonp", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(require_json(&headers).is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn a_bad_user_is_refused() {
        let headers = HeaderMap::new();
        let body = format!(
            r#"{{"user":"{}","messages":[{{"role":"user","content":"x"}}]}}"#,
            "u".repeat(257)
        );
        assert_eq!(parse(&headers, &body).unwrap_err().status, 400);
        let body = r#"{"user":"a\u0000b","messages":[{"role":"user","content":"x"}]}"#;
        assert_eq!(parse(&headers, body).unwrap_err().status, 400);
    }

    /// A small deterministic generator (xorshift64*), so the property below runs the same
    /// cases on every run and a failure names its seed.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }

        /// Any JSON value, biased towards the names and shapes a request has.
        fn value(&mut self, depth: u32) -> Value {
            const WORDS: &[&str] = &[
                "user",
                "assistant",
                "system",
                "developer",
                "tool",
                "text",
                "image_url",
                "content",
                "role",
                "",
                "\u{0}",
                "ü",
                "x",
            ];
            match self.below(if depth == 0 { 6 } else { 9 }) {
                0 => Value::Null,
                1 => Value::Bool(self.next().is_multiple_of(2)),
                2 => serde_json::json!(self.next()),
                3 => serde_json::json!(-(i64::try_from(self.next() >> 1).unwrap())),
                4 => serde_json::json!(f64::from(u32::try_from(self.next() >> 40).unwrap()) / 7.0),
                5 => Value::String(self.pick(WORDS).to_owned()),
                6 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
                _ => {
                    const KEYS: &[&str] = &[
                        "role",
                        "content",
                        "type",
                        "text",
                        "image_url",
                        "url",
                        "tool_calls",
                        "tool_call_id",
                        "name",
                        "id",
                        "function",
                        "arguments",
                        "messages",
                        "stream",
                        "stream_options",
                        "include_usage",
                        "user",
                        "max_tokens",
                        "max_completion_tokens",
                    ];
                    let mut object = serde_json::Map::new();
                    for _ in 0..self.below(5) {
                        object.insert(self.pick(KEYS).to_owned(), self.value(depth - 1));
                    }
                    Value::Object(object)
                }
            }
        }

        /// A request body: arbitrary JSON, a request of arbitrary messages, or raw bytes.
        fn body(&mut self) -> Vec<u8> {
            match self.below(4) {
                0 => (0..self.below(64))
                    .map(|_| u8::try_from(self.next() & 0xff).unwrap())
                    .collect(),
                1 => self.value(4).to_string().into_bytes(),
                _ => {
                    let mut messages: Vec<Value> =
                        (0..self.below(5)).map(|_| self.value(3)).collect();
                    if self.next().is_multiple_of(2) {
                        let content = self.value(1);
                        messages.push(serde_json::json!({"role": "user", "content": content}));
                    }
                    let mut request = serde_json::json!({"messages": messages});
                    for _ in 0..self.below(3) {
                        let key = self.pick(&["stream", "user", "max_tokens", "stream_options"]);
                        request[key] = self.value(2);
                    }
                    request.to_string().into_bytes()
                }
            }
        }
    }

    // Review test 58, as a property of the normal suite: whatever the body, parsing never
    // panics, and a refusal is the client's error (4xx), never the server's.
    #[test]
    fn any_body_parses_or_is_a_client_error() {
        let mut headers = HeaderMap::new();
        let mut accepted = 0;
        for seed in 1..=20_000_u64 {
            let mut generator = Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let body = generator.body();
            if generator.next().is_multiple_of(4) {
                let id = generator.pick(&["web-1", "", "a/b", "ü", "x:y.z_0"]);
                headers.insert(
                    "x-session-id",
                    HeaderValue::from_bytes(id.as_bytes()).unwrap(),
                );
            } else {
                headers.remove("x-session-id");
            }
            match parse_chat(&headers, &body, &LIMITS) {
                Ok(turn) => {
                    accepted += 1;
                    assert!((1..=LIMITS.max_output_tokens).contains(&turn.max_tokens));
                    assert_eq!(turn.conversation.message.role, Role::User);
                }
                Err(error) => assert!(
                    error.status.is_client_error(),
                    "seed {seed}: {error:?} for {}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
        assert!(accepted > 0, "the generator also makes valid requests");
    }
}
