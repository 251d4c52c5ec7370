//! Tool names, namespaces and allow-list patterns.

/// The namespace separator: `ns__tool`.
pub const SEPARATOR: &str = "__";

/// Splits `ns__tool` into `(Some("ns"), "tool")`; a name without separator has no namespace.
/// The namespace ends at the first separator, so `mcp__files__read` is `("mcp", "files__read")`.
pub fn split(name: &str) -> (Option<&str>, &str) {
    match name.split_once(SEPARATOR) {
        Some((ns, rest)) if !ns.is_empty() => (Some(ns), rest),
        _ => (None, name),
    }
}

/// Joins a namespace and a local name.
pub fn qualify(namespace: &str, local: &str) -> String {
    format!("{namespace}{SEPARATOR}{local}")
}

/// Whether `name` matches an allow-list `pattern`: exact, or a prefix when the pattern ends in
/// `*` (`mcp__files__*`, `*` for everything).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Checks that `name` is a valid tool name for every vendor: 1 to 64 characters from
/// `[A-Za-z0-9_-]`.
///
/// # Errors
/// What is wrong.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 64 {
        return Err(format!("`{name}` is longer than 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "`{name}` contains `{c}`; use letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_patterns() {
        assert_eq!(split("mcp__files__read"), (Some("mcp"), "files__read"));
        assert_eq!(split("plain"), (None, "plain"));
        assert_eq!(split("__odd"), (None, "__odd"));
        assert_eq!(qualify("mcp", "x"), "mcp__x");
        assert!(matches("mcp__files__*", "mcp__files__read"));
        assert!(!matches("mcp__files__*", "mcp__shell__run"));
        assert!(matches("*", "anything"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(validate("get_weather-2").is_ok());
        assert!(validate("has space").is_err());
        assert!(validate(&"x".repeat(65)).is_err());
    }
}
