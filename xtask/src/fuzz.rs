//! `cargo xtask fuzz`: builds the fuzz crate (`fuzz/`, outside the workspace) with cargo-fuzz
//! and runs every target for a while, reporting executions and corpus sizes.
//!
//! cargo-fuzz passes `-Zsanitizer=address`, which the stable toolchain takes with
//! `RUSTC_BOOTSTRAP=1`. The binaries are run directly rather than through `cargo fuzz run`,
//! so that a run does not rebuild and each target's figures are read from libFuzzer's own
//! closing line.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::metadata::{cargo, target_directory};

/// What `cargo xtask fuzz` was asked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Seconds per target.
    pub(crate) seconds: u64,
    /// Only these targets (all when empty).
    pub(crate) targets: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: 60,
            targets: Vec::new(),
        }
    }
}

/// One target's run.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    target: String,
    executions: u64,
    corpus: u64,
    crashed: bool,
}

/// Builds and runs the targets; `Ok(false)` when one crashed.
pub(crate) fn run(root: &Path, options: &Options) -> anyhow::Result<bool> {
    ensure_cargo_fuzz()?;
    let target_dir = target_directory(root)?.join("fuzz");
    println!("==> building the fuzz targets (cargo fuzz build -O, address sanitizer)");
    let status = cargo()
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "build", "-O", "--target-dir"])
        .arg(&target_dir)
        .status()
        .context("cannot run cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }
    let targets = if options.targets.is_empty() {
        list_targets(root)?
    } else {
        options.targets.clone()
    };
    let binaries = target_dir.join(host_triple()?).join("release");
    let mut runs = Vec::new();
    for target in &targets {
        println!("==> {target}: {} s", options.seconds);
        runs.push(run_target(root, &binaries, target, options.seconds)?);
    }
    println!("\n| target | executions | corpus entries | result |");
    println!("|---|---:|---:|---|");
    for run in &runs {
        let result = if run.crashed {
            format!("crash: see fuzz/artifacts/{}/", run.target)
        } else {
            "no crash".to_owned()
        };
        println!(
            "| `{}` | {} | {} | {result} |",
            run.target, run.executions, run.corpus
        );
    }
    Ok(runs.iter().all(|run| !run.crashed))
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let found = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return Ok(());
    }
    println!("`cargo fuzz` is not available: installing cargo-fuzz");
    let status = cargo()
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed");
    }
    Ok(())
}

fn list_targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let output = cargo()
        .current_dir(root)
        .args(["fuzz", "list"])
        .output()
        .context("cannot run cargo fuzz list")?;
    if !output.status.success() {
        bail!("cargo fuzz list failed");
    }
    let targets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("cargo fuzz list named no targets");
    }
    Ok(targets)
}

/// The host's target triple, where cargo-fuzz puts its binaries.
fn host_triple() -> anyhow::Result<String> {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("cannot run rustc -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

fn run_target(root: &Path, binaries: &Path, target: &str, seconds: u64) -> anyhow::Result<Run> {
    let corpus = root.join("fuzz/corpus").join(target);
    let artifacts: PathBuf = root.join("fuzz/artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let output = Command::new(binaries.join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .output()
        .with_context(|| format!("cannot run the fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let (executions, corpus_entries) = done_line(&log).unwrap_or_default();
    let crashed = !output.status.success();
    if crashed {
        eprintln!("{log}");
    }
    Ok(Run {
        target: target.to_owned(),
        executions,
        corpus: corpus_entries,
        crashed,
    })
}

/// The executions and corpus size from libFuzzer's closing `#N DONE ... corp: C/...` line.
fn done_line(log: &str) -> Option<(u64, u64)> {
    let line = log
        .lines()
        .rev()
        .find(|line| line.split_whitespace().nth(1) == Some("DONE"))?;
    let executions = line
        .strip_prefix('#')?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let corpus = line
        .split_whitespace()
        .skip_while(|word| *word != "corp:")
        .nth(1)?
        .split('/')
        .next()?
        .parse()
        .ok()?;
    Some((executions, corpus))
}

#[cfg(test)]
mod tests {
    use super::done_line;

    #[test]
    fn the_closing_line_gives_executions_and_corpus() {
        let log = "INFO: Seed: 1\n#2 INITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #318824\tDONE   cov: 412 ft: 1270 corp: 206/9133b lim: 4096 exec/s: 10284 rss: 402Mb\n\
                   Done 318824 runs in 31 second(s)\n";
        assert_eq!(done_line(log), Some((318_824, 206)));
        assert_eq!(done_line("no summary"), None);
        assert_eq!(done_line("#5\tREDUCE cov: 1 corp: 2/3b"), None);
    }
}
