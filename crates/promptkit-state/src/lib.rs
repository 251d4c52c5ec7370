//! Conversation state stores for the PromptKit runtime.
//!
//! This crate implements [`promptkit_core::StateStore`], the seam a pipeline uses to keep
//! conversations between turns, runs and processes:
//!
//! | Store | Feature | Use |
//! |---|---|---|
//! | [`MemoryStore`] | `memory` (default) | tests, single process; sliding TTL, LRU bound |
//! | `SqliteStore` | `sqlite` (default) | the embedded default: a file, WAL, migrations; sliding TTL |
//! | `PostgresStore` | `postgres` | many processes sharing one database; sliding TTL |
//! | `RedisStore` | `redis` | many processes, with a sliding TTL |
//!
//! Every store passes the conformance suite (module `conformance`, feature `conformance`):
//! versioned saves that never silently overwrite ([`StateError::Conflict`]), atomic idempotent
//! appends (a message whose id is stored is skipped), fork, delete, listing by user, metadata
//! and summaries. A [`Summarizer`] keeps a rolling summary of long conversations through any
//! provider. Messages are stored whole, as their JSON form, so tool calls, media references and
//! opaque provider data survive.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # {
//! use promptkit_state::{ExpectedVersion, MemoryStore, Message, StateError, StateStore};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let batch = [Message::user("hello").with_id("m1")];
//! let first = store.append("session-1", Some("user-7"), &batch).await?;
//! let retry = store.append("session-1", Some("user-7"), &batch).await?;
//! assert_eq!((first.appended, retry.appended), (1, 0)); // a retried append is a no-op
//!
//! let mut conversation = store.load("session-1").await?.expect("stored");
//! conversation.messages.push(Message::assistant("hi!").with_id("m2"));
//! let version = store.save(&conversation, ExpectedVersion::Exact(conversation.version)).await?;
//! // A writer still holding the old version is refused instead of overwriting.
//! let stale = store.save(&conversation, ExpectedVersion::Exact(version - 1)).await;
//! assert!(matches!(stale, Err(StateError::Conflict { .. })));
//! # Ok::<(), StateError>(())
//! # }).unwrap();
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code, reason = "helpers for the database stores")
)]
#![doc(test(attr(deny(warnings))))]

mod common;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod redact;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;
mod summarize;

#[cfg(feature = "memory")]
pub use memory::{MemoryConfig, MemoryStore};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresStore};
pub use promptkit_core::{
    AppendOutcome, Conversation, ConversationInfo, ExpectedVersion, ListOptions, Message, Page,
    SortOrder, StateError, StateStore, Summary,
};
pub use redact::redact_url;
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteStore};
pub use summarize::{SummarizeError, Summarizer, SummarizerConfig};
