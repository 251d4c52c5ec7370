//! `cargo xtask bench round1`: the streaming-proxy load benchmark of `docs/benchmarks.md`.
//!
//! Everything runs on 127.0.0.1 from release builds: the test kit's mock upstream, the system
//! under test (`promptkit serve` with the OpenAI-compatible provider pointed at the mock) and
//! the no-framework baseline proxy, driven by the test kit's load generator. Per scenario and
//! tier, the baseline and promptkit run back to back, each in a fresh process, so the CPU time
//! (from `/proc/<pid>/stat`) and the peak RSS (`VmHWM`) belong to that tier alone.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::metadata::{cargo, target_directory};

/// Options of `cargo xtask bench round1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// Concurrency tiers; each sends `per_worker` requests per worker.
    pub(crate) tiers: Vec<usize>,
    /// Requests per concurrent worker.
    pub(crate) per_worker: usize,
    /// The mock upstream's timing profile (`fast` or `realistic`).
    pub(crate) profile: String,
    /// Which scenarios run.
    pub(crate) scenarios: Vec<Scenario>,
    /// Runs per cell (scenario, tier, target); the table shows medians.
    pub(crate) repeat: usize,
    /// Also write the JSON lines to this file.
    pub(crate) out: Option<PathBuf>,
    /// Another `promptkit` binary (a build of an earlier commit, say) to run in the
    /// baseline's place: paired runs of two builds, for changes too small to see against
    /// the baseline through run-to-run noise.
    pub(crate) versus: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tiers: vec![10, 50, 200, 500, 1000, 2000],
            per_worker: 10,
            profile: "fast".to_owned(),
            scenarios: vec![Scenario::Plain, Scenario::Tools],
            repeat: 1,
            out: None,
            versus: None,
        }
    }
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// One streamed model round.
    Plain,
    /// A streamed round asking for `lookup_order`, the tool over HTTP, a second streamed round.
    Tools,
}

impl Scenario {
    pub(crate) fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "plain" => Ok(Self::Plain),
            "tools" => Ok(Self::Tools),
            other => bail!("unknown scenario `{other}` (plain, tools)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Tools => "tools",
        }
    }
}

/// A system being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Baseline,
    /// The `--versus` build of promptkit.
    Versus,
    Promptkit,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Versus => "versus",
            Self::Promptkit => "promptkit",
        }
    }
}

/// `binary serve` configured as the system under test, with limits at least the tier's
/// `concurrency`: the benchmark measures the runtime, not the server's queue or rate limit.
///
/// The limits go in environment variables, which a `--versus` build from before they existed
/// ignores (it has no such limits), where a flag would stop it from starting.
fn serve_command(
    binary: &Path,
    work: &Path,
    upstream: &str,
    scenario: Scenario,
    concurrency: usize,
) -> Command {
    let mut command = Command::new(binary);
    // The load generator keeps one connection per worker; the margin covers reconnects.
    let connections = (2 * concurrency + 64).to_string();
    command
        .env("PROMPTKIT_HOME", work)
        .env("PROMPTKIT_MAX_CONCURRENCY", concurrency.to_string())
        .env("PROMPTKIT_MAX_QUEUE", concurrency.to_string())
        .env("PROMPTKIT_MAX_CONNECTIONS", connections)
        .env("PROMPTKIT_RATE_LIMIT", "0")
        .env_remove("PROMPTKIT_API_KEYS")
        .env_remove("OPENAI_API_KEY")
        .env_remove("PROMPTKIT_PROVIDER_CONFIG")
        .args([
            "--provider",
            "openai-compatible",
            "--base-url",
            &format!("{upstream}/v1"),
            "--model",
            "gpt-4o-mini",
            "--state",
            "memory",
        ]);
    if scenario == Scenario::Tools {
        command.args(["--tools", &work.join("lookup_order.json").to_string_lossy()]);
    }
    command.args(["serve", "--addr", "127.0.0.1:0"]);
    command
}

/// A child process whose output lines arrive on a channel; killed when dropped.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `command`, reading lines from its stdout or stderr.
    fn spawn(mut command: Command, from_stderr: bool) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(if from_stderr {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(if from_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let reader: Box<dyn Read + Send> = if from_stderr {
            Box::new(child.stderr.take().context("no stderr")?)
        } else {
            Box::new(child.stdout.take().context("no stdout")?)
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Waits for the `listening on http://…` line and returns the URL.
    fn address(&self) -> anyhow::Result<String> {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .context("the process did not print its address within 30 s")?;
            if let Some(url) = line.split("listening on ").nth(1) {
                return Ok(url.trim().to_owned());
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (SIGKILL after 10 s).
    fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Peak resident set size of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmHWM in /proc/<pid>/status")?
        .parse()
        .context("malformed VmHWM")
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cores} cores, {cpu}")
}

/// Builds the release binaries and returns their directory.
///
/// `promptkit` is built on its own, as a user builds it: built together with the test kit,
/// cargo unifies the features of their shared dependencies (axum gains `json`), which
/// changes the whole-program-optimised binary, and a benchmark must measure what ships.
fn build(root: &Path) -> anyhow::Result<PathBuf> {
    println!("==> building release binaries (promptkit, mock upstream, baseline, load generator)");
    for packages in [
        &["-p", "promptkit-testkit", "--bins"][..],
        &["-p", "promptkit-cli", "--bin", "promptkit"],
    ] {
        let status = cargo()
            .current_dir(root)
            .args(["build", "--release"])
            .args(packages)
            .status()
            .context("cannot run cargo build")?;
        if !status.success() {
            bail!("cargo build --release failed");
        }
    }
    Ok(target_directory(root)?.join("release"))
}

/// What every measurement shares: where the binaries are, the work directory, the upstream.
struct Setup<'a> {
    bin: &'a Path,
    versus: Option<&'a Path>,
    work: &'a Path,
    upstream: &'a str,
}

/// Runs one scenario, target and tier; returns the result line.
fn measure(
    setup: &Setup<'_>,
    scenario: Scenario,
    target: Target,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<Value> {
    let Setup {
        bin,
        versus,
        work,
        upstream,
    } = *setup;
    let (process, path) = match target {
        Target::Baseline => {
            let mut command = Command::new(bin.join("promptkit-bench-baseline"));
            command.args(["--upstream", &format!("{upstream}/v1")]);
            let path = match scenario {
                Scenario::Plain => "/v1/chat/completions",
                Scenario::Tools => "/v1/chat/completions/tools",
            };
            (Process::spawn(command, false)?, path)
        }
        Target::Promptkit | Target::Versus => {
            let binary = match target {
                Target::Versus => versus
                    .context("internal: --versus without a binary")?
                    .to_owned(),
                _ => bin.join("promptkit"),
            };
            (
                Process::spawn(
                    serve_command(&binary, work, upstream, scenario, concurrency),
                    true,
                )?,
                "/v1/chat/completions",
            )
        }
    };
    let url = format!("{}{path}", process.address()?);
    let pid = process.pid();
    let ticks_before = cpu_ticks(pid)?;
    let output = Command::new(bin.join("promptkit-loadgen"))
        .args([
            "--url",
            &url,
            "--concurrency",
            &concurrency.to_string(),
            "--requests",
            &requests.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the load generator")?;
    if !output.status.success() {
        bail!("the load generator failed with {}", output.status);
    }
    let ticks = cpu_ticks(pid)? - ticks_before;
    let rss_kib = peak_rss_kib(pid)?;
    process.stop()?;
    let mut line: Value = serde_json::from_slice(&output.stdout)
        .context("cannot parse the load generator's output")?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "tick and request counts far below 2^52"
    )]
    let cpu_ms_per_request =
        ticks as f64 * 1000.0 / clock_ticks_per_second() as f64 / requests.max(1) as f64;
    line["scenario"] = json!(scenario.name());
    line["target"] = json!(target.name());
    line["cpu_ms_per_request"] = json!(cpu_ms_per_request);
    line["peak_rss_mb"] = json!(rss_kib / 1024);
    Ok(line)
}

/// The median of `values` (the upper one of an even count); `NaN` for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// How the runs of promptkit compare with the runs of `reference` (the baseline or the
/// `--versus` build) made beside them: for a gap of a few per cent on a noisy machine, the
/// median of the per-pair differences is steadier than the difference of two medians.
fn pair_line(reference: &[Value], promptkit: &[Value]) -> Value {
    let pairs: Vec<_> = reference.iter().zip(promptkit).collect();
    let gaps: Vec<f64> = pairs
        .iter()
        .map(|(r, p)| f(p, &["ttft_ms", "p50"]) - f(r, &["ttft_ms", "p50"]))
        .collect();
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(r, p)| f(p, &["cpu_ms_per_request"]) / f(r, &["cpu_ms_per_request"]))
        .collect();
    let within_2_ms = gaps.iter().filter(|g| **g <= 2.0).count();
    let first = promptkit.first().unwrap_or(&Value::Null);
    json!({
        "scenario": first["scenario"],
        "concurrency": first["concurrency"],
        "pairs": pairs.len(),
        "ttft_p50_gap_ms": median(gaps),
        "within_2_ms": within_2_ms,
        "cpu_ratio": median(ratios),
    })
}

fn pair_table(pairs: &[Value]) -> String {
    let mut out = String::from(
        "| scenario | C | pairs | TTFT p50 gap ms | pairs within 2 ms | CPU ms/req ratio |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for p in pairs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:+.1} | {} | {:.3}x |",
            p["scenario"].as_str().unwrap_or("?"),
            p["concurrency"],
            p["pairs"],
            f(p, &["ttft_p50_gap_ms"]),
            p["within_2_ms"],
            f(p, &["cpu_ratio"]),
        );
    }
    out
}

/// One line from several runs of the same cell: the median of each figure, errors summed.
fn median_line(lines: &[Value]) -> Value {
    let Some(first) = lines.first() else {
        return Value::Null;
    };
    let median_of = |path: &[&str]| median(lines.iter().map(|l| f(l, path)).collect());
    let mut out = first.clone();
    for path in [
        &["throughput_rps"][..],
        &["ttft_ms", "p50"],
        &["ttft_ms", "p99"],
        &["total_ms", "p50"],
        &["total_ms", "p99"],
        &["cpu_ms_per_request"],
        &["peak_rss_mb"],
    ] {
        let value = median_of(path);
        match path {
            [key] => out[*key] = json!(value),
            [outer, inner] => out[*outer][*inner] = json!(value),
            _ => {}
        }
    }
    out["errors"] = json!(
        lines
            .iter()
            .filter_map(|l| l["errors"].as_u64())
            .sum::<u64>()
    );
    out["runs"] = json!(lines.len());
    out
}

fn f(value: &Value, path: &[&str]) -> f64 {
    let mut v = value;
    for key in path {
        v = &v[*key];
    }
    v.as_f64().unwrap_or(f64::NAN)
}

/// The markdown table of the results.
fn table(results: &[Value]) -> String {
    let mut out = String::from(
        "| scenario | C | target | req/s | TTFT p50 ms | TTFT p99 ms | total p50 ms | total p99 ms | errors | CPU ms/req | peak RSS MB |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.3} | {:.0} |",
            r["scenario"].as_str().unwrap_or("?"),
            r["concurrency"],
            r["target"].as_str().unwrap_or("?"),
            f(r, &["throughput_rps"]),
            f(r, &["ttft_ms", "p50"]),
            f(r, &["ttft_ms", "p99"]),
            f(r, &["total_ms", "p50"]),
            f(r, &["total_ms", "p99"]),
            r["errors"],
            f(r, &["cpu_ms_per_request"]),
            f(r, &["peak_rss_mb"]),
        );
    }
    out
}

/// Runs the benchmark; `Ok(false)` when a request failed.
pub(crate) fn round1(root: &Path, options: &Options) -> anyhow::Result<bool> {
    if !Path::new("/proc/self/stat").exists() {
        bail!("round1 reads CPU time and RSS from /proc: run it on Linux");
    }
    if let Some(other) = &options.versus
        && !other.is_file()
    {
        bail!("--versus: {} is not a file", other.display());
    }
    let bin = build(root)?;
    let work = std::env::temp_dir().join(format!("promptkit-round1-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    let mut mock = Command::new(bin.join("promptkit-mock-upstream"));
    mock.args(["--port", "0", "--profile", &options.profile]);
    let mock = Process::spawn(mock, false)?;
    let upstream = mock.address()?;
    std::fs::write(
        work.join("lookup_order.json"),
        json!({"name": "lookup_order", "description": "Looks up an order by id",
            "input_schema": {"type": "object", "required": ["order_id"],
                             "properties": {"order_id": {"type": "string"}}},
            "executor": "http",
            "config": {"url": format!("{upstream}/tool"), "method": "POST"}})
        .to_string(),
    )?;

    let machine = machine();
    println!(
        "==> round 1 on {machine}; profile {}; upstream {upstream}",
        options.profile
    );
    let first = if options.versus.is_some() {
        Target::Versus
    } else {
        Target::Baseline
    };
    let setup = Setup {
        bin: &bin,
        versus: options.versus.as_deref(),
        work: &work,
        upstream: &upstream,
    };
    let mut runs = Vec::new();
    let mut results = Vec::new();
    let mut clean = true;
    let mut pairs = Vec::new();
    for &scenario in &options.scenarios {
        for &concurrency in &options.tiers {
            let mut per_target: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
            // The baseline (or the --versus build) and promptkit alternate, so drift on a
            // shared machine hits both, and which of a pair runs first alternates too: the
            // second run of a pair meets a mock and a page cache the first has warmed.
            for repeat in 0..options.repeat.max(1) {
                let mut order = [(0, first), (1, Target::Promptkit)];
                if repeat % 2 == 1 {
                    order.reverse();
                }
                for (slot, target) in order {
                    let requests = concurrency * options.per_worker;
                    let line = measure(&setup, scenario, target, concurrency, requests)
                        .with_context(|| {
                            format!("{} {} at {concurrency}", scenario.name(), target.name())
                        })?;
                    if line["errors"].as_u64() != Some(0) {
                        clean = false;
                    }
                    println!("{line}");
                    per_target[slot].push(line.clone());
                    runs.push(line);
                }
            }
            for lines in &per_target {
                results.push(median_line(lines));
            }
            pairs.push(pair_line(&per_target[0], &per_target[1]));
        }
    }
    mock.stop()?;
    let _ = std::fs::remove_dir_all(&work);
    let table = table(&results);
    println!(
        "\nround 1, profile {}, {machine}, {} requests per worker, median of {} run(s) per cell, \
         errors summed\n\n{table}",
        options.profile,
        options.per_worker,
        options.repeat.max(1)
    );
    if options.repeat > 1 {
        println!(
            "\npromptkit against the {} run beside it (pair medians)\n\n{}",
            first.name(),
            pair_table(&pairs)
        );
    }
    if let Some(out) = &options.out {
        let mut text = String::new();
        for r in &runs {
            let _ = writeln!(text, "{r}");
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_runs_with_limits_at_least_the_tier() {
        let command = serve_command(
            Path::new("promptkit"),
            Path::new("/tmp/w"),
            "http://127.0.0.1:1",
            Scenario::Plain,
            500,
        );
        let env: std::collections::HashMap<_, _> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let number = |name: &str| -> usize { env[name].as_deref().unwrap().parse().unwrap() };
        assert!(number("PROMPTKIT_MAX_CONCURRENCY") >= 500);
        assert!(number("PROMPTKIT_MAX_QUEUE") >= 500);
        assert!(number("PROMPTKIT_MAX_CONNECTIONS") >= 500);
        assert_eq!(number("PROMPTKIT_RATE_LIMIT"), 0, "no rate limit");
        assert_eq!(
            env["PROMPTKIT_API_KEYS"], None,
            "no keys from the caller's shell"
        );
    }

    #[test]
    fn the_table_has_a_row_per_result() {
        let row = json!({"scenario": "plain", "concurrency": 10, "target": "baseline",
            "throughput_rps": 100.0, "ttft_ms": {"p50": 11.0, "p99": 12.5},
            "total_ms": {"p50": 120.0, "p99": 130.0}, "errors": 0,
            "cpu_ms_per_request": 0.25, "peak_rss_mb": 12});
        let text = table(&[row.clone(), row]);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains(
            "| plain | 10 | baseline | 100 | 11.0 | 12.5 | 120.0 | 130.0 | 0 | 0.250 | 12 |"
        ));
    }

    #[test]
    fn cells_report_medians_and_summed_errors() {
        let run = |rps: f64, errors: u64| {
            json!({"scenario": "plain", "concurrency": 10, "target": "promptkit",
                "throughput_rps": rps, "ttft_ms": {"p50": rps / 10.0, "p99": 1.0},
                "total_ms": {"p50": 1.0, "p99": 1.0}, "errors": errors,
                "cpu_ms_per_request": 0.5, "peak_rss_mb": 10})
        };
        let line = median_line(&[run(300.0, 0), run(100.0, 2), run(200.0, 1)]);
        assert_eq!(line["throughput_rps"], 200.0);
        assert_eq!(line["ttft_ms"]["p50"], 20.0);
        assert_eq!(line["errors"], 3);
        assert_eq!(line["runs"], 3);
    }

    #[test]
    fn pairs_report_the_median_gap_and_ratio() {
        let run = |target: &str, ttft: f64, cpu: f64| {
            json!({"scenario": "tools", "concurrency": 500, "target": target,
                "ttft_ms": {"p50": ttft}, "cpu_ms_per_request": cpu})
        };
        let reference = [
            run("baseline", 80.0, 0.4),
            run("baseline", 90.0, 0.5),
            run("baseline", 70.0, 0.4),
        ];
        let promptkit = [
            run("promptkit", 81.0, 0.44),
            run("promptkit", 99.0, 0.5),
            run("promptkit", 75.0, 0.48),
        ];
        let line = pair_line(&reference, &promptkit);
        // Gaps +1, +9 and +5 ms; ratios 1.1, 1.0 and 1.2.
        assert_eq!(line["pairs"], 3);
        assert!((f(&line, &["ttft_p50_gap_ms"]) - 5.0).abs() < 1e-9);
        assert_eq!(line["within_2_ms"], 1);
        assert!((f(&line, &["cpu_ratio"]) - 1.1).abs() < 1e-9);
        assert!(pair_table(&[line]).contains("| tools | 500 | 3 | +5.0 | 1 | 1.100x |"));
    }

    #[test]
    fn cpu_ticks_reads_this_process() {
        if Path::new("/proc/self/stat").exists() {
            assert!(cpu_ticks(std::process::id()).is_ok());
            assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
        }
    }
}
