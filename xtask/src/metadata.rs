//! Reading `cargo metadata` into the plain data the checks work on.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::layering::{DepKind, Edge, Reached};

/// One workspace member, as `cargo metadata` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// The package name.
    pub(crate) name: String,
    /// The path of its `Cargo.toml`.
    pub(crate) manifest_path: PathBuf,
    /// The kinds of its targets (`lib`, `bin`, `proc-macro`, ...), deduplicated.
    pub(crate) target_kinds: BTreeSet<String>,
    /// `false` when the manifest says `publish = false`.
    pub(crate) publish: bool,
}

impl Member {
    /// Whether the package has a library target, the only kind of target with doc tests.
    pub(crate) fn has_lib(&self) -> bool {
        self.target_kinds.iter().any(|kind| {
            matches!(
                kind.as_str(),
                "lib" | "rlib" | "dylib" | "cdylib" | "staticlib" | "proc-macro"
            )
        })
    }
}

/// The dependency graph of the workspace, reduced to what the layering check needs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Graph {
    /// The workspace members.
    pub(crate) members: Vec<Member>,
    /// Dependencies between workspace members, one per (from, to, kind).
    pub(crate) edges: Vec<Edge>,
    /// Everything promptkit-core reaches through normal dependencies (not dev, not build).
    pub(crate) core_closure: Vec<Reached>,
}

/// The `cargo` to run: the one that started us if cargo did, else the one on `PATH`.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cargo metadata --format-version 1` with `extra` arguments and parses its output.
fn cargo_metadata(root: &Path, extra: &[&str]) -> anyhow::Result<Value> {
    let output = cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1"])
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run `cargo metadata`")?;
    if !output.status.success() {
        bail!("`cargo metadata` failed with {}", output.status);
    }
    serde_json::from_slice(&output.stdout).context("cannot parse the output of `cargo metadata`")
}

/// The workspace members, without resolving dependencies (fast, works offline).
pub(crate) fn members(root: &Path) -> anyhow::Result<Vec<Member>> {
    parse_members(&cargo_metadata(root, &["--no-deps"])?)
}

/// Where cargo puts build output (`CARGO_TARGET_DIR` and config included).
pub(crate) fn target_directory(root: &Path) -> anyhow::Result<PathBuf> {
    let metadata = cargo_metadata(root, &["--no-deps"])?;
    Ok(str_field(&metadata, "target_directory")?.into())
}

/// The resolved dependency graph with all features on, as CI builds it.
pub(crate) fn graph(root: &Path) -> anyhow::Result<Graph> {
    parse_graph(&cargo_metadata(root, &["--all-features"])?)
}

/// Reads a string field of a JSON object.
fn str_field<'a>(value: &'a Value, field: &str) -> anyhow::Result<&'a str> {
    value
        .get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("`cargo metadata`: missing string field `{field}`"))
}

/// Reads an array field of a JSON object.
fn array_field<'a>(value: &'a Value, field: &str) -> anyhow::Result<&'a [Value]> {
    value
        .get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .with_context(|| format!("`cargo metadata`: missing array field `{field}`"))
}

/// Package id to package, for every package in the metadata.
fn packages_by_id(metadata: &Value) -> anyhow::Result<HashMap<&str, &Value>> {
    array_field(metadata, "packages")?
        .iter()
        .map(|package| Ok((str_field(package, "id")?, package)))
        .collect()
}

/// The ids of the workspace members.
fn member_ids(metadata: &Value) -> anyhow::Result<Vec<&str>> {
    array_field(metadata, "workspace_members")?
        .iter()
        .map(|id| {
            id.as_str()
                .context("`cargo metadata`: a member id is not a string")
        })
        .collect()
}

/// Reads the workspace members out of `cargo metadata` output.
pub(crate) fn parse_members(metadata: &Value) -> anyhow::Result<Vec<Member>> {
    let packages = packages_by_id(metadata)?;
    member_ids(metadata)?
        .into_iter()
        .map(|id| {
            let package = packages
                .get(id)
                .with_context(|| format!("`cargo metadata`: no package with id `{id}`"))?;
            let mut target_kinds = BTreeSet::new();
            for target in array_field(package, "targets")? {
                for kind in array_field(target, "kind")? {
                    if let Some(kind) = kind.as_str() {
                        target_kinds.insert(kind.to_owned());
                    }
                }
            }
            // `publish` is null for "anywhere", a list of registries otherwise; `false` is `[]`.
            let publish = package
                .get("publish")
                .and_then(Value::as_array)
                .is_none_or(|registries| !registries.is_empty());
            Ok(Member {
                name: str_field(package, "name")?.to_owned(),
                manifest_path: PathBuf::from(str_field(package, "manifest_path")?),
                target_kinds,
                publish,
            })
        })
        .collect()
}

/// The kind of one `dep_kinds` entry: `null` is a normal dependency.
fn dep_kind(entry: &Value) -> anyhow::Result<DepKind> {
    match entry.get("kind").and_then(Value::as_str) {
        None => Ok(DepKind::Normal),
        Some("dev") => Ok(DepKind::Dev),
        Some("build") => Ok(DepKind::Build),
        Some(other) => bail!("`cargo metadata`: unknown dependency kind `{other}`"),
    }
}

/// Reads the internal edges and the normal closure of promptkit-core out of `cargo metadata`
/// output that includes `resolve`.
pub(crate) fn parse_graph(metadata: &Value) -> anyhow::Result<Graph> {
    let members = parse_members(metadata)?;
    let packages = packages_by_id(metadata)?;
    let name_of = |id: &str| -> anyhow::Result<String> {
        let package = packages
            .get(id)
            .with_context(|| format!("`cargo metadata`: no package with id `{id}`"))?;
        Ok(str_field(package, "name")?.to_owned())
    };
    let ids = member_ids(metadata)?;
    let resolve = metadata
        .get("resolve")
        .filter(|resolve| !resolve.is_null())
        .context("`cargo metadata` printed no `resolve` (was it run with --no-deps?)")?;

    // Package id -> its resolved dependencies as (dependency id, kinds).
    let mut deps: HashMap<&str, Vec<(&str, BTreeSet<DepKind>)>> = HashMap::new();
    for node in array_field(resolve, "nodes")? {
        let mut node_deps = Vec::new();
        for dep in array_field(node, "deps")? {
            let kinds = array_field(dep, "dep_kinds")?
                .iter()
                .map(dep_kind)
                .collect::<anyhow::Result<BTreeSet<_>>>()?;
            node_deps.push((str_field(dep, "pkg")?, kinds));
        }
        deps.insert(str_field(node, "id")?, node_deps);
    }

    let mut edges = Vec::new();
    for &from in &ids {
        for (to, kinds) in deps.get(from).into_iter().flatten() {
            if !ids.contains(to) {
                continue;
            }
            for &kind in kinds {
                edges.push(Edge {
                    from: name_of(from)?,
                    to: name_of(to)?,
                    kind,
                });
            }
        }
    }
    edges.sort();
    edges.dedup();

    let mut core_closure = Vec::new();
    let core_id = ids
        .iter()
        .copied()
        .find(|&id| name_of(id).is_ok_and(|name| name == crate::layering::CORE));
    if let Some(core_id) = core_id {
        // Breadth-first, so each package is reported with a shortest chain from core.
        let mut parent: HashMap<&str, &str> = HashMap::new();
        let mut queue = VecDeque::from([core_id]);
        while let Some(id) = queue.pop_front() {
            for (dep, kinds) in deps.get(id).into_iter().flatten() {
                if !kinds.contains(&DepKind::Normal) || *dep == core_id || parent.contains_key(dep)
                {
                    continue;
                }
                parent.insert(dep, id);
                queue.push_back(dep);
                let mut chain = vec![name_of(dep)?];
                let mut cursor = id;
                while cursor != core_id {
                    chain.push(name_of(cursor)?);
                    cursor = parent[cursor];
                }
                chain.push(name_of(core_id)?);
                chain.reverse();
                core_closure.push(Reached {
                    name: name_of(dep)?,
                    chain,
                });
            }
        }
    }

    Ok(Graph {
        members,
        edges,
        core_closure,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{parse_graph, parse_members};
    use crate::layering::{DepKind, Edge};

    /// A hand-written `cargo metadata` answer: core -> bytes -> tokio (normal), core -> syn
    /// (build), state -> core (normal), state -> testkit (dev), testkit -> core (normal).
    fn sample() -> serde_json::Value {
        let package = |name: &str, kind: &str, publish: serde_json::Value| {
            json!({
                "name": name,
                "id": format!("id-{name}"),
                "manifest_path": format!("/ws/{name}/Cargo.toml"),
                "targets": [{ "kind": [kind], "name": name }],
                "publish": publish,
            })
        };
        let dep = |name: &str, kinds: &[Option<&str>]| {
            json!({
                "name": name.replace('-', "_"),
                "pkg": format!("id-{name}"),
                "dep_kinds": kinds.iter().map(|kind| json!({ "kind": kind, "target": null })).collect::<Vec<_>>(),
            })
        };
        json!({
            "packages": [
                package("promptkit-core", "lib", json!(null)),
                package("promptkit-state", "lib", json!(null)),
                package("promptkit-testkit", "lib", json!([])),
                package("promptkit-cli", "bin", json!(null)),
                package("bytes", "lib", json!(null)),
                package("tokio", "lib", json!(null)),
                package("syn", "lib", json!(null)),
            ],
            "workspace_members": ["id-promptkit-core", "id-promptkit-state", "id-promptkit-testkit", "id-promptkit-cli"],
            "resolve": {
                "nodes": [
                    { "id": "id-promptkit-core", "deps": [dep("bytes", &[None]), dep("syn", &[Some("build")])] },
                    { "id": "id-bytes", "deps": [dep("tokio", &[None])] },
                    { "id": "id-tokio", "deps": [] },
                    { "id": "id-syn", "deps": [] },
                    { "id": "id-promptkit-state", "deps": [dep("promptkit-core", &[None, Some("dev")]), dep("promptkit-testkit", &[Some("dev")])] },
                    { "id": "id-promptkit-testkit", "deps": [dep("promptkit-core", &[None])] },
                    { "id": "id-promptkit-cli", "deps": [] },
                ]
            }
        })
    }

    #[test]
    fn members_carry_target_kinds_and_publish() {
        let members = parse_members(&sample()).unwrap();
        let names: Vec<_> = members.iter().map(|member| member.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "promptkit-core",
                "promptkit-state",
                "promptkit-testkit",
                "promptkit-cli"
            ]
        );
        assert!(members[0].has_lib() && members[0].publish);
        assert!(!members[2].publish);
        assert!(!members[3].has_lib());
    }

    #[test]
    fn graph_has_internal_edges_and_the_normal_closure_of_core() {
        let graph = parse_graph(&sample()).unwrap();
        let edge = |from: &str, to: &str, kind| Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            kind,
        };
        assert_eq!(
            graph.edges,
            [
                edge("promptkit-state", "promptkit-core", DepKind::Normal),
                edge("promptkit-state", "promptkit-core", DepKind::Dev),
                edge("promptkit-state", "promptkit-testkit", DepKind::Dev),
                edge("promptkit-testkit", "promptkit-core", DepKind::Normal),
            ]
        );
        let reached: Vec<_> = graph
            .core_closure
            .iter()
            .map(|reached| (reached.name.as_str(), reached.chain.join(" -> ")))
            .collect();
        assert_eq!(
            reached,
            [
                ("bytes", "promptkit-core -> bytes".to_owned()),
                ("tokio", "promptkit-core -> bytes -> tokio".to_owned()),
            ]
        );
    }

    #[test]
    fn graph_needs_resolve() {
        let mut metadata = sample();
        metadata["resolve"] = serde_json::Value::Null;
        assert!(parse_graph(&metadata).is_err());
    }
}
