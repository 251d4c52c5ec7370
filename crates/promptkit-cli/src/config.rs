//! The configuration file: `--config <file>` or `PROMPTKIT_CONFIG` (YAML, or JSON by the
//! `.json` extension). Flags and their environment variables override what the file says;
//! the file overrides the built-in defaults. `examples/promptkit.yaml` documents every key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use promptkit::mcp::{McpConfig, ServerConfig};
use promptkit::providers::config::ProviderSpec;
use serde::Deserialize;

use crate::ConfigError;
use crate::serve::SystemMode;

/// What a configuration file may say. `Debug` hides what can hold a secret: credentials in
/// the state URL and the provider's header values.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The model provider, as in a `--provider-config` file.
    #[serde(default)]
    pub(crate) provider: Option<ProviderSpec>,
    /// The state store (`sqlite://<path>`, `memory`, `postgres://…`, `redis://…`).
    #[serde(default)]
    pub(crate) state: Option<String>,
    /// Seconds a conversation is kept after its last use (0: for ever).
    #[serde(default)]
    pub(crate) state_ttl_secs: Option<f64>,
    /// The most conversations `state: memory` keeps (the least recently used go first).
    #[serde(default)]
    pub(crate) memory_max_sessions: Option<usize>,
    /// The system prompt.
    #[serde(default)]
    pub(crate) system: Option<String>,
    /// Tool descriptor files or directories, relative to the configuration file.
    #[serde(default)]
    pub(crate) tools: Vec<PathBuf>,
    /// MCP servers in the common `mcpServers` shape.
    #[serde(default, rename = "mcpServers", alias = "mcp_servers")]
    pub(crate) mcp_servers: BTreeMap<String, ServerConfig>,
    /// Settings of `promptkit serve`.
    #[serde(default)]
    pub(crate) serve: ServeConfig,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("provider", &self.provider.as_ref().map(RedactedSpec))
            .field("state", &self.state.as_deref().map(redact_url))
            .field("state_ttl_secs", &self.state_ttl_secs)
            .field("memory_max_sessions", &self.memory_max_sessions)
            .field("system", &self.system)
            .field("tools", &self.tools)
            .field("mcp_servers", &self.mcp_servers)
            .field("serve", &self.serve)
            .finish()
    }
}

/// A provider spec without its header values or the credentials of its base URL.
struct RedactedSpec<'a>(&'a ProviderSpec);

impl fmt::Debug for RedactedSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spec = self.0;
        f.debug_struct("ProviderSpec")
            .field("kind", &spec.kind)
            .field("id", &spec.id)
            .field("model", &spec.model)
            .field("base_url", &spec.base_url.as_deref().map(redact_url))
            .field("api_key_env", &spec.api_key_env)
            .field("headers", &spec.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `url` with any password in it and its query string replaced by `***`, for messages and
/// `Debug`: `postgres://app:secret@db/x?sslpassword=y` becomes `postgres://app:***@db/x?***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, _)) => (rest, "?***"),
        None => (rest, ""),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{path}{query}")
}

/// The `serve` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeConfig {
    /// Where to listen.
    #[serde(default)]
    pub(crate) addr: Option<SocketAddr>,
    /// A file of API keys, one a line (`key` or `name:key`), relative to this file.
    #[serde(default)]
    pub(crate) api_keys_file: Option<PathBuf>,
    /// Listen beyond loopback without API keys.
    #[serde(default)]
    pub(crate) insecure_no_auth: bool,
    /// Host names the server answers for besides the loopback names (`*.example.com`, `*`).
    #[serde(default)]
    pub(crate) allowed_hosts: Vec<String>,
    /// Addresses or CIDR blocks whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    /// PEM certificate chain for TLS, relative to this file.
    #[serde(default)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for TLS, relative to this file.
    #[serde(default)]
    pub(crate) tls_key: Option<PathBuf>,
    /// Turns running at once.
    #[serde(default)]
    pub(crate) max_concurrency: Option<usize>,
    /// Turns waiting for a slot at once.
    #[serde(default)]
    pub(crate) max_queue: Option<usize>,
    /// Seconds a request waits for a slot.
    #[serde(default)]
    pub(crate) queue_timeout_secs: Option<f64>,
    /// Connections open at once.
    #[serde(default)]
    pub(crate) max_connections: Option<usize>,
    /// Seconds to send a request's headers.
    #[serde(default)]
    pub(crate) header_timeout_secs: Option<f64>,
    /// Seconds to send a request's body.
    #[serde(default)]
    pub(crate) body_timeout_secs: Option<f64>,
    /// Seconds a keep-alive connection may sit idle.
    #[serde(default)]
    pub(crate) idle_timeout_secs: Option<f64>,
    /// Seconds a response write may make no progress.
    #[serde(default)]
    pub(crate) write_timeout_secs: Option<f64>,
    /// Seconds of silence before a stream gets a keep-alive comment.
    #[serde(default)]
    pub(crate) sse_keepalive_secs: Option<f64>,
    /// Requests per minute per key (0: no limit).
    #[serde(default)]
    pub(crate) rate_limit_per_minute: Option<u32>,
    /// The largest request body in bytes.
    #[serde(default)]
    pub(crate) max_body_bytes: Option<usize>,
    /// The most messages in one request.
    #[serde(default)]
    pub(crate) max_messages: Option<usize>,
    /// The most output tokens a model call may ask for.
    #[serde(default)]
    pub(crate) max_output_tokens: Option<u32>,
    /// The cost ceiling of one turn in US dollars (0: none).
    #[serde(default)]
    pub(crate) max_turn_cost_usd: Option<f64>,
    /// `prepend`, `enforce` or `client`.
    #[serde(default)]
    pub(crate) system_mode: Option<SystemMode>,
    /// Take the client's `user` field as the turn's user.
    #[serde(default)]
    pub(crate) trust_client_user: bool,
    /// Seconds in-flight requests may finish after a shutdown signal.
    #[serde(default)]
    pub(crate) shutdown_grace_secs: Option<f64>,
}

impl ConfigFile {
    /// Reads and parses `path`; relative tool paths are resolved against its directory.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let serve = &mut config.serve;
        let files = config.tools.iter_mut().chain(
            [
                &mut serve.api_keys_file,
                &mut serve.tls_cert,
                &mut serve.tls_key,
            ]
            .into_iter()
            .flatten(),
        );
        for file in files {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// The MCP servers, checked; `None` when there are none.
    pub(crate) fn mcp(&self) -> Result<Option<McpConfig>, ConfigError> {
        if self.mcp_servers.is_empty() {
            return Ok(None);
        }
        let config = McpConfig {
            servers: self.mcp_servers.clone(),
        };
        config
            .validate()
            .map_err(|e| ConfigError(format!("mcpServers: {e}")))?;
        Ok(Some(config))
    }

    /// Parses configuration text; `origin` names it in errors and its extension picks JSON.
    pub(crate) fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let parsed = if origin.extension().and_then(|e| e.to_str()) == Some("json") {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| ConfigError(format!("config {}: {e}", origin.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/promptkit.yaml");
        let config = ConfigFile::load(&path).unwrap();
        let provider = config.provider.as_ref().unwrap();
        assert_eq!(provider.kind, "openai");
        assert_eq!(config.serve.max_concurrency, Some(64));
        assert_eq!(config.serve.system_mode, Some(SystemMode::Enforce));
        assert!(
            config.tools[0].join("lookup_order.yaml").is_file(),
            "{:?}",
            config.tools
        );
        let mcp = config.mcp().unwrap().unwrap();
        assert_eq!(mcp.servers.len(), 2);
    }

    #[test]
    fn debug_hides_credentials() {
        let config = ConfigFile::parse(
            "state: postgres://app:hunter2@db/x?sslpassword=p\n\
             provider: {type: openai-compatible, base_url: 'https://u:tok@gw/v1', \
             headers: {authorization: Bearer sk-live}}\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        let shown = format!("{config:?}");
        for secret in ["hunter2", "sslpassword", "tok@", "sk-live"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("postgres://app:***@db/x?***"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
        assert_eq!(redact_url("memory"), "memory");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = ConfigFile::parse("sytem: hi\n", Path::new("p.yaml")).unwrap_err();
        assert!(err.0.contains("unknown field `sytem`"), "{}", err.0);
        assert!(err.0.contains("p.yaml"), "{}", err.0);
        let err = ConfigFile::parse("{\"serve\": {\"addr\": \"nowhere\"}}", Path::new("c.json"))
            .unwrap_err();
        assert!(err.0.contains("c.json"), "{}", err.0);
    }
}
