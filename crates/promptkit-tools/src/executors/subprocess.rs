//! The subprocess executor: runs a command per call, arguments as JSON on stdin, the result as
//! JSON (or text) on stdout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use promptkit_core::{
    BoxFuture, ContentPart, ToolCall, ToolContext, ToolError, ToolExecutor, ToolResult,
};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Settings of [`SubprocessExecutor`] (`config` of a `subprocess` descriptor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubprocessConfig {
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables to set.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables of this process to pass through (nothing else is inherited).
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

/// Runs a program per call. The call's arguments go to stdin as one JSON object; stdout is
/// the result: JSON `{"result": ..., "is_error": bool}`, or any other JSON (structured output),
/// or plain text. A non-zero exit is a tool error carrying stderr's last lines.
///
/// The program runs in its own process group; on timeout, cancellation (the call's future is
/// dropped) or an output overflow, the whole group is killed, children included.
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
            let mut command = tokio::process::Command::new(&self.config.command);
            command
                .args(&self.config.args)
                .env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            for name in &self.config.inherit_env {
                if let Ok(v) = std::env::var(name) {
                    command.env(name, v);
                }
            }
            if let Ok(path) = std::env::var("PATH") {
                command.env("PATH", path);
            }
            command.envs(&self.config.env);
            if let Some(dir) = &self.config.cwd {
                command.current_dir(dir);
            }
            #[cfg(unix)]
            command.process_group(0);
            let mut child = command.spawn().map_err(|e| {
                failed(call, format!("cannot start `{}`: {e}", self.config.command))
            })?;
            let mut guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));

            let timeout = [
                self.config.timeout_ms.map(Duration::from_millis),
                ctx.remaining(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(60));
            let limit = self.config.max_output_bytes.unwrap_or(1 << 20);
            let input =
                serde_json::to_vec(&call.arguments).map_err(|e| failed(call, e.to_string()))?;
            let mut stdin = child.stdin.take();
            let mut stdout = child
                .stdout
                .take()
                .ok_or_else(|| failed(call, "no stdout"))?;
            let mut stderr = child
                .stderr
                .take()
                .ok_or_else(|| failed(call, "no stderr"))?;

            let work = async {
                if let Some(mut s) = stdin.take() {
                    // A program that does not read stdin is fine.
                    let _ = s.write_all(&input).await;
                    drop(s);
                }
                let mut out = Vec::new();
                let mut err = Vec::new();
                let read_out = async {
                    let mut buf = [0_u8; 8192];
                    loop {
                        let n = stdout.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<bool, std::io::Error>(false);
                        }
                        out.extend_from_slice(&buf[..n]);
                        if out.len() > limit {
                            return Ok(true);
                        }
                    }
                };
                let read_err = async {
                    let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut err).await;
                };
                let (overflow, ()) = tokio::join!(read_out, read_err);
                let overflow =
                    overflow.map_err(|e| failed(call, format!("reading output: {e}")))?;
                if overflow {
                    return Err(failed(call, format!("output exceeded {limit} bytes")));
                }
                let status = child
                    .wait()
                    .await
                    .map_err(|e| failed(call, e.to_string()))?;
                Ok((status, out, err))
            };
            let (status, out, err) = match tokio::time::timeout(timeout, work).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ToolError::Timeout {
                        name: call.name.clone(),
                        elapsed: started.elapsed(),
                    });
                }
            };
            guard.disarm();
            if !status.success() {
                let stderr = String::from_utf8_lossy(&err);
                let tail: Vec<&str> = stderr
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Ok(ToolResult::error(
                    &call.id,
                    &call.name,
                    promptkit_core::ToolErrorKind::Execution,
                    format!(
                        "`{}` exited with {status}: {}",
                        self.config.command,
                        tail.join(" | ")
                    ),
                ));
            }
            let text = String::from_utf8_lossy(&out).trim().to_owned();
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
                        result.error_kind = Some(promptkit_core::ToolErrorKind::Execution);
                    }
                }
                Ok(Value::String(s)) => result.content.push(ContentPart::text(s)),
                Ok(other) => result.structured = Some(other),
                Err(_) => result.content.push(ContentPart::text(text)),
            }
            Ok(result)
        })
    }
}
