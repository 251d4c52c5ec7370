//! The `data:` payloads of an SSE body read in pieces: the minimal framing the benchmark's
//! baseline proxy and load generator need (no multi-line events, no `event:` names).

/// Collects body pieces and yields each complete `data: …` line's payload, without its line
/// ending.
///
/// ```
/// use promptkit_testkit::lines::DataLines;
///
/// let mut lines = DataLines::default();
/// lines.push(b"data: {\"a\":1}\r\n\nda");
/// assert_eq!(lines.next_data().as_deref(), Some(&b"{\"a\":1}"[..]));
/// assert_eq!(lines.next_data(), None);
/// lines.push(b"ta: [DONE]\n\n");
/// assert_eq!(lines.next_data().as_deref(), Some(&b"[DONE]"[..]));
/// ```
#[derive(Debug, Default)]
pub struct DataLines {
    buffer: Vec<u8>,
}

impl DataLines {
    /// Appends a piece of the body.
    pub fn push(&mut self, piece: &[u8]) {
        self.buffer.extend_from_slice(piece);
    }

    /// The payload of the next complete `data:` line; other lines are skipped.
    pub fn next_data(&mut self) -> Option<Vec<u8>> {
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data: ") else {
                continue;
            };
            let data = data.strip_suffix(b"\n").unwrap_or(data);
            let data = data.strip_suffix(b"\r").unwrap_or(data);
            return Some(data.to_vec());
        }
        None
    }
}
