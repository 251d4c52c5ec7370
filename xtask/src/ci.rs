//! `cargo xtask ci`: every CI step, each reported, failures summed up at the end.
//!
//! Steps never stop the run: a failing step is recorded and the next one starts, so one run shows
//! everything that is wrong (the `--keep-going` behaviour is the only one).

use std::{
    fmt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    layering,
    metadata::{self, Member, cargo},
};

/// Options of `cargo xtask ci`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// Check only this workspace member (`-p`); `None` checks the whole workspace.
    pub(crate) package: Option<String>,
    /// Also run `cargo deny check advisories`, which needs the network.
    pub(crate) advisories: bool,
}

/// One CI step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `cargo fmt --check`
    Fmt,
    /// `cargo clippy ... -D warnings`
    Clippy,
    /// `cargo nextest run`
    Test,
    /// `cargo test --doc`
    DocTest,
    /// `cargo doc` with `RUSTDOCFLAGS=-D warnings`
    Doc,
    /// `cargo deny check bans licenses sources`
    Deny,
    /// `cargo deny check advisories`
    Advisories,
    /// The layering and manifest tidy checks, in-process.
    Layering,
}

impl Step {
    /// The short name shown in headers and in the summary.
    fn name(self) -> &'static str {
        match self {
            Self::Fmt => "fmt",
            Self::Clippy => "clippy",
            Self::Test => "tests",
            Self::DocTest => "doc tests",
            Self::Doc => "docs",
            Self::Deny => "cargo-deny",
            Self::Advisories => "advisories",
            Self::Layering => "layering",
        }
    }
}

/// How a step ended.
#[derive(Debug)]
enum Outcome {
    /// It ran and passed.
    Passed,
    /// It did not apply; the reason says why.
    Skipped(String),
    /// It ran and failed, or could not run; the reason says how.
    Failed(String),
}

/// What the steps need to know.
#[derive(Debug)]
struct Ci<'a> {
    /// The workspace root, where every command runs.
    root: &'a Path,
    /// The member checked with `-p`, or `None` for the whole workspace.
    package: Option<&'a Member>,
}

impl Ci<'_> {
    /// `cargo <subcommand>` in the workspace root.
    fn cargo(&self, subcommand: &str) -> Command {
        let mut command = cargo();
        command.current_dir(self.root).arg(subcommand);
        command
    }

    /// `-p <crate>` or `--workspace`, for the commands that take either.
    fn selection(&self) -> Vec<&str> {
        match self.package {
            Some(member) => vec!["-p", member.name.as_str()],
            None => vec!["--workspace"],
        }
    }

    /// Runs one step.
    fn run_step(&self, step: Step) -> anyhow::Result<Outcome> {
        match step {
            Step::Fmt => {
                let mut command = self.cargo("fmt");
                match self.package {
                    Some(member) => command.args(["-p", member.name.as_str()]),
                    None => command.arg("--all"),
                };
                run_command(command.arg("--check"))
            }
            Step::Clippy => run_command(self.cargo("clippy").args(self.selection()).args([
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ])),
            Step::Test => {
                ensure_tool(self.root, "nextest", "cargo-nextest")?;
                ensure_programs(TEST_PROGRAMS)?;
                run_command(
                    self.cargo("nextest")
                        .arg("run")
                        .args(self.selection())
                        .args(["--all-features", "--no-tests=warn"]),
                )
            }
            Step::DocTest => {
                if let Some(member) = self.package.filter(|member| !member.has_lib()) {
                    return Ok(Outcome::Skipped(format!(
                        "{} has no library target, so no doc tests",
                        member.name
                    )));
                }
                run_command(
                    self.cargo("test")
                        .arg("--doc")
                        .args(self.selection())
                        .arg("--all-features"),
                )
            }
            Step::Doc => run_command(
                self.cargo("doc")
                    .args(["--no-deps"])
                    .args(self.selection())
                    .arg("--all-features")
                    .env("RUSTDOCFLAGS", "-D warnings"),
            ),
            Step::Deny => {
                ensure_tool(self.root, "deny", "cargo-deny")?;
                run_command(
                    self.cargo("deny")
                        .args(["check", "bans", "licenses", "sources"]),
                )
            }
            Step::Advisories => {
                ensure_tool(self.root, "deny", "cargo-deny")?;
                run_command(self.cargo("deny").args(["check", "advisories"]))
            }
            Step::Layering => Ok(if layering::run(self.root)? {
                Outcome::Passed
            } else {
                Outcome::Failed("layering or manifest tidy rules broken (see above)".to_owned())
            }),
        }
    }
}

/// Programs the tests run, with the Debian package of each: the voice tests make and speak
/// real speech with them (the local TTS runs `espeak-ng`).
const TEST_PROGRAMS: &[(&str, &str)] = &[("espeak-ng", "espeak-ng"), ("sox", "sox")];

/// Whether this is a CI run (`CI=true` or `CI=1`): then the tests need every program and
/// service, and a missing one fails them instead of skipping.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Under CI, installs the missing `programs` with apt (Debian, as root). Outside CI a missing
/// program only makes its tests skip, so nothing is installed on a developer's machine.
fn ensure_programs(programs: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() || !under_ci() {
        return Ok(());
    }
    println!("installing what the tests need: {}", missing.join(" "));
    let install = |update: bool| -> anyhow::Result<bool> {
        if update {
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
        }
        Ok(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?
            .success())
    };
    if !install(false)? && !install(true)? {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

/// A command line as the user would type it, with the environment it sets.
struct Shown<'a>(&'a Command);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.0.get_envs() {
            if let Some(value) = value {
                write!(
                    f,
                    "{}=\"{}\" ",
                    key.to_string_lossy(),
                    value.to_string_lossy()
                )?;
            }
        }
        // `$CARGO` is an absolute path; `cargo` reads better and means the same.
        let program = self.0.get_program().to_string_lossy();
        let program = Path::new(program.as_ref())
            .file_name()
            .map_or(program.clone(), |name| name.to_string_lossy());
        f.write_str(&program)?;
        for arg in self.0.get_args() {
            write!(f, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

/// Runs a command with inherited stdout and stderr; a non-zero exit is a failed step.
fn run_command(command: &mut Command) -> anyhow::Result<Outcome> {
    let shown = Shown(command).to_string();
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    Ok(if status.success() {
        Outcome::Passed
    } else {
        Outcome::Failed(format!("`{shown}` failed ({status})"))
    })
}

/// Makes sure `cargo <subcommand>` works, installing `krate` with `cargo install --locked` if
/// it does not.
fn ensure_tool(root: &Path, subcommand: &str, krate: &str) -> anyhow::Result<()> {
    let installed = cargo()
        .current_dir(root)
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    println!("`cargo {subcommand}` is not available: installing {krate}");
    match run_command(
        cargo()
            .current_dir(root)
            .args(["install", krate, "--locked"]),
    )? {
        Outcome::Passed => Ok(()),
        Outcome::Skipped(reason) | Outcome::Failed(reason) => {
            bail!("cannot install {krate}: {reason}")
        }
    }
}

/// Formats a duration as seconds with one decimal.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// Runs every CI step on the workspace at `root`; `Ok(false)` means at least one step failed.
pub(crate) fn run(root: &Path, options: &Options) -> anyhow::Result<bool> {
    let package = match &options.package {
        None => None,
        Some(name) => {
            let members = metadata::members(root)?;
            let Some(member) = members.iter().find(|member| &member.name == name).cloned() else {
                let names: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
                bail!(
                    "`{name}` is not a workspace member; valid names are: {}",
                    names.join(", ")
                );
            };
            Some(member)
        }
    };
    let ci = Ci {
        root,
        package: package.as_ref(),
    };

    let mut steps = vec![
        Step::Fmt,
        Step::Clippy,
        Step::Test,
        Step::DocTest,
        Step::Doc,
        Step::Deny,
    ];
    if options.advisories {
        steps.push(Step::Advisories);
    }
    steps.push(Step::Layering);

    let scope = package
        .as_ref()
        .map_or_else(|| "the workspace".to_owned(), |member| member.name.clone());
    println!("ci: {} steps on {scope}", steps.len());

    let started = Instant::now();
    let mut results = Vec::new();
    for (index, &step) in steps.iter().enumerate() {
        println!();
        println!("==> [{}/{}] {}", index + 1, steps.len(), step.name());
        let step_started = Instant::now();
        let outcome = ci
            .run_step(step)
            .unwrap_or_else(|err| Outcome::Failed(format!("{err:#}")));
        let took = step_started.elapsed();
        match &outcome {
            Outcome::Passed => println!("==> {}: ok ({})", step.name(), seconds(took)),
            Outcome::Skipped(reason) => println!("==> {}: skipped: {reason}", step.name()),
            Outcome::Failed(reason) => {
                println!("==> {}: FAILED ({}): {reason}", step.name(), seconds(took));
            }
        }
        results.push((step, outcome, took));
    }

    println!();
    println!("==> summary ({} in all)", seconds(started.elapsed()));
    for (step, outcome, took) in &results {
        let (status, detail) = match outcome {
            Outcome::Passed => ("ok", String::new()),
            Outcome::Skipped(reason) => ("skipped", format!(": {reason}")),
            Outcome::Failed(reason) => ("FAILED", format!(": {reason}")),
        };
        println!(
            "  {status:<8} {:<11} {:>8}{detail}",
            step.name(),
            seconds(*took)
        );
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, outcome, _)| matches!(outcome, Outcome::Failed(_)))
        .map(|(step, _, _)| step.name())
        .collect();
    if failed.is_empty() {
        println!("ci: every step ok");
        Ok(true)
    } else {
        eprintln!(
            "ci: {} of {} steps failed: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
        Ok(false)
    }
}
