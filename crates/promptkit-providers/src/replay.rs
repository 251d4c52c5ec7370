//! Recording real provider calls and replaying them offline.
//!
//! [`RecordingProvider`] wraps any provider and appends every call to a JSON Lines file: the
//! request and either the response (`predict`) or the stream's events (`stream`).
//! [`ReplayProvider`] serves a recording back, deterministic and offline: in recorded order, or
//! by matching the request's conversation. Tests and demos get real vendor answers without a
//! network or a key.
//!
//! Each line is `{"request": …, "response": …}` or `{"request": …, "events": [...]}`, with the
//! core types' stable serialised forms.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt as _;
use promptkit_core::{
    BoxFuture, Capabilities, EventStream, PricingTable, Provider, ProviderError, ProviderRequest,
    ProviderResponse, StreamEvent,
};
use serde::{Deserialize, Serialize};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// The request as sent.
    pub request: ProviderRequest,
    /// The answer of a `predict` call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ProviderResponse>,
    /// The events of a `stream` call, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<StreamEvent>>,
}

fn io_error(path: &Path, e: &std::io::Error) -> ProviderError {
    ProviderError::Config {
        message: format!("replay file {}: {e}", path.display()),
    }
}

/// Wraps a provider and records every successful call to a JSON Lines file.
#[derive(Debug, Clone)]
pub struct RecordingProvider {
    inner: Arc<dyn Provider>,
    path: Arc<PathBuf>,
    lock: Arc<Mutex<()>>,
}

impl RecordingProvider {
    /// Records `inner`'s calls to `path` (appended; the file is created if missing).
    pub fn new(inner: Arc<dyn Provider>, path: impl Into<PathBuf>) -> Self {
        Self {
            inner,
            path: Arc::new(path.into()),
            lock: Arc::default(),
        }
    }

    fn write(path: &Path, lock: &Mutex<()>, record: &Recording) -> Result<(), ProviderError> {
        let mut line = serde_json::to_vec(record).map_err(|e| ProviderError::Decode {
            message: format!("recording could not be encoded: {e}"),
            raw: String::new(),
        })?;
        line.push(b'\n');
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, &e))?;
        file.write_all(&line).map_err(|e| io_error(path, &e))
    }
}

impl Provider for RecordingProvider {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn pricing(&self) -> Option<&PricingTable> {
        self.inner.pricing()
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let response = self.inner.predict(request).await?;
            Self::write(
                &self.path,
                &self.lock,
                &Recording {
                    request: request.clone(),
                    response: Some(response.clone()),
                    events: None,
                },
            )?;
            Ok(response)
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let stream = self.inner.stream(request).await?;
            let path = Arc::clone(&self.path);
            let lock = Arc::clone(&self.lock);
            let request = request.clone();
            // Pass events through as they arrive; write the record when the stream finishes.
            let state = (stream, Vec::new(), Some(request), path, lock);
            let tee = futures_util::stream::unfold(
                state,
                |(mut stream, mut seen, mut request, path, lock)| async move {
                    let next = stream.next().await;
                    if let Some(Ok(event)) = &next {
                        seen.push(event.clone());
                        if matches!(event, StreamEvent::Finish { .. })
                            && let Some(request) = request.take()
                        {
                            let record = Recording {
                                request,
                                response: None,
                                events: Some(std::mem::take(&mut seen)),
                            };
                            if let Err(e) = Self::write(&path, &lock, &record) {
                                tracing::warn!(error = %e, "could not write a recording");
                            }
                        }
                    }
                    next.map(|item| (item, (stream, seen, request, path, lock)))
                },
            );
            let stream: EventStream = Box::pin(tee);
            Ok(stream)
        })
    }
}

/// How a [`ReplayProvider`] picks the recording for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayMode {
    /// Recordings in order, one per call, whatever the request.
    #[default]
    Sequential,
    /// The first unused recording whose request has the same system prompt and messages.
    MatchRequest,
}

/// Serves recorded answers.
#[derive(Debug, Clone)]
pub struct ReplayProvider {
    id: String,
    model: String,
    mode: ReplayMode,
    remaining: Arc<Mutex<Vec<Option<Recording>>>>,
}

impl ReplayProvider {
    /// A replay of `recordings`.
    pub fn new(
        id: impl Into<String>,
        model: impl Into<String>,
        recordings: Vec<Recording>,
        mode: ReplayMode,
    ) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            mode,
            remaining: Arc::new(Mutex::new(recordings.into_iter().map(Some).collect())),
        }
    }

    /// Loads a recording file written by [`RecordingProvider`].
    ///
    /// # Errors
    /// [`ProviderError::Config`] when the file cannot be read, naming the line of an invalid
    /// record.
    pub fn from_file(path: impl AsRef<Path>, mode: ReplayMode) -> Result<Self, ProviderError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
        let mut recordings = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| io_error(path, &e))?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Recording =
                serde_json::from_str(&line).map_err(|e| ProviderError::Config {
                    message: format!(
                        "replay file {}:{}: not a recording: {e}",
                        path.display(),
                        i + 1
                    ),
                })?;
            recordings.push(record);
        }
        let model = recordings
            .iter()
            .find_map(|r| r.response.as_ref().and_then(|resp| resp.model.clone()))
            .unwrap_or_else(|| "replay".to_owned());
        Ok(Self::new("replay", model, recordings, mode))
    }

    /// Recordings not served yet.
    pub fn remaining(&self) -> usize {
        self.remaining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .count()
    }

    fn take(&self, request: &ProviderRequest, streaming: bool) -> Result<Recording, ProviderError> {
        let mut remaining = self
            .remaining
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let usable = |r: &Recording| {
            if streaming {
                r.events.is_some()
            } else {
                r.response.is_some()
            }
        };
        let index = remaining.iter().position(|slot| {
            slot.as_ref().is_some_and(|r| {
                usable(r)
                    && match self.mode {
                        ReplayMode::Sequential => true,
                        ReplayMode::MatchRequest => {
                            r.request.system == request.system
                                && r.request.messages == request.messages
                        }
                    }
            })
        });
        match index.and_then(|i| remaining[i].take()) {
            Some(r) => Ok(r),
            None => Err(ProviderError::Config {
                message: format!(
                    "replay has no recorded {} left{}",
                    if streaming { "stream" } else { "response" },
                    if self.mode == ReplayMode::MatchRequest {
                        " for this conversation"
                    } else {
                        ""
                    }
                ),
            }),
        }
    }
}

impl Provider for ReplayProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn predict<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async move {
            let record = self.take(request, false)?;
            let mut response = record.response.ok_or_else(|| ProviderError::Config {
                message: "recording has no response".to_owned(),
            })?;
            response.served_by = Some(self.id.clone());
            Ok(response)
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let record = self.take(request, true)?;
            let events = record.events.unwrap_or_default().into_iter().map(Ok);
            let stream: EventStream = Box::pin(futures_util::stream::iter(events));
            Ok(stream)
        })
    }
}
