//! The mock executor: a static result, or a template over the arguments.

use promptkit_core::{
    BoxFuture, ContentPart, ToolCall, ToolContext, ToolError, ToolExecutor, ToolResult,
};
use serde::Deserialize;
use serde_json::Value;

/// Settings of [`MockExecutor`] (`config` of a `mock` descriptor).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// A fixed result: strings become text, anything else structured output.
    #[serde(default)]
    pub result: Option<Value>,
    /// A text template: `{{name}}` is replaced by the argument `name` (strings verbatim,
    /// other values as JSON); `{{args}}` by all arguments as JSON.
    #[serde(default)]
    pub template: Option<String>,
    /// Report the result as a tool error.
    #[serde(default)]
    pub is_error: bool,
}

/// Answers calls with canned results; for tests and demos.
#[derive(Debug, Clone, Default)]
pub struct MockExecutor {
    config: MockConfig,
}

impl MockExecutor {
    /// A mock returning `result`.
    pub fn returning(result: Value) -> Self {
        Self {
            config: MockConfig {
                result: Some(result),
                ..MockConfig::default()
            },
        }
    }

    /// A mock rendering `template` over the arguments.
    pub fn template(template: impl Into<String>) -> Self {
        Self {
            config: MockConfig {
                template: Some(template.into()),
                ..MockConfig::default()
            },
        }
    }

    /// A mock from descriptor settings.
    ///
    /// # Errors
    /// What is wrong with `config`.
    pub fn from_config(config: &Value) -> Result<Self, String> {
        if config.is_null() {
            return Ok(Self::default());
        }
        serde_json::from_value(config.clone())
            .map(|config| Self { config })
            .map_err(|e| e.to_string())
    }
}

/// Renders `{{name}}` placeholders from `args`. Unknown names are an error, never left in.
pub(crate) fn render_template(template: &str, args: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        let value = if name == "args" {
            Some(args.to_string())
        } else {
            args.get(name).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        match value {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "template refers to `{name}`, which is not an argument"
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ToolExecutor for MockExecutor {
    fn execute<'a>(
        &'a self,
        call: &'a ToolCall,
        _ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolResult, ToolError>> {
        Box::pin(async move {
            let mut result = ToolResult::text(&call.id, &call.name, "");
            result.content.clear();
            if let Some(template) = &self.config.template {
                let text = render_template(template, &call.arguments).map_err(|message| {
                    ToolError::Execution {
                        name: call.name.clone(),
                        message,
                        source: None,
                    }
                })?;
                result.content.push(ContentPart::text(text));
            } else {
                match &self.config.result {
                    Some(Value::String(s)) => result.content.push(ContentPart::text(s.clone())),
                    Some(other) => result.structured = Some(other.clone()),
                    None => result.content.push(ContentPart::text("ok")),
                }
            }
            if self.config.is_error {
                result.is_error = true;
                result.error_kind = Some(promptkit_core::ToolErrorKind::Execution);
            }
            Ok(result)
        })
    }
}
