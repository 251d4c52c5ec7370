//! Property tests: tool-name assignment and `${VAR}` expansion on arbitrary input.

use std::collections::{BTreeMap, BTreeSet};

use promptkit_mcp::{
    MAX_TOOL_NAME_LEN, assign_names, expand_variables, qualified_name, split_qualified_name,
    validate_server_name,
};
use proptest::prelude::*;

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Server names as configurations may write them.
fn server_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]?"
        .prop_filter("a valid server name", |s| validate_server_name(s).is_ok())
}

/// Tool names a server might list: arbitrary text, and names built to collide after
/// sanitising (`a.b`, `a_b`, `a b`) or with each other's hash suffixes.
fn tool_names() -> impl Strategy<Value = Vec<String>> {
    let one = prop_oneof![
        any::<String>(),
        "[a-c._ ]{0,4}",
        "[a-c_]{0,3}_[0-9a-f]{8}",
        "[a-z]{60,90}",
    ];
    prop::collection::vec(one, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Review test 60: every assigned name is valid for every vendor, all are distinct, they
    /// route back to their server, and the same list always gets the same names.
    #[test]
    fn assigned_names_are_unique_valid_and_stable(server in server_name(), tools in tool_names()) {
        let refs: Vec<&str> = tools.iter().map(String::as_str).collect();
        let names = assign_names(&server, &refs);
        prop_assert_eq!(names.len(), tools.len());
        let distinct: BTreeSet<&String> = names.iter().collect();
        prop_assert_eq!(distinct.len(), names.len(), "{:?}", names);
        for name in &names {
            prop_assert!(valid_tool_name(name), "{}", name);
            prop_assert_eq!(split_qualified_name(name).map(|(s, _)| s), Some(server.as_str()));
        }
        prop_assert_eq!(assign_names(&server, &refs), names);
    }

    /// One name on its own is always valid too.
    #[test]
    fn qualified_names_are_valid(server in server_name(), tool in any::<String>()) {
        prop_assert!(valid_tool_name(&qualified_name(&server, &tool)));
    }

    /// Review test 61: expansion never panics; text without `$` is unchanged; a defined
    /// variable is replaced by its value.
    #[test]
    fn expansion_never_panics(
        text in prop_oneof![any::<String>(), "[$a-z{}:_-]{0,30}"],
        vars in prop::collection::btree_map("[A-Z_]{1,4}", any::<String>(), 0..4),
    ) {
        let env = |name: &str| vars.get(name).cloned();
        let expanded = expand_variables(&text, &env);
        if !text.contains('$') {
            prop_assert_eq!(expanded.as_deref(), Ok(text.as_str()));
        }
    }

    #[test]
    fn defined_variables_are_replaced(
        prefix in "[a-z ]{0,8}",
        name in "[A-Z_]{1,6}",
        value in "[^$]{1,12}",
    ) {
        let vars = BTreeMap::from([(name.clone(), value.clone())]);
        let env = |n: &str| vars.get(n).cloned();
        let text = format!("{prefix}${{{name}}}$${{{name}}}");
        prop_assert_eq!(
            expand_variables(&text, &env).unwrap(),
            format!("{prefix}{value}${{{name}}}")
        );
    }
}

proptest! {
    /// The event-stream decoder (the fuzzing entry point) never panics, and how the bytes are
    /// split into chunks never changes the events.
    #[test]
    fn sse_events_do_not_depend_on_chunking(
        bytes in prop::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), any::<u8>(),
                        Just(b'd'), Just(b'a'), Just(b't'), Just(b'e'), Just(b'v')],
            0..400,
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let whole = promptkit_mcp::decode_events_for_fuzzing([bytes.as_slice()]);
        let at = cut.index(bytes.len() + 1);
        let (a, b) = bytes.split_at(at);
        let split = promptkit_mcp::decode_events_for_fuzzing([a, b]);
        prop_assert_eq!(whole, split);
    }
}
