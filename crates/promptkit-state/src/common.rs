//! Helpers shared by the backends.

use std::collections::HashSet;

use promptkit_core::{Conversation, StateError, Timestamp};

/// The longest time-to-live a store keeps: longer lease and conversation TTLs are cut to it,
/// so that a huge configured value (`Duration::MAX`) neither overflows a clock nor makes
/// the backend refuse every write (Redis rejects an expiry past its range, Postgres an
/// interval past its own).
pub(crate) const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// A lease or conversation TTL as the stores use it: at least one millisecond, at most
/// [`MAX_TTL`].
pub(crate) fn clamp_ttl(ttl: std::time::Duration) -> std::time::Duration {
    ttl.clamp(std::time::Duration::from_millis(1), MAX_TTL)
}

/// [`clamp_ttl`] in whole milliseconds.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn ttl_millis(ttl: std::time::Duration) -> u64 {
    // MAX_TTL in milliseconds fits u64 (and i64, and f64 exactly).
    u64::try_from(clamp_ttl(ttl).as_millis()).unwrap_or(u64::MAX)
}

/// The largest page a listing returns.
pub(crate) const MAX_PAGE: usize = 1000;

/// Checks `expected` against the stored version (`None` when the conversation is missing).
#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
pub(crate) fn check_expected(
    id: &str,
    expected: promptkit_core::ExpectedVersion,
    stored: Option<u64>,
) -> Result<(), StateError> {
    use promptkit_core::ExpectedVersion::{Any, Exact, New};
    let ok = match (expected, stored) {
        (Any, _) | (New | Exact(0), None) => true,
        (Exact(v), Some(actual)) => v == actual,
        (New, Some(_)) | (Exact(_), None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(StateError::Conflict {
            id: id.to_owned(),
            expected,
            actual: stored.unwrap_or(0),
        })
    }
}

/// Checks the arguments of `append` and `append_if` before anything is written.
pub(crate) fn validate_append(
    id: &str,
    user_id: Option<&str>,
    messages: &[promptkit_core::Message],
) -> Result<(), StateError> {
    StateError::validate_id(id)?;
    if let Some(user_id) = user_id {
        StateError::validate_user_id(id, user_id)?;
    }
    StateError::validate_message_ids(id, messages)
}

/// Checks a conversation given to `save` before anything is written: its id, owner and
/// message ids, which must not repeat.
pub(crate) fn validate_conversation(conversation: &Conversation) -> Result<(), StateError> {
    validate_append(
        &conversation.id,
        conversation.user_id.as_deref(),
        &conversation.messages,
    )?;
    check_unique_message_ids(conversation)
}

/// Whether a listing filters on an owner no conversation can have (one that
/// [`StateError::validate_user_id`] refuses): its answer is an empty page, without asking a
/// backend that may not even accept the value as a parameter.
pub(crate) fn impossible_owner(options: &promptkit_core::ListOptions) -> bool {
    options
        .user_id
        .as_deref()
        .is_some_and(|u| StateError::validate_user_id("", u).is_err())
}

/// The answer to a listing on an [impossible owner](impossible_owner).
pub(crate) fn empty_page() -> promptkit_core::Page<promptkit_core::ConversationInfo> {
    promptkit_core::Page {
        items: Vec::new(),
        total: 0,
    }
}

/// Rejects a conversation whose messages repeat an id (the store would lose one of them).
fn check_unique_message_ids(conversation: &Conversation) -> Result<(), StateError> {
    let mut seen = HashSet::new();
    for id in conversation.messages.iter().filter_map(|m| m.id.as_deref()) {
        if !seen.insert(id) {
            return Err(StateError::InvalidId {
                id: conversation.id.clone(),
                reason: format!("message id `{id}` appears more than once"),
            });
        }
    }
    Ok(())
}

/// Merges `entries` into `metadata`: a `null` value removes the key.
#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
pub(crate) fn merge_metadata(
    metadata: &mut serde_json::Map<String, serde_json::Value>,
    entries: &serde_json::Map<String, serde_json::Value>,
) {
    for (key, value) in entries {
        if value.is_null() {
            metadata.remove(key);
        } else {
            metadata.insert(key.clone(), value.clone());
        }
    }
}

/// The current time, truncated to milliseconds (the precision the SQL stores keep).
pub(crate) fn now_millis() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_unix_millis(now.as_unix_millis()).unwrap_or(now)
}

/// The page size to use for a requested `limit`.
pub(crate) fn page_size(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// Serialises a value stored as JSON text.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(
    id: &str,
    value: &T,
) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|e| StateError::Corrupt {
        id: id.to_owned(),
        message: format!("cannot encode: {e}"),
    })
}

/// Parses a value stored as JSON text.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    id: &str,
    text: &str,
) -> Result<T, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

/// A timestamp from stored milliseconds.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn from_millis(id: &str, millis: i64) -> Result<Timestamp, StateError> {
    Timestamp::from_unix_millis(millis).map_err(|e| StateError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

/// A stored counter (version, count) read back from a signed database column.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn to_u64(id: &str, n: i64) -> Result<u64, StateError> {
    u64::try_from(n).map_err(|_| StateError::Corrupt {
        id: id.to_owned(),
        message: format!("negative counter {n}"),
    })
}

/// A count or position for a signed database column.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The conversation row of the SQL stores (everything but the messages), as stored.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct ConversationRow {
    pub(crate) user_id: Option<String>,
    pub(crate) version: i64,
    pub(crate) metadata: String,
    pub(crate) summaries: String,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl ConversationRow {
    /// Decodes the row and the stored message bodies into a conversation.
    pub(crate) fn into_conversation(
        self,
        id: &str,
        bodies: &[String],
    ) -> Result<Conversation, StateError> {
        let messages = bodies
            .iter()
            .map(|b| from_json::<promptkit_core::Message>(id, b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Conversation {
            id: id.to_owned(),
            user_id: self.user_id,
            messages,
            summaries: from_json(id, &self.summaries)?,
            metadata: from_json(id, &self.metadata)?,
            version: to_u64(id, self.version)?,
            created_at: Some(from_millis(id, self.created_at)?),
            updated_at: Some(from_millis(id, self.updated_at)?),
        })
    }
}

/// Messages of `batch` that are new: ids not in `known` and not repeated within the batch.
/// Messages without an id are always new.
#[cfg(any(feature = "memory", feature = "sqlite", feature = "postgres"))]
pub(crate) fn fresh_messages(
    batch: &[promptkit_core::Message],
    mut known: impl FnMut(&str) -> bool,
) -> Vec<&promptkit_core::Message> {
    let mut seen = HashSet::new();
    batch
        .iter()
        .filter(|m| match m.id.as_deref() {
            Some(id) => !known(id) && seen.insert(id),
            None => true,
        })
        .collect()
}

/// The expiry (Unix milliseconds) of a conversation touched at `now` under `ttl`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn expiry(now: i64, ttl: Option<std::time::Duration>) -> Option<i64> {
    ttl.map(|ttl| now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

/// How often (milliseconds) a SQL store sweeps expired conversations during writes.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const SWEEP_INTERVAL_MS: i64 = 60_000;

/// Decides when a SQL store sweeps expired conversations: at most once a minute, shared by
/// clones of one store.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Default)]
pub(crate) struct SweepClock {
    last: std::sync::atomic::AtomicI64,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl SweepClock {
    /// Whether a sweep is due at `now`; claims it when it is (one caller wins).
    pub(crate) fn due(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.last.load(Ordering::Relaxed);
        now.saturating_sub(last) >= SWEEP_INTERVAL_MS
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Records a sweep done at `now` (on open).
    pub(crate) fn mark(&self, now: i64) {
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes the next write sweep again (the last sweep stopped at its batch size).
    pub(crate) fn rearm(&self) {
        self.last
            .store(i64::MIN, std::sync::atomic::Ordering::Relaxed);
    }
}
