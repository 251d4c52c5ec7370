//! The conformance suite on a real Postgres server (`PROMPTKIT_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`). Each test uses its own schema and
//! drops it afterwards.

mod support;

use std::sync::Arc;
use std::time::Duration;

use promptkit_state::{PostgresConfig, PostgresStore, StateStore, conformance};

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
    let batch = [promptkit_state::Message::user("x").with_id("x")];
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
