//! The conformance suite on a real Redis server (`PROMPTKIT_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Each test uses its own key prefix and deletes its keys.

mod support;

use std::sync::Arc;
use std::time::Duration;

use promptkit_state::{Message, RedisConfig, RedisStore, StateStore, conformance};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_ttl_is_cut_instead_of_failing_every_write() {
    // Duration::MAX in milliseconds is past the range of PEXPIRE, which would refuse it.
    let Some((store, prefix)) = store("pk_ttl_max", Some(Duration::MAX)).await else {
        return;
    };
    conformance::run_all(Arc::new(store)).await;
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_leases_expire() {
    let Some((store, prefix)) = store("pk_lease_ttl", None).await else {
        return;
    };
    conformance::lease_expiry(&store).await;
    cleanup(&prefix).await;
}

async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Sizes of every index key (`x:*`) under `prefix`, by name.
async fn index_sizes(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<(String, i64)> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}x:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut sizes = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        let size: i64 = match kind.as_str() {
            "zset" => redis::cmd("ZCARD")
                .arg(&key)
                .query_async(conn)
                .await
                .unwrap(),
            "hash" => redis::cmd("HLEN")
                .arg(&key)
                .query_async(conn)
                .await
                .unwrap(),
            _ => 0, // expired between SCAN and TYPE
        };
        sizes.push((key, size));
    }
    sizes
}

/// Appends one message to each of `n` sessions, `users` owners in turn, 64 at a time.
async fn create_sessions(store: &RedisStore, base: &str, n: usize, users: usize) {
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = store.clone();
        let id = format!("{base}-{i}");
        let user = format!("{base}-user{}", i % users);
        pending.spawn(async move {
            store
                .append(&id, Some(&user), &[Message::user("hi").with_id("m")])
                .await
                .unwrap();
        });
        if pending.len() >= 64 {
            pending.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
}

/// Review test 48: 10 000 sessions with a 1 s TTL; once they have expired, every index key
/// is gone too, without any `list` call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indexes_expire_with_their_sessions() {
    let Some((store, prefix)) = store("pk_index_ttl", Some(Duration::from_secs(1))).await else {
        return;
    };
    let mut conn = raw_connection().await;
    create_sessions(&store, "s", 10_000, 10).await;
    let before: i64 = index_sizes(&mut conn, &prefix)
        .await
        .iter()
        .map(|(_, n)| n)
        .sum();
    // Two orders for all and for each of 10 owners, plus expiry times and owners.
    assert!(before >= 40_000, "the sessions are indexed: {before}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sizes = index_sizes(&mut conn, &prefix).await;
        if sizes.iter().all(|(_, n)| *n == 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "index keys outlive their sessions: {:?}",
            &sizes[..sizes.len().min(5)]
        );
    }
    cleanup(&prefix).await;
}

/// Under traffic the index keys stay (a live session keeps them), so writes remove expired
/// entries on their way: with 2 000 expired sessions and one live one, a few dozen writes
/// leave only the live one indexed, without any `list` call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_clean_expired_index_entries() {
    let ttl = Duration::from_millis(800);
    let Some((store, prefix)) = store("pk_index_clean", Some(ttl)).await else {
        return;
    };
    let mut conn = raw_connection().await;
    create_sessions(&store, "old", 2_000, 1).await;
    let live_user = "old-user0"; // The same owner: its index keys are kept alive.
    let mut turn = 0;
    let mut write = async || {
        turn += 1;
        store
            .append(
                "live",
                Some(live_user),
                &[Message::user("x").with_id(format!("t{turn}"))],
            )
            .await
            .unwrap();
    };
    // Keep the live session (and so the index keys) alive past the others' expiry.
    for _ in 0..8 {
        write().await;
        tokio::time::sleep(ttl / 4).await;
    }
    let mut writes = 0;
    loop {
        let sizes = index_sizes(&mut conn, &prefix).await;
        let all = sizes
            .iter()
            .find(|(k, _)| k.ends_with("x:upd:*"))
            .map_or(0, |(_, n)| *n);
        if all == 1 && sizes.iter().all(|(_, n)| *n == 1) {
            break;
        }
        assert!(
            writes < 100,
            "expired entries stay indexed after {writes} writes: {sizes:?}"
        );
        write().await;
        writes += 1;
    }
    let page = store
        .list(&promptkit_state::ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.total, 1, "only the live session is listed");
    cleanup(&prefix).await;
}

#[test]
fn config_debug_hides_the_password() {
    let config = RedisConfig::new("redis://:hunter2@127.0.0.1:6379/0");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://:***@127.0.0.1:6379/0"), "{shown}");
}

/// A Redis server of this test's own (`redis-server` on a free port), so pausing it holds up
/// nobody else. Killed when dropped.
struct PrivateRedis {
    child: tokio::process::Child,
    url: String,
}

impl PrivateRedis {
    async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spawned = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                support::unavailable("redis-server", "PATH", &e);
                return None;
            }
        };
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        for _ in 0..100 {
            if client.get_multiplexed_async_connection().await.is_ok() {
                return Some(Self { child, url });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} did not start");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Review test 49: with the server paused (`CLIENT PAUSE`), loads and appends fail with a
/// typed timeout close to the response timeout instead of hanging, leave no task behind,
/// and the store works again once the server answers (a retried append stores nothing
/// twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_server_times_out_calls() {
    let Some(server) = PrivateRedis::start().await else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let config = RedisConfig::new(&server.url)
        .with_key_prefix("pause:")
        .with_response_timeout(Some(timeout));
    let store = RedisStore::connect_with(config).await.unwrap();
    let batch = [Message::user("before").with_id("m0")];
    store.append("s", Some("u"), &batch).await.unwrap();
    let mut admin = redis::Client::open(server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The connections' driver tasks.
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        // `WRITE` holds up every script (all of this store's calls) but lets the admin
        // connection unpause.
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let retried = [Message::user("during").with_id("m1")];
    let (load, append) = tokio::join!(store.load("s"), store.append("s", None, &retried));
    let waited = started.elapsed();
    for (what, err) in [
        ("load", load.map(|_| ()).unwrap_err()),
        ("append", append.map(|_| ()).unwrap_err()),
    ] {
        assert!(
            matches!(err, promptkit_state::StateError::Timeout(t) if t == timeout),
            "{what} on a paused server: {err:?}"
        );
    }
    // A script may take two round trips (EVALSHA, then EVAL when the server lacks it), each
    // bounded by the timeout; far below the 60 s pause either way.
    assert!(
        waited < timeout * 2 + Duration::from_secs(2),
        "calls hung for {waited:?}"
    );
    // Nothing of the failed calls is still running in this process.
    assert_eq!(
        metrics.num_alive_tasks(),
        tasks_before,
        "tasks left behind by the timed-out calls"
    );

    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();
    // The timed-out append may have run once the server resumed: a retry is a no-op then.
    let out = store.append("s", None, &retried).await.unwrap();
    assert_eq!(out.total, 2, "the retried append is stored once: {out:?}");
    let c = store.load("s").await.unwrap().unwrap();
    let texts: Vec<String> = c.messages.iter().map(Message::text).collect();
    assert_eq!(texts, ["before", "during"]);
    drop(server);
}

#[tokio::test]
async fn store_debug_and_connect_errors_hide_the_password() {
    let Some((store, prefix)) = store("pk_debug", None).await else {
        return;
    };
    let debug = format!("{store:?}");
    assert!(debug.contains(&prefix), "{debug}");
    // Nothing listens on port 1: connecting fails, and the error must not carry the URL's
    // password.
    let err = RedisStore::connect_with(
        RedisConfig::new("redis://:hunter2@127.0.0.1:1/0")
            .with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .expect_err("nothing listens on port 1");
    let shown = support::shown(&err);
    assert!(!shown.contains("hunter2"), "{shown}");
    cleanup(&prefix).await;
}
