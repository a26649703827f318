//! The gateway's raw pass-through of a streamed answer ([`LlmClient::complete_raw_stream`] and
//! [`LlmClient::complete_raw_stream_checked`]): bytes as they arrive, undecoded, each wait and each
//! line bounded.

use std::fmt;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use crate::sse::{SseDecoder, TooLarge};
use crate::transport::{content_type, is_json_type, Failure};
use crate::{Error, LlmClient, Result};

/// The provider's streamed answer to [`LlmClient::complete_raw_stream`]: its content type and its
/// body as the chunks arrive (`Stream<Item = Result<Bytes>>`), undecoded.
pub struct RawStream {
    content_type: Option<String>,
    chunks: futures_util::stream::BoxStream<'static, Result<Bytes>>,
}

impl RawStream {
    /// The `Content-Type` the provider answered with (`text/event-stream` for a stream; a provider
    /// that ignores `"stream": true` answers `application/json` in one piece).
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
}

impl fmt::Debug for RawStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawStream")
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl futures_util::Stream for RawStream {
    type Item = Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

/// Raw streams need `"stream": true` in the body.
pub(crate) fn check_stream_body(body: &Value) -> Result<()> {
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return Err(Error::InvalidRequest {
            reason: "complete_raw_stream needs `\"stream\": true`; use complete_raw".to_owned(),
        });
    }
    Ok(())
}

impl LlmClient {
    /// One attempt of [`LlmClient::complete_raw_stream`]: the request, up to a success status.
    pub(crate) async fn open_raw_stream(
        &self,
        body: &Value,
    ) -> std::result::Result<RawStream, Failure> {
        let response = self.open_stream(body).await?;
        let content_type = content_type(&response);
        let is_json = content_type.as_deref().is_some_and(is_json_type);
        Ok(RawStream {
            chunks: self.raw_chunks(response, is_json),
            content_type,
        })
    }

    /// One attempt of [`LlmClient::complete_raw_stream_checked`].
    pub(crate) async fn open_checked_raw_stream(
        &self,
        body: &Value,
    ) -> std::result::Result<RawStream, Failure> {
        let response = self.open_stream(body).await?;
        let content_type = content_type(&response);
        if content_type.as_deref().is_some_and(is_json_type) {
            // The provider ignored `"stream": true` and answers in one piece.
            let bytes = self.read_answer(response).await?;
            self.parse_json(&bytes)?;
            let chunk = Ok(Bytes::from(bytes));
            return Ok(RawStream {
                content_type,
                chunks: Box::pin(futures_util::stream::once(async move { chunk })),
            });
        }
        let mut chunks = self.raw_chunks(response, false);
        let mut decoder = SseDecoder::new(self.options.max_event_bytes);
        let mut start = Vec::new();
        // The first event with data: empty ones (`data:` alone) are keep-alives, as for
        // `complete_streaming`.
        let first = loop {
            let (events, ended) = match chunks.next().await {
                None => {
                    let last = decoder.finish().map_err(|e| self.too_large(e))?;
                    (last.into_iter().collect(), true)
                }
                Some(Ok(chunk)) => {
                    start.extend_from_slice(&chunk);
                    if start.len() > self.options.max_event_bytes {
                        return Err(self.too_large(TooLarge("a stream event")));
                    }
                    (decoder.push(&chunk).map_err(|e| self.too_large(e))?, false)
                }
                Some(Err(error @ Error::RawStreamInterrupted { .. })) => {
                    // Nothing has been passed on yet: trying again is safe.
                    return Err(Failure::retryable(error));
                }
                Some(Err(error)) => return Err(Failure::Final(error)),
            };
            if decoder.foreign_before_first_event() {
                break None;
            }
            if let Some(event) = events.into_iter().find(|e| !e.trim().is_empty()) {
                break Some(event);
            }
            if ended {
                break None;
            }
        };
        match first {
            _ if decoder.foreign_before_first_event() => {
                return Err(Failure::Final(self.malformed(format!(
                    "the answer to a stream request is not a stream of server-sent events; it \
                     starts with {:?}",
                    self.excerpt(&start)
                ))))
            }
            None => {
                return Err(Failure::Final(self.malformed(format!(
                    "the answer stream ended before its first event; it reads {:?}",
                    self.excerpt(&start)
                ))))
            }
            Some(data) => self.check_first_event(&data)?,
        }
        let start = Ok(Bytes::from(start));
        Ok(RawStream {
            content_type,
            chunks: Box::pin(futures_util::stream::once(async move { start }).chain(chunks)),
        })
    }

    /// The first event of a stream must be `[DONE]` or JSON without an `error` object.
    fn check_first_event(&self, data: &str) -> std::result::Result<(), Failure> {
        if data.trim() == "[DONE]" {
            return Ok(());
        }
        for value in self.event_values(data, "the first event of the answer stream") {
            if let Some(error) = value?.get("error").filter(|e| !e.is_null()) {
                return Err(self.in_band_error(error, 200));
            }
        }
        Ok(())
    }

    /// The body of a streamed answer, chunk by chunk as it arrives: each wait bounded by the
    /// timeout, each line (or, for `json`, the whole body) by its limit.
    fn raw_chunks(
        &self,
        response: reqwest::Response,
        json: bool,
    ) -> futures_util::stream::BoxStream<'static, Result<Bytes>> {
        let client = self.clone();
        let (limit, what) = if json {
            (self.options.max_answer_bytes, "an answer")
        } else {
            (self.options.max_event_bytes, "a stream line")
        };
        // (body, bytes received, bytes of the line (or, for JSON, the body) being read)
        let start = Some((response.bytes_stream(), 0usize, 0usize));
        let chunks = futures_util::stream::unfold(start, move |state| {
            let client = client.clone();
            async move {
                let (mut body, received, open) = state?;
                let timeout = client.options.timeout;
                match tokio::time::timeout(timeout, body.next()).await {
                    Err(_) if received == 0 => Some((Err(client.timeout_error()), None)),
                    Err(_) => {
                        let reason = format!("no data for {timeout:?} (the timeout)");
                        Some((Err(client.raw_interrupted(received, reason)), None))
                    }
                    Ok(None) => None,
                    Ok(Some(Err(e))) => {
                        let reason =
                            format!("the connection failed: {}", r2_http::source_chain(&e));
                        Some((Err(client.raw_interrupted(received, reason)), None))
                    }
                    Ok(Some(Ok(chunk))) => {
                        let open = match chunk.iter().rposition(|&b| b == b'\n') {
                            Some(end) if !json => chunk.len() - end - 1,
                            _ => open + chunk.len(),
                        };
                        if open > limit {
                            return Some((Err(client.too_large_error(what, limit)), None));
                        }
                        let received = received + chunk.len();
                        Some((Ok(chunk), Some((body, received, open))))
                    }
                }
            }
        });
        Box::pin(chunks)
    }

    fn raw_interrupted(&self, received_bytes: usize, reason: String) -> Error {
        Error::RawStreamInterrupted {
            url: self.url.clone(),
            received_bytes,
            reason: self.redact(reason),
        }
    }
}
