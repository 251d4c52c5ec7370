//! One managed server: its connection, restarts, tool list, calls, resources and prompts.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use promptkit_core::{
    BoxFuture, ToolCall, ToolContext, ToolDef, ToolError, ToolExecutor, ToolResult, ToolSet,
};
use rmcp::model::{
    CallToolRequestParams, GetPromptRequestParams, PaginatedRequestParams,
    ReadResourceRequestParams,
};
use rmcp::{Peer, RoleClient, ServiceError};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{ServerConfig, TransportKind};
use crate::connection::{self, Connection, Handler};
use crate::convert;
use crate::error::McpError;
use crate::listing::{self, Limits, Pacing, ToolCache};
use crate::names;
use crate::types::{
    ClientOptions, Prompt, PromptResult, Resource, ResourceContent, ServerHealth, ServerStatus,
    ToolAnnotations,
};

/// First delay before retrying a failed start; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between start attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Most pages followed when listing.
const MAX_PAGES: usize = 1000;

/// One MCP server: connected on first use (or by [`McpServer::start`]), started again on next
/// use when its connection is lost, and shut down by [`McpServer::shutdown`] or when the last
/// handle (including every tool executor) is dropped.
///
/// It implements [`ToolSet`] over its tools (named `mcp__<server>__<tool>`), and hands out one
/// [`ToolExecutor`] per tool through [`McpServer::tools`]. Cloning is cheap and shares the
/// server.
///
/// A `tools/call` is sent at most once: when the connection fails during a call, the call
/// fails, because the server may have run it. Listing, reading resources and getting prompts
/// have no side effects and are tried once more on a new connection.
#[derive(Clone)]
pub struct McpServer {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: ServerConfig,
    /// The configured transport (may be [`TransportKind::Auto`]).
    kind: TransportKind,
    options: ClientOptions,
    http: reqwest::Client,
    state: Mutex<State>,
    /// Serialises starts, restarts and shutdown.
    start_lock: tokio::sync::Mutex<()>,
    /// Set when the tool list must be listed again (a `list_changed` notification, a restart).
    stale: Arc<AtomicBool>,
    /// Bumped when a tool list may have changed; shared by the servers of a registry.
    changes: Arc<watch::Sender<u64>>,
    tools: RwLock<Option<Arc<ToolCache>>>,
    /// Serialises tool listing.
    list_lock: tokio::sync::Mutex<()>,
    /// The transport detected for [`TransportKind::Auto`].
    detected: Mutex<Option<TransportKind>>,
    stats: Mutex<Stats>,
    /// Values never to show in messages, from the last start.
    secrets: Mutex<Vec<String>>,
    /// When the tool list may be listed next.
    pacing: Mutex<Pacing>,
}

enum State {
    Idle,
    Connected(Arc<Connection>),
    Failed { message: String, retry_at: Instant },
    ShutDown,
}

#[derive(Default)]
struct Stats {
    restarts: u32,
    failures: u32,
    last_error: Option<String>,
}

/// A tool of an MCP server, ready to register in a tool registry.
#[derive(Clone)]
pub struct McpTool {
    server: String,
    mcp_name: String,
    definition: ToolDef,
    annotations: ToolAnnotations,
    executor: Arc<McpToolExecutor>,
}

impl fmt::Debug for McpTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTool")
            .field("server", &self.server)
            .field("mcp_name", &self.mcp_name)
            .field("name", &self.definition.name)
            .finish_non_exhaustive()
    }
}

impl McpTool {
    /// The server.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The server's name for the tool.
    pub fn mcp_name(&self) -> &str {
        &self.mcp_name
    }

    /// The qualified name, `mcp__<server>__<tool>`: the name to register the tool under.
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// The definition to offer a model: the qualified name, the server's description and
    /// input schema, and its output schema when it declares one.
    pub fn definition(&self) -> &ToolDef {
        &self.definition
    }

    /// The server's hints about the tool.
    pub fn annotations(&self) -> &ToolAnnotations {
        &self.annotations
    }

    /// The time limit of one call of the tool: its server's `timeout_ms` (default 30 s). A
    /// tool registry that applies its own limit should use this one for MCP tools.
    pub fn timeout(&self) -> Duration {
        self.executor.server.config.call_timeout()
    }

    /// The executor that runs the tool on its server. It routes by the server's tool name,
    /// so it works under any registered name, and keeps the server alive while it exists.
    pub fn executor(&self) -> Arc<dyn ToolExecutor> {
        self.executor.clone()
    }
}

/// Runs one tool of one server.
struct McpToolExecutor {
    server: Arc<Inner>,
    mcp_name: String,
}

impl fmt::Debug for McpToolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpToolExecutor")
            .field("server", &self.server.name)
            .field("tool", &self.mcp_name)
            .finish()
    }
}

impl ToolExecutor for McpToolExecutor {
    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(self.server.call_tool(&self.mcp_name, call, ctx))
    }

    /// Each `tools/call` is bounded by the call's deadline (or the server's call timeout).
    fn enforces_deadline(&self) -> bool {
        true
    }
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let health = self.health();
        f.debug_struct("McpServer")
            .field("name", &health.name)
            .field("status", &health.status)
            .field("transport", &health.transport)
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// A server named `name` (see [`validate_server_name`](crate::validate_server_name)),
    /// with default options. Nothing starts yet.
    ///
    /// # Errors
    /// [`McpError::Config`] for an invalid name or configuration.
    pub fn new(name: impl Into<String>, config: ServerConfig) -> Result<Self, McpError> {
        Self::with_options(name, config, &ClientOptions::default())
    }

    /// [`McpServer::new`] with `options`.
    ///
    /// # Errors
    /// As [`McpServer::new`].
    pub fn with_options(
        name: impl Into<String>,
        config: ServerConfig,
        options: &ClientOptions,
    ) -> Result<Self, McpError> {
        Self::build(
            name.into(),
            config,
            options,
            Arc::new(watch::Sender::new(0)),
        )
    }

    pub(crate) fn build(
        name: String,
        config: ServerConfig,
        options: &ClientOptions,
        changes: Arc<watch::Sender<u64>>,
    ) -> Result<Self, McpError> {
        names::validate_server_name(&name).map_err(McpError::Config)?;
        let kind = config
            .transport_kind()
            .and_then(|kind| config.validate().map(|()| kind))
            .map_err(|e| McpError::Config(format!("server `{name}`: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(same_origin_redirects())
            .build()
            .map_err(|e| McpError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                config,
                kind,
                options: options.clone(),
                http,
                state: Mutex::new(State::Idle),
                start_lock: tokio::sync::Mutex::new(()),
                stale: Arc::new(AtomicBool::new(true)),
                changes,
                tools: RwLock::new(None),
                list_lock: tokio::sync::Mutex::new(()),
                detected: Mutex::new(None),
                stats: Mutex::new(Stats::default()),
                secrets: Mutex::new(Vec::new()),
                pacing: Mutex::new(Pacing::default()),
            }),
        })
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Starts the server (if it is not running) and lists its tools.
    ///
    /// # Errors
    /// Why the start or the listing failed.
    pub async fn start(&self) -> Result<(), McpError> {
        self.inner.tool_cache().await.map(|_| ())
    }

    /// The server's tools after filtering, sorted by name, starting the server if needed.
    /// The list is kept until the server says it changed or the server restarts.
    ///
    /// # Errors
    /// Why the start or the listing failed.
    pub async fn tools(&self) -> Result<Vec<McpTool>, McpError> {
        let cache = self.inner.tool_cache().await?;
        Ok(cache
            .tools
            .values()
            .map(|entry| McpTool {
                server: self.inner.name.clone(),
                mcp_name: entry.mcp_name.clone(),
                definition: entry.definition.clone(),
                annotations: entry.annotations.clone(),
                executor: Arc::new(McpToolExecutor {
                    server: self.inner.clone(),
                    mcp_name: entry.mcp_name.clone(),
                }),
            })
            .collect())
    }

    /// A counter that grows when a tool list may have changed (a `list_changed`
    /// notification, a listing that differs from the previous one).
    pub fn tools_generation(&self) -> u64 {
        *self.inner.changes.borrow()
    }

    /// Waits until [`McpServer::tools_generation`] exceeds `since`, and returns it.
    pub async fn tools_changed(&self, since: u64) -> u64 {
        wait_for_generation(&self.inner.changes, since).await
    }

    /// The server's state.
    pub fn health(&self) -> ServerHealth {
        self.inner.health()
    }

    /// Lists the server's resources.
    ///
    /// # Errors
    /// As for any request; [`McpError::Protocol`] when the server offers no resources.
    pub async fn list_resources(&self) -> Result<Vec<Resource>, McpError> {
        let items = self
            .inner
            .idempotent("resources/list", |peer| async move {
                let mut all = Vec::new();
                let mut cursors = Cursors::default();
                let mut params = None;
                loop {
                    let page = peer.list_resources(params).await?;
                    all.extend(page.resources);
                    match cursors.next(page.next_cursor)? {
                        Some(cursor) => params = Some(cursor),
                        None => return Ok(all),
                    }
                }
            })
            .await?;
        Ok(items.into_iter().map(convert::resource).collect())
    }

    /// Reads a resource.
    ///
    /// # Errors
    /// As for any request; [`McpError::Protocol`] for an unknown URI.
    pub async fn read_resource(&self, uri: &str) -> Result<Vec<ResourceContent>, McpError> {
        let result = self
            .inner
            .idempotent("resources/read", |peer| async move {
                peer.read_resource(ReadResourceRequestParams::new(uri))
                    .await
            })
            .await?;
        result
            .contents
            .into_iter()
            .map(|c| {
                convert::resource_content(c).map_err(|message| McpError::UnexpectedResponse {
                    server: self.inner.name.clone(),
                    operation: "resources/read".to_owned(),
                    message,
                })
            })
            .collect()
    }

    /// Lists the server's prompts.
    ///
    /// # Errors
    /// As for any request; [`McpError::Protocol`] when the server offers no prompts.
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>, McpError> {
        let items = self
            .inner
            .idempotent("prompts/list", |peer| async move {
                let mut all = Vec::new();
                let mut cursors = Cursors::default();
                let mut params = None;
                loop {
                    let page = peer.list_prompts(params).await?;
                    all.extend(page.prompts);
                    match cursors.next(page.next_cursor)? {
                        Some(cursor) => params = Some(cursor),
                        None => return Ok(all),
                    }
                }
            })
            .await?;
        Ok(items.into_iter().map(convert::prompt).collect())
    }

    /// Renders a prompt with `arguments`.
    ///
    /// # Errors
    /// As for any request; [`McpError::Protocol`] for an unknown prompt or missing
    /// arguments.
    pub async fn get_prompt(
        &self,
        name: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<PromptResult, McpError> {
        let args: Map<String, Value> = arguments
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let result = self
            .inner
            .idempotent("prompts/get", |peer| {
                let args = args.clone();
                async move {
                    peer.get_prompt(GetPromptRequestParams::new(name).with_arguments(args))
                        .await
                }
            })
            .await?;
        Ok(convert::prompt_result(result))
    }

    /// Closes the connection (a stdio server gets its grace period, then its process group is
    /// killed). The server is not started again; calls fail with [`McpError::ShutDown`].
    pub async fn shutdown(&self) {
        let _start = self.inner.start_lock.lock().await;
        let old = std::mem::replace(&mut *self.inner.state(), State::ShutDown);
        if let State::Connected(connection) = old {
            connection.close(false).await;
        }
    }
}

/// Redirects followed by the HTTP transports: within the server's origin only, at most five.
/// Configured headers (often credentials) go with every request, and reqwest strips only the
/// standard credential headers on a cross-host redirect, so another origin is never followed.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(reqwest::Url::origin);
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if first.is_some_and(|origin| origin == attempt.url().origin()) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Waits until the generation in `changes` exceeds `since`.
pub(crate) async fn wait_for_generation(changes: &watch::Sender<u64>, since: u64) -> u64 {
    let mut rx = changes.subscribe();
    // The sender lives as long as `changes`, so `wait_for` only returns `Ok`.
    match rx.wait_for(|g| *g > since).await {
        Ok(g) => *g,
        Err(_) => since,
    }
}

/// Follows pagination cursors, refusing loops.
#[derive(Default)]
struct Cursors {
    seen: HashSet<String>,
}

impl Cursors {
    /// The parameters of the next page, `None` after the last page.
    fn next(
        &mut self,
        cursor: Option<String>,
    ) -> Result<Option<PaginatedRequestParams>, ServiceError> {
        match cursor.filter(|c| !c.is_empty()) {
            None => Ok(None),
            Some(cursor) => {
                if self.seen.len() >= MAX_PAGES || !self.seen.insert(cursor.clone()) {
                    // A server that repeats a cursor would be listed forever.
                    return Err(ServiceError::UnexpectedResponse);
                }
                Ok(Some(
                    PaginatedRequestParams::default().with_cursor(Some(cursor)),
                ))
            }
        }
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces every known secret in `text`.
    fn scrub(&self, text: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        crate::process::scrub(text, &secrets)
    }

    /// The live connection, if there is one.
    fn live(&self) -> Option<Arc<Connection>> {
        match &*self.state() {
            State::Connected(c) if c.is_alive() => Some(c.clone()),
            _ => None,
        }
    }

    /// The live connection, starting (or restarting) the server when there is none.
    async fn connection(&self) -> Result<Arc<Connection>, McpError> {
        if self.config.disabled {
            return Err(McpError::Disabled(self.name.clone()));
        }
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let _start = self.start_lock.lock().await;
        let lost = {
            let mut state = self.state();
            match &*state {
                State::Connected(c) if c.is_alive() => return Ok(c.clone()),
                State::Connected(_) => match std::mem::replace(&mut *state, State::Idle) {
                    State::Connected(c) => Some(c),
                    _ => None,
                },
                State::Failed { message, retry_at } if Instant::now() < *retry_at => {
                    return Err(McpError::Unavailable {
                        server: self.name.clone(),
                        message: message.clone(),
                        retry_in: retry_at.saturating_duration_since(Instant::now()),
                    });
                }
                State::ShutDown => return Err(McpError::ShutDown(self.name.clone())),
                State::Idle | State::Failed { .. } => None,
            }
        };
        let restarting = lost.is_some();
        if let Some(lost) = lost {
            let why = lost.describe_loss();
            let why = self.scrub(&why);
            tracing::warn!(server = %self.name, "MCP connection lost, restarting: {why}");
            self.stats().last_error = Some(format!("connection lost: {why}"));
            self.stale.store(true, Ordering::SeqCst);
            // Whatever is left of the process group goes now.
            lost.close(true).await;
        }
        match self.start().await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                *self.state() = State::Connected(connection.clone());
                let mut stats = self.stats();
                stats.failures = 0;
                if restarting {
                    stats.restarts += 1;
                }
                tracing::info!(
                    server = %self.name,
                    transport = %connection.transport,
                    pid = connection.pid(),
                    "MCP server connected"
                );
                Ok(connection)
            }
            Err(e) => {
                let message = e.to_string();
                let mut stats = self.stats();
                stats.failures += 1;
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << stats.failures.saturating_sub(1).min(5))
                    .min(MAX_BACKOFF);
                stats.last_error = Some(message.clone());
                drop(stats);
                *self.state() = State::Failed {
                    message,
                    retry_at: Instant::now() + backoff,
                };
                tracing::warn!(server = %self.name, error = %e, "MCP server failed to start");
                Err(e)
            }
        }
    }

    /// Resolves the configuration and connects.
    async fn start(&self) -> Result<Connection, McpError> {
        let kind = self
            .detected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(self.kind);
        let resolved =
            connection::resolve(&self.config, kind, &self.options.env).map_err(|message| {
                McpError::Start {
                    server: self.name.clone(),
                    message,
                    source: None,
                }
            })?;
        resolved
            .secrets
            .clone_into(&mut self.secrets.lock().unwrap_or_else(PoisonError::into_inner));
        let make_handler = || {
            Handler::new(
                &self.name,
                &self.options,
                self.stale.clone(),
                self.changes.clone(),
            )
        };
        let connection = connection::connect(
            &self.name,
            &resolved,
            &make_handler,
            &self.http,
            self.config.startup_timeout(),
            self.config.call_timeout(),
        )
        .await
        .map_err(|e| match e {
            McpError::Start {
                server,
                message,
                source,
            } => McpError::Start {
                server,
                message: self.scrub(&message),
                source,
            },
            other => other,
        })?;
        if kind == TransportKind::Auto {
            *self.detected.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(connection.transport);
        }
        Ok(connection)
    }

    fn service_error(&self, operation: &str, e: ServiceError) -> McpError {
        let server = self.name.clone();
        let operation = operation.to_owned();
        match e {
            ServiceError::McpError(data) => McpError::Protocol {
                server,
                operation,
                code: data.code.0,
                message: self.scrub(&data.message),
            },
            ServiceError::Timeout { timeout } => McpError::Timeout {
                server,
                operation,
                timeout,
            },
            ServiceError::UnexpectedResponse => McpError::UnexpectedResponse {
                server,
                operation,
                message: "the result does not match the request".to_owned(),
            },
            ServiceError::TransportClosed => McpError::Transport {
                server,
                operation,
                message: "the connection is closed".to_owned(),
                source: None,
            },
            other => McpError::Transport {
                server,
                operation,
                message: self.scrub(&other.to_string()),
                source: None,
            },
        }
    }

    /// Runs a request without side effects with the call timeout; when the connection was
    /// lost, once more on a new connection.
    async fn idempotent<T, F, Fut>(&self, operation: &str, request: F) -> Result<T, McpError>
    where
        F: Fn(Peer<RoleClient>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        self.idempotent_within(operation, self.config.call_timeout(), request)
            .await
    }

    /// [`Inner::idempotent`] with `timeout` for the requests (not for a start).
    async fn idempotent_within<T, F, Fut>(
        &self,
        operation: &str,
        timeout: Duration,
        request: F,
    ) -> Result<T, McpError>
    where
        F: Fn(Peer<RoleClient>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let mut retried = false;
        loop {
            let connection = self.connection().await?;
            match tokio::time::timeout(timeout, request(connection.peer.clone())).await {
                Err(_) => {
                    return Err(McpError::Timeout {
                        server: self.name.clone(),
                        operation: operation.to_owned(),
                        timeout,
                    });
                }
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    let error = self.service_error(operation, e);
                    if matches!(error, McpError::Transport { .. }) {
                        connection.mark_broken();
                        if !retried {
                            retried = true;
                            continue;
                        }
                    }
                    return Err(error);
                }
            }
        }
    }

    /// The tool list, listed again when stale.
    ///
    /// A listing has [`ServerConfig::list_timeout_ms`] (lock wait included); one that fails
    /// or times out is not tried again before a back-off ends, and a stale list is re-listed
    /// at a bounded rate. Meanwhile the current list serves, when there is one.
    async fn tool_cache(&self) -> Result<Arc<ToolCache>, McpError> {
        let cached = self.cached_tools();
        if !self.stale.load(Ordering::SeqCst)
            && let Some(cache) = cached
        {
            return Ok(cache);
        }
        let backing_off = self.pacing().backing_off();
        if let Some((message, retry_in)) = backing_off {
            return cached.ok_or_else(|| McpError::Unavailable {
                server: self.name.clone(),
                message,
                retry_in,
            });
        }
        if let Some(cache) = &cached
            && !self.pacing().take_relist()
        {
            return Ok(cache.clone());
        }
        let limit = self.config.list_timeout();
        let timed_out = || McpError::Timeout {
            server: self.name.clone(),
            operation: "tools/list".to_owned(),
            timeout: limit,
        };
        let deadline = tokio::time::Instant::now() + limit;
        let Ok(_list) = tokio::time::timeout_at(deadline, self.list_lock.lock()).await else {
            // Another caller is listing and has not finished in time.
            return cached.ok_or_else(timed_out);
        };
        if !self.stale.load(Ordering::SeqCst)
            && let Some(cache) = self.cached_tools()
        {
            return Ok(cache);
        }
        // Cleared first, so a `list_changed` arriving while listing marks it stale again.
        self.stale.store(false, Ordering::SeqCst);
        let listed = match self.list_tools(deadline).await {
            Ok(listed) => listed,
            Err(e) => {
                self.stale.store(true, Ordering::SeqCst);
                if !matches!(e, McpError::Start { .. } | McpError::Unavailable { .. }) {
                    self.stats().last_error = Some(e.to_string());
                    let backoff = self.pacing().failed(e.to_string());
                    tracing::warn!(server = %self.name, error = %e, retry_in = ?backoff, "MCP tool listing failed");
                }
                return cached.ok_or(e);
            }
        };
        self.pacing().succeeded();
        let (tools, complete) = listed;
        let cache = Arc::new(listing::build(
            &self.name,
            &self.config.tools,
            &Limits::of(&self.config),
            tools,
            complete,
        ));
        let changed = self.cached_tools().is_none_or(|old| {
            old.tools.len() != cache.tools.len()
                || old
                    .tools
                    .values()
                    .zip(cache.tools.values())
                    .any(|(a, b)| a.definition != b.definition)
        });
        *self.tools.write().unwrap_or_else(PoisonError::into_inner) = Some(cache.clone());
        if changed {
            self.changes.send_modify(|g| *g += 1);
        }
        Ok(cache)
    }

    /// Every page of `tools/list` until `deadline`, stopping early once enough tools pass the
    /// filter; `true` when the listing is complete.
    async fn list_tools(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<rmcp::model::Tool>, bool), McpError> {
        let limit = self.config.list_timeout();
        let enough = Limits::of(&self.config).enough();
        let filter = &self.config.tools;
        let listing = self.idempotent_within("tools/list", limit, |peer| async move {
            let mut all = Vec::new();
            let mut offered = 0_usize;
            let mut cursors = Cursors::default();
            let mut params = None;
            loop {
                let page = peer.list_tools(params).await?;
                offered += page.tools.iter().filter(|t| filter.allows(&t.name)).count();
                all.extend(page.tools);
                match cursors.next(page.next_cursor)? {
                    Some(_) if offered >= enough => return Ok((all, false)),
                    Some(cursor) => params = Some(cursor),
                    None => return Ok((all, true)),
                }
            }
        });
        match tokio::time::timeout_at(deadline, listing).await {
            Ok(result) => result,
            Err(_) => Err(McpError::Timeout {
                server: self.name.clone(),
                operation: "tools/list".to_owned(),
                timeout: limit,
            }),
        }
    }

    fn cached_tools(&self) -> Option<Arc<ToolCache>> {
        self.tools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn pacing(&self) -> std::sync::MutexGuard<'_, Pacing> {
        self.pacing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one `tools/call`, at most once.
    async fn call_tool(
        &self,
        mcp_name: &str,
        call: &ToolCall,
        ctx: &ToolContext,
    ) -> Result<ToolResult, ToolError> {
        let started = Instant::now();
        let limit = ctx.remaining().map_or(self.config.call_timeout(), |r| {
            r.min(self.config.call_timeout())
        });
        let arguments = match &call.arguments {
            Value::Object(map) => map.clone(),
            Value::Null => Map::new(),
            other => {
                return Err(ToolError::InvalidArguments {
                    name: call.name.clone(),
                    message: format!("arguments must be a JSON object, not {other}"),
                });
            }
        };
        let span = tracing::debug_span!("mcp.tools.call", server = %self.name, tool = mcp_name, call_id = %call.id);
        let work = async {
            let connection = self
                .connection()
                .await
                .map_err(|e| e.into_tool_error(&call.name))?;
            let params = CallToolRequestParams::new(mcp_name.to_owned()).with_arguments(arguments);
            match connection.peer.call_tool(params).await {
                Ok(result) => Ok(convert::tool_result(
                    call,
                    result,
                    self.config.max_result_bytes(),
                )),
                Err(e) => {
                    let error = self.service_error("tools/call", e);
                    if matches!(error, McpError::Transport { .. }) {
                        // Not repeated (the server may have run it); the next use reconnects.
                        connection.mark_broken();
                    }
                    tracing::debug!(error = %error, "MCP tool call failed");
                    Err(error.into_tool_error(&call.name))
                }
            }
        };
        match tokio::time::timeout(limit, tracing::Instrument::instrument(work, span)).await {
            Ok(result) => result,
            // Dropping the request sends `notifications/cancelled` to the server.
            Err(_) => Err(ToolError::Timeout {
                name: call.name.clone(),
                elapsed: started.elapsed(),
            }),
        }
    }

    /// The tool set's view of a call: the tool must be listed (after filtering) and the
    /// arguments must match its schema.
    async fn execute(&self, call: &ToolCall, ctx: &ToolContext) -> Result<ToolResult, ToolError> {
        let cache = self
            .tool_cache()
            .await
            .map_err(|e| e.into_tool_error(&call.name))?;
        let Some(entry) = cache.tools.get(&call.name) else {
            return Err(ToolError::UnknownTool {
                name: call.name.clone(),
            });
        };
        if let Value::String(raw) = &call.arguments {
            return Err(ToolError::InvalidArguments {
                name: call.name.clone(),
                message: format!("arguments are not a JSON object: {raw}"),
            });
        }
        let arguments = if call.arguments.is_null() {
            Value::Object(Map::new())
        } else {
            call.arguments.clone()
        };
        entry
            .validate(&arguments)
            .map_err(|message| ToolError::InvalidArguments {
                name: call.name.clone(),
                message,
            })?;
        self.call_tool(&entry.mcp_name, call, ctx).await
    }

    fn health(&self) -> ServerHealth {
        let (status, connection) = match &*self.state() {
            _ if self.config.disabled => (ServerStatus::Disabled, None),
            State::Idle => (ServerStatus::Idle, None),
            State::Connected(c) if c.is_alive() => (ServerStatus::Running, Some(c.clone())),
            State::Connected(_) => (ServerStatus::Disconnected, None),
            State::Failed { .. } => (ServerStatus::Failed, None),
            State::ShutDown => (ServerStatus::ShutDown, None),
        };
        let stats = self.stats();
        let cache = self.cached_tools();
        let transport = self
            .detected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(self.kind);
        ServerHealth {
            name: self.name.clone(),
            status,
            transport,
            pid: connection.as_ref().and_then(|c| c.pid()),
            tools: cache.as_ref().map(|c| c.tools.len()),
            listing_warnings: cache.map(|c| c.warnings.clone()).unwrap_or_default(),
            restarts: stats.restarts,
            last_error: stats.last_error.clone(),
            server: connection.and_then(|c| c.info.clone()),
        }
    }
}

impl ToolSet for McpServer {
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>> {
        Box::pin(async move {
            let cache =
                self.inner
                    .tool_cache()
                    .await
                    .map_err(|e| ToolError::SourceUnavailable {
                        source_name: self.inner.name.clone(),
                        message: e.to_string(),
                    })?;
            Ok(cache.tools.values().map(|e| e.definition.clone()).collect())
        })
    }

    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(self.inner.execute(call, ctx))
    }

    /// Each `tools/call` is bounded by the call's deadline (or the server's call timeout).
    fn enforces_deadline(&self) -> bool {
        true
    }
}
