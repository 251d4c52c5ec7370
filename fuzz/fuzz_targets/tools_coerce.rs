//! Argument coercion of `promptkit-tools` on arbitrary JSON `[arguments, schema]`: no panic,
//! no change without a reported fix, and an integer made from a string is the number sent
//! (review test 61).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Array(pair)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let [args, schema] = pair.as_slice() else {
        return;
    };
    let (fixed, fixes) = promptkit_tools::validate::coerce(args, schema);
    if fixes.is_empty() {
        assert_eq!(&fixed, args);
    }
    if let (Value::Object(before), Value::Object(after)) = (args, &fixed) {
        for (key, value) in after {
            if schema["properties"][key]["type"].as_str() == Some("integer")
                && let (Some(n), Some(Value::String(s))) = (value.as_i64(), before.get(key))
                && let Ok(sent) = s.trim().parse::<f64>()
            {
                #[expect(clippy::cast_precision_loss, reason = "comparing magnitudes")]
                let back = n as f64;
                assert_eq!(back, sent, "{s} became {n}");
            }
        }
    }
});
