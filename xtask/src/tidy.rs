//! Manifest tidy checks (style.md §3, conventions 3 and 4), run with the layering check.
//!
//! - Every member's `Cargo.toml` has `[lints] workspace = true`, so `[workspace.lints]` is the
//!   one lint policy.
//! - Members declare internal normal and build dependencies with `workspace = true`, so the path
//!   and version live once, in the root `[workspace.dependencies]`.
//! - Every internal path dependency in `[workspace.dependencies]` carries a `version` (crates.io
//!   needs one), except for `publish = false` crates.
//!
//! The manifests are read with a deliberately small line-based reader that understands the
//! shapes Cargo.toml files use (tables, dotted keys, one-line inline tables); it is not a TOML
//! parser.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;

use crate::metadata::Member;

/// One `key = value` line, with the table it sits in.
#[derive(Debug)]
struct Entry<'a> {
    /// 1-based line number.
    line: usize,
    /// 1-based line number of the enclosing table header (0 before any header).
    table_line: usize,
    /// The segments of the enclosing table header, quotes removed (`["target", "cfg(unix)", "dependencies"]`).
    table: Vec<String>,
    /// The segments of the key, quotes removed.
    key: Vec<String>,
    /// The raw value, comment removed.
    value: &'a str,
}

/// Cuts a trailing `#` comment, ignoring `#` inside strings.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (index, ch) in line.char_indices() {
        match (quote, ch) {
            (None, '"' | '\'') => quote = Some(ch),
            (Some(open), _) if ch == open => quote = None,
            (None, '#') => return &line[..index],
            _ => {}
        }
    }
    line
}

/// Splits `text` on `separator` outside strings, brackets and braces.
fn split_top_level(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote = None;
    let mut depth = 0_i32;
    let mut start = 0;
    for (index, ch) in text.char_indices() {
        match (quote, ch) {
            (None, '"' | '\'') => quote = Some(ch),
            (Some(open), _) if ch == open => quote = None,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, _) if ch == separator && depth == 0 => {
                parts.push(&text[start..index]);
                start = index + ch.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Splits a dotted key or table name into unquoted segments.
fn segments(dotted: &str) -> Vec<String> {
    split_top_level(dotted, '.')
        .into_iter()
        .map(|segment| segment.trim().trim_matches(['"', '\'']).to_owned())
        .collect()
}

/// Every `key = value` line of a manifest.
fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut table = Vec::new();
    let mut table_line = 0;
    let mut found = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.starts_with('[') {
            table = segments(line.trim_start_matches('[').trim_end_matches(']'));
            table_line = index + 1;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        found.push(Entry {
            line: index + 1,
            table_line,
            table: table.clone(),
            key: segments(key),
            value: value.trim(),
        });
    }
    found
}

/// The fields of a dependency value: `{ path = "x", version = "1" }` or a bare version string.
fn inline_fields(value: &str) -> BTreeMap<String, String> {
    let Some(inner) = value
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
    else {
        return BTreeMap::from([("version".to_owned(), value.to_owned())]);
    };
    split_top_level(inner, ',')
        .into_iter()
        .filter_map(|field| field.split_once('='))
        .map(|(key, value)| (segments(key).join("."), value.trim().to_owned()))
        .collect()
}

/// A dependency declaration gathered from however many lines it spans.
#[derive(Debug, Default)]
struct Declaration {
    /// The line it starts on.
    line: usize,
    /// The dependency table it is in, for messages (`dependencies`, `target.x.build-dependencies`).
    table: String,
    /// Its fields (`workspace`, `path`, `version`, `package`, ...), raw values.
    fields: BTreeMap<String, String>,
}

impl Declaration {
    /// The package the declaration names: `package = "..."` if renamed, else the key.
    fn package<'a>(&'a self, key: &'a str) -> &'a str {
        self.fields
            .get("package")
            .map_or(key, |package| package.trim_matches(['"', '\'']))
    }

    /// Whether the declaration inherits from `[workspace.dependencies]`.
    fn inherits(&self) -> bool {
        self.fields.get("workspace").map(String::as_str) == Some("true")
    }
}

/// Groups the entries of dependency tables into declarations, keyed by (table, dependency key).
///
/// `table_kind` recognises the tables of interest: it gets the header segments and answers with
/// the length of the dependency-table prefix (so `[dependencies.foo]` is the declaration of `foo`
/// in `[dependencies]`), or `None` to skip the table.
fn declarations(
    entries: &[Entry<'_>],
    table_kind: impl Fn(&[String]) -> Option<usize>,
) -> BTreeMap<(String, String), Declaration> {
    let mut found: BTreeMap<(String, String), Declaration> = BTreeMap::new();
    for entry in entries {
        let Some(prefix) = table_kind(&entry.table) else {
            continue;
        };
        let table = entry.table[..prefix].join(".");
        // `[dependencies.foo]` + `key = value`, or `[dependencies]` + `foo.key = value` / `foo = value`.
        let (dep, field, line) = match &entry.table[prefix..] {
            [dep] => (dep.clone(), Some(entry.key.join(".")), entry.table_line),
            [] => match entry.key.split_first() {
                Some((dep, [])) => (dep.clone(), None, entry.line),
                Some((dep, rest)) => (dep.clone(), Some(rest.join(".")), entry.line),
                None => continue,
            },
            _ => continue,
        };
        let declaration = found
            .entry((table.clone(), dep))
            .or_insert_with(|| Declaration {
                line,
                table,
                fields: BTreeMap::new(),
            });
        match field {
            Some(field) => {
                declaration.fields.insert(field, entry.value.to_owned());
            }
            None => declaration.fields.extend(inline_fields(entry.value)),
        }
    }
    found
}

/// The prefix length of a normal or build dependency table of a member manifest
/// (`dependencies`, `build-dependencies`, `target.<cfg>.dependencies`, ...), else `None`.
fn normal_or_build_table(table: &[String]) -> Option<usize> {
    let is_dep_table = |name: &str| {
        matches!(
            name,
            "dependencies" | "build-dependencies" | "build_dependencies"
        )
    };
    match table {
        [first, ..] if is_dep_table(first) => Some(1),
        [target, _, third, ..] if target == "target" && is_dep_table(third) => Some(3),
        _ => None,
    }
}

/// Checks one member manifest; `internal` are the workspace members' names.
pub(crate) fn check_member_manifest(display: &str, text: &str, internal: &[&str]) -> Vec<String> {
    let entries = entries(text);
    let mut problems = Vec::new();

    let inherits_lints = entries.iter().any(|entry| {
        let key = entry.key.join(".");
        let value = entry.value.replace(' ', "");
        match entry.table.as_slice() {
            [lints] if lints == "lints" => key == "workspace" && value == "true",
            [] => {
                (key == "lints.workspace" && value == "true")
                    || (key == "lints" && value.contains("workspace=true"))
            }
            _ => false,
        }
    });
    if !inherits_lints {
        problems.push(format!(
            "{display}: no `[lints] workspace = true` (style.md §3.4: [workspace.lints] is the \
             single lint policy, every member inherits it)"
        ));
    }

    for ((_, key), declaration) in declarations(&entries, normal_or_build_table) {
        let package = declaration.package(&key);
        if internal.contains(&package) && !declaration.inherits() {
            problems.push(format!(
                "{display}:{}: internal dependency `{package}` in [{}] is not declared with \
                 `workspace = true` (style.md §3.3: internal crates are listed once in the root \
                 [workspace.dependencies] with path + version)",
                declaration.line, declaration.table
            ));
        }
    }
    problems
}

/// Checks the root manifest: every path dependency in `[workspace.dependencies]` has a version,
/// unless it names one of the `unpublished` (publish = false) crates.
pub(crate) fn check_root_manifest(display: &str, text: &str, unpublished: &[&str]) -> Vec<String> {
    let workspace_dependencies = |table: &[String]| match table {
        [workspace, dependencies, ..]
            if workspace == "workspace" && dependencies == "dependencies" =>
        {
            Some(2)
        }
        _ => None,
    };
    let mut problems = Vec::new();
    for ((_, key), declaration) in declarations(&entries(text), workspace_dependencies) {
        let package = declaration.package(&key);
        let has = |field: &str| declaration.fields.contains_key(field);
        if has("path") && !has("version") && !unpublished.contains(&package) {
            problems.push(format!(
                "{display}:{}: [workspace.dependencies] entry `{key}` has a path but no version \
                 (style.md §3.3: internal crates carry path + version so they can be published; \
                 only publish = false crates may omit it)",
                declaration.line
            ));
        }
    }
    problems
}

/// Runs every tidy check on the workspace at `root` with these `members`.
pub(crate) fn check_workspace(root: &Path, members: &[Member]) -> anyhow::Result<Vec<String>> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let display = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let internal: Vec<&str> = members.iter().map(|member| member.name.as_str()).collect();
    let unpublished: Vec<&str> = members
        .iter()
        .filter(|member| !member.publish)
        .map(|member| member.name.as_str())
        .collect();

    let root_manifest = root.join("Cargo.toml");
    let mut problems = check_root_manifest(
        &display(&root_manifest),
        &read(&root_manifest)?,
        &unpublished,
    );
    for member in members {
        problems.extend(check_member_manifest(
            &display(&member.manifest_path),
            &read(&member.manifest_path)?,
            &internal,
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::{check_member_manifest, check_root_manifest};

    const INTERNAL: &[&str] = &["promptkit-core", "promptkit-tools", "promptkit-testkit"];

    #[test]
    fn a_tidy_member_passes() {
        let manifest = r#"
[package]
name = "promptkit-tools"
version.workspace = true

[dependencies]
promptkit-core.workspace = true # the seams
serde = { workspace = true, features = ["derive"] }

[target.'cfg(unix)'.dependencies]
promptkit-core = { workspace = true, optional = true }

[dev-dependencies]
promptkit-testkit = { path = "../promptkit-testkit" }

[lints]
workspace = true
"#;
        assert_eq!(
            check_member_manifest("tools/Cargo.toml", manifest, INTERNAL),
            Vec::<String>::new()
        );
    }

    #[test]
    fn lints_must_be_inherited() {
        let manifest = "[package]\nname = \"x\"\n\n[lints.clippy]\nall = \"warn\"\n";
        let problems = check_member_manifest("x/Cargo.toml", manifest, INTERNAL);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("x/Cargo.toml: no `[lints] workspace = true`"));
        assert!(
            check_member_manifest("x/Cargo.toml", "lints.workspace = true\n", INTERNAL).is_empty()
        );
        assert!(
            check_member_manifest("x/Cargo.toml", "lints = { workspace = true }\n", INTERNAL)
                .is_empty()
        );
    }

    #[test]
    fn internal_dependencies_must_inherit() {
        let manifest = r#"
[dependencies]
promptkit-core = { path = "../promptkit-core", version = "0.1" }
tools = { package = "promptkit-tools", path = "../promptkit-tools" }
serde = "1"

[build-dependencies.promptkit-core]
path = "../promptkit-core"

[lints]
workspace = true
"#;
        let problems = check_member_manifest("x/Cargo.toml", manifest, INTERNAL);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with(
            "x/Cargo.toml:7: internal dependency `promptkit-core` in [build-dependencies] is not \
             declared with `workspace = true`"
        ));
        assert!(
            problems[1].starts_with(
                "x/Cargo.toml:3: internal dependency `promptkit-core` in [dependencies]"
            )
        );
        assert!(problems[2].starts_with(
            "x/Cargo.toml:4: internal dependency `promptkit-tools` in [dependencies]"
        ));
    }

    #[test]
    fn root_path_dependencies_need_a_version_unless_unpublished() {
        let manifest = r#"
[workspace.dependencies]
promptkit-core = { path = "crates/promptkit-core", version = "=0.1.0" }
promptkit-tools = { path = "crates/promptkit-tools" } # forgot the version
promptkit-testkit = { path = "crates/promptkit-testkit" }
serde = { version = "1", features = ["derive"] }

[workspace.dependencies.promptkit-state]
path = "crates/promptkit-state"
"#;
        let problems = check_root_manifest("Cargo.toml", manifest, &["promptkit-testkit"]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("Cargo.toml:8: [workspace.dependencies] entry `promptkit-state` has a path but no version"));
        assert!(problems[1].starts_with("Cargo.toml:4: [workspace.dependencies] entry `promptkit-tools` has a path but no version"));
    }
}
