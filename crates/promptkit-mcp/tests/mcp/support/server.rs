//! The MCP server the tests talk to, built on rmcp's server side.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, JsonObject, ListPromptsResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, Prompt, PromptArgument,
    PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, Role, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// A 1x1 transparent PNG.
pub(crate) const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
/// A tiny PDF header, base64.
pub(crate) const PDF_BASE64: &str = "JVBERi0xLjQK";

/// Tools per `tools/list` page, small so that every listing is paginated.
const PAGE_SIZE: usize = 4;
/// Tools per page when the server offers thousands.
const LARGE_PAGE_SIZE: usize = 500;

/// When set to `hostile`, `tools/list` also offers tools with broken or huge definitions.
pub(crate) const LISTING_ENV: &str = "PROMPTKIT_MCP_TEST_LISTING";
/// When set to a number, `tools/list` also offers that many generated tools.
pub(crate) const MANY_TOOLS_ENV: &str = "PROMPTKIT_MCP_TEST_MANY_TOOLS";
/// When set, `tools/list` never answers.
pub(crate) const HANG_LIST_ENV: &str = "PROMPTKIT_MCP_TEST_HANG_LIST";
/// When set to a path, each listing appends a line to that file (first, even when hanging).
pub(crate) const LIST_LOG_ENV: &str = "PROMPTKIT_MCP_TEST_LIST_LOG";

/// Counters shared with the test that started the server (HTTP and SSE servers run in the
/// test process).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// `tools/call` requests received.
    pub(crate) calls: AtomicUsize,
    /// Calls cancelled by the client.
    pub(crate) cancelled: AtomicUsize,
    /// Listings received (first pages of `tools/list`).
    pub(crate) lists: AtomicUsize,
}

/// The test server.
#[derive(Clone)]
pub(crate) struct TestServer {
    name: String,
    grandchild: Option<u32>,
    extra_tools: Arc<Mutex<Vec<String>>>,
    counters: Arc<Counters>,
    hangup: Option<Arc<Notify>>,
}

impl TestServer {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            grandchild: None,
            extra_tools: Arc::default(),
            counters: Arc::default(),
            hangup: None,
        }
    }

    pub(crate) fn with_grandchild(mut self, pid: Option<u32>) -> Self {
        self.grandchild = pid;
        self
    }

    pub(crate) fn with_counters(mut self, counters: Arc<Counters>) -> Self {
        self.counters = counters;
        self
    }

    pub(crate) fn with_hangup(mut self, hangup: Arc<Notify>) -> Self {
        self.hangup = Some(hangup);
        self
    }

    fn tools(&self) -> Vec<Tool> {
        let object = |props: Value, required: &[&str]| -> Arc<JsonObject> {
            let schema = json!({"type": "object", "properties": props, "required": required});
            Arc::new(schema.as_object().unwrap().clone())
        };
        let mut add = Tool::new(
            "add",
            "Adds two numbers",
            object(
                json!({"a": {"type": "number"}, "b": {"type": "number"}}),
                &["a", "b"],
            ),
        );
        add.output_schema = Some(object(json!({"sum": {"type": "number"}}), &["sum"]));
        let mut tools = vec![
            Tool::new(
                "echo",
                "Echoes the text",
                object(json!({"text": {"type": "string"}}), &["text"]),
            ),
            add,
            Tool::new("image", "Returns a PNG", object(json!({}), &[])),
            Tool::new(
                "resource",
                "Returns embedded resources",
                object(json!({}), &[]),
            ),
            Tool::new(
                "fail",
                "Always fails",
                object(json!({"message": {"type": "string"}}), &["message"]),
            ),
            Tool::new(
                "slow",
                "Sleeps",
                object(json!({"ms": {"type": "integer"}}), &["ms"]),
            ),
            Tool::new("stats", "Counters", object(json!({}), &[])),
            Tool::new(
                "crash",
                "Exits the process, after appending a line to `path` if given",
                object(json!({"path": {"type": "string"}}), &[]),
            ),
            Tool::new(
                "record",
                "Appends a line to `path`",
                object(json!({"path": {"type": "string"}}), &["path"]),
            ),
            Tool::new("pids", "Process ids", object(json!({}), &[])),
            Tool::new("whoami", "The server name", object(json!({}), &[])),
            Tool::new(
                "add_tool",
                "Adds a tool and notifies the client",
                object(json!({"name": {"type": "string"}}), &["name"]),
            ),
            Tool::new(
                "env",
                "Reads an environment variable",
                object(json!({"name": {"type": "string"}}), &["name"]),
            ),
            Tool::new(
                "stderr",
                "Writes `bytes` bytes to stderr",
                object(json!({"bytes": {"type": "integer"}}), &["bytes"]),
            ),
            Tool::new("hangup", "Ends the SSE stream", object(json!({}), &[])),
            Tool::new(
                "dotted.name",
                "A tool whose name needs sanitising",
                object(json!({}), &[]),
            ),
        ];
        tools.extend([
            Tool::new(
                "big_text",
                "Returns `bytes` bytes of text",
                object(json!({"bytes": {"type": "integer"}}), &["bytes"]),
            ),
            Tool::new(
                "big_image",
                "Returns an image of `bytes` bytes of base64",
                object(json!({"bytes": {"type": "integer"}}), &["bytes"]),
            ),
            Tool::new(
                "spam_list_changed",
                "Sends `count` list_changed notifications, 10 per `pause_ms`",
                object(
                    json!({"count": {"type": "integer"}, "pause_ms": {"type": "integer"}}),
                    &["count"],
                ),
            ),
        ]);
        if std::env::var(LISTING_ENV).is_ok_and(|v| v == "hostile") {
            tools.extend(hostile_tools());
        }
        if let Some(count) = std::env::var(MANY_TOOLS_ENV)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            tools.extend((0..count).map(|i| {
                Tool::new(
                    format!("gen_{i:05}"),
                    "A generated tool",
                    object(json!({}), &[]),
                )
            }));
        }
        for name in self.extra_tools.lock().unwrap().iter() {
            tools.push(Tool::new(
                name.clone(),
                "Added at run time",
                object(json!({}), &[]),
            ));
        }
        tools
    }

    async fn run_tool(
        &self,
        name: &str,
        args: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let text = |s: String| Ok(CallToolResult::success(vec![ContentBlock::text(s)]));
        let str_arg = |key: &str| {
            args.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` is required"), None))
        };
        match name {
            "echo" => text(str_arg("text")?),
            "add" => {
                let a = args.get("a").and_then(Value::as_f64).unwrap_or_default();
                let b = args.get("b").and_then(Value::as_f64).unwrap_or_default();
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text(format!("{}", a + b))]);
                result.structured_content = Some(json!({"sum": a + b}));
                Ok(result)
            }
            "image" => Ok(CallToolResult::success(vec![
                ContentBlock::text("a pixel:"),
                ContentBlock::image(PNG_BASE64, "image/png"),
            ])),
            "resource" => Ok(CallToolResult::success(vec![
                ContentBlock::embedded_text("test://notes.txt", "embedded notes"),
                ContentBlock::resource(
                    ResourceContents::blob(PDF_BASE64, "test://docs/report.pdf")
                        .with_mime_type("application/pdf"),
                ),
            ])),
            "fail" => Ok(CallToolResult::error(vec![ContentBlock::text(str_arg(
                "message",
            )?)])),
            "slow" => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(1000);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => text("done".to_owned()),
                    () = context.ct.cancelled() => {
                        self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
                        text("cancelled".to_owned())
                    }
                }
            }
            "stats" => {
                let mut result = CallToolResult::success(vec![]);
                result.structured_content = Some(json!({
                    "calls": self.counters.calls.load(Ordering::SeqCst),
                    "cancelled": self.counters.cancelled.load(Ordering::SeqCst),
                    "lists": self.counters.lists.load(Ordering::SeqCst),
                }));
                Ok(result)
            }
            "big_text" => {
                let bytes = args.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                text("x".repeat(usize::try_from(bytes).unwrap()))
            }
            "big_image" => {
                let bytes = args.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                Ok(CallToolResult::success(vec![
                    ContentBlock::text("before"),
                    ContentBlock::image("A".repeat(usize::try_from(bytes).unwrap()), "image/png"),
                    ContentBlock::text("after"),
                ]))
            }
            "spam_list_changed" => {
                let count = args.get("count").and_then(Value::as_u64).unwrap_or(0);
                let pause = args.get("pause_ms").and_then(Value::as_u64).unwrap_or(10);
                let peer = context.peer.clone();
                tokio::spawn(async move {
                    for i in 0..count {
                        if peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                        if i % 10 == 9 {
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                        }
                    }
                });
                text("spamming".to_owned())
            }
            "crash" => {
                if let Ok(path) = str_arg("path") {
                    append_line(&path);
                }
                std::process::exit(3);
            }
            "record" => {
                append_line(&str_arg("path")?);
                text("recorded".to_owned())
            }
            "pids" => {
                let mut result = CallToolResult::success(vec![]);
                result.structured_content = Some(json!({
                    "pid": std::process::id(),
                    "grandchild": self.grandchild,
                }));
                Ok(result)
            }
            "whoami" => text(self.name.clone()),
            "add_tool" => {
                self.extra_tools.lock().unwrap().push(str_arg("name")?);
                context
                    .peer
                    .notify_tool_list_changed()
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                text("added".to_owned())
            }
            "env" => text(std::env::var(str_arg("name")?).unwrap_or_else(|_| "<unset>".to_owned())),
            "stderr" => {
                let bytes = args.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                let line = format!("{}\n", "e".repeat(99));
                let mut stderr = std::io::stderr().lock();
                let mut written = 0;
                while written < bytes {
                    stderr.write_all(line.as_bytes()).unwrap();
                    written += 100;
                }
                text(format!("wrote {written} bytes"))
            }
            "hangup" => {
                if let Some(hangup) = self.hangup.clone() {
                    // After this answer has gone out on the stream.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        hangup.notify_one();
                    });
                }
                text("bye".to_owned())
            }
            "dotted.name" => text("dotted".to_owned()),
            other if self.extra_tools.lock().unwrap().iter().any(|t| t == other) => {
                text(format!("dynamic {other}"))
            }
            other => Err(ErrorData::invalid_params(
                format!("no tool `{other}`"),
                None,
            )),
        }
    }
}

/// Tools a careless or hostile server might list: one whose input schema does not compile,
/// one whose input schema is not an object, one with a 1 MiB description, one with a 1 MiB
/// schema, and one whose output schema does not compile (kept without it).
fn hostile_tools() -> Vec<Tool> {
    let schema = |value: Value| Arc::new(value.as_object().unwrap().clone());
    let properties: serde_json::Map<String, Value> = (0..20_000)
        .map(|i| {
            (
                format!("field_{i:05}"),
                json!({"type": "string", "description": "padding"}),
            )
        })
        .collect();
    let mut bad_output = Tool::new(
        "bad_output",
        "Declares an output schema that does not compile",
        schema(json!({"type": "object"})),
    );
    bad_output.output_schema = Some(schema(
        json!({"type": "object", "properties": {"n": {"type": "banana"}}}),
    ));
    vec![
        Tool::new(
            "banana",
            "Declares an input schema that does not compile",
            schema(json!({"type": "banana"})),
        ),
        Tool::new(
            "not_object",
            "Declares a string input schema",
            schema(json!({"type": "string"})),
        ),
        Tool::new(
            "long_description",
            "d".repeat(1 << 20),
            schema(json!({"type": "object"})),
        ),
        Tool::new(
            "huge_schema",
            "Declares a schema of about 1 MiB",
            schema(json!({"type": "object", "properties": properties})),
        ),
        bad_output,
    ]
}

fn append_line(path: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(b"ran\n").unwrap();
    file.sync_all().unwrap();
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_instructions("The promptkit-mcp test server")
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let start: usize = request
            .and_then(|r| r.cursor)
            .map(|c| {
                c.parse()
                    .map_err(|_| ErrorData::invalid_params("bad cursor", None))
            })
            .transpose()?
            .unwrap_or(0);
        if start == 0 {
            self.counters.lists.fetch_add(1, Ordering::SeqCst);
            if let Ok(path) = std::env::var(LIST_LOG_ENV) {
                append_line(&path);
            }
        }
        if std::env::var_os(HANG_LIST_ENV).is_some() {
            std::future::pending::<()>().await;
        }
        let tools = self.tools();
        let page_size = if tools.len() > 100 {
            LARGE_PAGE_SIZE
        } else {
            PAGE_SIZE
        };
        let end = (start + page_size).min(tools.len());
        let mut page = ListToolsResult::with_all_items(tools[start..end].to_vec());
        if end < tools.len() {
            page.next_cursor = Some(end.to_string());
        }
        Ok(page)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        let args = request.arguments.unwrap_or_default();
        self.run_tool(&request.name, &args, &context)
            .await
            .map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("test://greeting", "greeting").with_mime_type("text/plain"),
            Resource::new("test://logo.png", "logo").with_mime_type("image/png"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let contents = match request.uri.as_str() {
            "test://greeting" => ResourceContents::text("hello resource", "test://greeting"),
            "test://logo.png" => {
                ResourceContents::blob(PNG_BASE64, "test://logo.png").with_mime_type("image/png")
            }
            other => {
                return Err(ErrorData::resource_not_found(
                    format!("no resource {other}"),
                    None,
                ));
            }
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "greet",
            Some("Greets someone"),
            Some(vec![
                PromptArgument::new("name")
                    .with_description("who")
                    .with_required(true),
            ]),
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "greet" {
            return Err(ErrorData::invalid_params("no such prompt", None));
        }
        let name = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| ErrorData::invalid_params("`name` is required", None))?;
        let mut result = GetPromptResult::new(vec![
            PromptMessage::new_text(Role::User, format!("Say hello to {name}")),
            PromptMessage::new_text(Role::Assistant, format!("Hello, {name}!")),
        ]);
        result.description = Some("A greeting".to_owned());
        Ok(result.into())
    }
}
