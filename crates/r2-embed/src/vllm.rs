//! A client of the OpenAI embeddings API as served by `vllm serve <model> --runner pooling`.
//!
//! Answers are bounded by what an honest answer to the request could hold
//! ([`VllmEmbedder::answer_limit`]) and read chunk by chunk: a larger answer fails with
//! [`Error::AnswerTooLarge`] as soon as the limit is passed, before the rest is read. Of an error
//! answer only the first [`VllmEmbedder::MAX_ERROR_BODY_BYTES`] are read.

use std::fmt;
use std::time::Duration;

use r2_http::{RateLimits, RetryPolicy, StopReason};
use serde::{Deserialize, Serialize};

use crate::{check_embeddings, check_texts, Embedder, Error, Result};

/// The longest pause between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why one request failed, and whether trying again may help.
type Failure = r2_http::Failure<Error>;

/// How many characters of a server's error text are kept in an [`Error::Status`].
const MAX_MESSAGE_CHARS: usize = 500;

/// How many characters of an unparsable body are quoted in an [`Error::Malformed`].
const MAX_SNIPPET_CHARS: usize = 200;

/// Settings of a [`VllmEmbedder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VllmOptions {
    /// Texts per request (default 64); longer inputs are sent in chunks, one after the other.
    /// Zero is treated as one.
    pub batch_size: usize,
    /// Time allowed for each request, from connecting to the last byte of the answer (default 30 s).
    pub timeout: Duration,
    /// Retries of a request after a connection error or an HTTP 5xx answer (default 3).
    ///
    /// Timeouts and 4xx answers are not retried: a slow server stays slow, and a rejected request
    /// is rejected again.
    pub max_retries: u32,
    /// Pause before the first retry (default 200 ms), doubled for each further retry up to 5 s,
    /// jittered by ±25%.
    pub initial_backoff: Duration,
    /// Expected length of every embedding (default 1024, Qwen3-0.6B's hidden size); 0 accepts the
    /// length of the first answer (e.g. to embed without a router), and every later vector must
    /// have that length.
    pub dim: usize,
}

impl Default for VllmOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            initial_backoff: Duration::from_millis(200),
            dim: 1024,
        }
    }
}

/// Embeds texts with an OpenAI-compatible `/v1/embeddings` server such as vLLM.
///
/// Cloning is cheap: clones share one connection pool. An answer may hold at most
/// [`VllmEmbedder::answer_limit`] bytes for its texts and dimension.
#[derive(Clone)]
pub struct VllmEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    options: VllmOptions,
    /// With `options.dim == 0`, the length of the first answer's vectors (0 before it).
    learned_dim: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl fmt::Debug for VllmEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VllmEmbedder")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl VllmEmbedder {
    /// Bytes an answer may spend on each embedding value: a float as JSON text takes at most 25
    /// (`-1.2345678901234567e-300,`), so this is generous.
    pub const MAX_ANSWER_BYTES_PER_VALUE: usize = 64;

    /// Bytes an answer may spend on each text besides its values (`{"object": "embedding",
    /// "index": 12, "embedding": [...]}` and whitespace).
    pub const MAX_ANSWER_BYTES_PER_TEXT: usize = 1024;

    /// Bytes every answer may spend besides its embeddings (`id`, `model`, `usage`, ...): 1 MiB.
    pub const MIN_ANSWER_LIMIT: usize = 1024 * 1024;

    /// The most bytes of an error answer's body that are read (its message is cut to 500
    /// characters anyway): 64 KiB.
    pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

    /// The largest answer accepted for a request of `texts` texts whose embeddings have `dim`
    /// values: [`Self::MIN_ANSWER_LIMIT`] + `texts` × (`dim` ×
    /// [`Self::MAX_ANSWER_BYTES_PER_VALUE`] + [`Self::MAX_ANSWER_BYTES_PER_TEXT`]); for 64 texts
    /// of 1024 values, 5.1 MiB.
    pub fn answer_limit(texts: usize, dim: usize) -> usize {
        let per_text = dim
            .saturating_mul(Self::MAX_ANSWER_BYTES_PER_VALUE)
            .saturating_add(Self::MAX_ANSWER_BYTES_PER_TEXT);
        texts
            .saturating_mul(per_text)
            .saturating_add(Self::MIN_ANSWER_LIMIT)
    }

    /// A client of the server at `base_url` (e.g. `http://localhost:8000`) for `model`.
    ///
    /// Requests go to `{base_url}/v1/embeddings`; a trailing `/`, `/v1` or `/v1/embeddings` on
    /// `base_url` is tolerated. Nothing is sent until the first [`Embedder::embed`]. Fails with
    /// [`Error::InvalidUrl`] if `base_url` is not an `http` or `https` URL without query or
    /// fragment.
    pub fn new(base_url: &str, model: &str, options: VllmOptions) -> Result<Self> {
        let url = embeddings_url(base_url)?;
        let client =
            r2_http::client(Some(options.timeout), None).map_err(|e| Error::Unreachable {
                url: url.clone(),
                reason: format!(
                    "cannot set up the HTTP client: {}",
                    r2_http::source_chain(&e)
                ),
            })?;
        Ok(Self {
            client,
            url,
            model: model.to_owned(),
            options,
            learned_dim: Default::default(),
        })
    }

    /// The full URL requests are sent to, e.g. `http://localhost:8000/v1/embeddings`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The settings this client was made with.
    pub fn options(&self) -> &VllmOptions {
        &self.options
    }

    /// The retry policy of [`VllmOptions`]: connection errors and 5xx answers (a vLLM server does
    /// not rate-limit: a 429 is final like any 4xx), with exponential backoff up to 5 s.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.options.max_retries,
            initial_backoff: self.options.initial_backoff,
            max_backoff: MAX_BACKOFF,
            rate_limits: RateLimits::Ignore,
        }
    }

    /// Embeds one chunk, retrying connection errors and 5xx answers with exponential backoff.
    async fn embed_chunk(
        &self,
        texts: &[String],
        start: usize,
        total: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let mut texts_ref = texts;
        let body = self
            .retry_policy()
            .run(&mut texts_ref, |texts, _| Box::pin(self.send(texts)))
            .await
            .map_err(|stopped| match stopped.reason {
                StopReason::OutOfRetries => gave_up(stopped.error, stopped.attempts),
                StopReason::Final | StopReason::WaitTooLong { .. } => stopped.error,
            })?;
        self.parse(&body, texts.len(), start, total)
    }

    /// Sends one request and returns the body of a successful answer.
    async fn send(&self, texts: &[String]) -> std::result::Result<Vec<u8>, Failure> {
        let request = EmbeddingsRequest {
            model: &self.model,
            input: texts,
        };
        let response = self
            .client
            .post(&self.url)
            .json(&request)
            .send()
            .await
            .map_err(|e| self.transport_failure(&e))?;
        let status = response.status();
        if status.is_success() {
            let dim = self.limit_dim();
            let limit = Self::answer_limit(texts.len(), dim);
            return r2_http::read_limited(response, limit)
                .await
                .map_err(|e| match e {
                    r2_http::Error::TooLarge { limit } => Failure::Final(Error::AnswerTooLarge {
                        url: self.url.clone(),
                        limit,
                        texts: texts.len(),
                        dim,
                    }),
                    r2_http::Error::Transport(e) => self.transport_failure(&e),
                });
        }
        // The status alone decides what happens next, so an error body that cannot be read is
        // treated as empty, and only its start is read.
        let body = r2_http::read_prefix(response, Self::MAX_ERROR_BODY_BYTES).await;
        let error = Error::Status {
            url: self.url.clone(),
            status: status.as_u16(),
            message: status_message(&body, status.canonical_reason()),
        };
        Err(self
            .retry_policy()
            .status_failure(status.as_u16(), None, error))
    }

    /// Classifies an error of reqwest: timeouts are final, everything else is a connection error.
    fn transport_failure(&self, e: &reqwest::Error) -> Failure {
        Failure::of_transport(
            e,
            || Error::Timeout {
                url: self.url.clone(),
                timeout: self.options.timeout,
            },
            || Error::Unreachable {
                url: self.url.clone(),
                reason: r2_http::source_chain(e),
            },
        )
    }

    /// Parses a successful answer to a request for `n` texts, the first of which is input `start`
    /// of `total`, into embeddings in request order.
    fn parse(&self, body: &[u8], n: usize, start: usize, total: usize) -> Result<Vec<Vec<f32>>> {
        let malformed = |problem: String| {
            let reason = if total > n {
                format!("{problem} (in the answer for texts {start}..{})", start + n)
            } else {
                problem
            };
            Error::Malformed {
                url: self.url.clone(),
                reason,
            }
        };
        let response: EmbeddingsResponse = serde_json::from_slice(body).map_err(|e| {
            malformed(format!(
                "not the OpenAI embeddings JSON: {e}; the body starts with {:?}",
                r2_http::excerpt(body, MAX_SNIPPET_CHARS, 0, |head| head)
            ))
        })?;
        let got = response.data.len();
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; n];
        for item in response.data {
            match slots.get_mut(item.index) {
                None => {
                    return Err(malformed(format!(
                        "index {} is out of range: the request had {n} texts",
                        item.index
                    )))
                }
                Some(Some(_)) => {
                    return Err(malformed(format!(
                        "index {} appears more than once",
                        item.index
                    )))
                }
                Some(slot) => *slot = Some(item.embedding),
            }
        }
        let embeddings = slots
            .into_iter()
            .enumerate()
            .map(|(index, slot)| {
                slot.ok_or_else(|| {
                    malformed(format!(
                        "no embedding with index {index} ({got} of {n} were returned)"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        check_embeddings(&self.url, &embeddings, self.expected_dim(&embeddings))
            .map_err(|e| shift_index(e, start))?;
        Ok(embeddings)
    }

    /// The length every vector of this answer must have: the configured one, or (with `dim` 0)
    /// the one learned from the first answer, which this answer's first vector sets.
    fn expected_dim(&self, embeddings: &[Vec<f32>]) -> usize {
        use std::sync::atomic::Ordering;
        if self.options.dim != 0 {
            return self.options.dim;
        }
        let first = embeddings.first().map_or(0, Vec::len).max(1);
        match self
            .learned_dim
            .compare_exchange(0, first, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => first,
            Err(learned) => learned,
        }
    }

    /// The dimension the answer limit is computed for: when not known yet, a generous guess.
    fn limit_dim(&self) -> usize {
        match self.dim() {
            0 => 8192,
            dim => dim,
        }
    }
}

#[async_trait::async_trait]
impl Embedder for VllmEmbedder {
    /// Sends the texts in chunks of [`VllmOptions::batch_size`], one request after the other.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        check_texts(texts)?;
        let mut embeddings = Vec::with_capacity(texts.len());
        for (i, chunk) in texts.chunks(self.options.batch_size.max(1)).enumerate() {
            let start = i * self.options.batch_size.max(1);
            embeddings.extend(self.embed_chunk(chunk, start, texts.len()).await?);
        }
        Ok(embeddings)
    }

    /// The configured dimension, or with `dim` 0 the one learned from the first answer (0 before).
    fn dim(&self) -> usize {
        match self.options.dim {
            0 => self.learned_dim.load(std::sync::atomic::Ordering::Relaxed),
            dim => dim,
        }
    }

    fn model_name(&self) -> &str {
        &self.model
    }
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

/// `{base}/v1/embeddings` for a base URL that may end in `/`, `/v1` or `/v1/embeddings`.
fn embeddings_url(base_url: &str) -> Result<String> {
    let endpoint = r2_http::Endpoint {
        known_suffixes: &["/v1/embeddings", "/v1"],
        path: "/v1/embeddings",
        reject_credentials: false,
    };
    r2_http::endpoint_url(base_url, &endpoint).map_err(|problem| {
        use r2_http::UrlProblem as P;
        let reason = match problem {
            P::Unparsable(e) => format!("`{base_url}` is not a valid URL ({e})"),
            // Not checked for: kept as they are.
            P::Credentials { .. } => format!("`{base_url}` holds credentials"),
            P::NotHttp => format!("`{base_url}` is not an http:// or https:// URL"),
            P::NoHost => format!("`{base_url}` has no host"),
            P::QueryOrFragment => {
                format!("`{base_url}` has a query or fragment; give the server's base URL only")
            }
        };
        Error::InvalidUrl {
            url: base_url.to_owned(),
            reason,
        }
    })
}

/// The message of an error answer: `error.message`, `error`, `message` or `detail` of a JSON body,
/// else the body text, else the status's reason phrase; at most [`MAX_MESSAGE_CHARS`] characters.
fn status_message(body: &[u8], reason_phrase: Option<&str>) -> String {
    let message = r2_http::error_message(body, reason_phrase, r2_http::json_message);
    r2_http::truncate(message.trim(), MAX_MESSAGE_CHARS)
}

/// Says in a retried error how many attempts were made.
fn gave_up(e: Error, attempts: u32) -> Error {
    if attempts < 2 {
        return e;
    }
    match e {
        Error::Status {
            url,
            status,
            message,
        } => Error::Status {
            url,
            status,
            message: format!("{message} (gave up after {attempts} attempts)"),
        },
        Error::Unreachable { url, reason } => Error::Unreachable {
            url,
            reason: format!("{reason} (gave up after {attempts} attempts)"),
        },
        other => other,
    }
}

/// Turns the index of an embedding within a chunk into its index in the whole input.
fn shift_index(e: Error, start: usize) -> Error {
    match e {
        Error::WrongDimension {
            source_name,
            index,
            expected,
            got,
        } => Error::WrongDimension {
            source_name,
            index: index + start,
            expected,
            got,
        },
        Error::NonFinite {
            source_name,
            index,
            position,
        } => Error::NonFinite {
            source_name,
            index: index + start,
            position,
        },
        other => other,
    }
}
