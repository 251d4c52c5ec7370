//! One run's lifecycle: its tasks, cancellation, failure, timeouts and result.
//!
//! A run has no supervisor task. Each task reports its outcome to the run's shared state
//! when it ends, or, when aborted, from a guard its future owns ([`reported`]); the first
//! failure stops the run; the last task to end reports the result. Timers (the execution
//! timeout, the drain after a failure) are small tasks that exist only while armed; the idle
//! timeout is one watchdog task per pipeline, started by a run and stopped by the last run in
//! flight to end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::context::{Helpers, Progress};
use crate::events::{Emitter, EventKind};
use crate::input::Closing;
use crate::pipeline::{Inner, PipelineError, RunSummary, error_chain};
use crate::stage::StageError;

/// The index under which a run's input feeder reports, beside its stages.
pub(crate) const FEEDER: usize = usize::MAX;

/// How one task of a run ended.
pub(crate) enum Outcome {
    Done,
    Failed(StageError),
    Cancelled,
    Panicked(String),
    /// The task's future was dropped before it ended (aborted by the run, or dropped with
    /// the runtime).
    Aborted,
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The runs of a pipeline in flight.
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) map: HashMap<u64, Arc<RunShared>>,
    /// The idle watchdog, while any run is in flight.
    watchdog: Option<AbortHandle>,
}

/// One run, shared by its tasks, its handle, its output and the pipeline.
pub(crate) struct RunShared {
    inner: Arc<Inner>,
    run_no: u64,
    /// The run's token; the stages' are its children, so a failure can stop the failed
    /// stage's upstream at once while its downstream drains what it already received.
    token: CancellationToken,
    stage_tokens: Vec<Arc<CancellationToken>>,
    /// Every stage's progress, then the consumer's (for the idle watchdog).
    progress: Vec<Arc<Progress>>,
    helpers: Arc<Helpers>,
    emitter: Emitter,
    /// A live run's input, closed by a shutdown.
    closing: Option<Arc<Closing>>,
    idle_limit: Option<Duration>,
    started: Instant,
    state: Mutex<RunState>,
}

struct RunState {
    /// The first fatal error.
    error: Option<PipelineError>,
    /// Tasks that have not ended.
    remaining: usize,
    /// Stage index ([`FEEDER`] for the input feeder) and abort handle of every task.
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
    #[allow(
        clippy::too_many_arguments,
        reason = "one constructor for the run's parts, called from one place"
    )]
    pub(crate) fn new(
        inner: Arc<Inner>,
        run_no: u64,
        progress: Vec<Arc<Progress>>,
        emitter: Emitter,
        closing: Option<Arc<Closing>>,
        idle_limit: Option<Duration>,
        tasks: usize,
        result: oneshot::Sender<Result<RunSummary, PipelineError>>,
    ) -> Self {
        let token = CancellationToken::new();
        let stage_tokens = (0..inner.topology.stages.len())
            .map(|_| Arc::new(token.child_token()))
            .collect();
        Self {
            inner,
            run_no,
            token,
            stage_tokens,
            progress,
            helpers: Arc::new(Helpers::new()),
            emitter,
            closing,
            idle_limit,
            started: Instant::now(),
            state: Mutex::new(RunState {
                error: None,
                remaining: tasks,
                tasks: Vec::with_capacity(tasks),
                cancelled: false,
                draining: None,
                timers: Vec::new(),
                result: Some(result),
            }),
        }
    }

    pub(crate) fn stage_token(&self, index: usize) -> &Arc<CancellationToken> {
        &self.stage_tokens[index]
    }

    pub(crate) fn stage_progress(&self, index: usize) -> &Arc<Progress> {
        &self.progress[index]
    }

    pub(crate) fn consumer_progress(&self) -> &Arc<Progress> {
        &self.progress[self.progress.len() - 1]
    }

    pub(crate) fn helpers(&self) -> &Arc<Helpers> {
        &self.helpers
    }

    pub(crate) fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the run with its pipeline before any of its tasks can end, starting the
    /// idle watchdog if none is running, and arms the execution timeout.
    pub(crate) fn register(self: &Arc<Self>) {
        let config = &self.inner.topology.config;
        {
            let mut runs = self
                .inner
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            runs.map.insert(self.run_no, Arc::clone(self));
            let shortest = [config.idle_timeout, config.session_idle_timeout]
                .into_iter()
                .flatten()
                .min();
            if let Some(limit) = shortest
                && runs.watchdog.is_none()
            {
                let period = (limit / 4).max(Duration::from_millis(1));
                let watchdog = tokio::spawn(watch_idle(Arc::downgrade(&self.inner), period));
                runs.watchdog = Some(watchdog.abort_handle());
            }
        }
        if let Some(timeout) = config.execution_timeout {
            let run = Arc::clone(self);
            let timer = tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                run.fail_if_ok(PipelineError::ExecutionTimeout(timeout));
            });
            self.lock().timers.push(timer.abort_handle());
        }
    }

    /// Spawns one of the run's tasks: a stage (by index) or the input feeder ([`FEEDER`]).
    pub(crate) fn spawn_task<F>(self: &Arc<Self>, index: usize, work: F)
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let handle = tokio::spawn(reported(Arc::clone(self), index, work));
        let task = handle.abort_handle();
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

    fn stage_name(&self, index: usize) -> String {
        if index == FEEDER {
            "input".to_owned()
        } else {
            self.inner.names[index].to_string()
        }
    }

    /// Closes the run's input (a shutdown): a live run's roots read what is queued and then
    /// see the end; a feeder stops.
    pub(crate) fn close_input(&self) {
        if let Some(closing) = &self.closing {
            closing.close();
        }
        let state = self.lock();
        for (index, task) in &state.tasks {
            if *index == FEEDER {
                task.abort();
            }
        }
    }

    /// Cancels the run from outside (the caller, a dropped output, a shutdown).
    pub(crate) fn cancel(&self) {
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

    /// Stops every task, those registered later included, and the stages' helpers.
    fn stop_all(&self, mut state: MutexGuard<'_, RunState>) {
        state.cancelled = true;
        let tasks: Vec<AbortHandle> = state.tasks.iter().map(|(_, t)| t.clone()).collect();
        drop(state);
        self.token.cancel();
        self.helpers.end();
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
        self.helpers.end();
        self.report(error, result);
    }

    /// Stops everything that is not downstream of the failed stage at once; stages downstream
    /// of it finish what they already received (a save stage persists the messages a failed
    /// turn produced), within the shutdown grace period.
    fn stop_after_failure(self: &Arc<Self>, state: &mut RunState, failed: usize) {
        let topo = &self.inner.topology;
        let mut downstream = vec![false; topo.stages.len()];
        if failed != FEEDER {
            let mut queue = vec![failed];
            while let Some(s) = queue.pop() {
                for &e in &topo.outgoing[s] {
                    let to = topo.edges[e].to;
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
            if *i == FEEDER || !downstream[*i] {
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
                    error: error_chain(&e),
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
        // (see `Pipeline::shutdown_with_grace`).
        if self
            .inner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
        {
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
pub(crate) fn reported<F: Future<Output = Outcome>>(
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

/// Watches every run of a pipeline for its idle timeout: one task and one timer per pipeline
/// while runs are in flight, not a timer per run. Every `period` it sums each run's progress;
/// a run whose sum has not moved, with no stage busy (waiting on a model or a tool, which
/// have their own timeouts), for its limit fails with [`PipelineError::IdleTimeout`]. The
/// last run to end stops it.
async fn watch_idle(inner: Weak<Inner>, period: Duration) {
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
                let Some(limit) = run.idle_limit else {
                    continue;
                };
                let total: u64 = run.progress.iter().map(|p| p.get()).sum();
                let busy = run.progress.iter().any(|p| p.is_busy());
                let last = seen.entry(no).or_insert((total, now));
                if total != last.0 || busy {
                    *last = (total, now);
                } else if now.duration_since(last.1) >= limit {
                    idle.push((Arc::clone(run), limit));
                }
            }
        }
        for (run, limit) in idle {
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
