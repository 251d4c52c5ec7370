//! `promptkit`: chat with a model, run one-shot prompts and manage sessions, on the PromptKit
//! runtime.
//!
//! With no API key it runs on a built-in offline demo model (and says so); conversations are
//! kept in SQLite in the platform data directory unless `--state` says otherwise.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks to the terminal"
)]

mod config;
mod demo;
mod serve;
mod serve_cli;

use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use promptkit::agent::{Agent, AgentEvent};
use promptkit::mcp::McpRegistry;
use promptkit::providers::config::ProviderSpec;
use promptkit::providers::openai::{OpenAiConfig, OpenAiProvider};
use promptkit::state::{
    MemoryConfig, MemoryStore, PostgresConfig, PostgresStore, RedisConfig, RedisStore,
    SqliteConfig, SqliteStore,
};
use promptkit::tools::ToolRegistry;
use promptkit::{CombinedTools, ListOptions, Provider, Role, StateStore, ToolSet};

use crate::config::{ConfigFile, redact_url};
use crate::serve_cli::ServeArgs;

/// The system prompt when neither a flag nor the configuration file gives one.
const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// Exit code for usage and configuration errors.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failed model turn.
const EXIT_TURN: u8 = 3;

#[derive(Parser)]
#[command(
    name = "promptkit",
    version,
    about = "Chat with LLMs on the PromptKit runtime"
)]
struct Cli {
    /// Where conversations are kept: `sqlite://<path>`, `memory`, `postgres://…`, `redis://…`.
    /// Default: SQLite in the platform data directory (or $PROMPTKIT_HOME): `state.db`, and
    /// for `serve` a file of its own, `serve.db`.
    #[arg(long, global = true, env = "PROMPTKIT_STATE")]
    state: Option<String>,
    /// Seconds a conversation is kept after its last use; 0 keeps it for ever (the default,
    /// except for `serve`: 30 days). Applies to the whole store.
    #[arg(long, global = true, env = "PROMPTKIT_STATE_TTL")]
    state_ttl: Option<f64>,
    /// The environment variable holding the provider's API key. `--provider openai` reads
    /// OPENAI_API_KEY without it; `--provider openai-compatible` sends a key only when this
    /// names one, so a key meant for OpenAI never goes to another server.
    #[arg(long, global = true, env = "PROMPTKIT_API_KEY_ENV")]
    api_key_env: Option<String>,
    /// The model provider. Default: `openai` when OPENAI_API_KEY is set, else `demo`.
    #[arg(long, global = true, value_enum, env = "PROMPTKIT_PROVIDER")]
    provider: Option<ProviderKind>,
    /// The model (provider default when absent).
    #[arg(long, global = true, env = "PROMPTKIT_MODEL")]
    model: Option<String>,
    /// A provider configuration file (JSON or YAML: `type`, `model`, `base_url`, `api_key_env`,
    /// …); overrides `--provider`.
    #[arg(long, global = true, env = "PROMPTKIT_PROVIDER_CONFIG")]
    provider_config: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible server (with `--provider openai-compatible`).
    #[arg(long, global = true, env = "PROMPTKIT_BASE_URL")]
    base_url: Option<String>,
    /// The system prompt (default for `chat` and `run`: "You are a helpful assistant.";
    /// `serve` adds none unless one is given).
    #[arg(long, global = true)]
    system: Option<String>,
    /// A configuration file (YAML, or JSON by extension): provider, state, system prompt,
    /// tools, MCP servers, serve settings. Flags override it. See examples/promptkit.yaml.
    #[arg(long, global = true, env = "PROMPTKIT_CONFIG")]
    config: Option<PathBuf>,
    /// Tool descriptor files or directories (JSON or YAML) to offer to the model.
    #[arg(long = "tools", global = true)]
    tool_paths: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProviderKind {
    /// The built-in offline demo model.
    Demo,
    /// OpenAI (needs OPENAI_API_KEY).
    Openai,
    /// Any OpenAI-compatible server (Ollama, vLLM) at --base-url.
    OpenaiCompatible,
    /// Anthropic Claude (needs ANTHROPIC_API_KEY).
    Anthropic,
    /// Google Gemini (needs GEMINI_API_KEY or GOOGLE_API_KEY).
    Gemini,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Interactive chat, streaming answers; slash commands: `/new`, `/fork [id]`, `/history`, `/tools`,
    /// `/cost`, `/quit`.
    Chat {
        /// The session to continue (a new one when absent).
        #[arg(long)]
        session: Option<String>,
    },
    /// Send one prompt and print the answer.
    Run {
        /// The prompt.
        prompt: String,
        /// The session to continue (a new one when absent).
        #[arg(long)]
        session: Option<String>,
        /// Print the whole result (messages, usage, cost) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage stored sessions.
    Sessions {
        #[command(subcommand)]
        action: SessionAction,
    },
    /// List the tools the model would be offered (tool files, MCP servers).
    Tools {
        #[command(subcommand)]
        action: Option<ToolsAction>,
    },
    /// Serve an OpenAI-compatible API (`POST /v1/chat/completions`, `GET /v1/models`, the
    /// sessions API, `GET /health`); a request with an `x-session-id` header continues that
    /// session of its key. API keys come from PROMPTKIT_API_KEYS (comma-separated) or
    /// `--api-keys-file`.
    Serve(Box<ServeArgs>),
}

/// `Debug` without secrets: the state URL's password and the base URL's credentials are
/// hidden.
impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cli")
            .field("state", &self.state.as_deref().map(redact_url))
            .field("state_ttl", &self.state_ttl)
            .field("api_key_env", &self.api_key_env)
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("provider_config", &self.provider_config)
            .field("base_url", &self.base_url.as_deref().map(redact_url))
            .field("system", &self.system)
            .field("config", &self.config)
            .field("tool_paths", &self.tool_paths)
            .field("command", &self.command)
            .finish()
    }
}

#[derive(Subcommand, Debug)]
enum ToolsAction {
    /// List the tools (the default).
    List,
}

#[derive(Subcommand, Debug)]
enum SessionAction {
    /// List sessions, most recent first.
    List,
    /// Print a session's messages.
    Show {
        /// The session id.
        id: String,
    },
    /// Copy a session under a new id.
    Fork {
        /// The session to copy.
        source: String,
        /// The new id.
        target: String,
    },
    /// Delete a session.
    Rm {
        /// The session id.
        id: String,
    },
}

/// A configuration or usage problem (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// Sends the runtime's log to stderr, away from answers on stdout. `RUST_LOG` chooses what is
/// logged; by default warnings: retries, fail-overs, malformed frames, MCP servers lost.
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already set, which then stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// jemalloc rather than the system allocator: a server's requests make many small, short-lived
/// allocations on every worker thread, which jemalloc serves from thread caches (decision 0012
/// has the measurements). Only the binary chooses; the library crates leave it to users.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn data_dir() -> Result<PathBuf> {
    if let Ok(home) = std::env::var("PROMPTKIT_HOME") {
        return Ok(PathBuf::from(home));
    }
    dirs::data_dir()
        .map(|d| d.join("promptkit"))
        .ok_or_else(|| {
            ConfigError("no data directory on this platform; set PROMPTKIT_HOME or --state".into())
                .into()
        })
}

/// How the store is opened.
#[derive(Debug, Clone, Copy, Default)]
struct StateOptions {
    /// Sliding time-to-live of conversations.
    ttl: Option<Duration>,
    /// The most conversations the memory store keeps.
    memory_max_sessions: Option<usize>,
    /// The default file in the data directory.
    default_file: &'static str,
}

/// `--state-ttl` (or the file's `state_ttl_secs`), 0 meaning none; `default` without either.
fn state_ttl(cli: &Cli, file: &ConfigFile, default: Option<Duration>) -> Result<Option<Duration>> {
    match cli.state_ttl.or(file.state_ttl_secs) {
        None => Ok(default),
        Some(secs) => {
            let ttl = seconds("--state-ttl", secs)?;
            Ok((!ttl.is_zero()).then_some(ttl))
        }
    }
}

/// Creates the data directory readable by its owner only (conversations are private).
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Creates the SQLite file, if it does not exist, readable by its owner only; SQLite gives
/// its `-wal` and `-shm` files the same permissions.
fn create_private_file(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // An in-memory database or a path SQLite resolves itself: let SQLite say what is wrong.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

async fn open_state(spec: Option<&str>, options: StateOptions) -> Result<Arc<dyn StateStore>> {
    let spec = match spec {
        Some(s) => s.to_owned(),
        None => {
            let dir = data_dir()?;
            create_private_dir(&dir)?;
            format!("sqlite://{}", dir.join(options.default_file).display())
        }
    };
    if spec == "memory" {
        let mut config = MemoryConfig::default();
        if let Some(ttl) = options.ttl {
            config = config.with_ttl(ttl);
        }
        if let Some(n) = options.memory_max_sessions {
            config = config.with_max_entries(n);
        }
        return Ok(Arc::new(MemoryStore::with_config(config)));
    }
    if let Some(path) = spec.strip_prefix("sqlite://") {
        create_private_file(Path::new(path))?;
        let mut config = SqliteConfig::file(path);
        if let Some(ttl) = options.ttl {
            config = config.with_ttl(ttl);
        }
        let store = SqliteStore::open_with(config)
            .await
            .with_context(|| format!("opening SQLite state at {path}"))?;
        return Ok(Arc::new(store));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let mut config = PostgresConfig::new(spec.as_str());
        if let Some(ttl) = options.ttl {
            config = config.with_ttl(ttl);
        }
        let store = PostgresStore::connect_with(config)
            .await
            .context("connecting to Postgres")?;
        return Ok(Arc::new(store));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        let mut config = RedisConfig::new(spec.as_str());
        if let Some(ttl) = options.ttl {
            config = config.with_ttl(ttl);
        }
        let store = RedisStore::connect_with(config)
            .await
            .context("connecting to Redis")?;
        return Ok(Arc::new(store));
    }
    Err(ConfigError(format!(
        "unknown --state `{}`: use sqlite://<path>, memory, postgres://… or redis://…",
        redact_url(&spec)
    ))
    .into())
}

/// `OPENAI_API_KEY`, when set and not blank.
fn openai_key() -> Option<String> {
    std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
}

/// The key in the environment variable `name` (from `--api-key-env`).
fn named_key(name: &str) -> Result<String> {
    std::env::var(name)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| ConfigError(format!("--api-key-env: {name} is not set")).into())
}

/// The provider the flags select: `--provider`, else OpenAI when a key is set, else the demo.
fn selected_kind(cli: &Cli, has_openai_key: bool) -> ProviderKind {
    cli.provider.unwrap_or(if has_openai_key {
        ProviderKind::Openai
    } else {
        ProviderKind::Demo
    })
}

/// The provider, and the HTTP client it uses when the CLI built that client (the HTTP tools
/// then share it: one connection pool and one TLS set-up for the process).
fn provider(cli: &Cli, file: &ConfigFile) -> Result<(Arc<dyn Provider>, Option<reqwest::Client>)> {
    let spec = match (&cli.provider_config, &file.provider) {
        (Some(path), _) => {
            Some(ProviderSpec::from_file(path).map_err(|e| ConfigError(e.to_string()))?)
        }
        // An explicit `--provider` wins over the configuration file.
        (None, Some(spec)) if cli.provider.is_none() => Some(spec.clone()),
        _ => None,
    };
    if let Some(spec) = spec {
        return spec
            .build()
            .map(|provider| (provider, None))
            .map_err(|e| ConfigError(e.to_string()).into());
    }
    let openai = |config: OpenAiConfig| -> Result<(Arc<dyn Provider>, Option<reqwest::Client>)> {
        let client = config
            .http()
            .build_client()
            .map_err(|e| ConfigError(e.to_string()))?;
        let provider = OpenAiProvider::with_client(config, client.clone())
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok((Arc::new(provider), Some(client)))
    };
    Ok(match selected_kind(cli, openai_key().is_some()) {
        ProviderKind::Demo => {
            eprintln!(
                "note: no OPENAI_API_KEY set, using the built-in offline demo model (not a real LLM)"
            );
            (Arc::new(demo::DemoModel), None)
        }
        ProviderKind::Openai => {
            let key = match &cli.api_key_env {
                Some(name) => Some(named_key(name)?),
                None => openai_key(),
            };
            let Some(key) = key else {
                return Err(ConfigError("--provider openai needs OPENAI_API_KEY".into()).into());
            };
            let model = cli
                .model
                .clone()
                .unwrap_or_else(|| "gpt-4o-mini".to_owned());
            openai(OpenAiConfig::openai(model, key))?
        }
        ProviderKind::OpenaiCompatible => {
            let Some(base) = cli.base_url.clone() else {
                return Err(
                    ConfigError("--provider openai-compatible needs --base-url".into()).into(),
                );
            };
            let model = cli
                .model
                .clone()
                .ok_or_else(|| ConfigError("--provider openai-compatible needs --model".into()))?;
            // Only a key the user named goes to this server: OPENAI_API_KEY is for OpenAI.
            let key = cli.api_key_env.as_deref().map(named_key).transpose()?;
            openai(OpenAiConfig::compatible(base, model).with_api_key(key))?
        }
        kind @ (ProviderKind::Anthropic | ProviderKind::Gemini) => {
            // The configuration factory knows each vendor's key variables and defaults.
            let spec = ProviderSpec {
                kind: if kind == ProviderKind::Anthropic {
                    "anthropic"
                } else {
                    "gemini"
                }
                .to_owned(),
                model: cli.model.clone(),
                base_url: cli.base_url.clone(),
                ..ProviderSpec::default()
            };
            (spec.build().map_err(|e| ConfigError(e.to_string()))?, None)
        }
    })
}

/// The tools offered to the model: descriptor files (and the demo's), and MCP servers.
#[derive(Debug)]
struct Toolbox {
    registry: Arc<ToolRegistry>,
    mcp: Option<Arc<McpRegistry>>,
}

impl Toolbox {
    fn new(
        cli: &Cli,
        file: &ConfigFile,
        demo: bool,
        http: Option<reqwest::Client>,
    ) -> Result<Self> {
        let mcp = match file.mcp()? {
            Some(config) => Some(Arc::new(
                McpRegistry::new(config).map_err(|e| ConfigError(e.to_string()))?,
            )),
            None => None,
        };
        Ok(Self {
            registry: tools(cli, file, demo, http)?,
            mcp,
        })
    }

    /// Everything, as one tool set.
    fn set(&self) -> Arc<dyn ToolSet> {
        match &self.mcp {
            None => Arc::clone(&self.registry) as Arc<dyn ToolSet>,
            Some(mcp) => Arc::new(CombinedTools::new(vec![
                Arc::clone(&self.registry) as Arc<dyn ToolSet>,
                Arc::clone(mcp) as Arc<dyn ToolSet>,
            ])),
        }
    }

    /// Says which MCP servers could not be reached.
    fn report_mcp_failures(&self) {
        for health in self.mcp.iter().flat_map(|m| m.health()) {
            if let Some(error) = health.last_error {
                eprintln!("warning: MCP server `{}`: {error}", health.name);
            }
        }
    }

    /// Stops MCP servers.
    async fn shutdown(&self) {
        if let Some(mcp) = &self.mcp {
            mcp.shutdown().await;
        }
    }
}

/// The registry of tools from descriptor files; HTTP tools use `http` when given.
fn tools(
    cli: &Cli,
    file: &ConfigFile,
    demo: bool,
    http: Option<reqwest::Client>,
) -> Result<Arc<ToolRegistry>> {
    let registry = match http {
        Some(client) => ToolRegistry::new().with_http_client(client),
        None => ToolRegistry::new(),
    };
    if demo {
        demo::demo_tools(&registry);
    }
    for path in file.tools.iter().chain(&cli.tool_paths) {
        if path.is_dir() {
            registry
                .load_dir(path)
                .map_err(|e| ConfigError(e.to_string()))?;
        } else {
            registry
                .load_file(path)
                .map_err(|e| ConfigError(e.to_string()))?;
        }
    }
    Ok(Arc::new(registry))
}

/// A duration from a flag given in seconds.
fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| ConfigError(format!("{flag} must be a non-negative number of seconds")).into())
}

/// A new CLI session id: `s-` and 16 random hex digits, so it cannot be guessed from the time
/// it was made.
fn new_session_id() -> String {
    format!("s-{}", serve::random_hex(8))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let file = match &cli.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    if let Command::Tools { .. } = &cli.command {
        // Listing tools needs neither the store nor the provider.
        let demo = cli.provider_config.is_none()
            && (file.provider.is_none() || cli.provider.is_some())
            && selected_kind(&cli, openai_key().is_some()) == ProviderKind::Demo;
        let toolbox = Toolbox::new(&cli, &file, demo, None)?;
        let listed = toolbox.set().definitions().await;
        toolbox.report_mcp_failures();
        toolbox.shutdown().await;
        for def in listed? {
            println!("{}\t{}", def.name, def.description);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // `serve` checks its settings (keys, limits, TLS files) before connecting to anything.
    let serving = match &cli.command {
        Command::Serve(args) => Some(serve_cli::Serving::new(args, &cli, &file)?),
        _ => None,
    };
    let state_options = match &serving {
        Some(serving) => serving.state,
        None => StateOptions {
            ttl: state_ttl(&cli, &file, None)?,
            memory_max_sessions: file.memory_max_sessions,
            default_file: "state.db",
        },
    };
    let store = open_state(
        cli.state.as_deref().or(file.state.as_deref()),
        state_options,
    )
    .await?;
    if let Command::Sessions { action } = &cli.command {
        return sessions(store.as_ref(), action).await;
    }
    let (provider, http) = provider(&cli, &file)?;
    let demo = provider.id() == "demo";
    let toolbox = Toolbox::new(&cli, &file, demo, http)?;
    let tools = toolbox.set();
    if let Some(serving) = serving {
        // `serve` applies the operator's system prompt itself, by its `system_mode`.
        let result = serving.run(provider, tools, store).await;
        toolbox.shutdown().await;
        return result.map(|()| ExitCode::SUCCESS);
    }
    let system = cli
        .system
        .clone()
        .or_else(|| file.system.clone())
        .unwrap_or_else(|| DEFAULT_SYSTEM.to_owned());
    let agent = Agent::builder(Arc::clone(&provider))
        .tools(Arc::clone(&tools))
        .state(Arc::clone(&store))
        .system(system)
        .build()?;
    let outcome = match cli.command {
        Command::Run {
            prompt,
            session,
            json,
        } => {
            let session = session.unwrap_or_else(new_session_id);
            let mut stream = agent.stream(&session, prompt.as_str())?;
            let mut stdout = std::io::stdout();
            while let Some(event) = stream.next_event().await {
                if let (AgentEvent::Text(t), false) = (&event, json) {
                    print!("{t}");
                    stdout.flush()?;
                }
            }
            match stream.finish().await {
                Ok(reply) => {
                    if json {
                        let out = serde_json::json!({
                            "session": session,
                            "text": reply.text(),
                            "messages": reply.messages,
                            "usage": reply.usage,
                            "cost": reply.cost,
                        });
                        println!("{}", serde_json::to_string_pretty(&out)?);
                    } else {
                        println!();
                        eprintln!("session: {session}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!(
                        "\nerror: {} (what was said is saved in session {session})",
                        promptkit::ErrorChain(&e)
                    );
                    Ok(ExitCode::from(EXIT_TURN))
                }
            }
        }
        Command::Chat { session } => chat(&agent, store.as_ref(), tools.as_ref(), session).await,
        Command::Sessions { .. } | Command::Tools { .. } | Command::Serve(_) => {
            unreachable!("handled above")
        }
    };
    toolbox.shutdown().await;
    outcome
}

async fn chat(
    agent: &Agent,
    store: &dyn StateStore,
    tools: &dyn ToolSet,
    session: Option<String>,
) -> Result<ExitCode> {
    let mut session = session.unwrap_or_else(new_session_id);
    eprintln!("session {session}: type a message, or /help");
    let mut total = promptkit::Usage::default();
    let mut cost = 0.0;
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if let Some(command) = input.strip_prefix('/') {
            let mut parts = command.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("quit" | "exit"), _) => break,
                (Some("new"), _) => {
                    session = new_session_id();
                    eprintln!("new session {session}");
                }
                (Some("fork"), target) => {
                    let target = target.map_or_else(new_session_id, str::to_owned);
                    store.fork(&session, &target).await?;
                    session = target;
                    eprintln!("forked into session {session}");
                }
                (Some("history"), _) => print_history(store, &session).await?,
                (Some("tools"), _) => match tools.definitions().await {
                    Ok(defs) if defs.is_empty() => eprintln!("(no tools)"),
                    Ok(defs) => {
                        for def in defs {
                            eprintln!("  {}\t{}", def.name, def.description);
                        }
                    }
                    Err(e) => eprintln!("error: cannot list tools: {}", promptkit::ErrorChain(&e)),
                },
                (Some("cost"), _) => eprintln!(
                    "tokens in {} / out {}; cost ${cost:.6}",
                    total.input_tokens.unwrap_or(0),
                    total.output_tokens.unwrap_or(0)
                ),
                _ => eprintln!("commands: /new, /fork [id], /history, /tools, /cost, /quit"),
            }
            continue;
        }
        let mut stream = agent.stream(&session, input)?;
        let mut stdout = std::io::stdout();
        while let Some(event) = stream.next_event().await {
            match event {
                AgentEvent::Text(t) => {
                    print!("{t}");
                    stdout.flush()?;
                }
                AgentEvent::Message(m) if m.role == Role::Tool => {
                    if let Some(r) = &m.tool_result {
                        println!("\n  [tool {}: {}]", r.name, r.text_content());
                    }
                }
                _ => {}
            }
        }
        println!();
        match stream.finish().await {
            Ok(reply) => {
                total += reply.usage;
                cost += reply.cost.map_or(0.0, |c| c.total_usd);
            }
            Err(e) => eprintln!("error: {}", promptkit::ErrorChain(&e)),
        }
    }
    eprintln!("session {session} saved");
    Ok(ExitCode::SUCCESS)
}

async fn print_history(store: &dyn StateStore, session: &str) -> Result<()> {
    match store.load(session).await? {
        None => println!("(no messages in session {session})"),
        Some(c) => {
            for m in c.messages {
                let text = match (&m.tool_result, m.tool_calls.is_empty()) {
                    (Some(r), _) => format!("[{}] {}", r.name, r.text_content()),
                    (None, false) => format!(
                        "{}[calls {}]",
                        m.text(),
                        m.tool_calls
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    (None, true) => m.text(),
                };
                println!("{:>9}: {text}", m.role.as_str());
            }
        }
    }
    Ok(())
}

async fn sessions(store: &dyn StateStore, action: &SessionAction) -> Result<ExitCode> {
    match action {
        SessionAction::List => {
            let page = store.list(&ListOptions::default()).await?;
            for c in page.items {
                let updated = c.updated_at.map(|t| t.to_string()).unwrap_or_default();
                println!("{}\t{} messages\t{updated}", c.id, c.message_count);
            }
        }
        SessionAction::Show { id } => {
            if store.load(id).await?.is_none() {
                bail!(ConfigError(format!("no session `{id}`")));
            }
            print_history(store, id).await?;
        }
        SessionAction::Fork { source, target } => {
            store.fork(source, target).await?;
            println!("{target}");
        }
        SessionAction::Rm { id } => {
            if !store.delete(id).await? {
                bail!(ConfigError(format!("no session `{id}`")));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
