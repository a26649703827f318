//! The HTTP client of `POST {api_base}/chat/completions`, plain and streaming.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{self, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::retry::{backoff, parse_retry_after};
use crate::sse::{SseDecoder, TooLarge};
use crate::{ApiKey, ChatRequest, Completion, Error, Message, Result, Usage};

/// OpenRouter's OpenAI-compatible API, the default provider.
pub const OPENROUTER_API_BASE: &str = "https://openrouter.ai/api/v1";

/// How many characters of a provider's error message are kept in an [`Error`].
const MAX_MESSAGE_CHARS: usize = 500;

/// How many characters of an unparsable body are quoted in an [`Error::Malformed`].
const MAX_SNIPPET_CHARS: usize = 200;

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
    http: reqwest::Client,
    url: String,
    key: Option<ApiKey>,
    authorization: Option<HeaderValue>,
    options: LlmOptions,
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
struct WireRequest<'a> {
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

/// Why one attempt failed, and whether trying again may help.
enum Failure {
    Final(Error),
    /// `retry_after` is the wait the provider asked for, if it did.
    Retryable {
        error: Error,
        retry_after: Option<Duration>,
    },
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Final(error) | Failure::Retryable { error, .. } => error,
        }
    }
}

/// What a stream has delivered so far.
#[derive(Default)]
struct StreamState {
    text: String,
    usage: Option<Usage>,
    model: Option<String>,
    finish_reason: Option<String>,
    done: bool,
}

impl StreamState {
    fn into_completion(self) -> Completion {
        Completion {
            text: self.text,
            usage: self.usage,
            model: self.model,
            finish_reason: self.finish_reason,
        }
    }
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
        let http = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .user_agent(concat!("r2-llm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Unreachable {
                url: url.clone(),
                attempts: 0,
                reason: format!("cannot set up the HTTP client: {}", error_chain(&e)),
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
        let mut attempt = 1;
        loop {
            let failure = match self.post_once(&body).await {
                Ok(bytes) => match self.parse_completion(&bytes) {
                    Ok(completion) => return Ok(completion),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            self.pause_or_give_up(failure, attempt).await?;
            attempt += 1;
        }
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
        let mut attempt = 1;
        loop {
            let mut state = StreamState::default();
            let failure = match self.stream_once(&body, &mut state, on_delta).await {
                Ok(()) => return Ok(state.into_completion()),
                Err(failure) if state.text.is_empty() => failure,
                Err(failure) => return Err(failure.into_error()),
            };
            self.pause_or_give_up(failure, attempt).await?;
            attempt += 1;
        }
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
        let mut attempt = 1;
        loop {
            let failure = match self.post_once(body).await {
                Ok(bytes) => match self.parse_json(&bytes) {
                    Ok(value) => return Ok(value),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            self.pause_or_give_up(failure, attempt).await?;
            attempt += 1;
        }
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
        let mut attempt = 1;
        loop {
            let failure = match self.open_raw_stream(body).await {
                Ok(stream) => return Ok(stream),
                Err(failure) => failure,
            };
            self.pause_or_give_up(failure, attempt).await?;
            attempt += 1;
        }
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
        let mut attempt = 1;
        loop {
            let failure = match self.open_checked_raw_stream(body).await {
                Ok(stream) => return Ok(stream),
                Err(failure) => failure,
            };
            self.pause_or_give_up(failure, attempt).await?;
            attempt += 1;
        }
    }

    /// One attempt of [`LlmClient::complete_raw_stream`]: the request, up to a success status.
    async fn open_raw_stream(&self, body: &Value) -> std::result::Result<RawStream, Failure> {
        let response = self.open_stream(body).await?;
        let content_type = content_type(&response);
        let is_json = content_type.as_deref().is_some_and(is_json_type);
        Ok(RawStream {
            chunks: self.raw_chunks(response, is_json),
            content_type,
        })
    }

    /// One attempt of [`LlmClient::complete_raw_stream_checked`].
    async fn open_checked_raw_stream(
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
                    return Err(Failure::Retryable {
                        error,
                        retry_after: None,
                    });
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
        for value in serde_json::Deserializer::from_str(data).into_iter::<Value>() {
            let value = value.map_err(|e| {
                Failure::Final(self.malformed(format!(
                    "the first event of the answer stream is not JSON ({e}); it reads {:?}",
                    self.excerpt(data.as_bytes())
                )))
            })?;
            if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
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
                        let reason = format!("the connection failed: {}", error_chain(&e));
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

    /// After attempt number `attempt` (1 for the first) failed: waits before the next attempt, or
    /// returns the error to give up with.
    async fn pause_or_give_up(&self, failure: Failure, attempt: u32) -> Result<()> {
        let (error, retry_after) = match failure {
            Failure::Final(error) => return Err(error),
            Failure::Retryable { error, retry_after } => (error, retry_after),
        };
        if retry_after.is_some_and(|wait| wait > self.options.max_retry_after) {
            // The error names the wait itself (its `retry_after`).
            let note = format!(
                "not waited for: longer than max_retry_after, {:?}",
                self.options.max_retry_after
            );
            return Err(gave_up(error, attempt, Some(note)));
        }
        if attempt > self.options.max_retries {
            return Err(gave_up(error, attempt, None));
        }
        let wait =
            retry_after.unwrap_or_else(|| backoff(self.options.initial_backoff, attempt - 1));
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The POST of `body`, with the key when there is one.
    fn post(&self, body: &impl Serialize) -> reqwest::RequestBuilder {
        let builder = self.http.post(&self.url).json(body);
        match &self.authorization {
            Some(value) => builder.header(header::AUTHORIZATION, value.clone()),
            None => builder,
        }
    }

    /// Sends a streaming request and waits (at most the timeout) for a successful status; the
    /// body is left to the caller, which reads it chunk by chunk.
    async fn open_stream(
        &self,
        body: &impl Serialize,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let response =
            match tokio::time::timeout(self.options.timeout, self.post(body).send()).await {
                Err(_) => return Err(Failure::Final(self.timeout_error())),
                Ok(Err(e)) => return Err(self.transport_failure(&e)),
                Ok(Ok(response)) => response,
            };
        self.check_status(response).await
    }

    /// Sends one plain request and returns the body of a successful answer.
    async fn post_once(&self, body: &impl Serialize) -> std::result::Result<Vec<u8>, Failure> {
        let response = self
            .post(body)
            .timeout(self.options.timeout)
            .send()
            .await
            .map_err(|e| self.transport_failure(&e))?;
        let response = self.check_status(response).await?;
        // The request's timeout covers the body too.
        match read_limited(response, self.options.max_answer_bytes).await {
            Ok(bytes) => Ok(bytes),
            Err(BodyError::TooLarge) => Err(Failure::Final(
                self.too_large_error("an answer", self.options.max_answer_bytes),
            )),
            Err(BodyError::Transport(e)) => Err(self.transport_failure(&e)),
        }
    }

    /// The whole body of a successful answer to a stream request (a provider that answers in one
    /// piece), within the timeout and [`LlmOptions::max_answer_bytes`].
    async fn read_answer(
        &self,
        response: reqwest::Response,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let limit = self.options.max_answer_bytes;
        match tokio::time::timeout(self.options.timeout, read_limited(response, limit)).await {
            Err(_) => Err(Failure::Final(self.timeout_error())),
            Ok(Err(BodyError::TooLarge)) => {
                Err(Failure::Final(self.too_large_error("an answer", limit)))
            }
            Ok(Err(BodyError::Transport(e))) => Err(self.transport_failure(&e)),
            Ok(Ok(bytes)) => Ok(bytes),
        }
    }

    /// One streaming attempt; fills `state` as text arrives.
    async fn stream_once(
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
                    let reason = format!("the connection failed: {}", error_chain(&e));
                    return Err(Failure::Retryable {
                        error: self.interrupted(state, reason),
                        retry_after: None,
                    });
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
        Err(Failure::Retryable {
            error: self.interrupted(
                state,
                "the stream ended without `data: [DONE]` or a finish_reason".to_owned(),
            ),
            retry_after: None,
        })
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
        // Usually one JSON object; several on separate `data:` lines of one event are accepted.
        for value in serde_json::Deserializer::from_str(data).into_iter::<Value>() {
            let value = value.map_err(|e| {
                Failure::Final(Error::Malformed {
                    url: self.url.clone(),
                    reason: format!(
                        "a stream event is not JSON ({e}); it reads {:?}",
                        self.excerpt(data.as_bytes())
                    ),
                })
            })?;
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
                    Failure::Final(Error::Malformed {
                        url: self.url.clone(),
                        reason: format!("the usage of a stream event is not token counts ({e})"),
                    })
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

    /// Passes a successful answer through; turns an error answer into its [`Failure`].
    async fn check_status(
        &self,
        response: reqwest::Response,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // The status alone decides what happens next, so an error body that cannot be read (in
        // time) is treated as empty.
        let body = tokio::time::timeout(self.options.timeout, read_prefix(response))
            .await
            .unwrap_or_default();
        let message = self.status_message(&body, status.canonical_reason());
        Err(self.classify(status.as_u16(), message, retry_after))
    }

    /// The error of an answer with `status` (or an `error` object with that code).
    fn classify(&self, status: u16, message: String, retry_after: Option<Duration>) -> Failure {
        let url = self.url.clone();
        match status {
            401 | 403 => Failure::Final(Error::Unauthorized {
                url,
                status,
                message,
                key_given: self.key.is_some(),
            }),
            402 => Failure::Final(Error::PaymentRequired { url, message }),
            429 => Failure::Retryable {
                error: Error::RateLimited {
                    url,
                    attempts: 1,
                    retry_after,
                    message,
                },
                retry_after,
            },
            500..=599 => Failure::Retryable {
                error: Error::Server {
                    url,
                    status,
                    attempts: 1,
                    retry_after,
                    message,
                },
                retry_after,
            },
            _ => Failure::Final(Error::Status {
                url,
                status,
                message,
            }),
        }
    }

    /// The error of an `error` object inside a successful answer or a stream event: classified by
    /// its numeric `code` when that is an HTTP status, else [`Error::Status`] with `http_status`.
    fn in_band_error(&self, error: &Value, http_status: u16) -> Failure {
        let code = error.get("code");
        let status = code
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..=599).contains(c));
        let mut message = self.error_object_message(error);
        if status.is_none() {
            if let Some(code) = code.filter(|c| !c.is_null()) {
                let code = code
                    .as_str()
                    .map_or_else(|| code.to_string(), str::to_owned);
                message = format!("{message} (code {code})");
            }
        }
        let message = format!("error inside the answer: {message}");
        match status {
            Some(status) => self.classify(status, message, None),
            None => Failure::Final(Error::Status {
                url: self.url.clone(),
                status: http_status,
                message,
            }),
        }
    }

    /// Parses a successful plain answer.
    fn parse_completion(&self, body: &[u8]) -> std::result::Result<Completion, Failure> {
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
    fn parse_json(&self, body: &[u8]) -> std::result::Result<Value, Failure> {
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

    fn malformed(&self, reason: String) -> Error {
        Error::Malformed {
            url: self.url.clone(),
            reason,
        }
    }

    fn too_large_error(&self, what: &'static str, limit: usize) -> Error {
        Error::TooLarge {
            url: self.url.clone(),
            what,
            limit,
        }
    }

    /// A stream line or event over [`LlmOptions::max_event_bytes`].
    fn too_large(&self, e: TooLarge) -> Failure {
        Failure::Final(self.too_large_error(e.0, self.options.max_event_bytes))
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            url: self.url.clone(),
            timeout: self.options.timeout,
        }
    }

    fn raw_interrupted(&self, received_bytes: usize, reason: String) -> Error {
        Error::RawStreamInterrupted {
            url: self.url.clone(),
            received_bytes,
            reason: self.redact(reason),
        }
    }

    fn interrupted(&self, state: &StreamState, reason: String) -> Error {
        Error::StreamInterrupted {
            url: self.url.clone(),
            received_chars: state.text.chars().count(),
            partial: state.text.clone(),
            reason,
        }
    }

    /// Classifies an error of reqwest: timeouts are final, everything else is a connection error.
    fn transport_failure(&self, e: &reqwest::Error) -> Failure {
        if e.is_timeout() {
            Failure::Final(self.timeout_error())
        } else {
            Failure::Retryable {
                error: Error::Unreachable {
                    url: self.url.clone(),
                    attempts: 1,
                    reason: self.redact(error_chain(e)),
                },
                retry_after: None,
            }
        }
    }

    /// The message of an error answer: `error.message` (with OpenRouter's `error.metadata.raw`),
    /// `error`, `message` or `detail` of a JSON body, else the body text, else the status's
    /// reason phrase; at most [`MAX_MESSAGE_CHARS`] characters, the key redacted.
    fn status_message(&self, body: &[u8], reason_phrase: Option<&str>) -> String {
        let text = String::from_utf8_lossy(body);
        let from_json =
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|json| match json.get("error") {
                    Some(error) if error.is_object() => Some(self.error_object_message(error)),
                    _ => [json.get("error"), json.get("message"), json.get("detail")]
                        .into_iter()
                        .flatten()
                        .find(|v| !v.is_null())
                        .map(value_text),
                });
        let message = match from_json {
            Some(m) if !m.trim().is_empty() => m,
            _ if !text.trim().is_empty() => text.into_owned(),
            _ => reason_phrase.unwrap_or("no message").to_owned(),
        };
        truncate(self.redact(message).trim(), MAX_MESSAGE_CHARS)
    }

    /// `message` of an OpenAI/OpenRouter `error` object, with the upstream provider's own error
    /// (`metadata.raw`, `metadata.provider_name`) when OpenRouter passes one on.
    fn error_object_message(&self, error: &Value) -> String {
        let mut message = match error.get("message") {
            Some(m) if !m.is_null() => value_text(m),
            _ => value_text(error),
        };
        if let Some(raw) = error.pointer("/metadata/raw").filter(|r| !r.is_null()) {
            let provider = error
                .pointer("/metadata/provider_name")
                .and_then(Value::as_str)
                .unwrap_or("the provider");
            message = format!(
                "{message} ({provider} said: {})",
                truncate(&self.redact(value_text(raw)), MAX_MESSAGE_CHARS)
            );
        }
        truncate(&self.redact(message), MAX_MESSAGE_CHARS)
    }

    /// The first characters of a body, the key redacted.
    fn excerpt(&self, body: &[u8]) -> String {
        // Cut after the key's length more bytes than are quoted, so that a key across the cut
        // is still whole when it is redacted.
        let key_len = self.key.as_ref().map_or(0, |k| k.secret().len());
        let head = &body[..body.len().min(4 * MAX_SNIPPET_CHARS + key_len)];
        let head = String::from_utf8_lossy(head);
        truncate(&self.redact(head.into_owned()), MAX_SNIPPET_CHARS)
    }

    /// `text` with every occurrence of the API key, in any letter case, replaced by `***`
    /// (providers may echo it, even upper-cased).
    fn redact(&self, text: String) -> String {
        match &self.key {
            Some(key) => redact_key(text, key.secret()),
            None => text,
        }
    }
}

/// `text` with every occurrence of `key`, compared without regard to ASCII letter case, replaced
/// by `***`. Keys are visible ASCII (they go into a header), so the byte offsets of the
/// lower-cased text are those of `text`.
fn redact_key(text: String, key: &str) -> String {
    if key.is_empty() || text.len() < key.len() {
        return text;
    }
    let lower = text.to_ascii_lowercase();
    let needle = key.to_ascii_lowercase();
    let mut out = String::new();
    let mut last = 0;
    for (start, _) in lower.match_indices(&needle) {
        if !text.is_char_boundary(start) || !text.is_char_boundary(start + needle.len()) {
            continue;
        }
        out.push_str(&text[last..start]);
        out.push_str("***");
        last = start + needle.len();
    }
    if last == 0 {
        return text;
    }
    out.push_str(&text[last..]);
    out
}

/// Why a body could not be read whole.
enum BodyError {
    /// It is longer than the limit (by its `Content-Length`, or as it arrived).
    TooLarge,
    Transport(reqwest::Error),
}

/// The body of `response`, chunk by chunk, failing as soon as it is longer than `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first [`MAX_ERROR_BODY_BYTES`] of an error answer's body (what could be read of it; the
/// rest is not read).
async fn read_prefix(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    body
}

/// The `Content-Type` of an answer.
fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Whether a content type is JSON (a provider that answered a stream request in one piece).
fn is_json_type(content_type: &str) -> bool {
    content_type.trim_start().starts_with("application/json")
}

/// Raw streams need `"stream": true` in the body.
fn check_stream_body(body: &Value) -> Result<()> {
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return Err(Error::InvalidRequest {
            reason: "complete_raw_stream needs `\"stream\": true`; use complete_raw".to_owned(),
        });
    }
    Ok(())
}

/// `{base}/chat/completions` for a base URL that may end in `/` or `/chat/completions`.
fn chat_completions_url(api_base: &str) -> Result<String> {
    let invalid = |url: &str, reason: String| Error::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let base = api_base.trim().trim_end_matches('/');
    let base = base
        .strip_suffix("/chat/completions")
        .unwrap_or(base)
        .trim_end_matches('/');
    let url = format!("{base}/chat/completions");
    let mut parsed = reqwest::Url::parse(&url)
        .map_err(|e| invalid(api_base, format!("not a valid URL ({e})")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Never repeat credentials back: name the URL without them.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        return Err(invalid(
            parsed.as_str(),
            "it holds credentials; pass the key with --llm-api-key or OPENROUTER_API_KEY instead"
                .to_owned(),
        ));
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            api_base,
            "not an http:// or https:// URL".to_owned(),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(api_base, "it has no host".to_owned()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            api_base,
            "it has a query or fragment; give the API's base URL only".to_owned(),
        ));
    }
    Ok(parsed.into())
}

/// A JSON value as text: strings without their quotes.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first `max` characters of `s`, with `…` appended if anything was cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// The causes of a reqwest error, outermost first, without reqwest's own line (which repeats the
/// URL that every [`Error`] already names).
fn error_chain(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

/// Records in a retried error how many attempts were made, and why no more were.
fn gave_up(error: Error, attempts: u32, note: Option<String>) -> Error {
    let with_note = |text: String| match &note {
        Some(note) => format!("{text} ({note})"),
        None => text,
    };
    match error {
        Error::RateLimited {
            url,
            retry_after,
            message,
            ..
        } => Error::RateLimited {
            url,
            attempts,
            retry_after,
            message: with_note(message),
        },
        Error::Server {
            url,
            status,
            retry_after,
            message,
            ..
        } => Error::Server {
            url,
            status,
            attempts,
            retry_after,
            message: with_note(message),
        },
        Error::Unreachable { url, reason, .. } => Error::Unreachable {
            url,
            attempts,
            reason: with_note(reason),
        },
        Error::StreamInterrupted {
            url,
            received_chars,
            partial,
            reason,
        } if attempts > 1 => Error::StreamInterrupted {
            url,
            received_chars,
            partial,
            reason: with_note(format!("{reason}; gave up after {attempts} attempts")),
        },
        other => other,
    }
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
    fn the_key_is_redacted_in_any_letter_case() {
        let key = "sk-or-v1-AbC123";
        for (text, expected) in [
            ("key sk-or-v1-AbC123 here", "key *** here"),
            ("SK-OR-V1-ABC123", "***"),
            ("sk-or-v1-abc123sk-or-v1-ABC123.", "******."),
            ("é sK-oR-v1-aBc123 ü", "é *** ü"),
            ("nothing to see", "nothing to see"),
            ("sk-or-v1-AbC12", "sk-or-v1-AbC12"),
            ("", ""),
        ] {
            assert_eq!(redact_key(text.to_owned(), key), expected, "{text}");
        }
        assert_eq!(redact_key("abc".to_owned(), ""), "abc");
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
