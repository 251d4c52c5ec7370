//! `promptkit-bench-baseline`: the round-1 benchmark's no-framework floor.
//!
//! ```text
//! promptkit-bench-baseline --upstream http://127.0.0.1:8081/v1 [--port PORT]
//! ```
//!
//! The thinnest correct streaming proxy, on the same HTTP stack as `promptkit serve` (axum
//! and reqwest): `POST /v1/chat/completions` forwards the conversation to the upstream as a
//! streaming request, parses its SSE and re-emits the content as complete OpenAI chunks (`id`,
//! `created`, `model`, the role on the first), as `promptkit serve` writes them.
//! `POST /v1/chat/completions/tools` does what a tool loop must at the least: it streams a
//! first round offering `lookup_order`, collects the streamed tool call, runs it against the
//! upstream's `/tool`, and streams the second round. Prints its address on stdout.

#![expect(
    clippy::print_stdout,
    reason = "a command-line tool reports its address"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt as _;
use futures_util::StreamExt as _;
use promptkit_testkit::lines::DataLines;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The model the baseline names upstream and in its chunks.
const MODEL: &str = "gpt-4o-mini";

#[derive(Debug)]
struct Proxy {
    http: reqwest::Client,
    completions: String,
    tool: String,
}

fn parse_args() -> anyhow::Result<(u16, String)> {
    let mut port = 0;
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().context("--port needs a value")?;
                port = value
                    .parse()
                    .with_context(|| format!("invalid port {value}"))?;
            }
            "--upstream" => upstream = Some(args.next().context("--upstream needs a URL")?),
            "-h" | "--help" => {
                println!("usage: promptkit-bench-baseline --upstream URL [--port PORT]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok((port, upstream.context("--upstream is required")?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (port, upstream) = parse_args()?;
    let upstream = upstream.trim_end_matches('/').to_owned();
    let origin = upstream.strip_suffix("/v1").unwrap_or(&upstream).to_owned();
    let proxy = Arc::new(Proxy {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .build()?,
        completions: format!("{upstream}/chat/completions"),
        tool: format!("{origin}/tool"),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(plain))
        .route("/v1/chat/completions/tools", post(tools))
        .with_state(proxy);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

type Frames = mpsc::Sender<Result<Bytes, Infallible>>;

fn sse(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn bad_request(message: &str) -> Response {
    let mut response = Response::new(Body::from(
        json!({"error": {"message": message}}).to_string(),
    ));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// The fields every `chat.completion.chunk` of one response repeats. Clients such as the
/// OpenAI SDKs require `id`, `created` and `model`, so a correct proxy writes them.
#[derive(Debug)]
struct Reply {
    id: String,
    created: u64,
    /// Whether the next content chunk is the first (it carries the role).
    first: bool,
}

impl Reply {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            id: format!("chatcmpl-{:x}", NEXT.fetch_add(1, Ordering::Relaxed)),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            first: true,
        }
    }

    fn frame(&self, delta: &Value, finish: Option<&str>) -> String {
        let value = json!({"id": self.id, "object": "chat.completion.chunk",
            "created": self.created, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {value}\n\n")
    }

    fn chunk(&mut self, content: &str) -> Bytes {
        let delta = if std::mem::take(&mut self.first) {
            json!({"role": "assistant", "content": content})
        } else {
            json!({"content": content})
        };
        Bytes::from(self.frame(&delta, None))
    }

    fn closing(&self) -> Bytes {
        let mut text = self.frame(&json!({}), Some("stop"));
        text.push_str("data: [DONE]\n\n");
        Bytes::from(text)
    }
}

/// What one streamed upstream round produced.
#[derive(Debug, Default)]
struct Round {
    call: Option<(String, String, String)>,
}

/// Streams one round from the upstream, re-emitting content chunks to `out` and collecting
/// a streamed tool call.
async fn round(
    proxy: &Proxy,
    body: &Value,
    reply: &mut Reply,
    out: &Frames,
) -> anyhow::Result<Round> {
    let response = proxy
        .http
        .post(&proxy.completions)
        .json(body)
        .send()
        .await?
        .error_for_status()?;
    let mut bytes = response.bytes_stream();
    let mut lines = DataLines::default();
    let mut round = Round::default();
    let (mut id, mut name, mut arguments) = (String::new(), String::new(), String::new());
    while let Some(piece) = bytes.next().await {
        lines.push(&piece?);
        while let Some(data) = lines.next_data() {
            if data == b"[DONE]" {
                if !name.is_empty() {
                    round.call = Some((id, name, arguments));
                }
                return Ok(round);
            }
            let value: Value = serde_json::from_slice(&data)?;
            let delta = &value["choices"][0]["delta"];
            if let Some(content) = delta["content"].as_str()
                && !content.is_empty()
                && out.send(Ok(reply.chunk(content))).await.is_err()
            {
                bail!("client went away");
            }
            if let Some(call) = delta["tool_calls"][0].as_object() {
                if let Some(v) = call.get("id").and_then(Value::as_str) {
                    v.clone_into(&mut id);
                }
                if let Some(v) = call["function"]["name"].as_str() {
                    v.clone_into(&mut name);
                }
                if let Some(v) = call["function"]["arguments"].as_str() {
                    arguments.push_str(v);
                }
            }
        }
    }
    bail!("upstream stream ended without [DONE]")
}

fn user_messages(body: &Bytes) -> Option<Vec<Value>> {
    let request: Value = serde_json::from_slice(body).ok()?;
    request["messages"].as_array().cloned()
}

async fn plain(State(proxy): State<Arc<Proxy>>, body: Bytes) -> Response {
    let Some(messages) = user_messages(&body) else {
        return bad_request("expected a JSON body with `messages`");
    };
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let mut reply = Reply::new();
        let request = json!({"model": MODEL, "messages": messages, "stream": true});
        if round(&proxy, &request, &mut reply, &tx).await.is_ok() {
            let _ = tx.send(Ok(reply.closing())).await;
        }
    });
    sse(rx)
}

async fn tools(State(proxy): State<Arc<Proxy>>, body: Bytes) -> Response {
    let Some(mut messages) = user_messages(&body) else {
        return bad_request("expected a JSON body with `messages`");
    };
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let tool_def = json!([{"type": "function", "function": {
            "name": "lookup_order", "description": "Looks up an order by id",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                           "required": ["order_id"]}}}]);
        let mut reply = Reply::new();
        let request = json!({"model": MODEL, "messages": messages,
            "tools": tool_def, "stream": true});
        let Ok(first) = round(&proxy, &request, &mut reply, &tx).await else {
            return;
        };
        if let Some((id, name, arguments)) = first.call {
            let Ok(result) = run_tool(&proxy, &arguments).await else {
                return;
            };
            messages.push(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments}}]}),
            );
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
            let request = json!({"model": MODEL, "messages": messages,
                "tools": tool_def, "stream": true});
            if round(&proxy, &request, &mut reply, &tx).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(reply.closing())).await;
    });
    sse(rx)
}

async fn run_tool(proxy: &Proxy, arguments: &str) -> anyhow::Result<String> {
    let response = proxy
        .http
        .post(&proxy.tool)
        .header(header::CONTENT_TYPE, "application/json")
        .body(arguments.to_owned())
        .send()
        .await?
        .error_for_status()?;
    Ok(response.text().await?)
}
