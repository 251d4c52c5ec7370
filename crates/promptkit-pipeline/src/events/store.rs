//! A JSON Lines event store (one file per session) and replay of recorded sessions.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Event, EventBus, Subscription};

/// Why an event store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventStoreError {
    /// File system error.
    #[error("event store I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A stored line is not a valid event.
    #[error("{path}:{line}: not a valid event: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The event could not be encoded.
    #[error("event could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Most open file handles kept at once; older handles are flushed and closed.
const MAX_OPEN_FILES: usize = 256;

/// Stores events as JSON Lines, one file per session (`<dir>/<session>.jsonl`).
///
/// Each line is one [`Event`] as JSON. Lines are flushed as they are written, so a crash
/// loses at most the line being written. Events without a session id are not stored.
/// Session ids are encoded into safe file names (no path traversal).
#[derive(Debug, Clone)]
pub struct EventStore {
    dir: PathBuf,
    open: Arc<Mutex<HashMap<String, BufWriter<File>>>>,
}

impl EventStore {
    /// A store in `dir`, created if missing.
    ///
    /// # Errors
    /// [`EventStoreError::Io`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, EventStoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| EventStoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            open: Arc::default(),
        })
    }

    /// The file holding `session_id`'s events.
    pub fn path_for(&self, session_id: &str) -> PathBuf {
        self.dir
            .join(format!("{}.jsonl", encode_file_name(session_id)))
    }

    /// Appends an event. Returns `false` (and stores nothing) for events without a session.
    ///
    /// # Errors
    /// [`EventStoreError`] when encoding or writing fails.
    pub fn append(&self, event: &Event) -> Result<bool, EventStoreError> {
        let Some(session) = event.session_id.as_deref() else {
            return Ok(false);
        };
        let mut line = serde_json::to_vec(event).map_err(EventStoreError::Encode)?;
        line.push(b'\n');
        let path = self.path_for(session);
        let io = |source| EventStoreError::Io {
            path: path.clone(),
            source,
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if !open.contains_key(session) {
            if open.len() >= MAX_OPEN_FILES {
                // Close everything rather than track recency: cheap, and rare.
                for (_, mut w) in open.drain() {
                    let _ = w.flush();
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            open.insert(session.to_owned(), BufWriter::new(file));
        }
        let writer = open.get_mut(session).expect("inserted above");
        writer.write_all(&line).map_err(io)?;
        writer.flush().map_err(io)?;
        Ok(true)
    }

    /// Every stored event of `session_id`, in file order. A missing session is empty.
    ///
    /// # Errors
    /// [`EventStoreError::Malformed`] naming the line of the first invalid record.
    pub fn load(&self, session_id: &str) -> Result<Vec<Event>, EventStoreError> {
        let path = self.path_for(session_id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(EventStoreError::Io { path, source }),
        };
        let mut events = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| EventStoreError::Io {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let event =
                serde_json::from_str(&line).map_err(|source| EventStoreError::Malformed {
                    path: path.clone(),
                    line: i + 1,
                    source,
                })?;
            events.push(event);
        }
        Ok(events)
    }

    /// Stored session ids.
    ///
    /// # Errors
    /// [`EventStoreError::Io`] when the directory cannot be read.
    pub fn sessions(&self) -> Result<Vec<String>, EventStoreError> {
        let io = |source| EventStoreError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".jsonl"))
                && let Some(id) = decode_file_name(stem)
            {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Spawns a task that writes every event of `subscription` to this store until the bus
    /// is dropped. Writes happen on the blocking pool, in batches.
    pub fn record(
        &self,
        mut subscription: Subscription,
    ) -> tokio::task::JoinHandle<Result<u64, EventStoreError>> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut written = 0;
            while let Some(first) = subscription.recv().await {
                let mut batch = vec![first];
                batch.extend(subscription.drain());
                let store = store.clone();
                written += tokio::task::spawn_blocking(move || {
                    let mut n = 0;
                    for e in &batch {
                        if store.append(e)? {
                            n += 1;
                        }
                    }
                    Ok::<_, EventStoreError>(n)
                })
                .await
                .unwrap_or(Ok(0))?;
            }
            Ok(written)
        })
    }

    /// Flushes every open file.
    ///
    /// # Errors
    /// [`EventStoreError::Io`] when a flush fails.
    pub fn flush(&self) -> Result<(), EventStoreError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for (session, w) in open.iter_mut() {
            w.flush().map_err(|source| EventStoreError::Io {
                path: self.path_for(session),
                source,
            })?;
        }
        Ok(())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn encode_file_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

fn decode_file_name(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if b != 0 {
                out.push(b);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How fast a [`Replay`] plays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplaySpeed {
    /// As fast as possible.
    Instant,
    /// Original timing divided by the factor (2.0 = twice as fast).
    Scaled(f64),
}

/// Plays recorded events back, with their original timing (scaled) or instantly.
#[derive(Debug, Clone)]
pub struct Replay {
    events: Vec<Event>,
    speed: ReplaySpeed,
}

impl Replay {
    /// A replay of `events`, instant by default.
    pub fn new(events: Vec<Event>) -> Self {
        Self {
            events,
            speed: ReplaySpeed::Instant,
        }
    }

    /// Loads a recorded session.
    ///
    /// # Errors
    /// As [`EventStore::load`].
    pub fn from_store(store: &EventStore, session_id: &str) -> Result<Self, EventStoreError> {
        store.load(session_id).map(Self::new)
    }

    /// Sets the speed.
    #[must_use]
    pub fn speed(mut self, speed: ReplaySpeed) -> Self {
        self.speed = speed;
        self
    }

    /// The events that will be played.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Plays the events into `f`, waiting between them as the speed says.
    pub async fn play(self, mut f: impl FnMut(&Event)) {
        let mut previous: Option<i128> = None;
        for event in &self.events {
            let now = event.at.as_unix_nanos();
            if let (Some(prev), ReplaySpeed::Scaled(factor)) = (previous, self.speed)
                && factor > 0.0
                && now > prev
            {
                #[expect(clippy::cast_precision_loss, reason = "gaps are far below 2^52 ns")]
                let gap = (now - prev) as f64 / factor;
                tokio::time::sleep(Duration::from_secs_f64(gap / 1e9)).await;
            }
            previous = Some(now);
            f(event);
        }
    }

    /// Publishes the events (unchanged: same sequence numbers, run ids and timestamps) to
    /// `bus`.
    pub async fn publish_to(self, bus: &EventBus) {
        self.play(|e| {
            bus.publish(e.clone());
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_reversible() {
        for id in ["simple-id_1", "../../etc/passwd", "a b/c", "ünï", ""] {
            let name = encode_file_name(id);
            assert!(!name.contains('/') && !name.contains('.'), "{name}");
            assert_eq!(decode_file_name(&name).unwrap(), id);
        }
    }
}
