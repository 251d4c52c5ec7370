//! Stages that connect a run to a [`StateStore`]: [`StateStoreLoad`] puts the stored
//! conversation in front of the new input, [`IncrementalSave`] persists the turn's new
//! messages as they pass.
//!
//! Both read the conversation id from the run's [`RunData::session_id`](crate::RunData)
//! (and the owner from `user_id`); a run without a session id passes through untouched.

use std::fmt;
use std::sync::Arc;

use promptkit_core::{ExpectedVersion, Message, StateError, StateStore, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::element::{Element, Payload};
use crate::{Stage, StageContext, StageError, StageInput, StageKind, StageOutput};

/// Metadata key set (to `true`) on the system message a [`StateStoreLoad`] makes from the
/// latest stored summary.
pub const SUMMARY_METADATA_KEY: &str = "promptkit.summary";

/// Loads the stored conversation and emits its messages, marked as history
/// ([`ElementMeta::from_history`](crate::ElementMeta)), before forwarding the new input.
///
/// When the conversation has summaries, the latest one is emitted first as a system message
/// (its metadata has [`SUMMARY_METADATA_KEY`]) in place of the messages it covers. With
/// [`recent`](Self::recent), the `n` newest messages follow the summary whatever it covers.
/// A load failure is fatal for the run.
#[derive(Clone)]
pub struct StateStoreLoad {
    name: String,
    store: Arc<dyn StateStore>,
    recent: Option<usize>,
    summaries: bool,
}

impl fmt::Debug for StateStoreLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStoreLoad")
            .field("name", &self.name)
            .field("store", &self.store)
            .field("recent", &self.recent)
            .field("summaries", &self.summaries)
            .finish()
    }
}

impl StateStoreLoad {
    /// A stage named `state_load` loading whole conversations from `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            name: "state_load".to_owned(),
            store,
            recent: None,
            summaries: true,
        }
    }

    /// Renames the stage.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Emits only the `n` most recent messages.
    #[must_use]
    pub fn recent(mut self, n: usize) -> Self {
        self.recent = Some(n);
        self
    }

    /// Whether to emit the latest summary as a system message (default `true`).
    #[must_use]
    pub fn with_summaries(mut self, summaries: bool) -> Self {
        self.summaries = summaries;
        self
    }
}

impl Stage for StateStoreLoad {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Transform
    }

    async fn run(
        &self,
        cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        let session = cx.run().read().session_id.clone();
        if let Some(id) = session {
            let conversation = match self.recent {
                Some(n) => self.store.load_recent(&id, n).await?,
                None => self.store.load(&id).await?,
            };
            cx.heartbeat();
            cx.run()
                .write()
                .extensions
                .insert(LoadedVersion(conversation.as_ref().map(|c| c.version)));
            if let Some(mut conversation) = conversation {
                let latest = self
                    .summaries
                    .then(|| conversation.summaries.pop())
                    .flatten();
                let summary = latest.map(|s| {
                    if self.recent.is_none() {
                        // The summary stands in for the messages it covers.
                        let covered = usize::try_from(s.end_index)
                            .unwrap_or(usize::MAX)
                            .min(conversation.messages.len());
                        conversation.messages.drain(..covered);
                    }
                    let mut m = Message::system(format!(
                        "Summary of the earlier conversation:\n{}",
                        s.content
                    ));
                    m.metadata
                        .insert(SUMMARY_METADATA_KEY.to_owned(), true.into());
                    m
                });
                for message in summary.into_iter().chain(conversation.messages) {
                    let element = Element::message(message)
                        .as_history()
                        .with_source(cx.name_arc());
                    output.send(element).await?;
                }
            }
        }
        while let Some(element) = input.recv().await {
            output.send(element).await?;
        }
        Ok(())
    }
}

/// The version of the conversation [`StateStoreLoad`] loaded (`None`: there was none), in
/// the run's [`Extensions`](crate::Extensions). [`IncrementalSave`] appends against it, so a
/// turn never writes after messages another writer appended since its load: that append
/// fails with [`StateError::Conflict`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedVersion(pub Option<u64>);

/// Appends every new message that passes (not marked as history) to the store, then
/// forwards it.
///
/// Messages are saved one by one as they arrive, before being forwarded, so a turn that
/// fails later keeps what was already said; the append runs on its own task and completes
/// even if the run is cancelled meanwhile. A message without an id gets one (`{run id}-{nonce}-{n}`, unique across
/// runs and processes), set on the forwarded message too; since appends are idempotent by
/// id, re-sending an element never duplicates it. Only whole messages
/// ([`Payload::Message`]) are saved, not streamed deltas. A save failure is fatal for the
/// run.
#[derive(Clone)]
pub struct IncrementalSave {
    name: String,
    store: Arc<dyn StateStore>,
}

impl fmt::Debug for IncrementalSave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncrementalSave")
            .field("name", &self.name)
            .field("store", &self.store)
            .finish()
    }
}

impl IncrementalSave {
    /// A stage named `state_save` appending to `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            name: "state_save".to_owned(),
            store,
        }
    }

    /// Renames the stage.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Stage for IncrementalSave {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Observe
    }

    async fn run(
        &self,
        cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        let (session, user) = {
            let turn = cx.run().read();
            (turn.session_id.clone(), turn.user_id.clone())
        };
        let Some(session) = session else {
            while let Some(element) = input.recv().await {
                output.send(element).await?;
            }
            return Ok(());
        };
        // The run id alone restarts per process; the start time makes ids unique across
        // processes and restarts.
        let id_prefix = format!(
            "{}-{:x}",
            cx.events().run_id(),
            Timestamp::now().as_unix_nanos()
        );
        // Appends run on a task of their own, so a message that reached this stage is
        // stored even when the run is cancelled (a later stage failed) mid-append.
        let expected = match cx.run().read().extensions.get::<LoadedVersion>() {
            Some(LoadedVersion(Some(version))) => ExpectedVersion::Exact(*version),
            Some(LoadedVersion(None)) => ExpectedVersion::New,
            None => ExpectedVersion::Any,
        };
        let writer = Writer::spawn(Arc::clone(&self.store), session, user, expected);
        let mut next = 0_u64;
        while let Some(mut element) = input.recv().await {
            if let (false, Payload::Message(message)) =
                (element.meta.from_history, &mut element.payload)
            {
                if message.id.is_none() {
                    message.id = Some(format!("{id_prefix}-{next}"));
                    next += 1;
                }
                writer.append((**message).clone()).await?;
                cx.heartbeat();
            }
            output.send(element).await?;
        }
        Ok(())
    }
}

type Ack = oneshot::Sender<Result<(), StateError>>;

/// The task appending one run's messages, in order.
struct Writer {
    queue: mpsc::Sender<(Message, Ack)>,
}

impl Writer {
    /// Appends to `session`, the first append expecting `expected` and each next one the
    /// version the previous one made: a message another writer appended in between (a
    /// turn on another replica that took over a lost lease) fails this run's next append
    /// with [`StateError::Conflict`] instead of interleaving with it. A store without
    /// `append_if` gets plain appends, with a warning.
    fn spawn(
        store: Arc<dyn StateStore>,
        session: String,
        user: Option<String>,
        mut expected: ExpectedVersion,
    ) -> Self {
        let (queue, mut rx) = mpsc::channel::<(Message, Ack)>(16);
        tokio::spawn(async move {
            while let Some((message, ack)) = rx.recv().await {
                let messages = std::slice::from_ref(&message);
                let mut outcome = store
                    .append_if(&session, user.as_deref(), messages, expected)
                    .await;
                if matches!(outcome, Err(StateError::Unsupported { .. })) {
                    tracing::warn!(
                        session = %session,
                        "the state store has no version-checked appends: appending without a check"
                    );
                    expected = ExpectedVersion::Any;
                    outcome = store.append(&session, user.as_deref(), messages).await;
                }
                let result = outcome.map(|done| {
                    if expected != ExpectedVersion::Any {
                        expected = ExpectedVersion::Exact(done.version);
                    }
                });
                // The stage may be gone (run cancelled); the message is stored anyway.
                let _ = ack.send(result);
            }
        });
        Self { queue }
    }

    async fn append(&self, message: Message) -> Result<(), StageError> {
        let (ack, done) = oneshot::channel();
        self.queue
            .send((message, ack))
            .await
            .map_err(|_| StageError::new("state writer stopped"))?;
        match done.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StageError::new("state writer stopped")),
        }
    }
}
