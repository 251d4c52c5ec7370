//! The HTTP executor: calls an HTTP endpoint with the tool's arguments.

use std::collections::BTreeMap;
use std::time::Duration;

use promptkit_core::{
    BoxFuture, ContentPart, ToolCall, ToolContext, ToolError, ToolErrorKind, ToolExecutor,
    ToolResult,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Settings of [`HttpExecutor`] (`config` of an `http` descriptor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The URL; `{{name}}` is replaced by the URL-encoded argument `name` (which is then not
    /// sent elsewhere).
    pub url: String,
    /// The method (default `POST`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Fixed headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables (header name to variable name),
    /// read when the executor is built. Their values are secrets: they never appear in errors
    /// or logs.
    #[serde(default)]
    pub headers_from_env: BTreeMap<String, String>,
    /// Arguments sent as query parameters instead of in the body.
    #[serde(default)]
    pub query: Vec<String>,
    /// Fixed query parameters.
    #[serde(default)]
    pub static_query: BTreeMap<String, String>,
    /// Fixed body fields (the arguments win on conflicts).
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
}

fn default_method() -> String {
    "POST".to_owned()
}

/// Calls an HTTP endpoint. `GET` and `DELETE` send the arguments as query parameters; other
/// methods send them as a JSON body. A JSON response becomes structured output (or text, for a
/// JSON string); anything else becomes text. Non-2xx statuses are tool errors the model sees.
#[derive(Clone)]
pub struct HttpExecutor {
    config: HttpConfig,
    /// The URL, parsed once, when it is not a template.
    fixed_url: Option<reqwest::Url>,
    method: reqwest::Method,
    secrets: Vec<(String, String)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExecutor")
            .field("method", &self.method)
            .field("url", &self.config.url)
            .field(
                "secret_headers",
                &self.secrets.iter().map(|(h, _)| h).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl HttpExecutor {
    /// An executor for `config`, reading secret headers from the environment now.
    ///
    /// # Errors
    /// An invalid method, or a missing environment variable (named, never its value).
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
        let method = reqwest::Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("`method`: `{}` is not an HTTP method", config.method))?;
        let mut secrets = Vec::new();
        for (header, var) in &config.headers_from_env {
            let value = lookup(var)
                .ok_or_else(|| format!("`headers_from_env`: environment variable `{var}` (for header `{header}`) is not set"))?;
            secrets.push((header.clone(), value));
        }
        // A URL without placeholders is checked and parsed here, once, instead of at every
        // call (parsing costs about as much as the rest of building the request).
        let fixed_url = if config.url.contains("{{") {
            None
        } else {
            Some(
                reqwest::Url::parse(&config.url)
                    .map_err(|e| format!("`url`: `{}` is not a valid URL: {e}", config.url))?,
            )
        };
        Ok(Self {
            config,
            fixed_url,
            method,
            secrets,
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

    /// Replaces every secret value in `text`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (_, secret) in &self.secrets {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "[REDACTED]");
            }
        }
        out
    }

    fn fail(&self, call: &ToolCall, message: &str) -> ToolError {
        ToolError::Execution {
            name: call.name.clone(),
            message: self.scrub(message),
            source: None,
        }
    }
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
            // The URL: parsed once when fixed; else its template filled from the arguments
            // (which then are not sent again).
            let mut url = match &self.fixed_url {
                Some(fixed) => fixed.clone(),
                None => {
                    let mut url = String::new();
                    let mut rest = self.config.url.as_str();
                    while let Some(start) = rest.find("{{") {
                        url.push_str(&rest[..start]);
                        let after = &rest[start + 2..];
                        let end = after.find("}}").ok_or_else(|| {
                            self.fail(call, "unterminated `{{` in the URL template")
                        })?;
                        let name = after[..end].trim();
                        let value = args.remove(name).ok_or_else(|| {
                            self.fail(call, &format!("the URL needs argument `{name}`"))
                        })?;
                        url.push_str(&encode(&value));
                        rest = &after[end + 2..];
                    }
                    url.push_str(rest);
                    reqwest::Url::parse(&url)
                        .map_err(|e| self.fail(call, &format!("invalid URL `{url}`: {e}")))?
                }
            };
            for name in &self.config.exclude {
                args.remove(name);
            }
            let mut query: Vec<(String, String)> = self
                .config
                .static_query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for name in &self.config.query {
                if let Some(v) = args.remove(name) {
                    query.push((name.clone(), query_value(&v)));
                }
            }
            let body_method = !matches!(
                self.method,
                reqwest::Method::GET | reqwest::Method::DELETE | reqwest::Method::HEAD
            );
            let mut body = None;
            if body_method {
                let fields = if self.config.static_body.is_empty() {
                    args
                } else {
                    let mut fields = self.config.static_body.clone();
                    fields.extend(args);
                    fields
                };
                body = Some(serde_json::to_string(&fields).unwrap_or_default());
            } else {
                query.extend(args.iter().map(|(k, v)| (k.clone(), query_value(v))));
            }
            if !query.is_empty() {
                url.query_pairs_mut().extend_pairs(&query);
            }
            let mut request = self.client.request(self.method.clone(), url);
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            for (h, v) in &self.config.headers {
                request = request.header(h.as_str(), v.as_str());
            }
            for (h, v) in &self.secrets {
                request = request.header(h.as_str(), v.as_str());
            }
            let timeout = [
                self.config.timeout_ms.map(Duration::from_millis),
                ctx.remaining(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(30));
            request = request.timeout(timeout);
            let started = std::time::Instant::now();
            let mut response = request.send().await.map_err(|e| {
                if e.is_timeout() {
                    ToolError::Timeout {
                        name: call.name.clone(),
                        elapsed: started.elapsed(),
                    }
                } else {
                    self.fail(
                        call,
                        &format!(
                            "request to {} failed: {e}",
                            e.url().map_or(String::new(), |u| u.as_str().to_owned())
                        ),
                    )
                }
            })?;
            let status = response.status();
            let limit = self.config.max_response_bytes.unwrap_or(1 << 20);
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                // The request's timeout covers the body too.
                if e.is_timeout() {
                    ToolError::Timeout {
                        name: call.name.clone(),
                        elapsed: started.elapsed(),
                    }
                } else {
                    self.fail(call, &format!("reading the response failed: {e}"))
                }
            })? {
                body.extend_from_slice(&chunk);
                if body.len() > limit {
                    return Err(self.fail(call, &format!("response exceeded {limit} bytes")));
                }
            }
            if !status.is_success() {
                let snippet: String = String::from_utf8_lossy(&body).chars().take(500).collect();
                return Ok(ToolResult::error(
                    &call.id,
                    &call.name,
                    ToolErrorKind::Execution,
                    self.scrub(&format!("HTTP {status}: {snippet}")),
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
                        Value::String(s) => result.content.push(ContentPart::text(self.scrub(&s))),
                        other => result.structured = Some(other),
                    }
                }
                Err(_) => result.content.push(ContentPart::text(
                    self.scrub(&String::from_utf8_lossy(&body)),
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
