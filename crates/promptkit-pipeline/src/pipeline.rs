//! Running a built pipeline.

use std::collections::{HashMap, VecDeque};
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
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::builder::{PipelineBuilder, PipelineConfig};
use crate::element::{Element, ElementError, Payload};
use crate::events::{Emitter, EventBus, EventKind};
use crate::stage::{
    DynStage, Inputs, OutputSignal, OutputTap, OutputWake, Progress, StageContext, StageError,
    StageInput, StageOutput, Target,
};
use crate::turn::{TurnContext, TurnData};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A stage returned an error; the run was cancelled.
    #[error("stage `{stage}` failed: {source}")]
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

/// The built topology, shared by every run.
pub(crate) struct Topology {
    pub(crate) stages: Vec<Arc<dyn DynStage>>,
    /// (from, to, capacity, competing)
    pub(crate) edges: Vec<(usize, usize, Option<usize>, bool)>,
    pub(crate) outgoing: Vec<Vec<usize>>,
    pub(crate) incoming: Vec<Vec<usize>>,
    pub(crate) config: PipelineConfig,
    pub(crate) bus: Option<EventBus>,
    pub(crate) base_metadata: Option<Arc<Map<String, Value>>>,
}

struct Inner {
    topology: Topology,
    names: Vec<Arc<str>>,
    /// The name of the run's output as a target ("output"), shared by every run.
    output_name: Arc<str>,
    shutting_down: AtomicBool,
    /// The runs in flight, and the idle watchdog while any is.
    runs: Mutex<Runs>,
    runs_changed: Notify,
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

/// This process's id, read once: `std::process::id()` is a system call, and every run's id
/// starts with it.
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
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

    /// Starts a run fed through the returned [`InputSender`]; closing (dropping) the sender
    /// ends the input. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`PipelineError::ShuttingDown`] after [`Pipeline::shutdown`].
    pub fn start(&self, turn: TurnData) -> Result<(InputSender, Execution), PipelineError> {
        let (root_txs, execution) = self.launch(turn, Feed::Senders)?;
        Ok((InputSender { txs: root_txs }, execution))
    }

    /// Starts a run fed by `input`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`PipelineError::ShuttingDown`] after [`Pipeline::shutdown`].
    pub fn execute<S>(&self, turn: TurnData, input: S) -> Result<Execution, PipelineError>
    where
        S: Stream<Item = Element> + Send + 'static,
    {
        let mut input = Box::pin(input);
        let limit = self.inner.topology.config.channel_capacity;
        let (ready, ended) = take_ready(input.as_mut(), limit);
        let feed = if ended {
            Feed::Ready(ready)
        } else {
            Feed::Stream(Box::new(move |txs| queue_then_pump(ready, input, txs)))
        };
        self.launch(turn, feed).map(|(_, e)| e)
    }

    /// Runs to completion on `elements` and collects the result.
    ///
    /// # Errors
    /// A [`RunFailure`] with the error and everything collected before it.
    pub async fn execute_sync(
        &self,
        turn: TurnData,
        elements: impl IntoIterator<Item = Element, IntoIter: Send + 'static>,
    ) -> Result<ExecutionResult, RunFailure> {
        let started = Instant::now();
        let execution = match self.execute(turn, futures_util::stream::iter(elements)) {
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

    /// Stops taking runs, waits up to the configured grace period for runs in flight, then
    /// cancels the rest and waits for their tasks to end.
    pub async fn shutdown(&self) {
        self.shutdown_with_grace(self.inner.topology.config.shutdown_grace)
            .await;
    }

    /// [`shutdown`](Self::shutdown) with an explicit grace period.
    pub async fn shutdown_with_grace(&self, grace: Duration) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.inner.runs_changed.notified();
            if self.active_runs() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let runs: Vec<Arc<RunShared>> = self
            .inner
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .values()
            .cloned()
            .collect();
        for run in runs {
            run.cancel();
        }
        loop {
            let notified = self.inner.runs_changed.notified();
            if self.active_runs() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn launch(
        &self,
        turn: TurnData,
        feed: Feed,
    ) -> Result<(Vec<mpsc::Sender<Element>>, Execution), PipelineError> {
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            return Err(PipelineError::ShuttingDown);
        }
        let topo = &self.inner.topology;
        let cap = topo.config.channel_capacity;
        let n = topo.stages.len();
        let run_no = self.inner.next_run.fetch_add(1, Ordering::Relaxed);
        let run_id = format!(
            "run-{:x}-{:x}",
            process_id(),
            PROCESS_RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let emitter = Emitter::new(topo.bus.clone(), run_id, turn.session_id.as_deref());
        let turn = Arc::new(TurnContext::new(turn));
        let token = CancellationToken::new();
        let progress: Vec<Arc<Progress>> = (0..n).map(|_| Arc::default()).collect();

        // Wire channels.
        let mut targets: Vec<Vec<Target>> = vec![Vec::new(); n];
        let mut inputs: Vec<Vec<(u32, InputSource)>> = (0..n).map(|_| Vec::new()).collect();
        let mut competing: HashMap<usize, (Target, SharedReceiver)> = HashMap::new();
        for (from, edge_ids) in topo.outgoing.iter().enumerate() {
            for &e in edge_ids {
                let (_, to, capacity, is_competing) = topo.edges[e];
                let slot =
                    u32::try_from(topo.incoming[to].iter().position(|&x| x == e).unwrap_or(0))
                        .unwrap_or(u32::MAX);
                if is_competing {
                    let entry = competing.entry(from).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(capacity.unwrap_or(cap));
                        (
                            Target::stage(Vec::new(), tx),
                            Arc::new(tokio::sync::Mutex::new(rx)),
                        )
                    });
                    entry.0.names.push(Arc::clone(&self.inner.names[to]));
                    inputs[to].push((slot, InputSource::Shared(Arc::clone(&entry.1))));
                } else {
                    let (tx, rx) = mpsc::channel(capacity.unwrap_or(cap));
                    targets[from].push(Target::stage(vec![Arc::clone(&self.inner.names[to])], tx));
                    inputs[to].push((slot, InputSource::Single(rx)));
                }
            }
        }
        for (from, (target, _)) in competing {
            targets[from].push(target);
        }
        let (out_tx, out_rx) = mpsc::channel(cap);
        let signal = Arc::new(OutputSignal::default());
        let roots = inputs.iter().filter(|ins| ins.is_empty()).count();
        // A whole input already in memory goes to a single root stage as it is: no channel.
        let (mut ready, pump) = match feed {
            Feed::Ready(elements) if roots == 1 => (Some(elements), None),
            Feed::Ready(elements) => {
                let fill: PumpFn = Box::new(move |txs| {
                    queue_then_pump(elements, Box::pin(futures_util::stream::empty()), txs)
                });
                (None, Some(fill))
            }
            Feed::Stream(pump) => (None, Some(pump)),
            Feed::Senders => (None, None),
        };
        let mut root_txs = Vec::new();
        let mut stage_io = Vec::with_capacity(n);
        for i in 0..n {
            let mut ins = std::mem::take(&mut inputs[i]);
            let is_root = ins.is_empty();
            if is_root {
                if let Some(elements) = ready.take() {
                    ins.push((0, InputSource::Ready(elements)));
                } else {
                    let (tx, rx) = mpsc::channel(cap);
                    root_txs.push(tx);
                    ins.push((0, InputSource::Single(rx)));
                }
            }
            if topo.outgoing[i].is_empty() {
                targets[i].push(Target {
                    names: vec![Arc::clone(&self.inner.output_name)],
                    tx: out_tx.clone(),
                    tap: Some(OutputTap(Arc::clone(&signal))),
                });
            }
            let input_inner = if ins.len() == 1 {
                match ins.pop().map(|(_, s)| s) {
                    Some(InputSource::Single(rx)) => Inputs::Single(rx),
                    Some(InputSource::Shared(rx)) => Inputs::Shared(rx),
                    Some(InputSource::Ready(elements)) => Inputs::Ready(elements),
                    None => Inputs::None,
                }
            } else {
                ins.sort_by_key(|(slot, _)| *slot);
                Inputs::FanIn {
                    sources: ins
                        .into_iter()
                        .filter_map(|(slot, s)| match s {
                            InputSource::Single(rx) => Some((slot, rx)),
                            // Rejected at build time; a ready input feeds a root only.
                            InputSource::Shared(_) | InputSource::Ready(_) => None,
                        })
                        .collect(),
                    next: 0,
                }
            };
            let base = if is_root {
                topo.base_metadata.clone()
            } else {
                None
            };
            let input = StageInput::new(input_inner, Arc::clone(&progress[i]), base);
            let output =
                StageOutput::new(std::mem::take(&mut targets[i]), Arc::clone(&progress[i]));
            stage_io.push((input, output));
        }
        drop(out_tx);

        let consumer_progress: Arc<Progress> = Arc::default();
        let mut all_progress = progress.clone();
        all_progress.push(Arc::clone(&consumer_progress));

        // One token per stage (children of the run's), so a failure can stop the failed
        // stage's upstream at once while its downstream drains what it already received.
        let stage_tokens: Vec<Arc<CancellationToken>> =
            (0..n).map(|_| Arc::new(token.child_token())).collect();
        emitter.emit(EventKind::PipelineStarted { stages: n });

        // The input is queued before anything is spawned; what is left needs a feeding task.
        let pump = pump.map(|pump| pump(std::mem::take(&mut root_txs)));
        let (result_tx, result_rx) = oneshot::channel();
        let run = Arc::new(RunShared {
            inner: Arc::clone(&self.inner),
            run_no,
            token,
            stage_tokens,
            progress: all_progress,
            emitter: emitter.clone(),
            started: Instant::now(),
            state: Mutex::new(RunState {
                error: None,
                remaining: n + usize::from(pump.is_some()),
                tasks: Vec::with_capacity(n + 1),
                cancelled: false,
                draining: None,
                timers: Vec::new(),
                result: Some(result_tx),
            }),
        });

        // Register the run before anything can finish; start the idle watchdog if it is not
        // running.
        {
            let mut runs = self
                .inner
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            runs.map.insert(run_no, Arc::clone(&run));
            if let Some(limit) = topo.config.idle_timeout
                && runs.watchdog.is_none()
            {
                let period = (limit / 4).max(Duration::from_millis(1));
                let watchdog = tokio::spawn(watch_idle(Arc::downgrade(&self.inner), limit, period));
                runs.watchdog = Some(watchdog.abort_handle());
            }
        }
        if let Some(timeout) = topo.config.execution_timeout {
            let timed = Arc::clone(&run);
            let timer = tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                timed.fail_if_ok(PipelineError::ExecutionTimeout(timeout));
            });
            run.add_timer(timer.abort_handle());
        }

        // No supervisor task: each task reports its end (or its abort, through a guard it
        // drops) to the run, and the last one to end reports the run's result. The root stage
        // is spawned last: tokio runs the task spawned last next on this worker (its LIFO
        // slot), and the stage whose input is ready should start at once.
        for (i, (input, output)) in stage_io.into_iter().enumerate().rev() {
            let stage = Arc::clone(&topo.stages[i]);
            let name = Arc::clone(&self.inner.names[i]);
            let cx = StageContext {
                name: Arc::clone(&name),
                turn: Arc::clone(&turn),
                emitter: emitter.clone(),
                cancel: Arc::clone(&run.stage_tokens[i]),
                progress: Arc::clone(&progress[i]),
            };
            let token = Arc::clone(&run.stage_tokens[i]);
            let emitter = emitter.clone();
            let kind = stage.kind();
            let work = async move {
                // Timed only for the stage events (a clock read is not free on every VM).
                let started = emitter.is_enabled().then(Instant::now);
                emitter.emit_with(|| EventKind::StageStarted {
                    stage: name.to_string(),
                    kind: kind.as_str().to_owned(),
                });
                // No select on the token here: polling it on every wake of every stage costs
                // two lock round trips per element. The run aborts the task instead when it
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
                        error: e.to_string(),
                        duration_ms,
                    }),
                    Outcome::Cancelled | Outcome::Panicked(_) | Outcome::Aborted => {}
                }
                outcome
            };
            let handle = tokio::spawn(reported(Arc::clone(&run), i, work));
            run.add_task(i, handle.abort_handle());
        }
        if let Some(fut) = pump {
            // Aborted when the input is cancelled.
            let handle = tokio::spawn(reported(Arc::clone(&run), usize::MAX, async move {
                fut.await;
                Outcome::Done
            }));
            run.add_task(usize::MAX, handle.abort_handle());
        }

        let output = OutputStream {
            rx: out_rx,
            signal,
            base: topo.base_metadata.clone(),
            progress: consumer_progress,
            run: Arc::clone(&run),
            exhausted: false,
        };
        let handle = RunHandle {
            run,
            result: result_rx,
            turn,
        };
        Ok((root_txs, Execution { output, handle }))
    }
}

/// How a run's input reaches its root stages.
enum Feed {
    /// Through the senders [`Pipeline::start`] returns.
    Senders,
    /// The whole input, already in memory. A single root stage reads it as it is, with no
    /// channel (the common case: a turn's one message); several roots are fed by [`pump`].
    Ready(VecDeque<Element>),
    /// A stream that was still pending: what it had ready is queued, the rest pumped
    /// ([`queue_then_pump`]).
    Stream(PumpFn),
}

/// Takes what `input` has ready, up to `limit` elements, without waiting; `true` with them
/// when the input has ended. Past `limit` the rest is left to the channel and its
/// backpressure.
fn take_ready<S: Stream<Item = Element>>(
    mut input: Pin<&mut S>,
    limit: usize,
) -> (VecDeque<Element>, bool) {
    let mut ready = VecDeque::new();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    while ready.len() < limit {
        match input.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(element)) => ready.push_back(element),
            Poll::Ready(None) => return (ready, true),
            Poll::Pending => break,
        }
    }
    (ready, false)
}

/// Feeds the input stream to the root stages: returns the task still to run.
type PumpFn =
    Box<dyn FnOnce(Vec<mpsc::Sender<Element>>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Queues `ready`, what the input had ready ([`take_ready`]), in the root stage's channel
/// before any task is spawned, so that the stage can start at once and the pump's first poll
/// finds the input waiting; returns the task that feeds the rest ([`pump`]). With several
/// roots (or elements that do not fit) the pump feeds everything.
fn queue_then_pump<S: Stream<Item = Element> + Send + 'static>(
    mut ready: VecDeque<Element>,
    input: Pin<Box<S>>,
    txs: Vec<mpsc::Sender<Element>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    if let [only] = txs.as_slice() {
        while let Some(element) = ready.pop_front() {
            if let Err(unsent) = only.try_send(element) {
                ready.push_front(unsent.into_inner());
                break;
            }
        }
        if ready.is_empty() {
            return Box::pin(pump(input, txs));
        }
    }
    let rest = futures_util::StreamExt::chain(futures_util::stream::iter(ready), input);
    Box::pin(pump(Box::pin(rest), txs))
}

async fn pump<S: Stream<Item = Element> + Send + 'static>(
    mut input: Pin<Box<S>>,
    txs: Vec<mpsc::Sender<Element>>,
) {
    let sender = InputSender { txs };
    while let Some(element) = std::future::poll_fn(|cx| input.as_mut().poll_next(cx)).await {
        if sender.send(element).await.is_err() {
            break;
        }
    }
}

type SharedReceiver = Arc<tokio::sync::Mutex<mpsc::Receiver<Element>>>;

enum InputSource {
    Single(mpsc::Receiver<Element>),
    Shared(SharedReceiver),
    Ready(VecDeque<Element>),
}

enum Outcome {
    Done,
    Failed(StageError),
    Cancelled,
    Panicked(String),
    /// The task's future was dropped before it ended (aborted by the run, or dropped with
    /// the runtime).
    Aborted,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The runs of a pipeline in flight.
#[derive(Default)]
struct Runs {
    map: HashMap<u64, Arc<RunShared>>,
    /// The idle watchdog, while any run is in flight.
    watchdog: Option<AbortHandle>,
}

/// One run, shared by its tasks, its handle, its output and the pipeline. There is no
/// supervisor task: each task reports its outcome when it ends, or, aborted, from the guard
/// it drops (see [`reported`]); the first failure stops the run; the last task to end
/// reports the result. Timers (execution timeout, draining after a failure) are small tasks
/// that exist only while they are armed; the idle timeout is the pipeline's watchdog's.
struct RunShared {
    inner: Arc<Inner>,
    run_no: u64,
    /// The run's token; the stages' are its children, shared by each stage's task and
    /// context (a `CancellationToken` clone or drop takes its tree's lock).
    token: CancellationToken,
    stage_tokens: Vec<Arc<CancellationToken>>,
    /// Every stage's progress, and the consumer's (for the idle watchdog).
    progress: Vec<Arc<Progress>>,
    emitter: Emitter,
    started: Instant,
    state: Mutex<RunState>,
}

struct RunState {
    /// The first fatal error.
    error: Option<PipelineError>,
    /// Tasks that have not ended.
    remaining: usize,
    /// Stage index (`usize::MAX` for the input pump) and abort handle of every task.
    tasks: Vec<(usize, AbortHandle)>,
    /// Every task is to be stopped (a task registered after this is stopped at once).
    cancelled: bool,
    /// After a stage failed: which stages are downstream of it and may drain (a task
    /// registered after the failure that is not among them is stopped at once).
    draining: Option<Vec<bool>>,
    /// Armed timers, stopped when the run ends.
    timers: Vec<AbortHandle>,
    /// Taken by the report.
    result: Option<oneshot::Sender<Result<RunSummary, PipelineError>>>,
}

impl RunShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_task(&self, index: usize, task: AbortHandle) {
        let mut state = self.lock();
        let stopped = state.cancelled
            || state
                .draining
                .as_ref()
                .is_some_and(|downstream| !downstream.get(index).copied().unwrap_or(false));
        if stopped {
            task.abort();
        }
        state.tasks.push((index, task));
    }

    fn add_timer(&self, timer: AbortHandle) {
        self.lock().timers.push(timer);
    }

    fn stage_name(&self, index: usize) -> String {
        if index == usize::MAX {
            "input".to_owned()
        } else {
            self.inner.names[index].to_string()
        }
    }

    /// Cancels the run from outside (the caller, a dropped output, a shutdown).
    fn cancel(&self) {
        self.fail(PipelineError::Cancelled);
    }

    /// Records `error` unless the run already failed, and stops every task.
    fn fail(&self, error: PipelineError) {
        let mut state = self.lock();
        state.error.get_or_insert(error);
        self.stop_all(state);
    }

    /// Fails the run with `error` only if it has not failed yet (a timeout does not cut short
    /// the drain of a run that failed already).
    fn fail_if_ok(&self, error: PipelineError) {
        let mut state = self.lock();
        if state.error.is_none() {
            state.error = Some(error);
            self.stop_all(state);
        }
    }

    /// Stops every task, those registered later included.
    fn stop_all(&self, mut state: std::sync::MutexGuard<'_, RunState>) {
        state.cancelled = true;
        let tasks: Vec<AbortHandle> = state.tasks.iter().map(|(_, t)| t.clone()).collect();
        drop(state);
        self.token.cancel();
        for task in tasks {
            task.abort();
        }
    }

    /// A task ended (or was aborted) with `outcome`.
    fn task_done(self: &Arc<Self>, index: usize, outcome: Outcome) {
        let mut state = self.lock();
        state.remaining = state.remaining.saturating_sub(1);
        if state.error.is_none() {
            match outcome {
                Outcome::Failed(source) => {
                    state.error = Some(PipelineError::StageFailed {
                        stage: self.stage_name(index),
                        source,
                    });
                    self.stop_after_failure(&mut state, index);
                }
                Outcome::Panicked(message) => {
                    let stage = self.stage_name(index);
                    self.emitter.emit_with(|| EventKind::StageFailed {
                        stage: stage.clone(),
                        error: format!("panicked: {message}"),
                        duration_ms: millis(self.started.elapsed()),
                    });
                    state.error = Some(PipelineError::StagePanicked { stage, message });
                    self.stop_after_failure(&mut state, index);
                }
                // Dropped without the run stopping it: the runtime is going away.
                Outcome::Aborted => state.error = Some(PipelineError::Lost),
                Outcome::Done | Outcome::Cancelled => {}
            }
        }
        if state.remaining > 0 {
            return;
        }
        let error = state.error.take();
        let result = state.result.take();
        let timers = std::mem::take(&mut state.timers);
        drop(state);
        for timer in timers {
            timer.abort();
        }
        self.report(error, result);
    }

    /// Stops everything that is not downstream of the failed stage at once; stages downstream
    /// of it finish what they already received (a save stage persists the messages a failed
    /// turn produced), within the shutdown grace period.
    fn stop_after_failure(self: &Arc<Self>, state: &mut RunState, failed: usize) {
        let topo = &self.inner.topology;
        let mut downstream = vec![false; topo.stages.len()];
        if failed != usize::MAX {
            let mut queue = vec![failed];
            while let Some(s) = queue.pop() {
                for &e in &topo.outgoing[s] {
                    let to = topo.edges[e].1;
                    if !downstream[to] {
                        downstream[to] = true;
                        queue.push(to);
                    }
                }
            }
        }
        for (i, token) in self.stage_tokens.iter().enumerate() {
            if !downstream[i] {
                token.cancel();
            }
        }
        for (i, task) in &state.tasks {
            if *i == usize::MAX || !downstream[*i] {
                task.abort();
            }
        }
        let drains = downstream.iter().any(|d| *d);
        state.draining = Some(downstream);
        if drains && state.remaining > 0 {
            // Downstream stages that do not finish draining in time are stopped, with every
            // task registered by then.
            let grace = topo.config.shutdown_grace;
            let run = Arc::clone(self);
            let timer = tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let state = run.lock();
                run.stop_all(state);
            });
            state.timers.push(timer.abort_handle());
        }
    }

    /// Emits the run's end, leaves the pipeline's runs and sends the result.
    fn report(
        &self,
        error: Option<PipelineError>,
        result_tx: Option<oneshot::Sender<Result<RunSummary, PipelineError>>>,
    ) {
        let duration = self.started.elapsed();
        let result = match error {
            None => {
                self.emitter.emit(EventKind::PipelineCompleted {
                    duration_ms: millis(duration),
                });
                Ok(RunSummary {
                    run_id: self.emitter.run_id().to_owned(),
                    duration,
                })
            }
            Some(e) => {
                self.emitter.emit_with(|| EventKind::PipelineFailed {
                    error: e.to_string(),
                    duration_ms: millis(duration),
                });
                Err(e)
            }
        };
        {
            let mut runs = self
                .inner
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            runs.map.remove(&self.run_no);
            if runs.map.is_empty()
                && let Some(watchdog) = runs.watchdog.take()
            {
                // No task outlives the runs: the next run starts another.
                watchdog.abort();
            }
        }
        // Only a shutdown waits for runs to end; it sets the flag before it looks at the runs
        // (see `shutdown_with_grace`).
        if self.inner.shutting_down.load(Ordering::SeqCst) {
            self.inner.runs_changed.notify_waiters();
        }
        if let Some(tx) = result_tx {
            let _ = tx.send(result);
        }
    }
}

/// Reports the end of `work`, a task of `run`, to the run: its outcome, a panic as a typed
/// error, or, when the task's future is dropped first (even before its first poll), an
/// abort. The work is always dropped before the report.
fn reported<F: Future<Output = Outcome>>(
    run: Arc<RunShared>,
    index: usize,
    work: F,
) -> impl Future<Output = ()> {
    struct Report {
        run: Arc<RunShared>,
        index: usize,
        outcome: Option<Outcome>,
    }
    impl Drop for Report {
        fn drop(&mut self) {
            let outcome = self.outcome.take().unwrap_or(Outcome::Aborted);
            self.run.task_done(self.index, outcome);
        }
    }
    // Struct fields drop in declaration order: a future dropped before its first poll drops
    // the work, then reports.
    struct Task<F> {
        work: F,
        report: Report,
    }
    let task = Task {
        work,
        report: Report {
            run,
            index,
            outcome: None,
        },
    };
    async move {
        // Locals drop in reverse order: once polled, the work (declared last) drops first.
        let mut report = task.report;
        let work = task.work;
        let outcome =
            futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work)).await;
        report.outcome = Some(match outcome {
            Ok(outcome) => outcome,
            Err(payload) => Outcome::Panicked(panic_message(&*payload)),
        });
    }
}

/// Watches every run of a pipeline for the idle timeout: one task and one timer per pipeline
/// while runs are in flight, not a timer per run. Every `period` it sums each run's progress;
/// a run whose sum has not moved, with no stage busy (waiting on a model or a tool, which
/// have their own timeouts), for `limit` fails with [`PipelineError::IdleTimeout`]. The
/// last run to end stops it.
async fn watch_idle(inner: std::sync::Weak<Inner>, limit: Duration, period: Duration) {
    // Per run: the progress last seen and when it last changed.
    let mut seen: HashMap<u64, (u64, tokio::time::Instant)> = HashMap::new();
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let mut idle = Vec::new();
        {
            let runs = inner.runs.lock().unwrap_or_else(PoisonError::into_inner);
            seen.retain(|run, _| runs.map.contains_key(run));
            for (&no, run) in &runs.map {
                let total: u64 = run.progress.iter().map(|p| p.get()).sum();
                let busy = run.progress.iter().any(|p| p.is_busy());
                let last = seen.entry(no).or_insert((total, now));
                if total != last.0 || busy {
                    *last = (total, now);
                } else if now.duration_since(last.1) >= limit {
                    idle.push(Arc::clone(run));
                }
            }
        }
        for run in idle {
            // A run that already failed is draining within the grace period instead.
            run.fail_if_ok(PipelineError::IdleTimeout(limit));
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Feeds a run started with [`Pipeline::start`]. Dropping it ends the input.
#[derive(Debug, Clone)]
pub struct InputSender {
    txs: Vec<mpsc::Sender<Element>>,
}

/// The run's input is closed (the run ended or its root stages stopped reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pipeline input closed")]
pub struct InputClosed;

impl InputSender {
    /// Sends an element to every root stage, waiting while they are busy.
    ///
    /// # Errors
    /// [`InputClosed`] when no root stage is reading any more.
    pub async fn send(&self, element: Element) -> Result<(), InputClosed> {
        match self.txs.as_slice() {
            [] => Err(InputClosed),
            [only] => only.send(element).await.map_err(|_| InputClosed),
            many => {
                if crate::stage::broadcast(many, |tx| tx, element).await {
                    Ok(())
                } else {
                    Err(InputClosed)
                }
            }
        }
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
        // Everything is collected: only the end (or a full channel) needs this task.
        output.set_wake(OutputWake::End);
        let mut elements = Vec::new();
        while let Some(e) = output.recv().await {
            elements.push(e);
        }
        (elements, handle.wait().await)
    }
}

/// The output elements of a run. Dropping it before its end cancels the run, so an
/// abandoned run never leaves tasks behind.
pub struct OutputStream {
    rx: mpsc::Receiver<Element>,
    signal: Arc<OutputSignal>,
    base: Option<Arc<Map<String, Value>>>,
    progress: Arc<Progress>,
    run: Arc<RunShared>,
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
        f.debug_struct("OutputStream").finish_non_exhaustive()
    }
}

impl OutputStream {
    /// The next element, or `None` when every leaf stage is done.
    pub async fn recv(&mut self) -> Option<Element> {
        std::future::poll_fn(|cx| self.poll_element(cx)).await
    }

    /// Which elements wake this consumer while it waits (see [`OutputWake`]); it may change
    /// at any time. Every element arrives either way, in order.
    pub fn set_wake(&self, wake: OutputWake) {
        self.signal.set(wake);
    }

    fn poll_element(&mut self, cx: &mut Context<'_>) -> Poll<Option<Element>> {
        if self.exhausted {
            return Poll::Ready(None);
        }
        // The channel is read without registering with it (its sends would wake this task
        // for every element); the stages wake it through the signal, for the elements it
        // asked for, a full channel and their end. Registered before the second look, so an
        // element sent in between is not missed.
        let mut registered = false;
        loop {
            match self.rx.try_recv() {
                Ok(mut e) => {
                    self.progress.tick();
                    if let Some(base) = &self.base {
                        e.meta.merge_base(base);
                    }
                    return Poll::Ready(Some(e));
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.exhausted = true;
                    return Poll::Ready(None);
                }
                Err(mpsc::error::TryRecvError::Empty) if registered => return Poll::Pending,
                Err(mpsc::error::TryRecvError::Empty) => {
                    self.signal.register(cx.waker());
                    registered = true;
                }
            }
        }
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
    turn: Arc<TurnContext>,
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
        self.run.emitter.run_id()
    }

    /// Cancels the run: every stage future is dropped.
    pub fn cancel(&self) {
        self.run.cancel();
    }

    /// The run's turn data (as the stages left it).
    pub fn turn(&self) -> &Arc<TurnContext> {
        &self.turn
    }

    /// Waits until every task of the run has ended and returns its result: the first fatal
    /// error, or a summary.
    ///
    /// # Errors
    /// The run's [`PipelineError`].
    pub async fn wait(mut self) -> Result<RunSummary, PipelineError> {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Polls for the run's result, as [`wait`](Self::wait) does, without taking the handle:
    /// for a caller that keeps the handle in its own state instead of boxing a future.
    ///
    /// # Panics
    /// When polled again after it returned the result, as a completed future does.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<RunSummary, PipelineError>> {
        Pin::new(&mut self.result)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(PipelineError::Lost)))
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
            Payload::Control(crate::element::Control::Error(e)) => self.errors.push(e),
            _ => {}
        }
    }
}

/// A failed [`Pipeline::execute_sync`]: the error and everything collected before it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunFailure {
    /// Why the run failed.
    #[source]
    pub error: PipelineError,
    /// What reached the output before it failed.
    pub partial: ExecutionResult,
}
