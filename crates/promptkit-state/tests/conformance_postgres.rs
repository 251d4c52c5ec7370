//! The conformance suite on a real Postgres server (`PROMPTKIT_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`). Each test uses its own schema and
//! drops it afterwards.

mod support;

use std::sync::Arc;
use std::time::Duration;

use promptkit_state::{Message, PostgresConfig, PostgresStore, StateStore, conformance};

fn url() -> String {
    std::env::var("PROMPTKIT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A store in a fresh schema, or `None` (skip) when the server is unavailable outside CI.
async fn store(base: &str) -> Option<(PostgresStore, String)> {
    store_with_ttl(base, None).await
}

/// Like [`store`], with an optional sliding TTL.
async fn store_with_ttl(base: &str, ttl: Option<Duration>) -> Option<(PostgresStore, String)> {
    let url = url();
    let schema = support::unique_name(base);
    let mut config = PostgresConfig::new(&url).with_schema(&schema);
    if let Some(ttl) = ttl {
        config = config.with_ttl(ttl);
    }
    match PostgresStore::connect_with(config).await {
        Ok(store) => Some((store, schema)),
        Err(e) => {
            support::unavailable("Postgres", &url, &e);
            None
        }
    }
}

async fn drop_schema(store: PostgresStore, schema: &str) {
    store.close().await;
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_passes_conformance() {
    let Some((store, schema)) = store("pk_conformance").await else {
        return;
    };
    conformance::run_all(Arc::new(store.clone())).await;
    drop_schema(store, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_with_ttl_passes_conformance() {
    let Some((store, schema)) = store_with_ttl("pk_ttl", Some(Duration::from_secs(60))).await
    else {
        return;
    };
    conformance::run_all(Arc::new(store.clone())).await;
    drop_schema(store, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_with_short_ttl_expires() {
    let ttl = Duration::from_millis(300);
    let Some((store, schema)) = store_with_ttl("pk_ttl_short", Some(ttl)).await else {
        return;
    };
    conformance::ttl_expiry(&store, ttl).await;
    drop_schema(store, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_share_one_database() {
    // Two stores model two processes: appends through both land exactly once.
    let Some((a, schema)) = store("pk_two_pools").await else {
        return;
    };
    let b = PostgresStore::connect_with(PostgresConfig::new(url()).with_schema(&schema))
        .await
        .unwrap();
    let batch = [Message::user("x").with_id("x")];
    let (ra, rb) = tokio::join!(a.append("c", None, &batch), b.append("c", None, &batch));
    assert_eq!(ra.unwrap().appended + rb.unwrap().appended, 1);
    assert_eq!(b.load("c").await.unwrap().unwrap().messages.len(), 1);
    b.close().await;
    drop_schema(a, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_leases_expire() {
    let Some((store, schema)) = store("pk_lease_ttl").await else {
        return;
    };
    conformance::lease_expiry(&store).await;
    drop_schema(store, &schema).await;
}

/// Data written before the JSON columns became text (migrations 1 and 2, JSONB) loads back
/// unchanged after the store migrates it, and then takes U+0000.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jsonb_data_survives_the_move_to_text() {
    let schema = support::unique_name("pk_jsonb");
    let admin = match sqlx::PgPool::connect(&url()).await {
        Ok(pool) => pool,
        Err(e) => return support::unavailable("Postgres", &url(), &e),
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url())
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let old = sqlx::PgPool::connect_with(options).await.unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let migrator = sqlx::migrate::Migrator::new(migrations).await.unwrap();
    migrator.run_to(2, &old).await.unwrap();
    let message = conformance::rich_message("r");
    sqlx::query(
        "INSERT INTO conversations (id, user_id, version, message_count, metadata, summaries, \
         created_at, updated_at) VALUES ('c', 'u', 1, 1, '{\"k\": [1, {\"x\": null}]}'::jsonb, \
         '[]'::jsonb, 1, 1)",
    )
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO messages (conversation_id, position, message_id, body) \
         VALUES ('c', 0, 'r', $1::jsonb)",
    )
    .bind(serde_json::to_string(&message).unwrap())
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let store = PostgresStore::connect_with(PostgresConfig::new(url()).with_schema(&schema))
        .await
        .unwrap();
    let c = store.load("c").await.unwrap().unwrap();
    assert_eq!(c.messages, vec![message], "messages survive the migration");
    assert_eq!(c.metadata["k"], serde_json::json!([1, {"x": null}]));
    let out = store
        .append("c", None, &[Message::user("\0").with_id("nul")])
        .await
        .unwrap();
    assert_eq!(out.total, 2);
    drop_schema(store, &schema).await;
    admin.close().await;
}

/// More expired conversations and leases than one sweep batch (100) are all swept when a
/// store connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_rows_are_swept_in_batches_on_connect() {
    let ttl = Duration::from_millis(50);
    let Some((store, schema)) = store_with_ttl("pk_sweep", Some(ttl)).await else {
        return;
    };
    for i in 0..250 {
        let id = format!("s{i}");
        store
            .append(&id, Some("u"), &[Message::user("x").with_id("x")])
            .await
            .unwrap();
        store.try_lease(&id, "t", ttl).await.unwrap();
    }
    tokio::time::sleep(ttl * 3).await;
    let again = PostgresStore::connect_with(
        PostgresConfig::new(url())
            .with_schema(&schema)
            .with_ttl(ttl),
    )
    .await
    .unwrap();
    let pool = sqlx::PgPool::connect_with(
        <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url())
            .unwrap()
            .options([("search_path", schema.as_str())]),
    )
    .await
    .unwrap();
    let rows: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM conversations), (SELECT COUNT(*) FROM messages), \
         (SELECT COUNT(*) FROM leases)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, (0, 0, 0), "every expired row is swept");
    pool.close().await;
    again.close().await;
    drop_schema(store, &schema).await;
}

#[test]
fn config_debug_hides_the_password() {
    let config = PostgresConfig::new("postgres://app:hunter2@db:5432/pk?password=hunter2");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("postgres://app:***@db:5432/pk?password=***"),
        "{shown}"
    );
}

#[tokio::test]
async fn store_debug_and_connect_errors_hide_the_password() {
    // The test server trusts local connections, so it accepts any password.
    let with_password = url().replacen("://postgres@", "://postgres:hunter2@", 1);
    if with_password.contains("hunter2") {
        match PostgresStore::connect(&with_password).await {
            Ok(store) => {
                let debug = format!("{store:?}");
                assert!(!debug.contains("hunter2"), "{debug}");
                store.close().await;
            }
            Err(e) => support::unavailable("Postgres", &url(), &e),
        }
    }
    // Nothing listens on port 1: connecting fails, and the error must not carry the URL's
    // password.
    let err = PostgresStore::connect_with(
        PostgresConfig::new("postgres://app:hunter2@127.0.0.1:1/pk?password=hunter2")
            .with_acquire_timeout(Duration::from_secs(2)),
    )
    .await
    .expect_err("nothing listens on port 1");
    let shown = support::shown(&err);
    assert!(!shown.contains("hunter2"), "{shown}");
}
