//! Gemini's schema subset: a sanitiser that turns JSON Schema into what Gemini accepts.
//!
//! Gemini's `functionDeclarations[].parameters` and `generationConfig.responseSchema` take a
//! subset of OpenAPI 3.0 schemas, and reject most of JSON Schema with a 400
//! `INVALID_ARGUMENT`: `$schema`, `additionalProperties`, `$ref`, `const`, `format: uri`,
//! integer `enum`s, type arrays and more, which tool schemas from MCP servers use freely.
//! [`sanitize_schema`] rewrites a schema into the subset, keeping its meaning where the
//! subset can express it and moving what it cannot into the description, so the model still
//! reads it.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

/// Why a schema cannot be expressed in Gemini's subset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A `$ref` that is not a local JSON pointer into the schema, or points nowhere.
    #[error("cannot resolve $ref {reference:?} (only references inside the schema are inlined)")]
    UnresolvedRef {
        /// The reference.
        reference: String,
    },
    /// A `$ref` that refers to itself, directly or through others: inlining would not end.
    #[error("recursive $ref {reference:?} cannot be inlined into Gemini's schema subset")]
    RecursiveRef {
        /// The reference found again while it was being inlined.
        reference: String,
    },
    /// The schema nests deeper than [`MAX_DEPTH`] levels.
    #[error("the schema nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The schema, with its references inlined, has more than [`MAX_NODES`] subschemas (a
    /// few references used many times each multiply: 30 levels of definitions that each
    /// use the next twice are a billion nodes).
    #[error("the schema expands to more than {MAX_NODES} subschemas once its $refs are inlined")]
    TooLarge,
}

/// How deep a schema may nest (after inlining references).
pub const MAX_DEPTH: usize = 64;

/// How many subschemas a sanitised schema may have (after inlining references): far above
/// any real tool's, and small enough that refusing a hostile one takes microseconds.
pub const MAX_NODES: usize = 10_000;

/// Keywords of Gemini's schema subset that are copied as they are.
const PLAIN: &[&str] = &[
    "title",
    "description",
    "nullable",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "propertyOrdering",
];

/// The type names Gemini knows.
const TYPES: &[&str] = &["string", "number", "integer", "boolean", "array", "object"];

/// Rewrites a JSON Schema into Gemini's schema subset.
///
/// - local `$ref`s (`#/$defs/…`, `#/definitions/…`, any JSON pointer into the schema) are
///   inlined, with their sibling keywords (a `description` next to a `$ref`) kept; recursive
///   references are a [`SchemaError::RecursiveRef`], other references a
///   [`SchemaError::UnresolvedRef`];
/// - `allOf` is merged into one schema (properties and `required` united); `oneOf` becomes
///   `anyOf`; an `anyOf` of one schema and `{"type": "null"}` becomes that schema with
///   `nullable: true`, and a one-element `anyOf` is flattened;
/// - a type array (`["string", "null"]`) becomes one type plus `nullable`, or an `anyOf`;
/// - `const` becomes a one-value string `enum`; an `enum` of non-strings is dropped;
/// - `format` is kept only where Gemini takes it (`enum` and `date-time` on strings,
///   `float`/`double` on numbers, `int32`/`int64` on integers);
/// - `required` keeps only names that are properties;
/// - every other keyword (`$schema`, `$id`, `$defs`, `additionalProperties`, `default`,
///   `examples`, `exclusiveMinimum`, `uniqueItems`, `not`, `if`/`then`/`else`, …) is
///   dropped; the meaning of a dropped `const`, `enum` or `default` is appended to the
///   description, so the model still sees it.
///
/// ```
/// use promptkit_providers::gemini::sanitize_schema;
/// use serde_json::json;
///
/// let schema = json!({
///     "$schema": "https://json-schema.org/draft/2020-12/schema",
///     "type": "object",
///     "additionalProperties": false,
///     "properties": {
///         "site": {"type": "string", "format": "uri"},
///         "mode": {"$ref": "#/$defs/mode"},
///         "limit": {"type": ["integer", "null"], "default": 10}
///     },
///     "required": ["site", "missing"],
///     "$defs": {"mode": {"enum": ["fast", "slow"]}}
/// });
/// assert_eq!(
///     sanitize_schema(&schema)?,
///     json!({
///         "type": "object",
///         "properties": {
///             "site": {"type": "string"},
///             "mode": {"type": "string", "enum": ["fast", "slow"]},
///             "limit": {"type": "integer", "nullable": true, "description": "Default: 10."}
///         },
///         "required": ["site"]
///     })
/// );
/// # Ok::<(), promptkit_providers::gemini::SchemaError>(())
/// ```
///
/// # Errors
///
/// [`SchemaError`] when a reference cannot be inlined, or the schema nests too deep or
/// expands too far.
pub fn sanitize_schema(schema: &Value) -> Result<Value, SchemaError> {
    let mut sanitizer = Sanitizer {
        root: schema,
        expanding: Vec::new(),
        nodes: 0,
    };
    sanitizer.convert(schema, 0)
}

struct Sanitizer<'a> {
    root: &'a Value,
    // References being inlined, outermost first (to detect recursion).
    expanding: Vec<String>,
    // Subschemas converted so far (bounded by `MAX_NODES`).
    nodes: usize,
}

impl Sanitizer<'_> {
    fn convert(&mut self, node: &Value, depth: usize) -> Result<Value, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError::TooDeep);
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SchemaError::TooLarge);
        }
        let Value::Object(map) = node else {
            // `true`, `false` and anything else that is not a schema object: no constraint.
            return Ok(Value::Object(Map::new()));
        };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            return self.inline(reference, map, depth);
        }
        let mut merged;
        let map = match map.get("allOf").and_then(Value::as_array) {
            Some(all) => {
                merged = map.clone();
                merged.remove("allOf");
                for sub in all {
                    if let Value::Object(sub) = self.convert(sub, depth + 1)? {
                        merge_into(&mut merged, sub);
                    }
                }
                &merged
            }
            None => map,
        };
        self.convert_object(map, depth)
    }

    fn inline(
        &mut self,
        reference: &str,
        siblings: &Map<String, Value>,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        if self.expanding.iter().any(|r| r == reference) {
            return Err(SchemaError::RecursiveRef {
                reference: reference.to_owned(),
            });
        }
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| self.root.pointer(pointer))
            .ok_or_else(|| SchemaError::UnresolvedRef {
                reference: reference.to_owned(),
            })?;
        self.expanding.push(reference.to_owned());
        let resolved = self.convert(target, depth + 1);
        self.expanding.pop();
        let mut resolved = match resolved? {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        // Keywords next to the reference (a description, nullable) refine the target.
        let mut rest = siblings.clone();
        rest.remove("$ref");
        if !rest.is_empty()
            && let Value::Object(rest) = self.convert(&Value::Object(rest), depth + 1)?
        {
            for (key, value) in rest {
                resolved.insert(key, value);
            }
        }
        Ok(Value::Object(resolved))
    }

    fn convert_object(
        &mut self,
        map: &Map<String, Value>,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        let mut out = Map::new();
        let mut notes: Vec<String> = Vec::new();

        match map.get("type") {
            Some(Value::String(t)) if t == "null" => {
                out.insert("nullable".into(), true.into());
            }
            Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {
                out.insert("type".into(), t.clone().into());
            }
            Some(Value::Array(types)) => {
                let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                if names.contains(&"null") {
                    out.insert("nullable".into(), true.into());
                }
                let real: Vec<&str> = names.into_iter().filter(|t| TYPES.contains(t)).collect();
                match real.as_slice() {
                    [] => {}
                    [one] => {
                        out.insert("type".into(), (*one).into());
                    }
                    many => {
                        let any: Vec<Value> = many.iter().map(|t| json!({"type": t})).collect();
                        out.insert("anyOf".into(), Value::Array(any));
                    }
                }
            }
            _ => {}
        }

        for key in PLAIN {
            if let Some(value) = map.get(*key) {
                out.insert((*key).to_owned(), value.clone());
            }
        }

        if let Some(Value::Object(properties)) = map.get("properties") {
            let mut converted = Map::new();
            for (name, schema) in properties {
                converted.insert(name.clone(), self.convert(schema, depth + 1)?);
            }
            if let Some(Value::Array(required)) = map.get("required") {
                let kept: Vec<Value> = required
                    .iter()
                    .filter(|r| r.as_str().is_some_and(|r| converted.contains_key(r)))
                    .cloned()
                    .collect();
                if !kept.is_empty() {
                    out.insert("required".into(), Value::Array(kept));
                }
            }
            out.insert("properties".into(), Value::Object(converted));
        }

        match map.get("items").or_else(|| map.get("prefixItems")) {
            Some(Value::Array(tuple)) => {
                let any = self.convert_all(tuple, depth)?;
                if let Some(items) = collapse_any(any, &mut out) {
                    out.insert("items".into(), items);
                }
            }
            Some(items) => {
                out.insert("items".into(), self.convert(items, depth + 1)?);
            }
            None => {}
        }

        if let Some(Value::Array(any)) = map.get("anyOf").or_else(|| map.get("oneOf")) {
            let any = self.convert_all(any, depth)?;
            if let Some(Value::Object(single)) = collapse_any(any, &mut out) {
                merge_into(&mut out, single);
            }
        }

        if let Some(value) = map.get("const") {
            match value {
                Value::String(s) => {
                    out.insert("enum".into(), json!([s]));
                }
                other => notes.push(format!("Must be {other}.")),
            }
        }
        if let Some(Value::Array(values)) = map.get("enum") {
            if values.iter().all(Value::is_string) {
                out.insert("enum".into(), Value::Array(values.clone()));
            } else {
                let listed: Vec<String> = values.iter().map(Value::to_string).collect();
                notes.push(format!("Allowed values: {}.", listed.join(", ")));
            }
        }
        if out.contains_key("enum") && !out.contains_key("type") {
            out.insert("type".into(), "string".into());
        }
        if let Some(default) = map.get("default") {
            notes.push(format!("Default: {default}."));
        }

        if let Some(format) = map.get("format").and_then(Value::as_str) {
            let allowed = match out.get("type").and_then(Value::as_str) {
                Some("string") => matches!(format, "enum" | "date-time"),
                Some("number") => matches!(format, "float" | "double"),
                Some("integer") => matches!(format, "int32" | "int64"),
                _ => false,
            };
            if allowed {
                out.insert("format".into(), format.into());
            }
        }

        if !out.contains_key("type") && !out.contains_key("anyOf") {
            if out.contains_key("properties") {
                out.insert("type".into(), "object".into());
            } else if out.contains_key("items") {
                out.insert("type".into(), "array".into());
            }
        }

        if !notes.is_empty() {
            let mut description = out
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            for note in notes {
                if !description.is_empty() {
                    description.push(' ');
                }
                let _ = write!(description, "{note}");
            }
            out.insert("description".into(), description.into());
        }
        Ok(Value::Object(out))
    }

    fn convert_all(&mut self, schemas: &[Value], depth: usize) -> Result<Vec<Value>, SchemaError> {
        schemas.iter().map(|s| self.convert(s, depth + 1)).collect()
    }
}

/// Folds `{"nullable": true}`-only alternatives (from `{"type": "null"}`) into `out` and
/// returns the single remaining alternative, if exactly one is left; otherwise stores the
/// alternatives as `anyOf` and returns `None`.
fn collapse_any(any: Vec<Value>, out: &mut Map<String, Value>) -> Option<Value> {
    let mut rest = Vec::with_capacity(any.len());
    for alternative in any {
        let only_null = alternative
            .as_object()
            .is_some_and(|m| m.len() == 1 && m.get("nullable") == Some(&Value::Bool(true)));
        if only_null {
            out.insert("nullable".into(), true.into());
        } else {
            rest.push(alternative);
        }
    }
    match rest.len() {
        0 => None,
        1 => rest.pop(),
        _ => {
            out.insert("anyOf".into(), Value::Array(rest));
            None
        }
    }
}

/// Merges `from` into `into`: properties and `required` are united, other keywords already
/// in `into` win.
fn merge_into(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (key.as_str(), into.get_mut(&key), value) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => {
                for (name, schema) in theirs {
                    mine.entry(name).or_insert(schema);
                }
            }
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                for name in theirs {
                    if !mine.contains(&name) {
                        mine.push(name);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, value) => {
                into.insert(key, value);
            }
        }
    }
}
