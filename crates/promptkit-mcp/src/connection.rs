//! One connection to one server: resolving the configuration, opening the transport, the
//! handshake, and closing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{
    ClientInitializeError, MaybeSendFuture, NotificationContext, RunningService, serve_client,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, Peer, RoleClient};
use tokio::sync::watch;

use crate::config::{EnvLookup, ServerConfig, TransportKind, expand, expand_collecting};
use crate::convert;
use crate::error::McpError;
use crate::process::{self, ChildProcess, Spawn, StderrTail};
use crate::sse;
use crate::types::{ClientOptions, ServerInfo};

/// Variables every stdio server inherits (the set the reference MCP SDKs pass), besides
/// `inherit_env` and `env`.
#[cfg(unix)]
const DEFAULT_INHERITED_ENV: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "TMPDIR", "LANG",
];
#[cfg(windows)]
const DEFAULT_INHERITED_ENV: &[&str] = &[
    "APPDATA",
    "HOMEDRIVE",
    "HOMEPATH",
    "LOCALAPPDATA",
    "PATH",
    "PATHEXT",
    "PROCESSOR_ARCHITECTURE",
    "SYSTEMDRIVE",
    "SYSTEMROOT",
    "TEMP",
    "TMP",
    "USERNAME",
    "USERPROFILE",
    "PROGRAMFILES",
];
#[cfg(not(any(unix, windows)))]
const DEFAULT_INHERITED_ENV: &[&str] = &["PATH"];

/// A configuration with its `${VAR}`s expanded, ready to connect.
pub(crate) struct Resolved {
    pub(crate) target: Target,
    /// Values to keep out of messages (header values, tokens, `env` values).
    pub(crate) secrets: Vec<String>,
}

pub(crate) enum Target {
    Stdio(Spawn),
    Http {
        url: String,
        /// Configured headers, without the bearer token.
        headers: HeaderMap,
        bearer: Option<String>,
        kind: TransportKind,
    },
}

/// Expands `config` through `env`.
pub(crate) fn resolve(
    config: &ServerConfig,
    kind: TransportKind,
    env: &EnvLookup,
) -> Result<Resolved, String> {
    let mut secrets = Vec::new();
    let target = if kind == TransportKind::Stdio {
        // Values expanded into the command line are secrets too: `${TOKEN}` in `args` is
        // common, and the command line shows in errors (and in `ps`).
        let program = expand_collecting(
            config.command.as_deref().unwrap_or_default(),
            &**env,
            &mut secrets,
        )
        .map_err(|e| format!("`command`: {e}"))?;
        let args = config
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                expand_collecting(a, &**env, &mut secrets).map_err(|e| format!("`args[{i}]`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut set = |name: &str, value: String| {
            vars.retain(|(n, _)| n != name);
            vars.push((name.to_owned(), value));
        };
        for name in DEFAULT_INHERITED_ENV
            .iter()
            .copied()
            .chain(config.inherit_env.iter().map(String::as_str))
        {
            if let Some(value) = env(name) {
                set(name, value);
            }
        }
        for (name, value) in &config.env {
            let value = expand(value, env).map_err(|e| format!("`env.{name}`: {e}"))?;
            secrets.push(value.clone());
            set(name, value);
        }
        let cwd = config
            .cwd
            .as_ref()
            .map(|dir| {
                dir.to_str()
                    .map_or(Ok(dir.clone()), |s| expand(s, env).map(Into::into))
            })
            .transpose()?;
        Target::Stdio(Spawn {
            program,
            args,
            env: vars,
            cwd,
            grace: config.shutdown_grace(),
            secrets: Vec::new(),
        })
    } else {
        // Variables in the URL are often tokens in the query: keep their values secret.
        let url = expand_collecting(
            config.url.as_deref().unwrap_or_default(),
            &**env,
            &mut secrets,
        )
        .map_err(|e| format!("`url`: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let value = expand(value, env).map_err(|e| format!("header `{name}`: {e}"))?;
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
            let mut header_value = HeaderValue::from_str(&value)
                .map_err(|_| format!("the value of header `{name}` is not valid"))?;
            header_value.set_sensitive(true);
            secrets.push(value);
            headers.insert(header, header_value);
        }
        let bearer = config
            .bearer_token
            .as_deref()
            .map(|t| expand(t, env))
            .transpose()
            .map_err(|e| format!("`bearer_token`: {e}"))?;
        if let Some(token) = &bearer {
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "`bearer_token` is not a valid header value".to_owned())?;
            secrets.push(token.clone());
        }
        Target::Http {
            url,
            headers,
            bearer,
            kind,
        }
    };
    // Short values ("1", "en") would blank out ordinary words of every message; longer
    // secrets go first so that one containing another is replaced whole.
    secrets.retain(|s| s.len() >= 4);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut target = target;
    if let Target::Stdio(spawn) = &mut target {
        spawn.secrets.clone_from(&secrets);
    }
    Ok(Resolved { target, secrets })
}

/// Receives server notifications and answers server requests.
pub(crate) struct Handler {
    server: String,
    client: ClientConfig,
    /// Set when the tool list must be listed again.
    stale: Arc<AtomicBool>,
    /// Bumped when a tool list may have changed.
    changes: Arc<watch::Sender<u64>>,
}

impl Handler {
    pub(crate) fn new(
        server: &str,
        options: &ClientOptions,
        stale: Arc<AtomicBool>,
        changes: Arc<watch::Sender<u64>>,
    ) -> Self {
        // No sampling, roots or elicitation capabilities: server requests for them are
        // answered with errors or declined, never left unanswered.
        let client = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(&options.client_name, &options.client_version),
        );
        Self {
            server: server.to_owned(),
            client,
            stale,
            changes,
        }
    }
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        self.client.clone()
    }

    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        tracing::trace!(server = %self.server, "MCP tool list changed");
        // One bump per change of state: a flood of notifications before the next listing
        // wakes watchers once.
        if !self.stale.swap(true, Ordering::SeqCst) {
            self.changes.send_modify(|g| *g += 1);
        }
        std::future::ready(())
    }
}

/// A live connection.
pub(crate) struct Connection {
    pub(crate) peer: Peer<RoleClient>,
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, Handler>>>,
    process: Mutex<Option<ChildProcess>>,
    pub(crate) transport: TransportKind,
    pub(crate) info: Option<ServerInfo>,
    pid: Option<u32>,
    stderr: Option<StderrTail>,
    /// Set after a transport failure: the next use opens a new connection.
    broken: AtomicBool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("transport", &self.transport)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether the connection can carry requests: the service loop runs and, for stdio,
    /// the process has not exited.
    pub(crate) fn is_alive(&self) -> bool {
        if self.broken.load(Ordering::SeqCst) || self.peer.is_transport_closed() {
            return false;
        }
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        process.as_mut().is_none_or(|p| !p.has_exited())
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Marks the connection unusable after a transport failure (an HTTP server that
    /// restarted and forgot the session, an unreachable host), so that the next use opens a
    /// new one. The failed request itself is not repeated.
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }

    /// Why a connection that is no longer alive was lost, with the last stderr lines of a
    /// stdio server.
    pub(crate) fn describe_loss(&self) -> String {
        let exited = self
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .is_some_and(ChildProcess::has_exited);
        let why = if exited {
            "the server process exited"
        } else if self.peer.is_transport_closed() {
            "the connection closed"
        } else {
            "a request failed in transport"
        };
        let tail = self
            .stderr
            .as_ref()
            .map(StderrTail::joined)
            .unwrap_or_default();
        if tail.is_empty() {
            why.to_owned()
        } else {
            format!("{why} (stderr: {tail})")
        }
    }

    /// Closes the connection: stops the service (which closes a stdio server's stdin), then
    /// stops the process within the grace period, or at once when `immediate`.
    pub(crate) async fn close(&self, immediate: bool) {
        let service = self.service.lock().await.take();
        if let Some(mut service) = service {
            let _ = service.close_with_timeout(Duration::from_secs(1)).await;
        }
        let process = self
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(process) = process {
            process.shutdown(immediate).await;
        }
    }
}

/// Opens a connection per `resolved` and runs the handshake, within `startup`.
pub(crate) async fn connect(
    server: &str,
    resolved: &Resolved,
    handler: &(dyn Fn() -> Handler + Send + Sync),
    http: &reqwest::Client,
    startup: Duration,
    call_timeout: Duration,
) -> Result<Connection, McpError> {
    let fail = |message: String| McpError::Start {
        server: server.to_owned(),
        message,
        source: None,
    };
    match &resolved.target {
        Target::Stdio(spec) => connect_stdio(server, spec, handler(), startup).await,
        Target::Http {
            url,
            headers,
            bearer,
            kind,
        } => {
            let deadline = tokio::time::Instant::now() + startup;
            let streamable = |deadline: tokio::time::Instant| async move {
                let mut custom = HashMap::new();
                for (name, value) in headers {
                    custom.insert(name.clone(), value.clone());
                }
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(custom)
                    .reinit_on_expired_session(true);
                if let Some(token) = bearer {
                    config = config.auth_header(token.clone());
                }
                let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
                handshake(handler(), transport, deadline).await
            };
            let legacy = || async {
                let mut headers = headers.clone();
                if let Some(token) = bearer {
                    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                        .map_err(|_| "the bearer token is not a valid header value".to_owned())?;
                    value.set_sensitive(true);
                    headers.insert(AUTHORIZATION, value);
                }
                let open = sse::connect(http.clone(), url, headers, call_timeout);
                let transport = match tokio::time::timeout_at(deadline, open).await {
                    Ok(Ok(transport)) => transport,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err(format!("no `endpoint` event within {startup:?}")),
                };
                handshake(handler(), transport, deadline).await
            };
            let (service, transport) = match kind {
                TransportKind::Sse => (legacy().await.map_err(fail)?, TransportKind::Sse),
                // Detection leaves the legacy attempt at least half of the time.
                TransportKind::Auto => {
                    match streamable(tokio::time::Instant::now() + startup / 2).await {
                        Ok(service) => (service, TransportKind::StreamableHttp),
                        Err(first) => match legacy().await {
                            Ok(service) => (service, TransportKind::Sse),
                            Err(second) => {
                                return Err(fail(format!(
                                    "streamable HTTP: {first}; legacy SSE: {second}"
                                )));
                            }
                        },
                    }
                }
                _ => (
                    streamable(deadline).await.map_err(fail)?,
                    TransportKind::StreamableHttp,
                ),
            };
            Ok(Connection::new(service, None, transport))
        }
    }
}

async fn connect_stdio(
    server: &str,
    spec: &Spawn,
    handler: Handler,
    startup: Duration,
) -> Result<Connection, McpError> {
    let (process, stdout, stdin) = process::spawn(server, spec).map_err(|e| McpError::Start {
        server: server.to_owned(),
        message: format!("cannot run `{}`: {e}", spec.program),
        source: Some(Box::new(e)),
    })?;
    let deadline = tokio::time::Instant::now() + startup;
    match handshake(handler, (stdout, stdin), deadline).await {
        Ok(service) => Ok(Connection::new(
            service,
            Some(process),
            TransportKind::Stdio,
        )),
        Err(message) => {
            let stderr = process.stderr().clone();
            // The server is no use; stop it now and let its last words reach the log.
            process.shutdown_now();
            stderr.wait_closed(Duration::from_millis(500)).await;
            let tail = stderr.joined();
            let message = if tail.is_empty() {
                message
            } else {
                format!("{message} (stderr: {tail})")
            };
            Err(McpError::Start {
                server: server.to_owned(),
                message,
                source: None,
            })
        }
    }
}

/// Runs the `initialize` handshake over `transport` until `deadline`.
async fn handshake<T, E, A>(
    handler: Handler,
    transport: T,
    deadline: tokio::time::Instant,
) -> Result<RunningService<RoleClient, Handler>, String>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout_at(deadline, serve_client(handler, transport)).await {
        Ok(Ok(service)) => Ok(service),
        Ok(Err(e)) => Err(describe_init_error(&e)),
        Err(_) => Err("the handshake timed out".to_owned()),
    }
}

fn describe_init_error(e: &ClientInitializeError) -> String {
    if e.is_authorization_required() {
        return format!("authorization required (check `bearer_token` and `headers`): {e}");
    }
    match e {
        ClientInitializeError::ConnectionClosed(_) => {
            "the server closed the connection during the handshake".to_owned()
        }
        other => other.to_string(),
    }
}

impl Connection {
    fn new(
        service: RunningService<RoleClient, Handler>,
        process: Option<ChildProcess>,
        transport: TransportKind,
    ) -> Self {
        let peer = service.peer().clone();
        let info = peer.peer_info().map(|info| convert::server_info(&info));
        let pid = process.as_ref().and_then(ChildProcess::pid);
        let stderr = process.as_ref().map(|p| p.stderr().clone());
        Self {
            peer,
            service: tokio::sync::Mutex::new(Some(service)),
            process: Mutex::new(process),
            transport,
            info,
            pid,
            stderr,
            broken: AtomicBool::new(false),
        }
    }
}
