//! The layering invariants of `01-architecture.md`, checked over the workspace's dependency graph.
//!
//! [`check`] is a pure function over plain data so the rules can be unit-tested without cargo;
//! [`run`] feeds it the real graph from `cargo metadata` and adds the manifest tidy checks.
//!
//! Every workspace member must appear in [`LAYERS`]: a new crate is a violation until someone
//! decides which layer it belongs to.

use std::{collections::BTreeSet, fmt, path::Path};

use crate::{metadata, tidy};

/// The crate everything else builds on.
pub(crate) const CORE: &str = "promptkit-core";

/// Packages promptkit-core must not reach through normal dependencies, however indirectly:
/// async runtimes, HTTP stacks, database and protocol clients.
pub(crate) const CORE_FORBIDDEN: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "sqlx",
    "tokio-tungstenite",
    "rmcp",
    "async-std",
    "smol",
    "redis",
];

/// The layer a workspace member belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    /// promptkit-core: the vocabulary and the seams.
    Core,
    /// A domain crate that implements seams of core (providers, tools, mcp, state, audio).
    Domain,
    /// promptkit-pipeline: the stage engine.
    Pipeline,
    /// promptkit-voice: the voice stages and sessions, above the pipeline and the domain
    /// crates (decision 0013).
    Modes,
    /// promptkit: the facade that re-exports everything.
    Facade,
    /// promptkit-cli: the `promptkit` binary.
    Cli,
    /// promptkit-testkit: publish = false test doubles.
    Testkit,
    /// promptkit-e2e (tests/): cross-crate end-to-end tests.
    EndToEnd,
    /// xtask: project automation.
    Xtask,
}

/// Every workspace member and its layer. A new crate goes here.
const LAYERS: &[(&str, Layer)] = &[
    (CORE, Layer::Core),
    ("promptkit-providers", Layer::Domain),
    ("promptkit-tools", Layer::Domain),
    ("promptkit-mcp", Layer::Domain),
    ("promptkit-state", Layer::Domain),
    ("promptkit-audio", Layer::Domain),
    ("promptkit-pipeline", Layer::Pipeline),
    ("promptkit-voice", Layer::Modes),
    ("promptkit", Layer::Facade),
    ("promptkit-cli", Layer::Cli),
    ("promptkit-testkit", Layer::Testkit),
    ("promptkit-e2e", Layer::EndToEnd),
    ("xtask", Layer::Xtask),
];

/// The layer of a package, if the table knows it.
fn layer_of(name: &str) -> Option<Layer> {
    LAYERS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|&(_, layer)| layer)
}

/// How one package depends on another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum DepKind {
    /// `[dependencies]`
    Normal,
    /// `[dev-dependencies]`
    Dev,
    /// `[build-dependencies]`
    Build,
}

impl fmt::Display for DepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Normal => "normal",
            Self::Dev => "dev",
            Self::Build => "build",
        })
    }
}

/// A dependency of one workspace member on another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Edge {
    /// The depending package.
    pub(crate) from: String,
    /// The package depended on.
    pub(crate) to: String,
    /// Which dependency table the edge comes from.
    pub(crate) kind: DepKind,
}

/// A package promptkit-core reaches through normal dependencies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reached {
    /// The package reached.
    pub(crate) name: String,
    /// A shortest path from promptkit-core to it, both ends included.
    pub(crate) chain: Vec<String>,
}

/// A broken rule, with a message that names the edge and the rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Violation(pub(crate) String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why domain crates and the pipeline keep to core.
const ARCH_DOMAIN_PEERS: &str = "01-architecture.md: domain crates never depend on each other";
/// Why domain crates stay below the pipeline.
const ARCH_DOMAIN_PIPELINE: &str = "01-architecture.md: domain crates never depend on the pipeline";
/// Why only the top of the graph knows every crate.
const ARCH_WIRING: &str = "01-architecture.md: only the facade and the CLI know every crate";
/// Where cross-crate tests go.
const E2E_HOME: &str = "cross-crate tests go to the promptkit-e2e crate in tests/";

/// The rule an edge breaks, or `None` if it is allowed.
fn broken_rule(from: Layer, to: Layer, kind: DepKind) -> Option<String> {
    use Layer::{Cli, Core, Domain, EndToEnd, Facade, Modes, Pipeline, Testkit, Xtask};

    // Rules for every crate, whatever the kind of the edge.
    if to == Xtask {
        return Some("no crate depends on xtask (it is project automation, not a library)".into());
    }
    if from == Xtask {
        return Some(
            "xtask depends on no workspace crate (`cargo xtask ci` must build and report while \
             the other crates are broken)"
                .into(),
        );
    }
    if from == EndToEnd {
        return None;
    }
    if to == EndToEnd {
        return Some(
            "no crate depends on promptkit-e2e (it holds the end-to-end tests, the top of the \
             graph)"
                .into(),
        );
    }
    if to == Cli {
        return Some(
            "no library crate depends on promptkit-cli (01-architecture.md: promptkit (facade) \
             <- promptkit-cli, the CLI is the top of the graph)"
                .into(),
        );
    }

    if kind == DepKind::Dev {
        // The facade and the CLI may dev-depend on anything left; anyone may on core and the testkit.
        if matches!(from, Facade | Cli) || matches!(to, Core | Testkit) {
            return None;
        }
        return match from {
            Core => Some(format!(
                "promptkit-core dev-depends only on promptkit-testkit ({E2E_HOME})"
            )),
            Domain | Pipeline => Some(format!(
                "domain crates and the pipeline dev-depend only on promptkit-core and \
                 promptkit-testkit ({E2E_HOME})"
            )),
            Testkit => Some(format!(
                "promptkit-testkit dev-depends only on promptkit-core ({E2E_HOME})"
            )),
            Modes if matches!(to, Pipeline | Domain) => None,
            Modes => Some(format!(
                "promptkit-voice dev-depends only on what it may depend on, and on \
                 promptkit-testkit ({E2E_HOME})"
            )),
            // Answered before: the facade and the CLI just above, e2e and xtask at the top.
            Facade | Cli | EndToEnd | Xtask => None,
        };
    }

    // Normal and build dependencies.
    if to == Testkit && from != Testkit {
        return Some(
            "promptkit-testkit holds publish = false test doubles: depend on it only in \
             [dev-dependencies]"
                .into(),
        );
    }
    match (from, to) {
        (Core, _) => Some(
            "promptkit-core depends on no internal crate (01-architecture.md: every crate \
             builds on core, core builds on none of them)"
                .into(),
        ),
        // What is left for the CLI (core, pipeline, domain crates, facade) is allowed; e2e
        // and xtask were answered at the top.
        (Domain | Pipeline | Testkit | Facade, Core)
        | (Facade, Domain | Pipeline | Modes)
        | (Modes, Core | Domain | Pipeline)
        | (Cli | EndToEnd | Xtask, _) => None,
        (Domain, Domain) => Some(format!(
            "domain crates depend only on promptkit-core ({ARCH_DOMAIN_PEERS})"
        )),
        (Domain, Pipeline) => Some(format!(
            "domain crates depend only on promptkit-core ({ARCH_DOMAIN_PIPELINE})"
        )),
        (Domain, _) => Some(format!(
            "domain crates depend only on promptkit-core ({ARCH_WIRING})"
        )),
        (Pipeline, _) => Some(
            "the pipeline depends only on promptkit-core (01-architecture.md: the pipeline \
             depends on core only and never names a vendor)"
                .into(),
        ),
        (Testkit, _) => Some(
            "promptkit-testkit depends only on promptkit-core (its doubles implement the \
             seams; every crate may dev-depend on it)"
                .into(),
        ),
        (Modes, _) => Some(
            "promptkit-voice depends only on promptkit-core, the pipeline and the domain crates \
             (decision 0013: the voice stages sit above the engine and below the facade)"
                .into(),
        ),
        (Facade, _) => Some(
            "the facade depends only on promptkit-core, the pipeline, the domain crates and \
             promptkit-voice (01-architecture.md: all of the above <- promptkit (facade) <- \
             promptkit-cli)"
                .into(),
        ),
    }
}

/// Checks the layering rules.
///
/// `members` are the workspace members, `edges` the dependencies between them, and
/// `core_closure` every package promptkit-core reaches through normal dependencies.
/// Returns the violations, sorted; empty means the layout is fine.
pub(crate) fn check(
    members: &[String],
    edges: &[Edge],
    core_closure: &[Reached],
) -> Vec<Violation> {
    let mut violations = BTreeSet::new();

    for member in members {
        if layer_of(member).is_none() {
            violations.insert(Violation(format!(
                "{member} is a workspace member with no layer: add it to the layering table in \
                 xtask (LAYERS in xtask/src/layering.rs)"
            )));
        }
    }

    for edge in edges {
        // An unclassified end is reported above; its edges can't be judged until it is classified.
        let (Some(from), Some(to)) = (layer_of(&edge.from), layer_of(&edge.to)) else {
            continue;
        };
        if let Some(rule) = broken_rule(from, to, edge.kind) {
            violations.insert(Violation(format!(
                "{} -> {} ({}): {rule}",
                edge.from, edge.to, edge.kind
            )));
        }
    }

    for reached in core_closure {
        if CORE_FORBIDDEN.contains(&reached.name.as_str()) {
            violations.insert(Violation(format!(
                "{} (normal, transitive): promptkit-core performs no I/O and depends on no async \
                 runtime or HTTP stack (01-architecture.md invariant); {} is forbidden in its \
                 dependency tree",
                reached.chain.join(" -> "),
                reached.name
            )));
        }
    }

    violations.into_iter().collect()
}

/// Runs the layering check and the manifest tidy checks on the workspace at `root`, printing a
/// report; `Ok(false)` means violations were found.
pub(crate) fn run(root: &Path) -> anyhow::Result<bool> {
    let graph = metadata::graph(root)?;
    let names: Vec<String> = graph
        .members
        .iter()
        .map(|member| member.name.clone())
        .collect();
    let mut problems: Vec<String> = check(&names, &graph.edges, &graph.core_closure)
        .into_iter()
        .map(|violation| violation.0)
        .collect();
    problems.extend(tidy::check_workspace(root, &graph.members)?);

    println!(
        "layering: {} workspace members, {} internal dependency edges, promptkit-core reaches {} \
         packages through normal dependencies",
        graph.members.len(),
        graph.edges.len(),
        graph.core_closure.len()
    );
    if problems.is_empty() {
        println!("layering: ok (layering rules and manifest tidy checks pass)");
        return Ok(true);
    }
    for problem in &problems {
        println!("  error: {problem}");
    }
    println!("layering: {} problem(s) found", problems.len());
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::{CORE, DepKind, Edge, LAYERS, Reached, check};

    fn members() -> Vec<String> {
        LAYERS.iter().map(|(name, _)| (*name).to_owned()).collect()
    }

    fn edge(from: &str, to: &str, kind: DepKind) -> Edge {
        Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            kind,
        }
    }

    fn normal(from: &str, to: &str) -> Edge {
        edge(from, to, DepKind::Normal)
    }

    fn dev(from: &str, to: &str) -> Edge {
        edge(from, to, DepKind::Dev)
    }

    fn reached(chain: &[&str]) -> Reached {
        Reached {
            name: (*chain.last().unwrap()).to_owned(),
            chain: chain.iter().map(|name| (*name).to_owned()).collect(),
        }
    }

    /// The layout of the workspace as the manifests declare it.
    fn current_edges() -> Vec<Edge> {
        let domain = [
            "promptkit-providers",
            "promptkit-tools",
            "promptkit-mcp",
            "promptkit-state",
            "promptkit-audio",
        ];
        let mut edges = Vec::new();
        for crate_name in
            domain
                .iter()
                .chain(&["promptkit-pipeline", "promptkit-testkit", "promptkit"])
        {
            edges.push(normal(crate_name, CORE));
        }
        for crate_name in domain.iter().chain(&["promptkit-pipeline"]) {
            edges.push(normal("promptkit", crate_name));
        }
        edges.push(normal("promptkit-cli", "promptkit"));
        edges.push(dev("promptkit-e2e", "promptkit"));
        edges.push(dev("promptkit-e2e", "promptkit-testkit"));
        edges
    }

    fn current_core_closure() -> Vec<Reached> {
        [
            "base64",
            "bytes",
            "futures-core",
            "jiff",
            "serde",
            "serde_json",
            "thiserror",
        ]
        .iter()
        .map(|dep| reached(&[CORE, dep]))
        .chain([reached(&[CORE, "serde", "serde_derive", "syn"])])
        .collect()
    }

    fn messages(edges: &[Edge]) -> Vec<String> {
        check(&members(), edges, &current_core_closure())
            .into_iter()
            .map(|violation| violation.0)
            .collect()
    }

    #[test]
    fn the_current_layout_passes() {
        assert_eq!(messages(&current_edges()), Vec::<String>::new());
    }

    #[test]
    fn the_voice_crate_sits_between_the_pipeline_and_the_facade() {
        let mut edges = current_edges();
        edges.push(normal("promptkit-voice", "promptkit-pipeline"));
        edges.push(normal("promptkit-voice", "promptkit-audio"));
        edges.push(normal("promptkit", "promptkit-voice"));
        assert_eq!(messages(&edges), Vec::<String>::new());

        let mut edges = current_edges();
        edges.push(normal("promptkit-pipeline", "promptkit-voice"));
        edges.push(normal("promptkit-audio", "promptkit-voice"));
        edges.push(normal("promptkit-voice", "promptkit"));
        let found = messages(&edges);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found.iter().any(|m| m.starts_with(
                "promptkit-voice -> promptkit (normal): \
                 promptkit-voice depends only on"
            )),
            "{found:#?}"
        );
    }

    #[test]
    fn domain_crates_do_not_depend_on_each_other() {
        let mut edges = current_edges();
        edges.push(normal("promptkit-state", "promptkit-tools"));
        assert_eq!(
            messages(&edges),
            [
                "promptkit-state -> promptkit-tools (normal): domain crates depend only on \
              promptkit-core (01-architecture.md: domain crates never depend on each other)"
            ]
        );
    }

    #[test]
    fn the_pipeline_does_not_depend_on_providers() {
        let mut edges = current_edges();
        edges.push(normal("promptkit-pipeline", "promptkit-providers"));
        let found = messages(&edges);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with(
                "promptkit-pipeline -> promptkit-providers (normal): the pipeline depends only \
                 on promptkit-core"
            ),
            "{found:#?}"
        );
    }

    #[test]
    fn build_dependencies_follow_the_normal_rules() {
        let found = messages(&[edge(
            "promptkit-tools",
            "promptkit-pipeline",
            DepKind::Build,
        )]);
        assert_eq!(
            found,
            [
                "promptkit-tools -> promptkit-pipeline (build): domain crates depend only on \
              promptkit-core (01-architecture.md: domain crates never depend on the pipeline)"
            ]
        );
    }

    #[test]
    fn core_must_not_reach_an_async_runtime() {
        let mut closure = current_core_closure();
        closure.push(reached(&[CORE, "bytes", "tokio"]));
        let found: Vec<String> = check(&members(), &current_edges(), &closure)
            .into_iter()
            .map(|violation| violation.0)
            .collect();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("promptkit-core -> bytes -> tokio (normal, transitive): "),
            "{found:#?}"
        );
        assert!(found[0].contains("no async runtime"), "{found:#?}");
    }

    #[test]
    fn core_depends_on_no_internal_crate() {
        let found = messages(&[normal(CORE, "promptkit-tools")]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("promptkit-core -> promptkit-tools (normal): promptkit-core depends on no internal crate"));
    }

    #[test]
    fn an_unclassified_member_fails() {
        let mut all = members();
        all.push("promptkit-vision".to_owned());
        let mut edges = current_edges();
        edges.push(normal("promptkit-vision", CORE));
        let found: Vec<String> = check(&all, &edges, &current_core_closure())
            .into_iter()
            .map(|violation| violation.0)
            .collect();
        assert_eq!(
            found,
            [
                "promptkit-vision is a workspace member with no layer: add it to the layering \
              table in xtask (LAYERS in xtask/src/layering.rs)"
            ]
        );
    }

    #[test]
    fn any_crate_may_dev_depend_on_the_testkit_and_core() {
        let mut edges = current_edges();
        for crate_name in members() {
            if !matches!(crate_name.as_str(), "promptkit-testkit" | "xtask") {
                edges.push(dev(&crate_name, "promptkit-testkit"));
            }
            if !matches!(crate_name.as_str(), CORE | "xtask") {
                edges.push(dev(&crate_name, CORE));
            }
        }
        assert_eq!(messages(&edges), Vec::<String>::new());
    }

    #[test]
    fn the_testkit_is_only_a_dev_dependency() {
        let found = messages(&[
            normal("promptkit-cli", "promptkit-testkit"),
            normal("promptkit-providers", "promptkit-testkit"),
        ]);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found.iter().all(|message| {
            message.contains("(normal): promptkit-testkit holds publish = false test doubles")
        }));
    }

    #[test]
    fn domain_crates_dev_depend_on_no_peer() {
        let found = messages(&[
            dev("promptkit-providers", "promptkit-tools"),
            dev("promptkit-pipeline", "promptkit-providers"),
            dev("promptkit-state", "promptkit"),
        ]);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found.iter().all(|message| message.contains("(dev): domain crates and the pipeline dev-depend only on promptkit-core and promptkit-testkit (cross-crate tests go to the promptkit-e2e crate in tests/)")));
    }

    #[test]
    fn the_facade_and_cli_are_not_below_anyone() {
        let found = messages(&[
            normal("promptkit-providers", "promptkit"),
            normal("promptkit", "promptkit-cli"),
            dev("promptkit", "promptkit-cli"),
            normal("promptkit-tools", "xtask"),
            dev("promptkit", "xtask"),
            normal("xtask", CORE),
        ]);
        assert_eq!(found.len(), 6, "{found:#?}");
    }

    #[test]
    fn the_facade_may_dev_depend_on_domain_crates_and_e2e_on_anything() {
        let found = messages(&[
            dev("promptkit", "promptkit-providers"),
            dev("promptkit-cli", "promptkit-state"),
            normal("promptkit-e2e", "promptkit-providers"),
            dev("promptkit-e2e", "promptkit-cli"),
        ]);
        assert_eq!(found, Vec::<String>::new());
    }

    /// The real workspace, through `cargo metadata`: the layout and the manifests must pass.
    #[test]
    fn the_real_workspace_passes() {
        let root = crate::workspace_root().unwrap();
        let graph = crate::metadata::graph(&root).unwrap();
        let names: Vec<String> = graph
            .members
            .iter()
            .map(|member| member.name.clone())
            .collect();
        assert!(names.iter().any(|name| name == CORE), "{names:?}");
        assert_eq!(
            check(&names, &graph.edges, &graph.core_closure),
            Vec::new(),
            "the workspace breaks the layering rules"
        );
        assert_eq!(
            crate::tidy::check_workspace(&root, &graph.members).unwrap(),
            Vec::<String>::new(),
            "the manifests break the tidy rules"
        );
    }
}
