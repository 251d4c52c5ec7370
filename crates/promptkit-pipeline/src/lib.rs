//! The PromptKit stage engine: a DAG of concurrent, streaming stages.
//!
//! A [`Pipeline`] is a validated graph of named [`Stage`]s. Each run gives every stage its
//! own tokio task, connects them with bounded channels (backpressure: a slow consumer slows
//! its producer), and streams [`Element`]s through as they are produced.
//!
//! - **Elements** ([`Element`], [`Payload`], [`Control`]): text, audio, video, images,
//!   messages, tool calls and content parts, or control signals (end of turn, end of
//!   stream, interrupt, error), with typed [`ElementMeta`].
//! - **Stages** ([`Stage`]): implement `async fn run`, or build one from a closure with
//!   [`stages::map`], [`stages::filter`], [`stages::flat_map`]. Built-ins: routers, merge,
//!   metrics, debug, recording ([`stages`]), and the prompt stages ([`prompt`]).
//! - **Topology** ([`PipelineBuilder`]): chains, broadcast branches (every branch sees every
//!   element), competing consumers on request, fan-in through a merge stage; `build()`
//!   rejects cycles (naming the path), duplicate names, dangling edges and fan-in without a
//!   merge.
//! - **Runs** ([`Pipeline::execute`], [`Pipeline::start`], [`Pipeline::execute_sync`]): a
//!   fresh [`RunContext`] per run; the first fatal stage error or panic cancels the run and
//!   is returned; execution and idle timeouts; dropping the output cancels; shutdown with a
//!   grace period. No task outlives its run.
//! - **Events** ([`events`]): typed lifecycle events on a bounded [`EventBus`](events::EventBus),
//!   a JSON Lines event store per session, and replay.
//!
//! The pipeline depends only on `promptkit-core`: it takes providers, stores and tools
//! through the core seams and never names a vendor.
//!
//! # Example: a custom stage in a pipeline
//!
//! ```
//! use promptkit_pipeline::{
//!     Element, Pipeline, Stage, StageContext, StageError, StageInput, StageOutput, RunData,
//!     stages,
//! };
//!
//! /// Splits text elements into words.
//! struct Words;
//!
//! impl Stage for Words {
//!     fn name(&self) -> &str {
//!         "words"
//!     }
//!
//!     async fn run(
//!         &self,
//!         _cx: StageContext,
//!         mut input: StageInput,
//!         output: StageOutput,
//!     ) -> Result<(), StageError> {
//!         while let Some(element) = input.recv().await {
//!             match element.as_text() {
//!                 Some(text) => {
//!                     for word in text.split_whitespace() {
//!                         output.send(Element::text(word)).await?;
//!                     }
//!                 }
//!                 None => output.send(element).await?,
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = Pipeline::builder()
//!     .then(Words)
//!     .then(stages::map("shout", |e: Element| {
//!         Ok(match e.as_text() {
//!             Some(t) => Element::text(format!("{} ", t.to_uppercase())),
//!             None => e,
//!         })
//!     }))
//!     .build()?;
//!
//! let result = pipeline
//!     .execute_sync(RunData::default(), [Element::text("stages run concurrently")])
//!     .await?;
//! assert_eq!(result.text, "STAGES RUN CONCURRENTLY ");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod builder;
mod context;
mod element;
pub mod events;
pub mod hooks;
mod input;
mod output;
mod pipeline;
pub mod prompt;
pub mod provider;
mod run;
mod run_context;
mod stage;
pub mod stages;

pub use builder::{BuildError, DEFAULT_CHANNEL_CAPACITY, PipelineBuilder, PipelineConfig};
pub use context::{Busy, StageContext};
pub use element::{
    Control, Element, ElementError, ElementMeta, ErrorClass, ErrorKind, ImageFrame, Interrupt,
    Payload, VideoFrame,
};
pub use input::{StageInput, TryRecvError};
pub use output::{OutputClosed, StageOutput, TrySendError};
pub use pipeline::{
    Execution, ExecutionResult, InputClosed, InputSender, OutputStream, Pipeline, PipelineError,
    RunFailure, RunHandle, RunSummary,
};
pub use run_context::{Extensions, Playback, RunContext, RunData};
pub use stage::{DynStage, Stage, StageError, StageKind};
