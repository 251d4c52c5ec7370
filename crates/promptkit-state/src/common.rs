//! Helpers shared by the backends.

use std::collections::HashSet;

use promptkit_core::{Conversation, StateError, Timestamp};

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

/// Rejects a conversation whose messages repeat an id (the store would lose one of them).
pub(crate) fn check_unique_message_ids(conversation: &Conversation) -> Result<(), StateError> {
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
#[cfg(any(feature = "memory", feature = "sqlite"))]
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
