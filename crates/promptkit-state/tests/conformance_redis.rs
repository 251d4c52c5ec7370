//! The conformance suite on a real Redis server (`PROMPTKIT_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Each test uses its own key prefix and deletes its keys.

mod support;

use std::sync::Arc;
use std::time::Duration;

use promptkit_state::{RedisConfig, RedisStore, conformance};

fn url() -> String {
    std::env::var("PROMPTKIT_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn store(base: &str, ttl: Option<Duration>) -> Option<(RedisStore, String)> {
    let url = url();
    let prefix = format!("{}:", support::unique_name(base));
    let mut config = RedisConfig::new(&url).with_key_prefix(&prefix);
    if let Some(ttl) = ttl {
        config = config.with_ttl(ttl);
    }
    match RedisStore::connect_with(config).await {
        Ok(store) => Some((store, prefix)),
        Err(e) => {
            support::unavailable("Redis", &url, &e);
            None
        }
    }
}

/// Deletes every key under `prefix` and checks none was leaked.
async fn cleanup(prefix: &str) {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_passes_conformance() {
    let Some((store, prefix)) = store("pk_conformance", None).await else {
        return;
    };
    conformance::run_all(Arc::new(store)).await;
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_with_ttl_passes_conformance_and_expires() {
    let Some((long, prefix)) = store("pk_ttl", Some(Duration::from_secs(60))).await else {
        return;
    };
    conformance::run_all(Arc::new(long)).await;
    cleanup(&prefix).await;

    let Some((store, prefix)) = store("pk_ttl_short", Some(Duration::from_millis(300))).await
    else {
        return;
    };
    // Redis expires keys with millisecond precision (`PEXPIRE`), so a short TTL works.
    conformance::ttl_expiry(&store, Duration::from_millis(300)).await;
    cleanup(&prefix).await;
}
