//! Test doubles for the PromptKit workspace (not published).
//!
//! - [`upstream`]: a mock OpenAI-compatible HTTP server on 127.0.0.1 with a benchmark mode
//!   (the proxy benchmark's upstream, also runnable as the `promptkit-mock-upstream` binary)
//!   and a scripted mode for provider tests (canned statuses, headers, bodies and SSE
//!   scripts with delays, malformed frames and disconnects, for any path, Anthropic's
//!   `/v1/messages` included), recording every request; Gemini's `generateContent` and
//!   `streamGenerateContent?alt=sse` are answered in benchmark mode too.
//! - [`conformance`]: the cross-provider conformance suite: the same scenarios (text,
//!   streaming, parallel tool calls, images, JSON schema output, usage and cost, every error
//!   class) against any provider, with scripting and request checks in each vendor's wire
//!   format ([`conformance::HttpTarget`]) or a custom [`conformance::Target`].
//! - [`lines`]: the `data:` lines of an SSE body read in pieces, for the benchmark binaries.
//! - `mcp` (feature `mcp`): an order service with one tool, served by rmcp over streamable
//!   HTTP on 127.0.0.1.
//! - `speech` (feature `speech`): local servers speaking the speech vendors' protocols
//!   (Deepgram live, Cartesia, ElevenLabs, OpenAI speech and transcriptions) over plain or
//!   TLS connections, scriptable and with faults, and the speech conformance suite.
//!
//! # Example
//!
//! ```
//! use promptkit_testkit::upstream::{MockUpstream, Profile, Scripted};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = MockUpstream::start(Profile::INSTANT).await?;
//! server.push(Scripted::json(200, json!({"choices": []})));
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.pending(), 1);
//! server.shutdown().await
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub mod conformance;
pub mod lines;
#[cfg(feature = "mcp")]
pub mod mcp;
#[cfg(feature = "speech")]
pub mod speech;
pub mod upstream;

pub use promptkit_core::Message;
