//! The stage contract: the [`Stage`] trait, its object-safe form and its error.
//!
//! A stage gets its run's [`StageContext`], its [`StageInput`] and its [`StageOutput`]
//! (`context.rs`, `input.rs`, `output.rs`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use promptkit_core::{BoxError, BoxFuture, ProviderError, SpeechError, StateError, ToolError};

use crate::context::StageContext;
use crate::input::StageInput;
use crate::output::{OutputClosed, StageOutput};

/// What a stage does with the stream, from the seed's stage table. Descriptive: it is reported
/// in events and metrics; the engine runs every kind the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// One element in, one or more out (1:1, 1:N).
    Transform,
    /// Many in, one out (N:1).
    Accumulate,
    /// Produces elements from little or no input (0:N), such as a model call.
    Generate,
    /// Consumes elements (N:0).
    Sink,
    /// Passes elements through unchanged while looking at them (recording, metrics).
    Observe,
    /// Talks both ways with something outside (a realtime session).
    Bidirectional,
}

impl StageKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transform => "transform",
            Self::Accumulate => "accumulate",
            Self::Generate => "generate",
            Self::Sink => "sink",
            Self::Observe => "observe",
            Self::Bidirectional => "bidirectional",
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step of a pipeline. Each stage of a run executes as its own tokio task.
///
/// `run` is called once per execution with that run's input and output; returning closes the
/// output (done). Returning `Err` is fatal: it cancels the whole run and becomes its result.
/// For recoverable problems, send an error element ([`Element::error`](crate::Element::error)) downstream instead.
///
/// A stage value is shared by every run of its pipeline, which may be concurrent: keep
/// per-run state in locals or in the [`RunContext`](crate::RunContext).
///
/// ```
/// use promptkit_pipeline::{Element, Stage, StageContext, StageError, StageInput, StageOutput};
///
/// /// Upper-cases text elements.
/// struct Shout;
///
/// impl Stage for Shout {
///     fn name(&self) -> &str {
///         "shout"
///     }
///
///     async fn run(
///         &self,
///         _cx: StageContext,
///         mut input: StageInput,
///         output: StageOutput,
///     ) -> Result<(), StageError> {
///         while let Some(mut element) = input.recv().await {
///             if let Some(text) = element.as_text() {
///                 element = Element::text(text.to_uppercase());
///             }
///             output.send(element).await?;
///         }
///         Ok(())
///     }
/// }
///
/// let pipeline = promptkit_pipeline::Pipeline::builder().then(Shout).build()?;
/// assert_eq!(pipeline.stage_names(), ["shout"]);
/// # Ok::<(), promptkit_pipeline::BuildError>(())
/// ```
#[diagnostic::on_unimplemented(
    note = "implement `Stage` with `async fn run(&self, cx: StageContext, input: StageInput, output: StageOutput) -> Result<(), StageError>`, or build one from a closure with `stages::map`"
)]
pub trait Stage: Send + Sync + 'static {
    /// The stage's name, unique within its pipeline.
    fn name(&self) -> &str;

    /// What the stage does (descriptive).
    fn kind(&self) -> StageKind {
        StageKind::Transform
    }

    /// Whether the stage takes several inputs (fan-in). Only such stages may have more than one
    /// incoming edge; their input tags each element with the index of its edge.
    fn accepts_fan_in(&self) -> bool {
        false
    }

    /// Processes the stream until the input ends (or the stage is done).
    fn run(
        &self,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> impl Future<Output = Result<(), StageError>> + Send;
}

/// The object-safe form of [`Stage`] the engine stores (`Arc<dyn DynStage>`). Implemented for
/// every `Stage`; there is no need to implement it by hand.
pub trait DynStage: Send + Sync + 'static {
    /// See [`Stage::name`].
    fn name(&self) -> &str;
    /// See [`Stage::kind`].
    fn kind(&self) -> StageKind;
    /// See [`Stage::accepts_fan_in`].
    fn accepts_fan_in(&self) -> bool;
    /// Runs the stage, boxing its future.
    fn run_boxed(
        self: Arc<Self>,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> BoxFuture<'static, Result<(), StageError>>;
}

impl<S: Stage> DynStage for S {
    fn name(&self) -> &str {
        Stage::name(self)
    }

    fn kind(&self) -> StageKind {
        Stage::kind(self)
    }

    fn accepts_fan_in(&self) -> bool {
        Stage::accepts_fan_in(self)
    }

    fn run_boxed(
        self: Arc<Self>,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> BoxFuture<'static, Result<(), StageError>> {
        Box::pin(async move { self.run(cx, input, output).await })
    }
}

/// A fatal stage error: cancels the run and is returned to the caller.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl StageError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and a cause.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The cause, downcast to `E`.
    pub fn source_as<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_deref().and_then(|s| s.downcast_ref())
    }
}

macro_rules! stage_error_from {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl From<$ty> for StageError {
            fn from(e: $ty) -> Self {
                // The cause is the source, not part of the message: a chain printed with its
                // causes (`{:#}`) shows it once.
                Self::with_source($what, e)
            }
        }
    )*};
}

stage_error_from!(
    ProviderError => "model call failed",
    StateError => "state store call failed",
    ToolError => "tool call failed",
    SpeechError => "speech service call failed",
    std::io::Error => "I/O failed",
    serde_json::Error => "JSON could not be read or written",
    crate::prompt::TemplateError => "prompt template could not be rendered",
    crate::prompt::PromptError => "prompt could not be selected",
);

impl From<OutputClosed> for StageError {
    fn from(e: OutputClosed) -> Self {
        Self::with_source("could not send downstream", e)
    }
}
