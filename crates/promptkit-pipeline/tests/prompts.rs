//! Prompt configs, the registry, and the variable / prompt-assembly / template stages.

use std::sync::Arc;

use promptkit_core::ErrorChain;
use promptkit_core::Message;
use promptkit_pipeline::prompt::{
    PromptAssemblyStage, PromptConfig, PromptError, PromptRegistry, StaticVariables, TemplateStage,
    VariableProvider, VariableProviderStage,
};
use promptkit_pipeline::{Element, Pipeline, PipelineError, RunData};

const SUPPORT_YAML: &str = r#"
apiVersion: promptkit.altairalabs.ai/v1alpha1
kind: PromptConfig
metadata:
  name: support
spec:
  task_type: support
  version: "1.0"
  system_template: |
    You are {{assistant_name}}, support agent for {{company}}.
    Tone: {{tone}}.
  variables:
    - name: company
      required: true
    - name: assistant_name
      default: Max
    - name: tone
      default: friendly
  allowed_tools: [lookup_order, "mcp__crm__*"]
  model_overrides:
    gpt-4o-mini:
      system_template_suffix: "Be concise."
  validators:
    - type: banned_words
      params: {words: [guarantee]}
    - type: max_length
      enabled: false
"#;

const SALES_JSON: &str = r#"{
  "task_type": "sales",
  "system_template": "Sell {{product}}.",
  "variables": [{"name": "product", "required": true}]
}"#;

fn registry_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("support.yaml"), SUPPORT_YAML).unwrap();
    std::fs::write(dir.path().join("sales.json"), SALES_JSON).unwrap();
    std::fs::write(dir.path().join("README.txt"), "ignored").unwrap();
    dir
}

#[test]
fn registry_loads_yaml_and_json() {
    let dir = registry_dir();
    let mut registry = PromptRegistry::new();
    assert_eq!(registry.load_dir(dir.path()).unwrap(), 2);
    assert_eq!(registry.task_types(), ["sales", "support"]);
    let support = registry.get("support").unwrap();
    assert_eq!(support.variables.len(), 3);
    let template = support.template_for(Some("gpt-4o-mini"));
    assert!(template.text.ends_with("Be concise."));
    assert_eq!(
        template.validators.len(),
        1,
        "disabled validators are dropped"
    );
    assert_eq!(template.required, ["company"]);
    let err = registry.get("billing").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no prompt for task type `billing` (known: sales, support)"
    );
}

#[test]
fn load_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "task_type: x\nsystem_template: hi\nvariables:\n  - name: a\n    requird: true\n",
    )
    .unwrap();
    let err = PromptConfig::from_file(&bad).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("bad.yaml"), "{text}");
    assert!(text.contains("requird"), "{text}");

    let missing = dir.path().join("missing.json");
    std::fs::write(&missing, r#"{"task_type": "x"}"#).unwrap();
    let text = PromptConfig::from_file(&missing).unwrap_err().to_string();
    assert!(
        text.contains("missing.json") && text.contains("system_template"),
        "{text}"
    );

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "task_type: x\nsystem_template: '  '\n").unwrap();
    assert!(matches!(
        PromptConfig::from_file(&empty),
        Err(PromptError::Invalid { .. })
    ));

    let mut registry = PromptRegistry::new();
    std::fs::write(dir.path().join("again.json"), SALES_JSON).unwrap();
    registry.load_file(dir.path().join("again.json")).unwrap();
    let dup = registry
        .load_file(dir.path().join("again.json"))
        .unwrap_err();
    assert!(matches!(dup, PromptError::Duplicate { .. }), "{dup}");
}

fn text_pipeline(
    registry: Arc<PromptRegistry>,
    task: &str,
    providers: Vec<Arc<dyn VariableProvider>>,
) -> Pipeline {
    Pipeline::builder()
        .then(VariableProviderStage::new(providers))
        .then(PromptAssemblyStage::new(registry, task))
        .then(TemplateStage::new())
        .build()
        .unwrap()
}

#[tokio::test]
async fn stages_render_the_system_prompt_once_per_execution() {
    let dir = registry_dir();
    let mut registry = PromptRegistry::new();
    registry.load_dir(dir.path()).unwrap();
    let registry = Arc::new(registry);
    let pipeline = text_pipeline(
        Arc::clone(&registry),
        "support",
        vec![Arc::new(StaticVariables::new([
            ("company", "Acme"),
            ("tone", "formal"),
        ]))],
    );

    // Per-request variables (already on the turn) win over providers.
    for (tone, want) in [(None, "formal"), (Some("playful"), "playful")] {
        let mut turn = RunData::for_session("s").with_user("u");
        turn.model = Some("gpt-4o-mini".into());
        if let Some(t) = tone {
            turn = turn.with_variable("tone", t);
        }
        let (mut out, handle) = pipeline
            .execute(
                turn,
                futures_util::stream::iter([Element::message(Message::user("hi"))]),
            )
            .unwrap()
            .into_parts();
        assert!(out.recv().await.is_some());
        assert!(out.recv().await.is_none());
        let turn = Arc::clone(handle.run());
        handle.wait().await.unwrap();
        let prompt = turn.read().system_prompt.clone().unwrap();
        assert!(prompt.contains(&format!("Tone: {want}.")), "{prompt}");
        assert!(
            prompt.ends_with("Be concise."),
            "model override applied: {prompt}"
        );
    }

    // Check what the stages left in the turn.
    let mut turn = RunData::for_session("s");
    turn.allowed_tools = Some(vec!["lookup_order".into(), "delete_everything".into()]);
    let execution = pipeline
        .execute(
            turn,
            futures_util::stream::iter([Element::message(Message::user("hi"))]),
        )
        .unwrap();
    let (mut out, handle) = execution.into_parts();
    while out.recv().await.is_some() {}
    let turn = Arc::clone(handle.run());
    handle.wait().await.unwrap();
    let data = turn.snapshot();
    assert_eq!(
        data.system_prompt.as_deref(),
        Some("You are Max, support agent for Acme.\nTone: formal.\n")
    );
    // The caller's allow-list is intersected with the prompt's.
    assert_eq!(data.allowed_tools, Some(vec!["lookup_order".to_owned()]));
    assert!(turn.tool_allowed("lookup_order"));
    assert!(!turn.tool_allowed("delete_everything"));
}

#[tokio::test]
async fn a_missing_required_variable_fails_the_run_clearly() {
    let mut registry = PromptRegistry::new();
    registry
        .register(PromptConfig::parse(SALES_JSON, "sales.json".as_ref()).unwrap())
        .unwrap();
    let pipeline = text_pipeline(Arc::new(registry), "sales", vec![]);
    let failure = pipeline
        .execute_sync(RunData::default(), [Element::message(Message::user("hi"))])
        .await
        .unwrap_err();
    match &failure.error {
        PipelineError::StageFailed { stage, .. } => assert_eq!(stage, "template"),
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        ErrorChain(&failure).to_string(),
        "stage `template` failed: prompt template could not be rendered: missing required variable(s): product"
    );
}

#[tokio::test]
async fn an_unknown_task_type_fails_instead_of_using_a_default_prompt() {
    let pipeline = text_pipeline(Arc::new(PromptRegistry::new()), "nope", vec![]);
    let failure = pipeline
        .execute_sync(RunData::default(), [Element::text("hi")])
        .await
        .unwrap_err();
    assert!(
        ErrorChain(&failure)
            .to_string()
            .contains("no prompt for task type `nope`"),
        "{failure}"
    );
}
