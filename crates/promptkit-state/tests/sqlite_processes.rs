//! Review test 50: two processes share one SQLite file, opening it at the same moment (so
//! they race to create and migrate it) and then running 200 turns each, one message per
//! append as the pipeline does, on a session of their own and on a session they share under
//! the store's turn lease. No call fails (no `database is locked`), and every session's
//! history is in order: each turn's user message is followed by its answer.

use std::process::Stdio;
use std::time::Duration;

use promptkit_state::{Message, SqliteStore, StateError, StateStore};

const CHILD_ENV: &str = "PROMPTKIT_STATE_PEER_CHILD";
const TURNS: usize = 200;
const SHARED: &str = "shared";

/// One process's turns; `role` names the process in ids and texts.
async fn run_turns(path: &std::ffi::OsStr, role: &str) -> Result<(), StateError> {
    let store = SqliteStore::open(path).await?;
    let own = format!("own-{role}");
    let token = format!("{role}-{}", std::process::id());
    for turn in 0..TURNS {
        let (user, answer) = messages(role, turn);
        store
            .append(&own, Some(role), std::slice::from_ref(&user))
            .await?;
        store
            .append(&own, None, std::slice::from_ref(&answer))
            .await?;
        // The shared session: one turn at a time across both processes.
        while !store
            .try_lease(SHARED, &token, Duration::from_secs(30))
            .await?
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        store.append(SHARED, None, &[user]).await?;
        store.append(SHARED, None, &[answer]).await?;
        store.release_lease(SHARED, &token).await?;
    }
    store.close().await;
    Ok(())
}

fn messages(role: &str, turn: usize) -> (Message, Message) {
    (
        Message::user(format!("{role} asks {turn}")).with_id(format!("{role}-u{turn}")),
        Message::assistant(format!("{role} answers {turn}")).with_id(format!("{role}-a{turn}")),
    )
}

/// The second process: runs its turns and reports the first error on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return; // Only runs when started by the parent test.
    };
    if let Err(e) = run_turns(&path, "b").await {
        panic!("child: {e} ({e:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_file() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["peer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mine, theirs) = tokio::join!(run_turns(path.as_os_str(), "a"), child.wait_with_output());
    if let Err(e) = mine {
        panic!("parent: {e} ({e:?})");
    }
    let theirs = theirs.unwrap();
    assert!(
        theirs.status.success(),
        "the child failed: {}",
        String::from_utf8_lossy(&theirs.stderr)
    );

    let store = SqliteStore::open(&path).await.unwrap();
    for role in ["a", "b"] {
        let c = store.load(&format!("own-{role}")).await.unwrap().unwrap();
        let expected: Vec<Message> = (0..TURNS)
            .flat_map(|turn| {
                let (user, answer) = messages(role, turn);
                [user, answer]
            })
            .collect();
        assert_eq!(c.messages, expected, "own-{role} holds every turn in order");
    }
    let shared = store.load(SHARED).await.unwrap().unwrap();
    assert_eq!(
        shared.messages.len(),
        4 * TURNS,
        "every shared turn is stored once"
    );
    let mut next = [0_usize; 2];
    for pair in shared.messages.chunks(2) {
        let id = pair[0].id.as_deref().unwrap();
        let role = &id[..1];
        let slot = usize::from(role == "b");
        let (user, answer) = messages(role, next[slot]);
        assert_eq!(
            pair,
            [user, answer],
            "a shared turn is whole and in its process's order"
        );
        next[slot] += 1;
    }
    assert_eq!(next, [TURNS, TURNS]);
    store.close().await;
}
