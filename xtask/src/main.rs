//! Project automation for promptkit-rs, run as `cargo xtask <command>`.
//!
//! `cargo xtask ci` is the whole CI contract: `.ci/run` calls exactly that, and a developer runs
//! the same command before pushing.
//! The commands shell out to `cargo` and friends with inherited stdout and stderr, so their
//! output looks the same as when typed by hand.
//! The layering check runs in-process over `cargo metadata`.
//!
//! Keep this crate's dependencies few (anyhow and serde_json): it has to build, and `cargo xtask
//! ci` has to report, while the rest of the workspace is broken.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask reports to the terminal"
)]

mod bench;
mod ci;
mod fuzz;
mod layering;
mod metadata;
mod tidy;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};

/// What `cargo xtask help` prints.
const HELP: &str = "\
Project automation for promptkit-rs.

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    ci          Run every CI step, report each one, and fail at the end if any step failed:
                fmt, clippy, tests (nextest), doc tests, docs, cargo-deny, layering
    layering    Run only the layering check (01-architecture.md) and the manifest tidy checks
    bench round1
                The streaming-proxy load benchmark (docs/benchmarks.md): promptkit serve and a
                no-framework baseline in front of the mock upstream, tier by tier
    fuzz        Build the fuzz targets (fuzz/, cargo-fuzz) and run each for a while, with a
                table of executions and corpus sizes; fails when a target crashes
    help        Print this message

OPTIONS (ci):
    -p, --package <CRATE>   Check one workspace member instead of the whole workspace
                            (cargo-deny and the layering check still cover the workspace)
    --advisories            Also run `cargo deny check advisories` (needs the network)
    --keep-going            Run every step even after a failure (the default)

OPTIONS (fuzz):
    --seconds <N>           Seconds per target (default 60)
    --target <NAME>         Only this target (repeatable; default: every target)

OPTIONS (bench round1):
    --tiers <C,C,...>       Concurrency tiers (default 10,50,200,500,1000,2000)
    --per-worker <N>        Requests per concurrent worker (default 10)
    --profile <NAME>        Mock upstream profile: fast (default) or realistic
    --scenario <NAME>       plain or tools (default: both)
    --repeat <N>            Runs per cell, in pairs whose order alternates; the table shows
                            medians, and a second table the pair medians of the gaps (default 1)
    --out <FILE>            Also write the JSON lines to FILE
    --versus <BINARY>       Run another promptkit build (an earlier commit's, copied out of
                            target/release) in the baseline's place: paired runs of two builds
";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// `cargo xtask ci ...`
    Ci(ci::Options),
    /// `cargo xtask layering`
    Layering,
    /// `cargo xtask bench round1 ...`
    Round1(bench::Options),
    /// `cargo xtask fuzz ...`
    Fuzz(fuzz::Options),
    /// `cargo xtask help`
    Help,
}

/// Parses the arguments after `cargo xtask`.
fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Command> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Command::Help),
        "layering" => {
            if let Some(extra) = args.next() {
                bail!("`cargo xtask layering` takes no arguments, got `{extra}`");
            }
            Ok(Command::Layering)
        }
        "ci" => {
            let mut options = ci::Options::default();
            while let Some(arg) = args.next() {
                let package = match arg.as_str() {
                    "-p" | "--package" => Some(
                        args.next()
                            .with_context(|| format!("`{arg}` needs a crate name"))?,
                    ),
                    "--advisories" => {
                        options.advisories = true;
                        None
                    }
                    "--keep-going" => None,
                    "-h" | "--help" => return Ok(Command::Help),
                    other => match other.strip_prefix("--package=") {
                        Some(name) => Some(name.to_owned()),
                        None => bail!("unknown option `{other}` for `cargo xtask ci`\n\n{HELP}"),
                    },
                };
                if let Some(package) = package {
                    if options.package.is_some() {
                        bail!(
                            "`-p` given twice: `cargo xtask ci` checks one crate or the workspace"
                        );
                    }
                    options.package = Some(package);
                }
            }
            Ok(Command::Ci(options))
        }
        "fuzz" => {
            let mut options = fuzz::Options::default();
            while let Some(arg) = args.next() {
                let mut value = || {
                    args.next()
                        .with_context(|| format!("`{arg}` needs a value"))
                };
                match arg.as_str() {
                    "--seconds" => {
                        options.seconds = value()?
                            .parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .context("--seconds takes a positive number")?;
                    }
                    "--target" => options.targets.push(value()?),
                    other => bail!("unknown option `{other}` for `cargo xtask fuzz`\n\n{HELP}"),
                }
            }
            Ok(Command::Fuzz(options))
        }
        "bench" => match args.next().as_deref() {
            Some("round1") => parse_round1(args).map(Command::Round1),
            Some(other) => bail!("unknown benchmark `{other}` (round1)"),
            None => bail!("`cargo xtask bench` needs a benchmark: round1"),
        },
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// Parses the options of `cargo xtask bench round1`.
fn parse_round1(mut args: impl Iterator<Item = String>) -> anyhow::Result<bench::Options> {
    let mut options = bench::Options::default();
    let mut scenarios = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("`{arg}` needs a value"))
        };
        match arg.as_str() {
            "--tiers" => {
                options.tiers = value()?
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|c| *c > 0)
                            .with_context(|| format!("`{t}` is not a concurrency"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--per-worker" => {
                options.per_worker = value()?.parse().context("--per-worker takes a number")?;
            }
            "--profile" => options.profile = value()?,
            "--repeat" => {
                options.repeat = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .context("--repeat takes a positive number")?;
            }
            "--scenario" => scenarios.push(bench::Scenario::parse(&value()?)?),
            "--out" => options.out = Some(value()?.into()),
            "--versus" => options.versus = Some(value()?.into()),
            other => bail!("unknown option `{other}` for `cargo xtask bench round1`\n\n{HELP}"),
        }
    }
    if !scenarios.is_empty() {
        options.scenarios = scenarios;
    }
    Ok(options)
}

/// The workspace root: the parent of this crate's directory.
///
/// `cargo run` sets `CARGO_MANIFEST_DIR` for the program it runs; the value baked in at compile
/// time is the fallback for a binary started by hand.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let root = manifest_dir
        .parent()
        .with_context(|| format!("{} has no parent directory", manifest_dir.display()))?;
    Ok(root.to_path_buf())
}

/// Runs one command from the workspace root; `Ok(false)` means it ran and found problems.
fn run(command: Command, root: &Path) -> anyhow::Result<bool> {
    match command {
        Command::Help => {
            print!("{HELP}");
            Ok(true)
        }
        Command::Layering => layering::run(root),
        Command::Ci(options) => ci::run(root, &options),
        Command::Round1(options) => bench::round1(root, &options),
        Command::Fuzz(options) => fuzz::run(root, &options),
    }
}

fn main() -> ExitCode {
    let outcome = parse_args(std::env::args().skip(1)).and_then(|command| {
        let root = workspace_root()?;
        std::env::set_current_dir(&root)
            .with_context(|| format!("cannot change directory to {}", root.display()))?;
        run(command, &root)
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Command, ci, parse_args};

    fn parse(args: &[&str]) -> anyhow::Result<Command> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn no_arguments_print_help() {
        assert_eq!(parse(&[]).unwrap(), Command::Help);
        assert_eq!(parse(&["help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn ci_defaults_to_the_whole_workspace() {
        assert_eq!(parse(&["ci"]).unwrap(), Command::Ci(ci::Options::default()));
        assert_eq!(
            parse(&["ci", "--keep-going"]).unwrap(),
            Command::Ci(ci::Options::default())
        );
    }

    #[test]
    fn ci_takes_a_package_and_advisories() {
        let expected = Command::Ci(ci::Options {
            package: Some("promptkit-core".to_owned()),
            advisories: true,
        });
        assert_eq!(
            parse(&["ci", "-p", "promptkit-core", "--advisories"]).unwrap(),
            expected
        );
        assert_eq!(
            parse(&["ci", "--advisories", "--package=promptkit-core"]).unwrap(),
            expected
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse(&["ci", "-p"]).is_err());
        assert!(parse(&["ci", "-p", "a", "-p", "b"]).is_err());
        assert!(parse(&["ci", "--frobnicate"]).is_err());
        assert!(parse(&["layering", "extra"]).is_err());
        assert!(parse(&["deploy"]).is_err());
        assert!(parse(&["bench"]).is_err());
        assert!(parse(&["bench", "round2"]).is_err());
        assert!(parse(&["bench", "round1", "--tiers", "10,x"]).is_err());
        assert!(parse(&["bench", "round1", "--scenario", "voice"]).is_err());
        assert!(parse(&["fuzz", "--seconds", "0"]).is_err());
        assert!(parse(&["fuzz", "--frobnicate"]).is_err());
    }

    #[test]
    fn fuzz_takes_seconds_and_targets() {
        assert_eq!(
            parse(&["fuzz", "--seconds", "5", "--target", "mcp_sse"]).unwrap(),
            Command::Fuzz(super::fuzz::Options {
                seconds: 5,
                targets: vec!["mcp_sse".to_owned()],
            })
        );
        assert_eq!(
            parse(&["fuzz"]).unwrap(),
            Command::Fuzz(super::fuzz::Options::default())
        );
    }

    #[test]
    fn bench_round1_takes_tiers_and_scenarios() {
        let Command::Round1(options) = parse(&[
            "bench",
            "round1",
            "--tiers",
            "10, 500",
            "--scenario",
            "tools",
            "--per-worker",
            "3",
            "--versus",
            "/tmp/promptkit-old",
        ])
        .unwrap() else {
            panic!("not round1");
        };
        assert_eq!(
            options.versus.as_deref(),
            Some(std::path::Path::new("/tmp/promptkit-old"))
        );
        assert_eq!(options.tiers, [10, 500]);
        assert_eq!(options.scenarios, [super::bench::Scenario::Tools]);
        assert_eq!(options.per_worker, 3);
        assert_eq!(options.profile, "fast");
    }
}
