//! Tool names: `mcp__<server>__<tool>`.
//!
//! Models accept tool names of 1 to 64 characters from `[A-Za-z0-9_-]`, so a tool name is
//! qualified with its server and then made valid: characters outside that set become `_`, and a
//! name that is too long is cut and ends in a hash of the original name, so that it stays
//! unique and stable. Server names are validated instead of rewritten (they come from the
//! configuration, where the user can fix them): they use `[A-Za-z0-9_-]`, contain no `__`, and
//! neither start nor end with `_`, so the first `__` after the server name always ends it.

use std::collections::BTreeSet;

/// The namespace of MCP tools.
pub const NAMESPACE: &str = "mcp";

/// The separator between namespace, server and tool.
const SEPARATOR: &str = "__";

/// The longest tool name every vendor accepts.
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// The longest server name; leaves room for the tool part in [`MAX_TOOL_NAME_LEN`].
pub const MAX_SERVER_NAME_LEN: usize = 32;

/// The qualified name of `tool` on `server`: `mcp__<server>__<tool>`, made valid for every
/// vendor: characters outside `[A-Za-z0-9_-]` become `_`, and a name longer than
/// [`MAX_TOOL_NAME_LEN`] is cut and ends in a hash of the original name, so that it stays unique
/// and stable. `server` must be valid (see [`validate_server_name`]).
///
/// ```
/// use promptkit_mcp::qualified_name;
///
/// assert_eq!(qualified_name("files", "read_file"), "mcp__files__read_file");
/// assert_eq!(qualified_name("web", "fetch.url"), "mcp__web__fetch_url");
/// let long = qualified_name("web", &"x".repeat(80));
/// assert_eq!(long.len(), 64);
/// ```
pub fn qualified_name(server: &str, tool: &str) -> String {
    let prefix = format!("{NAMESPACE}{SEPARATOR}{server}{SEPARATOR}");
    let mut local: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if local.is_empty() {
        local.push('_');
    }
    let room = MAX_TOOL_NAME_LEN.saturating_sub(prefix.len());
    if local.len() > room {
        let hash = format!("{:08x}", fnv1a(tool.as_bytes()));
        // `local` is ASCII, so any cut is a character boundary.
        local.truncate(room.saturating_sub(hash.len() + 1));
        local.push('_');
        local.push_str(&hash);
    }
    prefix + &local
}

/// Splits `mcp__<server>__<tool>` into `(server, tool)`; `None` for other names.
///
/// ```
/// use promptkit_mcp::split_qualified_name;
///
/// assert_eq!(split_qualified_name("mcp__files__read_file"), Some(("files", "read_file")));
/// assert_eq!(split_qualified_name("mcp__files__a__b"), Some(("files", "a__b")));
/// assert_eq!(split_qualified_name("get_weather"), None);
/// ```
pub fn split_qualified_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(NAMESPACE)?.strip_prefix(SEPARATOR)?;
    let (server, tool) = rest.split_once(SEPARATOR)?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// Checks a server name: 1 to [`MAX_SERVER_NAME_LEN`] characters from `[A-Za-z0-9_-]`, no
/// `__`, and no `_` at either end, so that the first `__` after the server name in a qualified
/// name always ends it.
///
/// # Errors
/// What is wrong, in a sentence for the configuration's author.
pub fn validate_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("server names must not be empty".to_owned());
    }
    if name.len() > MAX_SERVER_NAME_LEN {
        return Err(format!(
            "server name `{name}` is longer than {MAX_SERVER_NAME_LEN} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "server name `{name}` contains `{c}`; use letters, digits, `_` and `-`"
        ));
    }
    if name.contains(SEPARATOR) || name.starts_with('_') || name.ends_with('_') {
        return Err(format!(
            "server name `{name}` must not contain `__` or start or end with `_`, \
             because tools are named `mcp__<server>__<tool>`"
        ));
    }
    Ok(())
}

/// Qualified names for the tools of one server, in order: [`qualified_name`] for each, and a
/// hash of the original name appended where that name is taken already (two names that differ
/// only in characters the sanitising replaces, such as `a.b` and `a_b`). Every result is
/// checked against the names given so far, so the names are always distinct, and the same
/// list always gets the same names. `server` must be valid (see [`validate_server_name`]).
///
/// ```
/// use promptkit_mcp::assign_names;
///
/// let names = assign_names("s", &["a.b", "a_b", "a b"]);
/// assert_eq!(names[0], "mcp__s__a_b");
/// assert!(names[1] != names[0] && names[2] != names[1] && names[2] != names[0]);
/// ```
pub fn assign_names(server: &str, tools: &[&str]) -> Vec<String> {
    let mut taken = BTreeSet::new();
    tools
        .iter()
        .map(|tool| {
            let base = qualified_name(server, tool);
            let mut name = base.clone();
            let mut salt = 0_u32;
            while taken.contains(&name) {
                let hash = format!("{:08x}", salted_hash(tool.as_bytes(), salt));
                let room = MAX_TOOL_NAME_LEN - hash.len() - 1;
                name = base[..base.floor_char_boundary(room.min(base.len()))].to_owned();
                name.push('_');
                name.push_str(&hash);
                salt += 1;
            }
            taken.insert(name.clone());
            name
        })
        .collect()
}

/// The FNV-1a hash of `bytes`, and for `salt > 0` of `bytes` followed by the salt: the next
/// candidate when a suffixed name is taken too.
fn salted_hash(bytes: &[u8], salt: u32) -> u32 {
    let hash = fnv1a(bytes);
    if salt == 0 {
        return hash;
    }
    salt.to_le_bytes().iter().fold(hash, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// 32-bit FNV-1a: a small hash that is the same on every platform and release.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_and_splits() {
        assert_eq!(
            qualified_name("github", "create_issue"),
            "mcp__github__create_issue"
        );
        assert_eq!(
            split_qualified_name("mcp__github__create_issue"),
            Some(("github", "create_issue"))
        );
        assert_eq!(split_qualified_name("mcp__github"), None);
        assert_eq!(split_qualified_name("mcp____x"), None);
        assert_eq!(split_qualified_name("other__a__b"), None);
        // The same tool on two servers never collides.
        assert_ne!(qualified_name("a", "search"), qualified_name("b", "search"));
    }

    #[test]
    fn sanitises_and_bounds_names() {
        assert_eq!(qualified_name("s", "get sum"), "mcp__s__get_sum");
        assert_eq!(qualified_name("s", "über"), "mcp__s___ber");
        assert_eq!(qualified_name("s", ""), "mcp__s___");
        let long = "a".repeat(100);
        let name = qualified_name("server", &long);
        assert_eq!(name.len(), MAX_TOOL_NAME_LEN);
        assert!(name.starts_with("mcp__server__aaa"));
        // Stable across calls, distinct for different long names.
        assert_eq!(name, qualified_name("server", &long));
        assert_ne!(name, qualified_name("server", &"a".repeat(101)));
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
    }

    #[test]
    fn colliding_sanitised_names_get_distinct_suffixes() {
        let names = assign_names("s", &["a.b", "a_b", "a b"]);
        assert_eq!(names[0], "mcp__s__a_b");
        assert_ne!(names[1], names[0]);
        assert_ne!(names[2], names[1]);
        assert_ne!(names[2], names[0]);
        assert!(names.iter().all(|n| n.len() <= MAX_TOOL_NAME_LEN));

        // A tool named like the suffixed name another tool would get: the suffixed name is
        // checked too, so neither entry replaces the other.
        let crafted = format!("a_b_{:08x}", fnv1a(b"a.b"));
        let names = assign_names("s", &["a_b", &crafted, "a.b"]);
        assert_eq!(names[1], format!("mcp__s__{crafted}"));
        assert_ne!(names[2], names[1]);
        assert_ne!(names[2], names[0]);
    }

    #[test]
    fn validates_server_names() {
        assert!(validate_server_name("github").is_ok());
        assert!(validate_server_name("brave-search_2").is_ok());
        assert!(validate_server_name("").is_err());
        assert!(validate_server_name("a__b").is_err());
        assert!(validate_server_name("_a").is_err());
        assert!(validate_server_name("a_").is_err());
        assert!(validate_server_name("has space").is_err());
        assert!(validate_server_name("dotted.name").is_err());
        assert!(validate_server_name(&"x".repeat(33)).is_err());
    }
}
