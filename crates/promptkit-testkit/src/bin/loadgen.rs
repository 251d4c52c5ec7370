//! `promptkit-loadgen`: the round-1 benchmark's load generator.
//!
//! ```text
//! promptkit-loadgen --url http://127.0.0.1:8080/v1/chat/completions --concurrency 500 \
//!     [--requests 5000] [--timeout-secs 60]
//! ```
//!
//! Sends `requests` streaming chat-completion requests from `concurrency` workers, each
//! holding its own keep-alive connection, and prints one JSON line: throughput, time to the
//! first SSE `data:` line and total time (p50 and p99, milliseconds), chunks per response and
//! errors. A response is an error unless its status is 200 and its stream ends with
//! `data: [DONE]` without an error event.

#![expect(
    clippy::print_stdout,
    reason = "a command-line tool reports its result"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use promptkit_testkit::lines::DataLines;
use serde_json::json;

#[derive(Debug)]
struct Args {
    url: String,
    concurrency: usize,
    requests: usize,
    timeout: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut url = None;
    let mut concurrency = 10;
    let mut requests = None;
    let mut timeout = Duration::from_secs(60);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => url = Some(value("--url")?),
            "--concurrency" => concurrency = value("--concurrency")?.parse()?,
            "--requests" => requests = Some(value("--requests")?.parse()?),
            "--timeout-secs" => timeout = Duration::from_secs(value("--timeout-secs")?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: promptkit-loadgen --url URL --concurrency C [--requests N] [--timeout-secs S]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    Ok(Args {
        url: url.context("--url is required")?,
        concurrency,
        requests: requests.unwrap_or(concurrency * 10),
        timeout,
    })
}

/// One request's outcome.
#[derive(Debug)]
struct Sample {
    ttft: Duration,
    total: Duration,
    chunks: usize,
}

async fn one(http: &reqwest::Client, url: &str, body: &str) -> Result<Sample, String> {
    let start = Instant::now();
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let mut stream = response.bytes_stream();
    let mut lines = DataLines::default();
    let mut ttft = None;
    let mut chunks = 0;
    while let Some(piece) = stream.next().await {
        lines.push(&piece.map_err(|e| format!("read: {e}"))?);
        while let Some(data) = lines.next_data() {
            if data.starts_with(b"[DONE]") {
                let total = start.elapsed();
                // Read to the end of the body, as an SDK client does: a response dropped
                // before its end closes the connection instead of returning it to the pool.
                while let Some(piece) = stream.next().await {
                    piece.map_err(|e| format!("read after [DONE]: {e}"))?;
                }
                return Ok(Sample {
                    ttft: ttft.unwrap_or_default(),
                    total,
                    chunks,
                });
            }
            if data.starts_with(b"{\"error\"") {
                return Err(format!(
                    "error event: {}",
                    String::from_utf8_lossy(&data).trim()
                ));
            }
            ttft.get_or_insert_with(|| start.elapsed());
            chunks += 1;
        }
    }
    Err("stream ended without [DONE]".to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a sample list"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(args.timeout)
        .build()?;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Where is my order 12345?"}]})
    .to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (http, url, body, next) = (
            http.clone(),
            args.url.clone(),
            body.clone(),
            Arc::clone(&next),
        );
        let requests = args.requests;
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                results.push(one(&http, &url, &body).await);
            }
            results
        }));
    }
    let mut samples = Vec::with_capacity(args.requests);
    let mut errors = 0usize;
    let mut first_error = None;
    for worker in workers {
        for result in worker.await? {
            match result {
                Ok(sample) => samples.push(sample),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let mut ttft: Vec<f64> = samples.iter().map(|s| millis(s.ttft)).collect();
    let mut total: Vec<f64> = samples.iter().map(|s| millis(s.total)).collect();
    ttft.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts far below 2^52 become rates"
    )]
    let (throughput, chunks_mean) = (
        samples.len() as f64 / elapsed.as_secs_f64(),
        samples.iter().map(|s| s.chunks).sum::<usize>() as f64 / samples.len().max(1) as f64,
    );
    println!(
        "{}",
        json!({
            "concurrency": args.concurrency,
            "requests": args.requests,
            "ok": samples.len(),
            "errors": errors,
            "first_error": first_error,
            "elapsed_s": elapsed.as_secs_f64(),
            "throughput_rps": throughput,
            "ttft_ms": {"p50": percentile(&ttft, 0.50), "p99": percentile(&ttft, 0.99)},
            "total_ms": {"p50": percentile(&total, 0.50), "p99": percentile(&total, 0.99)},
            "chunks_mean": chunks_mean,
        })
    );
    Ok(())
}
