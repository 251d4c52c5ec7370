//! Prompt configurations and the prompt registry.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template::{TemplateError, render, variables_in};

/// One template variable a prompt declares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    /// The name used in `{{name}}`.
    pub name: String,
    /// Whether rendering fails without a value.
    #[serde(default)]
    pub required: bool,
    /// Value used when none is provided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// What the variable is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Declared type (informational: `string`, `number`, ...).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// An example value (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Value>,
}

/// A validator (guardrail) a prompt asks for; interpreted by the provider stage's hooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatorSpec {
    /// Validator type (`banned_words`, `max_length`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Parameters.
    #[serde(default)]
    pub params: Value,
    /// Whether it is active.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Message shown when it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn yes() -> bool {
    true
}

/// A per-model replacement or suffix of the system template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverride {
    /// Replaces the system template for this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_template: Option<String>,
    /// Appended to the (possibly replaced) template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_template_suffix: Option<String>,
}

/// Sampling parameters a prompt suggests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptParameters {
    /// Temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Maximum output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
}

/// A prompt: the system template of one task type, its variables, tools and validators.
///
/// Loads from JSON or YAML, either flat or in the Go original's
/// `apiVersion/kind/metadata/spec` envelope (the `spec` part is read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    /// The task type the prompt is selected by.
    pub task_type: String,
    /// Version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The system prompt template.
    pub system_template: String,
    /// Declared variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<VariableSpec>,
    /// Tools the model may use with this prompt (`*` suffix for a prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// Validators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorSpec>,
    /// Per-model template overrides, keyed by model id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_overrides: BTreeMap<String, ModelOverride>,
    /// Suggested sampling parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<PromptParameters>,
}

/// Why a prompt could not be loaded or assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The file could not be read.
    #[error("cannot read prompt file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid prompt config.
    #[error("invalid prompt config in {path}: {message}")]
    Parse {
        /// The file (or `<inline>`).
        path: PathBuf,
        /// What is wrong, with the field path when known.
        message: String,
    },
    /// The config is well-formed but inconsistent.
    #[error("invalid prompt `{task_type}`: {message}")]
    Invalid {
        /// The prompt.
        task_type: String,
        /// What is wrong.
        message: String,
    },
    /// Two configs declare the same task type.
    #[error("task type `{task_type}` is defined twice ({first} and {second})")]
    Duplicate {
        /// The task type.
        task_type: String,
        /// Where it was first defined.
        first: String,
        /// Where it was defined again.
        second: String,
    },
    /// No prompt has this task type.
    #[error("no prompt for task type `{task_type}` (known: {})", .known.join(", "))]
    UnknownTaskType {
        /// The requested task type.
        task_type: String,
        /// The task types that exist.
        known: Vec<String>,
    },
    /// Rendering failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

#[derive(Deserialize)]
struct Envelope {
    spec: PromptConfig,
}

impl PromptConfig {
    /// Parses a config from JSON or YAML text (JSON is valid YAML, so YAML parsing is used
    /// for both unless `format` says JSON).
    ///
    /// # Errors
    /// [`PromptError::Parse`] naming `origin` and what is wrong.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, PromptError> {
        let is_json = origin.extension().and_then(|e| e.to_str()) == Some("json");
        let value: Value = if is_json {
            serde_json::from_str(text).map_err(|e| PromptError::Parse {
                path: origin.to_owned(),
                message: e.to_string(),
            })?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| PromptError::Parse {
                path: origin.to_owned(),
                message: e.to_string(),
            })?
        };
        let parsed = if value.get("spec").is_some() {
            serde_json::from_value::<Envelope>(value).map(|e| e.spec)
        } else {
            serde_json::from_value::<Self>(value)
        };
        let config = parsed.map_err(|e| PromptError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file (`.json`, `.yaml` or `.yml`).
    ///
    /// # Errors
    /// [`PromptError::Io`] or [`PromptError::Parse`] naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PromptError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks consistency: a task type, a template, unique variable names, required
    /// variables without defaults make sense.
    ///
    /// # Errors
    /// [`PromptError::Invalid`] saying what is wrong.
    pub fn validate(&self) -> Result<(), PromptError> {
        let invalid = |message: String| PromptError::Invalid {
            task_type: self.task_type.clone(),
            message,
        };
        if self.task_type.trim().is_empty() {
            return Err(invalid("task_type is empty".into()));
        }
        if self.system_template.trim().is_empty() {
            return Err(invalid("system_template is empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for v in &self.variables {
            if !seen.insert(v.name.as_str()) {
                return Err(invalid(format!("variable `{}` is declared twice", v.name)));
            }
        }
        Ok(())
    }

    /// The unrendered template for `model` (applying its override), with defaults and
    /// required names resolved.
    pub fn template_for(&self, model: Option<&str>) -> PromptTemplate {
        let mut text = self.system_template.clone();
        if let Some(o) = model.and_then(|m| self.model_overrides.get(m)) {
            if let Some(t) = &o.system_template {
                text.clone_from(t);
            }
            if let Some(suffix) = &o.system_template_suffix {
                text.push_str(suffix);
            }
        }
        let defaults = self
            .variables
            .iter()
            .filter_map(|v| {
                v.default.as_ref().map(|d| {
                    let s = match d {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (v.name.clone(), s)
                })
            })
            .collect();
        PromptTemplate {
            task_type: Some(self.task_type.clone()),
            text,
            defaults,
            required: self
                .variables
                .iter()
                .filter(|v| v.required)
                .map(|v| v.name.clone())
                .collect(),
            allowed_tools: self.allowed_tools.clone(),
            validators: self
                .validators
                .iter()
                .filter(|v| v.enabled)
                .cloned()
                .collect(),
            parameters: self.parameters.clone(),
        }
    }
}

/// The unrendered system prompt selected for a turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptTemplate {
    /// The task type it came from.
    pub task_type: Option<String>,
    /// The template text.
    pub text: String,
    /// Default variable values.
    pub defaults: BTreeMap<String, String>,
    /// Variables that must be set.
    pub required: Vec<String>,
    /// Tools allowed with this prompt.
    pub allowed_tools: Option<Vec<String>>,
    /// Enabled validators.
    pub validators: Vec<ValidatorSpec>,
    /// Suggested parameters.
    pub parameters: Option<PromptParameters>,
}

impl PromptTemplate {
    /// A template from text, with no declared variables.
    pub fn from_text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Renders with `vars` over the defaults (variables win).
    ///
    /// # Errors
    /// [`TemplateError`] naming missing or unresolved variables.
    pub fn render(
        &self,
        vars: &BTreeMap<String, String>,
    ) -> Result<super::Rendered, TemplateError> {
        let mut merged = self.defaults.clone();
        merged.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        let required: Vec<&str> = self.required.iter().map(String::as_str).collect();
        render(&self.text, &merged, &required)
    }

    /// The variable names the template mentions.
    pub fn variables(&self) -> Vec<String> {
        variables_in(&self.text)
    }
}

/// Prompt configs by task type.
#[derive(Debug, Clone, Default)]
pub struct PromptRegistry {
    prompts: HashMap<String, (PromptConfig, String)>,
}

impl PromptRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a config.
    ///
    /// # Errors
    /// [`PromptError::Duplicate`] when the task type exists, or [`PromptError::Invalid`].
    pub fn register(&mut self, config: PromptConfig) -> Result<(), PromptError> {
        self.insert(config, "<code>".to_owned())
    }

    fn insert(&mut self, config: PromptConfig, origin: String) -> Result<(), PromptError> {
        config.validate()?;
        if let Some((_, first)) = self.prompts.get(&config.task_type) {
            return Err(PromptError::Duplicate {
                task_type: config.task_type.clone(),
                first: first.clone(),
                second: origin,
            });
        }
        self.prompts
            .insert(config.task_type.clone(), (config, origin));
        Ok(())
    }

    /// Loads one file.
    ///
    /// # Errors
    /// As [`PromptConfig::from_file`] and [`PromptRegistry::register`].
    pub fn load_file(&mut self, path: impl AsRef<Path>) -> Result<(), PromptError> {
        let path = path.as_ref();
        let config = PromptConfig::from_file(path)?;
        self.insert(config, path.display().to_string())
    }

    /// Loads every `.json`, `.yaml` and `.yml` file of a directory (not recursive), in name
    /// order.
    ///
    /// # Errors
    /// The first file that fails, named.
    pub fn load_dir(&mut self, dir: impl AsRef<Path>) -> Result<usize, PromptError> {
        let dir = dir.as_ref();
        let io = |source| PromptError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
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
        for f in &files {
            self.load_file(f)?;
        }
        Ok(files.len())
    }

    /// The config of `task_type`.
    ///
    /// # Errors
    /// [`PromptError::UnknownTaskType`] listing the known task types.
    pub fn get(&self, task_type: &str) -> Result<&PromptConfig, PromptError> {
        self.prompts
            .get(task_type)
            .map(|(c, _)| c)
            .ok_or_else(|| PromptError::UnknownTaskType {
                task_type: task_type.to_owned(),
                known: self.task_types(),
            })
    }

    /// Known task types, sorted.
    pub fn task_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self.prompts.keys().cloned().collect();
        t.sort();
        t
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}
