//! Tool descriptors and loading them from JSON and YAML files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use promptkit_core::{ToolDef, empty_object_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool as configured: what the model sees plus how it runs.
///
/// In a file, a descriptor is either a plain JSON/YAML object with these keys, or (YAML) a
/// manifest `{apiVersion, kind: Tool, metadata: {name}, spec: {...}}` whose `spec` holds every
/// key but `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDescriptor {
    /// The name the model calls. `ns__tool` names belong to namespace `ns`.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments (an empty object schema when absent).
    #[serde(default = "empty_object_schema")]
    pub input_schema: Value,
    /// JSON Schema of structured results; results are validated against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Which executor runs it: `mock`, `subprocess`, `http`, or a kind registered with
    /// [`ToolRegistry::register_kind`](crate::ToolRegistry::register_kind).
    #[serde(default = "default_executor")]
    pub executor: String,
    /// Per-call deadline in milliseconds (the registry default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Most calls per minute (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_minute: Option<u32>,
    /// Labels copied into events and logs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Executor-specific settings (for example `{"result": ...}` for `mock`,
    /// `{"command": ..., "args": [...]}` for `subprocess`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub config: Value,
}

fn default_executor() -> String {
    "mock".to_owned()
}

impl ToolDescriptor {
    /// A descriptor with an empty argument schema and the `mock` executor.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema: empty_object_schema(),
            output_schema: None,
            executor: default_executor(),
            timeout_ms: None,
            rate_limit_per_minute: None,
            labels: BTreeMap::new(),
            config: Value::Null,
        }
    }

    /// Sets the argument schema.
    #[must_use]
    pub fn with_input_schema(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }

    /// Sets the executor kind and its settings.
    #[must_use]
    pub fn with_executor(mut self, kind: impl Into<String>, config: Value) -> Self {
        self.executor = kind.into();
        self.config = config;
        self
    }

    /// The definition offered to models.
    pub fn definition(&self) -> ToolDef {
        ToolDef {
            name: self.name.clone(),
            description: self.description.clone(),
            input_schema: self.input_schema.clone(),
            output_schema: self.output_schema.clone(),
        }
    }

    /// The namespace (text before the first `__`), if any.
    pub fn namespace(&self) -> Option<&str> {
        crate::names::split(&self.name).0
    }

    /// Parses a descriptor (plain or manifest) from JSON or YAML text. `origin` names the
    /// source in errors; its extension selects the format (`.json` is JSON, anything else YAML,
    /// which also reads JSON).
    ///
    /// # Errors
    /// [`DescriptorError`] naming the origin and the offending field.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, DescriptorError> {
        let is_json = origin.extension().and_then(|e| e.to_str()) == Some("json");
        let value: Value = if is_json {
            serde_json::from_str(text).map_err(|e| DescriptorError::parse(origin, e.to_string()))?
        } else {
            serde_yaml_ng::from_str(text)
                .map_err(|e| DescriptorError::parse(origin, e.to_string()))?
        };
        let value = from_manifest(value, origin)?;
        let descriptor: Self = serde_json::from_value(value)
            .map_err(|e| DescriptorError::parse(origin, e.to_string()))?;
        descriptor
            .validate()
            .map_err(|message| DescriptorError::Invalid {
                path: origin.to_owned(),
                message,
            })?;
        Ok(descriptor)
    }

    /// Reads a descriptor file.
    ///
    /// # Errors
    /// [`DescriptorError`] naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DescriptorError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| DescriptorError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks the descriptor: a usable name, a description, an object argument schema that
    /// compiles.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        crate::names::validate(&self.name).map_err(|e| format!("field `name`: {e}"))?;
        if self.description.trim().is_empty() {
            return Err("field `description`: must not be empty (the model needs it)".to_owned());
        }
        if !self.input_schema.is_object() {
            return Err("field `input_schema`: must be a JSON Schema object".to_owned());
        }
        jsonschema::validator_for(&self.input_schema)
            .map_err(|e| format!("field `input_schema`: {e}"))?;
        if let Some(schema) = &self.output_schema {
            jsonschema::validator_for(schema).map_err(|e| format!("field `output_schema`: {e}"))?;
        }
        if self.timeout_ms == Some(0) {
            return Err("field `timeout_ms`: must be positive".to_owned());
        }
        Ok(())
    }
}

fn from_manifest(value: Value, origin: &Path) -> Result<Value, DescriptorError> {
    let Value::Object(mut map) = value else {
        return Err(DescriptorError::parse(
            origin,
            "expected an object".to_owned(),
        ));
    };
    if !map.contains_key("spec") {
        return Ok(Value::Object(map));
    }
    match map.get("kind").and_then(Value::as_str) {
        Some("Tool") => {}
        other => {
            return Err(DescriptorError::parse(
                origin,
                format!("field `kind`: expected `Tool`, found {other:?}"),
            ));
        }
    }
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| DescriptorError::parse(origin, "field `metadata.name`: missing".to_owned()))?
        .to_owned();
    let Some(Value::Object(mut spec)) = map.remove("spec") else {
        return Err(DescriptorError::parse(
            origin,
            "field `spec`: expected an object".to_owned(),
        ));
    };
    spec.insert("name".to_owned(), Value::String(name));
    Ok(Value::Object(spec))
}

/// Why a descriptor could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The file could not be read.
    #[error("cannot read tool descriptor {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a descriptor.
    #[error("invalid tool descriptor in {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the field).
        message: String,
    },
    /// The descriptor is well-formed but unusable.
    #[error("invalid tool descriptor in {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the field).
        message: String,
    },
    /// The descriptor names an executor kind nobody registered.
    #[error("tool `{tool}` uses executor `{kind}`, which is not registered (known: {})", .known.join(", "))]
    UnknownExecutor {
        /// The tool.
        tool: String,
        /// The kind.
        kind: String,
        /// Registered kinds.
        known: Vec<String>,
    },
    /// The executor rejected the tool's `config`.
    #[error("tool `{tool}`: invalid `config` for executor `{kind}`: {message}")]
    ExecutorConfig {
        /// The tool.
        tool: String,
        /// The kind.
        kind: String,
        /// What is wrong.
        message: String,
    },
}

impl DescriptorError {
    fn parse(path: &Path, message: String) -> Self {
        Self::Parse {
            path: path.to_owned(),
            message,
        }
    }
}
