//! Typed events, the event bus and the per-run emitter.
//!
//! Every event has a stable serialised discriminator (`"pipeline.started"`,
//! `"stage.completed"`, ...) and travels in an [`Event`] envelope stamped with a per-run
//! monotonic sequence number. The [`EventBus`] never blocks a publisher: each subscriber
//! has a bounded queue, a full queue drops the event and counts it, and each subscriber sees
//! events in publish order.

mod store;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use promptkit_core::{Cost, FinishReason, Message, Timestamp, ToolCall, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

pub use store::{EventStore, EventStoreError, Replay, ReplaySpeed};

/// One event: an envelope around an [`EventKind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the run's event sequence, starting at 1.
    pub seq: u64,
    /// When the event was emitted.
    pub at: Timestamp,
    /// The run (execution) that emitted it.
    pub run_id: String,
    /// The session the run belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The conversational turn the event is about, if any (see
    /// [`RunContext::begin_turn`](crate::RunContext::begin_turn)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<u64>,
    /// What happened.
    pub data: EventKind,
}

/// What happened. Serialised with a `type` tag such as `"stage.completed"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    /// A run started.
    #[serde(rename = "pipeline.started")]
    PipelineStarted {
        /// Number of stages.
        stages: usize,
    },
    /// A run finished successfully.
    #[serde(rename = "pipeline.completed")]
    PipelineCompleted {
        /// Wall time of the run.
        duration_ms: u64,
    },
    /// A run failed.
    #[serde(rename = "pipeline.failed")]
    PipelineFailed {
        /// The error.
        error: String,
        /// Wall time of the run.
        duration_ms: u64,
    },
    /// A stage started.
    #[serde(rename = "stage.started")]
    StageStarted {
        /// The stage.
        stage: String,
        /// Its kind.
        kind: String,
    },
    /// A stage finished successfully.
    #[serde(rename = "stage.completed")]
    StageCompleted {
        /// The stage.
        stage: String,
        /// How long it ran.
        duration_ms: u64,
    },
    /// A stage failed (or panicked).
    #[serde(rename = "stage.failed")]
    StageFailed {
        /// The stage.
        stage: String,
        /// The error.
        error: String,
        /// How long it ran.
        duration_ms: u64,
    },
    /// A provider call started.
    #[serde(rename = "provider.call.started")]
    ProviderCallStarted {
        /// Provider id.
        provider: String,
        /// Model.
        model: String,
        /// Messages sent.
        messages: usize,
        /// Tools offered.
        tools: usize,
    },
    /// A provider call finished.
    #[serde(rename = "provider.call.completed")]
    ProviderCallCompleted {
        /// Provider id.
        provider: String,
        /// Model.
        model: String,
        /// Wall time.
        duration_ms: u64,
        /// Usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// Cost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<Cost>,
        /// Finish reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finish_reason: Option<FinishReason>,
        /// Tool calls requested.
        tool_calls: usize,
    },
    /// A provider call failed.
    #[serde(rename = "provider.call.failed")]
    ProviderCallFailed {
        /// Provider id.
        provider: String,
        /// Model.
        model: String,
        /// The error.
        error: String,
        /// Wall time.
        duration_ms: u64,
    },
    /// A tool call started.
    #[serde(rename = "tool.call.started")]
    ToolCallStarted {
        /// The call.
        call: ToolCall,
    },
    /// A tool call finished (successfully or with an error result).
    #[serde(rename = "tool.call.completed")]
    ToolCallCompleted {
        /// Call id.
        call_id: String,
        /// Tool name.
        name: String,
        /// Wall time.
        duration_ms: u64,
        /// Whether the result reports an error.
        is_error: bool,
    },
    /// A message was produced (by a stage) or recorded.
    #[serde(rename = "message.created")]
    MessageCreated {
        /// The message.
        message: Message,
    },
    /// A system prompt was rendered.
    #[serde(rename = "prompt.rendered")]
    PromptRendered {
        /// Task type of the prompt, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_type: Option<String>,
        /// Variables used.
        used: Vec<String>,
        /// Length of the rendered prompt in bytes.
        length: usize,
    },
    /// An element passed a recording stage.
    #[serde(rename = "element.recorded")]
    ElementRecorded {
        /// The recording stage.
        stage: String,
        /// The element.
        element: crate::stages::RecordedElement,
    },
    /// Audio received from the user.
    #[serde(rename = "audio.input")]
    AudioInput {
        /// Bytes received.
        bytes: usize,
        /// Duration, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// Audio sent to the user.
    #[serde(rename = "audio.output")]
    AudioOutput {
        /// Bytes sent.
        bytes: usize,
        /// Duration, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// A transcription of user audio.
    #[serde(rename = "audio.transcription")]
    Transcription {
        /// The text.
        text: String,
    },
    /// An application-defined event.
    #[serde(rename = "custom")]
    Custom {
        /// Event name.
        name: String,
        /// Payload.
        #[serde(default)]
        data: Value,
    },
}

impl EventKind {
    /// The serialised discriminator, for example `"stage.completed"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::PipelineStarted { .. } => "pipeline.started",
            Self::PipelineCompleted { .. } => "pipeline.completed",
            Self::PipelineFailed { .. } => "pipeline.failed",
            Self::StageStarted { .. } => "stage.started",
            Self::StageCompleted { .. } => "stage.completed",
            Self::StageFailed { .. } => "stage.failed",
            Self::ProviderCallStarted { .. } => "provider.call.started",
            Self::ProviderCallCompleted { .. } => "provider.call.completed",
            Self::ProviderCallFailed { .. } => "provider.call.failed",
            Self::ToolCallStarted { .. } => "tool.call.started",
            Self::ToolCallCompleted { .. } => "tool.call.completed",
            Self::MessageCreated { .. } => "message.created",
            Self::PromptRendered { .. } => "prompt.rendered",
            Self::ElementRecorded { .. } => "element.recorded",
            Self::AudioInput { .. } => "audio.input",
            Self::AudioOutput { .. } => "audio.output",
            Self::Transcription { .. } => "audio.transcription",
            Self::Custom { .. } => "custom",
        }
    }
}

/// Default queue length of a subscriber.
pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 1024;

/// A publish/subscribe bus for [`Event`]s. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

#[derive(Default)]
struct BusInner {
    subscribers: Mutex<Vec<mpsc::Sender<Arc<Event>>>>,
    dropped: AtomicU64,
    published: AtomicU64,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.subscriber_count())
            .field("published", &self.published())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl EventBus {
    /// A bus without subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes with the default queue length.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(DEFAULT_SUBSCRIBER_CAPACITY)
    }

    /// Subscribes with a queue of `capacity` events (at least 1). When the queue is full,
    /// new events for this subscriber are dropped and counted in [`EventBus::dropped`].
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        Subscription { rx }
    }

    /// Publishes an event to every subscriber without waiting. Returns how many subscribers
    /// received it.
    pub fn publish(&self, event: Event) -> usize {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let event = Arc::new(event);
        let mut subscribers = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut delivered = 0;
        subscribers.retain(|tx| match tx.try_send(Arc::clone(&event)) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        delivered
    }

    /// Events dropped because a subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Events published.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// Live subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|tx| !tx.is_closed())
            .count()
    }
}

/// A subscriber's queue. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Arc<Event>>,
}

impl Subscription {
    /// The next event; `None` once the bus is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.rx.try_recv().ok()
    }

    /// Every event queued now.
    pub fn drain(&mut self) -> Vec<Arc<Event>> {
        let mut out = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            out.push(e);
        }
        out
    }
}

/// Emits events for one run: stamps the run id, session id, turn and the run's sequence.
/// Cheap to clone; a no-op when the pipeline has no bus.
#[derive(Clone)]
pub struct Emitter {
    bus: Option<EventBus>,
    run_id: Arc<str>,
    session_id: Option<Arc<str>>,
    turn_id: Option<u64>,
    /// The per-run sequence, shared by the run's emitters; none when events go nowhere.
    seq: Option<Arc<AtomicU64>>,
}

impl fmt::Debug for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter")
            .field("run_id", &self.run_id)
            .field("session_id", &self.session_id)
            .field("turn_id", &self.turn_id)
            .field("enabled", &self.bus.is_some())
            .finish()
    }
}

impl Emitter {
    /// An emitter for a run.
    pub fn new(
        bus: Option<EventBus>,
        run_id: impl Into<Arc<str>>,
        session_id: Option<&str>,
    ) -> Self {
        // A disabled emitter (most runs) allocates nothing beyond the run id it is given.
        let enabled = bus.is_some();
        Self {
            bus,
            run_id: run_id.into(),
            session_id: session_id.filter(|_| enabled).map(Into::into),
            turn_id: None,
            seq: enabled.then(|| Arc::new(AtomicU64::new(0))),
        }
    }

    /// This emitter, stamping its events with `turn_id` (sharing the run's sequence).
    #[must_use]
    pub fn with_turn(&self, turn_id: Option<u64>) -> Self {
        Self {
            turn_id,
            ..self.clone()
        }
    }

    /// An emitter that emits nothing.
    pub fn disabled() -> Self {
        Self::new(None, "", None)
    }

    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.bus.is_some()
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Emits an event.
    pub fn emit(&self, data: EventKind) {
        if let (Some(bus), Some(seq)) = (&self.bus, &self.seq) {
            let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
            bus.publish(Event {
                seq,
                at: Timestamp::now(),
                run_id: self.run_id.to_string(),
                session_id: self.session_id.as_deref().map(str::to_owned),
                turn_id: self.turn_id,
                data,
            });
        }
    }

    /// Emits an event built lazily (skipped entirely when disabled).
    pub fn emit_with(&self, make: impl FnOnce() -> EventKind) {
        if self.bus.is_some() {
            self.emit(make());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_events_in_order_with_a_per_run_sequence() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe();
        let emitter = Emitter::new(Some(bus.clone()), "run-1", Some("s"));
        for i in 0..5 {
            emitter.emit(EventKind::Custom {
                name: format!("e{i}"),
                data: Value::Null,
            });
        }
        let events = sub.drain();
        assert_eq!(events.len(), 5);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.run_id, "run-1");
            assert_eq!(e.session_id.as_deref(), Some("s"));
        }
        // Another run has its own sequence.
        let other = Emitter::new(Some(bus.clone()), "run-2", None);
        other.emit(EventKind::PipelineStarted { stages: 1 });
        assert_eq!(sub.try_recv().unwrap().seq, 1);
    }

    #[tokio::test]
    async fn a_full_subscriber_drops_and_counts_without_blocking() {
        let bus = EventBus::new();
        let mut slow = bus.subscribe_with_capacity(2);
        let mut fast = bus.subscribe_with_capacity(100);
        let emitter = Emitter::new(Some(bus.clone()), "r", None);
        for _ in 0..10 {
            emitter.emit(EventKind::PipelineStarted { stages: 0 });
        }
        assert_eq!(slow.drain().len(), 2);
        assert_eq!(fast.drain().len(), 10);
        assert_eq!(bus.dropped(), 8);
        assert_eq!(bus.published(), 10);
    }

    #[test]
    fn dropped_subscriptions_are_removed() {
        let bus = EventBus::new();
        let sub = bus.subscribe();
        assert_eq!(bus.subscriber_count(), 1);
        drop(sub);
        assert_eq!(bus.subscriber_count(), 0);
        assert!(Emitter::new(Some(bus.clone()), "r", None).is_enabled());
        bus.publish(Event {
            seq: 1,
            at: Timestamp::now(),
            run_id: "r".into(),
            session_id: None,
            turn_id: None,
            data: EventKind::PipelineStarted { stages: 1 },
        });
        assert_eq!(bus.dropped(), 0);
    }

    #[test]
    fn event_json_has_a_stable_type_tag() {
        let event = Event {
            seq: 3,
            at: Timestamp::from_unix_millis(0).unwrap(),
            run_id: "r".into(),
            session_id: None,
            turn_id: Some(2),
            data: EventKind::StageCompleted {
                stage: "provider".into(),
                duration_ms: 12,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 3, "at": "1970-01-01T00:00:00Z", "run_id": "r", "turn_id": 2,
                "data": {"type": "stage.completed", "stage": "provider", "duration_ms": 12}})
        );
        assert_eq!(event.data.type_name(), "stage.completed");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
