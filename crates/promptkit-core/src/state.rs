//! The conversation state seam.
//!
//! A [`StateStore`] keeps [`Conversation`]s keyed by id. Every write bumps the
//! conversation's [`version`](Conversation::version); [`StateStore::save`] takes the version
//! the writer last read ([`ExpectedVersion`]), so two writers never silently overwrite each
//! other: the stale one gets [`StateError::Conflict`]. [`StateStore::append`] adds messages
//! atomically and idempotently (a message whose id is already stored is skipped), which is
//! what a pipeline uses after each turn.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::future::{BoxError, BoxFuture};
use crate::message::Message;
use crate::time::Timestamp;

/// A compressed stand-in for a range of older messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Index of the first message summarised (0-based, inclusive).
    pub start_index: u64,
    /// Index after the last message summarised (exclusive).
    pub end_index: u64,
    /// The summary text.
    pub content: String,
    /// Token count of `content`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_count: Option<u64>,
    /// When the summary was made.
    pub created_at: Timestamp,
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The conversation (session) id.
    pub id: String,
    /// The user the conversation belongs to, for listing by user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Messages, oldest first.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Summaries of older messages, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summaries: Vec<Summary>,
    /// Application metadata (must be JSON).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Incremented by every write; 0 for a conversation that was never stored.
    #[serde(default)]
    pub version: u64,
    /// When the conversation was first stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// When the conversation was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

impl Conversation {
    /// A new, empty, never-stored conversation.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            user_id: None,
            messages: Vec::new(),
            summaries: Vec::new(),
            metadata: Map::new(),
            version: 0,
            created_at: None,
            updated_at: None,
        }
    }

    /// Sets the owning user.
    #[must_use]
    pub fn with_user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// The version a writer expects a conversation to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// Write whatever is stored (last writer wins). For administrative tools only.
    Any,
    /// The conversation must not exist yet.
    New,
    /// The stored version must be exactly this.
    Exact(u64),
}

/// What [`StateStore::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendOutcome {
    /// Messages actually added (duplicates by id are skipped).
    pub appended: usize,
    /// Messages in the conversation after the append.
    pub total: usize,
    /// The conversation's version after the append.
    pub version: u64,
}

/// Listing order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Most recently updated first.
    #[default]
    UpdatedDesc,
    /// Least recently updated first.
    UpdatedAsc,
    /// Most recently created first.
    CreatedDesc,
    /// Least recently created first.
    CreatedAsc,
}

/// Options of [`StateStore::list`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListOptions {
    /// Only conversations of this user; all conversations when `None`.
    pub user_id: Option<String>,
    /// Page size (stores cap it at 1000).
    pub limit: usize,
    /// Conversations to skip.
    pub offset: usize,
    /// Order.
    pub order: SortOrder,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            user_id: None,
            limit: 100,
            offset: 0,
            order: SortOrder::default(),
        }
    }
}

impl ListOptions {
    /// The first page of `user_id`'s conversations.
    pub fn for_user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::default()
        }
    }
}

/// One row of a listing: a conversation without its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationInfo {
    /// The id.
    pub id: String,
    /// The owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Number of messages.
    pub message_count: u64,
    /// The version.
    pub version: u64,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Total number of matching items across all pages.
    pub total: u64,
}

/// Conversation storage. Object-safe: used as `Arc<dyn StateStore>`.
///
/// All writes are atomic: after an error nothing of that write is stored. Stores with a
/// time-to-live refresh it on every read and write.
pub trait StateStore: Send + Sync + fmt::Debug {
    /// The whole conversation, or `None` if it does not exist (or expired).
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Conversation>, StateError>>;

    /// The conversation with only its `n` most recent messages (summaries and metadata are
    /// complete). The default loads everything and trims; backends override it to read less.
    fn load_recent<'a>(
        &'a self,
        id: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StateError>> {
        Box::pin(async move {
            let mut conversation = self.load(id).await?;
            if let Some(c) = conversation.as_mut() {
                let skip = c.messages.len().saturating_sub(n);
                c.messages.drain(..skip);
            }
            Ok(conversation)
        })
    }

    /// Replaces the whole conversation if its stored version matches `expected`, and returns
    /// the new version. The stored `created_at` is kept; `updated_at` is set.
    fn save<'a>(
        &'a self,
        conversation: &'a Conversation,
        expected: ExpectedVersion,
    ) -> BoxFuture<'a, Result<u64, StateError>>;

    /// Appends messages, creating the conversation (owned by `user_id`) if needed. Messages
    /// with an id already stored in the conversation are skipped, so a retried append does
    /// not duplicate. Concurrent appends to one conversation all land, in some order.
    fn append<'a>(
        &'a self,
        id: &'a str,
        user_id: Option<&'a str>,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<AppendOutcome, StateError>>;

    /// Copies a conversation (messages, summaries, metadata, owner) under a new id.
    /// Fails with [`StateError::NotFound`] if the source is missing and
    /// [`StateError::AlreadyExists`] if the target exists.
    fn fork<'a>(
        &'a self,
        source_id: &'a str,
        new_id: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StateError>>;

    /// Deletes a conversation; returns whether it existed.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StateError>>;

    /// Lists conversations.
    fn list<'a>(
        &'a self,
        options: &'a ListOptions,
    ) -> BoxFuture<'a, Result<Page<ConversationInfo>, StateError>>;

    /// Merges `entries` into the conversation's metadata (keys present overwrite, a `null`
    /// value removes the key), creating the conversation if needed. Returns the new version.
    fn merge_metadata<'a>(
        &'a self,
        id: &'a str,
        entries: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<u64, StateError>>;

    /// Appends a summary. Returns the new version. Fails with [`StateError::NotFound`] if
    /// the conversation is missing.
    fn add_summary<'a>(
        &'a self,
        id: &'a str,
        summary: &'a Summary,
    ) -> BoxFuture<'a, Result<u64, StateError>>;

    /// [`append`](Self::append), only if the stored version is `expected`
    /// ([`New`](ExpectedVersion::New): the conversation must not exist;
    /// [`Exact(v)`](ExpectedVersion::Exact): its version is `v`, where 0 means missing;
    /// [`Any`](ExpectedVersion::Any): exactly `append`). The check and the append are one
    /// atomic step. A batch whose messages are all stored already leaves the version as it
    /// is, like `append`.
    ///
    /// # Errors
    /// [`StateError::Conflict`] with the stored version when it is not `expected`; nothing is
    /// written then. The default body runs `append` for `Any` and returns
    /// [`StateError::Unsupported`] otherwise, so stores written before this method keep
    /// compiling.
    fn append_if<'a>(
        &'a self,
        id: &'a str,
        user_id: Option<&'a str>,
        messages: &'a [Message],
        expected: ExpectedVersion,
    ) -> BoxFuture<'a, Result<AppendOutcome, StateError>> {
        if expected == ExpectedVersion::Any {
            return self.append(id, user_id, messages);
        }
        Box::pin(async {
            Err(StateError::Unsupported {
                operation: "append_if",
            })
        })
    }

    /// Takes (or renews) the turn lease on conversation `id` for `ttl`, held by the caller's
    /// random `token`: `Ok(true)` when `token` now holds it (it was free, expired, or already
    /// `token`'s, in which case the expiry moves to now + `ttl`), `Ok(false)` when another
    /// token holds an unexpired lease. The lease lives in the store, so every process using
    /// the same store sees it: two `serve` replicas on one Postgres or Redis never run turns
    /// on one session at once. Stores that have a clock of their own (Postgres `now()`,
    /// Redis key expiry) time leases with it, so the processes need not agree on the time.
    ///
    /// A lease is independent of the conversation: it can be taken before the conversation
    /// exists and deleting the conversation does not release it. `ttl` is rounded up to one
    /// millisecond; the stores of `promptkit-state` cut a longer one than 100 years to that.
    ///
    /// # Errors
    /// [`StateError::InvalidId`] for an unusable `id` or an empty `token`,
    /// [`StateError::Backend`] or [`StateError::Timeout`] when the store fails, and
    /// [`StateError::Unsupported`] from the default body.
    fn try_lease<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        let _ = (id, token, ttl);
        Box::pin(async {
            Err(StateError::Unsupported {
                operation: "try_lease",
            })
        })
    }

    /// Releases the lease on `id` if `token` holds it: a no-op when another token holds it,
    /// when it has expired, or when there is none.
    ///
    /// # Errors
    /// As [`try_lease`](Self::try_lease).
    fn release_lease<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        let _ = (id, token);
        Box::pin(async {
            Err(StateError::Unsupported {
                operation: "release_lease",
            })
        })
    }
}

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The conversation does not exist.
    #[error("conversation `{id}` not found")]
    NotFound {
        /// The id.
        id: String,
    },
    /// The target of a create or fork already exists.
    #[error("conversation `{id}` already exists")]
    AlreadyExists {
        /// The id.
        id: String,
    },
    /// Optimistic concurrency: the stored version is not the expected one.
    #[error("version conflict on conversation `{id}`: expected {expected:?}, found {actual}")]
    Conflict {
        /// The id.
        id: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stored version (0 when missing).
        actual: u64,
    },
    /// The id is empty or otherwise unusable.
    #[error("invalid conversation id {id:?}: {reason}")]
    InvalidId {
        /// The id.
        id: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Stored data could not be decoded (corruption or a newer, incompatible format).
    #[error("stored data of conversation `{id}` is unreadable: {message}")]
    Corrupt {
        /// The id.
        id: String,
        /// What failed.
        message: String,
    },
    /// The backend failed (connection, I/O, database error).
    #[error("state backend error: {message}")]
    Backend {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend did not answer in time.
    #[error("state backend timed out after {0:?}")]
    Timeout(Duration),
    /// The store was closed.
    #[error("state store is closed")]
    Closed,
    /// A value to be stored is unusable: a user id or message id that is too long or holds
    /// control characters (which not every backend can store). Nothing was written.
    #[error("invalid {what} for conversation `{id}`: {reason}")]
    InvalidValue {
        /// The conversation id.
        id: String,
        /// What was invalid (`user id`, `message id`).
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The store does not implement this operation (a store written before it was added to
    /// the seam).
    #[error("state store does not support `{operation}`")]
    Unsupported {
        /// The [`StateStore`] method.
        operation: &'static str,
    },
}

impl StateError {
    /// A backend error wrapping `source`.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Checks that `id` is usable as a conversation id: non-empty, at most 256 bytes, no
    /// control characters.
    ///
    /// # Errors
    /// [`StateError::InvalidId`] naming what is wrong.
    pub fn validate_id(id: &str) -> Result<(), Self> {
        let reason = if id.is_empty() {
            "it is empty"
        } else if id.len() > 256 {
            "it is longer than 256 bytes"
        } else if id.chars().any(char::is_control) {
            "it contains control characters"
        } else {
            return Ok(());
        };
        Err(Self::InvalidId {
            id: id.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// Checks the arguments of [`StateStore::try_lease`] and [`StateStore::release_lease`]:
    /// a usable conversation id and a non-empty token of at most 256 bytes without control
    /// characters.
    ///
    /// # Errors
    /// [`StateError::InvalidId`] naming what is wrong.
    pub fn validate_lease(id: &str, token: &str) -> Result<(), Self> {
        Self::validate_id(id)?;
        let reason = if token.is_empty() {
            "its lease token is empty"
        } else if let Some(problem) = label_problem(token) {
            return Err(Self::InvalidId {
                id: id.to_owned(),
                reason: format!("its lease token {problem}"),
            });
        } else {
            return Ok(());
        };
        Err(Self::InvalidId {
            id: id.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// Checks that `user_id` can own conversation `id` in every store: at most 256 bytes, no
    /// control characters (Postgres, for one, cannot store U+0000 in text). Stores check it
    /// before writing; callers taking a user id from outside can check it at the edge, before
    /// any paid work.
    ///
    /// # Errors
    /// [`StateError::InvalidValue`] naming what is wrong (not repeating the value).
    pub fn validate_user_id(id: &str, user_id: &str) -> Result<(), Self> {
        match label_problem(user_id) {
            None => Ok(()),
            Some(problem) => Err(Self::InvalidValue {
                id: id.to_owned(),
                what: "user id",
                reason: format!("it {problem}"),
            }),
        }
    }

    /// Checks the ids of `messages` to be stored in conversation `id`: each at most 256 bytes
    /// without control characters. Message text, tool results and metadata may hold any
    /// character, U+0000 included: stores keep them exactly.
    ///
    /// # Errors
    /// [`StateError::InvalidValue`] naming the first bad id by its position in `messages`.
    pub fn validate_message_ids(id: &str, messages: &[Message]) -> Result<(), Self> {
        for (position, message) in messages.iter().enumerate() {
            if let Some(problem) = message.id.as_deref().and_then(label_problem) {
                return Err(Self::InvalidValue {
                    id: id.to_owned(),
                    what: "message id",
                    reason: format!("the id of message {position} {problem}"),
                });
            }
        }
        Ok(())
    }
}

/// What is wrong with a label (user id, message id, lease token) that stores keep as text.
fn label_problem(label: &str) -> Option<&'static str> {
    if label.len() > 256 {
        Some("is longer than 256 bytes")
    } else if label.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    }
}
