//! The stage contract: the [`Stage`] trait, its input and output handles and its context.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use promptkit_core::{BoxError, BoxFuture, ProviderError, SpeechError, StateError, ToolError};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::element::{Element, Payload};
use crate::events::Emitter;
use crate::turn::TurnContext;

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
/// For recoverable problems, send an error element ([`Element::error`]) downstream instead.
///
/// A stage value is shared by every run of its pipeline, which may be concurrent: keep
/// per-run state in locals or in the [`TurnContext`].
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
                Self::with_source(format!(concat!($what, ": {}"), e), e)
            }
        }
    )*};
}

stage_error_from!(
    ProviderError => "provider error",
    StateError => "state error",
    ToolError => "tool error",
    SpeechError => "speech error",
    std::io::Error => "I/O error",
    serde_json::Error => "JSON error",
    crate::prompt::TemplateError => "template error",
    crate::prompt::PromptError => "prompt error",
);

impl From<OutputClosed> for StageError {
    fn from(e: OutputClosed) -> Self {
        Self::with_source("output closed", e)
    }
}

/// Every downstream consumer is gone (they finished or the run is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no downstream stage is receiving")]
pub struct OutputClosed;

/// Per-stage progress feeding the run's idle timeout: a counter of elements and heartbeats,
/// and how many waits on something outside the pipeline are in flight.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    ticks: AtomicU64,
    busy: AtomicU32,
}

impl Progress {
    #[inline]
    pub(crate) fn tick(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Whether the stage is waiting on an outside call (see [`StageContext::busy`]).
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }
}

/// Marks its stage busy until dropped (a wait that is cancelled still ends the mark).
#[derive(Debug)]
pub(crate) struct BusyGuard<'a>(&'a Progress);

impl<'a> BusyGuard<'a> {
    fn new(progress: &'a Progress) -> Self {
        progress.busy.fetch_add(1, Ordering::Relaxed);
        Self(progress)
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        // The wait's end is progress too: the idle period starts now, not when it began.
        self.0.tick();
    }
}

pin_project_lite::pin_project! {
    /// The future of [`StageContext::busy`]: `fut`, with the stage marked busy from its first
    /// poll until it completes (or is dropped).
    ///
    /// Written by hand rather than as an `async fn`, which would hold `fut` twice (as its
    /// argument and as the value it awaits) and so double the size of every stage future that
    /// awaits a busy wait.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Busy<'a, F> {
        #[pin]
        fut: F,
        progress: &'a Progress,
        guard: Option<BusyGuard<'a>>,
        done: bool,
    }
}

impl<F> fmt::Debug for Busy<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Busy")
            .field("started", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Busy<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // As an `async fn` would: a second completion would mark the stage busy again.
        assert!(!*this.done, "`Busy` polled after completion");
        let progress = *this.progress;
        this.guard.get_or_insert_with(|| BusyGuard::new(progress));
        let output = std::task::ready!(this.fut.poll(cx));
        // The mark lifts when the wait ends, not when the future is dropped.
        *this.guard = None;
        *this.done = true;
        Poll::Ready(output)
    }
}

/// What a stage knows about its run.
#[derive(Clone)]
pub struct StageContext {
    pub(crate) name: Arc<str>,
    pub(crate) turn: Arc<TurnContext>,
    pub(crate) emitter: Emitter,
    pub(crate) cancel: Arc<CancellationToken>,
    pub(crate) progress: Arc<Progress>,
}

impl fmt::Debug for StageContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageContext")
            .field("name", &self.name)
            .field("run_id", &self.emitter.run_id())
            .finish_non_exhaustive()
    }
}

impl StageContext {
    /// A context for running a stage outside a pipeline (tests, tools).
    pub fn detached(name: &str, turn: Arc<TurnContext>) -> Self {
        Self {
            name: name.into(),
            turn,
            emitter: Emitter::disabled(),
            cancel: Arc::new(CancellationToken::new()),
            progress: Arc::default(),
        }
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a shared string, for stamping [`ElementMeta::source`](crate::ElementMeta).
    pub fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The run's shared turn data.
    pub fn turn(&self) -> &Arc<TurnContext> {
        &self.turn
    }

    /// The run's event emitter.
    pub fn events(&self) -> &Emitter {
        &self.emitter
    }

    /// Reports progress to the idle timeout. Call it during long operations that neither
    /// receive nor send, so the run is not considered idle; for a wait on something outside
    /// the pipeline, [`busy`](Self::busy) needs no periodic calls.
    pub fn heartbeat(&self) {
        self.progress.tick();
    }

    /// Runs `fut`, a wait on something outside the pipeline (a model call, a tool, a store),
    /// with the stage marked busy: the run's idle timeout, which watches the pipeline, does
    /// not count that time. The wait's own timeouts (the provider's, the tool's) bound it.
    /// Costs three atomic operations (the mark, its release and a progress tick); no timer.
    pub fn busy<F: Future>(&self, fut: F) -> Busy<'_, F> {
        Busy {
            fut,
            progress: &self.progress,
            guard: None,
            done: false,
        }
    }

    /// Marks the stage busy until the guard is dropped: for a stage that waits on outside
    /// work many times in a row (a model stream's events) without one mark per wait.
    pub(crate) fn mark_busy(&self) -> BusyGuard<'_> {
        BusyGuard::new(&self.progress)
    }

    /// Completes when the run is cancelled. Stages rarely need this: a cancelled run drops
    /// every stage future.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        CancellationToken::clone(&self.cancel).cancelled_owned()
    }

    /// Whether the run is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The receiving end of a stage.
pub struct StageInput {
    inner: Inputs,
    progress: Arc<Progress>,
    base: Option<Arc<Map<String, Value>>>,
}

pub(crate) enum Inputs {
    None,
    /// A root stage's whole input, in memory before the run started.
    Ready(std::collections::VecDeque<Element>),
    Single(mpsc::Receiver<Element>),
    Shared(Arc<tokio::sync::Mutex<mpsc::Receiver<Element>>>),
    FanIn {
        // (edge index, receiver); closed receivers are removed.
        sources: Vec<(u32, mpsc::Receiver<Element>)>,
        next: usize,
    },
}

impl fmt::Debug for StageInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inputs::None => "none",
            Inputs::Ready(_) => "ready",
            Inputs::Single(_) => "single",
            Inputs::Shared(_) => "shared",
            Inputs::FanIn { .. } => "fan-in",
        };
        f.debug_struct("StageInput").field("kind", &kind).finish()
    }
}

impl StageInput {
    pub(crate) fn new(
        inner: Inputs,
        progress: Arc<Progress>,
        base: Option<Arc<Map<String, Value>>>,
    ) -> Self {
        Self {
            inner,
            progress,
            base,
        }
    }

    /// An input fed by `rx`, for running a stage outside a pipeline.
    pub fn from_receiver(rx: mpsc::Receiver<Element>) -> Self {
        Self::new(Inputs::Single(rx), Arc::default(), None)
    }

    /// An input that is already closed.
    pub fn empty() -> Self {
        Self::new(Inputs::None, Arc::default(), None)
    }

    /// The next element, or `None` when every upstream is done.
    pub async fn recv(&mut self) -> Option<Element> {
        let mut element = match &mut self.inner {
            Inputs::None => None,
            Inputs::Ready(elements) => elements.pop_front(),
            Inputs::Single(rx) => rx.recv().await,
            Inputs::Shared(rx) => rx.lock().await.recv().await,
            Inputs::FanIn { sources, next } => {
                poll_fn(|cx| {
                    let mut i = 0;
                    while i < sources.len() {
                        let idx = (*next + i) % sources.len();
                        match sources[idx].1.poll_recv(cx) {
                            Poll::Ready(Some(mut e)) => {
                                e.meta.merge_input = Some(sources[idx].0);
                                *next = idx + 1;
                                return Poll::Ready(Some(e));
                            }
                            Poll::Ready(None) => {
                                sources.remove(idx);
                                if sources.is_empty() {
                                    return Poll::Ready(None);
                                }
                                // Re-check the element now at `idx` without advancing.
                                *next = idx;
                                i = 0;
                            }
                            Poll::Pending => i += 1,
                        }
                    }
                    if sources.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }
        }?;
        self.progress.tick();
        if let Some(base) = &self.base {
            element.meta.merge_base(base);
        }
        Some(element)
    }
}

/// Sends `element` to every target's sender (a clone each, the original to the first),
/// waiting while one is full; `true` when at least one received it. Shared by stage outputs
/// and the pipeline input; callers decide what an empty list means.
pub(crate) async fn broadcast<T>(
    targets: &[T],
    sender: impl Fn(&T) -> &mpsc::Sender<Element>,
    element: Element,
) -> bool {
    match targets {
        [] => false,
        [only] => send_one(sender(only), element).await.is_ok(),
        [first, rest @ ..] => {
            let mut delivered = false;
            for target in rest {
                delivered |= send_one(sender(target), element.clone()).await.is_ok();
            }
            delivered |= send_one(sender(first), element).await.is_ok();
            delivered
        }
    }
}

/// Sends `element` on `tx`: at once when the channel has room, which is the common case and
/// needs no send future and no waker; otherwise waits for room (backpressure).
pub(crate) async fn send_one(
    tx: &mpsc::Sender<Element>,
    element: Element,
) -> Result<(), OutputClosed> {
    match tx.try_send(element) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(element)) => {
            tx.send(element).await.map_err(|_| OutputClosed)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(OutputClosed),
    }
}

/// The future of [`StageOutput::send`].
#[must_use = "futures do nothing unless awaited"]
pub struct SendElement<'a> {
    output: &'a StageOutput,
    element: Option<Element>,
    waiting: Option<BoxFuture<'a, Result<(), OutputClosed>>>,
}

impl fmt::Debug for SendElement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendElement")
            .field("output", self.output)
            .field("waiting", &self.waiting.is_some())
            .finish_non_exhaustive()
    }
}

impl Future for SendElement<'_> {
    type Output = Result<(), OutputClosed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(waiting) = &mut this.waiting {
            return waiting.as_mut().poll(cx);
        }
        let Some(element) = this.element.take() else {
            // Polled again after it completed.
            return Poll::Ready(Ok(()));
        };
        match this.output.start_send(element) {
            Ok(None) => Poll::Ready(Ok(())),
            Ok(Some(waiting)) => this.waiting.insert(waiting).as_mut().poll(cx),
            Err(closed) => Poll::Ready(Err(closed)),
        }
    }
}

/// What [`StageOutput::try_send`] did.
pub(crate) enum TrySend {
    /// Sent.
    Sent,
    /// Every target has stopped receiving.
    Closed,
    /// Sending would wait (a full channel, or several targets): the element, back.
    Full(Element),
}

/// A downstream target of a stage's output.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) tx: mpsc::Sender<Element>,
    /// Set on the run's output: its consumer is woken through the tap, per its
    /// [`OutputWake`]. Declared after `tx`, so the sender is gone when the tap's drop wakes
    /// the consumer to see the end.
    pub(crate) tap: Option<OutputTap>,
}

impl Target {
    /// A target into another stage's channel.
    pub(crate) fn stage(names: Vec<Arc<str>>, tx: mpsc::Sender<Element>) -> Self {
        Self {
            names,
            tx,
            tap: None,
        }
    }

    /// Sends when the channel has room. A full output channel wakes its consumer whatever it
    /// asked for, so that the stage never waits on a consumer that sleeps.
    fn try_send(&self, element: Element) -> TrySend {
        let wakes = self
            .tap
            .as_ref()
            .is_some_and(|tap| tap.0.wakes_for(&element));
        let sent = match self.tx.try_send(element) {
            Ok(()) => TrySend::Sent,
            Err(mpsc::error::TrySendError::Closed(_)) => TrySend::Closed,
            Err(mpsc::error::TrySendError::Full(element)) => TrySend::Full(element),
        };
        if let Some(tap) = &self.tap
            && (wakes || matches!(sent, TrySend::Full(_)))
        {
            tap.0.wake();
        }
        sent
    }

    /// Waits for room (after [`try_send`](Self::try_send) found none), then sends. This is
    /// the slow path, and it always wakes the run's consumer after its send: with several
    /// leaf stages waiting on a full channel, the send may have filled it again, and the
    /// next sender then needs the consumer awake.
    async fn send_waiting(&self, element: Element) -> Result<(), OutputClosed> {
        self.tx.send(element).await.map_err(|_| OutputClosed)?;
        if let Some(tap) = &self.tap {
            tap.0.wake();
        }
        Ok(())
    }

    /// Sends, waiting while the channel is full.
    async fn send(&self, element: Element) -> Result<(), OutputClosed> {
        match self.try_send(element) {
            TrySend::Sent => Ok(()),
            TrySend::Full(element) => self.send_waiting(element).await,
            TrySend::Closed => Err(OutputClosed),
        }
    }
}

/// Which elements wake the consumer of a run's output when it waits for the next one.
///
/// Every element reaches the consumer, in order, whatever it chooses: the choice is only
/// which arrivals interrupt its wait. A consumer that streams text to a client and reads the
/// complete messages at the end need not be woken for each message; one that collects the
/// whole output need only be woken at its end. Each wake saves a trip through the scheduler
/// for a task that had nothing to do yet. A full channel always wakes the consumer, so a run
/// never waits on a consumer that sleeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
pub enum OutputWake {
    /// Every element (the default).
    #[default]
    All,
    /// Every element except complete messages ([`Payload::Message`]), which wait for the
    /// next element that wakes the consumer, or for the end of the output.
    SkipMessages,
    /// Only the end of the output.
    End,
}

/// The consumer's side of a run's output wake-ups: its waker and its [`OutputWake`].
#[derive(Debug, Default)]
pub(crate) struct OutputSignal {
    waker: futures_util::task::AtomicWaker,
    wake: AtomicU8,
}

impl OutputSignal {
    pub(crate) fn set(&self, wake: OutputWake) {
        self.wake.store(wake as u8, Ordering::Relaxed);
    }

    fn wakes_for(&self, element: &Element) -> bool {
        match self.wake.load(Ordering::Relaxed) {
            w if w == OutputWake::All as u8 => true,
            w if w == OutputWake::SkipMessages as u8 => {
                !matches!(element.payload, Payload::Message(_))
            }
            _ => false,
        }
    }

    /// Registers the consumer's waker.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    fn wake(&self) {
        self.waker.wake();
    }
}

/// A stage's hold on the run's output signal; dropping it (the stage is done) wakes the
/// consumer, which then finds the output ended once every stage is done.
#[derive(Debug, Clone)]
pub(crate) struct OutputTap(pub(crate) Arc<OutputSignal>);

impl Drop for OutputTap {
    fn drop(&mut self) {
        self.0.wake();
    }
}

/// The sending end of a stage. Sending waits while the downstream channel is full
/// (backpressure).
pub struct StageOutput {
    targets: Targets,
    progress: Arc<Progress>,
}

/// A stage's targets. Most stages have one, kept inline: a send then reads the target from
/// the stage's own state rather than from a separate allocation, one cache line fewer per
/// element (the line is cold again by the next model chunk when many runs are in flight).
enum Targets {
    One(Target),
    Many(Vec<Target>),
}

impl Targets {
    fn as_slice(&self) -> &[Target] {
        match self {
            Self::One(target) => std::slice::from_ref(target),
            Self::Many(targets) => targets,
        }
    }
}

impl fmt::Debug for StageOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageOutput")
            .field("targets", &self.target_names())
            .finish()
    }
}

impl StageOutput {
    pub(crate) fn new(targets: Vec<Target>, progress: Arc<Progress>) -> Self {
        let targets = match <[Target; 1]>::try_from(targets) {
            Ok([only]) => Targets::One(only),
            Err(targets) => Targets::Many(targets),
        };
        Self { targets, progress }
    }

    /// An output into `tx`, for running a stage outside a pipeline.
    pub fn from_sender(tx: mpsc::Sender<Element>) -> Self {
        Self::new(
            vec![Target::stage(vec!["output".into()], tx)],
            Arc::default(),
        )
    }

    /// An output that discards everything (for sinks that produce nothing).
    pub fn discard() -> Self {
        Self::new(Vec::new(), Arc::default())
    }

    /// The downstream stage names, one entry per target (competing consumers share a target).
    pub fn target_names(&self) -> Vec<String> {
        self.targets
            .as_slice()
            .iter()
            .map(|t| t.names.iter().map(|n| &**n).collect::<Vec<_>>().join("|"))
            .collect()
    }

    /// Number of targets.
    pub fn target_count(&self) -> usize {
        self.targets.as_slice().len()
    }

    /// Sends `element` to every target (broadcast), in order; waits while a target is full.
    /// Targets that have stopped receiving are skipped from then on.
    ///
    /// The returned future is small (the element and a pointer): a send to a single target
    /// with room completes on its first poll without a send future or a waker; a full
    /// channel or a broadcast waits in a boxed future.
    ///
    /// # Errors
    /// [`OutputClosed`] when no target is receiving any more. A stage with no targets at all
    /// (a sink) never fails.
    pub fn send(&self, element: Element) -> SendElement<'_> {
        SendElement {
            output: self,
            element: Some(element),
            waiting: None,
        }
    }

    /// Sends `element` at once when that needs no wait, and returns what is left to await:
    /// nothing, or the wait for room (boxed). Unlike [`send`](Self::send), whose future
    /// holds the element until it is first polled, the element is never kept in the
    /// caller's state, so a stage that sends often keeps its future small (its future is
    /// copied whole at every run, and its lines are cold by the next poll).
    pub(crate) fn send_now(
        &self,
        element: Element,
    ) -> impl Future<Output = Result<(), OutputClosed>> + Send + '_ {
        let sent = self.start_send(element);
        async move {
            match sent? {
                Some(wait) => wait.await,
                None => Ok(()),
            }
        }
    }

    /// The one way every send starts: sends `element` at once when that needs no wait (one
    /// target with room in its channel, or no target) and returns `None`; otherwise returns
    /// the wait, boxed ([`send_waiting`](Self::send_waiting)), so that the caller's own
    /// future does not hold it.
    ///
    /// # Errors
    /// [`OutputClosed`] when the one target has stopped receiving.
    pub(crate) fn start_send(
        &self,
        element: Element,
    ) -> Result<Option<BoxFuture<'_, Result<(), OutputClosed>>>, OutputClosed> {
        let sent = match self.targets.as_slice() {
            [] => TrySend::Sent,
            [only] => only.try_send(element),
            _ => TrySend::Full(element),
        };
        match sent {
            TrySend::Sent => {
                self.progress.tick();
                Ok(None)
            }
            TrySend::Closed => Err(OutputClosed),
            TrySend::Full(element) => Ok(Some(Box::pin(self.send_waiting(element)))),
        }
    }

    /// Sends `element` after [`start_send`](Self::start_send) found no room: waits for room
    /// in the one target's channel, or broadcasts to several, in order.
    async fn send_waiting(&self, element: Element) -> Result<(), OutputClosed> {
        self.progress.tick();
        match self.targets.as_slice() {
            [only] => only.send_waiting(element).await,
            many => {
                // A run's output is the only target of its stage, so it is never among many.
                debug_assert!(many.iter().all(|t| t.tap.is_none()));
                if broadcast(many, |t| &t.tx, element).await {
                    Ok(())
                } else {
                    Err(OutputClosed)
                }
            }
        }
    }

    /// Sends `element` to the target at `index` (routers).
    ///
    /// # Errors
    /// [`OutputClosed`] when that target is not receiving or does not exist.
    pub async fn send_to(&self, index: usize, element: Element) -> Result<(), OutputClosed> {
        self.progress.tick();
        let target = self.targets.as_slice().get(index).ok_or(OutputClosed)?;
        target.send(element).await
    }

    /// The index of the target that includes the stage `name`.
    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets
            .as_slice()
            .iter()
            .position(|t| t.names.iter().any(|n| &**n == name))
    }

    /// Whether every target has stopped receiving.
    pub fn is_closed(&self) -> bool {
        let targets = self.targets.as_slice();
        !targets.is_empty() && targets.iter().all(|t| t.tx.is_closed())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::StageContext;
    use crate::turn::TurnContext;

    #[test]
    fn a_busy_wait_marks_the_stage_from_its_first_poll_until_it_completes() {
        let cx = StageContext::detached("s", Arc::new(TurnContext::default()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<u8>();
        let mut wait = Box::pin(cx.busy(async move { (&mut rx).await.unwrap_or(0) }));
        let mut task = Context::from_waker(Waker::noop());
        assert!(!cx.progress.is_busy(), "not busy before the first poll");
        assert!(wait.as_mut().poll(&mut task).is_pending());
        assert!(cx.progress.is_busy(), "busy while waiting");
        let ticks = cx.progress.get();
        tx.send(7).unwrap();
        assert_eq!(wait.as_mut().poll(&mut task), Poll::Ready(7));
        // Completed but not yet dropped: the mark is already lifted, and the end of the wait
        // counts as progress.
        assert!(!cx.progress.is_busy(), "not busy once the wait is over");
        assert!(cx.progress.get() > ticks);
        drop(wait);
        assert!(!cx.progress.is_busy());
    }

    #[test]
    fn dropping_a_pending_busy_wait_lifts_the_mark() {
        let cx = StageContext::detached("s", Arc::new(TurnContext::default()));
        let mut wait = Box::pin(cx.busy(std::future::pending::<()>()));
        let mut task = Context::from_waker(Waker::noop());
        assert!(wait.as_mut().poll(&mut task).is_pending());
        assert!(cx.progress.is_busy());
        drop(wait);
        assert!(!cx.progress.is_busy());
    }
}
