//! A child process appends to an SQLite store and is killed (SIGKILL) mid-stream; on reopen
//! every acknowledged append is present, no batch is half-written and the database passes
//! SQLite's integrity check.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use promptkit_state::{Message, SqliteStore, StateStore};

const CHILD_ENV: &str = "PROMPTKIT_STATE_CRASH_CHILD";
const BATCH: usize = 3;
const ACKS_BEFORE_KILL: usize = 150;

fn batch(n: usize) -> Vec<Message> {
    (0..BATCH)
        .map(|k| Message::user(format!("batch {n} part {k}")).with_id(format!("b{n}-{k}")))
        .collect()
}

/// The child: appends batches forever, acknowledging each on stdout once `append` returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_appender() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return; // Only runs when started by the parent test.
    };
    let store = SqliteStore::open(path).await.unwrap();
    let mut stdout = std::io::stdout().lock();
    for n in 0.. {
        store.append("crash", Some("u"), &batch(n)).await.unwrap();
        writeln!(stdout, "ack {n}").unwrap();
        stdout.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_appender_loses_no_acknowledged_append() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_appender",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<usize>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no clean shutdown
    // Acknowledgements already written before the kill count too.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("ack ") {
            acked.push(n.parse().unwrap());
        }
    }
    child.wait().unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let conversation = store.load("crash").await.unwrap().unwrap();
    let ids: Vec<&str> = conversation
        .messages
        .iter()
        .map(|m| m.id.as_deref().unwrap())
        .collect();
    for n in &acked {
        for k in 0..BATCH {
            assert!(
                ids.contains(&format!("b{n}-{k}").as_str()),
                "acknowledged b{n}-{k} lost"
            );
        }
    }
    // Batches are whole and in order: b0-0, b0-1, b0-2, b1-0, ...
    assert_eq!(ids.len() % BATCH, 0, "no half-written batch");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            *id,
            format!("b{}-{}", i / BATCH, i % BATCH),
            "order and uniqueness"
        );
    }
    let info = store
        .list(&promptkit_state::ListOptions::for_user("u"))
        .await
        .unwrap();
    assert_eq!(
        info.items[0].message_count as usize,
        ids.len(),
        "counter matches rows"
    );
    store.close().await;

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    pool.close().await;

    // The store keeps working after the crash; retried batches do not duplicate.
    let store = SqliteStore::open(&path).await.unwrap();
    let last = *acked.last().unwrap();
    let retry = store.append("crash", None, &batch(last)).await.unwrap();
    assert_eq!(retry.appended, 0);
}
