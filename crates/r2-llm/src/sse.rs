//! A decoder of `text/event-stream` bodies (server-sent events), fed network chunks as they come.
//!
//! Only what the chat-completions stream uses is kept: the `data` of each event. Lines may be split
//! anywhere across chunks (even inside a UTF-8 character), end in `\n` or `\r\n`; comment lines
//! (`: OPENROUTER PROCESSING`) and other fields (`event`, `id`, `retry`) are skipped. A line, and
//! the data of an event, may hold at most `max` bytes: past that the decoder fails at once
//! ([`TooLarge`]) instead of buffering the rest.

/// A line or an event's data over the decoder's limit: `a stream line` or `a stream event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) &'static str);

/// Splits a byte stream into the `data` of its events.
#[derive(Debug)]
pub(crate) struct SseDecoder {
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    /// The `data` lines of the event being read, each followed by `\n`.
    data: String,
    /// Whether the event being read has a `data` field at all.
    has_data: bool,
    /// The most bytes a line or an event's data may hold.
    max: usize,
    /// Events with data (not blank) completed so far.
    events: usize,
    /// Whether a line that is not a server-sent-events line (not blank, not a comment, not one of
    /// the fields `data`, `event`, `id`, `retry`) came before the first event with data was
    /// complete.
    foreign_before_first_event: bool,
}

impl SseDecoder {
    /// A decoder that accepts lines and events of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            data: String::new(),
            has_data: false,
            max,
            events: 0,
            foreign_before_first_event: false,
        }
    }

    /// Feeds one chunk; returns the `data` of every event it completes, in order, or
    /// [`TooLarge`] as soon as a line or an event's data is longer than the limit.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, TooLarge> {
        let mut events = Vec::new();
        let mut start = 0;
        // Only the new bytes can hold a line end: the pending ones were searched before.
        let searched = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let mut from = searched;
        while let Some(offset) = self.pending[from..].iter().position(|&b| b == b'\n') {
            let end = from + offset;
            if end - start > self.max {
                return Err(TooLarge("a stream line"));
            }
            let line = strip_cr(&self.pending[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line)? {
                events.push(event);
            }
            start = end + 1;
            from = start;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.max {
            return Err(TooLarge("a stream line"));
        }
        Ok(events)
    }

    /// Ends the stream: a last line without its line end and an event without its blank line are
    /// still taken (servers that close right after `data: [DONE]` are common).
    pub(crate) fn finish(&mut self) -> Result<Option<String>, TooLarge> {
        let rest = std::mem::take(&mut self.pending);
        let line = String::from_utf8_lossy(strip_cr(&rest)).into_owned();
        let from_line = if line.is_empty() {
            None
        } else {
            self.line(&line)?
        };
        match from_line {
            Some(event) => Ok(Some(event)),
            None => self.line(""),
        }
    }

    /// Whether a line that is not part of a server-sent-events stream (e.g. `<html>`) came before
    /// the first complete event.
    pub(crate) fn foreign_before_first_event(&self) -> bool {
        self.foreign_before_first_event
    }

    /// Handles one line; returns the event's data when the line ends an event.
    fn line(&mut self, line: &str) -> Result<Option<String>, TooLarge> {
        if line.is_empty() {
            if !self.has_data {
                return Ok(None);
            }
            self.has_data = false;
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the `\n` after the last data line
            if !data.trim().is_empty() {
                self.events += 1;
            }
            return Ok(Some(data));
        }
        if line.starts_with(':') {
            return Ok(None); // a comment, e.g. OpenRouter's keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(TooLarge("a stream event"));
                }
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" | "id" | "retry" => {}
            _ if self.events == 0 => self.foreign_before_first_event = true,
            _ => {}
        }
        Ok(None)
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(body: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
            events.extend(decoder.push(&body[start..cut]).unwrap());
            start = cut;
        }
        events.extend(decoder.finish().unwrap());
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

    #[test]
    fn a_line_or_an_event_over_the_limit_fails_without_buffering_the_rest() {
        let mut decoder = SseDecoder::new(16);
        assert_eq!(
            decoder.push(b"data: 0123456789\n").unwrap(),
            Vec::<String>::new()
        );
        // A line without its end grows past the limit: the decoder fails at once.
        let mut decoder = SseDecoder::new(16);
        assert!(decoder.push(b"data: 0123").unwrap().is_empty());
        assert_eq!(
            decoder.push(b"456789abcdef"),
            Err(TooLarge("a stream line"))
        );
        // A complete line longer than the limit.
        let mut decoder = SseDecoder::new(16);
        assert_eq!(
            decoder.push(b"data: 0123456789abcdef\n\n"),
            Err(TooLarge("a stream line"))
        );
        // Short lines whose data adds up past the limit in one event.
        let mut decoder = SseDecoder::new(16);
        assert_eq!(
            decoder.push(b"data: 0123456\ndata: 789abcd\ndata: x\n"),
            Err(TooLarge("a stream event"))
        );
        // Many events, each under the limit, are fine.
        let mut decoder = SseDecoder::new(16);
        let events = decoder
            .push("data: 0123456789\n\n".repeat(100).as_bytes())
            .unwrap();
        assert_eq!(events.len(), 100);
    }

    #[test]
    fn lines_that_are_not_server_sent_events_are_noticed_before_the_first_event() {
        let mut decoder = SseDecoder::new(1024);
        assert!(decoder
            .push(b"<!DOCTYPE html>\n<html>\n")
            .unwrap()
            .is_empty());
        assert!(decoder.foreign_before_first_event());

        let mut decoder = SseDecoder::new(1024);
        let events = decoder
            .push(b": ping\nevent: x\nid: 1\nretry: 5\ndata: {}\n\nlater junk\n")
            .unwrap();
        assert_eq!(events, ["{}"]);
        assert!(!decoder.foreign_before_first_event());
    }
}
