//! A decoder of `text/event-stream` bodies (server-sent events), fed network chunks as they come.
//!
//! Only what the chat-completions stream uses is kept: the `data` of each event. Lines may be split
//! anywhere across chunks (even inside a UTF-8 character), end in `\n` or `\r\n`; comment lines
//! (`: OPENROUTER PROCESSING`) and other fields (`event`, `id`, `retry`) are skipped.

/// Splits a byte stream into the `data` of its events.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    /// The `data` lines of the event being read, each followed by `\n`.
    data: String,
    /// Whether the event being read has a `data` field at all.
    has_data: bool,
}

impl SseDecoder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns the `data` of every event it completes, in order.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        let mut start = 0;
        // Only the new bytes can hold a line end: the pending ones were searched before.
        let searched = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let mut from = searched;
        while let Some(offset) = self.pending[from..].iter().position(|&b| b == b'\n') {
            let end = from + offset;
            let line = strip_cr(&self.pending[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start = end + 1;
            from = start;
        }
        self.pending.drain(..start);
        events
    }

    /// Ends the stream: a last line without its line end and an event without its blank line are
    /// still taken (servers that close right after `data: [DONE]` are common).
    pub(crate) fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        let line = String::from_utf8_lossy(strip_cr(&rest)).into_owned();
        let from_line = if line.is_empty() {
            None
        } else {
            self.line(&line)
        };
        from_line.or_else(|| self.line(""))
    }

    /// Handles one line; returns the event's data when the line ends an event.
    fn line(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the `\n` after the last data line
            return Some(data);
        }
        if line.starts_with(':') {
            return None; // a comment, e.g. OpenRouter's keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            self.data.push_str(value);
            self.data.push('\n');
            self.has_data = true;
        }
        None
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(body: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
            events.extend(decoder.push(&body[start..cut]));
            start = cut;
        }
        events.extend(decoder.finish());
        events
    }

    const BODY: &str = ": OPENROUTER PROCESSING\r\n\r\n\
                        data: {\"a\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n\
                        event: message\nid: 7\ndata:{\"b\":2}\n\n\
                        data: first\ndata: second\n\n\
                        : keep-alive\n\n\
                        data: [DONE]\n\n";

    fn expected() -> Vec<String> {
        vec![
            "{\"a\":\"h\u{e9}llo \u{1f600}\"}".to_owned(),
            "{\"b\":2}".to_owned(),
            "first\nsecond".to_owned(),
            "[DONE]".to_owned(),
        ]
    }

    #[test]
    fn whole_body_in_one_chunk() {
        assert_eq!(decode_in_pieces(BODY.as_bytes(), &[]), expected());
    }

    #[test]
    fn every_single_split_point_gives_the_same_events() {
        let body = BODY.as_bytes();
        for cut in 0..=body.len() {
            assert_eq!(decode_in_pieces(body, &[cut]), expected(), "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let body = BODY.as_bytes();
        let cuts: Vec<usize> = (1..body.len()).collect();
        assert_eq!(decode_in_pieces(body, &cuts), expected());
    }

    #[test]
    fn last_event_without_line_end_is_taken_at_the_end() {
        assert_eq!(
            decode_in_pieces(b"data: x\n\ndata: [DONE]", &[]),
            ["x", "[DONE]"]
        );
        assert_eq!(
            decode_in_pieces(b"data: x\n\ndata: [DONE]\n", &[]),
            ["x", "[DONE]"]
        );
    }

    #[test]
    fn blank_lines_and_comments_alone_make_no_event() {
        assert!(decode_in_pieces(b"\n\n: ping\n\r\n\n", &[3]).is_empty());
    }
}
