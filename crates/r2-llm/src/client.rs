//! The client of `POST {api_base}/chat/completions`: its options, its construction and its five
//! calls. How a request is sent and retried is in `transport.rs`, how an answer becomes an
//! [`Error`] in `classify.rs`, streaming in `stream.rs` and the gateway's pass-through in
//! `passthrough.rs`.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::passthrough::{check_stream_body, RawStream};
use crate::stream::StreamState;
use crate::transport::Failure;
use crate::{ApiKey, ChatRequest, Completion, Error, Message, Result, Usage};

/// OpenRouter's OpenAI-compatible API, the default provider.
pub const OPENROUTER_API_BASE: &str = "https://openrouter.ai/api/v1";

/// How many characters of a provider's error message are kept in an [`Error`].
pub(crate) const MAX_MESSAGE_CHARS: usize = 500;

/// How many characters of an unparsable body are quoted in an [`Error::Malformed`].
pub(crate) const MAX_SNIPPET_CHARS: usize = 200;

/// The default of [`LlmOptions::max_event_bytes`]: 1 MiB per line and per event of a stream.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The default of [`LlmOptions::max_answer_bytes`]: 64 MiB for a whole answer.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The most bytes of an error answer's body that are read (its message is cut to 500 characters
/// anyway); the rest is ignored.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Settings of an [`LlmClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmOptions {
    /// Time allowed for a request (default 60 s). For [`LlmClient::complete`] it covers the whole
    /// request, from connecting to the last byte of the answer; for
    /// [`LlmClient::complete_streaming`] it covers the wait for the answer's headers and then each
    /// wait for the next piece of the stream, so a long answer that keeps coming never times out.
    /// Timeouts are not retried.
    pub timeout: Duration,
    /// Retries after HTTP 429, HTTP 5xx or a connection error (default 3). Other answers (401,
    /// 402, 403, other 4xx) are final. A stream is retried only if it failed before any text was
    /// delivered.
    pub max_retries: u32,
    /// Pause before the first retry (default 500 ms), doubled for each further retry, jittered by
    /// ±25% and capped at 20 s. A `Retry-After` header replaces the computed pause.
    pub initial_backoff: Duration,
    /// The longest `Retry-After` that is waited for (default 60 s); a provider asking for more
    /// ends the request with [`Error::RateLimited`] (or [`Error::Server`]) naming the wait.
    pub max_retry_after: Duration,
    /// The largest line, and the largest event's data, of a streamed answer, in bytes (default
    /// [`DEFAULT_MAX_EVENT_BYTES`], 1 MiB). A stream is never buffered whole, only line by line:
    /// a longer line or event fails with [`Error::TooLarge`] as soon as the limit is passed.
    pub max_event_bytes: usize,
    /// The largest answer read whole, in bytes (default [`DEFAULT_MAX_ANSWER_BYTES`], 64 MiB): a
    /// non-streamed answer, or the JSON of a provider that answers a stream request in one
    /// piece. It is read chunk by chunk and fails with [`Error::TooLarge`] as soon as it is
    /// longer (at once when its `Content-Length` says so).
    pub max_answer_bytes: usize,
}

impl Default for LlmOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(60),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

/// A client of one OpenAI-compatible chat-completions API (OpenRouter by default).
///
/// Cloning is cheap: clones share one connection pool. `Debug` shows the URL, whether a key is
/// set (`ApiKey(***)`) and the options, never the key.
#[derive(Clone)]
pub struct LlmClient {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) key: Option<ApiKey>,
    pub(crate) authorization: Option<HeaderValue>,
    pub(crate) options: LlmOptions,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What is sent: the [`ChatRequest`] plus the streaming switches.
#[derive(Serialize)]
pub(crate) struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl<'a> WireRequest<'a> {
    fn new(request: &'a ChatRequest, stream: bool) -> Self {
        Self {
            model: &request.model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ChoiceMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

impl LlmClient {
    /// A client of the API at `api_base` (e.g. [`OPENROUTER_API_BASE`] or
    /// `http://localhost:8000/v1`); requests go to `{api_base}/chat/completions` (a trailing `/`
    /// or `/chat/completions` on `api_base` is tolerated). With a key, every request carries
    /// `Authorization: Bearer <key>`; without one, no `Authorization` header is sent.
    ///
    /// Nothing is sent until the first request. Fails with [`Error::InvalidUrl`] if `api_base` is
    /// not an `http(s)` URL without query, fragment or credentials, and with
    /// [`Error::InvalidApiKey`] if the key cannot go into a header.
    pub fn new(api_base: &str, key: Option<ApiKey>, options: LlmOptions) -> Result<Self> {
        let url = chat_completions_url(api_base)?;
        let key = key.filter(|key| !key.is_empty());
        let authorization = match &key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.secret()))
                    .map_err(|_| Error::InvalidApiKey {
                        reason: "it holds characters that are not visible ASCII".to_owned(),
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        // Only connecting is bounded here: each call bounds the rest itself (a whole plain
        // request, or each wait of a stream).
        let http =
            r2_http::client(None, Some(options.timeout)).map_err(|e| Error::Unreachable {
                url: url.clone(),
                attempts: 0,
                reason: format!(
                    "cannot set up the HTTP client: {}",
                    r2_http::source_chain(&e)
                ),
            })?;
        Ok(Self {
            http,
            url,
            key,
            authorization,
            options,
        })
    }

    /// A client of OpenRouter ([`OPENROUTER_API_BASE`]).
    pub fn openrouter(key: Option<ApiKey>, options: LlmOptions) -> Result<Self> {
        Self::new(OPENROUTER_API_BASE, key, options)
    }

    /// The full URL requests are sent to, e.g. `https://openrouter.ai/api/v1/chat/completions`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The settings this client was made with.
    pub fn options(&self) -> &LlmOptions {
        &self.options
    }

    /// Whether requests carry an API key.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Sends `request` and returns the first choice's text, the usage and the finish reason.
    ///
    /// HTTP 429, 5xx and connection errors are retried (see [`LlmOptions`]).
    pub async fn complete(&self, request: &ChatRequest) -> Result<Completion> {
        let body = WireRequest::new(request, false);
        self.post_with_retries(&body, Self::parse_completion).await
    }

    /// Sends `request` with `"stream": true` (and `"stream_options": {"include_usage": true}`) and
    /// calls `on_delta` with each piece of text as it arrives; returns the whole text, and the
    /// usage of the final chunk when the provider sends one.
    ///
    /// `on_delta` is never called with an empty string. The request is retried (HTTP 429, 5xx,
    /// connection errors) only while nothing has been delivered, so `on_delta` never sees text
    /// twice. A stream that stops early (no `data: [DONE]` and no `finish_reason`, a dropped
    /// connection, or no data within [`LlmOptions::timeout`] after some text) is
    /// [`Error::StreamInterrupted`], which holds the text delivered so far.
    pub async fn complete_streaming(
        &self,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion> {
        let body = WireRequest::new(request, true);
        let mut on_delta = on_delta;
        self.with_retries(&mut on_delta, |on_delta, _| {
            let body = &body;
            Box::pin(async move {
                let mut state = StreamState::default();
                match self.stream_once(body, &mut state, *on_delta).await {
                    Ok(()) => Ok(state.into_completion()),
                    Err(failure) if state.text.is_empty() => Err(failure),
                    // Text was delivered: trying again would deliver it twice.
                    Err(failure) => Err(Failure::Final(failure.into_error())),
                }
            })
        })
        .await
    }

    /// Forwards a raw OpenAI chat-completions body as it is and returns the provider's JSON
    /// answer as it is (for a gateway). Retries like [`LlmClient::complete`]; an answer holding an
    /// `error` object is an error. Streaming bodies (`"stream": true`) are refused before anything
    /// is sent, with [`Error::InvalidRequest`].
    pub async fn complete_raw(&self, body: &Value) -> Result<Value> {
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            return Err(Error::InvalidRequest {
                reason: "`\"stream\": true` is not supported here; use complete_streaming"
                    .to_owned(),
            });
        }
        self.post_with_retries(body, Self::parse_json).await
    }

    /// Forwards a raw OpenAI chat-completions body with `"stream": true` as it is and returns the
    /// provider's answer as it arrives, chunk by chunk, without decoding it (for a gateway that
    /// passes server-sent events through).
    ///
    /// The request is retried like [`LlmClient::complete`] (HTTP 429, 5xx, connection errors)
    /// until the provider answers with a success status; from then on nothing is retried. The wait
    /// for the answer's headers and then each wait for the next chunk are bounded by
    /// [`LlmOptions::timeout`]. The stream yields [`Error::Timeout`] when no chunk arrives in time
    /// before any byte was received, and [`Error::RawStreamInterrupted`] when the connection fails
    /// or stalls after some bytes; it ends after an error. Errors reported by the provider inside
    /// the stream are passed through as they are. Bodies without `"stream": true` are refused
    /// before anything is sent, with [`Error::InvalidRequest`].
    ///
    /// The stream is bounded line by line: a line longer than [`LlmOptions::max_event_bytes`]
    /// (or, for a provider that answers `application/json`, a body longer than
    /// [`LlmOptions::max_answer_bytes`]) ends it with [`Error::TooLarge`].
    pub async fn complete_raw_stream(&self, body: &Value) -> Result<RawStream> {
        check_stream_body(body)?;
        let mut body = body;
        self.with_retries(&mut body, |body, _| Box::pin(self.open_raw_stream(body)))
            .await
    }

    /// [`LlmClient::complete_raw_stream`] that returns only once the answer is known to start
    /// like a chat-completions stream, so that a gateway can still answer with an error status
    /// instead of passing on a broken stream.
    ///
    /// Before returning, the answer is read up to its first complete event (comments and the
    /// fields `event`, `id`, `retry` may come first): it must be a `data:` event of JSON (or
    /// `[DONE]`). Anything else (an HTML page, `data: {broken`, a body that ends before any
    /// event, other lines first) is [`Error::Malformed`], as [`LlmClient::complete_raw`] says of
    /// an answer that is not JSON; a first event holding an `error` object is the error it
    /// reports, retried like [`LlmClient::complete_raw`] when its code is 429 or 5xx; no first
    /// event within [`LlmOptions::timeout`] is [`Error::Timeout`]. A provider that ignores
    /// `"stream": true` and answers `application/json` is read whole (at most
    /// [`LlmOptions::max_answer_bytes`]) and must be JSON without an `error` object; it then
    /// comes back as one chunk, byte for byte. The bytes read for the check come first in the
    /// returned stream, unchanged; the rest is [`LlmClient::complete_raw_stream`]'s.
    pub async fn complete_raw_stream_checked(&self, body: &Value) -> Result<RawStream> {
        check_stream_body(body)?;
        let mut body = body;
        self.with_retries(&mut body, |body, _| {
            Box::pin(self.open_checked_raw_stream(body))
        })
        .await
    }

    /// Parses a successful plain answer.
    pub(crate) fn parse_completion(&self, body: &[u8]) -> std::result::Result<Completion, Failure> {
        let value = self.parse_json(body)?;
        let response = ChatResponse::deserialize(&value).map_err(|e| {
            Failure::Final(self.malformed(format!(
                "not an OpenAI chat completion ({e}); the body starts with {:?}",
                self.excerpt(body)
            )))
        })?;
        let Some(choice) = response.choices.into_iter().next() else {
            return Err(Failure::Final(Error::NoChoices {
                url: self.url.clone(),
            }));
        };
        Ok(Completion {
            text: choice.message.and_then(|m| m.content).unwrap_or_default(),
            usage: response.usage,
            model: response.model,
            finish_reason: choice.finish_reason,
        })
    }

    /// Parses a successful answer as JSON; an `error` object in it is an error.
    pub(crate) fn parse_json(&self, body: &[u8]) -> std::result::Result<Value, Failure> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            Failure::Final(self.malformed(format!(
                "the body is not JSON ({e}); it starts with {:?}",
                self.excerpt(body)
            )))
        })?;
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            return Err(self.in_band_error(error, 200));
        }
        Ok(value)
    }
}

/// `{base}/chat/completions` for a base URL that may end in `/` or `/chat/completions`.
fn chat_completions_url(api_base: &str) -> Result<String> {
    let endpoint = r2_http::Endpoint {
        known_suffixes: &["/chat/completions"],
        path: "/chat/completions",
        reject_credentials: true,
    };
    r2_http::endpoint_url(api_base, &endpoint).map_err(|problem| {
        use r2_http::UrlProblem as P;
        let (url, reason) = match problem {
            P::Unparsable(e) => (api_base.to_owned(), format!("not a valid URL ({e})")),
            // Never repeat credentials back: name the URL without them.
            P::Credentials { without } => (
                without,
                "it holds credentials; pass the API key on its own (e.g. OPENROUTER_API_KEY) \
                 instead"
                    .to_owned(),
            ),
            P::NotHttp => (
                api_base.to_owned(),
                "not an http:// or https:// URL".to_owned(),
            ),
            P::NoHost => (api_base.to_owned(), "it has no host".to_owned()),
            P::QueryOrFragment => (
                api_base.to_owned(),
                "it has a query or fragment; give the API's base URL only".to_owned(),
            ),
        };
        Error::InvalidUrl { url, reason }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tolerates_trailing_slash_and_full_path() {
        for base in [
            "https://openrouter.ai/api/v1",
            "https://openrouter.ai/api/v1/",
            " https://openrouter.ai/api/v1// ",
            "https://openrouter.ai/api/v1/chat/completions",
            "https://openrouter.ai/api/v1/chat/completions/",
        ] {
            assert_eq!(
                chat_completions_url(base).unwrap(),
                "https://openrouter.ai/api/v1/chat/completions",
                "{base}"
            );
        }
        assert_eq!(
            chat_completions_url("http://localhost:8000").unwrap(),
            "http://localhost:8000/chat/completions"
        );
    }

    #[test]
    fn bad_urls_are_rejected_without_repeating_credentials() {
        for base in [
            "openrouter.ai/api/v1",
            "ftp://host/v1",
            "not a url",
            "http://h/v1?x=1",
            "http://h/v1#f",
            "",
        ] {
            match chat_completions_url(base) {
                Err(Error::InvalidUrl { url, .. }) => assert_eq!(url, base),
                other => panic!("{base:?}: expected InvalidUrl, got {other:?}"),
            }
        }
        let err = chat_completions_url("https://user:sk-secret@host/v1").unwrap_err();
        assert!(!err.to_string().contains("sk-secret"), "{err}");
        assert!(!format!("{err:?}").contains("sk-secret"), "{err:?}");
    }

    #[test]
    fn wire_request_has_stream_fields_only_when_streaming() {
        let request = ChatRequest::routed("m", "q", Some(10), 0.7);
        let plain = serde_json::to_value(WireRequest::new(&request, false)).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": crate::budget_system_prompt(10)},
                    {"role": "user", "content": "q"},
                ],
                "temperature": 0.7,
            })
        );
        let streamed =
            serde_json::to_value(WireRequest::new(&request.with_max_tokens(5), true)).unwrap();
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"]["include_usage"], true);
        assert_eq!(streamed["max_tokens"], 5);
    }
}
