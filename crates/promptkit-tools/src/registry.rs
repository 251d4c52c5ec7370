//! The tool registry: the [`ToolSet`] the provider stage uses.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use promptkit_core::{
    BoxFuture, ToolCall, ToolContext, ToolDef, ToolError, ToolErrorKind, ToolExecutor, ToolResult,
    ToolSet,
};
use serde_json::Value;

use crate::descriptor::{DescriptorError, ToolDescriptor};
use crate::executors::{FunctionTool, MockExecutor, SubprocessExecutor};
use crate::names;
use crate::validate::{Coercion, SchemaCache, check, coerce};

/// Builds the executor of a descriptor whose `executor` is a given kind.
pub trait ExecutorFactory: Send + Sync + fmt::Debug {
    /// An executor for `descriptor` (read its `config`).
    ///
    /// # Errors
    /// What is wrong with the descriptor's `config`.
    fn build(&self, descriptor: &ToolDescriptor) -> Result<Arc<dyn ToolExecutor>, String>;
}

#[derive(Debug)]
struct MockFactory;

impl ExecutorFactory for MockFactory {
    fn build(&self, d: &ToolDescriptor) -> Result<Arc<dyn ToolExecutor>, String> {
        Ok(Arc::new(MockExecutor::from_config(&d.config)?))
    }
}

/// Builds `http` tools over one client: the one given to
/// [`ToolRegistry::with_http_client`], or one made when the first HTTP tool is registered
/// (building a client loads the system's root certificates, which a registry without HTTP
/// tools should not pay for). The registry's own client follows no redirects: HTTP tools
/// decide about redirects themselves.
#[cfg(feature = "http")]
#[derive(Debug, Default)]
struct HttpFactory {
    client: OnceLock<reqwest::Client>,
    /// Hosts every HTTP tool of the registry must call (none: no registry-wide limit).
    allowed_hosts: Vec<String>,
}

#[cfg(feature = "http")]
impl HttpFactory {
    fn client(&self) -> Result<reqwest::Client, String> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let built = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // Two threads may race to build one; either result serves.
        Ok(self.client.get_or_init(|| built).clone())
    }

    /// A factory with this one's client (if built or given) and allow-list, changed by
    /// `change`.
    fn derive(&self, change: impl FnOnce(&mut Self)) -> Self {
        let mut next = Self {
            client: self.client.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
        };
        change(&mut next);
        next
    }
}

#[cfg(feature = "http")]
impl ExecutorFactory for HttpFactory {
    fn build(&self, d: &ToolDescriptor) -> Result<Arc<dyn ToolExecutor>, String> {
        let executor = crate::executors::HttpExecutor::from_config(&d.config, self.client()?)?;
        if !self.allowed_hosts.is_empty()
            && !crate::executors::host_allowed(executor.host(), &self.allowed_hosts)
        {
            return Err(format!(
                "`url`: host `{}` is not among the registry's allowed hosts ({})",
                executor.host(),
                self.allowed_hosts.join(", ")
            ));
        }
        Ok(Arc::new(executor))
    }
}

#[derive(Debug)]
struct SubprocessFactory;

impl ExecutorFactory for SubprocessFactory {
    fn build(&self, d: &ToolDescriptor) -> Result<Arc<dyn ToolExecutor>, String> {
        Ok(Arc::new(SubprocessExecutor::from_config(&d.config)?))
    }
}

/// A sliding one-minute window of call times.
#[derive(Debug)]
struct RateWindow {
    limit: u32,
    calls: VecDeque<Instant>,
}

impl RateWindow {
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        while self
            .calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.calls.pop_front();
        }
        if self.calls.len() >= self.limit as usize {
            return false;
        }
        self.calls.push_back(now);
        true
    }
}

struct Entry {
    descriptor: ToolDescriptor,
    executor: Arc<dyn ToolExecutor>,
    rate: Option<Mutex<RateWindow>>,
    /// The compiled argument and output schemas, on first use (a call is the hot path: no
    /// schema is serialised or looked up per call).
    input_validator: OnceLock<Result<Arc<jsonschema::Validator>, String>>,
    output_validator: OnceLock<Result<Arc<jsonschema::Validator>, String>>,
}

/// The validator in `cell`, compiled from `schema` (through the shared cache) on first use.
fn compiled<'a>(
    cell: &'a OnceLock<Result<Arc<jsonschema::Validator>, String>>,
    schemas: &SchemaCache,
    schema: &Value,
) -> &'a Result<Arc<jsonschema::Validator>, String> {
    cell.get_or_init(|| schemas.validator(schema))
}

/// Tools by name, with their executors. Implements [`ToolSet`]: definitions sorted by name,
/// and for each call: look-up, allow-list, argument coercion (reported in logs) and
/// validation, rate limit, timeout, execution, output-schema validation and a result size
/// cap. Every failure becomes a [`ToolError`] the tool loop hands back to the model.
pub struct ToolRegistry {
    tools: RwLock<BTreeMap<String, Arc<Entry>>>,
    kinds: RwLock<BTreeMap<String, Arc<dyn ExecutorFactory>>>,
    allowed: Option<Vec<String>>,
    schemas: SchemaCache,
    default_timeout: Duration,
    max_result_bytes: usize,
    #[cfg(feature = "http")]
    http: Arc<HttpFactory>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.names())
            .field("allowed", &self.allowed)
            .field("default_timeout", &self.default_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ToolRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolRegistry {
    /// An empty registry knowing the `mock`, `subprocess` and (feature `http`) `http` executor
    /// kinds; 30 s default
    /// timeout; 1 MiB result cap.
    pub fn new() -> Self {
        let mut kinds: BTreeMap<String, Arc<dyn ExecutorFactory>> = BTreeMap::new();
        kinds.insert("mock".to_owned(), Arc::new(MockFactory));
        kinds.insert("subprocess".to_owned(), Arc::new(SubprocessFactory));
        #[cfg(feature = "http")]
        let http = Arc::new(HttpFactory::default());
        #[cfg(feature = "http")]
        kinds.insert("http".to_owned(), http.clone());
        Self {
            tools: RwLock::default(),
            kinds: RwLock::new(kinds),
            allowed: None,
            schemas: SchemaCache::default(),
            default_timeout: Duration::from_secs(30),
            max_result_bytes: 1 << 20,
            #[cfg(feature = "http")]
            http,
        }
    }

    /// `http` tools registered from now on send their requests through `client`, for
    /// example to use a proxy or extra root certificates. Without it the registry builds a
    /// client of its own when the first HTTP tool is registered.
    ///
    /// Build `client` with `redirect(reqwest::redirect::Policy::none())`: HTTP tools follow
    /// redirects themselves, only when a tool opts in and only to the same origin, and a
    /// client that follows redirects on its own would send tool requests (and their headers)
    /// wherever a server points them.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        let factory = self.http.derive(|f| f.client = OnceLock::from(client));
        self.set_http(factory);
        self
    }

    /// `http` tools registered from now on must call one of these hosts: exact names
    /// (`api.example.com`, `127.0.0.1`) or `*.` followed by a domain for its subdomains. A
    /// descriptor whose URL names another host fails to register. Each tool may narrow this
    /// further with its own `allowed_hosts`.
    #[cfg(feature = "http")]
    #[must_use]
    pub fn with_allowed_hosts<S: Into<String>>(
        mut self,
        hosts: impl IntoIterator<Item = S>,
    ) -> Self {
        let hosts: Vec<String> = hosts.into_iter().map(Into::into).collect();
        let factory = self.http.derive(|f| f.allowed_hosts = hosts);
        self.set_http(factory);
        self
    }

    #[cfg(feature = "http")]
    fn set_http(&mut self, factory: HttpFactory) {
        self.http = Arc::new(factory);
        self.register_kind("http", self.http.clone());
    }

    /// Only tools matching these patterns (`*` suffix for prefixes) are offered and run.
    #[must_use]
    pub fn with_allowed<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.allowed = Some(patterns.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the timeout of tools that declare none.
    #[must_use]
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Sets the result size cap in bytes (default 1 MiB; 0 for none). Text, media (as
    /// base64) and structured output (as JSON) share it; what does not fit is cut or dropped
    /// with a note saying so.
    #[must_use]
    pub fn with_max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// Registers an executor kind descriptors can name.
    pub fn register_kind(&self, kind: impl Into<String>, factory: Arc<dyn ExecutorFactory>) {
        self.kinds
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kind.into(), factory);
    }

    /// Registers a tool whose executor is built from its `executor` kind. Replaces a tool of
    /// the same name.
    ///
    /// # Errors
    /// An invalid descriptor, an unknown kind, or a `config` the kind rejects.
    pub fn register(&self, descriptor: ToolDescriptor) -> Result<(), DescriptorError> {
        descriptor
            .validate()
            .map_err(|message| DescriptorError::Invalid {
                path: format!("<tool {}>", descriptor.name).into(),
                message,
            })?;
        let factory = {
            let kinds = self.kinds.read().unwrap_or_else(PoisonError::into_inner);
            kinds.get(&descriptor.executor).cloned().ok_or_else(|| {
                DescriptorError::UnknownExecutor {
                    tool: descriptor.name.clone(),
                    kind: descriptor.executor.clone(),
                    known: kinds.keys().cloned().collect(),
                }
            })?
        };
        let executor =
            factory
                .build(&descriptor)
                .map_err(|message| DescriptorError::ExecutorConfig {
                    tool: descriptor.name.clone(),
                    kind: descriptor.executor.clone(),
                    message,
                })?;
        self.register_with(descriptor, executor);
        Ok(())
    }

    /// Registers a tool with its executor (no kind look-up). Replaces a tool of the same name.
    pub fn register_with(&self, descriptor: ToolDescriptor, executor: Arc<dyn ToolExecutor>) {
        let rate = descriptor.rate_limit_per_minute.map(|limit| {
            Mutex::new(RateWindow {
                limit,
                calls: VecDeque::new(),
            })
        });
        let name = descriptor.name.clone();
        self.tools
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                name,
                Arc::new(Entry {
                    descriptor,
                    executor,
                    rate,
                    input_validator: OnceLock::new(),
                    output_validator: OnceLock::new(),
                }),
            );
    }

    /// Registers an in-process function tool.
    pub fn register_function<A, R>(&self, tool: FunctionTool<A, R>)
    where
        A: serde::de::DeserializeOwned + schemars::JsonSchema + Send + 'static,
        R: serde::Serialize + Send + 'static,
    {
        let def = tool.definition();
        let mut descriptor =
            ToolDescriptor::new(def.name, def.description).with_input_schema(def.input_schema);
        descriptor.executor = "function".to_owned();
        self.register_with(descriptor, Arc::new(tool));
    }

    /// Removes a tool; returns whether it existed.
    pub fn unregister(&self, name: &str) -> bool {
        self.tools
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some()
    }

    /// Loads and registers one descriptor file.
    ///
    /// # Errors
    /// As [`ToolDescriptor::from_file`] and [`ToolRegistry::register`], naming the file.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<String, DescriptorError> {
        let descriptor = ToolDescriptor::from_file(path)?;
        let name = descriptor.name.clone();
        self.register(descriptor)?;
        Ok(name)
    }

    /// Loads every `.json`, `.yaml` and `.yml` file of a directory, in name order.
    ///
    /// # Errors
    /// The first file that fails.
    pub fn load_dir(&self, dir: impl AsRef<Path>) -> Result<Vec<String>, DescriptorError> {
        let dir = dir.as_ref();
        let io = |source| DescriptorError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "yaml" | "yml")
                )
            })
            .collect();
        files.sort();
        files.iter().map(|f| self.load_file(f)).collect()
    }

    /// Registered tool names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The descriptor of a tool.
    pub fn get(&self, name: &str) -> Option<ToolDescriptor> {
        self.tools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .map(|e| e.descriptor.clone())
    }

    /// Definitions of the tools in namespace `ns` (`ns__…`), sorted.
    pub fn namespace(&self, ns: &str) -> Vec<ToolDef> {
        self.tools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|e| names::split(&e.descriptor.name).0 == Some(ns))
            .map(|e| e.descriptor.definition())
            .collect()
    }

    fn allowed(&self, name: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.iter().any(|p| names::matches(p, name)))
    }

    /// Coerces and validates arguments for `name` as [`ToolSet::execute`] does, returning the
    /// arguments that would be used and the fixes made.
    ///
    /// # Errors
    /// [`ToolError::UnknownTool`] or [`ToolError::InvalidArguments`].
    pub fn prepare_arguments(
        &self,
        name: &str,
        arguments: &Value,
    ) -> Result<(Value, Vec<Coercion>), ToolError> {
        let entry = self.entry(name)?;
        self.prepare(&entry, name, arguments)
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ToolError> {
        self.tools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| ToolError::UnknownTool {
                name: name.to_owned(),
            })
    }

    fn prepare(
        &self,
        entry: &Entry,
        name: &str,
        arguments: &Value,
    ) -> Result<(Value, Vec<Coercion>), ToolError> {
        let invalid = |message: String| ToolError::InvalidArguments {
            name: name.to_owned(),
            message,
        };
        if let Value::String(raw) = arguments {
            return Err(invalid(format!("arguments are not a JSON object: {raw}")));
        }
        // Coercion builds the copy that is validated and run; no copy before it.
        let empty;
        let arguments = if arguments.is_null() {
            empty = Value::Object(serde_json::Map::new());
            &empty
        } else {
            arguments
        };
        let (fixed, fixes) = coerce(arguments, &entry.descriptor.input_schema);
        let validator = compiled(
            &entry.input_validator,
            &self.schemas,
            &entry.descriptor.input_schema,
        )
        .as_ref()
        .map_err(|e| invalid(e.clone()))?;
        check(validator, &fixed).map_err(invalid)?;
        Ok((fixed, fixes))
    }

    fn cap(&self, result: ToolResult) -> ToolResult {
        if self.max_result_bytes == 0 {
            return result;
        }
        crate::cap::cap_result(result, self.max_result_bytes)
    }
}

impl ToolSet for ToolRegistry {
    fn definitions(&self) -> BoxFuture<'_, Result<Vec<ToolDef>, ToolError>> {
        Box::pin(async move {
            Ok(self
                .tools
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .filter(|e| self.allowed(&e.descriptor.name))
                .map(|e| e.descriptor.definition())
                .collect())
        })
    }

    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            let entry = self.entry(&call.name)?;
            if !self.allowed(&call.name) {
                return Err(ToolError::NotAllowed {
                    name: call.name.clone(),
                });
            }
            let (arguments, fixes) = self.prepare(&entry, &call.name, &call.arguments)?;
            if !fixes.is_empty() {
                tracing::info!(tool = %call.name, call_id = %call.id, fixes = ?fixes, "coerced tool arguments");
            }
            if let Some(rate) = &entry.rate
                && !rate.lock().unwrap_or_else(PoisonError::into_inner).admit()
            {
                return Err(ToolError::RateLimited {
                    name: call.name.clone(),
                });
            }
            let timeout = entry
                .descriptor
                .timeout_ms
                .map_or(self.default_timeout, Duration::from_millis);
            let timeout = ctx.remaining().map_or(timeout, |r| r.min(timeout));
            let mut call_ctx = ctx.clone();
            call_ctx.deadline = Some(Instant::now() + timeout);
            // Only the arguments change: `..call.clone()` would deep-copy the old ones too.
            let prepared = ToolCall {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments,
                provider_data: call.provider_data.clone(),
            };
            let run = entry.executor.execute(&prepared, &call_ctx);
            let mut result = if entry.executor.enforces_deadline() {
                // The executor ends the call by the deadline itself: no second timer.
                run.await?
            } else {
                let started = Instant::now();
                match tokio::time::timeout(timeout, run).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(ToolError::Timeout {
                            name: call.name.clone(),
                            elapsed: started.elapsed(),
                        });
                    }
                }
            };
            if let (Some(schema), Some(structured), false) = (
                &entry.descriptor.output_schema,
                &result.structured,
                result.is_error,
            ) && let Err(problem) = compiled(&entry.output_validator, &self.schemas, schema)
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|validator| check(validator, structured))
            {
                result = ToolResult::error(
                    &call.id,
                    &call.name,
                    ToolErrorKind::Execution,
                    format!("the tool's result does not match its output schema: {problem}"),
                );
            }
            Ok(self.cap(result))
        })
    }

    /// Every call ends by the earlier of the context's deadline and the tool's own timeout:
    /// the executor's timer does it when it has one, the registry's otherwise.
    fn enforces_deadline(&self) -> bool {
        true
    }
}
