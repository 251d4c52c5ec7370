//! The subprocess executor: runs a command per call, arguments as JSON on stdin, the result as
//! JSON (or text) on stdout.
//!
//! The three pipes are served at once: stdin is written while stdout and stderr are read, so
//! a program that writes before it reads never blocks on a full pipe, and stderr is read to its
//! end (a bounded tail is kept for the error text) so a chatty program never blocks either.
//! The program runs in its own process group, which is killed when the call ends, however it
//! ends: a background child cannot outlive the call.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use promptkit_core::{
    BoxFuture, ContentPart, ToolCall, ToolContext, ToolError, ToolErrorKind, ToolExecutor,
    ToolResult,
};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

/// Bytes of stderr kept for the error text (the rest is read and dropped).
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// Lines of stderr shown to the model when the program fails.
const STDERR_TAIL_LINES: usize = 5;
/// Characters of stderr shown to the model when the program fails.
const STDERR_TAIL_CHARS: usize = 2000;
/// How long output is still read after the program exited and its group was killed (a
/// process that left the group may hold the pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Settings of [`SubprocessExecutor`] (`config` of a `subprocess` descriptor).
///
/// `Debug` shows the names of `env` variables, not their values.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubprocessConfig {
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables to set. Their values are treated as secrets: they are replaced
    /// in the error text the model sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables of this process to pass through (nothing else is inherited). Their
    /// values are treated as secrets too.
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Deadline in milliseconds (the call's deadline applies too).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Most bytes read from stdout (default 1 MiB).
    #[serde(default)]
    pub max_output_bytes: Option<usize>,
}

impl fmt::Debug for SubprocessConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubprocessConfig")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("inherit_env", &self.inherit_env)
            .field("cwd", &self.cwd)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_output_bytes", &self.max_output_bytes)
            .finish()
    }
}

/// Runs a program per call. The call's arguments go to stdin as one JSON object; stdout is
/// the result: JSON `{"result": ..., "is_error": bool}`, or any other JSON (structured output),
/// or plain text. A non-zero exit is a tool error carrying stderr's last lines, with the
/// values of `env` and `inherit_env` variables replaced.
///
/// The program runs in its own process group. When the program exits, the rest of its group
/// (background children) is killed; on timeout, cancellation (the call's future is dropped)
/// or an output overflow, the whole group is killed at once.
#[derive(Debug, Clone)]
pub struct SubprocessExecutor {
    config: SubprocessConfig,
}

impl SubprocessExecutor {
    /// An executor for `config`.
    pub fn new(config: SubprocessConfig) -> Self {
        Self { config }
    }

    /// An executor from descriptor settings.
    ///
    /// # Errors
    /// What is wrong with `config`.
    pub fn from_config(config: &Value) -> Result<Self, String> {
        serde_json::from_value(config.clone())
            .map(Self::new)
            .map_err(|e| e.to_string())
    }

    /// The command, with a minimal environment, its own process group and piped stdio; and
    /// the values never to show the model.
    fn command(&self) -> (tokio::process::Command, Vec<String>) {
        let mut command = tokio::process::Command::new(&self.config.command);
        command
            .args(&self.config.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut secrets = Vec::new();
        for name in &self.config.inherit_env {
            if let Ok(v) = std::env::var(name) {
                secrets.push(v.clone());
                command.env(name, v);
            }
        }
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
        command.envs(&self.config.env);
        secrets.extend(self.config.env.values().cloned());
        // Short values ("1", "en") would blank out ordinary words of every message.
        secrets.retain(|s| s.len() >= 4);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        if let Some(dir) = &self.config.cwd {
            command.current_dir(dir);
        }
        #[cfg(unix)]
        command.process_group(0);
        (command, secrets)
    }
}

/// Kills a process group when dropped (unless disarmed).
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group(pgid);
        }
    }
}

#[cfg(unix)]
fn kill_group(pgid: i32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

#[cfg(not(unix))]
fn kill_group(_pgid: i32) {}

fn kill(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
}

/// Returns once the group leader `pid` has exited, without reaping it: while it is a zombie
/// its process id, and so the group id, cannot be reused, so killing the group stays safe.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
async fn leader_exited(pid: Option<i32>) {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    use nix::unistd::Pid;
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    let mut pause = Duration::from_millis(1);
    loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            // Exited, or already reaped (ECHILD).
            Ok(_) | Err(_) => return,
        }
    }
}

/// Without a non-reaping wait, the leader's exit is only seen when its pipes close.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
async fn leader_exited(_pid: Option<i32>) {
    std::future::pending().await
}

/// Waits for the leader to exit, kills what is left of its group, then reaps the leader.
async fn finish(child: &mut Child, pgid: Option<i32>) -> std::io::Result<ExitStatus> {
    if cfg!(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd"
    )) {
        leader_exited(pgid).await;
        kill(pgid);
        child.wait().await
    } else {
        // Reaping first leaves a window of microseconds for the group id to be reused.
        let status = child.wait().await;
        kill(pgid);
        status
    }
}

/// Reads `pipe` to its end into `out`; fails once more than `limit` bytes arrived.
async fn read_capped(
    mut pipe: impl AsyncRead + Unpin,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    let mut buf = vec![0_u8; 8192];
    loop {
        let n = pipe
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading output: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > limit {
            return Err(format!("output exceeded {limit} bytes"));
        }
    }
}

/// Reads `pipe` to its end, keeping only its last [`STDERR_TAIL_BYTES`].
async fn read_tail(mut pipe: impl AsyncRead + Unpin, tail: &mut VecDeque<u8>) {
    let mut buf = vec![0_u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            return;
        }
        tail.extend(&buf[..n]);
        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..excess);
    }
}

/// The last lines of stderr for the model, bounded, with secrets replaced.
fn stderr_tail(tail: &VecDeque<u8>, secrets: &[String]) -> String {
    let bytes: Vec<u8> = tail.iter().copied().collect();
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(STDERR_TAIL_LINES)
        .collect();
    lines.reverse();
    let mut joined = lines.join(" | ");
    for secret in secrets {
        joined = joined.replace(secret.as_str(), "[REDACTED]");
    }
    if joined.chars().count() > STDERR_TAIL_CHARS {
        let skip = joined.chars().count() - STDERR_TAIL_CHARS;
        joined = format!("…{}", joined.chars().skip(skip).collect::<String>());
    }
    joined
}

fn failed(call: &ToolCall, message: impl Into<String>) -> ToolError {
    ToolError::Execution {
        name: call.name.clone(),
        message: message.into(),
        source: None,
    }
}

impl ToolExecutor for SubprocessExecutor {
    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            let started = Instant::now();
            let input =
                serde_json::to_vec(&call.arguments).map_err(|e| failed(call, e.to_string()))?;
            let (mut command, secrets) = self.command();
            let mut child = command.spawn().map_err(|e| {
                failed(call, format!("cannot start `{}`: {e}", self.config.command))
            })?;
            let pgid = child.id().and_then(|id| i32::try_from(id).ok());
            let mut guard = GroupGuard(pgid);

            let timeout = [
                self.config.timeout_ms.map(Duration::from_millis),
                ctx.remaining(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(60));
            let limit = self.config.max_output_bytes.unwrap_or(1 << 20);
            let stdin = child.stdin.take();
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| failed(call, "no stdout"))?;
            let stderr = child
                .stderr
                .take()
                .ok_or_else(|| failed(call, "no stderr"))?;

            let mut out = Vec::new();
            let mut err = VecDeque::new();
            let work = async {
                let write = async move {
                    if let Some(mut stdin) = stdin {
                        // A program that does not read stdin is fine: the write then fails.
                        let _ = stdin.write_all(&input).await;
                        let _ = stdin.shutdown().await;
                    }
                    Ok::<(), String>(())
                };
                let read_err = async {
                    read_tail(stderr, &mut err).await;
                    Ok::<(), String>(())
                };
                let pipes = async {
                    tokio::try_join!(write, read_capped(stdout, &mut out, limit), read_err)
                        .map(|_| ())
                };
                tokio::pin!(pipes);
                tokio::select! {
                    done = &mut pipes => done.map_err(|e| failed(call, e))?,
                    () = leader_exited(pgid) => {
                        // The program is done; whatever still holds its pipes is a background
                        // child, killed now so that the pipes close.
                        kill(pgid);
                        if let Ok(done) = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut pipes).await {
                            done.map_err(|e| failed(call, e))?;
                        }
                    }
                }
                finish(&mut child, pgid)
                    .await
                    .map_err(|e| failed(call, e.to_string()))
            };
            let status = match tokio::time::timeout(timeout, work).await {
                Ok(status) => status?,
                Err(_) => {
                    return Err(ToolError::Timeout {
                        name: call.name.clone(),
                        elapsed: started.elapsed(),
                    });
                }
            };
            // `finish` killed the group already.
            guard.disarm();
            if !status.success() {
                return Ok(ToolResult::error(
                    &call.id,
                    &call.name,
                    ToolErrorKind::Execution,
                    format!(
                        "`{}` exited with {status}: {}",
                        self.config.command,
                        stderr_tail(&err, &secrets)
                    ),
                ));
            }
            Ok(parse_output(call, &out))
        })
    }
}

/// The result of a successful run from its stdout.
fn parse_output(call: &ToolCall, out: &[u8]) -> ToolResult {
    let text = String::from_utf8_lossy(out).trim().to_owned();
    let mut result = ToolResult::text(&call.id, &call.name, "");
    result.content.clear();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut map)) if map.contains_key("result") => {
            let is_error = map
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match map.remove("result") {
                Some(Value::String(s)) => result.content.push(ContentPart::text(s)),
                Some(other) => result.structured = Some(other),
                None => {}
            }
            if is_error {
                result.is_error = true;
                result.error_kind = Some(ToolErrorKind::Execution);
            }
        }
        Ok(Value::String(s)) => result.content.push(ContentPart::text(s)),
        Ok(other) => result.structured = Some(other),
        Err(_) => result.content.push(ContentPart::text(text)),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_tail_is_bounded_and_scrubbed() {
        let mut tail = VecDeque::new();
        tail.extend(b"first\n\nkey=sk-secret-value\n".iter());
        let text = stderr_tail(&tail, &["sk-secret-value".to_owned()]);
        assert_eq!(text, "first | key=[REDACTED]");
        let mut long = VecDeque::new();
        long.extend(std::iter::repeat_n(b'e', 10_000));
        assert!(stderr_tail(&long, &[]).chars().count() <= STDERR_TAIL_CHARS + 1);
    }

    #[test]
    fn debug_hides_env_values() {
        let config = SubprocessConfig {
            command: "tool".into(),
            args: vec![],
            env: [("API_KEY".to_owned(), "k-env-secret".to_owned())].into(),
            inherit_env: vec![],
            cwd: None,
            timeout_ms: None,
            max_output_bytes: None,
        };
        let debug = format!("{config:?} {:?}", SubprocessExecutor::new(config.clone()));
        assert!(debug.contains("API_KEY"), "{debug}");
        assert!(!debug.contains("k-env-secret"), "{debug}");
    }
}
