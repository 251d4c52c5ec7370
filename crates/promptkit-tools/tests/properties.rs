//! Property tests: argument coercion and tool names on arbitrary input.

use promptkit_tools::names;
use promptkit_tools::validate::{SchemaCache, coerce};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any JSON value, a few levels deep, with the strings models tend to send.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("1e300".to_owned()),
            Just("-1e19".to_owned()),
            Just("9223372036854775808".to_owned()),
            Just(" 5.0 ".to_owned()),
            Just("NaN".to_owned()),
            Just("inf".to_owned()),
            Just("{\"a\":1}".to_owned()),
            Just("[1,2]".to_owned()),
            Just("yes".to_owned()),
            any::<String>(),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A property schema of any declared type, sometimes with items or an enum.
fn property_schema() -> impl Strategy<Value = Value> {
    let ty = prop_oneof![
        Just(json!("integer")),
        Just(json!("number")),
        Just(json!("boolean")),
        Just(json!("string")),
        Just(json!("object")),
        Just(json!("array")),
        Just(json!(["integer", "null"])),
        Just(json!(["null"])),
        Just(json!(7)),
    ];
    (
        ty,
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(ty, items, options)| {
            let mut schema = Map::new();
            schema.insert("type".to_owned(), ty);
            if let Some(items) = items {
                schema.insert("items".to_owned(), items);
            }
            if let Some(options) = options {
                schema.insert("enum".to_owned(), options);
            }
            Value::Object(schema)
        })
}

fn object_schema() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map("[a-z]{1,3}", property_schema(), 0..6),
        prop::collection::vec("[a-z]{1,3}", 0..4),
    )
        .prop_map(|(props, required)| {
            json!({"type": "object", "properties": props, "required": required})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Coercion never panics, reports every change it makes, and never turns a value into an
    /// integer that is not the number that was sent.
    #[test]
    fn coerce_never_panics_and_integers_are_exact(
        args in json_value(),
        schema in prop_oneof![object_schema(), json_value()],
    ) {
        let (fixed, fixes) = coerce(&args, &schema);
        if fixes.is_empty() {
            prop_assert_eq!(&fixed, &args);
        }
        if let (Value::Object(before), Value::Object(after)) = (&args, &fixed) {
            for (key, value) in after {
                let declared = schema["properties"][key]["type"].as_str();
                if declared == Some("integer")
                    && let (Some(n), Some(Value::String(s))) = (value.as_i64(), before.get(key))
                {
                    let sent: f64 = s.trim().parse().unwrap();
                    // Exact as an integer, or the float the model wrote.
                    #[expect(clippy::cast_precision_loss, reason = "comparing magnitudes")]
                    let back = n as f64;
                    prop_assert_eq!(back, sent, "{} became {}", s, n);
                }
            }
        }
    }

    /// Validation after coercion never panics either, whatever the schema.
    #[test]
    fn validation_never_panics(args in json_value(), schema in object_schema()) {
        let (fixed, _) = coerce(&args, &schema);
        let _ = SchemaCache::default().validate(&schema, &fixed);
    }

    /// A namespace and a valid local name survive qualifying and splitting.
    #[test]
    fn qualify_and_split_round_trip(ns in "[A-Za-z0-9-]{1,20}", local in "[A-Za-z0-9_-]{1,40}") {
        let name = names::qualify(&ns, &local);
        prop_assert_eq!(names::split(&name), (Some(ns.as_str()), local.as_str()));
    }

    /// `validate` never panics, and accepts exactly the names every vendor accepts.
    #[test]
    fn validate_accepts_exactly_vendor_names(name in any::<String>()) {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        prop_assert_eq!(names::validate(&name).is_ok(), valid);
    }
}

#[test]
fn a_number_too_large_for_an_integer_is_not_saturated() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    for huge in ["1e300", "-1e300", "9223372036854775808", "1e19"] {
        let (fixed, fixes) = coerce(&json!({"n": huge}), &schema);
        assert!(fixes.is_empty(), "{huge}: {fixes:?}");
        let error = SchemaCache::default()
            .validate(&schema, &fixed)
            .unwrap_err();
        assert!(error.contains("/n"), "{huge}: {error}");
    }
    let (fixed, _) = coerce(&json!({"n": "-9223372036854775808"}), &schema);
    assert_eq!(fixed["n"], json!(i64::MIN));
    let (fixed, _) = coerce(&json!({"n": "4e3"}), &schema);
    assert_eq!(fixed["n"], json!(4000));
}
