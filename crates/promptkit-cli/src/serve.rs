//! `promptkit serve`: an OpenAI-compatible HTTP server in front of the agent.
//!
//! `POST /v1/chat/completions` (streaming as OpenAI-style SSE, or one JSON answer),
//! `GET /v1/models`, the sessions API (`GET`/`POST /v1/sessions`, `GET`/`DELETE
//! /v1/sessions/{id}`) and `GET /health`. Without a session header the request's messages are
//! the whole conversation (as with OpenAI); with `x-session-id` the server keeps the
//! conversation in its state store, in the calling key's namespace, and takes only the
//! request's last message. Tools configured on the server run inside the turn: the client sees
//! the final answer.
//!
//! Every request passes the edge first ([`edge()`]): the `Host` and `Origin` checks, the API key,
//! the rate limit and, for `POST`, the JSON content type; a turn then takes a place in the
//! bounded queue, its session (one turn at a time, across processes too) and a concurrency
//! slot. Decision 0014 explains the limits and their defaults.

mod auth;
mod conn;
mod edge;
mod error;
mod request;
mod sessions;
mod sse;
mod turn;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use futures_util::stream;
use promptkit::StateStore;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

pub(crate) use auth::ApiKeys;
use auth::Principal;
pub(crate) use conn::ConnLimits;
use conn::Peer;
pub(crate) use edge::TrustedProxies;
use edge::{HostPolicy, RateLimiter};
use error::{ApiError, json_response};
pub(crate) use request::RequestLimits;
use sessions::{LockError, SessionGuard, SessionLocks};
use sse::{SseFrames, SseState};
use turn::{AgentCache, TurnSpec};
pub(crate) use turn::{AgentFactory, Agents};

use crate::ConfigError;

/// What the operator's system prompt does to a client's `system` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SystemMode {
    /// The operator's prompt, then the client's.
    Prepend,
    /// The operator's prompt only; the client's system messages are dropped.
    Enforce,
    /// The client's system messages replace the operator's prompt.
    Client,
}

/// How `serve` runs.
#[derive(Debug)]
pub(crate) struct ServeOptions {
    /// Where to listen (port 0 picks a free port; the bound address is printed).
    pub(crate) addr: SocketAddr,
    /// The API keys; empty means no authentication.
    pub(crate) keys: ApiKeys,
    /// Listen beyond loopback without keys.
    pub(crate) insecure_no_auth: bool,
    /// Host names served besides the loopback names.
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) trusted_proxies: TrustedProxies,
    /// PEM certificate chain and private key.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) conn: ConnLimits,
    pub(crate) requests: RequestLimits,
    /// The largest request body.
    pub(crate) max_body_bytes: usize,
    /// Time to receive a request body.
    pub(crate) body_timeout: Duration,
    /// Turns running at once.
    pub(crate) max_concurrency: usize,
    /// Turns waiting for a slot or their session at once; one more gets 503 at once.
    pub(crate) max_queue: usize,
    /// How long a turn waits for a slot or its session.
    pub(crate) queue_timeout: Duration,
    /// Requests per minute per key (per client address without keys); 0 is no limit.
    pub(crate) rate_limit: u32,
    /// Silence after which a stream gets a keep-alive comment.
    pub(crate) sse_keep_alive: Duration,
    /// The operator's system prompt.
    pub(crate) system: Option<String>,
    pub(crate) system_mode: SystemMode,
    /// Take the client's `user` field as the turn's user.
    pub(crate) trust_client_user: bool,
    /// How long in-flight requests may finish after a shutdown signal.
    pub(crate) shutdown_grace: Duration,
}

/// Who is calling, put in the request's extensions by [`edge()`].
#[derive(Debug, Clone)]
struct Caller {
    request_id: String,
    principal: Arc<Principal>,
}

/// A turn's places: in the queue, its session, a concurrency slot. Dropped with the response.
#[derive(Debug)]
pub(crate) struct TurnGuard {
    _slot: OwnedSemaphorePermit,
    _session: Option<SessionGuard>,
    _ticket: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct App {
    agents: AgentCache,
    store: Arc<dyn StateStore>,
    model: String,
    /// `model` as a JSON string, for the chunks written as text.
    model_json: String,
    /// Turns admitted (running or waiting): the bound of the queue.
    tickets: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    keys: ApiKeys,
    anonymous: Arc<Principal>,
    hosts: HostPolicy,
    proxies: TrustedProxies,
    limiter: RateLimiter,
    rate_limited: bool,
    sessions: SessionLocks,
    requests: RequestLimits,
    max_body_bytes: usize,
    body_timeout: Duration,
    sse_keep_alive: Duration,
    system: Option<String>,
    system_mode: SystemMode,
    trust_client_user: bool,
    started: u64,
    ids: AtomicU64,
    /// Random per process, so request ids of replicas differ.
    request_prefix: String,
}

impl App {
    /// `chatcmpl-` and two hex numbers: the server's start time and a counter (8 digits or
    /// more). Written by hand: `format!` costs more than the rest of a response's fixed text.
    fn completion_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(9 + 16 + 16);
        id.push_str("chatcmpl-");
        push_hex(&mut id, self.started, 1);
        push_hex(&mut id, n, 8);
        id
    }

    /// `req_`, the process's random prefix and a counter.
    fn request_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(4 + self.request_prefix.len() + 16);
        id.push_str("req_");
        id.push_str(&self.request_prefix);
        push_hex(&mut id, n, 8);
        id
    }

    /// The checks every request passes before any work; on success the request carries its
    /// [`Caller`].
    fn admit(&self, request: &mut Request, request_id: &str) -> Result<(), ApiError> {
        let headers = request.headers();
        self.hosts.check(headers)?;
        if request.uri().path() == "/health" {
            return Ok(());
        }
        let peer = request
            .extensions()
            .get::<Peer>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |p| p.0);
        let client = self.proxies.client(peer, headers);
        let principal = if self.keys.is_empty() {
            self.rate_limit(|| format!("ip:{client}"))?;
            Arc::clone(&self.anonymous)
        } else {
            match self.keys.authenticate(headers) {
                Ok(principal) => {
                    self.rate_limit(|| format!("key:{}", principal.key_id))?;
                    principal
                }
                Err(refused) => {
                    // Guesses count against the guesser's address.
                    self.rate_limit(|| format!("ip:{client}"))?;
                    tracing::debug!(%request_id, %client, "refused: no valid API key");
                    return Err(refused);
                }
            }
        };
        if request.method() == Method::POST {
            request::require_json(headers)?;
        }
        request.extensions_mut().insert(Caller {
            request_id: request_id.to_owned(),
            principal,
        });
        Ok(())
    }

    fn rate_limit(&self, key: impl FnOnce() -> String) -> Result<(), ApiError> {
        if self.rate_limited {
            self.limiter.check(&key())
        } else {
            Ok(())
        }
    }

    /// Takes a place in the queue, then the session (when there is one) and a slot, waiting
    /// up to the queue timeout for both together.
    async fn admit_turn(
        &self,
        session: Option<&str>,
        request_id: &str,
    ) -> Result<TurnGuard, ApiError> {
        let ticket = Arc::clone(&self.tickets)
            .try_acquire_owned()
            .map_err(|e| match e {
                TryAcquireError::NoPermits => ApiError::queue_full(),
                TryAcquireError::Closed => ApiError::shutting_down(),
            })?;
        let deadline = Instant::now() + self.queue_timeout;
        let session =
            match session {
                None => None,
                Some(id) => Some(self.sessions.acquire(id, deadline).await.map_err(
                    |e| match e {
                        LockError::Busy => ApiError::session_busy(),
                        LockError::Store(e) => store_error(&e, request_id),
                    },
                )?),
            };
        let slot = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| ApiError::queue_timeout(self.queue_timeout))?
            .map_err(|_| ApiError::shutting_down())?;
        Ok(TurnGuard {
            _slot: slot,
            _session: session,
            _ticket: ticket,
        })
    }

    /// The turn's user: the client's `user` when trusted, else the key's name or id.
    fn user_for(&self, principal: &Principal, claimed: Option<String>) -> String {
        match claimed {
            Some(user) if self.trust_client_user => user,
            _ => principal.user_id(),
        }
    }

    /// The turn's system prompt from the operator's and the client's.
    fn system_for(&self, client: Option<String>) -> Option<String> {
        let Some(operator) = &self.system else {
            return client;
        };
        match (self.system_mode, client) {
            (SystemMode::Client, Some(client)) => Some(client),
            (SystemMode::Prepend, Some(client)) => Some(format!("{operator}\n\n{client}")),
            _ => Some(operator.clone()),
        }
    }
}

/// A failed store operation: logged in full, generic for the client.
fn store_error(error: &promptkit::StateError, request_id: &str) -> ApiError {
    tracing::warn!(%request_id, error = %turn::chain(error), "state store failed");
    ApiError::server(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "store_unavailable",
        "the session store failed",
        request_id,
    )
}

/// Appends `n` in lower-case hex, padded with zeros to at least `width` digits.
fn push_hex(out: &mut String, mut n: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [b'0'; 16];
    let mut start = digits.len();
    while n > 0 {
        start -= 1;
        digits[start] = DIGITS[usize::try_from(n & 0xf).unwrap_or_default()];
        n >>= 4;
    }
    start = start.min(digits.len().saturating_sub(width.max(1)));
    out.extend(digits[start..].iter().map(|&b| char::from(b)));
}

/// `bytes` random bytes (at most 32) from the operating system, in hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = [0_u8; 32];
    let buf = &mut buf[..bytes.min(32)];
    if let Err(e) = getrandom::fill(buf) {
        // Not expected on any supported platform; ids must still differ between processes.
        tracing::error!(error = %e, "the system random number generator failed");
        use sha2::Digest as _;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = format!(
            "{:?}{}{}",
            std::time::SystemTime::now(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let hash = sha2::Sha256::digest(seed.as_bytes());
        let len = buf.len();
        buf.copy_from_slice(&hash[..len]);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses to serve an address other than loopback without keys, unless told to.
///
/// # Errors
/// A [`ConfigError`] naming the missing authentication.
pub(crate) fn check_exposure(options: &ServeOptions) -> Result<(), ConfigError> {
    if options.keys.is_empty() && !options.addr.ip().is_loopback() && !options.insecure_no_auth {
        return Err(ConfigError(format!(
            "refusing to listen on {} without authentication: no API keys are configured \
             (set PROMPTKIT_API_KEYS or --api-keys-file, or pass --insecure-no-auth to serve \
             anyone who can reach the port)",
            options.addr
        )));
    }
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM, then lets in-flight requests finish for the grace
/// period.
///
/// # Errors
/// A [`ConfigError`] when the options are unsafe or unusable (a non-loopback address without
/// keys, a TLS file that cannot be read), or when the address cannot be bound.
pub(crate) async fn serve(
    factory: AgentFactory,
    store: Arc<dyn StateStore>,
    mut options: ServeOptions,
) -> Result<()> {
    check_exposure(&options)?;
    let tls = match &options.tls {
        Some((cert, key)) => Some(conn::tls_acceptor(cert, key)?),
        None => None,
    };
    let agents = AgentCache::new(factory, options.requests.max_output_tokens)
        .context("building the agents")?;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("binding {}", options.addr))?;
    let bound = listener.local_addr()?;
    if options.keys.is_empty() {
        eprintln!(
            "promptkit serve: no API keys configured: anyone who can reach {bound} can use \
             this server"
        );
    } else {
        eprintln!("promptkit serve: {} API keys", options.keys.len());
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("promptkit serve: listening on {scheme}://{bound}");

    let app = Arc::new(app(agents, store, &mut options, bound.ip()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("promptkit serve: shutting down, waiting for in-flight requests");
        let _ = stop_tx.send(true);
    });
    conn::run(
        listener,
        tls,
        router(app),
        options.conn,
        stop_rx,
        options.shutdown_grace,
    )
    .await;
    eprintln!("promptkit serve: stopped");
    Ok(())
}

fn app(
    agents: AgentCache,
    store: Arc<dyn StateStore>,
    options: &mut ServeOptions,
    bound: IpAddr,
) -> App {
    let model = agents.model().to_owned();
    let started = u64::try_from(promptkit::Timestamp::now().as_unix_millis() / 1000).unwrap_or(0);
    let concurrency = options.max_concurrency.clamp(1, Semaphore::MAX_PERMITS / 2);
    let queue = options.max_queue.min(Semaphore::MAX_PERMITS / 2);
    App {
        model_json: Value::from(model.as_str()).to_string(),
        model,
        agents,
        sessions: SessionLocks::new(Arc::clone(&store), sessions::LEASE_TTL),
        store,
        tickets: Arc::new(Semaphore::new(concurrency + queue)),
        slots: Arc::new(Semaphore::new(concurrency)),
        queue_timeout: options.queue_timeout,
        keys: std::mem::take(&mut options.keys),
        anonymous: Arc::new(Principal::anonymous()),
        hosts: HostPolicy::new(bound, &options.allowed_hosts),
        proxies: options.trusted_proxies.clone(),
        limiter: RateLimiter::new(options.rate_limit),
        rate_limited: options.rate_limit > 0,
        requests: options.requests,
        max_body_bytes: options.max_body_bytes,
        body_timeout: options.body_timeout,
        sse_keep_alive: options.sse_keep_alive,
        system: options.system.clone(),
        system_mode: options.system_mode,
        trust_client_user: options.trust_client_user,
        started,
        ids: AtomicU64::new(0),
        request_prefix: random_hex(4),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route(
            "/v1/sessions/{id}",
            get(show_session).delete(delete_session),
        )
        .route("/health", get(health))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            let mut error = ApiError::not_found();
            error.status = StatusCode::METHOD_NOT_ALLOWED;
            error.message = "this endpoint does not take that method".to_owned();
            error
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&app), edge))
        .with_state(app)
}

/// Runs [`App::admit`] and names the response with its request id.
async fn edge(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let request_id = app.request_id();
    let mut response = match app.admit(&mut request, &request_id) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Open to everyone (load balancers probe it), so it says nothing about the server's load.
async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn models(State(app): State<Arc<App>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{
            "id": app.model, "object": "model", "created": app.started, "owned_by": "promptkit"
        }]}),
    )
}

/// Reads a request body of at most `limit` bytes within `timeout`.
///
/// # Errors
/// 413 beyond the limit (at once when `Content-Length` says so), 408 at the timeout; both
/// close the connection, since the rest of the body is not read.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(ApiError::too_large(limit));
    }
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut first: Option<Bytes> = None;
        let mut joined: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|_| ApiError {
                close: true,
                ..ApiError::invalid("the request body could not be read")
            })?;
            let have = first.as_ref().map_or(0, Bytes::len) + joined.len();
            if have + chunk.len() > limit {
                return Err(ApiError::too_large(limit));
            }
            match first.take() {
                // A body in one chunk (the usual case) is kept as it is, without a copy.
                None if joined.is_empty() => first = Some(chunk),
                earlier => {
                    if let Some(earlier) = earlier {
                        joined.extend_from_slice(&earlier);
                    }
                    joined.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| Bytes::from(joined)))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::body_timeout())?
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, &headers, app.max_body_bytes, app.body_timeout).await?;
    let chat = request::parse_chat(&headers, &bytes, &app.requests)?;
    drop(bytes);
    let store_id = chat
        .session
        .as_deref()
        .map(|s| sessions::store_id(&caller.principal, s));
    let guard = app
        .admit_turn(store_id.as_deref(), &caller.request_id)
        .await?;
    let conversation = chat.conversation;
    let spec = TurnSpec {
        // The store holds the conversation; the client's copy of it is not replayed.
        history: if store_id.is_some() {
            Vec::new()
        } else {
            conversation.history
        },
        session: store_id,
        user: Some(app.user_for(&caller.principal, chat.user)),
        system: app.system_for(conversation.system),
        message: conversation.message,
        max_tokens: chat.max_tokens,
    };
    let running = turn::start(&app.agents, spec, &caller.request_id)?;

    let id = app.completion_id();
    let created = promptkit::Timestamp::now().as_unix_millis() / 1000;
    let mut response = if chat.stream {
        let state = SseState::new(
            running,
            &id,
            created,
            &app.model_json,
            chat.include_usage,
            caller.request_id.clone(),
            guard,
        );
        let mut frames = SseFrames::new(state, app.sse_keep_alive);
        let first = frames.first().await?;
        let frames = stream::iter(first.map(Ok)).chain(frames);
        let mut response = Response::new(Body::from_stream(frames));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        let result = running.finish().await;
        drop(guard);
        match result {
            Ok(reply) => json_response(
                StatusCode::OK,
                &turn::completion(&id, created, &app.model, &reply),
            ),
            Err(e) => return Err(turn::turn_error(&e, &caller.request_id)),
        }
    };
    if let Some(session) = chat.session
        && let Ok(value) = HeaderValue::from_str(&session)
    {
        response.headers_mut().insert("x-session-id", value);
    }
    Ok(response)
}

/// `POST /v1/sessions`: a new, random session id for the caller. Nothing is stored until
/// the first turn.
async fn create_session() -> Response {
    let id = format!("sess_{}", random_hex(16));
    json_response(StatusCode::CREATED, &json!({"id": id, "object": "session"}))
}

async fn list_sessions(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let query = Query::parse(request.uri().query().unwrap_or_default())?;
    let owner = app.user_for(&caller.principal, query.user);
    let listed = sessions::list(
        app.store.as_ref(),
        &caller.principal,
        owner,
        query.limit.unwrap_or(20),
        query.offset.unwrap_or(0),
    )
    .await
    .map_err(|e| store_error(&e, &caller.request_id))?;
    Ok(json_response(StatusCode::OK, &listed))
}

/// The query of `GET /v1/sessions`: `limit`, `offset` and, with `trust_client_user`, `user`.
#[derive(Debug, Default)]
struct Query {
    limit: Option<usize>,
    offset: Option<usize>,
    user: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut parsed = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || {
                value.parse::<usize>().map_err(|_| {
                    ApiError::invalid(format!("query parameter `{name}` must be a number"))
                })
            };
            match name {
                "limit" => parsed.limit = Some(number()?),
                "offset" => parsed.offset = Some(number()?),
                "user" => parsed.user = Some(percent_decode(value)?),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// Decodes `%XX` escapes and `+`.
fn percent_decode(value: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid("query parameter `user` is not valid percent-encoded UTF-8");
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A session id from a path, checked as the session header is.
fn session_path(id: &str) -> Result<(), ApiError> {
    if request::is_session_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid_with(
            "invalid_session_id",
            format!(
                "a session id is 1 to {} characters of A-Z, a-z, 0-9, `.`, `_`, `:` and `-`",
                request::MAX_SESSION_ID
            ),
        ))
    }
}

async fn show_session(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    session_path(&id)?;
    let store_id = sessions::store_id(&caller.principal, &id);
    match sessions::show(app.store.as_ref(), &store_id, &id).await {
        Ok(Some(session)) => Ok(json_response(StatusCode::OK, &session)),
        Ok(None) => Err(ApiError::no_session(&id)),
        Err(e) => Err(store_error(&e, &caller.request_id)),
    }
}

/// `DELETE /v1/sessions/{id}`: waits, as a turn would, for a turn running on the session.
async fn delete_session(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    session_path(&id)?;
    let store_id = sessions::store_id(&caller.principal, &id);
    let _session = app
        .sessions
        .acquire(&store_id, Instant::now() + app.queue_timeout)
        .await
        .map_err(|e| match e {
            LockError::Busy => ApiError::session_busy(),
            LockError::Store(e) => store_error(&e, &caller.request_id),
        })?;
    match app.store.delete(&store_id).await {
        Ok(true) => Ok(json_response(
            StatusCode::OK,
            &json!({"id": id, "object": "session.deleted", "deleted": true}),
        )),
        Ok(false) => Err(ApiError::no_session(&id)),
        Err(e) => Err(store_error(&e, &caller.request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, push_hex};

    #[test]
    fn hex_is_padded_to_the_width_and_never_cut() {
        let hex = |n, width| {
            let mut s = String::new();
            push_hex(&mut s, n, width);
            s
        };
        assert_eq!(hex(0, 1), "0");
        assert_eq!(hex(0, 8), "00000000");
        assert_eq!(hex(0x1a, 8), "0000001a");
        assert_eq!(hex(0x6_5f3e_1c2d, 1), format!("{:x}", 0x6_5f3e_1c2d_u64));
        assert_eq!(hex(u64::MAX, 8), "ffffffffffffffff");
        assert_eq!(hex(0x1_2345_6789, 8), "123456789");
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("ada+l%C3%BCt").unwrap(), "ada lüt");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%C3").is_err());
        assert!(percent_decode("%4").is_err());
    }
}
