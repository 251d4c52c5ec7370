//! The conformance suite on SQLite, file and in-memory.

use std::sync::Arc;
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_with_ttl_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::file(dir.path().join("state.db")).with_ttl(Duration::from_secs(60));
    conformance::run_all(Arc::new(SqliteStore::open_with(config).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_with_short_ttl_expires() {
    let ttl = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let file =
        SqliteStore::open_with(SqliteConfig::file(dir.path().join("state.db")).with_ttl(ttl))
            .await
            .unwrap();
    conformance::ttl_expiry(&file, ttl).await;
    let memory = SqliteStore::open_with(SqliteConfig::in_memory().with_ttl(ttl))
        .await
        .unwrap();
    conformance::ttl_expiry(&memory, ttl).await;
}

#[tokio::test]
async fn expired_conversations_are_swept_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let config = SqliteConfig::file(&path).with_ttl(Duration::from_millis(50));
    let store = SqliteStore::open_with(config.clone()).await.unwrap();
    // More than one sweep batch of each (a batch is 100): the sweep on open goes on until
    // none is left.
    for i in 0..250 {
        store
            .append(
                &format!("s{i}"),
                Some("u"),
                &[Message::user("x").with_id("x")],
            )
            .await
            .unwrap();
        store
            .try_lease(&format!("s{i}"), "t", Duration::from_millis(50))
            .await
            .unwrap();
    }
    store.close().await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    SqliteStore::open_with(config).await.unwrap().close().await;

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM conversations), (SELECT COUNT(*) FROM messages), \
         (SELECT COUNT(*) FROM leases)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        (0, 0, 0),
        "expired conversations, their messages and expired leases are deleted"
    );
    pool.close().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_leases_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"))
        .await
        .unwrap();
    conformance::lease_expiry(&store).await;
}
