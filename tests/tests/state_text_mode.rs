//! Conversation state across pipeline runs: `StateStoreLoad` -> provider -> `IncrementalSave`
//! in Text mode, with a scripted provider, on the memory and SQLite stores (SQLite also
//! across a fresh process).

use std::sync::Arc;
use std::time::Duration;

use promptkit::pipeline::provider::{ProviderStage, ProviderStageConfig};
use promptkit::pipeline::stages::{IncrementalSave, StateStoreLoad};
use promptkit::pipeline::{Element, Pipeline, RunData};
use promptkit::providers::mock::{MockProvider, MockTurn};
use promptkit::state::{MemoryStore, SqliteStore};
use promptkit::{Message, ProviderError, Role, StateStore};

/// Environment variable telling the re-executed test binary which child step to run.
const CHILD_ENV: &str = "PROMPTKIT_E2E_STATE_CHILD";

fn text_pipeline(store: &Arc<dyn StateStore>, provider: &Arc<MockProvider>) -> Pipeline {
    let config = ProviderStageConfig {
        streaming: false,
        ..ProviderStageConfig::default()
    };
    Pipeline::builder()
        .then(StateStoreLoad::new(Arc::clone(store)))
        .then(ProviderStage::new(Arc::clone(provider) as _).with_config(config))
        .then(IncrementalSave::new(Arc::clone(store)))
        .build()
        .unwrap()
}

/// Runs one Text-mode turn and returns the run's result and its output messages.
async fn turn(
    store: &Arc<dyn StateStore>,
    provider: &Arc<MockProvider>,
    text: &str,
) -> (Result<(), String>, Vec<Element>) {
    let pipeline = text_pipeline(store, provider);
    let (elements, result) = pipeline
        .execute(
            RunData::for_session("conv-1").with_user("alice"),
            futures_util::stream::iter([Element::message(Message::user(text))]),
        )
        .unwrap()
        .finish()
        .await;
    (
        result
            .map(|_| ())
            .map_err(|e| promptkit::ErrorChain(&e).to_string()),
        elements,
    )
}

fn texts(messages: &[Message]) -> Vec<(Role, String)> {
    messages.iter().map(|m| (m.role, m.text())).collect()
}

async fn two_runs_continue_one_conversation(store: Arc<dyn StateStore>) {
    let provider = Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_turn(MockTurn::text("Hi Alice!"))
            .with_turn(MockTurn::text("You said your name is Alice.")),
    );
    let (result, first) = turn(&store, &provider, "My name is Alice.").await;
    result.unwrap();
    assert!(
        first.iter().all(|e| !e.meta.from_history),
        "no history on run 1"
    );

    let (result, second) = turn(&store, &provider, "What is my name?").await;
    result.unwrap();
    let history: Vec<&Element> = second.iter().filter(|e| e.meta.from_history).collect();
    assert_eq!(history.len(), 2, "run 2 starts with run 1's two messages");
    assert!(
        second.iter().take(2).all(|e| e.meta.from_history),
        "history comes before the new input"
    );

    // The model saw the whole conversation on the second call.
    let requests = provider.requests();
    assert_eq!(
        texts(&requests[1].messages),
        [
            (Role::User, "My name is Alice.".to_owned()),
            (Role::Assistant, "Hi Alice!".to_owned()),
            (Role::User, "What is my name?".to_owned()),
        ]
    );

    // Only new messages were appended: four in all, each once, each with an id.
    let stored = store.load("conv-1").await.unwrap().unwrap();
    assert_eq!(
        texts(&stored.messages),
        [
            (Role::User, "My name is Alice.".to_owned()),
            (Role::Assistant, "Hi Alice!".to_owned()),
            (Role::User, "What is my name?".to_owned()),
            (Role::Assistant, "You said your name is Alice.".to_owned()),
        ]
    );
    assert!(stored.messages.iter().all(|m| m.id.is_some()));
    assert_eq!(stored.user_id.as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_conversation_continues_across_runs_in_memory() {
    two_runs_continue_one_conversation(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_conversation_continues_across_runs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"))
        .await
        .unwrap();
    two_runs_continue_one_conversation(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_keeps_what_was_already_said() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let provider = Arc::new(
        MockProvider::new("mock", "mock-1").with_turn(
            MockTurn::error(ProviderError::Server {
                status: 503,
                message: "overloaded".to_owned(),
            })
            .with_delay(Duration::from_millis(50)),
        ),
    );
    let (result, _) = turn(&store, &provider, "Are you there?").await;
    assert!(result.is_err(), "the turn fails");
    let stored = store.load("conv-1").await.unwrap().unwrap();
    assert_eq!(
        texts(&stored.messages),
        [(Role::User, "Are you there?".to_owned())]
    );
}

/// Run 1 in a child process, run 2 here: the conversation survives the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_conversation_continues_in_a_fresh_process_on_sqlite() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // Only the parent runs this test.
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["sqlite_child_first_turn", "--exact", "--nocapture"])
        .env(CHILD_ENV, &path)
        .status()
        .unwrap();
    assert!(status.success(), "child run failed: {status}");

    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let provider =
        Arc::new(MockProvider::new("mock", "mock-1").with_turn(MockTurn::text("Still Alice.")));
    let (result, second) = turn(&store, &provider, "And now?").await;
    result.unwrap();
    assert_eq!(second.iter().filter(|e| e.meta.from_history).count(), 2);
    let stored = store.load("conv-1").await.unwrap().unwrap();
    assert_eq!(stored.messages.len(), 4);
    assert_eq!(
        texts(&provider.requests()[0].messages)[0],
        (Role::User, "My name is Alice.".to_owned())
    );
}

/// The child half of the test above; does nothing unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_child_first_turn() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(path).await.unwrap());
    let provider =
        Arc::new(MockProvider::new("mock", "mock-1").with_turn(MockTurn::text("Hi Alice!")));
    let (result, _) = turn(&store, &provider, "My name is Alice.").await;
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_summary_stands_in_for_the_messages_it_covers() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let old: Vec<Message> = (0..5)
        .map(|i| Message::user(format!("old {i}")).with_id(format!("o{i}")))
        .collect();
    store.append("conv-1", Some("alice"), &old).await.unwrap();
    let summary = promptkit::state::Summary {
        start_index: 0,
        end_index: 3,
        content: "Alice introduced herself.".to_owned(),
        token_count: None,
        created_at: promptkit::Timestamp::now(),
    };
    store.add_summary("conv-1", &summary).await.unwrap();
    let provider =
        Arc::new(MockProvider::new("mock", "mock-1").with_turn(MockTurn::text("Noted.")));
    let (result, _) = turn(&store, &provider, "new").await;
    result.unwrap();
    // The provider stage sends system messages as the request's system prompt.
    let request = &provider.requests()[0];
    let system = request.system.clone().unwrap_or_default();
    assert!(
        system.contains("Summary of the earlier conversation:\nAlice introduced herself."),
        "{system:?}"
    );
    assert_eq!(
        texts(&request.messages),
        [
            (Role::User, "old 3".to_owned()),
            (Role::User, "old 4".to_owned()),
            (Role::User, "new".to_owned()),
        ],
        "covered messages are replaced by the summary"
    );
    assert_eq!(
        store.load("conv-1").await.unwrap().unwrap().messages.len(),
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_a_session_id_passes_through_and_stores_nothing() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let provider = Arc::new(MockProvider::new("mock", "mock-1").with_turn(MockTurn::text("Hi.")));
    let (elements, result) = text_pipeline(&store, &provider)
        .execute(
            RunData::default(),
            futures_util::stream::iter([Element::message(Message::user("hello"))]),
        )
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    assert_eq!(
        elements.iter().filter(|e| e.as_message().is_some()).count(),
        2
    );
    let page = store
        .list(&promptkit::state::ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.total, 0);
}

/// A turn appends against the version it loaded: a message another writer appended in the
/// middle of the turn (a replica that took over a lost lease) makes the turn's next append
/// fail with a conflict instead of interleaving with it.
#[tokio::test(start_paused = true)]
async fn a_turn_never_appends_after_another_writers_message() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let provider = Arc::new(
        MockProvider::new("mock", "mock-1")
            .with_turn(MockTurn::text("An answer.").with_delay(Duration::from_secs(1))),
    );
    let interloper = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            // Once the turn's user message is stored, another writer appends.
            loop {
                if let Some(conversation) = store.load("conv-1").await.unwrap()
                    && !conversation.messages.is_empty()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            store
                .append("conv-1", Some("alice"), &[Message::user("Someone else.")])
                .await
                .unwrap();
        })
    };
    let (result, _) = turn(&store, &provider, "Hello?").await;
    interloper.await.unwrap();
    let error = result.unwrap_err();
    assert!(error.contains("version conflict"), "{error}");
    let stored = store.load("conv-1").await.unwrap().unwrap();
    assert_eq!(
        texts(&stored.messages),
        [
            (Role::User, "Hello?".to_owned()),
            (Role::User, "Someone else.".to_owned()),
        ],
        "the turn's answer is not written after the other writer's message"
    );

    // Without the other writer, the same turn stores both its messages.
    let provider = Arc::new(MockProvider::new("mock", "mock-1").with_turn(MockTurn::text("Fine.")));
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let (result, _) = turn(&store, &provider, "Hello?").await;
    result.unwrap();
    assert_eq!(
        store.load("conv-1").await.unwrap().unwrap().messages.len(),
        2
    );
}
