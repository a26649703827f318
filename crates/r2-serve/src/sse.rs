//! Passing a provider's server-sent events through: complete lines go on as soon as they arrive,
//! with `model` rewritten in the JSON of `data:` lines when the request was routed. Only the
//! line being read is held back, and at most `limit` bytes of it (r2-llm's raw stream already
//! stops at its `max_event_bytes`; this is the gateway's own bound). A provider's JSON answer to a
//! stream request (already read whole and checked by r2-llm) passes through unchanged.

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use r2_router::r2_llm::{self, RawStream};
use serde_json::Value;

use crate::AppState;

/// The provider's stream for the client. A provider error in the middle of the stream (the
/// status is already sent) ends it with one more event, `data: {"error": {...}}`, in the shape of
/// the gateway's other errors; so does a line longer than `limit` bytes (`url` names the
/// provider in the error).
pub(crate) fn pass_through(
    raw: RawStream,
    model: Option<String>,
    state: AppState,
    url: String,
    limit: usize,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    // JSON (a provider that ignored `"stream": true`) is not made of lines: it passes unchanged.
    let json = raw
        .content_type()
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let lines = Lines::new(model, limit);
    futures_util::stream::unfold(Some((raw, lines, state)), move |s| {
        let url = url.clone();
        async move {
            let (mut raw, mut lines, state) = s?;
            loop {
                let failed = match raw.next().await {
                    Some(Ok(chunk)) if json => {
                        return Some((Ok(chunk), Some((raw, lines, state))));
                    }
                    Some(Ok(chunk)) => match lines.push(&chunk) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Some((Ok(out), Some((raw, lines, state)))),
                        Err(TooLong) => r2_llm::Error::TooLarge {
                            url,
                            what: "a stream line",
                            limit,
                        },
                    },
                    Some(Err(e)) => e,
                    None => {
                        let rest = lines.finish();
                        return (!rest.is_empty()).then_some((Ok(rest), None));
                    }
                };
                // A cut line is dropped; the blank line ends any event left open.
                let error = state.provider_failed(failed);
                tracing::error!(
                    error = error.detail(),
                    "r2 serve: the provider's stream failed"
                );
                let event = format!("\ndata: {}\n\n", error.body());
                return Some((Ok(Bytes::from(event)), None));
            }
        }
    })
}

/// A line longer than the limit.
#[derive(Debug, PartialEq, Eq)]
struct TooLong;

/// Splits a byte stream into complete lines and rewrites `model` in `data:` lines.
struct Lines {
    pending: Vec<u8>,
    model: Option<String>,
    /// The most bytes of an incomplete line held back.
    limit: usize,
}

impl Lines {
    fn new(model: Option<String>, limit: usize) -> Self {
        Self {
            pending: Vec::new(),
            model,
            limit,
        }
    }

    /// Takes a chunk; returns every line it completes (with the ones held back before), or
    /// [`TooLong`] when the line left incomplete is longer than the limit.
    fn push(&mut self, chunk: &[u8]) -> Result<Bytes, TooLong> {
        if self.pending.is_empty() && self.model.is_none() && chunk.ends_with(b"\n") {
            return Ok(Bytes::copy_from_slice(chunk));
        }
        self.pending.extend_from_slice(chunk);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return if self.pending.len() > self.limit {
                Err(TooLong)
            } else {
                Ok(Bytes::new())
            };
        };
        let rest = self.pending.split_off(end + 1);
        if rest.len() > self.limit {
            return Err(TooLong);
        }
        let complete = std::mem::replace(&mut self.pending, rest);
        Ok(self.rewrite(complete))
    }

    /// The last line, when the stream ended without a line end.
    fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending);
        self.rewrite(rest)
    }

    fn rewrite(&self, lines: Vec<u8>) -> Bytes {
        let Some(model) = &self.model else {
            return Bytes::from(lines);
        };
        let mut out = Vec::with_capacity(lines.len() + 32);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            match rewrite_line(line, model) {
                Some(rewritten) => out.extend_from_slice(&rewritten),
                None => out.extend_from_slice(line),
            }
        }
        Bytes::from(out)
    }
}

/// `line` with `model` set to `model`, when it is a `data:` line of a JSON object that has a
/// `model`; `None` to keep the line as it is.
fn rewrite_line(line: &[u8], model: &str) -> Option<Vec<u8>> {
    let content = line.strip_suffix(b"\n").unwrap_or(line);
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    let ending = &line[content.len()..];
    let payload = content.strip_prefix(b"data:")?;
    let payload = payload.strip_prefix(b" ").unwrap_or(payload);
    if !payload.starts_with(b"{") {
        return None;
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    let slot = object.get_mut("model")?;
    *slot = Value::String(model.to_owned());
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(Value::Object(object).to_string().as_bytes());
    out.extend_from_slice(ending);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_held_until_complete_and_model_is_rewritten() {
        let mut lines = Lines::new(Some("GLM-4.5-Air".into()), 1 << 20);
        let event = "data: {\"id\":\"x\",\"model\":\"z-ai/glm-4.5-air\",\"choices\":[]}\n\n";
        let (a, b) = event.split_at(20);
        assert!(lines.push(a.as_bytes()).unwrap().is_empty());
        let out = lines.push(b.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"id\":\"x\",\"model\":\"GLM-4.5-Air\",\"choices\":[]}\n\n"
        );
        let out = lines.push(b": keep-alive\r\ndata: [DONE]\r\n\r\n").unwrap();
        assert_eq!(&out[..], b": keep-alive\r\ndata: [DONE]\r\n\r\n");
        assert!(lines.finish().is_empty());
    }

    #[test]
    fn without_a_model_bytes_pass_unchanged() {
        let mut lines = Lines::new(None, 1 << 20);
        let event = b"data: {\"model\":\"m\"}\n\n";
        assert_eq!(&lines.push(event).unwrap()[..], event);
        assert!(lines.push(b"data: {\"mo").unwrap().is_empty());
        assert_eq!(
            &lines.push(b"del\":1}\n").unwrap()[..],
            b"data: {\"model\":1}\n"
        );
        assert_eq!(&lines.push(b"tail").unwrap()[..], b"");
        assert_eq!(&lines.finish()[..], b"tail");
    }

    #[test]
    fn an_incomplete_line_over_the_limit_is_too_long() {
        for model in [None, Some("M".to_owned())] {
            let mut lines = Lines::new(model, 8);
            assert!(lines.push(b"data: 1").unwrap().is_empty());
            assert_eq!(lines.push(b"23"), Err(TooLong));
            let mut lines = Lines::new(None, 8);
            assert_eq!(&lines.push(b"ok\ndata: 1").unwrap()[..], b"ok\n");
            assert_eq!(lines.push(b"\n0123456789"), Err(TooLong));
            // Long streams of short lines are fine.
            let mut lines = Lines::new(None, 8);
            for _ in 0..100 {
                assert_eq!(lines.push(b"data: 1\n\n").unwrap().len(), 9);
            }
        }
    }

    #[test]
    fn lines_without_model_or_json_are_kept_byte_for_byte() {
        for line in [
            "data: {\"choices\": []}\n",
            "data: {not json\n",
            "event: x\n",
            "data:[DONE]\n",
        ] {
            assert_eq!(rewrite_line(line.as_bytes(), "M"), None, "{line}");
        }
    }
}
