//! Prompts: configs and their registry, `{{var}}` templates, variable providers, and the
//! stages that assemble and render a turn's system prompt.

mod config;
mod stages;
mod template;
mod variables;

pub use config::{
    ModelOverride, PromptConfig, PromptError, PromptParameters, PromptRegistry, PromptTemplate,
    ValidatorSpec, VariableSpec,
};
pub use stages::{PromptAssemblyStage, TemplateStage, VariableProviderStage};
pub use template::{MAX_PASSES, Rendered, TemplateError, render, variables_in};
pub use variables::{
    StateVariables, StaticVariables, TimeVariables, VariableError, VariableProvider,
};
