//! The conformance suite and store-specific behaviour of the memory store.

use std::sync::Arc;
use std::time::Duration;

use promptkit_state::{ListOptions, MemoryConfig, MemoryStore, Message, StateStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_conformance() {
    conformance::run_all(Arc::new(MemoryStore::new())).await;
    conformance::run_all(Arc::new(
        MemoryStore::with_config(MemoryConfig::unbounded()),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_memory_store_passes_conformance() {
    let config = MemoryConfig::default()
        .with_max_entries(1000)
        .with_ttl(Duration::from_secs(60));
    conformance::run_all(Arc::new(MemoryStore::with_config(config))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_with_short_ttl_expires() {
    let ttl = Duration::from_millis(300);
    let store = MemoryStore::with_config(MemoryConfig::default().with_ttl(ttl));
    conformance::ttl_expiry(&store, ttl).await;
}

#[tokio::test]
async fn ttl_is_sliding() {
    let store =
        MemoryStore::with_config(MemoryConfig::default().with_ttl(Duration::from_millis(200)));
    store
        .append("a", None, &[Message::user("x")])
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            store.load("a").await.unwrap().is_some(),
            "reads refresh the TTL"
        );
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        store.load("a").await.unwrap().is_none(),
        "idle past the TTL expires"
    );
    assert!(store.is_empty());
    let out = store
        .append("a", None, &[Message::user("y")])
        .await
        .unwrap();
    assert_eq!(out.total, 1, "an expired conversation starts afresh");
}

#[tokio::test]
async fn lru_eviction_keeps_recently_used() {
    let store = MemoryStore::with_config(MemoryConfig::default().with_max_entries(2));
    store.append("a", None, &[]).await.unwrap();
    store.append("b", None, &[]).await.unwrap();
    store.load("a").await.unwrap(); // "b" is now least recently used
    store.append("c", None, &[]).await.unwrap();
    assert_eq!(store.len(), 2);
    assert!(
        store.load("b").await.unwrap().is_none(),
        "least recently used evicted"
    );
    assert!(store.load("a").await.unwrap().is_some());
    assert!(store.load("c").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_leases_expire() {
    conformance::lease_expiry(&MemoryStore::new()).await;
}

#[tokio::test]
async fn the_default_store_is_bounded() {
    let bounded = MemoryStore::new();
    let unbounded = MemoryStore::with_config(MemoryConfig::unbounded());
    let over = MemoryConfig::DEFAULT_MAX_ENTRIES + 1;
    for i in 0..over {
        let id = format!("s{i}");
        bounded.append(&id, None, &[]).await.unwrap();
        unbounded.append(&id, None, &[]).await.unwrap();
    }
    assert_eq!(bounded.len(), MemoryConfig::DEFAULT_MAX_ENTRIES);
    assert!(
        bounded.load("s0").await.unwrap().is_none(),
        "the oldest is evicted"
    );
    assert_eq!(unbounded.len(), over);
}

#[tokio::test]
async fn sweeps_drop_the_idle_and_keep_the_recently_used() {
    let store =
        MemoryStore::with_config(MemoryConfig::default().with_ttl(Duration::from_millis(1000)));
    for id in ["a", "b", "c"] {
        store.append(id, None, &[Message::user(id)]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.load("b").await.unwrap(); // recency is now a, c, b
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.len(), 1, "a and c idled past the TTL, b did not");
    let page = store.list(&ListOptions::default()).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["b"]);
    store.append("d", None, &[]).await.unwrap();
    assert_eq!(store.len(), 2, "a write after the sweep stores normally");
}
