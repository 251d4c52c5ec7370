//! Running a built pipeline: starting runs, their input, their output and their handle.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use promptkit_core::{Cost, Message, Role, Usage};
use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::builder::{PipelineBuilder, PipelineConfig};
use crate::context::{Progress, StageContext};
use crate::element::{Control, Element, ElementError, Interrupt, Payload};
use crate::events::{Emitter, EventBus, EventKind};
use crate::input::{Closing, Inputs, StageInput};
use crate::output::{StageOutput, Target, TrySendError, send_all, try_deliver};
use crate::run::{Outcome, RunShared, Runs, millis};
use crate::run_context::{RunContext, RunData};
use crate::{DynStage, StageError};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A stage returned an error; the run was cancelled.
    #[error("stage `{stage}` failed")]
    StageFailed {
        /// The stage.
        stage: String,
        /// Its error.
        #[source]
        source: StageError,
    },
    /// A stage panicked; the run was cancelled.
    #[error("stage `{stage}` panicked: {message}")]
    StagePanicked {
        /// The stage.
        stage: String,
        /// The panic message.
        message: String,
    },
    /// The run exceeded its execution timeout.
    #[error("run exceeded its execution timeout of {0:?}")]
    ExecutionTimeout(Duration),
    /// No stage made progress for the idle timeout.
    #[error("run made no progress for {0:?} (idle timeout)")]
    IdleTimeout(Duration),
    /// The run was cancelled by its caller (or by a shutdown past its grace period).
    #[error("run cancelled")]
    Cancelled,
    /// The pipeline is shutting down and takes no new runs.
    #[error("pipeline is shutting down")]
    ShuttingDown,
    /// The run ended without reporting its result (a runtime shutdown).
    #[error("run ended without a result (was the runtime shut down?)")]
    Lost,
}

/// An edge of the built graph.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub(crate) from: usize,
    pub(crate) to: usize,
    /// Its channel's capacity; the pipeline's default when `None`.
    pub(crate) capacity: Option<usize>,
    /// Its consumers compete for elements instead of each getting every one.
    pub(crate) competing: bool,
}

/// The built topology, shared by every run.
pub(crate) struct Topology {
    pub(crate) stages: Vec<Arc<dyn DynStage>>,
    pub(crate) edges: Vec<Edge>,
    /// Per stage, the indices of its outgoing edges.
    pub(crate) outgoing: Vec<Vec<usize>>,
    /// Per stage, the indices of its incoming edges.
    pub(crate) incoming: Vec<Vec<usize>>,
    pub(crate) config: PipelineConfig,
    pub(crate) bus: Option<EventBus>,
    pub(crate) base_metadata: Option<Arc<Map<String, Value>>>,
}

pub(crate) struct Inner {
    pub(crate) topology: Topology,
    pub(crate) names: Vec<Arc<str>>,
    /// The name of the run's output as a target ("output"), shared by every run.
    output_name: Arc<str>,
    pub(crate) shutting_down: AtomicBool,
    /// The runs in flight, and the idle watchdog while any is.
    pub(crate) runs: Mutex<Runs>,
    pub(crate) runs_changed: Notify,
    next_run: AtomicU64,
}

/// A validated DAG of stages. Cheap to clone; runs may execute concurrently.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.stage_names())
            .field("edges", &self.inner.topology.edges.len())
            .field("config", &self.inner.topology.config)
            .finish_non_exhaustive()
    }
}

static PROCESS_RUNS: AtomicU64 = AtomicU64::new(0);

/// This process's id, read once: every run's id starts with it.
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// How a run's input reaches its root stages: always through their channels.
enum Feed {
    /// The caller sends through an [`InputSender`] (a live run).
    Live,
    /// A feeder task forwards this stream.
    Stream(FeedStream),
    /// Input known up front: queued at launch as far as the root channels have room; a
    /// feeder task forwards only what is left.
    Ready(Box<dyn Iterator<Item = Element> + Send>),
}

/// The input a feeder task forwards.
type FeedStream = Pin<Box<dyn Stream<Item = Element> + Send>>;

/// The channels of one run, wired per the topology.
struct Wiring {
    /// Each stage's input and output, by stage index.
    stages: Vec<(StageInput, StageOutput)>,
    /// The senders into the root stages' inputs.
    roots: Vec<mpsc::Sender<Element>>,
    /// The run's output: every leaf stage sends here.
    output: mpsc::Receiver<Element>,
}

impl Pipeline {
    /// A builder.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::new()
    }

    pub(crate) fn from_parts(topology: Topology) -> Self {
        let names = topology
            .stages
            .iter()
            .map(|s| Arc::from(s.name()))
            .collect();
        Self {
            inner: Arc::new(Inner {
                topology,
                names,
                output_name: Arc::from("output"),
                shutting_down: AtomicBool::new(false),
                runs: Mutex::default(),
                runs_changed: Notify::new(),
                next_run: AtomicU64::new(0),
            }),
        }
    }

    /// The stage names, in the order they were added.
    pub fn stage_names(&self) -> Vec<&str> {
        self.inner.names.iter().map(|n| &**n).collect()
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.inner.topology.config
    }

    /// Runs in flight.
    pub fn active_runs(&self) -> usize {
        self.inner
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// Starts a live run (a session) fed through the returned [`InputSender`]; closing
    /// (dropping) every sender ends the input. Its root stages first receive
    /// [`Control::Start`]; its idle timeout is
    /// [`PipelineConfig::session_idle_timeout`]. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`PipelineError::ShuttingDown`] after [`Pipeline::shutdown`].
    pub fn start(&self, data: RunData) -> Result<(InputSender, Execution), PipelineError> {
        let (sender, execution) = self.launch(data, Feed::Live)?;
        let sender = sender.ok_or(PipelineError::Lost)?;
        Ok((sender, execution))
    }

    /// Starts a run fed by `input`, which a task forwards to the root stages. Must be called
    /// inside a tokio runtime.
    ///
    /// # Errors
    /// [`PipelineError::ShuttingDown`] after [`Pipeline::shutdown`].
    pub fn execute<S>(&self, data: RunData, input: S) -> Result<Execution, PipelineError>
    where
        S: Stream<Item = Element> + Send + 'static,
    {
        self.launch(data, Feed::Stream(Box::pin(input)))
            .map(|(_, execution)| execution)
    }

    /// Starts a run on input known up front (a turn's history and message): what fits in
    /// the root stages' channels is queued at once, and a task forwards only the rest. Must
    /// be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`PipelineError::ShuttingDown`] after [`Pipeline::shutdown`].
    pub fn execute_iter<I>(&self, data: RunData, elements: I) -> Result<Execution, PipelineError>
    where
        I: IntoIterator<Item = Element>,
        I::IntoIter: Send + 'static,
    {
        self.launch(data, Feed::Ready(Box::new(elements.into_iter())))
            .map(|(_, execution)| execution)
    }

    /// Runs to completion on `elements` and collects the result.
    ///
    /// # Errors
    /// A [`RunFailure`] with the error and everything collected before it.
    pub async fn execute_sync(
        &self,
        data: RunData,
        elements: impl IntoIterator<Item = Element, IntoIter: Send + 'static>,
    ) -> Result<ExecutionResult, RunFailure> {
        let started = Instant::now();
        let execution = match self.execute_iter(data, elements) {
            Ok(e) => e,
            Err(error) => {
                return Err(RunFailure {
                    error,
                    partial: ExecutionResult::default(),
                });
            }
        };
        let (mut output, handle) = execution.into_parts();
        let mut result = ExecutionResult::default();
        while let Some(element) = output.recv().await {
            result.absorb(element);
        }
        result.duration = started.elapsed();
        match handle.wait().await {
            Ok(_) => Ok(result),
            Err(error) => Err(RunFailure {
                error,
                partial: result,
            }),
        }
    }

    /// Stops taking runs, closes the input of every run in flight and waits up to the
    /// configured grace period for them to finish, then cancels the rest and waits for their
    /// tasks to end.
    pub async fn shutdown(&self) {
        self.shutdown_with_grace(self.inner.topology.config.shutdown_grace)
            .await;
    }

    /// [`shutdown`](Self::shutdown) with an explicit grace period.
    pub async fn shutdown_with_grace(&self, grace: Duration) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        for run in self.runs_in_flight() {
            run.close_input();
        }
        let deadline = tokio::time::Instant::now() + grace;
        if tokio::time::timeout_at(deadline, self.all_runs_ended())
            .await
            .is_ok()
        {
            return;
        }
        for run in self.runs_in_flight() {
            run.cancel();
        }
        self.all_runs_ended().await;
    }

    fn runs_in_flight(&self) -> Vec<Arc<RunShared>> {
        self.inner
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .values()
            .cloned()
            .collect()
    }

    async fn all_runs_ended(&self) {
        loop {
            let notified = self.inner.runs_changed.notified();
            if self.active_runs() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Starts one run: its context, its channels, its shared state, its tasks, its input.
    fn launch(
        &self,
        data: RunData,
        feed: Feed,
    ) -> Result<(Option<InputSender>, Execution), PipelineError> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(PipelineError::ShuttingDown);
        }
        let topo = &self.inner.topology;
        let live = matches!(feed, Feed::Live);
        let run_id = format!(
            "run-{:x}-{:x}",
            process_id(),
            PROCESS_RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let emitter = Emitter::new(topo.bus.clone(), run_id, data.session_id.as_deref());
        let context = Arc::new(RunContext::new(data));
        let progress: Vec<Arc<Progress>> =
            (0..=topo.stages.len()).map(|_| Arc::default()).collect();
        let closing = live.then(|| Arc::new(Closing::default()));
        let wiring = self.wire(&context, &progress, closing.as_ref());
        emitter.emit(EventKind::PipelineStarted {
            stages: topo.stages.len(),
        });

        let idle_limit = if live {
            topo.config.session_idle_timeout
        } else {
            topo.config.idle_timeout
        };
        let roots = wiring.roots;
        let (sender, feeder) = match feed {
            Feed::Live => {
                for root in &roots {
                    // The channels are new and empty, so this never waits.
                    let _ = root.try_send(Element::control(Control::Start));
                }
                let sender = InputSender {
                    txs: roots.into(),
                    context: Arc::clone(&context),
                };
                (Some(sender), None)
            }
            Feed::Stream(input) => (None, Some((input, roots))),
            Feed::Ready(elements) => (None, queue_ready(elements, roots)),
        };
        let (result_tx, result_rx) = oneshot::channel();
        let run = Arc::new(RunShared::new(
            Arc::clone(&self.inner),
            self.inner.next_run.fetch_add(1, Ordering::Relaxed),
            progress,
            emitter.clone(),
            closing,
            idle_limit,
            topo.stages.len() + usize::from(feeder.is_some()),
            result_tx,
        ));
        run.register();

        if let Some((input, roots)) = feeder {
            run.spawn_task(crate::run::FEEDER, async move {
                feed_roots(input, roots).await;
                Outcome::Done
            });
        }
        self.spawn_stages(&run, &context, &emitter, wiring.stages);

        let output = OutputStream {
            rx: wiring.output,
            base: topo.base_metadata.clone(),
            progress: Arc::clone(run.consumer_progress()),
            run: Arc::clone(&run),
            context: Arc::clone(&context),
            announced: 0,
            waiting_for_interrupt: None,
            live,
            exhausted: false,
        };
        let handle = RunHandle {
            run,
            result: result_rx,
            context,
        };
        Ok((sender, Execution { output, handle }))
    }

    /// Creates the run's channels: one per edge (one shared by each group of competing
    /// consumers), one into each root stage, and the output every leaf stage sends to.
    fn wire(
        &self,
        context: &Arc<RunContext>,
        progress: &[Arc<Progress>],
        closing: Option<&Arc<Closing>>,
    ) -> Wiring {
        let topo = &self.inner.topology;
        let capacity = topo.config.channel_capacity;
        let n = topo.stages.len();
        let mut targets: Vec<Vec<Target>> = vec![Vec::new(); n];
        // Per stage: (slot among its incoming edges, where that edge's elements arrive).
        let mut sources: Vec<Vec<(u32, Source)>> = (0..n).map(|_| Vec::new()).collect();
        // Competing consumers of one stage share a channel: (target, receiver) per source.
        let mut competing: HashMap<usize, (Target, SharedReceiver)> = HashMap::new();
        for (e, edge) in topo.edges.iter().enumerate() {
            let slot = topo.incoming[edge.to]
                .iter()
                .position(|&x| x == e)
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(u32::MAX);
            let name = Arc::clone(&self.inner.names[edge.to]);
            let cap = edge.capacity.unwrap_or(capacity);
            if edge.competing {
                let (target, rx) = competing.entry(edge.from).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(cap);
                    (
                        Target::new(Vec::new(), tx),
                        Arc::new(tokio::sync::Mutex::new(rx)),
                    )
                });
                target.names.push(name);
                sources[edge.to].push((slot, Source::Shared(Arc::clone(rx))));
            } else {
                let (tx, rx) = mpsc::channel(cap);
                targets[edge.from].push(Target::new(vec![name], tx));
                sources[edge.to].push((slot, Source::Single(rx)));
            }
        }
        for (from, (target, _)) in competing {
            targets[from].push(target);
        }

        let (out_tx, output) = mpsc::channel(capacity);
        let mut roots = Vec::new();
        let mut stages = Vec::with_capacity(n);
        for (i, stage_targets) in targets.into_iter().enumerate() {
            let mut ins = std::mem::take(&mut sources[i]);
            let is_root = ins.is_empty();
            if is_root {
                let (tx, rx) = mpsc::channel(capacity);
                roots.push(tx);
                ins.push((0, Source::Single(rx)));
            }
            let mut stage_targets = stage_targets;
            if topo.outgoing[i].is_empty() {
                stage_targets.push(Target::new(
                    vec![Arc::clone(&self.inner.output_name)],
                    out_tx.clone(),
                ));
            }
            let input = StageInput::new(
                Source::into_inputs(ins),
                Arc::clone(&progress[i]),
                topo.base_metadata.clone(),
                Arc::clone(context),
                closing.filter(|_| is_root).cloned(),
            );
            let output = StageOutput::new(stage_targets, Arc::clone(&progress[i]));
            stages.push((input, output));
        }
        Wiring {
            stages,
            roots,
            output,
        }
    }

    /// Spawns one task per stage. Each reports its end to the run (see [`reported`]); the
    /// first failure stops the run, the last task to end reports its result.
    fn spawn_stages(
        &self,
        run: &Arc<RunShared>,
        context: &Arc<RunContext>,
        emitter: &Emitter,
        stages: Vec<(StageInput, StageOutput)>,
    ) {
        let topo = &self.inner.topology;
        for (i, (input, output)) in stages.into_iter().enumerate() {
            let stage = Arc::clone(&topo.stages[i]);
            let name = Arc::clone(&self.inner.names[i]);
            let token = Arc::clone(run.stage_token(i));
            let cx = StageContext {
                name: Arc::clone(&name),
                run: Arc::clone(context),
                emitter: emitter.clone(),
                cancel: Arc::clone(&token),
                progress: Arc::clone(run.stage_progress(i)),
                helpers: Arc::clone(run.helpers()),
            };
            let emitter = emitter.clone();
            run.spawn_task(i, async move {
                let started = emitter.is_enabled().then(Instant::now);
                emitter.emit_with(|| EventKind::StageStarted {
                    stage: name.to_string(),
                    kind: stage.kind().as_str().to_owned(),
                });
                // No select on the token around the stage: the run aborts the task when it
                // cancels the stage, and stages that want to end gracefully watch
                // `cx.cancelled()` themselves.
                let result = stage.run_boxed(cx, input, output).await;
                let outcome = if token.is_cancelled() {
                    // It ended after its cancellation (perhaps because of it).
                    Outcome::Cancelled
                } else {
                    match result {
                        Ok(()) => Outcome::Done,
                        Err(e) => Outcome::Failed(e),
                    }
                };
                let duration_ms = started.map_or(0, |s| millis(s.elapsed()));
                match &outcome {
                    Outcome::Done => emitter.emit_with(|| EventKind::StageCompleted {
                        stage: name.to_string(),
                        duration_ms,
                    }),
                    Outcome::Failed(e) => emitter.emit_with(|| EventKind::StageFailed {
                        stage: name.to_string(),
                        error: error_chain(e),
                        duration_ms,
                    }),
                    Outcome::Cancelled | Outcome::Panicked(_) | Outcome::Aborted => {}
                }
                outcome
            });
        }
    }
}

/// `error` and its causes, joined with `: `, each once.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    promptkit_core::ErrorChain(error).to_string()
}

type SharedReceiver = Arc<tokio::sync::Mutex<mpsc::Receiver<Element>>>;

/// Where one incoming edge's elements arrive.
enum Source {
    Single(mpsc::Receiver<Element>),
    Shared(SharedReceiver),
}

impl Source {
    /// A stage's input from its edges, in slot order.
    fn into_inputs(mut sources: Vec<(u32, Source)>) -> Inputs {
        if sources.len() == 1 {
            return match sources.pop() {
                Some((_, Source::Single(rx))) => Inputs::Single(rx),
                Some((_, Source::Shared(rx))) => Inputs::Shared(rx),
                None => Inputs::None,
            };
        }
        sources.sort_by_key(|(slot, _)| *slot);
        Inputs::FanIn {
            sources: sources
                .into_iter()
                .filter_map(|(slot, source)| match source {
                    Source::Single(rx) => Some((slot, rx)),
                    // Competing consumers cannot fan in (the builder rejects it).
                    Source::Shared(_) => None,
                })
                .collect(),
            next: 0,
        }
    }
}

/// Queues `elements` into the root channels while they have room. Returns what is left for
/// a feeder task, or `None` when everything was queued (or no root reads any more): the
/// roots' senders are then dropped, which ends the input.
fn queue_ready(
    mut elements: Box<dyn Iterator<Item = Element> + Send>,
    roots: Vec<mpsc::Sender<Element>>,
) -> Option<(FeedStream, Vec<mpsc::Sender<Element>>)> {
    while let Some(element) = elements.next() {
        match try_deliver(roots.iter(), element) {
            Ok(()) => {}
            Err(TrySendError::Full(element)) => {
                let rest = futures_util::stream::iter(std::iter::once(element).chain(elements));
                return Some((Box::pin(rest), roots));
            }
            Err(TrySendError::Closed(_)) => return None,
        }
    }
    None
}

/// Forwards `input` to every root stage, until it ends or no root reads any more.
async fn feed_roots(mut input: FeedStream, roots: Vec<mpsc::Sender<Element>>) {
    while let Some(element) = std::future::poll_fn(|cx| input.as_mut().poll_next(cx)).await {
        if send_all(&roots, element).await.is_err() {
            break;
        }
    }
}

/// Feeds a live run started with [`Pipeline::start`]. Dropping every clone ends the input.
#[derive(Debug, Clone)]
pub struct InputSender {
    txs: Arc<[mpsc::Sender<Element>]>,
    context: Arc<RunContext>,
}

/// The run's input is closed (the run ended, a shutdown closed it, or its root stages stopped
/// reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pipeline input closed")]
pub struct InputClosed;

impl InputSender {
    /// Sends an element to every root stage, waiting while they are busy. Cancel-safe.
    ///
    /// # Errors
    /// [`InputClosed`] when no root stage is reading any more.
    pub async fn send(&self, element: Element) -> Result<(), InputClosed> {
        send_all(&self.txs, element).await.map_err(|_| InputClosed)
    }

    /// Sends an element to every root stage if each has room now; never waits. A transport
    /// that must keep reading its socket can drop audio instead of stalling.
    ///
    /// # Errors
    /// [`TrySendError::Full`] (nothing sent) or [`TrySendError::Closed`], with the element.
    #[allow(
        clippy::result_large_err,
        reason = "the element comes back unboxed, as with tokio's `try_send`: boxing it would allocate on the path that must not wait"
    )]
    pub fn try_send(&self, element: Element) -> Result<(), TrySendError> {
        try_deliver(self.txs.iter(), element)
    }

    /// Interrupts the run ([`RunContext::interrupt`]): stale output is dropped everywhere at
    /// once. Then sends the interrupt marker into the input, in order with the rest of it.
    ///
    /// # Errors
    /// [`InputClosed`] when the marker cannot be sent (the interrupt itself took effect).
    pub async fn interrupt(&self, interrupt: Interrupt) -> Result<Interrupt, InputClosed> {
        let recorded = self.context.interrupt(interrupt);
        self.send(Element::interrupt(recorded)).await?;
        Ok(recorded)
    }

    /// The run's shared state (its playback slot, say).
    pub fn run(&self) -> &Arc<RunContext> {
        &self.context
    }
}

/// A run in progress: its output and its handle.
#[derive(Debug)]
pub struct Execution {
    output: OutputStream,
    handle: RunHandle,
}

impl Execution {
    /// The next output element.
    pub async fn recv(&mut self) -> Option<Element> {
        self.output.recv().await
    }

    /// The run's handle.
    pub fn handle(&self) -> &RunHandle {
        &self.handle
    }

    /// Splits into the output stream and the handle. Dropping the output stream cancels the
    /// run.
    pub fn into_parts(self) -> (OutputStream, RunHandle) {
        (self.output, self.handle)
    }

    /// Reads the output to its end, then waits for the run's result.
    ///
    /// # Errors
    /// The run's error, if it failed.
    pub async fn finish(self) -> (Vec<Element>, Result<RunSummary, PipelineError>) {
        let (mut output, handle) = self.into_parts();
        let mut elements = Vec::new();
        while let Some(e) = output.recv().await {
            elements.push(e);
        }
        (elements, handle.wait().await)
    }
}

/// The output elements of a run. Dropping it before its end cancels the run, so an
/// abandoned run never leaves tasks behind.
///
/// Stale elements of an interrupted answer are dropped, and after an interrupt the first
/// element is the interrupt itself ([`Control::Interrupt`], once per interrupt), ahead of
/// anything still queued. In a live run a consumer waiting for the next element is woken by
/// an interrupt, so a transport can tell its client to stop playing at once.
pub struct OutputStream {
    rx: mpsc::Receiver<Element>,
    base: Option<Arc<Map<String, Value>>>,
    progress: Arc<Progress>,
    run: Arc<RunShared>,
    context: Arc<RunContext>,
    /// The epoch of the last interrupt yielded.
    announced: u64,
    /// In a live run, while waiting: the wait for the next interrupt.
    waiting_for_interrupt: Option<Pin<Box<dyn Future<Output = Interrupt> + Send>>>,
    live: bool,
    exhausted: bool,
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        if !self.exhausted {
            self.run.cancel();
        }
    }
}

impl fmt::Debug for OutputStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputStream")
            .field("live", &self.live)
            .field("announced", &self.announced)
            .finish_non_exhaustive()
    }
}

impl OutputStream {
    /// The next element, or `None` when every leaf stage is done. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Element> {
        std::future::poll_fn(|cx| self.poll_element(cx)).await
    }

    fn poll_element(&mut self, cx: &mut Context<'_>) -> Poll<Option<Element>> {
        if self.exhausted {
            return Poll::Ready(None);
        }
        loop {
            if let Some(interrupt) = self.unannounced() {
                return Poll::Ready(Some(Element::interrupt(interrupt)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(element)) => {
                    self.progress.tick();
                    if let Some(element) = self.accept(element) {
                        return Poll::Ready(Some(element));
                    }
                }
                Poll::Ready(None) => {
                    self.exhausted = true;
                    return Poll::Ready(None);
                }
                Poll::Pending if self.live => {
                    let wait = self.waiting_for_interrupt.get_or_insert_with(|| {
                        Box::pin(self.context.interrupted_after(self.announced))
                    });
                    if wait.as_mut().poll(cx).is_ready() {
                        self.waiting_for_interrupt = None;
                        continue;
                    }
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The latest interrupt, when it has not been yielded yet.
    fn unannounced(&mut self) -> Option<Interrupt> {
        if self.context.epoch() <= self.announced {
            return None;
        }
        let interrupt = self.context.last_interrupt();
        self.announced = interrupt.epoch;
        self.waiting_for_interrupt = None;
        Some(interrupt)
    }

    /// What the consumer gets of an element that reached the output.
    fn accept(&self, mut element: Element) -> Option<Element> {
        if element.is_stale(self.context.epoch()) {
            return None;
        }
        match &element.payload {
            Payload::Control(Control::Start) => return None,
            // Yielded already, when the epoch moved.
            Payload::Control(Control::Interrupt(i))
                if i.epoch != 0 && i.epoch <= self.announced =>
            {
                return None;
            }
            _ => {}
        }
        if let Some(base) = &self.base {
            element.meta.merge_base(base);
        }
        Some(element)
    }
}

impl Stream for OutputStream {
    type Item = Element;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Element>> {
        self.get_mut().poll_element(cx)
    }
}

/// Controls a run and waits for its result.
pub struct RunHandle {
    run: Arc<RunShared>,
    result: oneshot::Receiver<Result<RunSummary, PipelineError>>,
    context: Arc<RunContext>,
}

impl fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle")
            .field("run_id", &self.run_id())
            .finish_non_exhaustive()
    }
}

impl RunHandle {
    /// The run id (also on the run's events).
    pub fn run_id(&self) -> &str {
        self.run.emitter().run_id()
    }

    /// Cancels the run: every stage future is dropped.
    pub fn cancel(&self) {
        self.run.cancel();
    }

    /// Interrupts the run ([`RunContext::interrupt`]); no marker is sent into its input
    /// (see [`InputSender::interrupt`]).
    pub fn interrupt(&self, interrupt: Interrupt) -> Interrupt {
        self.context.interrupt(interrupt)
    }

    /// The run's shared state (as the stages left it, once the run is over).
    pub fn run(&self) -> &Arc<RunContext> {
        &self.context
    }

    /// Waits until every task of the run has ended and returns its result: the first fatal
    /// error, or a summary.
    ///
    /// # Errors
    /// The run's [`PipelineError`].
    pub async fn wait(self) -> Result<RunSummary, PipelineError> {
        self.result.await.unwrap_or(Err(PipelineError::Lost))
    }
}

/// A successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// Wall time.
    pub duration: Duration,
}

/// What [`Pipeline::execute_sync`] collected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionResult {
    /// Every message that reached the output, in order (history included).
    pub messages: Vec<Message>,
    /// The last assistant message.
    pub response: Option<Message>,
    /// Text elements that reached the output, concatenated (for example streamed deltas).
    pub text: String,
    /// Usage summed over assistant messages that are not history.
    pub usage: Usage,
    /// Cost summed over those messages; `None` when none reported a cost.
    pub cost: Option<Cost>,
    /// Recoverable errors that reached the output.
    pub errors: Vec<ElementError>,
    /// Number of output elements.
    pub elements: usize,
    /// Wall time.
    pub duration: Duration,
}

impl ExecutionResult {
    fn absorb(&mut self, element: Element) {
        self.elements += 1;
        let history = element.meta.from_history;
        match element.payload {
            Payload::Message(message) => {
                let message = *message;
                if message.role == Role::Assistant && !history {
                    if let Some(usage) = message.usage {
                        self.usage += usage;
                    }
                    if let Some(cost) = message.cost {
                        *self.cost.get_or_insert_with(Cost::default) += cost;
                    }
                    self.response = Some(message.clone());
                }
                self.messages.push(message);
            }
            Payload::Text(text) if !history => self.text.push_str(&text),
            Payload::Control(Control::Error(e)) => self.errors.push(e),
            _ => {}
        }
    }
}

/// A failed [`Pipeline::execute_sync`]: the error and everything collected before it. It
/// displays as its error, and its causes are the error's.
#[derive(Debug)]
pub struct RunFailure {
    /// Why the run failed.
    pub error: PipelineError,
    /// What reached the output before it failed.
    pub partial: ExecutionResult,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for RunFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}
