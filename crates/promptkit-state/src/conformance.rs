//! A conformance suite for [`StateStore`] implementations.
//!
//! Every backend of this crate runs it, and third-party stores can too: enable the
//! `conformance` feature in `[dev-dependencies]` and call [`run_all`] from a test. Checks
//! panic with a message naming what the store got wrong, like `assert!` does.
//!
//! The suite only touches conversations whose ids start with a fresh random prefix and
//! users named after it, so it can run against a store holding other data (it does not
//! delete anything it did not create). It needs a multi-threaded tokio runtime for the
//! concurrency checks.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # {
//! use std::sync::Arc;
//! use promptkit_state::{conformance, MemoryStore};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! conformance::run_all(Arc::new(MemoryStore::new())).await;
//! # });
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use promptkit_core::{
    ContentPart, Cost, ExpectedVersion, FinishReason, ListOptions, Media, Message, ProviderData,
    Reasoning, SortOrder, StateError, StateStore, Summary, Timestamp, ToolCall, ToolResult, Usage,
};
use serde_json::{Map, Value, json};

/// Number of concurrent appenders in [`concurrent_appends`].
pub const CONCURRENT_APPENDERS: usize = 50;

/// A fresh id prefix for one check, unique across runs and processes.
fn prefix(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = Timestamp::now().as_unix_nanos();
    format!("cf-{check}-{}-{nanos:x}-{n}", std::process::id())
}

/// A message carrying every kind of data the core types have: reasoning with a signature,
/// text, media references and inline bytes, tool calls with provider data, usage, cost,
/// finish reason, timestamps and nested metadata.
pub fn rich_message(id: &str) -> Message {
    let mut m = Message::assistant("rich ✓ \u{1F600}").with_id(id);
    m.content.push(ContentPart::Image(
        Media::url("https://example.com/cat.png").with_mime_type("image/png"),
    ));
    m.content.push(ContentPart::Audio(Media::storage(
        "blob://abc",
        "audio/wav",
    )));
    m.content.push(ContentPart::Document(Media::bytes(
        vec![0_u8, 1, 2, 255],
        "application/pdf",
    )));
    let mut call = ToolCall::new("call-1", "lookup", json!({"q": "weather", "n": 3}));
    call.provider_data = ProviderData::new().with("thought_signature", "opaque==");
    m.tool_calls.push(call);
    m.content.insert(
        0,
        ContentPart::Reasoning(Reasoning {
            text: Some("thinking".to_owned()),
            redacted: false,
            provider_data: ProviderData::new().with("signature", "sig=="),
        }),
    );
    m.usage = Some(Usage {
        output_tokens: Some(12),
        ..Usage::default()
    });
    m.cost = Some(Cost {
        input_usd: 0.001,
        output_usd: 0.002,
        total_usd: 0.003,
        ..Cost::default()
    });
    m.finish_reason = Some(FinishReason::ToolCalls);
    m.metadata.insert(
        "source".to_owned(),
        json!({"nested": [1, 2.5, null, "x", [], {}]}),
    );
    m.created_at = Timestamp::from_unix_millis(1_700_000_000_123).ok();
    m.latency_ms = Some(42);
    m
}

fn tool_message(id: &str) -> Message {
    let mut m = Message::new(promptkit_core::Role::Tool).with_id(id);
    m.tool_result = Some(Box::new(ToolResult::text("call-1", "lookup", "sunny")));
    m
}

fn numbered(prefix: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message::user(format!("message {i}")).with_id(format!("{prefix}-m{i}")))
        .collect()
}

/// Runs every check in sequence.
pub async fn run_all(store: Arc<dyn StateStore>) {
    let s = store.as_ref();
    missing_conversation(s).await;
    invalid_ids(s).await;
    save_and_load_round_trip(s).await;
    save_versions(s).await;
    append_creates_and_is_idempotent(s).await;
    load_recent(s).await;
    fork_copies_everything(s).await;
    delete(s).await;
    list_by_user_with_pagination(s).await;
    metadata_merge(s).await;
    summaries(s).await;
    concurrent_appends(Arc::clone(&store)).await;
    concurrent_saves(Arc::clone(&store)).await;
    nul_and_odd_values(s).await;
    append_if_checks_versions(s).await;
    concurrent_append_if(Arc::clone(&store)).await;
    leases_are_exclusive(s).await;
    concurrent_leases(store).await;
}

/// A missing conversation loads as `None`; deleting it reports `false`.
pub async fn missing_conversation(store: &dyn StateStore) {
    let id = prefix("missing");
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "missing loads as None"
    );
    assert!(
        store
            .load_recent(&id, 3)
            .await
            .expect("load_recent")
            .is_none(),
        "missing load_recent is None"
    );
    assert!(
        !store.delete(&id).await.expect("delete"),
        "delete of missing is false"
    );
    let err = store
        .add_summary(&id, &summary(0, 1))
        .await
        .expect_err("add_summary on missing fails");
    assert!(
        matches!(err, StateError::NotFound { .. }),
        "add_summary: {err:?}"
    );
}

/// Ids a store must refuse with [`StateError::InvalidId`] before touching the backend:
/// empty, over 256 bytes, and holding a control character (U+0000, a newline, the C1 control U+0085).
fn bad_ids() -> Vec<String> {
    vec![
        String::new(),
        "a\nb".to_owned(),
        "a\0b".to_owned(),
        "a\u{85}b".to_owned(),
        "x".repeat(257),
    ]
}

/// Every operation that takes a conversation id refuses an unusable one
/// ([`StateError::InvalidId`]) and writes nothing; an id of exactly 256 bytes and one of
/// non-ASCII text are usable.
pub async fn invalid_ids(store: &dyn StateStore) {
    #[expect(
        clippy::needless_pass_by_value,
        reason = "each call hands over the result of one store call"
    )]
    fn check<T: std::fmt::Debug>(what: &str, bad: &str, result: Result<T, StateError>) {
        assert!(
            matches!(result, Err(StateError::InvalidId { .. })),
            "{what}({bad:?}) must be refused as an invalid id: {result:?}"
        );
    }
    let good = prefix("bad-ids-source");
    store
        .append(&good, None, &numbered(&good, 1))
        .await
        .expect("append");
    let mut entries = Map::new();
    entries.insert("k".to_owned(), json!(1));
    for bad in bad_ids() {
        let bad = bad.as_str();
        check("load", bad, store.load(bad).await);
        check("load_recent", bad, store.load_recent(bad, 1).await);
        check("append", bad, store.append(bad, None, &[]).await);
        check(
            "append_if",
            bad,
            store
                .append_if(bad, None, &numbered(&good, 1), ExpectedVersion::New)
                .await,
        );
        check(
            "save",
            bad,
            store
                .save(
                    &promptkit_core::Conversation::new(bad),
                    ExpectedVersion::Any,
                )
                .await,
        );
        check(
            "fork (source)",
            bad,
            store.fork(bad, &format!("{good}-f")).await,
        );
        check("fork (target)", bad, store.fork(&good, bad).await);
        check("delete", bad, store.delete(bad).await);
        check(
            "merge_metadata",
            bad,
            store.merge_metadata(bad, &entries).await,
        );
        check(
            "add_summary",
            bad,
            store.add_summary(bad, &summary(0, 1)).await,
        );
        check(
            "try_lease",
            bad,
            store
                .try_lease(bad, "token", std::time::Duration::from_secs(1))
                .await,
        );
        check(
            "release_lease",
            bad,
            store.release_lease(bad, "token").await,
        );
    }
    assert!(
        store
            .load(&format!("{good}-f"))
            .await
            .expect("load")
            .is_none(),
        "a refused fork created nothing"
    );
    let source = store.load(&good).await.expect("load").expect("stored");
    assert_eq!(source.version, 1, "refused calls did not touch the source");

    let base = prefix("ids");
    let longest = format!("{base}{}", "é".repeat((256 - base.len()) / 2));
    let longest = format!("{longest}{}", "z".repeat(256 - longest.len()));
    assert_eq!(longest.len(), 256);
    for id in [longest.as_str(), &format!("{base}-会話-🙂")] {
        let out = store
            .append(id, None, &numbered(&base, 1))
            .await
            .unwrap_or_else(|e| panic!("append to usable id {id:?}: {e:?}"));
        assert_eq!(out.total, 1);
        let loaded = store.load(id).await.expect("load").expect("stored");
        assert_eq!(loaded.id, id, "the id round-trips");
        assert!(store.delete(id).await.expect("delete"));
    }
    store.delete(&good).await.expect("cleanup");
}

/// A saved conversation loads back equal in everything it carries.
pub async fn save_and_load_round_trip(store: &dyn StateStore) {
    let id = prefix("roundtrip");
    let mut c = promptkit_core::Conversation::new(&id).with_user(format!("{id}-user"));
    c.messages.push(Message::system("be brief").with_id("s"));
    c.messages.push(Message::user("hello"));
    c.messages.push(rich_message("rich"));
    c.messages.push(tool_message("tool"));
    c.metadata.insert("k".to_owned(), json!({"deep": [true]}));
    c.summaries.push(summary(0, 1));
    let v = store
        .save(&c, ExpectedVersion::New)
        .await
        .expect("save new");
    assert_eq!(v, 1, "first save gives version 1");
    let loaded = store.load(&id).await.expect("load").expect("saved exists");
    assert_eq!(loaded.messages, c.messages, "messages round-trip exactly");
    assert_eq!(loaded.metadata, c.metadata, "metadata round-trips");
    assert_eq!(loaded.summaries, c.summaries, "summaries round-trip");
    assert_eq!(loaded.user_id, c.user_id, "owner round-trips");
    assert_eq!(loaded.version, 1, "loaded version");
    assert!(
        loaded.created_at.is_some() && loaded.updated_at.is_some(),
        "timestamps set"
    );
    store.delete(&id).await.expect("cleanup");
}

/// `save` enforces the expected version and keeps `created_at`.
pub async fn save_versions(store: &dyn StateStore) {
    let id = prefix("versions");
    let mut c = promptkit_core::Conversation::new(&id);
    assert_eq!(store.save(&c, ExpectedVersion::New).await.expect("new"), 1);
    let created = store
        .load(&id)
        .await
        .expect("load")
        .expect("exists")
        .created_at;
    let err = store
        .save(&c, ExpectedVersion::New)
        .await
        .expect_err("second New");
    assert!(
        matches!(err, StateError::Conflict { actual: 1, .. }),
        "New on existing conflicts: {err:?}"
    );
    c.messages.push(Message::user("x").with_id("x"));
    assert_eq!(
        store
            .save(&c, ExpectedVersion::Exact(1))
            .await
            .expect("exact"),
        2
    );
    let err = store
        .save(&c, ExpectedVersion::Exact(1))
        .await
        .expect_err("stale");
    assert!(
        matches!(
            err,
            StateError::Conflict {
                actual: 2,
                expected: ExpectedVersion::Exact(1),
                ..
            }
        ),
        "stale writer conflicts: {err:?}"
    );
    let after = store.load(&id).await.expect("load").expect("exists");
    assert_eq!(after.messages.len(), 1, "failed save wrote nothing");
    assert_eq!(after.created_at, created, "created_at is kept");
    assert_eq!(store.save(&c, ExpectedVersion::Any).await.expect("any"), 3);
    let missing = prefix("versions-missing");
    let err = store
        .save(
            &promptkit_core::Conversation::new(&missing),
            ExpectedVersion::Exact(4),
        )
        .await
        .expect_err("exact on missing");
    assert!(
        matches!(err, StateError::Conflict { actual: 0, .. }),
        "{err:?}"
    );
    let mut dup = promptkit_core::Conversation::new(&missing);
    dup.messages = vec![
        Message::user("a").with_id("d"),
        Message::user("b").with_id("d"),
    ];
    assert!(
        store.save(&dup, ExpectedVersion::Any).await.is_err(),
        "duplicate ids rejected"
    );
    assert!(
        store.load(&missing).await.expect("load").is_none(),
        "nothing stored"
    );
    store.delete(&id).await.expect("cleanup");
}

/// `append` creates the conversation, skips ids already stored (also within one batch) and
/// always appends messages without an id.
pub async fn append_creates_and_is_idempotent(store: &dyn StateStore) {
    let id = prefix("append");
    let user = format!("{id}-user");
    let batch = numbered(&id, 3);
    let out = store
        .append(&id, Some(&user), &batch)
        .await
        .expect("append");
    assert_eq!((out.appended, out.total), (3, 3), "first append: {out:?}");
    let v1 = out.version;
    assert!(v1 >= 1, "append bumps the version");
    let retry = store.append(&id, Some(&user), &batch).await.expect("retry");
    assert_eq!(
        (retry.appended, retry.total),
        (0, 3),
        "retry is a no-op: {retry:?}"
    );
    let mut more = numbered(&id, 5);
    more.push(more[4].clone());
    more.push(Message::user("no id"));
    more.push(rich_message(&format!("{id}-rich")));
    let out = store.append(&id, None, &more).await.expect("append more");
    assert_eq!(
        (out.appended, out.total),
        (4, 7),
        "partial duplicates: {out:?}"
    );
    assert!(out.version > v1, "version grows");
    let c = store.load(&id).await.expect("load").expect("exists");
    assert_eq!(
        c.user_id.as_deref(),
        Some(user.as_str()),
        "append sets owner on create"
    );
    let texts: Vec<String> = c.messages.iter().map(Message::text).collect();
    assert_eq!(
        texts,
        [
            "message 0",
            "message 1",
            "message 2",
            "message 3",
            "message 4",
            "no id",
            "rich ✓ \u{1F600}"
        ],
        "append order"
    );
    assert_eq!(
        c.messages[6],
        rich_message(&format!("{id}-rich")),
        "rich message intact"
    );
    assert_eq!(c.version, out.version, "load sees append's version");
    let empty = store.append(&id, None, &[]).await.expect("empty append");
    assert_eq!(
        (empty.appended, empty.total, empty.version),
        (0, 7, out.version)
    );
    let fresh = prefix("append-empty");
    let created = store
        .append(&fresh, None, &[])
        .await
        .expect("create by append");
    assert_eq!((created.appended, created.total), (0, 0));
    assert!(
        store.load(&fresh).await.expect("load").is_some(),
        "empty append creates"
    );
    store.delete(&id).await.expect("cleanup");
    store.delete(&fresh).await.expect("cleanup");
}

/// `load_recent` keeps the `n` newest messages and everything else.
pub async fn load_recent(store: &dyn StateStore) {
    let id = prefix("recent");
    store
        .append(&id, None, &numbered(&id, 10))
        .await
        .expect("append");
    store
        .add_summary(&id, &summary(0, 5))
        .await
        .expect("summary");
    let mut meta = Map::new();
    meta.insert("a".to_owned(), json!(1));
    store.merge_metadata(&id, &meta).await.expect("meta");
    let c = store
        .load_recent(&id, 3)
        .await
        .expect("load")
        .expect("exists");
    let texts: Vec<String> = c.messages.iter().map(Message::text).collect();
    assert_eq!(
        texts,
        ["message 7", "message 8", "message 9"],
        "newest three, in order"
    );
    assert_eq!(c.summaries.len(), 1, "summaries complete");
    assert_eq!(c.metadata.get("a"), Some(&json!(1)), "metadata complete");
    let all = store
        .load_recent(&id, 100)
        .await
        .expect("load")
        .expect("exists");
    assert_eq!(all.messages.len(), 10, "n above count gives all");
    let none = store
        .load_recent(&id, 0)
        .await
        .expect("load")
        .expect("exists");
    assert!(none.messages.is_empty(), "n = 0 gives none");
    store.delete(&id).await.expect("cleanup");
}

/// `fork` copies messages, summaries, metadata and owner, and refuses missing sources and
/// existing targets. The copy is independent of the source.
pub async fn fork_copies_everything(store: &dyn StateStore) {
    let id = prefix("fork");
    let user = format!("{id}-user");
    let mut msgs = numbered(&id, 2);
    msgs.push(rich_message("rich"));
    store.append(&id, Some(&user), &msgs).await.expect("append");
    store
        .add_summary(&id, &summary(0, 1))
        .await
        .expect("summary");
    let mut meta = Map::new();
    meta.insert("topic".to_owned(), json!("cats"));
    store.merge_metadata(&id, &meta).await.expect("meta");
    let copy_id = format!("{id}-copy");
    let forked = store.fork(&id, &copy_id).await.expect("fork");
    assert_eq!(forked.id, copy_id);
    let loaded = store
        .load(&copy_id)
        .await
        .expect("load")
        .expect("fork stored");
    let source = store.load(&id).await.expect("load").expect("source");
    assert_eq!(loaded.messages, source.messages, "messages copied");
    assert_eq!(loaded.summaries, source.summaries, "summaries copied");
    assert_eq!(loaded.metadata, source.metadata, "metadata copied");
    assert_eq!(
        loaded.user_id.as_deref(),
        Some(user.as_str()),
        "owner copied"
    );
    assert_eq!(
        forked.messages, loaded.messages,
        "returned copy matches stored"
    );
    store
        .append(
            &copy_id,
            None,
            &[Message::user("only in fork").with_id("f1")],
        )
        .await
        .expect("append to fork");
    let source_after = store.load(&id).await.expect("load").expect("source");
    assert_eq!(
        source_after.messages.len(),
        3,
        "source unaffected by fork writes"
    );
    let err = store.fork(&id, &copy_id).await.expect_err("target exists");
    assert!(matches!(err, StateError::AlreadyExists { .. }), "{err:?}");
    let err = store
        .fork(&format!("{id}-nope"), &format!("{id}-x"))
        .await
        .expect_err("source missing");
    assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");
    store.delete(&id).await.expect("cleanup");
    store.delete(&copy_id).await.expect("cleanup");
}

/// `delete` removes everything; a later append starts afresh.
pub async fn delete(store: &dyn StateStore) {
    let id = prefix("delete");
    store
        .append(&id, None, &numbered(&id, 2))
        .await
        .expect("append");
    assert!(
        store.delete(&id).await.expect("delete"),
        "existing delete is true"
    );
    assert!(store.load(&id).await.expect("load").is_none(), "gone");
    assert!(
        !store.delete(&id).await.expect("delete"),
        "second delete is false"
    );
    let out = store
        .append(&id, None, &numbered(&id, 1))
        .await
        .expect("re-append");
    assert_eq!(
        (out.appended, out.total),
        (1, 1),
        "old ids forgotten: {out:?}"
    );
    store.delete(&id).await.expect("cleanup");
}

/// `list` filters by user, pages, counts and sorts.
pub async fn list_by_user_with_pagination(store: &dyn StateStore) {
    let base = prefix("list");
    let user = format!("{base}-user");
    let other = format!("{base}-other");
    let ids: Vec<String> = (0..5).map(|i| format!("{base}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .append(id, Some(&user), &numbered(id, i + 1))
            .await
            .expect("append");
        // Distinct update times (stores may keep millisecond precision).
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    store
        .append(&format!("{base}-x"), Some(&other), &[])
        .await
        .expect("other user");

    let mut options = ListOptions::for_user(&user);
    options.limit = 2;
    let mut seen = Vec::new();
    loop {
        let page = store.list(&options).await.expect("list");
        assert_eq!(page.total, 5, "total counts all pages");
        if page.items.is_empty() {
            break;
        }
        assert!(page.items.len() <= 2, "page size honoured");
        seen.extend(page.items);
        options.offset += 2;
    }
    let listed: Vec<&str> = seen.iter().map(|i| i.id.as_str()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(
        listed, newest_first,
        "default order is most recently updated first"
    );
    assert_eq!(seen[0].message_count, 5, "message counts");
    assert!(
        seen.iter()
            .all(|i| i.user_id.as_deref() == Some(user.as_str()))
    );

    let mut asc = ListOptions::for_user(&user);
    asc.order = SortOrder::CreatedAsc;
    let page = store.list(&asc).await.expect("list");
    let listed: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        listed,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "created asc"
    );

    // Touching the oldest makes it the most recently updated.
    store
        .append(&ids[0], None, &[Message::user("bump").with_id("bump")])
        .await
        .expect("bump");
    let page = store
        .list(&ListOptions::for_user(&user))
        .await
        .expect("list");
    assert_eq!(page.items[0].id, ids[0], "updated order follows writes");

    let none = store
        .list(&ListOptions::for_user(format!("{base}-nobody")))
        .await
        .expect("list");
    assert_eq!((none.items.len(), none.total), (0, 0));
    for id in ids.iter().chain(std::iter::once(&format!("{base}-x"))) {
        store.delete(id).await.expect("cleanup");
    }
}

/// `merge_metadata` overwrites present keys, removes `null` ones and creates the
/// conversation if needed.
pub async fn metadata_merge(store: &dyn StateStore) {
    let id = prefix("meta");
    let entries: Map<String, Value> =
        serde_json::from_value(json!({"a": 1, "b": {"c": [1, 2]}, "d": "x"})).expect("map");
    let v1 = store
        .merge_metadata(&id, &entries)
        .await
        .expect("merge creates");
    let patch: Map<String, Value> =
        serde_json::from_value(json!({"a": 2, "d": null, "e": true})).expect("map");
    let v2 = store.merge_metadata(&id, &patch).await.expect("merge");
    assert!(v2 > v1, "merge bumps the version");
    let c = store.load(&id).await.expect("load").expect("exists");
    let expected: Map<String, Value> =
        serde_json::from_value(json!({"a": 2, "b": {"c": [1, 2]}, "e": true})).expect("map");
    assert_eq!(c.metadata, expected, "merged metadata");
    assert_eq!(c.version, v2);
    store.delete(&id).await.expect("cleanup");
}

/// Summaries are appended in order and bump the version.
pub async fn summaries(store: &dyn StateStore) {
    let id = prefix("summaries");
    let out = store
        .append(&id, None, &numbered(&id, 4))
        .await
        .expect("append");
    let v1 = store
        .add_summary(&id, &summary(0, 2))
        .await
        .expect("summary");
    assert!(v1 > out.version);
    let v2 = store
        .add_summary(&id, &summary(2, 4))
        .await
        .expect("summary");
    assert!(v2 > v1);
    let c = store.load(&id).await.expect("load").expect("exists");
    assert_eq!(c.summaries, vec![summary(0, 2), summary(2, 4)]);
    assert_eq!(c.messages.len(), 4, "summaries do not remove messages");
    store.delete(&id).await.expect("cleanup");
}

/// [`CONCURRENT_APPENDERS`] tasks append to one conversation at once, each twice (a retry):
/// every message lands exactly once.
pub async fn concurrent_appends(store: Arc<dyn StateStore>) {
    let id = prefix("concurrent");
    let mut tasks = Vec::new();
    for i in 0..CONCURRENT_APPENDERS {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let batch = [
                Message::user(format!("task {i} a")).with_id(format!("t{i}-a")),
                Message::assistant(format!("task {i} b")).with_id(format!("t{i}-b")),
            ];
            let first = store.append(&id, Some("concurrent-user"), &batch).await?;
            let retry = store.append(&id, Some("concurrent-user"), &batch).await?;
            Ok::<_, StateError>((first.appended, retry.appended))
        }));
    }
    let mut appended = 0;
    for task in tasks {
        let (first, retry) = task.await.expect("task panicked").expect("append failed");
        assert_eq!((first, retry), (2, 0), "each batch lands once");
        appended += first;
    }
    assert_eq!(appended, 2 * CONCURRENT_APPENDERS);
    let c = store.load(&id).await.expect("load").expect("exists");
    assert_eq!(
        c.messages.len(),
        2 * CONCURRENT_APPENDERS,
        "nothing lost or duplicated"
    );
    let mut ids: Vec<&str> = c.messages.iter().filter_map(|m| m.id.as_deref()).collect();
    for i in 0..CONCURRENT_APPENDERS {
        let a = ids
            .iter()
            .position(|x| *x == format!("t{i}-a"))
            .expect("a stored");
        let b = ids
            .iter()
            .position(|x| *x == format!("t{i}-b"))
            .expect("b stored");
        assert_eq!(b, a + 1, "a batch stays contiguous");
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2 * CONCURRENT_APPENDERS, "no duplicates");
    store.delete(&id).await.expect("cleanup");
}

/// Two writers save from the same version at once: exactly one wins, the other gets a
/// typed conflict and its data is not stored.
pub async fn concurrent_saves(store: Arc<dyn StateStore>) {
    let id = prefix("race");
    let base = store
        .append(&id, None, &[Message::user("base").with_id("base")])
        .await;
    let version = base.expect("append").version;
    let mut tasks = Vec::new();
    for writer in 0..2 {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = store.load(&id).await?.expect("exists");
            c.messages
                .push(Message::user(format!("writer {writer}")).with_id(format!("w{writer}")));
            store
                .save(&c, ExpectedVersion::Exact(version))
                .await
                .map(|v| (writer, v))
        }));
    }
    let mut wins = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(win) => wins.push(win),
            Err(StateError::Conflict { .. }) => conflicts += 1,
            Err(other) => panic!("unexpected save error: {other:?}"),
        }
    }
    assert_eq!((wins.len(), conflicts), (1, 1), "exactly one writer wins");
    let (winner, new_version) = wins[0];
    let c = store.load(&id).await.expect("load").expect("exists");
    assert_eq!(c.version, new_version);
    let texts: Vec<String> = c.messages.iter().map(Message::text).collect();
    assert_eq!(
        texts,
        ["base".to_owned(), format!("writer {winner}")],
        "winner's data only"
    );
    store.delete(&id).await.expect("cleanup");
}

/// For stores built with a sliding time-to-live of `ttl` (short, for example 300 ms; the
/// check sleeps about four times `ttl`): a live conversation loads; reads within `ttl` keep
/// it alive past `ttl` (the expiry slides); a conversation idle for longer than `ttl` is gone
/// from `load`, `load_recent`, `list`, `fork` and `delete`, and a write onto it starts a
/// fresh one (`ExpectedVersion::New` succeeds, `Exact(n)` conflicts with actual version 0,
/// old message ids and metadata are forgotten).
///
/// Not part of [`run_all`]: stores without a TTL, or with a long one, skip it.
pub async fn ttl_expiry(store: &dyn StateStore, ttl: std::time::Duration) {
    let base = prefix("ttl");
    let user = format!("{base}-user");
    let kept = format!("{base}-kept");
    let idle: Vec<String> = (0..6).map(|i| format!("{base}-idle{i}")).collect();
    store
        .append(&kept, Some(&user), &numbered(&kept, 2))
        .await
        .expect("append");
    for id in &idle {
        store
            .append(id, Some(&user), &numbered(id, 2))
            .await
            .expect("append");
        let mut meta = Map::new();
        meta.insert("old".to_owned(), json!(true));
        store.merge_metadata(id, &meta).await.expect("meta");
    }
    assert!(
        store.load(&kept).await.expect("load").is_some(),
        "a live conversation loads"
    );
    let listed = store
        .list(&ListOptions::for_user(&user))
        .await
        .expect("list");
    assert_eq!(listed.total, 7, "live conversations are listed");

    // Read `kept` every half TTL for two TTLs: it stays alive, the idle ones expire.
    for _ in 0..4 {
        tokio::time::sleep(ttl / 2).await;
        assert!(
            store.load(&kept).await.expect("load").is_some(),
            "a read within the TTL slides the expiry"
        );
    }
    let listed = store
        .list(&ListOptions::for_user(&user))
        .await
        .expect("list");
    let ids: Vec<&str> = listed.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        (listed.total, ids),
        (1, vec![kept.as_str()]),
        "expired conversations leave the listing"
    );

    let [gone, saved_new, saved_exact, appended, merged, forked] = idle.as_slice() else {
        unreachable!("six idle conversations");
    };
    assert!(
        store.load(gone).await.expect("load").is_none(),
        "idle past the TTL loads as None"
    );
    assert!(
        store.load_recent(gone, 1).await.expect("load").is_none(),
        "idle past the TTL: load_recent is None"
    );
    assert!(
        !store.delete(gone).await.expect("delete"),
        "deleting an expired conversation reports false"
    );
    let err = store
        .add_summary(gone, &summary(0, 1))
        .await
        .expect_err("add_summary on expired");
    assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");

    let fresh = promptkit_core::Conversation::new(saved_new.as_str());
    assert_eq!(
        store
            .save(&fresh, ExpectedVersion::New)
            .await
            .expect("New onto expired"),
        1,
        "save New onto an expired conversation starts at version 1"
    );
    let err = store
        .save(
            &promptkit_core::Conversation::new(saved_exact.as_str()),
            ExpectedVersion::Exact(3),
        )
        .await
        .expect_err("Exact onto expired");
    assert!(
        matches!(err, StateError::Conflict { actual: 0, .. }),
        "Exact onto an expired conversation conflicts with 0: {err:?}"
    );

    let out = store
        .append(appended, None, &numbered(appended, 3))
        .await
        .expect("append onto expired");
    assert_eq!(
        (out.appended, out.total, out.version),
        (3, 3, 1),
        "append onto an expired conversation starts afresh: {out:?}"
    );
    let c = store
        .load(appended)
        .await
        .expect("load")
        .expect("re-created");
    assert!(c.metadata.is_empty(), "old metadata forgotten");
    assert_eq!(c.user_id, None, "old owner forgotten");

    let mut meta = Map::new();
    meta.insert("new".to_owned(), json!(1));
    assert_eq!(
        store.merge_metadata(merged, &meta).await.expect("merge"),
        1,
        "merge onto an expired conversation starts at version 1"
    );
    let c = store.load(merged).await.expect("load").expect("re-created");
    assert_eq!(c.metadata, meta, "only the new metadata");
    assert!(c.messages.is_empty(), "old messages forgotten");

    let err = store
        .fork(forked, &format!("{base}-copy"))
        .await
        .expect_err("fork of expired");
    assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");

    // Now leave everything idle: all of it expires.
    tokio::time::sleep(ttl + ttl / 2).await;
    assert!(
        store.load(&kept).await.expect("load").is_none(),
        "idle past the TTL after sliding expires"
    );
    let listed = store
        .list(&ListOptions::for_user(&user))
        .await
        .expect("list");
    assert_eq!(listed.total, 0, "nothing left for the user");
    for id in std::iter::once(&kept).chain(&idle) {
        store.delete(id).await.expect("cleanup");
    }
}

/// Review test 47: U+0000 in message text, a tool result, metadata keys and values and a
/// summary is stored and loaded back exactly, through `append`, `save`, `merge_metadata`,
/// `add_summary`, `load_recent` and `fork`. A user id with U+0000 or of 10 KiB, and a message
/// id with U+0000, are refused with [`StateError::InvalidValue`] before anything is written.
pub async fn nul_and_odd_values(store: &dyn StateStore) {
    let id = prefix("nul");
    let mut text = Message::user("before \0 after \0\0 end").with_id(format!("{id}-text"));
    text.metadata
        .insert("k\0ey".to_owned(), json!({"v": "x\0y", "list": ["\0"]}));
    let mut tool = Message::new(promptkit_core::Role::Tool).with_id(format!("{id}-tool"));
    tool.tool_result = Some(Box::new(ToolResult::text(
        "call-\0",
        "binary",
        "\0\u{1}\u{7f} raw bytes",
    )));
    let batch = [text, tool];
    let out = store
        .append(&id, Some(&format!("{id}-user")), &batch)
        .await
        .expect("append with U+0000 in the text");
    assert_eq!(out.appended, 2, "both messages stored: {out:?}");
    let mut entries = Map::new();
    entries.insert("meta\0key".to_owned(), json!("va\0lue"));
    store
        .merge_metadata(&id, &entries)
        .await
        .expect("merge metadata with U+0000");
    let mut nul_summary = summary(0, 1);
    nul_summary.content = "sum\0mary".to_owned();
    store
        .add_summary(&id, &nul_summary)
        .await
        .expect("add a summary with U+0000");
    let loaded = store.load(&id).await.expect("load").expect("stored");
    assert_eq!(loaded.messages, batch, "U+0000 round-trips in messages");
    assert_eq!(loaded.metadata, entries, "U+0000 round-trips in metadata");
    assert_eq!(
        loaded.summaries,
        vec![nul_summary],
        "U+0000 round-trips in summaries"
    );
    let recent = store.load_recent(&id, 1).await.expect("load_recent");
    assert_eq!(
        recent.expect("stored").messages,
        batch[1..],
        "U+0000 round-trips through load_recent"
    );
    let copy_id = format!("{id}-copy");
    let copy = store.fork(&id, &copy_id).await.expect("fork");
    assert_eq!(copy.messages, batch, "U+0000 round-trips through fork");
    let mut saved = loaded.clone();
    saved
        .messages
        .push(Message::assistant("\0").with_id("saved"));
    let version = store
        .save(&saved, ExpectedVersion::Exact(loaded.version))
        .await
        .expect("save with U+0000");
    let reloaded = store.load(&id).await.expect("load").expect("stored");
    assert_eq!(
        reloaded.messages, saved.messages,
        "U+0000 round-trips through save"
    );
    assert_eq!(reloaded.version, version);

    let fresh = prefix("nul-refused");
    let ten_kib = "u".repeat(10 * 1024);
    for bad_user in ["user\0id", ten_kib.as_str()] {
        let err = store
            .append(&fresh, Some(bad_user), &numbered(&fresh, 1))
            .await
            .expect_err("an unstorable user id is refused");
        assert!(
            matches!(
                err,
                StateError::InvalidValue {
                    what: "user id",
                    ..
                }
            ),
            "append with a bad user id: {err:?}"
        );
        let c = promptkit_core::Conversation::new(&fresh).with_user(bad_user);
        let err = store
            .save(&c, ExpectedVersion::Any)
            .await
            .expect_err("an unstorable owner is refused");
        assert!(
            matches!(err, StateError::InvalidValue { .. }),
            "save with a bad owner: {err:?}"
        );
        let page = store
            .list(&ListOptions::for_user(bad_user))
            .await
            .expect("listing an impossible owner is an empty page");
        assert_eq!((page.items.len(), page.total), (0, 0));
    }
    let err = store
        .append(&fresh, None, &[Message::user("x").with_id("m\0")])
        .await
        .expect_err("an unstorable message id is refused");
    assert!(
        matches!(
            err,
            StateError::InvalidValue {
                what: "message id",
                ..
            }
        ),
        "append with a bad message id: {err:?}"
    );
    assert!(
        store.load(&fresh).await.expect("load").is_none(),
        "nothing was written by refused calls"
    );
    store.delete(&id).await.expect("cleanup");
    store.delete(&copy_id).await.expect("cleanup");
}

/// `append_if` appends only onto the expected version: `New` needs absence, `Exact(v)` the
/// stored version (0 for absence), `Any` always; a conflict names the stored version and
/// writes nothing (not even the conversation).
pub async fn append_if_checks_versions(store: &dyn StateStore) {
    let id = prefix("append-if");
    let user = format!("{id}-user");
    let batch = numbered(&id, 4);
    let first = store
        .append_if(&id, Some(&user), &batch[..1], ExpectedVersion::New)
        .await
        .expect("New on a missing conversation");
    assert_eq!((first.appended, first.total), (1, 1), "{first:?}");
    let err = store
        .append_if(&id, None, &batch[1..2], ExpectedVersion::New)
        .await
        .expect_err("New on an existing conversation");
    assert!(
        matches!(err, StateError::Conflict { expected: ExpectedVersion::New, actual, .. } if actual == first.version),
        "New conflicts with the stored version: {err:?}"
    );
    let second = store
        .append_if(
            &id,
            None,
            &batch[1..2],
            ExpectedVersion::Exact(first.version),
        )
        .await
        .expect("Exact with the right version");
    assert_eq!((second.appended, second.total), (1, 2), "{second:?}");
    assert!(second.version > first.version, "the version grows");
    let err = store
        .append_if(
            &id,
            None,
            &batch[2..3],
            ExpectedVersion::Exact(first.version),
        )
        .await
        .expect_err("Exact with a stale version");
    assert!(
        matches!(err, StateError::Conflict { actual, .. } if actual == second.version),
        "a stale version conflicts: {err:?}"
    );
    let replay = store
        .append_if(
            &id,
            None,
            &batch[..2],
            ExpectedVersion::Exact(second.version),
        )
        .await
        .expect("a replayed batch with the right version");
    assert_eq!(
        (replay.appended, replay.version),
        (0, second.version),
        "a batch of stored ids changes nothing"
    );
    let any = store
        .append_if(&id, None, &batch[2..], ExpectedVersion::Any)
        .await
        .expect("Any");
    assert_eq!((any.appended, any.total), (2, 4), "{any:?}");
    let c = store.load(&id).await.expect("load").expect("stored");
    assert_eq!(
        c.messages, batch,
        "only accepted batches were stored, in order"
    );
    assert_eq!(
        c.user_id.as_deref(),
        Some(user.as_str()),
        "New sets the owner"
    );
    assert_eq!(c.version, any.version);

    let missing = prefix("append-if-missing");
    let err = store
        .append_if(&missing, None, &batch, ExpectedVersion::Exact(3))
        .await
        .expect_err("Exact(3) on a missing conversation");
    assert!(
        matches!(err, StateError::Conflict { actual: 0, .. }),
        "a missing conversation has version 0: {err:?}"
    );
    assert!(
        store.load(&missing).await.expect("load").is_none(),
        "a conflict creates nothing"
    );
    let zero = store
        .append_if(&missing, None, &batch[..1], ExpectedVersion::Exact(0))
        .await
        .expect("Exact(0) on a missing conversation");
    assert_eq!(zero.total, 1);
    store.delete(&id).await.expect("cleanup");
    store.delete(&missing).await.expect("cleanup");
}

/// Number of concurrent writers in [`concurrent_append_if`] and [`concurrent_leases`].
pub const CONCURRENT_CONTENDERS: usize = 16;

/// [`CONCURRENT_CONTENDERS`] tasks `append_if` onto the same version at once: exactly one
/// lands, every other gets a conflict, and the history holds the winner's batch only.
pub async fn concurrent_append_if(store: Arc<dyn StateStore>) {
    let id = prefix("append-if-race");
    let base = store
        .append(&id, None, &[Message::user("base").with_id("base")])
        .await
        .expect("append");
    let mut tasks = Vec::new();
    for i in 0..CONCURRENT_CONTENDERS {
        let store = Arc::clone(&store);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let batch = [
                Message::user(format!("turn {i}")).with_id(format!("u{i}")),
                Message::assistant(format!("answer {i}")).with_id(format!("a{i}")),
            ];
            store
                .append_if(&id, None, &batch, ExpectedVersion::Exact(base.version))
                .await
                .map(|_| i)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(i) => winners.push(i),
            Err(StateError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected append_if error: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one append_if wins: {winners:?}");
    let c = store.load(&id).await.expect("load").expect("stored");
    let texts: Vec<String> = c.messages.iter().map(Message::text).collect();
    let w = winners[0];
    assert_eq!(
        texts,
        [
            "base".to_owned(),
            format!("turn {w}"),
            format!("answer {w}")
        ],
        "only the winner's turn is stored"
    );
    store.delete(&id).await.expect("cleanup");
}

/// Leases: exclusive between tokens, renewable by the holder, a release by a non-holder is
/// a no-op, a release by the holder frees it, a lease needs no conversation (and creates
/// none), and bad ids or tokens are refused.
pub async fn leases_are_exclusive(store: &dyn StateStore) {
    let id = prefix("lease");
    let ttl = std::time::Duration::from_secs(30);
    assert!(
        store.try_lease(&id, "a", ttl).await.expect("lease"),
        "a free lease is taken"
    );
    assert!(
        !store.try_lease(&id, "b", ttl).await.expect("lease"),
        "another token is refused while it is held"
    );
    assert!(
        store.try_lease(&id, "a", ttl).await.expect("lease"),
        "the holder renews"
    );
    store.release_lease(&id, "b").await.expect("release");
    assert!(
        !store.try_lease(&id, "b", ttl).await.expect("lease"),
        "a release by a non-holder is a no-op"
    );
    let other = format!("{id}-other");
    assert!(
        store.try_lease(&other, "b", ttl).await.expect("lease"),
        "leases on other conversations are independent"
    );
    assert!(
        store.load(&id).await.expect("load").is_none(),
        "a lease creates no conversation"
    );
    store.release_lease(&id, "a").await.expect("release");
    assert!(
        store.try_lease(&id, "b", ttl).await.expect("lease"),
        "a released lease is free"
    );
    store.release_lease(&id, "b").await.expect("release");
    store
        .release_lease(&id, "b")
        .await
        .expect("a second release is a no-op");
    store.release_lease(&other, "b").await.expect("release");
    let forever = format!("{id}-forever");
    assert!(
        store
            .try_lease(&forever, "a", std::time::Duration::MAX)
            .await
            .expect("a lease of Duration::MAX is taken, not an overflow or a backend error"),
        "a huge ttl is taken"
    );
    assert!(
        !store.try_lease(&forever, "b", ttl).await.expect("lease"),
        "and held"
    );
    store.release_lease(&forever, "a").await.expect("release");
    assert!(
        store.try_lease(&forever, "b", ttl).await.expect("lease"),
        "and released"
    );
    store.release_lease(&forever, "b").await.expect("release");
    for (bad_id, token) in [
        ("", "t"),
        ("a\nb", "t"),
        (id.as_str(), ""),
        (id.as_str(), "t\0"),
    ] {
        let err = store
            .try_lease(bad_id, token, ttl)
            .await
            .expect_err("bad lease arguments");
        assert!(
            matches!(err, StateError::InvalidId { .. }),
            "try_lease({bad_id:?}, {token:?}): {err:?}"
        );
    }
}

/// [`CONCURRENT_CONTENDERS`] tasks call `try_lease` on one conversation at once with their
/// own tokens, over several rounds (a fresh lease, then the same one after a release):
/// each round has exactly one winner.
pub async fn concurrent_leases(store: Arc<dyn StateStore>) {
    let id = prefix("lease-race");
    for round in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..CONCURRENT_CONTENDERS {
            let store = Arc::clone(&store);
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let token = format!("r{round}-t{i}");
                let won = store
                    .try_lease(&id, &token, std::time::Duration::from_secs(30))
                    .await?;
                Ok::<_, StateError>(won.then_some(token))
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(token) = task.await.expect("task panicked").expect("try_lease") {
                winners.push(token);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one winner: {winners:?}"
        );
        store
            .release_lease(&id, &winners[0])
            .await
            .expect("release");
    }
}

/// Lease timing, for every store (not part of [`run_all`] because it sleeps about three
/// seconds): a lease expires after its ttl and is then free for another token; a renewal
/// by the holder pushes the expiry to now + ttl; an expired lease released by its old
/// holder stays with its new one. On a machine too slow to keep the windows (over half a
/// second late), the check starts over, up to three times.
pub async fn lease_expiry(store: &dyn StateStore) {
    use std::time::{Duration, Instant};
    let ttl = Duration::from_millis(1500);
    for _attempt in 0..3 {
        let id = prefix("lease-ttl");
        assert!(store.try_lease(&id, "a", ttl).await.expect("lease"));
        // The first lease expires at most `ttl` after this instant.
        let taken = Instant::now();
        tokio::time::sleep(Duration::from_millis(750)).await;
        let renewing = Instant::now();
        assert!(
            store.try_lease(&id, "a", ttl).await.expect("renew"),
            "the holder renews"
        );
        let renewed = Instant::now();
        // Past the first expiry, before the renewed one (at least `renewing + ttl`).
        tokio::time::sleep_until((taken + ttl + Duration::from_millis(100)).into()).await;
        let refused = !store.try_lease(&id, "b", ttl).await.expect("lease");
        if renewing.elapsed() >= ttl {
            continue; // Too late to tell: the renewed lease may have expired meanwhile.
        }
        assert!(refused, "a renewal pushes the expiry out");
        tokio::time::sleep_until((renewed + ttl + Duration::from_millis(300)).into()).await;
        assert!(
            store.try_lease(&id, "b", ttl).await.expect("lease"),
            "an expired lease is free for another token"
        );
        store.release_lease(&id, "a").await.expect("release");
        assert!(
            !store.try_lease(&id, "c", ttl).await.expect("lease"),
            "the old holder's release does not free the new holder's lease"
        );
        store.release_lease(&id, "b").await.expect("release");
        return;
    }
    panic!("the machine was too slow for the lease timing check three times in a row");
}

fn summary(start: u64, end: u64) -> Summary {
    Summary {
        start_index: start,
        end_index: end,
        content: format!("summary of {start}..{end}"),
        token_count: Some(7),
        created_at: Timestamp::from_unix_millis(1_700_000_000_000)
            .unwrap_or_else(|_| Timestamp::now()),
    }
}
