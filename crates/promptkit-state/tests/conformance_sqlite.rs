//! The conformance suite on SQLite, file and in-memory.

use std::sync::Arc;

use promptkit_state::{Message, SqliteConfig, SqliteStore, StateStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_store_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("nested/state.db"))
        .await
        .unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_memory_store_passes_conformance() {
    conformance::run_all(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .append("s", Some("u"), &[conformance::rich_message("r")])
            .await
            .unwrap();
        store.close().await;
    }
    let store = SqliteStore::open_with(SqliteConfig::file(&path).with_durable(true))
        .await
        .unwrap();
    let c = store.load("s").await.unwrap().unwrap();
    assert_eq!(c.messages, vec![conformance::rich_message("r")]);
    let out = store
        .append("s", None, &[Message::user("again").with_id("r")])
        .await
        .unwrap();
    assert_eq!(out.appended, 0, "ids survive reopening");
}
