//! The `serve` command line: its flags, their defaults, and the agents it serves with.
//!
//! Every setting comes from its flag, else the configuration file's `serve` section, else the
//! default below; decision 0014 says why each default is what it is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use promptkit::agent::Agent;
use promptkit::pipeline::provider::ProviderStageConfig;
use promptkit::{Provider, StateStore, ToolSet};

use crate::config::ConfigFile;
use crate::serve::{
    self, AgentFactory, Agents, ApiKeys, ConnLimits, RequestLimits, ServeOptions, SystemMode,
    TrustedProxies,
};
use crate::{Cli, ConfigError, StateOptions, seconds, state_ttl};

/// Settings of `promptkit serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// The address to listen on (default 127.0.0.1:8080; port 0 picks a free port; the
    /// bound address is printed). Any address but loopback needs API keys or
    /// `--insecure-no-auth`.
    #[arg(long, env = "PROMPTKIT_ADDR")]
    addr: Option<SocketAddr>,
    /// A file of API keys, one a line: `key` or `name:key` (`#` starts a comment). Keys also
    /// come from PROMPTKIT_API_KEYS, comma-separated. Clients send `Authorization: Bearer
    /// <key>`.
    #[arg(long, env = "PROMPTKIT_API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// Serve without API keys on an address other than loopback: anyone who reaches the port
    /// runs turns with the server's tools and provider key.
    #[arg(long)]
    insecure_no_auth: bool,
    /// A host name the server answers for besides localhost (repeatable; `*.example.com`
    /// allows subdomains, `*` any host). Needed for every DNS name clients use.
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// An address or CIDR block whose `X-Forwarded-For` is believed (repeatable): the load
    /// balancer in front of the server.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
    /// PEM certificate chain: serve HTTPS (with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Turns running at once (default 64).
    #[arg(long, env = "PROMPTKIT_MAX_CONCURRENCY")]
    max_concurrency: Option<usize>,
    /// Turns waiting for a slot or for their session at once; one more gets 503 at once
    /// (default 256).
    #[arg(long, env = "PROMPTKIT_MAX_QUEUE")]
    max_queue: Option<usize>,
    /// Seconds a turn waits for a slot or its session before 503 or 409 (default 30).
    #[arg(long)]
    queue_timeout: Option<f64>,
    /// Connections open at once; one more is answered 503 and closed (default 512).
    #[arg(long, env = "PROMPTKIT_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds to send a request's headers, and the most an idle keep-alive connection waits
    /// for the next request (default 10).
    #[arg(long)]
    header_timeout: Option<f64>,
    /// Seconds to send a request's body (default 30).
    #[arg(long)]
    body_timeout: Option<f64>,
    /// Seconds a keep-alive connection may sit idle, at most the header timeout (default 8).
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Seconds a response write may make no progress before the connection is dropped and
    /// its turn cancelled (default 30).
    #[arg(long)]
    write_timeout: Option<f64>,
    /// Seconds of silence after which a stream gets a `: keep-alive` comment (default 15).
    #[arg(long)]
    sse_keepalive: Option<f64>,
    /// Requests per minute per API key (per client address without keys); 0 turns the limit
    /// off (default 600).
    #[arg(long, env = "PROMPTKIT_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// The largest request body in bytes (default 2 MiB).
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// The most messages in one request (default 2048).
    #[arg(long)]
    max_messages: Option<usize>,
    /// The most output tokens a model call may ask for; a client's `max_tokens` or
    /// `max_completion_tokens` is honoured up to it (default 4096).
    #[arg(long)]
    max_output_tokens: Option<u32>,
    /// The cost ceiling of one turn in US dollars; 0 turns it off (default 1).
    #[arg(long)]
    max_turn_cost: Option<f64>,
    /// What the configured system prompt does to a client's system messages: `prepend` it
    /// to them, `enforce` it instead of them (the default), or let the `client`'s replace it.
    #[arg(long, value_enum)]
    system_mode: Option<SystemMode>,
    /// Take the client's `user` field as the turn's user (seen by tools, owner of new
    /// sessions); otherwise the key's name or id is.
    #[arg(long)]
    trust_client_user: bool,
    /// Seconds in-flight requests may finish after SIGINT/SIGTERM before they are cancelled
    /// (default 10).
    #[arg(long)]
    shutdown_grace: Option<f64>,
}

/// Defaults (decision 0014 gives the reasons).
const DEFAULT_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 8080);
const DEFAULT_MAX_CONCURRENCY: usize = 64;
const DEFAULT_MAX_QUEUE: usize = 256;
const DEFAULT_QUEUE_TIMEOUT: f64 = 30.0;
const DEFAULT_MAX_CONNECTIONS: usize = 512;
const DEFAULT_HEADER_TIMEOUT: f64 = 10.0;
const DEFAULT_BODY_TIMEOUT: f64 = 30.0;
const DEFAULT_IDLE_TIMEOUT: f64 = 8.0;
const DEFAULT_WRITE_TIMEOUT: f64 = 30.0;
const DEFAULT_SSE_KEEPALIVE: f64 = 15.0;
const DEFAULT_RATE_LIMIT: u32 = 600;
const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
const DEFAULT_MAX_MESSAGES: usize = 2048;
const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;
const DEFAULT_MAX_TURN_COST: f64 = 1.0;
const DEFAULT_SHUTDOWN_GRACE: f64 = 10.0;
/// Serve sessions unused for 30 days expire.
const DEFAULT_STATE_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The memory store keeps the 10 000 most recently used sessions.
const DEFAULT_MEMORY_MAX_SESSIONS: usize = 10_000;

/// `serve`, checked and ready to run once the store and provider exist.
#[derive(Debug)]
pub(crate) struct Serving {
    options: ServeOptions,
    /// How the store is opened for serving.
    pub(crate) state: StateOptions,
    max_turn_cost: Option<f64>,
}

impl Serving {
    /// Reads and checks every setting, keys included.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the bad setting, or the missing keys of an exposed address.
    pub(crate) fn new(args: &ServeArgs, cli: &Cli, file: &ConfigFile) -> Result<Self> {
        let conf = &file.serve;
        let secs = |flag: &str, given: Option<f64>, config: Option<f64>, default: f64| {
            seconds(flag, given.or(config).unwrap_or(default))
        };
        let keys_file = args.api_keys_file.as_ref().or(conf.api_keys_file.as_ref());
        let keys_text = keys_file
            .map(|path| {
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("--api-keys-file {}: {e}", path.display())))
            })
            .transpose()?;
        let keys = ApiKeys::parse(
            std::env::var("PROMPTKIT_API_KEYS").ok().as_deref(),
            keys_text.as_deref(),
        )?;
        let tls = match (
            args.tls_cert.as_ref().or(conf.tls_cert.as_ref()),
            args.tls_key.as_ref().or(conf.tls_key.as_ref()),
        ) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(ConfigError("TLS needs both a certificate and a key".into()).into());
            }
        };
        let header_timeout = secs(
            "--header-timeout",
            args.header_timeout,
            conf.header_timeout_secs,
            DEFAULT_HEADER_TIMEOUT,
        )?;
        let idle_timeout = secs(
            "--idle-timeout",
            args.idle_timeout,
            conf.idle_timeout_secs,
            DEFAULT_IDLE_TIMEOUT.min(header_timeout.as_secs_f64()),
        )?;
        if idle_timeout > header_timeout {
            return Err(ConfigError(
                "the idle timeout cannot be longer than the header timeout, which also bounds \
                 the wait for a keep-alive connection's next request"
                    .into(),
            )
            .into());
        }
        let system = cli.system.clone().or_else(|| file.system.clone());
        let max_turn_cost = args
            .max_turn_cost
            .or(conf.max_turn_cost_usd)
            .unwrap_or(DEFAULT_MAX_TURN_COST);
        if !(max_turn_cost >= 0.0 && max_turn_cost.is_finite()) {
            return Err(ConfigError("--max-turn-cost must be a non-negative number".into()).into());
        }
        let options = ServeOptions {
            addr: args
                .addr
                .or(conf.addr)
                .unwrap_or_else(|| SocketAddr::from(DEFAULT_ADDR)),
            keys,
            insecure_no_auth: args.insecure_no_auth || conf.insecure_no_auth,
            allowed_hosts: conf
                .allowed_hosts
                .iter()
                .chain(&args.allowed_hosts)
                .cloned()
                .collect(),
            trusted_proxies: TrustedProxies::parse(
                &conf
                    .trusted_proxies
                    .iter()
                    .chain(&args.trusted_proxies)
                    .cloned()
                    .collect::<Vec<_>>(),
            )?,
            tls,
            conn: ConnLimits {
                max_connections: args
                    .max_connections
                    .or(conf.max_connections)
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS),
                header_timeout,
                idle_timeout,
                write_timeout: secs(
                    "--write-timeout",
                    args.write_timeout,
                    conf.write_timeout_secs,
                    DEFAULT_WRITE_TIMEOUT,
                )?,
            },
            requests: RequestLimits {
                max_messages: args
                    .max_messages
                    .or(conf.max_messages)
                    .unwrap_or(DEFAULT_MAX_MESSAGES),
                max_output_tokens: args
                    .max_output_tokens
                    .or(conf.max_output_tokens)
                    .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
                    .max(1),
            },
            max_body_bytes: args
                .max_body_bytes
                .or(conf.max_body_bytes)
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            body_timeout: secs(
                "--body-timeout",
                args.body_timeout,
                conf.body_timeout_secs,
                DEFAULT_BODY_TIMEOUT,
            )?,
            max_concurrency: args
                .max_concurrency
                .or(conf.max_concurrency)
                .unwrap_or(DEFAULT_MAX_CONCURRENCY),
            max_queue: args
                .max_queue
                .or(conf.max_queue)
                .unwrap_or(DEFAULT_MAX_QUEUE),
            queue_timeout: secs(
                "--queue-timeout",
                args.queue_timeout,
                conf.queue_timeout_secs,
                DEFAULT_QUEUE_TIMEOUT,
            )?,
            rate_limit: args
                .rate_limit
                .or(conf.rate_limit_per_minute)
                .unwrap_or(DEFAULT_RATE_LIMIT),
            sse_keep_alive: secs(
                "--sse-keepalive",
                args.sse_keepalive,
                conf.sse_keepalive_secs,
                DEFAULT_SSE_KEEPALIVE,
            )?
            .max(Duration::from_millis(100)),
            system_mode: args
                .system_mode
                .or(conf.system_mode)
                .unwrap_or(SystemMode::Enforce),
            system,
            trust_client_user: args.trust_client_user || conf.trust_client_user,
            shutdown_grace: secs(
                "--shutdown-grace",
                args.shutdown_grace,
                conf.shutdown_grace_secs,
                DEFAULT_SHUTDOWN_GRACE,
            )?,
        };
        serve::check_exposure(&options)?;
        Ok(Self {
            options,
            state: StateOptions {
                ttl: state_ttl(cli, file, Some(DEFAULT_STATE_TTL))?,
                memory_max_sessions: Some(
                    file.memory_max_sessions
                        .unwrap_or(DEFAULT_MEMORY_MAX_SESSIONS),
                ),
                default_file: "serve.db",
            },
            max_turn_cost: (max_turn_cost > 0.0).then_some(max_turn_cost),
        })
    }

    /// Serves until a shutdown signal.
    ///
    /// # Errors
    /// When the server cannot start.
    pub(crate) async fn run(
        self,
        provider: Arc<dyn Provider>,
        tools: Arc<dyn ToolSet>,
        store: Arc<dyn StateStore>,
    ) -> Result<()> {
        let factory = factory(provider, tools, Arc::clone(&store), self.max_turn_cost);
        serve::serve(factory, store, self.options).await
    }
}

/// The agents for a turn's output-token limit, with the turn cost budget.
fn factory(
    provider: Arc<dyn Provider>,
    tools: Arc<dyn ToolSet>,
    store: Arc<dyn StateStore>,
    max_turn_cost: Option<f64>,
) -> AgentFactory {
    Box::new(move |max_tokens| {
        let mut config = ProviderStageConfig::default();
        config.request.max_tokens = Some(max_tokens);
        config.max_cost_usd = max_turn_cost;
        let builder = || {
            Agent::builder(Arc::clone(&provider))
                .tools(Arc::clone(&tools))
                .config(config.clone())
        };
        Ok(Agents {
            stateless: builder().build()?,
            stateful: builder().state(Arc::clone(&store)).build()?,
        })
    })
}
