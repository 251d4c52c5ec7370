//! Conversation state stores for the PromptKit runtime.
//!
//! This crate will hold the implementations of [`promptkit_core::StateStore`]: memory,
//! SQLite (the embedded default), Postgres and Redis, each behind a cargo feature, with a
//! conformance suite all of them pass. Until they land, the crate re-exports the seam.
//!
//! # Example
//!
//! ```
//! use promptkit_state::{Conversation, ExpectedVersion, Message};
//!
//! let mut conversation = Conversation::new("session-1").with_user("user-7");
//! conversation.messages.push(Message::user("hello").with_id("m1"));
//! // A first save must not overwrite an existing conversation.
//! let expected = ExpectedVersion::New;
//! assert_eq!(conversation.version, 0);
//! # let _ = expected;
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub use promptkit_core::{Conversation, ExpectedVersion, Message, StateError, StateStore};
