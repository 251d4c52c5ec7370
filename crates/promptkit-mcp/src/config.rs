//! Server configuration: the common `mcpServers` JSON shape.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::McpError;
use crate::names::validate_server_name;

/// The servers of a configuration file, keyed by server name.
///
/// Reads the shape most MCP hosts use (`{"mcpServers": {"name": {...}}}`); the top-level key
/// may also be `mcp_servers` or `servers`. Server names become part of tool names
/// (`mcp__<server>__<tool>`), so they are restricted to `[A-Za-z0-9_-]` without `__`.
///
/// ```
/// use promptkit_mcp::{McpConfig, TransportKind};
///
/// let config = McpConfig::from_json(r#"{
///   "mcpServers": {
///     "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
///     "search": {"url": "https://search.example/mcp", "headers": {"X-Team": "docs"}}
///   }
/// }"#).unwrap();
/// assert_eq!(config.servers["files"].transport_kind().unwrap(), TransportKind::Stdio);
/// assert_eq!(config.servers["search"].transport_kind().unwrap(), TransportKind::Auto);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpConfig {
    /// The servers, by name.
    #[serde(
        rename = "mcpServers",
        alias = "mcp_servers",
        alias = "servers",
        default
    )]
    pub servers: BTreeMap<String, ServerConfig>,
}

impl McpConfig {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a server, replacing one of the same name.
    #[must_use]
    pub fn with_server(mut self, name: impl Into<String>, server: ServerConfig) -> Self {
        self.servers.insert(name.into(), server);
        self
    }

    /// Parses and validates JSON.
    ///
    /// # Errors
    /// [`McpError::Config`] for malformed JSON or an invalid server.
    pub fn from_json(text: &str) -> Result<Self, McpError> {
        let config: Self =
            serde_json::from_str(text).map_err(|e| McpError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates YAML.
    ///
    /// # Errors
    /// [`McpError::Config`] for malformed YAML or an invalid server.
    pub fn from_yaml(text: &str) -> Result<Self, McpError> {
        let config: Self =
            serde_yaml_ng::from_str(text).map_err(|e| McpError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a JSON file, or a YAML file when the extension is `.yaml` or `.yml`.
    ///
    /// # Errors
    /// [`McpError::ConfigFile`] naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, McpError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| McpError::ConfigFile {
            path: path.to_owned(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let parsed = if yaml {
            Self::from_yaml(&text)
        } else {
            Self::from_json(&text)
        };
        parsed.map_err(|e| McpError::ConfigFile {
            path: path.to_owned(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        })
    }

    /// Checks every server (see [`ServerConfig::validate`]) and its name.
    ///
    /// # Errors
    /// [`McpError::Config`] naming the first invalid server.
    pub fn validate(&self) -> Result<(), McpError> {
        for (name, server) in &self.servers {
            validate_server_name(name).map_err(McpError::Config)?;
            server
                .validate()
                .map_err(|e| McpError::Config(format!("server `{name}`: {e}")))?;
        }
        Ok(())
    }
}

/// How the client reaches a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TransportKind {
    /// A child process speaking newline-delimited JSON-RPC on stdin and stdout.
    #[serde(rename = "stdio")]
    Stdio,
    /// Streamable HTTP (MCP 2025-03-26 and later): one POST per message.
    #[serde(
        rename = "streamable_http",
        alias = "http",
        alias = "streamable-http",
        alias = "streamableHttp"
    )]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (MCP 2024-11-05): a GET event stream plus POSTs to the
    /// endpoint it announces.
    #[serde(rename = "sse")]
    Sse,
    /// A URL whose transport is detected: streamable HTTP first, then legacy SSE, as the MCP
    /// specification recommends for clients that support both. The detected transport is
    /// kept for reconnects.
    #[serde(rename = "auto")]
    Auto,
}

impl TransportKind {
    /// The configuration spelling (`stdio`, `streamable_http`, `sse`, `auto`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::StreamableHttp => "streamable_http",
            Self::Sse => "sse",
            Self::Auto => "auto",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of a server's tools are offered: the allow list (when not empty) keeps only matching
/// tools, then the deny list removes matching ones. Patterns match the server's own tool name
/// (before namespacing); `*` matches any run of characters (`read_*`, `*_admin`, `*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolFilter {
    /// Only these tools (all when empty).
    #[serde(default, alias = "allowlist", alias = "allowed", alias = "include")]
    pub allow: Vec<String>,
    /// Never these tools.
    #[serde(default, alias = "blocklist", alias = "denied", alias = "exclude")]
    pub deny: Vec<String>,
}

impl ToolFilter {
    /// Whether `tool` passes the filter.
    ///
    /// ```
    /// use promptkit_mcp::ToolFilter;
    ///
    /// let filter = ToolFilter { allow: vec!["read_*".into()], deny: vec!["read_secrets".into()] };
    /// assert!(filter.allows("read_file"));
    /// assert!(!filter.allows("read_secrets"));
    /// assert!(!filter.allows("write_file"));
    /// ```
    pub fn allows(&self, tool: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|p| glob(p, tool)))
            && !self.deny.iter().any(|p| glob(p, tool))
    }

    fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// `*`-only glob matching.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: exact match.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// One server.
///
/// Either `command` (a stdio server) or `url` (an HTTP server) is set. The transport is
/// `type` (alias `transport`) when given; otherwise `command` means stdio and `url` means
/// [`TransportKind::Auto`].
///
/// Values in `command`, `args`, `env`, `cwd`, `url`, `headers` and `bearer_token` may refer to
/// environment variables as `${NAME}` or `${NAME:-default}` (`$${` is a literal `${`); they
/// are expanded when the server starts, through the registry's environment lookup.
///
/// Stdio servers do not inherit the whole environment: they get `HOME`, `LOGNAME`, `PATH`,
/// `SHELL`, `TERM`, `USER`, `TMPDIR` and `LANG` (as the reference MCP SDKs do), the variables
/// named in `inherit_env`, and `env`. Header values, the bearer token and `env` values are
/// secrets: `Debug` output and error messages never show them.
///
/// Keys this crate does not know (other hosts' settings such as `autoApprove`) are ignored.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// The transport; see the type's documentation for the default.
    #[serde(
        default,
        rename = "type",
        alias = "transport",
        skip_serializing_if = "Option::is_none"
    )]
    pub transport: Option<TransportKind>,
    /// The program of a stdio server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables set for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of variables passed through from this process (besides the default set).
    #[serde(default, alias = "inheritEnv", skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// Its working directory.
    #[serde(
        default,
        alias = "working_dir",
        alias = "workingDir",
        skip_serializing_if = "Option::is_none"
    )]
    pub cwd: Option<PathBuf>,
    /// The URL of an HTTP server: the endpoint for streamable HTTP, the event stream (often
    /// ending in `/sse`) for legacy SSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers sent with every HTTP request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A bearer token sent as `Authorization: Bearer <token>`.
    #[serde(
        default,
        alias = "bearerToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub bearer_token: Option<String>,
    /// Which tools are offered.
    #[serde(
        default,
        alias = "tool_filter",
        alias = "toolFilter",
        skip_serializing_if = "ToolFilter::is_empty"
    )]
    pub tools: ToolFilter,
    /// Time limit of one tool call in milliseconds (default 30 s). The call's own deadline
    /// applies too; the earlier one wins.
    #[serde(default, alias = "timeoutMs", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Time limit of starting the server and its handshake in milliseconds (default 30 s).
    #[serde(
        default,
        alias = "startupTimeoutMs",
        skip_serializing_if = "Option::is_none"
    )]
    pub startup_timeout_ms: Option<u64>,
    /// How long a stdio server may take to exit after its stdin is closed, in milliseconds
    /// (default 2 s); then its whole process group is killed.
    #[serde(
        default,
        alias = "shutdownGraceMs",
        skip_serializing_if = "Option::is_none"
    )]
    pub shutdown_grace_ms: Option<u64>,
    /// Time limit of one `tools/list` in milliseconds (default 10 s), pages included. A
    /// server that does not answer in time is left out of the turn, and listing it again
    /// waits for a back-off (1 s, doubling up to 30 s), so a hanging server cannot delay
    /// every turn.
    #[serde(
        default,
        alias = "listTimeoutMs",
        skip_serializing_if = "Option::is_none"
    )]
    pub list_timeout_ms: Option<u64>,
    /// Most bytes of one tool result (default 1 MiB): text beyond it is cut with a marker,
    /// media that does not fit is dropped with a note.
    #[serde(
        default,
        alias = "maxResultBytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_result_bytes: Option<usize>,
    /// Most tools offered from this server (default 128, after filtering, in name order); the
    /// rest are left out with a warning.
    #[serde(default, alias = "maxTools", skip_serializing_if = "Option::is_none")]
    pub max_tools: Option<usize>,
    /// Longest tool description in bytes (default 8 KiB); a longer one is cut.
    #[serde(
        default,
        alias = "maxDescriptionBytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_description_bytes: Option<usize>,
    /// Largest input schema of a tool in bytes of JSON (default 64 KiB); a tool with a larger
    /// one is left out with a warning.
    #[serde(
        default,
        alias = "maxSchemaBytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_schema_bytes: Option<usize>,
    /// A disabled server is listed in the registry's health but never started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// Default time limit of a tool call.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time limit of a start.
pub(crate) const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default grace period of a stdio shutdown.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Default time limit of a tool listing.
pub(crate) const DEFAULT_LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most bytes of a tool result.
pub(crate) const DEFAULT_MAX_RESULT_BYTES: usize = 1 << 20;
/// Default most tools offered per server.
pub(crate) const DEFAULT_MAX_TOOLS: usize = 128;
/// Default longest tool description.
pub(crate) const DEFAULT_MAX_DESCRIPTION_BYTES: usize = 8 * 1024;
/// Default largest tool input schema.
pub(crate) const DEFAULT_MAX_SCHEMA_BYTES: usize = 64 * 1024;

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("transport", &self.transport)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("inherit_env", &self.inherit_env)
            .field("cwd", &self.cwd)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "[redacted]"),
            )
            .field("tools", &self.tools)
            .field("timeout_ms", &self.timeout_ms)
            .field("startup_timeout_ms", &self.startup_timeout_ms)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("list_timeout_ms", &self.list_timeout_ms)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("max_tools", &self.max_tools)
            .field("max_description_bytes", &self.max_description_bytes)
            .field("max_schema_bytes", &self.max_schema_bytes)
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl ServerConfig {
    /// A stdio server: `command` with `args`.
    pub fn stdio<S: Into<String>>(
        command: impl Into<String>,
        args: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            command: Some(command.into()),
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A streamable HTTP server at `url`.
    pub fn streamable_http(url: impl Into<String>) -> Self {
        Self {
            transport: Some(TransportKind::StreamableHttp),
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// A legacy HTTP+SSE server whose event stream is at `url`.
    pub fn sse(url: impl Into<String>) -> Self {
        Self {
            transport: Some(TransportKind::Sse),
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Sets an environment variable of a stdio server.
    #[must_use]
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets the working directory of a stdio server.
    #[must_use]
    pub fn with_cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Adds an HTTP header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the bearer token of an HTTP server.
    #[must_use]
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Sets the tool filter.
    #[must_use]
    pub fn with_tool_filter(mut self, filter: ToolFilter) -> Self {
        self.tools = filter;
        self
    }

    /// Sets the time limit of one tool call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(millis(timeout));
        self
    }

    /// Sets the time limit of a start.
    #[must_use]
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout_ms = Some(millis(timeout));
        self
    }

    /// Sets the shutdown grace period of a stdio server.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace_ms = Some(millis(grace));
        self
    }

    /// Sets the time limit of one `tools/list`.
    #[must_use]
    pub fn with_list_timeout(mut self, timeout: Duration) -> Self {
        self.list_timeout_ms = Some(millis(timeout));
        self
    }

    /// Sets the most bytes of one tool result.
    #[must_use]
    pub fn with_max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = Some(bytes);
        self
    }

    /// Sets the most tools offered from this server.
    #[must_use]
    pub fn with_max_tools(mut self, tools: usize) -> Self {
        self.max_tools = Some(tools);
        self
    }

    /// Sets the longest tool description and the largest input schema, in bytes.
    #[must_use]
    pub fn with_listing_limits(mut self, description_bytes: usize, schema_bytes: usize) -> Self {
        self.max_description_bytes = Some(description_bytes);
        self.max_schema_bytes = Some(schema_bytes);
        self
    }

    /// The transport this configuration selects.
    ///
    /// # Errors
    /// When neither or both of `command` and `url` are set, or `type` contradicts them.
    pub fn transport_kind(&self) -> Result<TransportKind, String> {
        match (self.transport, &self.command, &self.url) {
            (_, Some(_), Some(_)) => Err("set either `command` or `url`, not both".to_owned()),
            (None | Some(TransportKind::Stdio), Some(_), None) => Ok(TransportKind::Stdio),
            (None, None, Some(_)) => Ok(TransportKind::Auto),
            (Some(kind @ TransportKind::Stdio), None, _) => {
                Err(format!("transport `{kind}` needs `command`"))
            }
            (Some(kind), None, Some(_)) => Ok(kind),
            (Some(kind), Some(_), None) => Err(format!("transport `{kind}` needs `url`")),
            (_, None, None) => Err("set `command` (stdio) or `url` (HTTP)".to_owned()),
        }
    }

    /// Checks the transport choice, header names and timeouts.
    ///
    /// # Errors
    /// What is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let kind = self.transport_kind()?;
        if kind == TransportKind::Stdio {
            if !self.headers.is_empty() || self.bearer_token.is_some() {
                return Err("`headers` and `bearer_token` apply to HTTP servers only".to_owned());
            }
        } else if !self.env.is_empty() || self.cwd.is_some() || !self.args.is_empty() {
            return Err("`args`, `env` and `cwd` apply to stdio servers only".to_owned());
        }
        for name in self.headers.keys() {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
        }
        let sizes = [
            self.max_result_bytes,
            self.max_tools,
            self.max_description_bytes,
            self.max_schema_bytes,
        ]
        .map(|v| v.map(|v| u64::try_from(v).unwrap_or(u64::MAX)));
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("startup_timeout_ms", self.startup_timeout_ms),
            ("list_timeout_ms", self.list_timeout_ms),
            ("max_result_bytes", sizes[0]),
            ("max_tools", sizes[1]),
            ("max_description_bytes", sizes[2]),
            ("max_schema_bytes", sizes[3]),
        ] {
            if value == Some(0) {
                return Err(format!("`{key}` must be greater than zero"));
            }
        }
        Ok(())
    }

    pub(crate) fn list_timeout(&self) -> Duration {
        self.list_timeout_ms
            .map_or(DEFAULT_LIST_TIMEOUT, Duration::from_millis)
    }

    pub(crate) fn max_result_bytes(&self) -> usize {
        self.max_result_bytes.unwrap_or(DEFAULT_MAX_RESULT_BYTES)
    }

    pub(crate) fn max_tools(&self) -> usize {
        self.max_tools.unwrap_or(DEFAULT_MAX_TOOLS)
    }

    pub(crate) fn max_description_bytes(&self) -> usize {
        self.max_description_bytes
            .unwrap_or(DEFAULT_MAX_DESCRIPTION_BYTES)
    }

    pub(crate) fn max_schema_bytes(&self) -> usize {
        self.max_schema_bytes.unwrap_or(DEFAULT_MAX_SCHEMA_BYTES)
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.timeout_ms
            .map_or(DEFAULT_CALL_TIMEOUT, Duration::from_millis)
    }

    pub(crate) fn startup_timeout(&self) -> Duration {
        self.startup_timeout_ms
            .map_or(DEFAULT_STARTUP_TIMEOUT, Duration::from_millis)
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace_ms
            .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Looks up an environment variable; see [`ClientOptions::with_env`](crate::ClientOptions::with_env).
pub(crate) type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Expands `${NAME}` and `${NAME:-default}` in `text` as a server configuration's values are
/// expanded when the server starts, reading variables through `env`; `$${` is a literal
/// `${`. A variable that is set but empty counts as unset.
///
/// ```
/// use promptkit_mcp::expand_variables;
///
/// let env = |name: &str| (name == "TOKEN").then(|| "t-123".to_owned());
/// assert_eq!(expand_variables("Bearer ${TOKEN}", &env).unwrap(), "Bearer t-123");
/// assert_eq!(expand_variables("${REGION:-eu} costs $$5", &env).unwrap(), "eu costs $$5");
/// assert_eq!(expand_variables("$${TOKEN}", &env).unwrap(), "${TOKEN}");
/// assert!(expand_variables("${MISSING}", &env).is_err());
/// ```
///
/// # Errors
/// An unterminated `${`, a reference that is not a variable name, or an unset variable
/// without a default (named; no value is ever in the message).
pub fn expand_variables(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    expand_collecting(text, env, &mut Vec::new())
}

/// [`expand_variables`] for the crate's lookups.
pub(crate) fn expand(text: &str, env: &EnvLookup) -> Result<String, String> {
    expand_collecting(text, &**env, &mut Vec::new())
}

/// [`expand_variables`], also collecting the substituted values (to keep them out of
/// messages).
pub(crate) fn expand_collecting(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    substituted: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unterminated `${`".to_owned())?;
            let spec = &after[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (spec, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{spec}}}` is not a variable reference"));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => {
                    out.push_str(&value);
                    substituted.push(value);
                }
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!("environment variable `{name}` is not set"));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvLookup {
        Arc::new(|name| match name {
            "TOKEN" => Some("s3cret".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        })
    }

    #[test]
    fn expands_variables() {
        let env = env();
        assert_eq!(expand("Bearer ${TOKEN}", &env).unwrap(), "Bearer s3cret");
        assert_eq!(expand("${MISSING:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(
            expand("$${TOKEN} costs $5", &env).unwrap(),
            "${TOKEN} costs $5"
        );
        assert_eq!(expand("plain", &env).unwrap(), "plain");
        let err = expand("${MISSING}", &env).unwrap_err();
        assert!(err.contains("MISSING"), "{err}");
        assert!(expand("${UNTERMINATED", &env).is_err());
        assert!(expand("${bad name}", &env).is_err());
        let mut substituted = Vec::new();
        let url = expand_collecting(
            "https://h/mcp?key=${TOKEN}&x=${MISSING:-1}",
            &*env,
            &mut substituted,
        );
        assert_eq!(url.unwrap(), "https://h/mcp?key=s3cret&x=1");
        assert_eq!(substituted, ["s3cret"]);
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("read_*", "read_file"));
        assert!(!glob("read_*", "write_file"));
        assert!(glob("*_admin", "drop_admin"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXcYYb"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn parses_common_shapes() {
        let config = McpConfig::from_json(
            r#"{"mcpServers": {
                "local": {"command": "node", "args": ["server.js"], "env": {"K": "v"},
                          "workingDir": "/srv", "autoApprove": ["x"],
                          "toolFilter": {"allowlist": ["a*"], "blocklist": ["ab"]}},
                "remote": {"type": "http", "url": "https://h/mcp", "bearerToken": "t",
                           "headers": {"X-A": "1"}, "timeoutMs": 5000},
                "old": {"transport": "sse", "url": "http://h/sse"},
                "off": {"command": "x", "disabled": true}
            }}"#,
        )
        .unwrap();
        let local = &config.servers["local"];
        assert_eq!(local.cwd.as_deref(), Some(Path::new("/srv")));
        assert!(local.tools.allows("abc"));
        assert!(!local.tools.allows("ab"));
        assert!(!local.tools.allows("b"));
        let remote = &config.servers["remote"];
        assert_eq!(
            remote.transport_kind().unwrap(),
            TransportKind::StreamableHttp
        );
        assert_eq!(remote.call_timeout(), Duration::from_secs(5));
        assert_eq!(
            config.servers["old"].transport_kind().unwrap(),
            TransportKind::Sse
        );
        assert!(config.servers["off"].disabled);

        let yaml = McpConfig::from_yaml(
            "servers:\n  files:\n    command: npx\n    args: [\"-y\", \"pkg\"]\n",
        )
        .unwrap();
        assert_eq!(yaml.servers["files"].args, ["-y", "pkg"]);
    }

    #[test]
    fn rejects_invalid_servers() {
        for (json, needle) in [
            (r#"{"mcpServers": {"a": {}}}"#, "set `command`"),
            (
                r#"{"mcpServers": {"a": {"command": "x", "url": "http://h"}}}"#,
                "not both",
            ),
            (
                r#"{"mcpServers": {"a": {"type": "sse", "command": "x"}}}"#,
                "needs `url`",
            ),
            (
                r#"{"mcpServers": {"a": {"type": "stdio", "url": "http://h"}}}"#,
                "needs `command`",
            ),
            (r#"{"mcpServers": {"a__b": {"command": "x"}}}"#, "__"),
            (
                r#"{"mcpServers": {"a": {"url": "http://h", "headers": {"bad header": "v"}}}}"#,
                "header name",
            ),
            (
                r#"{"mcpServers": {"a": {"command": "x", "headers": {"A": "v"}}}}"#,
                "HTTP servers only",
            ),
            (
                r#"{"mcpServers": {"a": {"command": "x", "timeout_ms": 0}}}"#,
                "greater than zero",
            ),
            (
                r#"{"mcpServers": {"a": {"type": "carrier-pigeon", "url": "x"}}}"#,
                "unknown variant",
            ),
        ] {
            let err = McpConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let config = ServerConfig::streamable_http("https://h/mcp")
            .with_header("Authorization", "Bearer hunter2")
            .with_bearer_token("hunter3");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("hunter3"),
            "{debug}"
        );
        assert!(debug.contains("Authorization"));
        let stdio = ServerConfig::stdio("srv", ["--x"]).with_env("API_KEY", "hunter4");
        assert!(!format!("{stdio:?}").contains("hunter4"));
    }
}
