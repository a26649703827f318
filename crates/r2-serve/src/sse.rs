//! Passing a provider's server-sent events through: complete lines go on as soon as they arrive,
//! with `model` rewritten in the JSON of `data:` lines when the request was routed.

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use r2_llm::RawStream;
use serde_json::Value;

use crate::AppState;

/// The provider's stream for the client. A provider error in the middle of the stream (the
/// status is already sent) ends it with one more event, `data: {"error": {...}}`, in the shape of
/// the gateway's other errors.
pub(crate) fn pass_through(
    raw: RawStream,
    model: Option<String>,
    state: AppState,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let lines = Lines::new(model);
    futures_util::stream::unfold(Some((raw, lines, state)), |s| async move {
        let (mut raw, mut lines, state) = s?;
        loop {
            match raw.next().await {
                Some(Ok(chunk)) => {
                    let out = lines.push(&chunk);
                    if !out.is_empty() {
                        return Some((Ok(out), Some((raw, lines, state))));
                    }
                }
                Some(Err(e)) => {
                    // A cut line is dropped; the blank line ends any event left open.
                    let error = state.provider_failed(e);
                    eprintln!("r2 serve: the provider's stream failed: {error}");
                    let event = format!("\ndata: {}\n\n", error.body());
                    return Some((Ok(Bytes::from(event)), None));
                }
                None => {
                    let rest = lines.finish();
                    return (!rest.is_empty()).then_some((Ok(rest), None));
                }
            }
        }
    })
}

/// Splits a byte stream into complete lines and rewrites `model` in `data:` lines.
struct Lines {
    pending: Vec<u8>,
    model: Option<String>,
}

impl Lines {
    fn new(model: Option<String>) -> Self {
        Self {
            pending: Vec::new(),
            model,
        }
    }

    /// Takes a chunk; returns every line it completes (with the ones held back before).
    fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.pending.is_empty() && self.model.is_none() && chunk.ends_with(b"\n") {
            return Bytes::copy_from_slice(chunk);
        }
        self.pending.extend_from_slice(chunk);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Bytes::new();
        };
        let rest = self.pending.split_off(end + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        self.rewrite(complete)
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
        let mut lines = Lines::new(Some("GLM-4.5-Air".into()));
        let event = "data: {\"id\":\"x\",\"model\":\"z-ai/glm-4.5-air\",\"choices\":[]}\n\n";
        let (a, b) = event.split_at(20);
        assert!(lines.push(a.as_bytes()).is_empty());
        let out = lines.push(b.as_bytes());
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"id\":\"x\",\"model\":\"GLM-4.5-Air\",\"choices\":[]}\n\n"
        );
        let out = lines.push(b": keep-alive\r\ndata: [DONE]\r\n\r\n");
        assert_eq!(&out[..], b": keep-alive\r\ndata: [DONE]\r\n\r\n");
        assert!(lines.finish().is_empty());
    }

    #[test]
    fn without_a_model_bytes_pass_unchanged() {
        let mut lines = Lines::new(None);
        let event = b"data: {\"model\":\"m\"}\n\n";
        assert_eq!(&lines.push(event)[..], event);
        assert!(lines.push(b"data: {\"mo").is_empty());
        assert_eq!(&lines.push(b"del\":1}\n")[..], b"data: {\"model\":1}\n");
        assert_eq!(&lines.push(b"tail")[..], b"");
        assert_eq!(&lines.finish()[..], b"tail");
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
