//! `promptkit-mock-upstream`: the benchmark's mock OpenAI-compatible upstream.
//!
//! ```text
//! promptkit-mock-upstream [--port PORT] [--profile fast|realistic|instant]
//! ```
//!
//! Listens on 127.0.0.1 (port 0 picks a free one), prints the address, and serves until
//! interrupted. It keeps no record of the requests: a load run sends millions.

#![expect(
    clippy::print_stdout,
    reason = "a command-line tool reports its address"
)]

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use promptkit_testkit::upstream::{MockUpstream, Profile};

fn parse_args() -> anyhow::Result<(u16, Profile)> {
    let mut port = 8081;
    let mut profile = Profile::FAST;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().context("--port needs a value")?;
                port = value
                    .parse()
                    .with_context(|| format!("invalid port {value}"))?;
            }
            "--profile" => {
                let value = args.next().context("--profile needs a value")?;
                profile = Profile::by_name(&value).with_context(|| {
                    format!("unknown profile {value} (fast, realistic, instant)")
                })?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: promptkit-mock-upstream [--port PORT] [--profile fast|realistic|instant]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok((port, profile))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (port, profile) = parse_args()?;
    let server = MockUpstream::bind(SocketAddr::from(([127, 0, 0, 1], port)), profile)
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    server.record_requests(false);
    println!("mock upstream listening on http://{}", server.addr());
    server.run_until_ctrl_c().await?;
    Ok(())
}
