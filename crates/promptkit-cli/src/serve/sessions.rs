//! Sessions of `serve`: each key's namespace in the store, one turn at a time per session
//! (within this process and across every process sharing the store), and the bodies of the
//! sessions API.
//!
//! A client's session `web-1` under key id `0123456789abcdef` is stored as
//! `srv:0123456789abcdef:web-1`: another key naming `web-1` reaches another conversation, and
//! no CLI session (ids `s-…`) shares the namespace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use promptkit::{ListOptions, Message, Role, StateError, StateStore};
use serde_json::{Value, json};
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::auth::Principal;
use super::random_hex;

/// What every serve session id starts with.
const PREFIX: &str = "srv:";

/// How long a turn's lease lasts without renewal: the longest a crashed process keeps a
/// session locked. The holder renews it every third of this.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(30);

/// The namespace of `principal`'s sessions in the store.
pub(crate) fn namespace(principal: &Principal) -> String {
    format!("{PREFIX}{}:", principal.key_id)
}

/// The store id of `principal`'s session `session` (already checked by
/// [`is_session_id`](super::request::is_session_id)).
pub(crate) fn store_id(principal: &Principal, session: &str) -> String {
    let mut id = namespace(principal);
    id.push_str(session);
    id
}

/// Why a session could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another turn kept it past the deadline.
    Busy,
    /// The store failed.
    Store(StateError),
}

/// Turns on one session, one at a time.
///
/// In this process a per-session mutex queues the turns (so the process does not poll the
/// store against itself); across processes the store's lease decides. A store without
/// leases (one written before they were added) gets only the in-process lock, and a warning.
#[derive(Debug)]
pub(crate) struct SessionLocks {
    store: Arc<dyn StateStore>,
    local: Mutex<Local>,
    lease_ttl: Duration,
    leases_unsupported: AtomicBool,
}

#[derive(Debug, Default)]
struct Local {
    locks: HashMap<String, Weak<tokio::sync::Mutex<()>>>,
    /// The map's size after the last sweep of unused locks.
    swept_at: usize,
}

/// Holds a session for one turn; dropping it releases the lease.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    _local: OwnedMutexGuard<()>,
    _lease: Option<Lease>,
}

impl SessionLocks {
    /// Locks for sessions of `store`, with leases of `lease_ttl`.
    pub(crate) fn new(store: Arc<dyn StateStore>, lease_ttl: Duration) -> Self {
        Self {
            store,
            local: Mutex::default(),
            lease_ttl,
            leases_unsupported: AtomicBool::new(false),
        }
    }

    fn local_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lock) = local.locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        if local.locks.len() >= 2 * local.swept_at.max(512) {
            local.locks.retain(|_, lock| lock.strong_count() > 0);
            local.swept_at = local.locks.len();
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        local.locks.insert(id.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Takes session `id` (a store id), waiting until `deadline` for the turn that holds it.
    ///
    /// # Errors
    /// [`LockError::Busy`] at the deadline, [`LockError::Store`] when the store fails.
    pub(crate) async fn acquire(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<SessionGuard, LockError> {
        let local = tokio::time::timeout_at(deadline, self.local_lock(id).lock_owned())
            .await
            .map_err(|_| LockError::Busy)?;
        let lease = self.lease(id, deadline).await?;
        Ok(SessionGuard {
            _local: local,
            _lease: lease,
        })
    }

    /// Takes the store's lease on `id`, polling with backoff until `deadline`.
    async fn lease(&self, id: &str, deadline: Instant) -> Result<Option<Lease>, LockError> {
        if self.leases_unsupported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let token = random_hex(16);
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.store.try_lease(id, &token, self.lease_ttl).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(StateError::Unsupported { .. }) => {
                    if !self.leases_unsupported.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the state store has no session leases: turns on one session are \
                             serialised only within this process"
                        );
                    }
                    return Ok(None);
                }
                Err(e) => return Err(LockError::Store(e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Busy);
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
        Ok(Some(Lease::hold(
            Arc::clone(&self.store),
            id.to_owned(),
            token,
            self.lease_ttl,
        )))
    }
}

/// A lease held in the store, renewed in the background until dropped.
#[derive(Debug)]
struct Lease {
    store: Arc<dyn StateStore>,
    id: String,
    token: String,
    renew: JoinHandle<()>,
}

impl Lease {
    fn hold(store: Arc<dyn StateStore>, id: String, token: String, ttl: Duration) -> Self {
        let renew = {
            let (store, id, token) = (Arc::clone(&store), id.clone(), token.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(ttl / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match store.try_lease(&id, &token, ttl).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(session = %id, "the session's lease was lost"),
                        Err(e) => {
                            tracing::warn!(session = %id, error = %e, "renewing the session's lease failed");
                        }
                    }
                }
            })
        };
        Self {
            store,
            id,
            token,
            renew,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
        let store = Arc::clone(&self.store);
        let id = std::mem::take(&mut self.id);
        let token = std::mem::take(&mut self.token);
        // Releasing is a courtesy to the next turn: an unreleased lease expires on its own.
        tokio::spawn(async move {
            if let Err(e) = store.release_lease(&id, &token).await {
                tracing::warn!(session = %id, error = %e, "releasing the session's lease failed");
            }
        });
    }
}

/// `GET /v1/sessions`: `owner`'s sessions in `principal`'s namespace.
///
/// # Errors
/// When the store fails.
pub(crate) async fn list(
    store: &dyn StateStore,
    principal: &Principal,
    owner: String,
    limit: usize,
    offset: usize,
) -> Result<Value, StateError> {
    let namespace = namespace(principal);
    let page = store
        .list(&ListOptions {
            limit: limit.clamp(1, 100),
            offset,
            ..ListOptions::for_user(owner)
        })
        .await?;
    let data: Vec<Value> = page
        .items
        .iter()
        .filter_map(|c| {
            let id = c.id.strip_prefix(&namespace)?;
            Some(json!({
                "id": id, "object": "session", "message_count": c.message_count,
                "created_at": c.created_at.map(|t| t.as_unix_millis() / 1000),
                "updated_at": c.updated_at.map(|t| t.as_unix_millis() / 1000),
            }))
        })
        .collect();
    let has_more =
        u64::try_from(offset.saturating_add(page.items.len())).unwrap_or(u64::MAX) < page.total;
    Ok(json!({"object": "list", "data": data, "has_more": has_more}))
}

/// `GET /v1/sessions/{id}`: the session's messages in the chat-completions shape, `None`
/// when there is no such session.
///
/// # Errors
/// When the store fails.
pub(crate) async fn show(
    store: &dyn StateStore,
    store_id: &str,
    id: &str,
) -> Result<Option<Value>, StateError> {
    let Some(conversation) = store.load(store_id).await? else {
        return Ok(None);
    };
    let messages: Vec<Value> = conversation.messages.iter().map(wire_message).collect();
    Ok(Some(json!({
        "id": id, "object": "session", "message_count": messages.len(), "messages": messages,
    })))
}

/// A stored message as a chat-completions message.
fn wire_message(message: &Message) -> Value {
    let mut wire = json!({"role": message.role.as_str(), "content": message.text()});
    if let Some(result) = &message.tool_result {
        wire["role"] = json!(Role::Tool.as_str());
        wire["tool_call_id"] = json!(result.call_id);
        wire["name"] = json!(result.name);
        wire["content"] = json!(result.text_content());
    }
    if !message.tool_calls.is_empty() {
        wire["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({"id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments_json()}})
            })
            .collect();
    }
    wire
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use promptkit::state::MemoryStore;

    use super::*;

    fn principal(key_id: &str) -> Principal {
        Principal {
            key_id: key_id.to_owned(),
            name: None,
        }
    }

    #[test]
    fn each_key_has_its_own_namespace() {
        let a = store_id(&principal("aaaa"), "web-1");
        let b = store_id(&principal("bbbb"), "web-1");
        assert_eq!(a, "srv:aaaa:web-1");
        assert_ne!(a, b);
        assert!(!a.starts_with("s-"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_on_one_session_run_one_at_a_time_and_time_out_as_busy() {
        let locks = Arc::new(SessionLocks::new(
            Arc::new(MemoryStore::new()),
            Duration::from_secs(5),
        ));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let turns = (0..8).map(|_| {
            let (locks, running, most) =
                (Arc::clone(&locks), Arc::clone(&running), Arc::clone(&most));
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                let _guard = locks.acquire("srv:k:s", deadline).await.unwrap();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for turn in turns.collect::<Vec<_>>() {
            turn.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);

        let held = locks
            .acquire("srv:k:s", Instant::now() + Duration::from_secs(1))
            .await
            .unwrap();
        let busy = locks
            .acquire("srv:k:s", Instant::now() + Duration::from_millis(50))
            .await;
        assert!(matches!(busy, Err(LockError::Busy)), "{busy:?}");
        drop(held);
        let other = locks
            .acquire("srv:k:other", Instant::now() + Duration::from_millis(50))
            .await;
        assert!(other.is_ok(), "another session is free");
    }
}
