//! An incremental Server-Sent Events decoder.
//!
//! [`SseDecoder`] turns the bytes of an SSE body, fed in chunks of any size, into
//! [`SseEvent`]s, following the WHATWG "event stream interpretation" rules:
//!
//! - lines end in CRLF, LF or CR (a CR at the end of one chunk followed by an LF at the
//!   start of the next counts once);
//! - an event is dispatched at a blank line; several `data:` lines are joined with `\n`;
//! - lines starting with `:` are comments and ignored; a single space after the field's
//!   colon is stripped; unknown fields are ignored;
//! - `event:`, `id:` and `retry:` are exposed on the event;
//! - there is no line-length limit (the Go original failed on lines over 64 KiB);
//! - at end of input, [`SseDecoder::finish`] flushes an event whose final blank line is
//!   missing (servers that close the connection right after the last `data:` line).
//!
//! Events with no `data:` line (only `event:` or `id:`) are not dispatched, as the standard
//! says.
//!
//! ```
//! use promptkit_providers::sse::SseDecoder;
//!
//! let mut decoder = SseDecoder::new();
//! let mut events = decoder.feed(b"event: delta\ndata: {\"a\":");
//! assert!(events.is_empty());
//! events = decoder.feed(b"1}\r\n\r\ndata: [DONE]");
//! assert_eq!(events[0].event.as_deref(), Some("delta"));
//! assert_eq!(events[0].data, "{\"a\":1}");
//! let last = decoder.finish();
//! assert_eq!(last.map(|e| e.data), Some("[DONE]".to_owned()));
//! ```

use bytes::{Buf, BytesMut};

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
    /// The `retry:` field (milliseconds), if it had a valid one.
    pub retry: Option<u64>,
}

/// Incremental SSE decoder: feed it byte chunks, get complete events back.
///
/// Holds at most one partial line plus the fields of the event being built, so memory is
/// bounded by the largest event, not by the stream.
#[derive(Debug, Default)]
pub struct SseDecoder {
    // Bytes of the current, not yet terminated line.
    line: BytesMut,
    // The previous chunk ended in CR: a leading LF of the next chunk belongs to it.
    pending_cr: bool,
    // Fields of the event being built.
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the body and returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.feed_into(chunk, &mut events);
        events
    }

    /// Like [`feed`](Self::feed), appending to `out` (no allocation when nothing completes).
    pub fn feed_into(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        if chunk.is_empty() {
            return;
        }
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        while !chunk.is_empty() {
            // Vectorised: a byte-at-a-time scan for the two terminators was most of the
            // decoder's time (a frame is a few hundred bytes on one line).
            let Some(pos) = memchr::memchr2(b'\n', b'\r', chunk) else {
                self.line.extend_from_slice(chunk);
                return;
            };
            let terminator = chunk[pos];
            let rest = &chunk[pos + 1..];
            if self.line.is_empty() {
                self.process_line(&chunk[..pos], out);
            } else {
                self.line.extend_from_slice(&chunk[..pos]);
                let line = self.line.split();
                self.process_line(&line, out);
            }
            chunk = rest;
            if terminator == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
        }
    }

    /// Ends the stream: processes an unterminated last line and returns the event it
    /// completes, if any (a stream whose final blank line is missing).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = self.line.split();
            self.process_line(&line, &mut out);
        }
        self.pending_cr = false;
        self.dispatch(&mut out);
        out.pop()
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        // Valid UTF-8 (every vendor's case) takes the fast check; only a broken line pays
        // for the replacement-character scan.
        fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
            match std::str::from_utf8(bytes) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(bytes),
            }
        }

        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, mut value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &[][..]),
        };
        if value.first() == Some(&b' ') {
            value.advance(1);
        }
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&text(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(text(value).into_owned()),
            // The standard ignores ids containing NUL.
            b"id" if !value.contains(&0) => {
                self.id = Some(text(value).into_owned());
            }
            b"retry" => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse::<u64>() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let id = self.id.take();
        let retry = self.retry.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id,
            retry,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut events = d.feed(input);
        events.extend(d.finish());
        events
    }

    fn data(text: &str) -> SseEvent {
        SseEvent {
            data: text.to_owned(),
            ..SseEvent::default()
        }
    }

    #[test]
    fn lf_crlf_and_cr_line_endings() {
        for input in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
            b"data: a\r\n\ndata: b\n\r\n",
        ] {
            assert_eq!(decode_all(input), vec![data("a"), data("b")], "{input:?}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_with_newline() {
        let events = decode_all(b"data: one\ndata:two\ndata\n\n");
        assert_eq!(events, vec![data("one\ntwo\n")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let events = decode_all(b": keep-alive\nfoo: bar\ndata: x\n: more\n\n:only comment\n\n");
        assert_eq!(events, vec![data("x")]);
    }

    #[test]
    fn event_id_and_retry_are_exposed() {
        let events = decode_all(b"event: message_start\nid: 7\nretry: 1500\ndata: {}\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some("message_start".into()),
                data: "{}".into(),
                id: Some("7".into()),
                retry: Some(1500),
            }]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_fields_reset() {
        let events = decode_all(b"event: ping\n\ndata: x\n\n");
        assert_eq!(events, vec![data("x")]);
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        assert_eq!(decode_all(b"data:  two\n\n"), vec![data(" two")]);
        assert_eq!(decode_all(b"data:none\n\n"), vec![data("none")]);
    }

    #[test]
    fn event_split_across_reads() {
        let mut d = SseDecoder::new();
        assert!(d.feed(b"da").is_empty());
        assert!(d.feed(b"ta: hel").is_empty());
        assert!(d.feed(b"lo\r").is_empty());
        assert!(d.feed(b"\n").is_empty());
        assert_eq!(d.feed(b"\r\n"), vec![data("hello")]);
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn lines_longer_than_64_kib() {
        let big = "x".repeat(200 * 1024);
        let input = format!("data: {big}\n\n");
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in input.as_bytes().chunks(1000) {
            events.extend(d.feed(chunk));
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), big.len());
    }

    #[test]
    fn missing_final_blank_line_flushes_at_eof() {
        assert_eq!(
            decode_all(b"data: a\n\ndata: [DONE]"),
            vec![data("a"), data("[DONE]")]
        );
        assert_eq!(decode_all(b"data: a\n"), vec![data("a")]);
        assert_eq!(decode_all(b"data: a\r"), vec![data("a")]);
        assert_eq!(decode_all(b""), vec![]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let events = decode_all(b"data: \xff\xfe ok\n\n");
        assert_eq!(events.len(), 1);
        assert!(events[0].data.ends_with(" ok"));
    }

    #[test]
    fn splitting_at_every_byte_boundary_yields_the_same_events() {
        let stream: &[u8] = b": comment\r\nevent: a\r\ndata: {\"x\":1}\r\n\r\n\
            data: line1\ndata: line2\n\nid: 9\rdata: cr\r\r\
            data: {\"choices\":[{\"delta\":{\"content\":\"h\xc3\xa9\"}}]}\n\n\
            retry: 10\ndata: [DONE]";
        let expected = decode_all(stream);
        assert_eq!(expected.len(), 5);
        for i in 0..=stream.len() {
            let mut d = SseDecoder::new();
            let mut events = d.feed(&stream[..i]);
            events.extend(d.feed(&stream[i..]));
            events.extend(d.finish());
            assert_eq!(events, expected, "split at {i}");
        }
        for j in 0..=stream.len() {
            for i in 0..=j {
                let mut d = SseDecoder::new();
                let mut events = d.feed(&stream[..i]);
                events.extend(d.feed(&stream[i..j]));
                events.extend(d.feed(&stream[j..]));
                events.extend(d.finish());
                assert_eq!(events, expected, "split at {i} and {j}");
            }
        }
        // One byte at a time.
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        for b in stream {
            events.extend(d.feed(std::slice::from_ref(b)));
        }
        events.extend(d.finish());
        assert_eq!(events, expected);
    }
}
