//! An incremental Server-Sent Events decoder.
//!
//! [`SseDecoder`] turns the bytes of an SSE body, fed in chunks of any size, into
//! [`SseEvent`]s, following the WHATWG "event stream interpretation" rules:
//!
//! - lines end in CRLF, LF or CR (a CR at the end of one chunk followed by an LF at the
//!   start of the next counts once);
//! - an event is dispatched at a blank line; several `data:` lines are joined with `\n`;
//! - lines starting with `:` are comments and ignored; a single space after the field's
//!   colon is stripped; unknown fields are ignored (or, on request, handed out as
//!   [unframed text](SseDecoder::take_unframed));
//! - `event:`, `id:` and `retry:` are exposed on the event;
//! - lines and events are bounded by [`SseLimits`] (16 MiB each by default; the Go original
//!   failed on lines over 64 KiB). The check comes before the bytes are kept, so a line that
//!   never ends costs at most the limit, and the decoder fails with an [`SseError`];
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
//! let mut events = decoder.feed(b"event: delta\ndata: {\"a\":")?;
//! assert!(events.is_empty());
//! events = decoder.feed(b"1}\r\n\r\ndata: [DONE]")?;
//! assert_eq!(events[0].event.as_deref(), Some("delta"));
//! assert_eq!(events[0].data, "{\"a\":1}");
//! let last = decoder.finish()?;
//! assert_eq!(last.map(|e| e.data), Some("[DONE]".to_owned()));
//! # Ok::<(), promptkit_providers::sse::SseError>(())
//! ```

use std::borrow::Cow;

use bytes::Buf;

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

/// Size limits of an [`SseDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// Most bytes of one line (its terminator excluded).
    pub max_line_bytes: usize,
    /// Most bytes of one event's data (its `data:` lines joined), and of the unframed text
    /// kept between two takes.
    pub max_event_bytes: usize,
}

impl SseLimits {
    /// 16 MiB per line and per event: far above any vendor's frame (a few hundred bytes,
    /// a few MiB for an inline image), the cap the MCP decoder uses too.
    pub const DEFAULT: Self = Self {
        max_line_bytes: 16 << 20,
        max_event_bytes: 16 << 20,
    };
}

impl Default for SseLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why an [`SseDecoder`] stopped: a limit of [`SseLimits`] was reached. The offending line or
/// event is discarded; the stream should be abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line grew past [`SseLimits::max_line_bytes`] before it ended.
    #[error("an SSE line exceeds {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// An event's data grew past [`SseLimits::max_event_bytes`] before it was dispatched.
    #[error("an SSE event exceeds {limit} bytes")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
}

impl From<SseError> for promptkit_core::ProviderError {
    fn from(error: SseError) -> Self {
        let (part, limit) = match error {
            SseError::LineTooLong { limit } => (promptkit_core::ResponsePart::StreamLine, limit),
            SseError::EventTooLarge { limit } => (promptkit_core::ResponsePart::StreamEvent, limit),
        };
        Self::ResponseTooLarge {
            part,
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        }
    }
}

/// Capacity above which the line buffer is released after use rather than kept.
const KEEP_LINE_CAPACITY: usize = 64 * 1024;

/// Incremental SSE decoder: feed it byte chunks, get complete events back.
///
/// Holds at most one partial line plus the fields of the event being built, each bounded by
/// its [`SseLimits`], so memory is bounded by the limits, not by the stream.
#[derive(Debug, Default)]
pub struct SseDecoder {
    limits: SseLimits,
    // Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    // The previous chunk ended in CR: a leading LF of the next chunk belongs to it.
    pending_cr: bool,
    // Fields of the event being built.
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
    // Whether lines that are no SSE field are kept for `take_unframed`.
    collect_unframed: bool,
    unframed: String,
}

impl SseDecoder {
    /// A decoder at the start of a stream, with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder with these limits.
    pub fn with_limits(limits: SseLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Keeps the lines that are not SSE fields (a vendor that writes a bare JSON error object
    /// into an event stream, as Gemini does) for [`take_unframed`](Self::take_unframed),
    /// instead of ignoring them as the standard says. Off by default.
    #[must_use]
    pub fn collecting_unframed(mut self, on: bool) -> Self {
        self.collect_unframed = on;
        self
    }

    /// The limits.
    pub fn limits(&self) -> SseLimits {
        self.limits
    }

    /// Feeds the next chunk of the body and returns the events it completed, in order.
    ///
    /// # Errors
    ///
    /// [`SseError`] when a line or an event passes its limit.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        self.feed_into(chunk, &mut events)?;
        Ok(events)
    }

    /// Like [`feed`](Self::feed), appending to `out` (no allocation when nothing completes).
    /// The events completed before an error are in `out`.
    ///
    /// # Errors
    ///
    /// [`SseError`] when a line or an event passes its limit.
    pub fn feed_into(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let result = self.feed_lines(chunk, out);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if chunk.is_empty() {
            return Ok(());
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
                return self.keep_partial(chunk);
            };
            let terminator = chunk[pos];
            let rest = &chunk[pos + 1..];
            if self.line.is_empty() {
                // Nothing of this line is kept: only its length is checked here, and the
                // event limit exactly when its value joins the event's data.
                if pos > self.limits.max_line_bytes {
                    return Err(SseError::LineTooLong {
                        limit: self.limits.max_line_bytes,
                    });
                }
                self.process_line(&chunk[..pos], out)?;
            } else {
                self.keep_partial(&chunk[..pos])?;
                let line = std::mem::take(&mut self.line);
                let processed = self.process_line(&line, out);
                self.restore_line(line);
                processed?;
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
        Ok(())
    }

    /// Ends the stream: processes an unterminated last line and returns the event it
    /// completes, if any (a stream whose final blank line is missing).
    ///
    /// # Errors
    ///
    /// [`SseError`] when the last line passes the event limit.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let processed = self.process_line(&line, &mut out);
            self.restore_line(line);
            if let Err(e) = processed {
                self.reset();
                return Err(e);
            }
        }
        self.pending_cr = false;
        self.dispatch(&mut out);
        Ok(out.pop())
    }

    /// The complete unframed lines collected since the last call, each ending in `\n`
    /// (always `None` unless [`collecting_unframed`](Self::collecting_unframed) is on).
    pub fn take_unframed(&mut self) -> Option<String> {
        if self.unframed.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.unframed))
    }

    /// Whether unframed lines wait for [`take_unframed`](Self::take_unframed).
    pub fn has_unframed(&self) -> bool {
        !self.unframed.is_empty()
    }

    /// Bytes held for the partial line, the event being built and unframed text: at most the
    /// line limit plus twice the event limit.
    pub fn buffered(&self) -> usize {
        self.line.len() + self.data.len() + self.unframed.len()
    }

    fn reset(&mut self) {
        self.line = Vec::new();
        self.data = String::new();
        self.unframed = String::new();
        self.has_data = false;
        self.event = None;
        self.id = None;
        self.retry = None;
        self.pending_cr = false;
    }

    /// Checks that a partial line of `len` bytes may be kept: it fits in a line, and, with
    /// the data already held, in an event (the bytes held stay within the event limit,
    /// counting the line's field name too).
    fn check_line(&self, len: usize) -> Result<(), SseError> {
        let limits = self.limits;
        if len.saturating_add(self.data.len()) > limits.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: limits.max_event_bytes,
            });
        }
        if len > limits.max_line_bytes {
            return Err(SseError::LineTooLong {
                limit: limits.max_line_bytes,
            });
        }
        Ok(())
    }

    /// Appends the bytes of an unterminated line, after checking the limits. The buffer grows
    /// geometrically but never past the line limit, so a line that never ends holds at most
    /// that many bytes.
    fn keep_partial(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        let len = self.line.len() + bytes.len();
        self.check_line(len)?;
        if len > self.line.capacity() {
            let target = len
                .max(self.line.capacity().saturating_mul(2))
                .min(self.limits.max_line_bytes)
                .max(len);
            self.line.reserve_exact(target - self.line.len());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn restore_line(&mut self, mut line: Vec<u8>) {
        line.clear();
        if line.capacity() <= KEEP_LINE_CAPACITY {
            self.line = line;
        }
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        // Valid UTF-8 (every vendor's case) takes the fast check; only a broken line pays
        // for the replacement-character scan.
        fn text(bytes: &[u8]) -> Cow<'_, str> {
            match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(bytes),
            }
        }

        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
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
                let separator = usize::from(self.has_data);
                if self.data.len() + separator + value.len() > self.limits.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.limits.max_event_bytes,
                    });
                }
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
            b"id" => {}
            _ if self.collect_unframed => {
                if self.unframed.len() + line.len() + 1 > self.limits.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.limits.max_event_bytes,
                    });
                }
                self.unframed.push_str(&text(line));
                self.unframed.push('\n');
            }
            _ => {}
        }
        Ok(())
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
        let mut events = d.feed(input).unwrap();
        events.extend(d.finish().unwrap());
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
        assert!(d.feed(b"da").unwrap().is_empty());
        assert!(d.feed(b"ta: hel").unwrap().is_empty());
        assert!(d.feed(b"lo\r").unwrap().is_empty());
        assert!(d.feed(b"\n").unwrap().is_empty());
        assert_eq!(d.feed(b"\r\n").unwrap(), vec![data("hello")]);
        assert_eq!(d.finish().unwrap(), None);
    }

    #[test]
    fn lines_longer_than_64_kib() {
        let big = "x".repeat(200 * 1024);
        let input = format!("data: {big}\n\n");
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in input.as_bytes().chunks(1000) {
            events.extend(d.feed(chunk).unwrap());
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
            let mut events = d.feed(&stream[..i]).unwrap();
            events.extend(d.feed(&stream[i..]).unwrap());
            events.extend(d.finish().unwrap());
            assert_eq!(events, expected, "split at {i}");
        }
        for j in 0..=stream.len() {
            for i in 0..=j {
                let mut d = SseDecoder::new();
                let mut events = d.feed(&stream[..i]).unwrap();
                events.extend(d.feed(&stream[i..j]).unwrap());
                events.extend(d.feed(&stream[j..]).unwrap());
                events.extend(d.finish().unwrap());
                assert_eq!(events, expected, "split at {i} and {j}");
            }
        }
        // One byte at a time.
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        for b in stream {
            events.extend(d.feed(std::slice::from_ref(b)).unwrap());
        }
        events.extend(d.finish().unwrap());
        assert_eq!(events, expected);
    }

    fn small(line: usize, event: usize) -> SseDecoder {
        SseDecoder::with_limits(SseLimits {
            max_line_bytes: line,
            max_event_bytes: event,
        })
    }

    #[test]
    fn a_line_that_never_ends_fails_at_the_limit_without_keeping_more() {
        let mut d = small(4096, 1 << 20);
        let mut fed = 0;
        let error = loop {
            match d.feed(&[b'x'; 1000]) {
                Ok(events) => assert!(events.is_empty()),
                Err(e) => break e,
            }
            fed += 1000;
            assert!(d.buffered() <= 4096, "{} bytes held", d.buffered());
        };
        assert_eq!(error, SseError::LineTooLong { limit: 4096 });
        assert_eq!(error.to_string(), "an SSE line exceeds 4096 bytes");
        assert!(fed <= 4096);
        assert_eq!(d.buffered(), 0, "the offending line is dropped");
        // One chunk holding a terminated line over the limit fails the same way.
        let mut d = small(16, 1 << 20);
        let long = format!(": {}\n", "c".repeat(20));
        assert_eq!(
            d.feed(long.as_bytes()),
            Err(SseError::LineTooLong { limit: 16 })
        );
    }

    #[test]
    fn a_data_line_past_the_event_limit_is_an_event_error() {
        let mut d = small(1 << 20, 100);
        let mut chunk = b"data: ".to_vec();
        chunk.extend([b'y'; 200]);
        assert_eq!(d.feed(&chunk), Err(SseError::EventTooLarge { limit: 100 }));
        let provider: promptkit_core::ProviderError = SseError::EventTooLarge { limit: 100 }.into();
        assert_eq!(
            provider.to_string(),
            "response too large: a stream event exceeds 100 bytes"
        );
    }

    #[test]
    fn many_data_lines_without_a_blank_line_fail_at_the_event_limit() {
        let mut d = small(1 << 20, 10_000);
        let mut lines = 0;
        let error = loop {
            match d.feed(b"data: x\n") {
                Ok(events) => assert!(events.is_empty()),
                Err(e) => break e,
            }
            lines += 1;
            assert!(d.buffered() <= 10_000);
        };
        assert_eq!(error, SseError::EventTooLarge { limit: 10_000 });
        assert_eq!(lines, 5_000, "each line adds `x` and a separator");
        // An event just under the limit is dispatched.
        let mut d = small(1 << 20, 10);
        let events = d.feed(b"data: 12345\ndata: 6789\n\n").unwrap();
        assert_eq!(events, vec![data("12345\n6789")]);
    }

    #[test]
    fn a_partial_line_within_the_limits_is_flushed_at_finish() {
        let mut d = small(1 << 20, 10);
        assert!(d.feed(b"data: 1234").unwrap().is_empty());
        assert_eq!(d.finish(), Ok(Some(data("1234"))));
        // A partial line counts its field name against the event limit.
        let mut d = small(1 << 20, 10);
        assert_eq!(
            d.feed(b"data: 123456"),
            Err(SseError::EventTooLarge { limit: 10 })
        );
    }

    #[test]
    fn unframed_lines_are_collected_only_on_request() {
        let body = b"data: {\"a\":1}\n\n{\n  \"error\": {\"code\": 503}\n}\n";
        let mut d = SseDecoder::new();
        assert_eq!(d.feed(body).unwrap().len(), 1);
        assert_eq!(d.take_unframed(), None);

        let mut d = SseDecoder::new().collecting_unframed(true);
        let events = d.feed(body).unwrap();
        assert_eq!(events, vec![data("{\"a\":1}")]);
        assert_eq!(
            d.take_unframed().as_deref(),
            Some("{\n  \"error\": {\"code\": 503}\n}\n")
        );
        assert_eq!(d.take_unframed(), None);
        // Known fields, comments and NUL ids are never unframed text.
        d.feed(b": note\nid: a\0b\nevent: x\nretry: 5\n\n").unwrap();
        assert_eq!(d.take_unframed(), None);
    }
}
