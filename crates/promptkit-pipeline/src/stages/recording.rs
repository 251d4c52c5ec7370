//! The recording stage: writes every element passing through as an event to an event store.

use promptkit_core::{AudioFormat, ContentPart, Message, ToolCall, encode_base64};
use serde::{Deserialize, Serialize};

use crate::element::{Control, Element, ElementError, Payload};
use crate::events::{Event, EventKind, EventStore};
use crate::{Stage, StageContext, StageError, StageInput, StageKind, StageOutput};

/// An element as stored by the recording stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordedElement {
    /// A text fragment.
    Text {
        /// The text.
        text: String,
    },
    /// A message.
    Message {
        /// The message.
        message: Box<Message>,
        /// Whether it was history.
        #[serde(default)]
        from_history: bool,
    },
    /// Audio (bytes included only when the stage is configured to keep audio).
    Audio {
        /// Its format.
        format: AudioFormat,
        /// Its size.
        bytes: usize,
        /// Base64 of the bytes, when kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
    /// An image or video frame (metadata only).
    Media {
        /// Media type.
        mime_type: String,
        /// Size.
        bytes: usize,
    },
    /// A tool call.
    ToolCall {
        /// The call.
        call: ToolCall,
    },
    /// A content part.
    Part {
        /// The part.
        part: ContentPart,
    },
    /// A control signal.
    Control {
        /// `start`, `end_of_turn`, `end_of_stream`, `interrupt` or `error`.
        signal: String,
        /// The error, for error elements.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ElementError>,
    },
}

impl RecordedElement {
    /// The recorded form of `element`.
    pub fn from_element(element: &Element, keep_audio: bool) -> Self {
        match &element.payload {
            Payload::Text(text) => Self::Text { text: text.clone() },
            Payload::Message(m) => Self::Message {
                message: m.clone(),
                from_history: element.meta.from_history,
            },
            Payload::Audio(a) => Self::Audio {
                format: a.format,
                bytes: a.data.len(),
                data: keep_audio.then(|| encode_base64(&a.data)),
            },
            Payload::Image(i) => Self::Media {
                mime_type: i.mime_type.clone(),
                bytes: i.data.len(),
            },
            Payload::Video(v) => Self::Media {
                mime_type: v.mime_type.clone(),
                bytes: v.data.len(),
            },
            Payload::ToolCall(call) => Self::ToolCall {
                call: ToolCall::clone(call),
            },
            Payload::Part(part) => Self::Part {
                part: ContentPart::clone(part),
            },
            Payload::Control(c) => Self::Control {
                signal: element.kind_name().to_owned(),
                error: match c {
                    Control::Error(e) => Some(e.clone()),
                    _ => None,
                },
            },
        }
    }
}

/// Writes each element as an `element.recorded` event to an [`EventStore`] (under the run's
/// session id) and forwards it. Writes happen on the blocking pool and never delay the
/// stream; the stage ends after its last write is stored.
#[derive(Debug, Clone)]
pub struct Recording {
    name: String,
    store: EventStore,
    keep_audio: bool,
}

/// A recording stage writing to `store`.
pub fn recording(name: impl Into<String>, store: EventStore) -> Recording {
    Recording {
        name: name.into(),
        store,
        keep_audio: false,
    }
}

impl Recording {
    /// Also store audio bytes (base64), not only their format and size.
    #[must_use]
    pub fn keep_audio(mut self, keep: bool) -> Self {
        self.keep_audio = keep;
        self
    }
}

impl Stage for Recording {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Observe
    }

    async fn run(
        &self,
        cx: StageContext,
        input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        // A recording keeps everything, the output of interrupted answers included.
        let mut input = input.keep_stale();
        let session = cx
            .run()
            .read()
            .session_id
            .clone()
            .unwrap_or_else(|| cx.events().run_id().to_owned());
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        let store = self.store.clone();
        let writer = tokio::task::spawn_blocking(move || {
            for event in rx {
                store.append(&event)?;
            }
            Ok::<_, crate::events::EventStoreError>(())
        });
        let mut seq = 0;
        while let Some(element) = input.recv().await {
            seq += 1;
            let event = Event {
                seq,
                at: promptkit_core::Timestamp::now(),
                run_id: cx.events().run_id().to_owned(),
                session_id: Some(session.clone()),
                turn_id: element.meta.turn_id,
                data: EventKind::ElementRecorded {
                    stage: cx.name().to_owned(),
                    element: RecordedElement::from_element(&element, self.keep_audio),
                },
            };
            if tx.send(event).is_err() {
                break;
            }
            output.send(element).await?;
        }
        drop(tx);
        writer
            .await
            .map_err(|e| StageError::with_source("recording writer failed", e))?
            .map_err(|e| StageError::with_source("recording failed", e))
    }
}
