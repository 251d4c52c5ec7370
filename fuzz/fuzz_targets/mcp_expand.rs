//! `${VAR}` expansion of MCP server configurations on arbitrary text: no panic, text without
//! `$` unchanged, and an error never quotes a variable's value (review test 61).
#![no_main]

use libfuzzer_sys::fuzz_target;

const VALUE: &str = "fuzz-secret-value";

fuzz_target!(|text: &str| {
    let env = |name: &str| (name.len() % 2 == 0).then(|| VALUE.to_owned());
    match promptkit_mcp::expand_variables(text, &env) {
        Ok(out) => {
            if !text.contains('$') {
                assert_eq!(out, text);
            }
        }
        // An error may quote the text, never a value it would have expanded to.
        Err(message) => assert!(
            text.contains(VALUE) || !message.contains(VALUE),
            "{message}"
        ),
    }
});
