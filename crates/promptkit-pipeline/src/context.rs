//! What a stage knows about its run: [`StageContext`], progress for the idle timeout, busy
//! waits, and the tasks a stage spawns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::element::Interrupt;
use crate::events::Emitter;
use crate::run_context::RunContext;

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
    pub(crate) run: Arc<RunContext>,
    pub(crate) emitter: Emitter,
    pub(crate) cancel: Arc<CancellationToken>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) helpers: Arc<Helpers>,
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
    /// A context for running a stage outside a pipeline (tests, tools). Tasks it
    /// [`spawn`](Self::spawn)s end when the context and its clones are dropped.
    pub fn detached(name: &str, run: Arc<RunContext>) -> Self {
        Self {
            name: name.into(),
            run,
            emitter: Emitter::disabled(),
            cancel: Arc::new(CancellationToken::new()),
            progress: Arc::default(),
            helpers: Arc::new(Helpers::detached()),
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

    /// The run's shared state.
    pub fn run(&self) -> &Arc<RunContext> {
        &self.run
    }

    /// The run's event emitter.
    pub fn events(&self) -> &Emitter {
        &self.emitter
    }

    /// Interrupts the run (see [`RunContext::interrupt`]).
    pub fn interrupt(&self, interrupt: Interrupt) -> Interrupt {
        self.run.interrupt(interrupt)
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

    /// Spawns a helper task for this stage (a pump between a vendor session and the
    /// stage's output, say). It ends with the run: it is aborted when the run ends, fails or
    /// is cancelled, whatever the stage does with the handle. Dropping the handle detaches
    /// it only from the handle. Must be called inside a tokio runtime.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(task);
        self.helpers.add(handle.abort_handle());
        handle
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

/// The helper tasks of a run's stages, aborted when the run ends.
#[derive(Debug, Default)]
pub(crate) struct Helpers {
    /// `None` once the run has ended: later helpers are aborted at once.
    tasks: Mutex<Option<Vec<AbortHandle>>>,
}

impl Helpers {
    pub(crate) fn new() -> Self {
        Self {
            tasks: Mutex::new(Some(Vec::new())),
        }
    }

    /// For a detached context: helpers end when the last context is dropped.
    fn detached() -> Self {
        Self::new()
    }

    fn add(&self, task: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        match tasks.as_mut() {
            Some(tasks) => {
                tasks.retain(|t| !t.is_finished());
                tasks.push(task);
            }
            None => task.abort(),
        }
    }

    /// Aborts every helper, and every one added later.
    pub(crate) fn end(&self) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::StageContext;
    use crate::run_context::RunContext;

    #[test]
    fn a_busy_wait_marks_the_stage_from_its_first_poll_until_it_completes() {
        let cx = StageContext::detached("s", Arc::new(RunContext::default()));
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
        let cx = StageContext::detached("s", Arc::new(RunContext::default()));
        let mut wait = Box::pin(cx.busy(std::future::pending::<()>()));
        let mut task = Context::from_waker(Waker::noop());
        assert!(wait.as_mut().poll(&mut task).is_pending());
        assert!(cx.progress.is_busy());
        drop(wait);
        assert!(!cx.progress.is_busy());
    }
}
