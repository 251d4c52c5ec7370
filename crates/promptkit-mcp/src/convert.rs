//! Conversions from rmcp's model types to the crate's and core's types.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use promptkit_core::{ContentPart, Media, Message, Role, ToolCall, ToolErrorKind, ToolResult};
use rmcp::model::{self as mcp, ContentBlock};

use crate::types::{
    Prompt, PromptArgument, PromptResult, Resource, ResourceContent, ServerInfo, ToolAnnotations,
};

/// Decodes MCP base64 (standard alphabet; some servers wrap lines).
fn decode(data: &str) -> Result<Bytes, base64::DecodeError> {
    if data.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        STANDARD.decode(compact).map(Bytes::from)
    } else {
        STANDARD.decode(data).map(Bytes::from)
    }
}

/// One content block as a content part.
pub(crate) fn content_part(block: ContentBlock) -> ContentPart {
    match block {
        ContentBlock::Text(text) => ContentPart::text(text.text),
        ContentBlock::Image(image) => match decode(&image.data) {
            Ok(data) => ContentPart::Image(Media::bytes(data, image.mime_type)),
            Err(e) => ContentPart::text(format!(
                "[the tool returned an image ({}) with invalid base64 data: {e}]",
                image.mime_type
            )),
        },
        ContentBlock::Audio(audio) => match decode(&audio.data) {
            Ok(data) => ContentPart::Audio(Media::bytes(data, audio.mime_type)),
            Err(e) => ContentPart::text(format!(
                "[the tool returned audio ({}) with invalid base64 data: {e}]",
                audio.mime_type
            )),
        },
        ContentBlock::Resource(embedded) => match resource_content(embedded.resource) {
            Ok(content) => content.to_content_part(),
            Err(message) => ContentPart::text(message),
        },
        ContentBlock::ResourceLink(link) => {
            let mut text = format!("[resource {}: {}", link.name, link.uri);
            if let Some(mime) = &link.mime_type {
                text.push_str(&format!(" ({mime})"));
            }
            if let Some(description) = &link.description {
                text.push_str(&format!(" - {description}"));
            }
            text.push(']');
            ContentPart::text(text)
        }
        other => ContentPart::text(serde_json::to_string(&other).unwrap_or_default()),
    }
}

/// Resource contents as the crate's type; invalid base64 is reported as text.
pub(crate) fn resource_content(contents: mcp::ResourceContents) -> Result<ResourceContent, String> {
    match contents {
        mcp::ResourceContents::TextResourceContents {
            uri,
            mime_type,
            text,
            ..
        } => Ok(ResourceContent::Text {
            uri,
            mime_type,
            text,
        }),
        mcp::ResourceContents::BlobResourceContents {
            uri,
            mime_type,
            blob,
            ..
        } => match decode(&blob) {
            Ok(data) => Ok(ResourceContent::Blob {
                uri,
                mime_type,
                data,
            }),
            Err(e) => Err(format!("[resource {uri} has invalid base64 data: {e}]")),
        },
        other => Err(serde_json::to_string(&other).unwrap_or_default()),
    }
}

/// A `tools/call` result as the result of `call`, within `limit` bytes (0: no limit).
///
/// `isError: true` becomes an error result (kind [`ToolErrorKind::Execution`]) the model sees;
/// structured content goes to [`ToolResult::structured`]. Content blocks share the `limit`
/// in order: text that does not fit is cut with a marker; an image, audio clip or embedded
/// blob that does not fit is dropped, before it is decoded, and a note says so; structured
/// content that does not fit becomes its JSON text, cut, with a marker.
pub(crate) fn tool_result(
    call: &ToolCall,
    result: mcp::CallToolResult,
    limit: usize,
) -> ToolResult {
    let is_error = result.is_error.unwrap_or(false);
    let limit = if limit == 0 { usize::MAX } else { limit };
    let mut left = limit;
    let mut content: Vec<ContentPart> = Vec::with_capacity(result.content.len());
    for block in result.content {
        let size = block_size(&block);
        if size <= left {
            left -= size;
            content.push(content_part(block));
            continue;
        }
        // Text is cut and ends the budget; media that does not fit takes none of it.
        let text = match block {
            ContentBlock::Text(text) => Ok(text.text),
            ContentBlock::Resource(embedded) => match embedded.resource {
                mcp::ResourceContents::TextResourceContents { text, .. } => Ok(text),
                other => Err(describe_resource(&other)),
            },
            ContentBlock::Image(image) => Err(format!("an image ({})", image.mime_type)),
            ContentBlock::Audio(audio) => Err(format!("an audio clip ({})", audio.mime_type)),
            _ => Err("a content block".to_owned()),
        };
        content.push(match text {
            Ok(text) => {
                let part = truncated(text, left, limit);
                left = 0;
                part
            }
            Err(what) => dropped(&what, size, limit),
        });
    }
    let structured = result
        .structured_content
        .filter(|v| !v.is_null())
        .and_then(|value| match capped_json(&value, left) {
            None => Some(value),
            Some(text) => {
                content.push(ContentPart::text(format!(
                    "{text}\n[truncated: the structured result is larger than the limit of {limit} bytes of JSON]"
                )));
                None
            }
        });
    if content.is_empty() && structured.is_none() {
        content.push(ContentPart::text(if is_error {
            "the MCP tool reported an error without details"
        } else {
            "the MCP tool returned no output"
        }));
    }
    ToolResult {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content,
        structured,
        is_error,
        error_kind: is_error.then_some(ToolErrorKind::Execution),
    }
}

/// The bytes a block adds to a stored message or a request: its text, or its base64 data.
fn block_size(block: &ContentBlock) -> usize {
    match block {
        ContentBlock::Text(text) => text.text.len(),
        ContentBlock::Image(image) => image.data.len(),
        ContentBlock::Audio(audio) => audio.data.len(),
        ContentBlock::Resource(embedded) => match &embedded.resource {
            mcp::ResourceContents::TextResourceContents { text, .. } => text.len(),
            mcp::ResourceContents::BlobResourceContents { blob, .. } => blob.len(),
            other => serde_json::to_string(other).map_or(0, |s| s.len()),
        },
        ContentBlock::ResourceLink(link) => {
            link.uri.len() + link.name.len() + link.description.as_ref().map_or(0, String::len)
        }
        other => serde_json::to_string(other).map_or(0, |s| s.len()),
    }
}

fn describe_resource(contents: &mcp::ResourceContents) -> String {
    match contents {
        mcp::ResourceContents::BlobResourceContents { uri, mime_type, .. } => format!(
            "the resource {uri} ({})",
            mime_type.as_deref().unwrap_or("application/octet-stream")
        ),
        _ => "a resource".to_owned(),
    }
}

/// `text` cut to `room` bytes, with a marker naming its size and the limit.
fn truncated(mut text: String, room: usize, limit: usize) -> ContentPart {
    let original = text.len();
    text.truncate(text.floor_char_boundary(room));
    text.push_str(&format!(
        "\n[truncated: the result was {original} bytes, the limit is {limit}]"
    ));
    ContentPart::text(text)
}

fn dropped(what: &str, size: usize, limit: usize) -> ContentPart {
    ContentPart::text(format!(
        "[dropped: {what} of {size} bytes does not fit the result limit of {limit} bytes]"
    ))
}

/// `None` when `value` serialises within `room` bytes; otherwise its first `room` bytes of
/// JSON. Serialising stops at the limit, so a huge value is never built whole.
fn capped_json(value: &serde_json::Value, room: usize) -> Option<String> {
    struct Limited {
        kept: Vec<u8>,
        room: usize,
    }
    impl std::io::Write for Limited {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let free = self.room - self.kept.len();
            if buf.len() > free {
                self.kept.extend_from_slice(&buf[..free]);
                return Err(std::io::Error::other("over the limit"));
            }
            self.kept.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = Limited {
        kept: Vec::new(),
        room,
    };
    if serde_json::to_writer(&mut writer, value).is_ok() {
        return None;
    }
    let text = String::from_utf8_lossy(&writer.kept);
    Some(text.trim_end_matches('\u{FFFD}').to_owned())
}

pub(crate) fn annotations(
    a: Option<&mcp::ToolAnnotations>,
    title: Option<&str>,
) -> ToolAnnotations {
    let mut out = ToolAnnotations {
        title: title.map(str::to_owned),
        ..ToolAnnotations::default()
    };
    if let Some(a) = a {
        if out.title.is_none() {
            out.title.clone_from(&a.title);
        }
        out.read_only = a.read_only_hint;
        out.destructive = a.destructive_hint;
        out.idempotent = a.idempotent_hint;
        out.open_world = a.open_world_hint;
    }
    out
}

pub(crate) fn server_info(info: &mcp::ServerPeerInfo) -> ServerInfo {
    let caps = &info.capabilities;
    ServerInfo {
        name: info.server_info.as_ref().map(|i| i.name.clone()),
        version: info.server_info.as_ref().map(|i| i.version.clone()),
        protocol_version: info.protocol_version.to_string(),
        instructions: info.instructions.clone(),
        tools: caps.tools.is_some(),
        tools_list_changed: caps
            .tools
            .as_ref()
            .and_then(|t| t.list_changed)
            .unwrap_or(false),
        resources: caps.resources.is_some(),
        prompts: caps.prompts.is_some(),
    }
}

pub(crate) fn resource(r: mcp::Resource) -> Resource {
    Resource {
        uri: r.uri,
        name: r.name,
        title: r.title,
        description: r.description,
        mime_type: r.mime_type,
        size: r.size,
    }
}

pub(crate) fn prompt(p: mcp::Prompt) -> Prompt {
    Prompt {
        name: p.name,
        title: p.title,
        description: p.description,
        arguments: p
            .arguments
            .unwrap_or_default()
            .into_iter()
            .map(|a| PromptArgument {
                name: a.name,
                title: a.title,
                description: a.description,
                required: a.required.unwrap_or(false),
            })
            .collect(),
    }
}

pub(crate) fn prompt_result(result: mcp::GetPromptResult) -> PromptResult {
    PromptResult {
        description: result.description,
        messages: result
            .messages
            .into_iter()
            .map(|m| {
                let role = match m.role {
                    mcp::Role::User => Role::User,
                    mcp::Role::Assistant => Role::Assistant,
                };
                Message::new(role).with_part(content_part(m.content))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> mcp::CallToolResult {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn maps_every_content_kind() {
        let call = ToolCall::new("c1", "mcp__s__t", json!({}));
        let result = tool_result(
            &call,
            parse(json!({
                "content": [
                    {"type": "text", "text": "hello"},
                    {"type": "image", "data": "iVBORw0K\nGgo=", "mimeType": "image/png"},
                    {"type": "audio", "data": "UklGRg==", "mimeType": "audio/wav"},
                    {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}},
                    {"type": "resource", "resource": {"uri": "file:///docs/r.pdf", "mimeType": "application/pdf", "blob": "JVBERg=="}},
                    {"type": "resource_link", "uri": "file:///big.log", "name": "big.log", "mimeType": "text/plain"}
                ],
                "structuredContent": {"answer": 42}
            })),
            1 << 20,
        );
        assert!(!result.is_error);
        assert_eq!(result.call_id, "c1");
        assert_eq!(result.name, "mcp__s__t");
        assert_eq!(result.content.len(), 6);
        assert_eq!(result.content[0].as_text(), Some("hello"));
        let ContentPart::Image(image) = &result.content[1] else {
            panic!("{:?}", result.content[1])
        };
        assert_eq!(image.mime_type.as_deref(), Some("image/png"));
        assert_eq!(
            image.source,
            promptkit_core::MediaSource::Data(Bytes::from_static(b"\x89PNG\r\n\x1a\n"))
        );
        assert!(matches!(result.content[2], ContentPart::Audio(_)));
        assert_eq!(result.content[3].as_text(), Some("inside"));
        let ContentPart::Document(doc) = &result.content[4] else {
            panic!("{:?}", result.content[4])
        };
        assert_eq!(doc.name.as_deref(), Some("r.pdf"));
        assert!(
            result.content[5]
                .as_text()
                .unwrap()
                .contains("file:///big.log")
        );
        assert_eq!(result.structured, Some(json!({"answer": 42})));
    }

    #[test]
    fn is_error_becomes_an_error_result() {
        let call = ToolCall::new("c2", "mcp__s__t", json!({}));
        let result = tool_result(
            &call,
            parse(json!({"content": [{"type": "text", "text": "no such file"}], "isError": true})),
            0,
        );
        assert!(result.is_error);
        assert_eq!(result.error_kind, Some(ToolErrorKind::Execution));
        assert_eq!(result.text_content(), "no such file");

        let empty = tool_result(&call, parse(json!({"content": [], "isError": true})), 0);
        assert!(empty.is_error);
        assert!(!empty.text_content().is_empty());
        let nothing = tool_result(&call, parse(json!({"content": []})), 0);
        assert!(!nothing.is_error);
        assert_eq!(nothing.text_content(), "the MCP tool returned no output");
    }

    #[test]
    fn invalid_base64_is_reported_not_dropped() {
        let call = ToolCall::new("c3", "t", json!({}));
        let result = tool_result(
            &call,
            parse(json!({"content": [{"type": "image", "data": "%%%", "mimeType": "image/png"}]})),
            0,
        );
        assert!(
            result.content[0]
                .as_text()
                .unwrap()
                .contains("invalid base64")
        );
    }

    #[test]
    fn blocks_share_the_result_limit() {
        let call = ToolCall::new("c4", "t", json!({}));
        let result = tool_result(
            &call,
            parse(json!({
                "content": [
                    {"type": "text", "text": "a".repeat(60)},
                    {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
                    {"type": "image", "data": "A".repeat(400), "mimeType": "image/png"},
                    {"type": "resource", "resource": {"uri": "test://big.pdf", "mimeType": "application/pdf", "blob": "A".repeat(400)}},
                    {"type": "text", "text": "b".repeat(50)},
                    {"type": "text", "text": "never decoded"}
                ],
                "structuredContent": {"rows": "r".repeat(100)}
            })),
            100,
        );
        let texts: Vec<String> = result
            .content
            .iter()
            .map(|p| p.as_text().unwrap_or("<media>").to_owned())
            .collect();
        assert_eq!(texts[0], "a".repeat(60));
        assert_eq!(texts[1], "<media>");
        assert_eq!(
            texts[2],
            "[dropped: an image (image/png) of 400 bytes does not fit the result limit of 100 bytes]"
        );
        assert!(texts[3].starts_with("[dropped: the resource test://big.pdf (application/pdf)"));
        assert_eq!(
            texts[4],
            format!(
                "{}\n[truncated: the result was 50 bytes, the limit is 100]",
                "b".repeat(28)
            )
        );
        assert_eq!(
            texts[5],
            "\n[truncated: the result was 13 bytes, the limit is 100]"
        );
        assert!(result.structured.is_none());
        assert!(texts[6].ends_with(
            "[truncated: the structured result is larger than the limit of 100 bytes of JSON]"
        ));
    }
}
