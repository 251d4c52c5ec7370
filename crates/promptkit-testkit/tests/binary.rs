//! The `promptkit-mock-upstream` binary starts, reports its address and serves.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

#[tokio::test]
async fn binary_serves_the_tool_endpoint() -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptkit-mock-upstream"))
        .args(["--port", "0", "--profile", "instant"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await??;
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .expect("an address")
        .to_owned();
    let mut socket = TcpStream::connect(&addr).await?;
    socket
        .write_all(
            b"POST /tool HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    assert!(response.contains("shipped"), "{response}");
    child.kill().await?;
    Ok(())
}
