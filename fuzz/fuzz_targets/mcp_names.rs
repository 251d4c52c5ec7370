//! MCP tool-name assignment on arbitrary listed names: every name valid for every vendor,
//! all distinct, routed back to their server (review test 60).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|tools: Vec<String>| {
    let refs: Vec<&str> = tools.iter().map(String::as_str).collect();
    let names = promptkit_mcp::assign_names("srv", &refs);
    assert_eq!(names.len(), tools.len());
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    for name in &names {
        assert!(
            !name.is_empty() && name.len() <= promptkit_mcp::MAX_TOOL_NAME_LEN,
            "{name}"
        );
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{name}"
        );
        assert_eq!(
            promptkit_mcp::split_qualified_name(name).map(|(server, _)| server),
            Some("srv"),
            "{name}"
        );
    }
});
