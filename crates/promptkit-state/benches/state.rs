//! Load, append and save of a 100-message conversation on every store.
//!
//! `cargo bench -p promptkit-state --all-features --bench state`
//!
//! Postgres and Redis are taken from `PROMPTKIT_TEST_POSTGRES_URL` /
//! `PROMPTKIT_TEST_REDIS_URL` (defaults: the local servers) and skipped when unreachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use promptkit_state::{
    Conversation, ExpectedVersion, MemoryStore, Message, PostgresConfig, PostgresStore,
    RedisConfig, RedisStore, SqliteStore, StateStore, conformance,
};
use tokio::runtime::Runtime;

const MESSAGES: usize = 100;

fn conversation(id: &str) -> Conversation {
    let mut c = Conversation::new(id).with_user("bench-user");
    for i in 0..MESSAGES {
        let m = if i % 10 == 9 {
            conformance::rich_message(&format!("m{i}"))
        } else if i % 2 == 0 {
            Message::user(format!("user message number {i} with a sentence of text"))
                .with_id(format!("m{i}"))
        } else {
            Message::assistant(format!(
                "assistant answer number {i}, a little longer than the question it answers"
            ))
            .with_id(format!("m{i}"))
        };
        c.messages.push(m);
    }
    c
}

fn bench_store(c: &mut Criterion, rt: &Runtime, name: &str, store: &Arc<dyn StateStore>) {
    let mut group = c.benchmark_group(format!("state/{name}"));
    let base = conversation("bench-load");
    rt.block_on(store.save(&base, ExpectedVersion::Any))
        .expect("seed");
    group.bench_function("load 100 messages", |b| {
        b.iter(|| rt.block_on(store.load("bench-load")).expect("load"));
    });
    group.bench_function("load_recent 20 of 100", |b| {
        b.iter(|| {
            rt.block_on(store.load_recent("bench-load", 20))
                .expect("load")
        });
    });
    group.bench_function("save 100 messages (replace)", |b| {
        let c = conversation("bench-save");
        b.iter(|| {
            rt.block_on(store.save(&c, ExpectedVersion::Any))
                .expect("save")
        });
    });
    rt.block_on(store.save(&conversation("bench-append"), ExpectedVersion::Any))
        .expect("seed");
    let counter = AtomicU64::new(0);
    group.bench_function("append 1 message to 100+", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let m = [Message::user("appended").with_id(format!("a{n}"))];
            rt.block_on(store.append("bench-append", None, &m))
                .expect("append")
        });
    });
    group.finish();
    for id in ["bench-load", "bench-save", "bench-append"] {
        rt.block_on(store.delete(id)).expect("cleanup");
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let memory: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    bench_store(c, &rt, "memory", &memory);

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn StateStore> = Arc::new(
        rt.block_on(SqliteStore::open(dir.path().join("bench.db")))
            .expect("sqlite"),
    );
    bench_store(c, &rt, "sqlite", &sqlite);

    let pg_url = std::env::var("PROMPTKIT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("pk_bench_{}", std::process::id());
    if let Ok(pg) = rt.block_on(PostgresStore::connect_with(
        PostgresConfig::new(&pg_url).with_schema(&schema),
    )) {
        let pg: Arc<dyn StateStore> = Arc::new(pg);
        bench_store(c, &rt, "postgres", &pg);
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&pg_url).await.expect("pg");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await
            .expect("drop schema");
        });
    }

    let redis_url = std::env::var("PROMPTKIT_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("pk_bench_{}:", std::process::id());
    if let Ok(redis) = rt.block_on(RedisStore::connect_with(
        RedisConfig::new(&redis_url).with_key_prefix(&prefix),
    )) {
        let redis: Arc<dyn StateStore> = Arc::new(redis);
        bench_store(c, &rt, "redis", &redis);
    }
}

criterion_group! {
    name = state;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = benches
}
criterion_main!(state);
