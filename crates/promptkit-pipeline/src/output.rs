//! The sending end of a stage: [`StageOutput`].

use std::fmt;
use std::sync::Arc;

use promptkit_core::BoxFuture;
use tokio::sync::mpsc;

use crate::context::Progress;
use crate::element::Element;

/// Every downstream consumer is gone (they finished or the run is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no downstream stage is receiving")]
pub struct OutputClosed;

/// Why [`StageOutput::try_send`] did not send; the element comes back.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// A target's channel is full: sending would wait.
    #[error("a downstream channel is full")]
    Full(Element),
    /// No target is receiving any more.
    #[error("no downstream stage is receiving")]
    Closed(Element),
}

impl TrySendError {
    /// The element that was not sent.
    pub fn into_inner(self) -> Element {
        match self {
            Self::Full(e) | Self::Closed(e) => e,
        }
    }
}

/// A downstream target of a stage's output: one channel, read by one stage, by several
/// competing stages, or by the run's consumer.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) tx: mpsc::Sender<Element>,
}

impl Target {
    pub(crate) fn new(names: Vec<Arc<str>>, tx: mpsc::Sender<Element>) -> Self {
        Self { names, tx }
    }
}

/// The sending end of a stage. Sending waits while a downstream channel is full
/// (backpressure).
///
/// With several targets (a broadcast branch), every target gets every element, in order.
pub struct StageOutput {
    targets: Vec<Target>,
    progress: Arc<Progress>,
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
        Self { targets, progress }
    }

    /// An output into `tx`, for running a stage outside a pipeline.
    pub fn from_sender(tx: mpsc::Sender<Element>) -> Self {
        Self::new(vec![Target::new(vec!["output".into()], tx)], Arc::default())
    }

    /// An output that discards everything (for sinks that produce nothing).
    pub fn discard() -> Self {
        Self::new(Vec::new(), Arc::default())
    }

    /// The downstream stage names, one entry per target (competing consumers share a target).
    pub fn target_names(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| t.names.iter().map(|n| &**n).collect::<Vec<_>>().join("|"))
            .collect()
    }

    /// Number of targets.
    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    /// Sends `element` to every target, waiting while one is full. Targets that have stopped
    /// receiving are skipped.
    ///
    /// The element is sent when `send` is called if every target has room (the common case),
    /// and the future only reports it; otherwise the future waits for room (backpressure).
    /// The wait is boxed, so a stage's own future stays small: stages send in their hottest
    /// loop, and a future that held the element and a channel's send future would be copied
    /// and polled whole at every element.
    ///
    /// Cancel-safe: a send dropped before it completes delivered the element to every live
    /// target or to none (a broadcast reserves room in every target before it sends to any).
    ///
    /// # Errors
    /// [`OutputClosed`] when no target is receiving any more. A stage with no targets at all
    /// (a sink) never fails.
    pub fn send(
        &self,
        element: Element,
    ) -> impl Future<Output = Result<(), OutputClosed>> + Send + '_ {
        self.progress.tick();
        let waiting = match try_deliver(self.targets.iter().map(|t| &t.tx), element) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(element)) => Ok(Some(self.send_waiting(element))),
            Err(TrySendError::Closed(_)) => Err(OutputClosed),
        };
        async move {
            match waiting? {
                Some(waiting) => waiting.await,
                None => Ok(()),
            }
        }
    }

    /// The wait of [`send`](Self::send) when a target was full.
    fn send_waiting(&self, element: Element) -> BoxFuture<'_, Result<(), OutputClosed>> {
        match self.targets.as_slice() {
            [only] => {
                Box::pin(async move { only.tx.send(element).await.map_err(|_| OutputClosed) })
            }
            many => Box::pin(broadcast(many.iter().map(|t| &t.tx), element)),
        }
    }

    /// Sends `element` to every target if each has room now; never waits. For a stage that
    /// would rather drop an element (realtime audio, say) than stall what feeds it.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when a live target has no room (nothing was sent);
    /// [`TrySendError::Closed`] when no target is receiving.
    #[allow(
        clippy::result_large_err,
        reason = "the element comes back unboxed, as with tokio's `try_send`: boxing it would allocate on the path that must not wait"
    )]
    pub fn try_send(&self, element: Element) -> Result<(), TrySendError> {
        self.progress.tick();
        try_deliver(self.targets.iter().map(|t| &t.tx), element)
    }

    /// Sends `element` to the target at `index` only (routers), waiting while it is full.
    ///
    /// # Errors
    /// [`OutputClosed`] when that target is not receiving or does not exist.
    pub async fn send_to(&self, index: usize, element: Element) -> Result<(), OutputClosed> {
        self.progress.tick();
        let target = self.targets.get(index).ok_or(OutputClosed)?;
        send_one(&target.tx, element).await
    }

    /// The index of the target that includes the stage `name`.
    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets
            .iter()
            .position(|t| t.names.iter().any(|n| &**n == name))
    }

    /// Whether every target has stopped receiving.
    pub fn is_closed(&self) -> bool {
        !self.targets.is_empty() && self.targets.iter().all(|t| t.tx.is_closed())
    }
}

/// Sends on one channel: at once when it has room, otherwise waiting for room.
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

/// Sends to every channel of a run's input, waiting for room: [`send_one`] for one,
/// [`broadcast`] for several.
pub(crate) async fn send_all(
    txs: &[mpsc::Sender<Element>],
    element: Element,
) -> Result<(), OutputClosed> {
    match txs {
        [only] => send_one(only, element).await,
        many => broadcast(many.iter(), element).await,
    }
}

/// Sends to every channel: reserves room in each live one (waiting while one is full), then
/// sends to all, so that a send dropped part-way delivered nothing. Closed channels are
/// skipped; `Err` when all are closed.
pub(crate) async fn broadcast<'a>(
    txs: impl Iterator<Item = &'a mpsc::Sender<Element>>,
    element: Element,
) -> Result<(), OutputClosed> {
    let mut permits = Vec::new();
    for tx in txs {
        if let Ok(permit) = tx.reserve().await {
            permits.push(permit);
        }
    }
    if permits.is_empty() {
        return Err(OutputClosed);
    }
    deliver(permits, element);
    Ok(())
}

/// Sends to every channel if each live one has room now, never waiting: all or nothing.
/// Closed channels are skipped; no channel at all is a success (a sink).
#[allow(
    clippy::result_large_err,
    reason = "the element comes back unboxed, as with tokio's `try_send`"
)]
pub(crate) fn try_deliver<'a>(
    txs: impl ExactSizeIterator<Item = &'a mpsc::Sender<Element>>,
    element: Element,
) -> Result<(), TrySendError> {
    let mut txs = txs;
    match txs.len() {
        0 => Ok(()),
        1 => {
            let only = txs.next().expect("one channel");
            only.try_send(element).map_err(|e| match e {
                mpsc::error::TrySendError::Full(e) => TrySendError::Full(e),
                mpsc::error::TrySendError::Closed(e) => TrySendError::Closed(e),
            })
        }
        many => {
            let mut permits = Vec::with_capacity(many);
            for tx in txs {
                match tx.try_reserve() {
                    Ok(permit) => permits.push(permit),
                    Err(mpsc::error::TrySendError::Full(())) => {
                        return Err(TrySendError::Full(element));
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => {}
                }
            }
            if permits.is_empty() {
                return Err(TrySendError::Closed(element));
            }
            deliver(permits, element);
            Ok(())
        }
    }
}

/// Sends a clone of `element` on each permit but the last, and `element` itself on the last.
fn deliver(mut permits: Vec<mpsc::Permit<'_, Element>>, element: Element) {
    if let Some(last) = permits.pop() {
        for permit in permits {
            permit.send(element.clone());
        }
        last.send(element);
    }
}
