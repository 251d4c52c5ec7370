//! The variable-provider, prompt-assembly and template stages.
//!
//! Each does its work once per run, when its first element arrives (or when its input ends
//! without one), before forwarding anything: elements reach the next stage only after the
//! work is done, so the three can run as separate concurrent stages in a chain. In a live
//! run the first element is [`Control::Start`](crate::Control::Start), so the prompt is
//! ready before any input arrives.

use std::sync::Arc;

use crate::events::EventKind;
use crate::{Stage, StageContext, StageError, StageInput, StageKind, StageOutput};
use promptkit_core::name_matches;

use super::config::{PromptRegistry, PromptTemplate};
use super::variables::VariableProvider;

/// Runs `work` once, then forwards everything.
async fn once_then_forward<F>(
    cx: &StageContext,
    mut input: StageInput,
    output: StageOutput,
    work: F,
) -> Result<(), StageError>
where
    F: AsyncFnOnce(&StageContext) -> Result<(), StageError>,
{
    let first = input.recv().await;
    work(cx).await?;
    if let Some(e) = first {
        output.send(e).await?;
        while let Some(e) = input.recv().await {
            output.send(e).await?;
        }
    }
    Ok(())
}

/// Merges the variables of its providers, in order (later wins), into the turn's variables.
/// Variables already in the turn (set by the caller for this request) win over providers.
#[derive(Debug, Clone)]
pub struct VariableProviderStage {
    name: String,
    providers: Vec<Arc<dyn VariableProvider>>,
}

impl VariableProviderStage {
    /// A stage named `variable_provider` with these providers.
    pub fn new(providers: Vec<Arc<dyn VariableProvider>>) -> Self {
        Self {
            name: "variable_provider".to_owned(),
            providers,
        }
    }
}

impl Stage for VariableProviderStage {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        once_then_forward(&cx, input, output, async |cx: &StageContext| {
            let snapshot = cx.run().snapshot();
            let mut merged = std::collections::BTreeMap::new();
            for p in &self.providers {
                let vars = p
                    .provide(&snapshot)
                    .await
                    .map_err(|e| StageError::with_source(e.to_string(), e))?;
                merged.extend(vars);
            }
            let mut turn = cx.run().write();
            for (k, v) in merged {
                turn.variables.entry(k).or_insert(v);
            }
            Ok(())
        })
        .await
    }
}

/// Selects the prompt of a task type and publishes it to the run: the unrendered template
/// (with the model override applied, as the run's [`PromptTemplate`] extension), the allowed tools (intersected with any allow-list the
/// caller set) and the parameters. An unknown task type is a fatal error naming the known
/// ones; there is no silent default prompt.
#[derive(Debug, Clone)]
pub struct PromptAssemblyStage {
    name: String,
    registry: Arc<PromptRegistry>,
    task_type: String,
}

impl PromptAssemblyStage {
    /// A stage named `prompt_assembly` for `task_type`.
    pub fn new(registry: Arc<PromptRegistry>, task_type: impl Into<String>) -> Self {
        Self {
            name: "prompt_assembly".to_owned(),
            registry,
            task_type: task_type.into(),
        }
    }
}

impl Stage for PromptAssemblyStage {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        once_then_forward(&cx, input, output, async |cx: &StageContext| {
            let config = self.registry.get(&self.task_type)?;
            let mut turn = cx.run().write();
            let template = config.template_for(turn.model.as_deref());
            turn.allowed_tools = match (turn.allowed_tools.take(), &template.allowed_tools) {
                (None, prompt) => prompt.clone(),
                (caller, None) => caller,
                (Some(caller), Some(prompt)) => Some(
                    prompt
                        .iter()
                        .filter(|p| {
                            caller
                                .iter()
                                .any(|c| name_matches(c, p) || name_matches(p, c))
                        })
                        .cloned()
                        .collect(),
                ),
            };
            turn.extensions.insert(template);
            Ok(())
        })
        .await
    }
}

/// Renders the run's template (its [`PromptTemplate`] extension) with the run's variables into
/// its system prompt,
/// once per execution. A missing required variable or an unresolved placeholder is a fatal
/// error naming them; the raw template is never used as a fallback. Without a template the
/// stage only forwards.
#[derive(Debug, Clone)]
pub struct TemplateStage {
    name: String,
}

impl TemplateStage {
    /// A stage named `template`.
    pub fn new() -> Self {
        Self {
            name: "template".to_owned(),
        }
    }
}

impl Default for TemplateStage {
    fn default() -> Self {
        Self::new()
    }
}

impl Stage for TemplateStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Transform
    }

    async fn run(
        &self,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        once_then_forward(&cx, input, output, async |cx: &StageContext| {
            let mut turn = cx.run().write();
            let Some(template) = turn.extensions.get_shared::<PromptTemplate>() else {
                return Ok(());
            };
            let rendered = template.render(&turn.variables)?;
            let length = rendered.text.len();
            turn.system_prompt = Some(rendered.text);
            drop(turn);
            cx.events().emit_with(|| EventKind::PromptRendered {
                task_type: template.task_type.clone(),
                used: rendered.used,
                length,
            });
            Ok(())
        })
        .await
    }
}
