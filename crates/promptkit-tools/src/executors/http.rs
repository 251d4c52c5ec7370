//! The HTTP executor: calls an HTTP endpoint with the tool's arguments.
//!
//! The model's arguments are untrusted input that reaches the network, so the executor limits
//! where a request can go (decision 0016): a URL template may place arguments in the path and
//! query only, never in the scheme or host; an argument cannot make a `.` or `..` path
//! segment; redirects are not followed unless the tool opts in, and then only to the same
//! origin and without the secret headers; an optional host allow-list; and fixed fields
//! (`static_body`, `static_query`) win over arguments of the same name.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use promptkit_core::{
    BoxFuture, ContentPart, ToolCall, ToolContext, ToolError, ToolErrorKind, ToolExecutor,
    ToolResult,
};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Most redirects followed with [`Redirects::SameOrigin`].
const MAX_REDIRECTS: usize = 5;
/// The replacement of secrets in text for the model.
const REDACTED: &str = "[REDACTED]";

/// Settings of [`HttpExecutor`] (`config` of an `http` descriptor).
///
/// `Debug` shows header and field names but not their values, and the URL without its query
/// or credentials.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The URL; `{{name}}` is replaced by the URL-encoded argument `name` (which is then not
    /// sent elsewhere). Placeholders may appear in the path and the query, not in the scheme
    /// or the host, and a value that would make a `.` or `..` path segment is rejected.
    pub url: String,
    /// The method (default `POST`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Fixed headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables (header name to variable name),
    /// read when the executor is built. Their values are secrets: they never appear in errors
    /// or logs, and they are not sent again after a redirect.
    #[serde(default)]
    pub headers_from_env: BTreeMap<String, String>,
    /// Arguments sent as query parameters instead of in the body.
    #[serde(default)]
    pub query: Vec<String>,
    /// Fixed query parameters. They win over arguments of the same name, and their values
    /// never appear in errors.
    #[serde(default)]
    pub static_query: BTreeMap<String, String>,
    /// Fixed body fields. They win over arguments of the same name, so the model cannot
    /// change a field the operator pinned (a tenant, an account).
    #[serde(default)]
    pub static_body: Map<String, Value>,
    /// Arguments not sent at all.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// A JSON Pointer (RFC 6901) selecting the part of a JSON response to return, e.g.
    /// `/data/current`.
    #[serde(default)]
    pub response_pointer: Option<String>,
    /// Request deadline in milliseconds (the call's deadline applies too).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Most response bytes read (default 1 MiB).
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// Whether redirects are followed (default: not at all).
    #[serde(default)]
    pub redirects: Redirects,
    /// Hosts the tool may call: exact names (`api.example.com`, `127.0.0.1`) or `*.` followed
    /// by a domain for its subdomains (`*.example.com`). Empty allows the URL's own host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_method() -> String {
    "POST".to_owned()
}

/// Which redirects an HTTP tool follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Redirects {
    /// None: a `3xx` answer is an error result the model sees.
    #[default]
    None,
    /// Up to five redirects to the same origin (scheme, host and port) as the tool's URL,
    /// without the secret headers; a redirect to another origin is not followed.
    SameOrigin,
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &redact_url_text(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("headers_from_env", &self.headers_from_env)
            .field("query", &self.query)
            .field(
                "static_query",
                &self.static_query.keys().collect::<Vec<_>>(),
            )
            .field("static_body", &self.static_body.keys().collect::<Vec<_>>())
            .field("exclude", &self.exclude)
            .field("response_pointer", &self.response_pointer)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("redirects", &self.redirects)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// A URL template split into literal text and `{{name}}` placeholders.
#[derive(Debug, Clone)]
enum Template {
    /// No placeholders: parsed once.
    Fixed(Url),
    /// Pieces to fill at each call. The first piece is literal and holds the whole scheme and
    /// authority.
    Filled(Vec<Piece>),
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Argument(String),
}

impl Template {
    /// Parses and checks `text`: it must be an `http` or `https` URL whose scheme and host
    /// hold no placeholder and whose path has no `.` or `..` segment.
    fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                format!("`url`: unterminated `{{{{` in `{}`", redact_url_text(text))
            })?;
            let name = after[..end].trim();
            if name.is_empty() {
                return Err("`url`: a placeholder `{{}}` has no argument name".to_owned());
            }
            pieces.push(Piece::Argument(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        let shown = redact_url_text(text);
        if pieces.iter().all(|p| matches!(p, Piece::Literal(_))) {
            let url = Url::parse(text)
                .map_err(|e| format!("`url`: `{shown}` is not a valid URL: {e}"))?;
            check_url(&url, text, &shown)?;
            return Ok(Self::Fixed(url));
        }
        // The scheme and the authority must end inside the first literal piece: an argument
        // there could change the host (`https://api.example.com{{x}}` with `x=".evil.net"`).
        let literal_authority = match &pieces[0] {
            Piece::Literal(first) => authority_end(first).is_some(),
            Piece::Argument(_) => false,
        };
        if !literal_authority {
            return Err(format!(
                "`url`: `{shown}` has a placeholder in its scheme or host; placeholders may \
                 only fill the path and the query"
            ));
        }
        let sample = render_with(&pieces, |_| Some("x".to_owned())).unwrap_or_default();
        let url = Url::parse(&sample)
            .map_err(|e| format!("`url`: `{shown}` is not a valid URL template: {e}"))?;
        check_url(&url, &sample, &shown)?;
        Ok(Self::Filled(pieces))
    }
}

/// Checks a parsed template URL: an HTTP scheme and no dot segments in the path as written.
fn check_url(url: &Url, raw: &str, shown: &str) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`url`: `{shown}` is not an http or https URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("`url`: `{shown}` has no host"));
    }
    if let Some(segment) = dot_segment(raw) {
        return Err(format!(
            "`url`: `{shown}` has a `{segment}` path segment; write the path without it"
        ));
    }
    Ok(())
}

/// Where the authority of `text` (`scheme://authority`) ends, when it ends within `text`.
fn authority_end(text: &str) -> Option<usize> {
    let start = text.find("://")? + 3;
    text[start..].find(['/', '?', '#', '\\']).map(|i| start + i)
}

/// The first `.` or `..` path segment of a raw URL (also spelt `%2e`), as the URL parser
/// would remove it.
fn dot_segment(raw: &str) -> Option<String> {
    let start = authority_end(raw)?;
    let path = &raw[start..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    path.split(['/', '\\']).find_map(|segment| {
        let normal = segment.to_ascii_lowercase().replace("%2e", ".");
        matches!(normal.as_str(), "." | "..").then(|| segment.to_owned())
    })
}

/// Fills `pieces`, taking each placeholder's value from `value` (`None`: the argument is
/// missing, named in the error).
fn render_with(
    pieces: &[Piece],
    mut value: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut url = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => url.push_str(text),
            Piece::Argument(name) => {
                let value =
                    value(name).ok_or_else(|| format!("the URL needs argument `{name}`"))?;
                url.push_str(&value);
            }
        }
    }
    Ok(url)
}

/// `text` (a URL or URL template) without credentials and without its query, for messages.
fn redact_url_text(text: &str) -> String {
    let mut out = text.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let start = scheme_end + 3;
        let authority_len = out[start..]
            .find(['/', '?', '#'])
            .unwrap_or(out.len() - start);
        if let Some(at) = out[start..start + authority_len].rfind('@') {
            out.replace_range(start..start + at + 1, "");
        }
    }
    if let Some(query) = out.find('?') {
        out.truncate(query);
        out.push_str("?…");
    }
    out
}

/// A URL for messages: scheme, host, port and path; no credentials, query or fragment.
fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Whether `host` matches one of `patterns` (see [`HttpConfig::allowed_hosts`]).
pub(crate) fn host_allowed(host: &str, patterns: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|pattern| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == pattern,
        }
    })
}

/// Calls an HTTP endpoint. `GET` and `DELETE` send the arguments as query parameters; other
/// methods send them as a JSON body. A JSON response becomes structured output (or text, for a
/// JSON string); anything else becomes text. Non-2xx statuses are tool errors the model sees.
///
/// The client should not follow redirects itself (the registry's own client does not):
/// redirects are this executor's decision, see [`HttpConfig::redirects`].
#[derive(Clone)]
pub struct HttpExecutor {
    config: HttpConfig,
    template: Template,
    method: Method,
    /// Header names and values from `headers_from_env`.
    secret_headers: Vec<(String, String)>,
    /// Values never shown to the model: secret headers, `static_query` values and
    /// credentials or query values written in the URL.
    secrets: Vec<String>,
    /// The host, for the allow-list.
    host: String,
    client: reqwest::Client,
}

impl fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpExecutor")
            .field("method", &self.method)
            .field("url", &redact_url_text(&self.config.url))
            .field(
                "secret_headers",
                &self
                    .secret_headers
                    .iter()
                    .map(|(h, _)| h)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl HttpExecutor {
    /// An executor for `config`, reading secret headers from the environment now.
    ///
    /// # Errors
    /// An invalid method or URL template, a host outside `allowed_hosts`, or a missing
    /// environment variable (named, never its value).
    pub fn new(config: HttpConfig, client: reqwest::Client) -> Result<Self, String> {
        Self::with_env(config, client, |var| std::env::var(var).ok())
    }

    /// [`HttpExecutor::new`] reading variables through `lookup` instead of the process
    /// environment (for secret managers and tests).
    ///
    /// # Errors
    /// As [`HttpExecutor::new`].
    pub fn with_env(
        config: HttpConfig,
        client: reqwest::Client,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let method = Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("`method`: `{}` is not an HTTP method", config.method))?;
        let template = Template::parse(&config.url)?;
        let sample = match &template {
            Template::Fixed(url) => url.clone(),
            Template::Filled(pieces) => Url::parse(&render_with(pieces, |_| Some("x".to_owned()))?)
                .map_err(|e| e.to_string())?,
        };
        let host = sample.host_str().unwrap_or_default().to_owned();
        if !config.allowed_hosts.is_empty() && !host_allowed(&host, &config.allowed_hosts) {
            return Err(format!(
                "`url`: host `{host}` is not in `allowed_hosts` ({})",
                config.allowed_hosts.join(", ")
            ));
        }
        let mut secret_headers = Vec::new();
        for (header, var) in &config.headers_from_env {
            let value = lookup(var)
                .ok_or_else(|| format!("`headers_from_env`: environment variable `{var}` (for header `{header}`) is not set"))?;
            secret_headers.push((header.clone(), value));
        }
        let mut secrets: Vec<String> = secret_headers.iter().map(|(_, v)| v.clone()).collect();
        secrets.extend(config.static_query.values().cloned());
        secrets.extend(sample.password().map(str::to_owned));
        if !sample.username().is_empty() {
            secrets.push(sample.username().to_owned());
        }
        secrets.extend(sample.query_pairs().map(|(_, v)| v.into_owned()));
        // Short values ("1", "en") would blank out ordinary words of every message.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Self {
            config,
            template,
            method,
            secret_headers,
            secrets,
            host,
            client,
        })
    }

    /// An executor from descriptor settings.
    ///
    /// # Errors
    /// What is wrong with `config`.
    pub fn from_config(config: &Value, client: reqwest::Client) -> Result<Self, String> {
        let config: HttpConfig =
            serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
        Self::new(config, client)
    }

    /// The host the tool calls.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Replaces every secret value in `text`; header secrets only when `all` is false.
    fn scrub_with(&self, text: &str, all: bool) -> String {
        let mut out = text.to_owned();
        let headers = self.secret_headers.iter().map(|(_, v)| v);
        let values: Vec<&String> = if all {
            self.secrets.iter().collect()
        } else {
            headers.filter(|v| !v.is_empty()).collect()
        };
        for secret in values {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// `text` for an error the model sees: every secret replaced.
    fn scrub(&self, text: &str) -> String {
        self.scrub_with(text, true)
    }

    fn fail(&self, call: &ToolCall, message: &str) -> ToolError {
        ToolError::Execution {
            name: call.name.clone(),
            message: self.scrub(message),
            source: None,
        }
    }

    fn invalid(call: &ToolCall, message: String) -> ToolError {
        ToolError::InvalidArguments {
            name: call.name.clone(),
            message,
        }
    }

    /// The URL of a call: fixed, or the template filled from `args` (which then are not sent
    /// again).
    fn url(&self, call: &ToolCall, args: &mut Map<String, Value>) -> Result<Url, ToolError> {
        let pieces = match &self.template {
            Template::Fixed(url) => return Ok(url.clone()),
            Template::Filled(pieces) => pieces,
        };
        let raw = render_with(pieces, |name| args.remove(name).map(|v| encode(&v)))
            .map_err(|e| Self::invalid(call, e))?;
        if let Some(segment) = dot_segment(&raw) {
            return Err(Self::invalid(
                call,
                format!(
                    "the arguments make the URL path segment `{segment}`; `.` and `..` are \
                     not allowed as path segments"
                ),
            ));
        }
        let url = Url::parse(&raw).map_err(|e| {
            Self::invalid(call, format!("the arguments do not make a valid URL: {e}"))
        })?;
        // The template keeps the host fixed; this guards the guarantee itself.
        if url.host_str() != Some(self.host.as_str()) {
            return Err(Self::invalid(
                call,
                "the arguments change the URL's host".to_owned(),
            ));
        }
        Ok(url)
    }

    /// The query pairs and the JSON body of a call; fixed fields win over arguments.
    fn payload(&self, mut args: Map<String, Value>) -> (Vec<(String, String)>, Option<String>) {
        for name in &self.config.exclude {
            args.remove(name);
        }
        let statics = &self.config.static_query;
        let mut query: Vec<(String, String)> = statics
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for name in &self.config.query {
            if let Some(v) = args.remove(name)
                && !statics.contains_key(name)
            {
                query.push((name.clone(), query_value(&v)));
            }
        }
        let body_method = !matches!(self.method, Method::GET | Method::DELETE | Method::HEAD);
        if !body_method {
            query.extend(
                args.iter()
                    .filter(|(k, _)| !statics.contains_key(*k))
                    .map(|(k, v)| (k.clone(), query_value(v))),
            );
            return (query, None);
        }
        let fields = if self.config.static_body.is_empty() {
            args
        } else {
            let mut fields = self.config.static_body.clone();
            for (key, value) in args {
                if fields.contains_key(&key) {
                    tracing::debug!(field = %key, "ignoring an argument that a `static_body` field pins");
                } else {
                    fields.insert(key, value);
                }
            }
            fields
        };
        (
            query,
            Some(serde_json::to_string(&fields).unwrap_or_default()),
        )
    }

    /// One request; the secret headers go only with the first (`first`).
    fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<String>,
        first: bool,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, url).timeout(timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        for (h, v) in &self.config.headers {
            request = request.header(h.as_str(), v.as_str());
        }
        if first {
            for (h, v) in &self.secret_headers {
                request = request.header(h.as_str(), v.as_str());
            }
        }
        request
    }

    fn transport_error(
        &self,
        call: &ToolCall,
        started: Instant,
        context: &str,
        e: &reqwest::Error,
    ) -> ToolError {
        if e.is_timeout() {
            return ToolError::Timeout {
                name: call.name.clone(),
                elapsed: started.elapsed(),
            };
        }
        self.fail(call, &format!("{context}: {}", describe(e)))
    }
}

/// A reqwest error and its causes, without the URL (which may carry credentials or secret
/// query values).
fn describe(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut first = true;
    while let Some(error) = current {
        let part = if first {
            // reqwest's own text ends with `for url (…)`.
            let own = error.to_string();
            own.split(" for url (")
                .next()
                .unwrap_or_default()
                .to_owned()
        } else {
            error.to_string()
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        first = false;
        current = error.source();
    }
    text
}

fn encode(value: &Value) -> String {
    let raw = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What the redirect loop ended with.
enum Sent {
    Response(reqwest::Response),
    /// A result for the model (a redirect that is not followed).
    Refused(String),
}

impl HttpExecutor {
    /// Sends the request and follows redirects as configured.
    async fn send(
        &self,
        call: &ToolCall,
        mut url: Url,
        mut body: Option<String>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Sent, ToolError> {
        let follow = self.config.redirects == Redirects::SameOrigin;
        let origin = url.origin();
        let mut method = self.method.clone();
        for hop in 0..=MAX_REDIRECTS {
            let payload = if follow { body.clone() } else { body.take() };
            let timeout = deadline.saturating_duration_since(Instant::now());
            let response = self
                .request(method.clone(), url.clone(), payload, hop == 0, timeout)
                .send()
                .await
                .map_err(|e| {
                    self.transport_error(
                        call,
                        started,
                        &format!("request to {} failed", display_url(&url)),
                        &e,
                    )
                })?;
            let status = response.status();
            if !follow || !is_followed_redirect(status) {
                return Ok(Sent::Response(response));
            }
            let Some(next) = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
            else {
                return Ok(Sent::Response(response));
            };
            if next.origin() != origin {
                return Ok(Sent::Refused(format!(
                    "HTTP {status}: the server redirected to another origin ({}); the redirect \
                     was not followed",
                    next.origin().ascii_serialization()
                )));
            }
            if !self.config.allowed_hosts.is_empty()
                && !next
                    .host_str()
                    .is_some_and(|h| host_allowed(h, &self.config.allowed_hosts))
            {
                return Ok(Sent::Refused(format!(
                    "HTTP {status}: the redirect goes to a host outside `allowed_hosts`; not followed"
                )));
            }
            if matches!(
                status,
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER
            ) && method != Method::HEAD
            {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
        Ok(Sent::Refused(format!(
            "the server redirected more than {MAX_REDIRECTS} times; not followed further"
        )))
    }
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

impl ToolExecutor for HttpExecutor {
    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            let mut args = match &call.arguments {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            let mut url = self.url(call, &mut args)?;
            let (query, body) = self.payload(args);
            if !query.is_empty() {
                url.query_pairs_mut().extend_pairs(&query);
            }
            let timeout = [
                self.config.timeout_ms.map(Duration::from_millis),
                ctx.remaining(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(30));
            let started = Instant::now();
            let mut response = match self
                .send(call, url, body, started, started + timeout)
                .await?
            {
                Sent::Response(response) => response,
                Sent::Refused(message) => {
                    return Ok(ToolResult::error(
                        &call.id,
                        &call.name,
                        ToolErrorKind::Execution,
                        self.scrub(&message),
                    ));
                }
            };
            let status = response.status();
            let limit = self.config.max_response_bytes.unwrap_or(1 << 20);
            let mut body = Vec::new();
            // The request's timeout covers the body too.
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                self.transport_error(call, started, "reading the response failed", &e)
            })? {
                body.extend_from_slice(&chunk);
                if body.len() > limit {
                    return Err(self.fail(call, &format!("response exceeded {limit} bytes")));
                }
            }
            if !status.is_success() {
                let snippet: String = String::from_utf8_lossy(&body).chars().take(500).collect();
                let message = if status.is_redirection() {
                    format!("HTTP {status}: redirects are not followed")
                } else {
                    format!("HTTP {status}: {snippet}")
                };
                return Ok(ToolResult::error(
                    &call.id,
                    &call.name,
                    ToolErrorKind::Execution,
                    self.scrub(&message),
                ));
            }
            let mut result = ToolResult::text(&call.id, &call.name, "");
            result.content.clear();
            match serde_json::from_slice::<Value>(&body) {
                Ok(json) => {
                    let selected = match &self.config.response_pointer {
                        Some(p) => json.pointer(p).cloned().ok_or_else(|| {
                            self.fail(call, &format!("the response has nothing at `{p}`"))
                        })?,
                        None => json,
                    };
                    match selected {
                        Value::String(s) => result
                            .content
                            .push(ContentPart::text(self.scrub_with(&s, false))),
                        other => result.structured = Some(other),
                    }
                }
                Err(_) => result.content.push(ContentPart::text(
                    self.scrub_with(&String::from_utf8_lossy(&body), false),
                )),
            }
            Ok(result)
        })
    }

    /// The request's timeout is the call's deadline (or the tool's own, when sooner), and
    /// it covers the body as well as the headers.
    fn enforces_deadline(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_keep_arguments_out_of_the_scheme_and_host() {
        for bad in [
            "{{base}}/tool",
            "https://{{host}}/x",
            "https://api.example.com{{x}}",
            "https://api.example.com:{{port}}/x",
            "http{{s}}://api.example.com/x",
            "https://user:{{password}}@api.example.com/x",
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.contains("scheme or host"), "{bad}: {err}");
        }
        for bad in [
            "https://h/a/../b",
            "https://h/./x",
            "https://h/a/%2E%2e/{{x}}",
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.contains("path segment"), "{bad}: {err}");
        }
        assert!(Template::parse("ftp://h/{{x}}").is_err());
        assert!(Template::parse("https://h/{{x").is_err());
        assert!(Template::parse("https://h/{{ }}").is_err());
        assert!(matches!(
            Template::parse("https://h/items/{{id}}?q={{q}}").unwrap(),
            Template::Filled(_)
        ));
        assert!(matches!(
            Template::parse("https://h/items").unwrap(),
            Template::Fixed(_)
        ));
    }

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        assert_eq!(dot_segment("https://h/a/../b").as_deref(), Some(".."));
        assert_eq!(dot_segment("https://h/a/.%2E/b").as_deref(), Some(".%2E"));
        assert_eq!(dot_segment("https://h/a/.").as_deref(), Some("."));
        assert_eq!(dot_segment("https://h/a\\..\\b").as_deref(), Some(".."));
        assert_eq!(dot_segment("https://h/a/..b/c.d/...?x=..#.."), None);
        assert_eq!(dot_segment("https://h"), None);
    }

    #[test]
    fn host_patterns() {
        let patterns = vec!["api.example.com".to_owned(), "*.internal.test".to_owned()];
        assert!(host_allowed("API.example.com", &patterns));
        assert!(host_allowed("a.internal.test", &patterns));
        assert!(host_allowed("a.b.internal.test", &patterns));
        assert!(!host_allowed("internal.test", &patterns));
        assert!(!host_allowed("evilinternal.test", &patterns));
        assert!(!host_allowed("api.example.com.evil.net", &patterns));
    }

    #[test]
    fn urls_in_messages_lose_credentials_and_queries() {
        assert_eq!(
            redact_url_text("https://u:pw@h:8/p/{{x}}?key=secret"),
            "https://h:8/p/{{x}}?…"
        );
        let url = Url::parse("https://u:pw@h/p?key=secret#f").unwrap();
        assert_eq!(display_url(&url), "https://h/p");
    }

    #[test]
    fn debug_hides_values() {
        let config: HttpConfig = serde_json::from_value(serde_json::json!({
            "url": "https://h/x?api_key=k-url-secret",
            "headers": {"X-Key": "k-header-secret"},
            "static_query": {"token": "k-query-secret"},
            "static_body": {"password": "k-body-secret"}
        }))
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("k-"), "{debug}");
        assert!(debug.contains("X-Key") && debug.contains("token") && debug.contains("password"));
    }

    /// Building a client loads root certificates: once for every case.
    static TEMPLATED: std::sync::LazyLock<HttpExecutor> = std::sync::LazyLock::new(|| {
        let config: HttpConfig = serde_json::from_value(serde_json::json!({
            "url": "https://api.example.com/t/{{a}}/x{{b}}?q={{c}}"
        }))
        .unwrap();
        HttpExecutor::with_env(config, reqwest::Client::new(), |_| None).unwrap()
    });

    proptest::proptest! {
        /// Whatever the model sends, the host stays the template's and the path keeps its
        /// three segments: an argument can neither climb the path nor add segments.
        #[test]
        fn arguments_never_change_the_host_or_the_path_shape(
            a in proptest::prelude::any::<String>(),
            b in "[./%a-zA-Z2eE\\\\]{0,8}",
            c in proptest::prelude::any::<String>(),
        ) {
            let executor = &*TEMPLATED;
            let call = ToolCall::new("c", "t", serde_json::json!({}));
            let mut args = Map::new();
            args.insert("a".to_owned(), Value::String(a));
            args.insert("b".to_owned(), Value::String(b));
            args.insert("c".to_owned(), Value::String(c));
            match executor.url(&call, &mut args) {
                Ok(url) => {
                    proptest::prop_assert_eq!(url.host_str(), Some("api.example.com"));
                    proptest::prop_assert_eq!(url.path_segments().map(Iterator::count), Some(3));
                    proptest::prop_assert!(url.path().starts_with("/t/"));
                }
                Err(e) => proptest::prop_assert!(matches!(e, ToolError::InvalidArguments { .. }), "{}", e),
            }
        }
    }
}
