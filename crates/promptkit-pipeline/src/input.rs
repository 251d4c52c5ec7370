//! The receiving end of a stage: [`StageInput`].

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc};

use crate::context::Progress;
use crate::element::Element;
use crate::run_context::RunContext;

/// The receiving end of a stage.
///
/// Elements of an interrupted answer that are still queued arrive no more: `recv` drops them
/// (see [`ElementMeta::epoch`](crate::ElementMeta::epoch)), unless the stage asked to
/// [`keep_stale`](Self::keep_stale) ones.
pub struct StageInput {
    inner: Inputs,
    progress: Arc<Progress>,
    base: Option<Arc<Map<String, Value>>>,
    run: Arc<RunContext>,
    keep_stale: bool,
    /// For the roots of a live run: notified when the run's input is closed (a shutdown).
    closing: Option<Arc<Closing>>,
}

/// Where a stage's elements come from.
pub(crate) enum Inputs {
    /// Nothing: the input is closed.
    None,
    /// One channel of its own.
    Single(mpsc::Receiver<Element>),
    /// One channel shared with competing consumers.
    Shared(Arc<tokio::sync::Mutex<mpsc::Receiver<Element>>>),
    /// Several channels (fan-in), read fairly; closed ones are removed.
    FanIn {
        /// (edge index, receiver).
        sources: Vec<(u32, mpsc::Receiver<Element>)>,
        /// Where the next fair scan starts.
        next: usize,
    },
}

/// A live run's input, closed by a shutdown.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    closed: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Closing {
    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// [`StageInput::try_recv`] found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is queued now; more may come.
    #[error("no element is queued")]
    Empty,
    /// Every upstream is done.
    #[error("the input has ended")]
    Closed,
}

impl fmt::Debug for StageInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inputs::None => "none",
            Inputs::Single(_) => "single",
            Inputs::Shared(_) => "shared",
            Inputs::FanIn { .. } => "fan-in",
        };
        f.debug_struct("StageInput")
            .field("kind", &kind)
            .field("keep_stale", &self.keep_stale)
            .finish_non_exhaustive()
    }
}

impl StageInput {
    pub(crate) fn new(
        inner: Inputs,
        progress: Arc<Progress>,
        base: Option<Arc<Map<String, Value>>>,
        run: Arc<RunContext>,
        closing: Option<Arc<Closing>>,
    ) -> Self {
        Self {
            inner,
            progress,
            base,
            run,
            keep_stale: false,
            closing,
        }
    }

    /// An input fed by `rx`, for running a stage outside a pipeline; stale elements are
    /// judged by `run`'s interrupt epoch.
    pub fn from_receiver(rx: mpsc::Receiver<Element>, run: Arc<RunContext>) -> Self {
        Self::new(Inputs::Single(rx), Arc::default(), None, run, None)
    }

    /// An input that is already closed.
    pub fn empty() -> Self {
        Self::new(Inputs::None, Arc::default(), None, Arc::default(), None)
    }

    /// Delivers stale elements too (for a stage that records everything).
    #[must_use]
    pub fn keep_stale(mut self) -> Self {
        self.keep_stale = true;
        self
    }

    /// The next element, or `None` when every upstream is done.
    ///
    /// Cancel-safe: when the returned future is dropped before it completes (in a
    /// `tokio::select!`), no element is lost.
    pub async fn recv(&mut self) -> Option<Element> {
        loop {
            let element = match self.closing.as_deref() {
                Some(closing) => {
                    let closed = closing.notify.notified();
                    if closing.is_closed() {
                        self.inner.close();
                        next(&mut self.inner).await
                    } else {
                        tokio::select! {
                            biased;
                            element = next(&mut self.inner) => element,
                            () = closed => {
                                self.inner.close();
                                continue;
                            }
                        }
                    }
                }
                None => next(&mut self.inner).await,
            }?;
            if let Some(element) = self.accept(element) {
                return Some(element);
            }
        }
    }

    /// The next element if one is queued now, without waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is queued, [`TryRecvError::Closed`] when every
    /// upstream is done.
    pub fn try_recv(&mut self) -> Result<Element, TryRecvError> {
        loop {
            let element = try_next(&mut self.inner)?;
            if let Some(element) = self.accept(element) {
                return Ok(element);
            }
        }
    }

    /// Counts the element, drops it when stale, merges the base metadata.
    fn accept(&self, mut element: Element) -> Option<Element> {
        self.progress.tick();
        if !self.keep_stale && element.is_stale(self.run.epoch()) {
            return None;
        }
        if let Some(base) = &self.base {
            element.meta.merge_base(base);
        }
        Some(element)
    }
}

impl Inputs {
    /// A shutdown closed the run's input: no more sends are accepted, and what was queued is
    /// still read.
    fn close(&mut self) {
        match self {
            Inputs::Single(rx) => rx.close(),
            Inputs::FanIn { sources, .. } => sources.iter_mut().for_each(|(_, rx)| rx.close()),
            Inputs::None | Inputs::Shared(_) => {}
        }
    }
}

async fn next(inputs: &mut Inputs) -> Option<Element> {
    match inputs {
        Inputs::None => None,
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
                            // Re-check the source now at `idx` without advancing.
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
    }
}

fn try_next(inputs: &mut Inputs) -> Result<Element, TryRecvError> {
    fn one(rx: &mut mpsc::Receiver<Element>) -> Result<Element, TryRecvError> {
        rx.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => TryRecvError::Closed,
        })
    }
    match inputs {
        Inputs::None => Err(TryRecvError::Closed),
        Inputs::Single(rx) => one(rx),
        Inputs::Shared(rx) => match rx.try_lock() {
            Ok(mut rx) => one(&mut rx),
            // Another consumer is receiving: nothing for this one now.
            Err(_) => Err(TryRecvError::Empty),
        },
        Inputs::FanIn { sources, next } => {
            let mut i = 0;
            while i < sources.len() {
                let idx = (*next + i) % sources.len();
                match one(&mut sources[idx].1) {
                    Ok(mut e) => {
                        e.meta.merge_input = Some(sources[idx].0);
                        *next = idx + 1;
                        return Ok(e);
                    }
                    Err(TryRecvError::Closed) => {
                        sources.remove(idx);
                        *next = idx;
                        i = 0;
                    }
                    Err(TryRecvError::Empty) => i += 1,
                }
            }
            if sources.is_empty() {
                Err(TryRecvError::Closed)
            } else {
                Err(TryRecvError::Empty)
            }
        }
    }
}
