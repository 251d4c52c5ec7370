//! The configuration file: `--config <file>` or `PROMPTKIT_CONFIG` (YAML, or JSON by the
//! `.json` extension). Flags and their environment variables override what the file says;
//! the file overrides the built-in defaults. `examples/promptkit.yaml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use promptkit::mcp::{McpConfig, ServerConfig};
use promptkit::providers::config::ProviderSpec;
use serde::Deserialize;

use crate::ConfigError;

/// What a configuration file may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The model provider, as in a `--provider-config` file.
    #[serde(default)]
    pub(crate) provider: Option<ProviderSpec>,
    /// The state store (`sqlite://<path>`, `memory`, `postgres://…`, `redis://…`).
    #[serde(default)]
    pub(crate) state: Option<String>,
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

/// The `serve` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeConfig {
    /// Where to listen.
    #[serde(default)]
    pub(crate) addr: Option<SocketAddr>,
    /// Turns running at once.
    #[serde(default)]
    pub(crate) max_concurrency: Option<usize>,
    /// Seconds a request waits for a slot.
    #[serde(default)]
    pub(crate) queue_timeout_secs: Option<f64>,
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
        for tool in &mut config.tools {
            if tool.is_relative() {
                *tool = base.join(&*tool);
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
        assert_eq!(config.serve.max_concurrency, Some(4096));
        assert!(
            config.tools[0].join("lookup_order.yaml").is_file(),
            "{:?}",
            config.tools
        );
        let mcp = config.mcp().unwrap().unwrap();
        assert_eq!(mcp.servers.len(), 2);
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
