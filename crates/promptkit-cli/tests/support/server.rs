//! A running `promptkit serve`, as the serve tests start it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `promptkit serve`; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// `http://127.0.0.1:<port>` (or `https://…`).
    pub(crate) url: String,
    /// The bound address.
    pub(crate) addr: std::net::SocketAddr,
    /// The server's stderr lines after the address line.
    pub(crate) stderr: mpsc::Receiver<String>,
}

/// The command that serves from the upstream at `base_url` (OpenAI-compatible wire format):
/// `global` flags before `serve`, `serve_args` after it.
pub(crate) fn command(
    home: &Path,
    base_url: &str,
    global: &[&str],
    serve_args: &[&str],
) -> Command {
    let mut command = super::promptkit(home);
    command
        .args([
            "--provider",
            "openai-compatible",
            "--base-url",
            base_url,
            "--model",
            "mock-model",
        ])
        .args(global)
        .args(["serve", "--addr", "127.0.0.1:0", "--shutdown-grace", "5"])
        .args(serve_args);
    command
}

impl Server {
    /// Starts the server against the upstream at `base_url`, with `extra` global flags.
    pub(crate) fn start(home: &Path, base_url: &str, extra: &[&str]) -> Self {
        Self::launch(command(home, base_url, extra, &[]))
    }

    /// Starts `command` and waits for the address it prints.
    pub(crate) fn launch(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let url = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("the server prints its address; it said {seen:?}"));
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().to_owned();
            }
            seen.push(line);
        };
        let addr = url.rsplit("//").next().unwrap().parse().unwrap();
        Self {
            child,
            url,
            addr,
            stderr: rx,
        }
    }

    /// `url` + `path`.
    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
