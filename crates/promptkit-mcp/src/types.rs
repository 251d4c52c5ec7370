//! The crate's own view of MCP data: server information and health, tool annotations,
//! resources and prompts. rmcp's types stay inside the crate.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use promptkit_core::{ContentPart, Media, Message};
use serde::{Deserialize, Serialize};

use crate::config::{EnvLookup, TransportKind};

/// Options shared by every server of a registry.
#[derive(Clone)]
pub struct ClientOptions {
    pub(crate) client_name: String,
    pub(crate) client_version: String,
    pub(crate) env: EnvLookup,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("client_name", &self.client_name)
            .field("client_version", &self.client_version)
            .finish_non_exhaustive()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_name: "promptkit-rs".to_owned(),
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            env: Arc::new(|name| std::env::var(name).ok()),
        }
    }
}

impl ClientOptions {
    /// The defaults: client name `promptkit-rs`, this crate's version, and the process
    /// environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client name and version announced in the `initialize` handshake.
    #[must_use]
    pub fn with_client_info(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.client_name = name.into();
        self.client_version = version.into();
        self
    }

    /// Reads environment variables through `lookup` instead of the process environment: for
    /// `${NAME}` expansion in server configurations and for the variables stdio servers
    /// inherit (for secret managers and tests).
    #[must_use]
    pub fn with_env(
        mut self,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.env = Arc::new(lookup);
        self
    }
}

/// What a server said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The server's implementation name.
    pub name: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// The negotiated protocol version (`2025-06-18`, ...).
    pub protocol_version: String,
    /// Usage instructions the server gives its clients.
    pub instructions: Option<String>,
    /// Whether it offers tools.
    pub tools: bool,
    /// Whether it notifies changes of its tool list.
    pub tools_list_changed: bool,
    /// Whether it offers resources.
    pub resources: bool,
    /// Whether it offers prompts.
    pub prompts: bool,
}

/// The state of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerStatus {
    /// Not started yet: servers start on first use or with
    /// [`McpRegistry::start_all`](crate::McpRegistry::start_all).
    Idle,
    /// Connected.
    Running,
    /// The connection was lost (a stdio server exited, an event stream ended); the next use
    /// starts it again.
    Disconnected,
    /// The last start failed; the next use after a back-off tries again.
    Failed,
    /// Disabled in the configuration.
    Disabled,
    /// Shut down; never restarted.
    ShutDown,
}

/// A server's health, for status pages and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerHealth {
    /// The server name.
    pub name: String,
    /// Its state.
    pub status: ServerStatus,
    /// The transport in use (for [`TransportKind::Auto`], the detected one once connected).
    pub transport: TransportKind,
    /// The process id of a running stdio server.
    pub pid: Option<u32>,
    /// How many tools it offers after filtering, once listed.
    pub tools: Option<usize>,
    /// What the last listing left out or cut (a tool whose schema does not compile, a
    /// description over the limit, tools beyond `max_tools`).
    pub listing_warnings: Vec<String>,
    /// How many times it was started again after its connection was lost.
    pub restarts: u32,
    /// The last failure (a failed start or listing, a lost connection).
    pub last_error: Option<String>,
    /// The handshake information of the current connection.
    pub server: Option<ServerInfo>,
}

/// Hints a server gives about a tool. Hints are not guarantees: a server could lie.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolAnnotations {
    /// A human-readable title.
    pub title: Option<String>,
    /// The tool does not modify its environment.
    pub read_only: Option<bool>,
    /// The tool may destroy data (meaningful when not read-only).
    pub destructive: Option<bool>,
    /// Calling the tool again with the same arguments has no further effect.
    pub idempotent: Option<bool>,
    /// The tool reaches outside systems (the web, other services).
    pub open_world: Option<bool>,
}

/// A resource a server offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Resource {
    /// Its URI.
    pub uri: String,
    /// Its name.
    pub name: String,
    /// A human-readable title.
    pub title: Option<String>,
    /// What it is.
    pub description: Option<String>,
    /// Its media type.
    pub mime_type: Option<String>,
    /// Its size in bytes, when known.
    pub size: Option<u64>,
}

/// The contents of a resource (one read may return several, e.g. for a directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResourceContent {
    /// Text.
    Text {
        /// The URI of these contents.
        uri: String,
        /// Their media type.
        mime_type: Option<String>,
        /// The text.
        text: String,
    },
    /// Binary data.
    Blob {
        /// The URI of these contents.
        uri: String,
        /// Their media type.
        mime_type: Option<String>,
        /// The bytes (decoded from the wire's base64).
        #[serde(with = "base64_bytes")]
        data: Bytes,
    },
}

impl ResourceContent {
    /// The URI.
    pub fn uri(&self) -> &str {
        match self {
            Self::Text { uri, .. } | Self::Blob { uri, .. } => uri,
        }
    }

    /// The text, for text contents.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text { text, .. } => Some(text),
            Self::Blob { .. } => None,
        }
    }

    /// The contents as a content part for a model: text as text; images, audio and video by
    /// media type; any other binary data as a document named after the URI.
    pub fn to_content_part(&self) -> ContentPart {
        match self {
            Self::Text { text, .. } => ContentPart::text(text.clone()),
            Self::Blob {
                uri,
                mime_type,
                data,
            } => media_part(uri, mime_type.as_deref(), data.clone()),
        }
    }
}

/// A binary payload as the content part its media type calls for.
pub(crate) fn media_part(uri: &str, mime_type: Option<&str>, data: Bytes) -> ContentPart {
    let mime = mime_type.unwrap_or("application/octet-stream");
    let media = Media::bytes(data, mime);
    match mime.split('/').next() {
        Some("image") => ContentPart::Image(media),
        Some("audio") => ContentPart::Audio(media),
        Some("video") => ContentPart::Video(media),
        _ => {
            let name = uri
                .rsplit('/')
                .find(|segment| !segment.is_empty())
                .unwrap_or(uri);
            ContentPart::Document(media.with_name(name))
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(data))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// A prompt template a server offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Prompt {
    /// Its name.
    pub name: String,
    /// A human-readable title.
    pub title: Option<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Its arguments.
    pub arguments: Vec<PromptArgument>,
}

/// An argument of a [`Prompt`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PromptArgument {
    /// Its name.
    pub name: String,
    /// A human-readable title.
    pub title: Option<String>,
    /// What it means.
    pub description: Option<String>,
    /// Whether it must be given.
    pub required: bool,
}

/// A prompt rendered by its server: messages ready to send to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PromptResult {
    /// What the prompt is for.
    pub description: Option<String>,
    /// The messages, as conversation messages (user or assistant).
    pub messages: Vec<Message>,
}
