//! Stdio server processes: spawning, stderr, shutdown and the owner-death watchdog.
//!
//! A stdio server runs in a process group of its own, so that the helpers it starts (an `npx`
//! wrapper and the `node` it runs, a shell and its children) can be stopped together. Its
//! stderr is piped and drained into `tracing` (never inherited, never left to fill up). Three
//! paths stop the group:
//!
//! * [`ChildProcess::shutdown`], the graceful path: the caller has closed the server's stdin
//!   (the MCP way to ask a stdio server to exit); we wait up to the grace period for the
//!   group leader to exit, then send `SIGKILL` to the whole group, then reap the leader.
//! * dropping a [`ChildProcess`]: inside a tokio runtime the graceful path runs on a task
//!   (and if that task is dropped at runtime shutdown, the group is killed at once);
//!   outside a runtime the group is killed at once.
//! * the watchdog, for when this process dies without running destructors (`SIGKILL`, a crash,
//!   `std::process::exit`): a tiny `/bin/sh` process, in a process group of its own so that a
//!   terminal's `SIGINT` does not reach it, blocks reading a pipe whose only writer is this
//!   process. When this process dies the kernel closes the pipe, the read returns, and the
//!   watchdog kills the server's group. On a normal shutdown we write `done` into the pipe
//!   first, so the watchdog exits without killing anything.
//!
//! The group is always killed while its leader is not yet reaped (a zombie still holds its
//! process id, and so the group id), so a recycled process id can never be hit. On Linux the
//! leader's exit is observed with `waitid(WNOWAIT)`, which does not reap.
//!
//! `PR_SET_PDEATHSIG` is not used: it needs `unsafe` code between fork and exec (forbidden
//! in this workspace), exists only on Linux, and fires when the spawning *thread* ends, which
//! in a tokio runtime (whose blocking-pool threads come and go) kills servers at random.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

/// What to run.
#[derive(Clone)]
pub(crate) struct Spawn {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    /// The complete environment (nothing else is inherited).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) grace: Duration,
    /// Values to keep out of logs and messages (expanded variables, `env` values), longest
    /// first.
    pub(crate) secrets: Vec<String>,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawn")
            .field("program", &scrub(&self.program, &self.secrets))
            .field(
                "args",
                &self
                    .args
                    .iter()
                    .map(|a| scrub(a, &self.secrets))
                    .collect::<Vec<_>>(),
            )
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("cwd", &self.cwd)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// `text` with every one of `secrets` replaced.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
    }
    out
}

/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line logged in one piece.
const STDERR_MAX_LINE: usize = 8 * 1024;

/// The last lines a server wrote to stderr.
#[derive(Debug, Clone)]
pub(crate) struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    /// `true` once stderr reached its end.
    closed: Arc<watch::Sender<bool>>,
}

impl Default for StderrTail {
    fn default() -> Self {
        Self {
            lines: Arc::default(),
            closed: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == STDERR_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines joined with ` | `, empty when there are none.
    pub(crate) fn joined(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Waits until stderr has reached its end, at most `limit`.
    pub(crate) async fn wait_closed(&self, limit: Duration) {
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(limit, closed.wait_for(|c| *c)).await;
    }
}

/// A running stdio server.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    group: Option<Group>,
    pid: Option<u32>,
    stderr: StderrTail,
}

/// The process group and everything needed to stop it.
#[derive(Debug)]
struct Group {
    child: Child,
    /// The group id (the leader's pid), when known.
    pgid: Option<i32>,
    watchdog: Option<Watchdog>,
    grace: Duration,
    /// Set once the group has been killed and the watchdog released.
    done: bool,
}

/// Spawns `spec` for `server`, returning the process and its stdout and stdin.
pub(crate) fn spawn(
    server: &str,
    spec: &Spawn,
) -> std::io::Result<(ChildProcess, ChildStdout, ChildStdin)> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        command.current_dir(dir);
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn()?;
    let pid = child.id();
    let pgid = pid.and_then(|p| i32::try_from(p).ok());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("stdout was not piped"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("stdin was not piped"))?;
    let tail = StderrTail::default();
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(drain_stderr(
            server.to_owned(),
            stderr,
            tail.clone(),
            spec.secrets.clone(),
        ));
    }
    let watchdog = pgid.filter(|_| cfg!(unix)).and_then(|pgid| match Watchdog::spawn(pgid) {
        Ok(watchdog) => Some(watchdog),
        Err(e) => {
            tracing::warn!(
                server,
                error = %e,
                "cannot start the MCP server watchdog; the server may outlive this process if it is killed"
            );
            None
        }
    });
    let group = Group {
        child,
        pgid,
        watchdog,
        grace: spec.grace,
        done: false,
    };
    Ok((
        ChildProcess {
            group: Some(group),
            pid,
            stderr: tail,
        },
        stdout,
        stdin,
    ))
}

impl ChildProcess {
    /// The process id of the server (the group leader).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The last lines of stderr.
    pub(crate) fn stderr(&self) -> &StderrTail {
        &self.stderr
    }

    /// Whether the group leader has exited. Does not reap it on Linux.
    pub(crate) fn has_exited(&mut self) -> bool {
        self.group.as_mut().is_none_or(Group::leader_exited)
    }

    /// Waits up to the grace period (none when `immediate`) for the server to exit (its
    /// stdin must already be closed), then kills its process group and reaps it.
    pub(crate) async fn shutdown(mut self, immediate: bool) {
        if let Some(mut group) = self.group.take() {
            if immediate {
                group.grace = Duration::ZERO;
            }
            group.shutdown().await;
        }
    }

    /// Kills the process group now; the leader is reaped in the background.
    pub(crate) fn shutdown_now(mut self) {
        if let Some(mut group) = self.group.take() {
            group.grace = Duration::ZERO;
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(group.shutdown())),
                Err(_) => drop(group),
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            match tokio::runtime::Handle::try_current() {
                // If the task is dropped unfinished (runtime shutdown), `Group::drop` kills.
                Ok(handle) => drop(handle.spawn(group.shutdown())),
                Err(_) => drop(group),
            }
        }
    }
}

impl Group {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    fn leader_exited(&mut self) -> bool {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        use nix::unistd::Pid;
        let Some(pid) = self.pgid else {
            return self.child.try_wait().map_or(true, |s| s.is_some());
        };
        match waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => false,
            // Exited, or already reaped (ECHILD).
            Ok(_) | Err(_) => true,
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    fn leader_exited(&mut self) -> bool {
        // No non-reaping wait here: `try_wait` reaps, which frees the process id before
        // the group is killed. The window is a few milliseconds.
        self.child.try_wait().map_or(true, |s| s.is_some())
    }

    async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        while !self.leader_exited() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        // SIGKILL cannot be ignored; the bound only guards against a stuck kernel.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.release();
            let _ = tokio::time::timeout(Duration::from_secs(1), watchdog.child.wait()).await;
        }
        self.done = true;
    }

    /// Kills the whole group (the leader may be a zombie, never reaped here) and releases the
    /// watchdog.
    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        #[cfg(not(unix))]
        let _ = self.child.start_kill();
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.release();
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
}

/// Kills a process group when this process dies; see the module documentation.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    /// The write end of the watchdog's stdin; this process is its only holder.
    lifeline: Option<std::fs::File>,
}

/// The watchdog: ignore terminal signals, wait for a line or end of file, kill the group
/// unless told `done`.
const WATCHDOG_SCRIPT: &str = "trap '' INT HUP; IFS= read -r line; \
     [ \"$line\" = done ] || kill -s KILL -- \"-$1\" 2>/dev/null; exit 0";

impl Watchdog {
    #[cfg(unix)]
    fn spawn(pgid: i32) -> std::io::Result<Self> {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("promptkit-mcp-watchdog")
            .arg(pgid.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = command.spawn()?;
        let lifeline = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("stdin was not piped"))?
            .into_owned_fd()?;
        Ok(Self {
            child,
            lifeline: Some(std::fs::File::from(lifeline)),
        })
    }

    #[cfg(not(unix))]
    fn spawn(_pgid: i32) -> std::io::Result<Self> {
        Err(std::io::Error::other("no watchdog on this platform"))
    }

    /// Tells the watchdog to exit without killing.
    fn release(&mut self) {
        use std::io::Write as _;
        if let Some(mut lifeline) = self.lifeline.take() {
            // Five bytes into an empty pipe never block.
            let _ = lifeline.write_all(b"done\n");
        }
    }
}

/// Logs a server's stderr line by line (long lines in pieces), with `secrets` replaced, and
/// keeps the last lines.
async fn drain_stderr(server: String, stderr: ChildStderr, tail: StderrTail, secrets: Vec<String>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        let (consumed, complete) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => {
                let (take, complete) = match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                };
                let room = STDERR_MAX_LINE.saturating_sub(line.len());
                line.extend_from_slice(&buf[..take.min(room)]);
                (take, complete)
            }
        };
        reader.consume(consumed);
        if complete || line.len() >= STDERR_MAX_LINE {
            emit(&server, &line, &tail, &secrets);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&server, &line, &tail, &secrets);
    }
    tail.closed.send_replace(true);
}

fn emit(server: &str, line: &[u8], tail: &StderrTail, secrets: &[String]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return;
    }
    let text = scrub(text, secrets);
    tracing::debug!(target: "promptkit_mcp::stderr", server, "{text}");
    tail.push(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_env_values_and_expanded_secrets() {
        let spawn = Spawn {
            program: "/opt/k-secret-path/server".to_owned(),
            args: vec!["--token".to_owned(), "k-secret-token".to_owned()],
            env: vec![("API_KEY".to_owned(), "k-secret-env".to_owned())],
            cwd: None,
            grace: Duration::from_secs(1),
            secrets: vec!["k-secret-token".to_owned(), "k-secret-path".to_owned()],
        };
        let debug = format!("{spawn:?}");
        assert!(!debug.contains("k-secret"), "{debug}");
        assert!(
            debug.contains("API_KEY") && debug.contains("--token"),
            "{debug}"
        );
    }
}
