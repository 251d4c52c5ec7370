//! The error type of the crate.

use std::path::PathBuf;
use std::time::Duration;

use promptkit_core::{BoxError, ToolError};

/// Why an MCP operation failed.
///
/// Every variant except [`McpError::Config`] and [`McpError::ConfigFile`] names the server.
/// Secrets from the configuration (header values, bearer tokens, expanded environment
/// variables) never appear in messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The configuration is invalid.
    #[error("invalid MCP configuration: {0}")]
    Config(String),
    /// A configuration file could not be read or parsed.
    #[error("cannot load MCP configuration `{path}`: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// No server has this name.
    #[error("unknown MCP server `{0}`")]
    UnknownServer(String),
    /// The server is disabled in the configuration.
    #[error("MCP server `{0}` is disabled")]
    Disabled(String),
    /// The server could not be started or connected to, or its handshake failed.
    #[error("MCP server `{server}` failed to start: {message}")]
    Start {
        /// The server.
        server: String,
        /// What went wrong, with the tail of the server's stderr for stdio servers.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The last start failed and the next attempt is not due yet.
    #[error("MCP server `{server}` is unavailable (retrying in {retry_in:?}): {message}")]
    Unavailable {
        /// The server.
        server: String,
        /// Why the last start failed.
        message: String,
        /// How long until the next start attempt.
        retry_in: Duration,
    },
    /// The server did not answer in time.
    #[error("MCP server `{server}` did not answer `{operation}` within {timeout:?}")]
    Timeout {
        /// The server.
        server: String,
        /// The MCP method (`tools/call`, `tools/list`, ...).
        operation: String,
        /// The time limit that passed.
        timeout: Duration,
    },
    /// The connection failed or was lost (the process exited, the HTTP request failed).
    ///
    /// A `tools/call` that fails this way is not repeated: the server may have run it.
    #[error("MCP server `{server}` connection failed during `{operation}`: {message}")]
    Transport {
        /// The server.
        server: String,
        /// The MCP method.
        operation: String,
        /// What went wrong.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The server answered with a JSON-RPC error.
    #[error("MCP server `{server}` rejected `{operation}` (code {code}): {message}")]
    Protocol {
        /// The server.
        server: String,
        /// The MCP method.
        operation: String,
        /// The JSON-RPC error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The server answered with something this client cannot use.
    #[error("MCP server `{server}` sent an unexpected answer to `{operation}`: {message}")]
    UnexpectedResponse {
        /// The server.
        server: String,
        /// The MCP method.
        operation: String,
        /// What was wrong.
        message: String,
    },
    /// The server was shut down; it is not restarted.
    #[error("MCP server `{0}` is shut down")]
    ShutDown(String),
}

impl McpError {
    /// The server the error is about, when it names one.
    pub fn server(&self) -> Option<&str> {
        match self {
            Self::Config(_) | Self::ConfigFile { .. } => None,
            Self::UnknownServer(server) | Self::Disabled(server) | Self::ShutDown(server) => {
                Some(server)
            }
            Self::Start { server, .. }
            | Self::Unavailable { server, .. }
            | Self::Timeout { server, .. }
            | Self::Transport { server, .. }
            | Self::Protocol { server, .. }
            | Self::UnexpectedResponse { server, .. } => Some(server),
        }
    }

    /// The error as a [`ToolError`] for a call of `tool`.
    ///
    /// Start failures become [`ToolError::SourceUnavailable`], timeouts
    /// [`ToolError::Timeout`], and everything else [`ToolError::Execution`].
    pub fn into_tool_error(self, tool: &str) -> ToolError {
        match self {
            Self::Timeout { timeout, .. } => ToolError::Timeout {
                name: tool.to_owned(),
                elapsed: timeout,
            },
            Self::Start { .. }
            | Self::Unavailable { .. }
            | Self::Disabled(_)
            | Self::ShutDown(_)
            | Self::UnknownServer(_) => ToolError::SourceUnavailable {
                source_name: self.server().unwrap_or_default().to_owned(),
                message: self.to_string(),
            },
            other => ToolError::Execution {
                name: tool.to_owned(),
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}
