//! Merge, metrics and debug stages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::element::{Element, Payload};
use crate::{Stage, StageContext, StageError, StageInput, StageKind, StageOutput};

/// Fan-in: forwards elements from all its inputs as they arrive, each tagged with its input
/// index in [`ElementMeta::merge_input`](crate::ElementMeta::merge_input). Ends when every
/// input has ended.
#[derive(Debug, Clone)]
pub struct Merge {
    name: String,
}

/// A merge (fan-in) stage.
pub fn merge(name: impl Into<String>) -> Merge {
    Merge { name: name.into() }
}

impl Stage for Merge {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts_fan_in(&self) -> bool {
        true
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            output.send(e).await?;
        }
        Ok(())
    }
}

/// Counts and latencies observed by a [`Metrics`] stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Elements seen.
    pub elements: u64,
    /// Elements seen per payload kind (`"text"`, `"message"`, `"audio"`, ...).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Error elements seen.
    pub errors: u64,
    /// Smallest latency of an element at this point: the time from the start of its run to
    /// its arrival here.
    pub min_latency: Option<Duration>,
    /// Largest latency.
    pub max_latency: Option<Duration>,
    /// Sum of latencies (divide by `elements` for the mean).
    pub total_latency: Duration,
}

impl MetricsSnapshot {
    /// Mean latency, if any element was seen.
    pub fn mean_latency(&self) -> Option<Duration> {
        u32::try_from(self.elements)
            .ok()
            .filter(|n| *n > 0)
            .map(|n| self.total_latency / n)
    }
}

/// Reads the figures of a [`Metrics`] stage; shared with the stage.
#[derive(Debug, Clone, Default)]
pub struct MetricsHandle(Arc<Mutex<MetricsSnapshot>>);

impl MetricsHandle {
    /// The figures so far (across every run of the pipeline).
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resets the figures.
    pub fn reset(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = MetricsSnapshot::default();
    }
}

/// Passes elements through, counting them by kind and measuring their latency (from the
/// start of their run to this point of the pipeline: after a provider stage, the first text
/// element's latency is the time to first token). Place one after a stage to measure it.
#[derive(Debug, Clone)]
pub struct Metrics {
    name: String,
    handle: MetricsHandle,
}

/// A metrics stage and the handle to read it.
pub fn metrics(name: impl Into<String>) -> (Metrics, MetricsHandle) {
    let handle = MetricsHandle::default();
    (
        Metrics {
            name: name.into(),
            handle: handle.clone(),
        },
        handle,
    )
}

impl Stage for Metrics {
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
        let started = cx.run().started();
        while let Some(e) = input.recv().await {
            let age = started.elapsed();
            {
                let mut m = self.handle.0.lock().unwrap_or_else(PoisonError::into_inner);
                m.elements += 1;
                *m.by_kind.entry(e.kind_name()).or_default() += 1;
                if e.as_error().is_some() {
                    m.errors += 1;
                }
                m.min_latency = Some(m.min_latency.map_or(age, |v| v.min(age)));
                m.max_latency = Some(m.max_latency.map_or(age, |v| v.max(age)));
                m.total_latency += age;
            }
            output.send(e).await?;
        }
        Ok(())
    }
}

/// Logs every element (at `debug` level, target `promptkit::debug`) and forwards it.
#[derive(Debug, Clone)]
pub struct Debug {
    name: String,
}

/// A debug stage named `debug_<label>`.
pub fn debug(label: &str) -> Debug {
    Debug {
        name: format!("debug_{label}"),
    }
}

fn preview(text: &str) -> String {
    const MAX: usize = 100;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

/// A one-line description of an element, as the debug stage logs it.
pub(crate) fn describe(e: &Element) -> String {
    match &e.payload {
        Payload::Text(t) => format!("text {:?}", preview(t)),
        Payload::Message(m) => format!(
            "message role={} text={:?} tool_calls={} history={}",
            m.role.as_str(),
            preview(&m.text()),
            m.tool_calls.len(),
            e.meta.from_history
        ),
        Payload::Audio(a) => format!(
            "audio {} bytes {} Hz {} ch {:?}",
            a.data.len(),
            a.format.sample_rate,
            a.format.channels,
            a.format.encoding
        ),
        Payload::Video(v) => format!("video {} bytes {}", v.data.len(), v.mime_type),
        Payload::Image(i) => format!("image {} bytes {}", i.data.len(), i.mime_type),
        Payload::ToolCall(c) => format!("tool_call {} ({})", c.name, c.id),
        Payload::Part(p) => format!("part {}", p.kind().as_str()),
        Payload::Control(_) => e
            .as_error()
            .map_or_else(|| e.kind_name().to_owned(), |err| format!("error {err}")),
    }
}

impl Stage for Debug {
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
        let mut n = 0_u64;
        while let Some(e) = input.recv().await {
            n += 1;
            tracing::debug!(target: "promptkit::debug", stage = %cx.name(), seq = n, "{}", describe(&e));
            output.send(e).await?;
        }
        Ok(())
    }
}
