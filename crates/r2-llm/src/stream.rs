//! Streaming ([`LlmClient::complete_streaming`]): one attempt reads the server-sent events of an
//! answer and hands each piece of text on as it arrives.

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use crate::client::WireRequest;
use crate::sse::SseDecoder;
use crate::transport::{content_type, is_json_type, Failure};
use crate::{Completion, Error, LlmClient, Usage};

/// What a stream has delivered so far.
#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) text: String,
    usage: Option<Usage>,
    model: Option<String>,
    finish_reason: Option<String>,
    done: bool,
}

impl StreamState {
    pub(crate) fn into_completion(self) -> Completion {
        Completion {
            text: self.text,
            usage: self.usage,
            model: self.model,
            finish_reason: self.finish_reason,
        }
    }
}

impl LlmClient {
    /// One streaming attempt; fills `state` as text arrives.
    pub(crate) async fn stream_once(
        &self,
        body: &WireRequest<'_>,
        state: &mut StreamState,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> std::result::Result<(), Failure> {
        let timeout = self.options.timeout;
        let response = self.open_stream(body).await?;
        if content_type(&response).as_deref().is_some_and(is_json_type) {
            // The provider ignored `"stream": true` and answered in one piece.
            let bytes = self.read_answer(response).await?;
            let completion = self.parse_completion(&bytes)?;
            if !completion.text.is_empty() {
                on_delta(&completion.text);
            }
            *state = StreamState {
                text: completion.text,
                usage: completion.usage,
                model: completion.model,
                finish_reason: completion.finish_reason,
                done: true,
            };
            return Ok(());
        }

        let mut stream = response.bytes_stream();
        let mut decoder = SseDecoder::new(self.options.max_event_bytes);
        loop {
            let chunk = match tokio::time::timeout(timeout, stream.next()).await {
                Err(_) if state.text.is_empty() => {
                    return Err(Failure::Final(self.timeout_error()))
                }
                Err(_) => {
                    return Err(Failure::Final(self.interrupted(
                        state,
                        format!("no data for {timeout:?} (the timeout)"),
                    )))
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    let reason = format!("the connection failed: {}", r2_http::source_chain(&e));
                    return Err(Failure::retryable(self.interrupted(state, reason)));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            let events = decoder.push(&chunk).map_err(|e| self.too_large(e))?;
            for data in events {
                self.stream_event(&data, state, on_delta)?;
                if state.done {
                    return Ok(());
                }
            }
        }
        if let Some(data) = decoder.finish().map_err(|e| self.too_large(e))? {
            self.stream_event(&data, state, on_delta)?;
        }
        if state.done || state.finish_reason.is_some() {
            return Ok(());
        }
        Err(Failure::retryable(self.interrupted(
            state,
            "the stream ended without `data: [DONE]` or a finish_reason".to_owned(),
        )))
    }

    /// Handles the `data` of one server-sent event.
    fn stream_event(
        &self,
        data: &str,
        state: &mut StreamState,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> std::result::Result<(), Failure> {
        if data.trim() == "[DONE]" {
            state.done = true;
            return Ok(());
        }
        for value in self.event_values(data, "a stream event") {
            let value = value?;
            if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
                let failure = self.in_band_error(error, 200);
                return Err(if state.text.is_empty() {
                    failure
                } else {
                    Failure::Final(failure.into_error())
                });
            }
            if let Some(model) = value.get("model").and_then(Value::as_str) {
                state.model = Some(model.to_owned());
            }
            if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
                let usage = Usage::deserialize(usage).map_err(|e| {
                    Failure::Final(self.malformed(format!(
                        "the usage of a stream event is not token counts ({e})"
                    )))
                })?;
                state.usage = Some(usage);
            }
            let choice = value
                .get("choices")
                .and_then(Value::as_array)
                .and_then(|choices| choices.first());
            if let Some(choice) = choice {
                let content = choice.pointer("/delta/content").and_then(Value::as_str);
                if let Some(content) = content.filter(|c| !c.is_empty()) {
                    on_delta(content);
                    state.text.push_str(content);
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    state.finish_reason = Some(reason.to_owned());
                }
            }
        }
        Ok(())
    }

    /// The JSON values of an event's `data`: usually one object, but several on separate `data:`
    /// lines of one event are accepted. Text that is not JSON is [`Error::Malformed`], naming the
    /// event as `what`.
    pub(crate) fn event_values<'a>(
        &'a self,
        data: &'a str,
        what: &'a str,
    ) -> impl Iterator<Item = std::result::Result<Value, Failure>> + 'a {
        serde_json::Deserializer::from_str(data)
            .into_iter::<Value>()
            .map(move |value| {
                value.map_err(|e| {
                    Failure::Final(self.malformed(format!(
                        "{what} is not JSON ({e}); it reads {:?}",
                        self.excerpt(data.as_bytes())
                    )))
                })
            })
    }

    /// The stream stopped early: the text delivered so far is kept in the error.
    fn interrupted(&self, state: &StreamState, reason: String) -> Error {
        Error::StreamInterrupted {
            url: self.url.clone(),
            received_chars: state.text.chars().count(),
            partial: state.text.clone(),
            reason,
        }
    }
}
