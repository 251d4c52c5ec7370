//! Test harness: the stdio server (this test binary, re-executed), in-process HTTP and legacy
//! SSE servers on 127.0.0.1, and process helpers.

pub(crate) mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use promptkit_core::{ToolCall, ToolContext, ToolError, ToolResult, ToolSet};
use promptkit_mcp::ServerConfig;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServiceExt as _};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

pub(crate) use server::{
    Counters, HANG_LIST_ENV, LIST_LOG_ENV, LISTING_ENV, MANY_TOOLS_ENV, TestServer,
};

/// Environment variable naming the server when this binary runs as the stdio test server.
pub(crate) const SERVER_ENV: &str = "PROMPTKIT_MCP_TEST_SERVER";
/// When set, the stdio server keeps running after its stdin closes (a misbehaving server).
pub(crate) const LINGER_ENV: &str = "PROMPTKIT_MCP_TEST_LINGER";
/// When set, the stdio server starts a `sleep` in its process group.
pub(crate) const GRANDCHILD_ENV: &str = "PROMPTKIT_MCP_TEST_GRANDCHILD";
/// When set, the stdio server writes to stderr and exits without a handshake.
pub(crate) const FAIL_START_ENV: &str = "PROMPTKIT_MCP_TEST_FAIL_START";
/// Set when this binary runs as the owner of a stdio client (the owner-death test).
pub(crate) const OWNER_ENV: &str = "PROMPTKIT_MCP_TEST_OWNER";

/// The arguments that make this test binary run only `entry` (an ignored test), quietly.
fn reexec_args(entry: &str, capture: bool) -> Vec<String> {
    let mut args = vec![
        "--ignored".to_owned(),
        "--exact".to_owned(),
        entry.to_owned(),
        "--test-threads=1".to_owned(),
    ];
    // libtest prints a "running 1 test" line first; the MCP client skips lines that are not
    // JSON, as every MCP SDK does.
    args.push(if capture { "-q" } else { "--nocapture" }.to_owned());
    args
}

/// A stdio server named `name`: this test binary running its `server_entry` test.
pub(crate) fn stdio_server(name: &str) -> ServerConfig {
    let exe = std::env::current_exe().unwrap();
    ServerConfig::stdio(exe.to_str().unwrap(), reexec_args("server_entry", true))
        .with_env(SERVER_ENV, name)
}

/// The body of the stdio server.
pub(crate) fn server_main(name: &str) {
    if std::env::var_os(FAIL_START_ENV).is_some() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "fatal: the test server refuses to start");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let grandchild = std::env::var_os(GRANDCHILD_ENV).map(|_| {
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap()
                .id()
        });
        let service = TestServer::new(name)
            .with_grandchild(grandchild)
            .serve(rmcp::transport::stdio())
            .await
            .unwrap();
        let _ = service.waiting().await;
        if std::env::var_os(LINGER_ENV).is_some() {
            // A server that ignores the end of its input: only a kill stops it.
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
    });
    std::process::exit(0);
}

/// The owner process of the owner-death test; killed when dropped, so a failing test does
/// not leave it behind.
pub(crate) struct Owner(pub(crate) std::process::Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this test binary as the owner of a stdio client (see `owner_entry`).
pub(crate) fn spawn_owner() -> Owner {
    Owner(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(reexec_args("owner_entry", false))
            .env(OWNER_ENV, "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Calls a tool through a tool set.
pub(crate) async fn call(
    set: &dyn ToolSet,
    name: &str,
    arguments: Value,
) -> Result<ToolResult, ToolError> {
    set.execute(
        &ToolCall::new("call-1", name, arguments),
        &ToolContext::with_timeout(Duration::from_secs(30)),
    )
    .await
}

/// Whether a process runs (a zombie counts as gone).
pub(crate) fn alive(pid: u32) -> bool {
    if std::path::Path::new("/proc/self/stat").exists() {
        // The state letter follows the parenthesised command name.
        return std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        });
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, None).is_ok()
}

/// Polls `condition` until it holds or `limit` passes.
pub(crate) async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server task that is aborted when dropped.
pub(crate) struct Served(AbortHandle);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(router: Router) -> (String, Served) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), Served(task.abort_handle()))
}

/// What the streamable HTTP test server requires and counts.
#[derive(Debug, Default)]
pub(crate) struct HttpState {
    /// Headers every request must carry (else 401).
    pub(crate) required: Vec<(&'static str, String)>,
    /// Answer the next `tools/call` of an established session with this status (404: the
    /// session expired; 400: what some servers answer for a session they forgot).
    pub(crate) reject_next: AtomicU16,
    /// `initialize` requests seen.
    pub(crate) initializes: AtomicUsize,
    /// Requests rejected for missing headers.
    pub(crate) unauthorized: AtomicUsize,
    pub(crate) counters: Arc<Counters>,
}

/// An rmcp streamable HTTP server on 127.0.0.1, at `<url>`.
pub(crate) struct HttpServer {
    pub(crate) url: String,
    pub(crate) state: Arc<HttpState>,
    _served: Served,
}

pub(crate) async fn http_server(required: Vec<(&'static str, String)>) -> HttpServer {
    let state = Arc::new(HttpState {
        required,
        ..HttpState::default()
    });
    let counters = state.counters.clone();
    let service: StreamableHttpService<TestServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(TestServer::new("http").with_counters(counters.clone())),
            Arc::default(),
            StreamableHttpServerConfig::default(),
        );
    let router = Router::new()
        .nest_service("/mcp", service)
        .route(
            "/old",
            axum::routing::any(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, "/mcp")],
                )
            }),
        )
        .layer(middleware::from_fn_with_state(state.clone(), gate));
    let (origin, served) = serve(router).await;
    HttpServer {
        url: format!("{origin}/mcp"),
        state,
        _served: served,
    }
}

/// Checks required headers, counts `initialize`s and expires sessions on request.
async fn gate(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    for (name, value) in &state.required {
        if request.headers().get(*name).and_then(|v| v.to_str().ok()) != Some(value.as_str()) {
            state.unauthorized.fetch_add(1, Ordering::SeqCst);
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let initialize = text.contains("\"method\":\"initialize\"");
    if initialize {
        state.initializes.fetch_add(1, Ordering::SeqCst);
    }
    if !initialize
        && parts.method == axum::http::Method::POST
        && parts.headers.contains_key("mcp-session-id")
        && text.contains("\"method\":\"tools/call\"")
    {
        let status = state.reject_next.swap(0, Ordering::SeqCst);
        if status != 0 {
            return StatusCode::from_u16(status).unwrap().into_response();
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A legacy HTTP+SSE server on 127.0.0.1 (`GET /sse`, `POST /message?sessionId=`), bridging
/// to the rmcp test server; rmcp has no SSE server any more.
pub(crate) struct SseServer {
    pub(crate) url: String,
    pub(crate) origin: String,
    pub(crate) sessions: Arc<AtomicUsize>,
    _served: Served,
}

#[derive(Clone, Default)]
struct SseState {
    sessions: Arc<Mutex<HashMap<u64, mpsc::Sender<ClientJsonRpcMessage>>>>,
    next: Arc<AtomicU64>,
    opened: Arc<AtomicUsize>,
    /// An `endpoint` to announce instead of the real one.
    endpoint_override: Option<String>,
}

pub(crate) async fn sse_server(endpoint_override: Option<String>) -> SseServer {
    let state = SseState {
        endpoint_override,
        ..SseState::default()
    };
    let sessions = state.opened.clone();
    let router = Router::new()
        .route("/sse", get(sse_open))
        .route("/message", post(sse_post))
        .with_state(state);
    let (origin, served) = serve(router).await;
    SseServer {
        url: format!("{origin}/sse"),
        origin,
        sessions,
        _served: served,
    }
}

async fn sse_open(State(state): State<SseState>) -> Response {
    let id = state.next.fetch_add(1, Ordering::SeqCst);
    state.opened.fetch_add(1, Ordering::SeqCst);
    let (client_tx, client_rx) = mpsc::channel(32);
    let (server_tx, server_rx) = mpsc::channel::<ServerJsonRpcMessage>(32);
    state.sessions.lock().unwrap().insert(id, client_tx);
    let hangup = Arc::new(Notify::new());
    let server = TestServer::new("sse").with_hangup(hangup.clone());
    tokio::spawn(async move {
        if let Ok(service) = server
            .serve(ChannelTransport {
                rx: client_rx,
                tx: server_tx,
            })
            .await
        {
            let _ = service.waiting().await;
        }
    });
    let endpoint = state
        .endpoint_override
        .clone()
        .unwrap_or_else(|| format!("/message?sessionId={id}"));
    let first = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(Event::default().event("endpoint").data(endpoint))
    });
    let messages = tokio_stream_from(server_rx).map(|message| {
        Ok(Event::default()
            .event("message")
            .data(serde_json::to_string(&message).unwrap()))
    });
    let stream = first
        .chain(messages)
        .take_until(async move { hangup.notified().await });
    Sse::new(stream).into_response()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn sse_post(State(state): State<SseState>, uri: Uri, body: Bytes) -> StatusCode {
    let id = uri
        .query()
        .and_then(|q| q.strip_prefix("sessionId="))
        .and_then(|id| id.parse::<u64>().ok());
    let sender = id.and_then(|id| state.sessions.lock().unwrap().get(&id).cloned());
    let Some(sender) = sender else {
        return StatusCode::NOT_FOUND;
    };
    let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if sender.send(message).await.is_err() {
        return StatusCode::GONE;
    }
    StatusCode::ACCEPTED
}

/// An rmcp server transport over two channels.
struct ChannelTransport {
    rx: mpsc::Receiver<ClientJsonRpcMessage>,
    tx: mpsc::Sender<ServerJsonRpcMessage>,
}

impl Transport<RoleServer> for ChannelTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let tx = self.tx.clone();
        async move {
            tx.send(item)
                .await
                .map_err(|_| std::io::Error::other("the event stream is gone"))
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ClientJsonRpcMessage>> + Send {
        self.rx.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Log output captured by [`capture_logs`].
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures every log line of this thread at every level until the guard is dropped. With a
/// current-thread runtime that covers every task the test spawns.
pub(crate) fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A server whose every request is answered `307` to `location`, and which counts requests.
pub(crate) async fn redirecting_server(location: String) -> (String, Arc<AtomicUsize>, Served) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let router = Router::new().fallback(move || {
        let counter = counter.clone();
        let location = location.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
                .into_response()
        }
    });
    let (origin, served) = serve(router).await;
    (origin, seen, served)
}

/// A server that counts requests and answers 404, with the headers of the last one.
pub(crate) async fn counting_server() -> (String, Arc<Mutex<Vec<axum::http::HeaderMap>>>, Served) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let router = Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(headers);
            StatusCode::NOT_FOUND
        }
    });
    let (origin, served) = serve(router).await;
    (origin, seen, served)
}
