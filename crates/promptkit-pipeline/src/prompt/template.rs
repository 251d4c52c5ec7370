//! `{{var}}` templates.

use std::collections::{BTreeMap, BTreeSet};

/// Maximum substitution passes (a variable's value may itself contain `{{other}}`).
pub const MAX_PASSES: usize = 10;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Required variables have no value (or an empty one).
    #[error("missing required variable(s): {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// Placeholders remain after substitution: variables that are neither set nor defaulted.
    #[error("unresolved placeholder(s): {}", .0.iter().map(|v| format!("{{{{{v}}}}}")).collect::<Vec<_>>().join(", "))]
    Unresolved(Vec<String>),
    /// Substitution did not settle within the pass limit (a variable refers to itself).
    #[error("template did not settle after {MAX_PASSES} passes (self-referencing variables?)")]
    TooDeep,
}

/// A rendered template and what it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text.
    pub text: String,
    /// Variables substituted at least once, sorted.
    pub used: Vec<String>,
    /// Variables provided but never used, sorted.
    pub unused: Vec<String>,
}

/// Finds `{{ name }}` placeholders: `(start, end, name)` byte ranges.
fn placeholders(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{") {
        let start = from + open;
        let Some(close) = text[start + 2..].find("}}") else {
            break;
        };
        let end = start + 2 + close + 2;
        let name = text[start + 2..end - 2].trim();
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            out.push((start, end, name));
            from = end;
        } else {
            from = start + 2;
        }
    }
    out
}

/// The variable names a template mentions, sorted and deduplicated.
pub fn variables_in(template: &str) -> Vec<String> {
    placeholders(template)
        .into_iter()
        .map(|(_, _, n)| n.to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Renders `template` with `vars`, after checking that every name in `required` has a
/// non-empty value. Substitution repeats (up to [`MAX_PASSES`]) so values can contain
/// placeholders; anything left unresolved is an error, never silently kept.
///
/// ```
/// use std::collections::BTreeMap;
/// use promptkit_pipeline::prompt::render;
///
/// let vars = BTreeMap::from([("name".to_owned(), "Ada".to_owned())]);
/// let out = render("Hello, {{ name }}!", &vars, &["name"])?;
/// assert_eq!(out.text, "Hello, Ada!");
/// assert!(render("Hi {{who}}", &vars, &[]).is_err());
/// # Ok::<(), promptkit_pipeline::prompt::TemplateError>(())
/// ```
///
/// # Errors
/// [`TemplateError`] naming the missing or unresolved variables.
pub fn render(
    template: &str,
    vars: &BTreeMap<String, String>,
    required: &[&str],
) -> Result<Rendered, TemplateError> {
    let missing: Vec<String> = required
        .iter()
        .filter(|r| vars.get(**r).is_none_or(|v| v.trim().is_empty()))
        .map(|r| (*r).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(TemplateError::MissingRequired(missing));
    }
    let mut text = template.to_owned();
    let mut used = BTreeSet::new();
    for _ in 0..MAX_PASSES {
        let found = placeholders(&text);
        if found.iter().all(|(_, _, n)| !vars.contains_key(*n)) {
            let unresolved: BTreeSet<String> =
                found.iter().map(|(_, _, n)| (*n).to_owned()).collect();
            if !unresolved.is_empty() {
                return Err(TemplateError::Unresolved(unresolved.into_iter().collect()));
            }
            let unused = vars
                .keys()
                .filter(|k| !used.contains(*k))
                .cloned()
                .collect();
            return Ok(Rendered {
                text,
                used: used.into_iter().collect(),
                unused,
            });
        }
        let mut next = String::with_capacity(text.len());
        let mut last = 0;
        for (start, end, name) in found {
            next.push_str(&text[last..start]);
            match vars.get(name) {
                Some(value) => {
                    used.insert(name.to_owned());
                    next.push_str(value);
                }
                None => next.push_str(&text[start..end]),
            }
            last = end;
        }
        next.push_str(&text[last..]);
        text = next;
    }
    Err(TemplateError::TooDeep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn substitutes_recursively_and_reports_usage() {
        let v = vars(&[
            ("greeting", "Hello {{name}}"),
            ("name", "Ada"),
            ("spare", "x"),
        ]);
        let out = render(
            "{{greeting}}, welcome to {{ place }}",
            &vars(&[("place", "Rome")]),
            &[],
        )
        .unwrap_err();
        assert_eq!(out, TemplateError::Unresolved(vec!["greeting".into()]));
        let mut all = v.clone();
        all.insert("place".into(), "Rome".into());
        let out = render("{{greeting}}, welcome to {{ place }}", &all, &[]).unwrap();
        assert_eq!(out.text, "Hello Ada, welcome to Rome");
        assert_eq!(out.used, ["greeting", "name", "place"]);
        assert_eq!(out.unused, ["spare"]);
    }

    #[test]
    fn missing_required_variables_are_named() {
        let err = render("{{a}} {{b}}", &vars(&[("a", " ")]), &["a", "b"]).unwrap_err();
        assert_eq!(
            err,
            TemplateError::MissingRequired(vec!["a".into(), "b".into()])
        );
        assert_eq!(err.to_string(), "missing required variable(s): a, b");
        let err = render("{{x}} and {{y}}", &BTreeMap::new(), &[]).unwrap_err();
        assert_eq!(err.to_string(), "unresolved placeholder(s): {{x}}, {{y}}");
    }

    #[test]
    fn self_reference_is_an_error_not_a_hang() {
        let err = render("{{a}}", &vars(&[("a", "{{a}}!")]), &[]).unwrap_err();
        assert_eq!(err, TemplateError::TooDeep);
    }

    #[test]
    fn braces_that_are_not_placeholders_are_kept() {
        let out = render(
            "json: {\"a\": {{n}}} and {{ not valid! }}",
            &vars(&[("n", "1")]),
            &[],
        )
        .unwrap();
        assert_eq!(out.text, "json: {\"a\": 1} and {{ not valid! }}");
        assert_eq!(variables_in("{{b}} {{a}} {{b}}"), ["a", "b"]);
    }
}
