//! Argument coercion and JSON Schema validation.
//!
//! Models often send a number as `"5"`, a boolean as `"yes"` or a single value where the
//! schema wants a one-element array. [`coerce`] fixes these top-level mistakes before
//! validation and reports each fix, so nothing is changed silently; anything it cannot fix is
//! left for validation to reject with a message the model can act on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value};

/// One fix [`coerce`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coercion {
    /// The argument.
    pub field: String,
    /// What was done, e.g. `string "5" to integer 5`.
    pub change: String,
}

fn schema_type(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t),
        // `["integer", "null"]`: the first non-null type.
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

fn coerce_scalar(value: &Value, ty: &str, schema: &Value) -> Option<Value> {
    match (value, ty) {
        (Value::String(s), "integer") => {
            let t = s.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().and_then(integral))
                .map(Value::from)
        }
        (Value::String(s), "number") => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        (Value::String(s), "boolean") => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "t" | "on" => Some(Value::Bool(true)),
            "false" | "no" | "n" | "0" | "f" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        (Value::Number(n), "boolean") => match n.as_i64() {
            Some(1) => Some(Value::Bool(true)),
            Some(0) => Some(Value::Bool(false)),
            _ => None,
        },
        (Value::String(s), "object") => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        (Value::String(s), "string") => {
            // Enum: trim, then accept a unique case-insensitive match.
            let options: Vec<&str> = schema
                .get("enum")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if options.contains(&s.as_str()) {
                return None;
            }
            let t = s.trim();
            if options.contains(&t) {
                return Some(Value::String(t.to_owned()));
            }
            let matching: Vec<&&str> = options
                .iter()
                .filter(|o| o.eq_ignore_ascii_case(t))
                .collect();
            (matching.len() == 1).then(|| Value::String((*matching[0]).to_owned()))
        }
        _ => None,
    }
}

/// `f` as an `i64` when it is a whole number inside `i64`'s range. `"1e300"` is not: a cast
/// would saturate it to `i64::MAX`, a different number from the one the model sent.
fn integral(f: f64) -> Option<i64> {
    // 2^63: `i64::MAX as f64` rounds up to it, so the upper bound is exclusive.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "whole and inside the range, checked above"
        )]
        Some(f as i64)
    } else {
        None
    }
}

fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 40 {
        format!("{}…", &text[..text.floor_char_boundary(40)])
    } else {
        text
    }
}

/// Coerces top-level arguments towards `schema`'s property types; returns the (possibly)
/// changed arguments and the fixes made.
pub fn coerce(args: &Value, schema: &Value) -> (Value, Vec<Coercion>) {
    let (Value::Object(args), Some(Value::Object(props))) = (args, schema.get("properties")) else {
        return (args.clone(), Vec::new());
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    let mut fixes = Vec::new();
    for (key, value) in args {
        let Some(prop) = props.get(key) else {
            out.insert(key.clone(), value.clone());
            continue;
        };
        let ty = schema_type(prop);
        let optional = !required.contains(&key.as_str());
        // Nulls and empty strings for optional non-string fields mean "not given".
        if optional && (value.is_null() || (value.as_str() == Some("") && ty != Some("string"))) {
            fixes.push(Coercion {
                field: key.clone(),
                change: format!("dropped empty optional value {}", describe(value)),
            });
            continue;
        }
        let fixed = match ty {
            Some("array") => match value {
                Value::Array(items) => {
                    let item_ty = prop.get("items").and_then(schema_type);
                    match item_ty {
                        Some(t) if t != "string" => {
                            let items_schema = prop.get("items").cloned().unwrap_or(Value::Null);
                            let converted: Vec<Value> = items
                                .iter()
                                .map(|i| {
                                    coerce_scalar(i, t, &items_schema).unwrap_or_else(|| i.clone())
                                })
                                .collect();
                            (converted != *items).then_some(Value::Array(converted))
                        }
                        _ => None,
                    }
                }
                Value::String(s) => match serde_json::from_str::<Value>(s) {
                    Ok(Value::Array(a)) => Some(Value::Array(a)),
                    _ => Some(Value::Array(vec![value.clone()])),
                },
                Value::Null => None,
                other => Some(Value::Array(vec![other.clone()])),
            },
            Some(t) => coerce_scalar(value, t, prop),
            None => None,
        };
        match fixed {
            Some(new) => {
                fixes.push(Coercion {
                    field: key.clone(),
                    change: format!("{} to {}", describe(value), describe(&new)),
                });
                out.insert(key.clone(), new);
            }
            None => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    (Value::Object(out), fixes)
}

/// Compiled validators, keyed by schema text, shared and bounded.
#[derive(Clone, Default)]
pub struct SchemaCache {
    inner: Arc<Mutex<HashMap<String, Arc<jsonschema::Validator>>>>,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache").finish_non_exhaustive()
    }
}

/// Most compiled schemas kept.
const CACHE_CAPACITY: usize = 256;

impl SchemaCache {
    /// The validator of `schema`.
    ///
    /// # Errors
    /// The compiler's message when `schema` is not a valid JSON Schema.
    pub fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        if let Some(v) = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(Arc::clone(v));
        }
        let compiled = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(key, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Validates `instance`; the error lists every violation with its location.
    ///
    /// # Errors
    /// A message for the model, e.g. `/city: 5 is not of type "string"`.
    pub fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        check(self.validator(schema)?.as_ref(), instance)
    }
}

/// Validates `instance` with a compiled `validator`; the error lists every violation with its
/// location, as [`SchemaCache::validate`] does.
///
/// # Errors
/// A message for the model, e.g. `/city: 5 is not of type "string"`.
pub fn check(validator: &jsonschema::Validator, instance: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["city", "days"],
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "ratio": {"type": "number"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "ids": {"type": "array", "items": {"type": "integer"}},
                "filter": {"type": "object"},
                "note": {"type": "string"},
                "limit": {"type": ["integer", "null"]}
            }
        })
    }

    #[test]
    fn fixes_common_model_mistakes_and_reports_them() {
        let args = json!({
            "city": "Oslo", "days": "5.0", "metric": "Yes", "ratio": " 0.5 ", "unit": " Celsius ",
            "tags": "rain", "ids": ["1", 2], "filter": "{\"a\":1}", "note": "", "limit": null,
            "extra": "kept"
        });
        let (fixed, fixes) = coerce(&args, &schema());
        assert_eq!(
            fixed,
            json!({
                "city": "Oslo", "days": 5, "metric": true, "ratio": 0.5, "unit": "celsius",
                "tags": ["rain"], "ids": [1, 2], "filter": {"a": 1}, "note": "", "extra": "kept"
            })
        );
        assert_eq!(fixes.len(), 8, "{fixes:?}");
        assert!(
            fixes
                .iter()
                .any(|f| f.field == "days" && f.change == "\"5.0\" to 5")
        );
        let cache = SchemaCache::default();
        cache.validate(&schema(), &fixed).unwrap();
    }

    #[test]
    fn what_cannot_be_fixed_is_left_for_validation() {
        let args = json!({"city": 5, "days": "many", "unit": "kelvin"});
        let (fixed, fixes) = coerce(&args, &schema());
        assert!(fixes.is_empty());
        let err = SchemaCache::default()
            .validate(&schema(), &fixed)
            .unwrap_err();
        assert!(err.contains("/city"), "{err}");
        assert!(err.contains("/days"), "{err}");
        assert!(err.contains("/unit"), "{err}");
        let missing = SchemaCache::default()
            .validate(&schema(), &json!({}))
            .unwrap_err();
        assert!(missing.contains("city"), "{missing}");
        assert!(
            SchemaCache::default()
                .validator(&json!({"type": 5}))
                .is_err()
        );
    }
}
