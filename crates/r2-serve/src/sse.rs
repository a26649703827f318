//! Passing a provider's server-sent events through: complete lines go on as soon as they arrive,
//! with `model` rewritten in the JSON of `data:` lines when the request was routed. The usage the
//! gateway asked for (`stream_options.include_usage`) is read from the stream for its cost and,
//! when the client did not ask for it, taken out: the usage-only chunk (empty `choices`) is
//! dropped and a `usage` on a content chunk removed. Only the
//! line being read is held back, and at most `limit` bytes of it (r2-llm's raw stream already
//! stops at its `max_event_bytes`; this is the gateway's own bound). A provider's JSON answer to a
//! stream request (already read whole and checked by r2-llm) passes through unchanged.

use std::convert::Infallible;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use r2_router::r2_llm::{self, RawStream, Usage};
use serde_json::Value;

use crate::AppState;

/// What is changed in the events passed on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rewrite {
    /// `model` in every chunk (a routed request).
    pub model: Option<String>,
    /// Take the usage out (the client did not ask for it).
    pub strip_usage: bool,
}

/// Called once when the stream ends, fails or is dropped, with the usage it carried.
pub(crate) type OnEnd = Box<dyn FnOnce(Option<Usage>) + Send>;

/// The provider's stream for the client. A provider error in the middle of the stream (the
/// status is already sent) ends it with one more event, `data: {"error": {...}}`, in the shape of
/// the gateway's other errors; so does a line longer than `limit` bytes (`url` names the
/// provider in the error).
pub(crate) fn pass_through(
    raw: RawStream,
    rewrite: Rewrite,
    state: AppState,
    url: String,
    limit: usize,
    on_end: OnEnd,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    // JSON (a provider that ignored `"stream": true`) is not made of lines: it passes unchanged.
    let json = raw
        .content_type()
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let lines = Lines::new(rewrite, limit, on_end);
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
                        lines.end();
                        return (!rest.is_empty()).then_some((Ok(rest), None));
                    }
                };
                lines.end();
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
    rewrite: Rewrite,
    /// The most bytes of an incomplete line held back.
    limit: usize,
    /// The last usage the stream carried.
    usage: Option<Usage>,
    on_end: Option<OnEnd>,
}

impl Lines {
    fn new(rewrite: Rewrite, limit: usize, on_end: OnEnd) -> Self {
        Self {
            pending: Vec::new(),
            rewrite,
            limit,
            usage: None,
            on_end: Some(on_end),
        }
    }

    /// Hands the usage seen to the end callback (once).
    fn end(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.usage.take());
        }
    }

    /// Takes a chunk; returns every line it completes (with the ones held back before), or
    /// [`TooLong`] when the line left incomplete is longer than the limit.
    fn push(&mut self, chunk: &[u8]) -> Result<Bytes, TooLong> {
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

    fn rewrite(&mut self, lines: Vec<u8>) -> Bytes {
        let mut out = Vec::with_capacity(lines.len() + 32);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            match rewrite_line(line, &self.rewrite, &mut self.usage) {
                Some(rewritten) => out.extend_from_slice(&rewritten),
                None => out.extend_from_slice(line),
            }
        }
        Bytes::from(out)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // A client that went away mid-stream: the usage seen so far still counts.
        self.end();
    }
}

/// `line` rewritten, when it is a `data:` line of a JSON object: `model` set to the rewrite's,
/// its `usage` read into `usage` (and taken out when stripping; a usage-only chunk becomes an
/// empty line); `None` to keep the line as it is.
fn rewrite_line(line: &[u8], rewrite: &Rewrite, usage: &mut Option<Usage>) -> Option<Vec<u8>> {
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
    let mut changed = false;
    if let Some(seen) = object.get("usage").filter(|u| u.is_object()) {
        if let Ok(seen) = serde_json::from_value::<Usage>(seen.clone()) {
            *usage = Some(seen);
        }
        if rewrite.strip_usage {
            let usage_only = object
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            if usage_only {
                return Some(Vec::new());
            }
            object.remove("usage");
            changed = true;
        }
    }
    if let (Some(model), Some(slot)) = (&rewrite.model, object.get_mut("model")) {
        *slot = Value::String(model.clone());
        changed = true;
    }
    if !changed {
        return None;
    }
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(Value::Object(object).to_string().as_bytes());
    out.extend_from_slice(ending);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(model: Option<String>) -> Rewrite {
        Rewrite {
            model,
            strip_usage: false,
        }
    }

    #[test]
    fn usage_is_read_and_stripped_when_the_client_did_not_ask() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let record = seen.clone();
        let mut lines = Lines::new(
            Rewrite {
                model: None,
                strip_usage: true,
            },
            1 << 20,
            Box::new(move |usage| *record.lock().unwrap() = Some(usage)),
        );
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let out = lines.push(stream.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{}}]}\n\n",
                "\n",
                "data: [DONE]\n\n"
            )
        );
        drop(lines);
        let usage = seen.lock().unwrap().unwrap().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 2));
        // Asked for by the client: passed on as it came.
        let mut lines = Lines::new(rw(None), 1 << 20, Box::new(|_| {}));
        assert_eq!(
            &lines.push(stream.as_bytes()).unwrap()[..],
            stream.as_bytes()
        );
    }

    #[test]
    fn lines_are_held_until_complete_and_model_is_rewritten() {
        let mut lines = Lines::new(rw(Some("GLM-4.5-Air".into())), 1 << 20, Box::new(|_| {}));
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
        let mut lines = Lines::new(rw(None), 1 << 20, Box::new(|_| {}));
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
            let mut lines = Lines::new(rw(model), 8, Box::new(|_| {}));
            assert!(lines.push(b"data: 1").unwrap().is_empty());
            assert_eq!(lines.push(b"23"), Err(TooLong));
            let mut lines = Lines::new(rw(None), 8, Box::new(|_| {}));
            assert_eq!(&lines.push(b"ok\ndata: 1").unwrap()[..], b"ok\n");
            assert_eq!(lines.push(b"\n0123456789"), Err(TooLong));
            // Long streams of short lines are fine.
            let mut lines = Lines::new(rw(None), 8, Box::new(|_| {}));
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
            assert_eq!(
                rewrite_line(line.as_bytes(), &rw(Some("M".into())), &mut None),
                None,
                "{line}"
            );
        }
    }
}
