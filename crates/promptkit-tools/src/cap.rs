//! The result size cap: text, media and structured output share one budget.

use std::io::Write;

use promptkit_core::{ContentPart, MediaSource, ToolResult};

/// `result` with at most about `limit` bytes of content: text parts in order are cut where the
/// budget ends, media that does not fit are replaced by a note, and structured output that does
/// not fit becomes its JSON text, cut, as a text part. Each cut says what was cut; the notes
/// add a few dozen bytes beyond `limit`.
pub(crate) fn cap_result(mut result: ToolResult, limit: usize) -> ToolResult {
    let mut left = limit;
    let parts = std::mem::take(&mut result.content);
    for part in parts {
        let part = match part {
            ContentPart::Text {
                mut text,
                provider_data,
            } => {
                if text.len() > left {
                    let original = text.len();
                    text.truncate(text.floor_char_boundary(left));
                    text.push_str(&format!(
                        "\n[truncated: the result was {original} bytes, the limit is {limit}]"
                    ));
                    left = 0;
                } else {
                    left -= text.len();
                }
                ContentPart::Text {
                    text,
                    provider_data,
                }
            }
            other => {
                let size = encoded_size(&other);
                if size > left {
                    ContentPart::text(format!(
                        "[dropped: {} of {size} bytes does not fit the result limit of {limit} bytes]",
                        kind(&other)
                    ))
                } else {
                    left -= size;
                    other
                }
            }
        };
        result.content.push(part);
    }
    if let Some(structured) = result.structured.take() {
        let mut writer = Limited::new(left);
        if serde_json::to_writer(&mut writer, &structured).is_ok() {
            result.structured = Some(structured);
        } else {
            let mut text = String::from_utf8_lossy(&writer.kept).into_owned();
            // A cut inside a multi-byte character leaves a replacement character; drop it.
            text.truncate(text.trim_end_matches('\u{FFFD}').len());
            text.push_str(&format!(
                "\n[truncated: the structured result is larger than the limit of {limit} bytes of JSON]"
            ));
            result.content.push(ContentPart::text(text));
        }
    }
    result
}

/// The bytes a part takes in a stored message or a request: base64 for inline data.
fn encoded_size(part: &ContentPart) -> usize {
    let media = match part {
        ContentPart::Text { text, .. } => return text.len(),
        ContentPart::Reasoning(r) => return r.text.as_ref().map_or(0, String::len),
        ContentPart::Image(m)
        | ContentPart::Audio(m)
        | ContentPart::Video(m)
        | ContentPart::Document(m) => m,
        _ => return 0,
    };
    match &media.source {
        MediaSource::Data(bytes) => bytes.len().div_ceil(3) * 4,
        MediaSource::Url(url) => url.len(),
        MediaSource::Storage(key) => key.len(),
        MediaSource::File(path) => path.as_os_str().len(),
        _ => 0,
    }
}

fn kind(part: &ContentPart) -> &'static str {
    match part {
        ContentPart::Image(_) => "an image",
        ContentPart::Audio(_) => "an audio clip",
        ContentPart::Video(_) => "a video",
        ContentPart::Document(_) => "a document",
        _ => "a part",
    }
}

/// Keeps the first `limit` bytes written and fails after them, so that serialising a huge
/// value stops at the limit instead of building all of it.
struct Limited {
    kept: Vec<u8>,
    limit: usize,
}

impl Limited {
    fn new(limit: usize) -> Self {
        Self {
            kept: Vec::new(),
            limit,
        }
    }
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit - self.kept.len();
        if buf.len() > room {
            self.kept.extend_from_slice(&buf[..room]);
            return Err(std::io::Error::other("over the limit"));
        }
        self.kept.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promptkit_core::Media;
    use serde_json::json;

    fn png(len: usize) -> ContentPart {
        ContentPart::Image(Media::bytes(vec![0_u8; len], "image/png"))
    }

    #[test]
    fn text_media_and_structured_output_share_the_budget() {
        let mut result = ToolResult::text("c", "t", "a".repeat(60));
        result.content.push(png(30)); // 40 bytes of base64: fits
        result.content.push(png(300)); // does not fit
        result.content.push(ContentPart::text("b".repeat(10))); // cut to 0
        result.structured = Some(json!({"k": "v".repeat(50)}));
        let capped = cap_result(result, 100);
        assert_eq!(capped.content.len(), 5);
        assert_eq!(capped.content[0].as_text(), Some("a".repeat(60).as_str()));
        assert!(matches!(capped.content[1], ContentPart::Image(_)));
        assert!(
            capped.content[2]
                .as_text()
                .unwrap()
                .starts_with("[dropped: an image of 400 bytes")
        );
        assert!(
            capped.content[3]
                .as_text()
                .unwrap()
                .starts_with("\n[truncated: the result was 10 bytes")
        );
        assert!(capped.structured.is_none());
        assert!(capped.content[4].as_text().unwrap().ends_with(
            "[truncated: the structured result is larger than the limit of 100 bytes of JSON]"
        ));

        let small = ToolResult {
            structured: Some(json!({"ok": true})),
            ..ToolResult::text("c", "t", "fine")
        };
        assert_eq!(cap_result(small.clone(), 100), small);
    }
}
