//! Test doubles for the PromptKit workspace.
//!
//! This crate (not published) will hold vendor-protocol mock servers (HTTP, SSE and
//! WebSocket), fixtures and the conformance suites that providers and state stores run.
//! Until they land, it re-exports the core vocabulary tests build on.
//!
//! # Example
//!
//! ```
//! use promptkit_testkit::Message;
//!
//! let fixture = vec![Message::user("hi"), Message::assistant("hello")];
//! assert_eq!(fixture.len(), 2);
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub use promptkit_core::Message;
