//! A server's tool list: checking and bounding what a server lists, and pacing how often it
//! is listed.
//!
//! Whatever a server lists goes into every provider request, so one bad definition would
//! break every turn, not just calls of that tool. Each tool is checked on its own when it is
//! listed: an input schema that does not compile, is not an object or is too large leaves that
//! tool out (with a warning in the log and in the server's health); a description that is too
//! long is cut; an output schema that does not compile is dropped; and only so many tools are
//! offered per server. Listing itself is paced: a listing that fails or times out waits for a
//! back-off before the next attempt, and a server that announces changes faster than makes
//! sense is re-listed at a bounded rate, serving the current list meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptkit_core::{ToolDef, empty_object_schema};
use serde_json::{Map, Value};

use crate::config::{ServerConfig, ToolFilter};
use crate::convert;
use crate::names;
use crate::types::ToolAnnotations;

/// First delay before listing again after a failed listing; doubled per failure up to
/// [`MAX_LIST_BACKOFF`].
const FIRST_LIST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between failed listings.
const MAX_LIST_BACKOFF: Duration = Duration::from_secs(30);
/// Re-listings allowed in a burst after `list_changed` notifications.
const RELIST_BURST: f64 = 3.0;
/// Re-listings allowed per second after the burst.
const RELISTS_PER_SECOND: f64 = 1.0;
/// Pagination stops once this many times `max_tools` tools passing the filter are listed.
const LISTED_PER_OFFERED: usize = 4;

/// The listed tools of a server, after filtering and checking.
pub(crate) struct ToolCache {
    /// By qualified name.
    pub(crate) tools: BTreeMap<String, ToolEntry>,
    /// What was left out or cut, for the server's health.
    pub(crate) warnings: Vec<String>,
}

pub(crate) struct ToolEntry {
    /// The server's name for the tool.
    pub(crate) mcp_name: String,
    pub(crate) definition: ToolDef,
    pub(crate) annotations: ToolAnnotations,
    validator: Arc<jsonschema::Validator>,
}

impl ToolEntry {
    /// Checks `arguments` against the input schema (compiled when the tool was listed).
    pub(crate) fn validate(&self, arguments: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(arguments)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The bounds of one server's listing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_tools: usize,
    pub(crate) max_description_bytes: usize,
    pub(crate) max_schema_bytes: usize,
}

impl Limits {
    pub(crate) fn of(config: &ServerConfig) -> Self {
        Self {
            max_tools: config.max_tools(),
            max_description_bytes: config.max_description_bytes(),
            max_schema_bytes: config.max_schema_bytes(),
        }
    }

    /// How many tools passing the filter are worth listing before pagination stops.
    pub(crate) fn enough(&self) -> usize {
        self.max_tools.saturating_mul(LISTED_PER_OFFERED)
    }
}

/// A server's tool name as shown in messages: at most 64 characters, escaped.
fn shown(name: &str) -> String {
    let mut text: String = name.chars().take(64).flat_map(char::escape_debug).collect();
    if name.chars().count() > 64 {
        text.push('…');
    }
    text
}

/// A tool that passed its checks.
struct Checked {
    tool: rmcp::model::Tool,
    description: String,
    schema: Value,
    validator: Arc<jsonschema::Validator>,
    output_schema: Option<Value>,
}

/// Checks one tool; `Err` says why it is left out. Cuts and drops that keep the tool are
/// added to `warnings`.
fn check(
    tool: rmcp::model::Tool,
    limits: &Limits,
    warnings: &mut Vec<String>,
) -> Result<Checked, String> {
    let name = shown(&tool.name);
    let schema = Value::Object((*tool.input_schema).clone());
    let schema = if schema.as_object().is_some_and(Map::is_empty) {
        empty_object_schema()
    } else {
        schema
    };
    let size = json_size(&schema);
    if size > limits.max_schema_bytes {
        return Err(format!(
            "tool `{name}` left out: its input schema is {size} bytes, over the limit of {}",
            limits.max_schema_bytes
        ));
    }
    let validator = jsonschema::validator_for(&schema)
        .map(Arc::new)
        .map_err(|e| format!("tool `{name}` left out: its input schema does not compile: {e}"))?;
    match schema.get("type") {
        None => {}
        Some(Value::String(ty)) if ty == "object" => {}
        Some(other) => {
            let ty: String = other.to_string().chars().take(64).collect();
            return Err(format!(
                "tool `{name}` left out: its input schema has type {ty}, not `object`"
            ));
        }
    }
    let mut description = tool.description.as_deref().unwrap_or_default().to_owned();
    if description.len() > limits.max_description_bytes {
        warnings.push(format!(
            "tool `{name}`: its description of {} bytes was cut to {}",
            description.len(),
            limits.max_description_bytes
        ));
        description.truncate(description.floor_char_boundary(limits.max_description_bytes));
        description.push('…');
    }
    let output_schema = tool.output_schema.as_ref().and_then(|output| {
        let output = Value::Object((**output).clone());
        let size = json_size(&output);
        let problem = if size > limits.max_schema_bytes {
            Some(format!(
                "is {size} bytes, over the limit of {}",
                limits.max_schema_bytes
            ))
        } else {
            jsonschema::validator_for(&output)
                .err()
                .map(|e| format!("does not compile: {e}"))
        };
        match problem {
            None => Some(output),
            Some(problem) => {
                warnings.push(format!(
                    "tool `{name}`: its output schema {problem}; ignored"
                ));
                None
            }
        }
    });
    Ok(Checked {
        tool,
        description,
        schema,
        validator,
        output_schema,
    })
}

fn json_size(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// The cache of `server`'s listing: filtered, sorted, checked, at most `max_tools` tools,
/// each with a unique qualified name. `complete` is false when pagination stopped early.
pub(crate) fn build(
    server: &str,
    filter: &ToolFilter,
    limits: &Limits,
    mut listed: Vec<rmcp::model::Tool>,
    complete: bool,
) -> ToolCache {
    listed.retain(|t| filter.allows(&t.name));
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    listed.dedup_by(|a, b| a.name == b.name);
    let mut warnings = Vec::new();
    let mut accepted = Vec::new();
    let mut excess = 0_usize;
    for tool in listed {
        if accepted.len() == limits.max_tools {
            excess += 1;
            continue;
        }
        match check(tool, limits, &mut warnings) {
            Ok(checked) => accepted.push(checked),
            Err(warning) => warnings.push(warning),
        }
    }
    if excess > 0 || !complete {
        warnings.push(format!(
            "the server lists more than {} tools; only the first {} are offered",
            limits.max_tools, limits.max_tools
        ));
    }
    let raw: Vec<&str> = accepted.iter().map(|c| c.tool.name.as_ref()).collect();
    let qualified = names::assign_names(server, &raw);
    let mut tools = BTreeMap::new();
    for (checked, name) in accepted.into_iter().zip(qualified) {
        let mut definition = ToolDef::new(name.clone(), checked.description, checked.schema);
        if let Some(output) = checked.output_schema {
            definition = definition.with_output_schema(output);
        }
        let entry = ToolEntry {
            mcp_name: checked.tool.name.to_string(),
            annotations: convert::annotations(
                checked.tool.annotations.as_ref(),
                checked.tool.title.as_deref(),
            ),
            definition,
            validator: checked.validator,
        };
        // `assign_names` never repeats a name, so no entry replaces another.
        tools.insert(name, entry);
    }
    for warning in &warnings {
        tracing::warn!(server, "MCP tool listing: {warning}");
    }
    ToolCache { tools, warnings }
}

/// When a server may be listed next.
#[derive(Debug)]
pub(crate) struct Pacing {
    failures: u32,
    /// Why the last listing failed, and when the next may start.
    failed: Option<(String, Instant)>,
    /// Re-listings available now (a token bucket).
    tokens: f64,
    refilled: Instant,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            failures: 0,
            failed: None,
            tokens: RELIST_BURST,
            refilled: Instant::now(),
        }
    }
}

impl Pacing {
    /// Why listing must wait, and for how long, while a back-off runs.
    pub(crate) fn backing_off(&self) -> Option<(String, Duration)> {
        let (message, retry_at) = self.failed.as_ref()?;
        let left = retry_at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| (message.clone(), left))
    }

    /// Records a failed listing; returns the back-off before the next.
    pub(crate) fn failed(&mut self, message: String) -> Duration {
        self.failures += 1;
        let backoff = FIRST_LIST_BACKOFF
            .saturating_mul(1 << self.failures.saturating_sub(1).min(5))
            .min(MAX_LIST_BACKOFF);
        self.failed = Some((message, Instant::now() + backoff));
        backoff
    }

    /// Records a listing that worked.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.failed = None;
    }

    /// Takes a re-listing from the bucket; `false` when none is left for now.
    pub(crate) fn take_relist(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * RELISTS_PER_SECOND;
        self.tokens = (self.tokens + earned).min(RELIST_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, description: &str, schema: Value) -> rmcp::model::Tool {
        let Value::Object(schema) = schema else {
            panic!("not an object schema")
        };
        rmcp::model::Tool::new(name.to_owned(), description.to_owned(), Arc::new(schema))
    }

    const LIMITS: Limits = Limits {
        max_tools: 3,
        max_description_bytes: 16,
        max_schema_bytes: 200,
    };

    #[test]
    fn bad_tools_are_left_out_one_by_one() {
        let big: Map<String, Value> = (0..20)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        let cache = build(
            "s",
            &ToolFilter::default(),
            &LIMITS,
            vec![
                tool("banana", "d", json!({"type": "banana"})),
                tool("big", "d", json!({"type": "object", "properties": big})),
                tool("good", "a description longer than sixteen bytes", json!({})),
                tool("string", "d", json!({"type": "string"})),
            ],
            true,
        );
        let names: Vec<&str> = cache.tools.keys().map(String::as_str).collect();
        assert_eq!(names, ["mcp__s__good"]);
        let good = &cache.tools["mcp__s__good"];
        assert_eq!(good.definition.description, "a description lo…");
        assert_eq!(good.definition.input_schema, empty_object_schema());
        let warnings = cache.warnings.join("\n");
        for needle in [
            "`banana` left out",
            "`big` left out",
            "`string` left out",
            "`good`: its description",
        ] {
            assert!(warnings.contains(needle), "{needle}: {warnings}");
        }
    }

    #[test]
    fn only_so_many_tools_are_offered() {
        let listed = (0..10)
            .map(|i| tool(&format!("t{i}"), "d", json!({"type": "object"})))
            .collect();
        let cache = build("s", &ToolFilter::default(), &LIMITS, listed, true);
        assert_eq!(cache.tools.len(), 3);
        assert!(
            cache.warnings[0].contains("more than 3 tools"),
            "{:?}",
            cache.warnings
        );
    }

    #[test]
    fn relisting_is_paced() {
        let mut pacing = Pacing::default();
        assert!((0..3).all(|_| pacing.take_relist()));
        assert!(!pacing.take_relist());
        assert!(pacing.backing_off().is_none());
        assert_eq!(pacing.failed("hung".to_owned()), Duration::from_secs(1));
        assert_eq!(pacing.failed("hung".to_owned()), Duration::from_secs(2));
        assert_eq!(pacing.backing_off().unwrap().0, "hung");
        pacing.succeeded();
        assert!(pacing.backing_off().is_none());
    }
}
