//! What the end-to-end tests share.

use std::sync::Arc;

use promptkit::pipeline::prompt::{
    PromptAssemblyStage, PromptConfig, PromptRegistry, TemplateStage,
};
use promptkit::pipeline::provider::ProviderStage;
use promptkit::pipeline::{Element, Pipeline, RunData};
use promptkit::{Message, Provider, ToolSet};

/// Runs one Text-mode turn, PromptAssembly -> Template -> Provider, of the `support` prompt
/// (company `Acme`, the given tool allow-list) on "Where is order 12345?", and returns the
/// output. The turn must succeed.
pub(crate) async fn support_turn(
    provider: Arc<dyn Provider>,
    tools: Arc<dyn ToolSet>,
    allowed_tools: &str,
    session: &str,
) -> Vec<Element> {
    let prompt = format!(
        r#"
task_type: support
system_template: "You are the support agent of {{{{company}}}}. Use tools to look orders up."
variables:
  - name: company
    required: true
allowed_tools: {allowed_tools}
"#
    );
    let mut prompts = PromptRegistry::new();
    prompts
        .register(PromptConfig::parse(&prompt, "support.yaml".as_ref()).unwrap())
        .unwrap();
    let pipeline = Pipeline::builder()
        .then(PromptAssemblyStage::new(Arc::new(prompts), "support"))
        .then(TemplateStage::new())
        .then(ProviderStage::new(provider).with_tools(tools))
        .build()
        .unwrap();
    let turn = RunData::for_session(session).with_variable("company", "Acme");
    let (elements, result) = pipeline
        .execute(
            turn,
            futures_util::stream::iter([Element::message(Message::user("Where is order 12345?"))]),
        )
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    elements
}
